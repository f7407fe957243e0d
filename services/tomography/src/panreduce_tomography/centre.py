"""Automatic rotation-centre finding.

Vo's Fourier method (N. T. Vo, M. Drakopoulos, R. C. Atwood, C. Rau, "Reliable method
for calculating the center of rotation in parallel-beam tomography", Opt. Express 22
(2014) 19078): for a candidate centre ``c`` the 180-degree sinogram and its mirror
about ``c`` (which is what the detector would see from the opposite side) are
stacked into a 360-degree sinogram. Only at the true centre is it continuous, and a
continuous sinogram of an object inside the field of view has its 2-D Fourier
energy inside a double wedge ``|n| <= 2 pi |nu| R``; the energy outside the wedge is
the metric to minimise. A coarse search (0.5 px) is refined on a 0.05 px grid and by
a parabola through the three best points.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    import scipy.fft
    from scipy import ndimage
else:
    scipy = lazy.module("scipy", "fft")
    ndimage = lazy.module("scipy.ndimage")


def _half_turn(sino: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """The part of a sinogram covering the first 180 degrees (the whole one if less)."""
    a = np.asarray(angles, dtype=np.float64)
    span = a - a[0]
    keep = np.abs(span) < np.pi - 0.5 * np.abs(np.median(np.diff(a))) if len(a) > 1 else np.ones(1, bool)
    return sino[keep]


def _wedge_mask(n_rows: int, nu: np.ndarray, radius: float, drop: int = 1) -> np.ndarray:
    n = np.abs(np.fft.fftfreq(n_rows) * n_rows)[:, None]  # angular harmonic (per turn)
    mask = n > 2 * np.pi * np.abs(nu)[None, :] * radius + 1
    mask[: drop + 1] = False  # the lowest harmonics carry the DC drift of the beam
    return mask


def vo_metric(
    sino: np.ndarray, centers: np.ndarray, radius: float | None = None, nu_max: float = 0.2, batch: int = 32
) -> np.ndarray:
    """Vo's metric (mean Fourier magnitude outside the double wedge, at detector
    frequencies up to ``nu_max`` cycles/pixel where a seam's energy is and white noise
    is a small part) for each candidate centre.

    The mirror about ``c`` is a phase in the detector-frequency domain (the sinogram is
    padded with its edge values), so sub-pixel candidates need no interpolation and are
    evaluated in batches."""
    s = np.asarray(sino, dtype=np.float64)
    s = s - s.mean()
    n_rows, n_cols = s.shape
    radius = n_cols / 2 if radius is None else radius
    npad = scipy.fft.next_fast_len(2 * n_cols, real=True)
    left = (npad - n_cols) // 2
    sp = np.pad(s, ((0, 0), (left, npad - n_cols - left)), mode="edge")
    k = np.arange(npad // 2 + 1)
    k = k[k / npad <= nu_max]
    sf = scipy.fft.rfft(sp, axis=1)[:, k]
    mask = _wedge_mask(2 * n_rows, k / npad, radius)
    out = np.empty(len(centers))
    for b0 in range(0, len(centers), batch):
        cs = np.asarray(centers[b0 : b0 + batch], dtype=np.float64)
        phase = np.exp(-2j * np.pi * k[None, :] * (2 * (cs[:, None] + left)) / npad)  # (C, K)
        mf = np.conj(sf)[None] * phase[:, None, :]
        full = np.concatenate([np.broadcast_to(sf, mf.shape), mf], axis=1)
        mag = np.abs(scipy.fft.fft(full, axis=1, workers=-1))
        out[b0 : b0 + batch] = mag[:, mask].mean(axis=1)
    return out


def find_center_vo(
    sino: np.ndarray,
    angles: np.ndarray,
    *,
    search_radius: float | None = None,
    guess: float | None = None,
    max_angles: int = 360,
    smooth: float = 1.0,
    destripe: bool = True,
) -> float:
    """The rotation axis position (detector pixels) of a parallel-beam sinogram
    ``(n_angles, n_cols)`` of line integrals covering at least 180 degrees.

    ``guess`` (default: the detector centre) and ``search_radius`` (default: a quarter of
    the detector) bound the search. Angles beyond the first half turn are ignored and
    long scans are sub-sampled to ``max_angles`` projections. Zingers are removed by a
    3x3 median; with ``destripe`` the stripes (ring sources) are removed first (the
    column-mean profile minus its running median is subtracted): they are constant
    along the angles and would otherwise favour centres that mirror the stripe
    pattern onto itself. The coarse search runs on a detector binned to at most
    256 columns, then refines at full resolution.
    """
    s = _half_turn(np.asarray(sino, dtype=np.float64), angles)
    n_cols = s.shape[1]
    if len(s) > max_angles:
        s = s[:: int(np.ceil(len(s) / max_angles))]
    s = ndimage.median_filter(s, size=3, mode="nearest")  # zingers and dead pixels
    if destripe:
        prof = s.mean(0)
        s = s - (prof - ndimage.median_filter(prof, size=int(np.clip(n_cols // 16 * 2 + 1, 5, 31))))[None]
    if smooth > 0:
        s = ndimage.gaussian_filter(s, (0, smooth), mode="nearest")
    n = s.shape[1]
    guess = (n - 1) / 2 if guess is None else guess
    rad = n / 4 if search_radius is None else search_radius
    f = max(1, n // 256)
    if f > 1:
        nb = n // f
        sd = s[:, : nb * f].reshape(len(s), nb, f).mean(-1)
        g = (guess - (f - 1) / 2) / f
        coarse = np.arange(g - rad / f, g + rad / f + 1e-9, 0.5)
        m = vo_metric(sd, coarse)
        best = coarse[int(np.argmin(m))] * f + (f - 1) / 2
        mid = np.arange(best - f, best + f + 1e-9, 0.25)
    else:
        mid = np.arange(guess - rad, guess + rad + 1e-9, 0.5)
    m = vo_metric(s, mid)
    best = mid[int(np.argmin(m))]
    fine = np.arange(best - 0.5, best + 0.5 + 1e-9, 0.05)
    mf = vo_metric(s, fine)
    i = int(np.argmin(mf))
    if 0 < i < len(fine) - 1:
        y0, y1, y2 = mf[i - 1], mf[i], mf[i + 1]
        den = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / den if den > 0 else 0.0
        return float(fine[i] + np.clip(shift, -1, 1) * 0.05)
    return float(fine[i])
