"""Bragg discs and strain.

Discs are found by cross-correlating each pattern with a probe template (the bright disc,
from a vacuum pattern or the mean pattern), taking the correlation's local maxima, then
refining each position by the intensity centroid of the pattern in a window around it.
A lattice (origin o, reciprocal basis g1, g2; (x, y) px) is fitted per position by least
squares on the indexed discs. With real-space deformation F (a = F a_ref) the reciprocal
basis maps as G = F^-T G_ref, so F = (G_ref G^-1)^T; strain ε = (F + F^T)/2 − I and the
rotation ω = (F_yx − F_xy)/2 (rad), both in the frame the vectors are given in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from scipy import ndimage
else:
    ndimage = lazy.module("scipy.ndimage")


def probe_template(pattern: np.ndarray, center_yx: tuple[float, float], radius_px: float) -> np.ndarray:
    """The bright disc of ``pattern`` cut out (a soft-edged window of 1.3 × radius), zero mean."""
    yy, xx = np.indices(pattern.shape, dtype=np.float64)
    r = np.hypot(yy - center_yx[0], xx - center_yx[1])
    window = np.clip((1.3 * radius_px - r) / max(0.2 * radius_px, 1.0), 0, 1)
    t = np.asarray(pattern, np.float64) * window
    t = ndimage.shift(t, (pattern.shape[0] // 2 - center_yx[0], pattern.shape[1] // 2 - center_yx[1]), order=1)
    support = np.hypot(yy - pattern.shape[0] // 2, xx - pattern.shape[1] // 2) < 1.3 * radius_px
    t[support] -= t[support].mean()
    t[~support] = 0.0
    return t


class DiscFinder:
    """Cross-correlation disc finder for frames of one shape: discs are correlation maxima
    above ``min_relative`` × the strongest maximum outside 2 radii of the strongest one."""

    def __init__(
        self, template: np.ndarray, radius_px: float, *, min_relative: float = 0.1, max_discs: int = 64
    ) -> None:
        self.shape = template.shape
        self.radius = float(radius_px)
        self.min_relative = min_relative
        self.max_discs = max_discs
        centred = np.fft.ifftshift(template)
        self._tf = np.conj(np.fft.rfft2(centred))

    def correlate(self, frame: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(np.fft.rfft2(np.asarray(frame, np.float64)) * self._tf, s=self.shape)

    def find(self, frame: np.ndarray) -> np.ndarray:
        """(n, 2) refined (x, y) disc centres (px), brightest correlation first."""
        frame = np.asarray(frame, np.float64)
        cc = self.correlate(frame)
        size = max(3, round(self.radius) | 1)
        # the direct beam is usually far brighter than any Bragg disc: the threshold is
        # relative to the strongest peak away from the strongest one
        top = np.unravel_index(int(np.argmax(cc)), cc.shape)
        yy, xx = np.indices(cc.shape)
        away = np.hypot(yy - top[0], xx - top[1]) > 2 * self.radius
        second = float(cc[away].max()) if away.any() else float(cc.max())
        peaks = (cc == ndimage.maximum_filter(cc, size=size, mode="wrap")) & (cc > self.min_relative * second)
        ys, xs = np.nonzero(peaks)
        order = np.argsort(cc[ys, xs])[::-1][: self.max_discs]
        out = []
        for y, x in zip(ys[order], xs[order], strict=True):
            p = self.refine(frame, (float(x), float(y)))
            if p is not None:
                out.append(p)
        return np.array(out).reshape(-1, 2)

    def refine(self, frame: np.ndarray, xy: tuple[float, float], iterations: int = 4) -> tuple[float, float] | None:
        """Intensity centroid of the pattern in a window of 1.5 disc radii (background = the
        window's rim median), iterated; None when the window leaves the detector."""
        rw = 1.5 * self.radius
        h = int(np.ceil(rw)) + 1
        x, y = xy
        for _ in range(iterations):
            x0, y0 = round(x), round(y)
            if x0 - h < 0 or y0 - h < 0 or x0 + h >= frame.shape[1] or y0 + h >= frame.shape[0]:
                return None
            sub = frame[y0 - h : y0 + h + 1, x0 - h : x0 + h + 1]
            yy, xx = np.mgrid[y0 - h : y0 + h + 1, x0 - h : x0 + h + 1].astype(np.float64)
            r = np.hypot(xx - x, yy - y)
            inside = np.clip(rw - r + 0.5, 0, 1)  # soft edge: no pixel-locking
            rim = (r > self.radius * 1.25) & (r <= rw)
            bg = float(np.median(sub[rim])) if rim.any() else 0.0
            w = np.clip(sub - bg, 0, None) * inside
            s = w.sum()
            if s <= 0:
                return None
            x, y = float((w * xx).sum() / s), float((w * yy).sum() / s)
        return x, y


@dataclass(frozen=True)
class Lattice:
    origin_xy: np.ndarray  # (2,)
    basis: np.ndarray  # (2, 2): columns g1, g2, (x, y) px
    n_discs: int
    rms_px: float


def guess_basis(points_xy: np.ndarray, origin_xy: np.ndarray, *, min_length_px: float) -> np.ndarray:
    """Two shortest non-collinear vectors from the origin to the discs (columns), right-handed."""
    v = np.asarray(points_xy, float) - origin_xy
    lengths = np.hypot(v[:, 0], v[:, 1])
    keep = lengths > min_length_px
    v, lengths = v[keep], lengths[keep]
    if len(v) < 2:
        raise ValueError("fewer than two Bragg discs besides the direct beam")
    order = np.argsort(lengths)
    g1 = v[order[0]]
    for j in order[1:]:
        g2 = v[j]
        sin = abs(g1[0] * g2[1] - g1[1] * g2[0]) / (np.hypot(*g1) * np.hypot(*g2))
        if sin > 0.3:
            basis = np.stack([g1, g2], axis=1)
            return basis if np.linalg.det(basis) > 0 else basis[:, ::-1]
    raise ValueError("the Bragg discs are collinear: no 2-D lattice")


def fit_lattice(
    points_xy: np.ndarray, origin_xy: np.ndarray, basis: np.ndarray, *, tolerance: float = 0.25
) -> Lattice | None:
    """Index the discs on the guessed lattice, then fit origin and basis by least squares.
    None when fewer than 3 non-collinear discs index."""
    p = np.asarray(points_xy, float)
    if len(p) < 3:
        return None
    hk = np.linalg.solve(basis, (p - origin_xy).T).T
    idx = np.rint(hk)
    ok = np.all(np.abs(hk - idx) < tolerance, axis=1)
    idx, p = idx[ok], p[ok]
    if len(p) < 3:
        return None
    design = np.column_stack([np.ones(len(p)), idx])
    if np.linalg.matrix_rank(design) < 3:
        return None
    coef, *_ = np.linalg.lstsq(design, p, rcond=None)  # rows: origin, g1, g2
    resid = p - design @ coef
    return Lattice(coef[0], coef[1:].T.copy(), len(p), float(np.sqrt(np.mean(np.sum(resid**2, axis=1)))))


def strain_from_bases(bases: np.ndarray, reference: np.ndarray) -> dict[str, np.ndarray]:
    """εxx, εyy, εxy and rotation (rad) maps from per-position bases (..., 2, 2) against the
    reference basis (2, 2) (NaN where the basis is NaN)."""
    b = np.asarray(bases, float)
    out = {k: np.full(b.shape[:-2], np.nan) for k in ("exx", "eyy", "exy", "rotation")}
    good = np.all(np.isfinite(b), axis=(-2, -1))
    g = b[good]
    f = np.transpose(reference[None] @ np.linalg.inv(g), (0, 2, 1))
    out["exx"][good] = f[:, 0, 0] - 1
    out["eyy"][good] = f[:, 1, 1] - 1
    out["exy"][good] = 0.5 * (f[:, 0, 1] + f[:, 1, 0])
    out["rotation"][good] = 0.5 * (f[:, 1, 0] - f[:, 0, 1])
    return out
