"""Ring summation of predicted reflections (CrystFEL's ``--integration=rings`` with
``--int-radius=inner,middle,outer``).

For each reflection at (fs, ss): the peak is every pixel within ``inner`` pixels of the
predicted position, the background every pixel between ``middle`` and ``outer``; pixels of
other panels and invalid (masked, off-panel) pixels are never used. A reflection whose peak
disc holds an invalid or foreign pixel, or whose annulus has fewer than ``min_background``
pixels, is not integrated. I = Σ(peak − ⟨bg⟩); σ² = g·max(Σ(peak − ⟨bg⟩), 0) + n_p·σ_bg² +
n_p²·σ_bg²/n_bg (Poisson of the counts with g ADU per photon, the background's spread, and
the uncertainty of its mean). All reflections of a frame are gathered at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Integrated", "integrate_rings", "parse_int_radius"]


def parse_int_radius(text: str) -> tuple[int, int, int]:
    """``"3,4,5"`` → (3, 4, 5); ValueError unless 0 < inner ≤ middle < outer."""
    parts = [int(v) for v in text.split(",")]
    if len(parts) != 3:
        raise ValueError("int_radius takes three radii: inner,middle,outer")
    inner, middle, outer = parts
    if not (0 < inner <= middle < outer):
        raise ValueError("int_radius needs 0 < inner <= middle < outer")
    return inner, middle, outer


@dataclass(frozen=True)
class Integrated:
    keep: np.ndarray  # (n_predicted,) bool: integrated
    intensity: np.ndarray  # (n_kept,) ADU
    sigma: np.ndarray
    peak: np.ndarray  # brightest peak pixel (ADU)
    background: np.ndarray  # mean background per pixel (ADU)


def integrate_rings(
    frame: np.ndarray,
    valid: np.ndarray,
    panel_id: np.ndarray,
    fs: np.ndarray,
    ss: np.ndarray,
    panel: np.ndarray,
    *,
    radii: tuple[int, int, int],
    adu_per_photon: float = 1.0,
    min_background: int = 6,
) -> Integrated:
    """Integrate the reflections at array coordinates (fs, ss) (integer = pixel centre) on
    panel indices ``panel`` of ``frame`` (ss, fs)."""
    inner, middle, outer = radii
    n = len(fs)
    d = np.arange(-outer - 1, outer + 2)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    cy = np.rint(ss).astype(np.int64)
    cx = np.rint(fs).astype(np.int64)
    yy = cy[:, None] + dy[None, :]
    xx = cx[:, None] + dx[None, :]
    r = np.hypot(yy - ss[:, None], xx - fs[:, None])
    ny, nx = frame.shape
    inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
    yc = np.clip(yy, 0, ny - 1)
    xc = np.clip(xx, 0, nx - 1)
    ok = inside & valid[yc, xc] & (panel_id[yc, xc] == panel[:, None])
    vals = frame[yc, xc].astype(np.float64)
    in_peak = r <= inner
    in_bg = (r > middle) & (r <= outer)
    peak_ok = ~np.any(in_peak & ~ok, axis=1)
    bg = in_bg & ok
    n_bg = bg.sum(axis=1)
    keep = peak_ok & (n_bg >= min_background) & (n > 0)
    bgs = np.where(bg, vals, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_bg = bgs.sum(axis=1) / n_bg
        var_bg = np.where(bg, (vals - mean_bg[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(n_bg - 1, 1)
    n_p = in_peak.sum(axis=1)
    total = np.where(in_peak, vals - mean_bg[:, None], 0.0).sum(axis=1)
    sig2 = adu_per_photon * np.maximum(total, 0.0) + n_p * var_bg + n_p**2 * var_bg / np.maximum(n_bg, 1)
    peak = np.where(in_peak, vals, -np.inf).max(axis=1) if n else np.zeros(0)
    return Integrated(keep, total[keep], np.sqrt(sig2[keep]), peak[keep], mean_bg[keep])
