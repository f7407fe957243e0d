"""Joining the reductions of the main (rear) and high-angle (front) banks: DET/MERGED.

As the ISIS SANS reducer does (Mantid ``SANSFitShiftScale`` and the ISIS 1-D merger): the
front bank's curve is rescaled and shifted, ``I_hab' = rescale*I_hab + shift``, with either
or both factors fitted to the main bank by weighted least squares where both banks have data
(optionally within a Q range). Over the merge range the two are then averaged with their
normalisations as weights, ``I = (N_main*I_main + N_hab*I_hab')/(N_main + N_hab)``, which is
what summing counts and normalisations of the two banks gives; below the range the main bank
is used and above it the front bank. Pure numpy on binned curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MergeResult", "fit_rescale_shift", "merge_banks"]


@dataclass(frozen=True)
class MergeResult:
    intensity: np.ndarray
    error: np.ndarray
    rescale: float
    shift: float  # 1/cm
    overlap: tuple[float, float]  # 1/Å, the merge range used
    source: np.ndarray  # per Q bin: 0 main only, 1 HAB only, 2 both, -1 neither


def fit_rescale_shift(
    i_main: np.ndarray,
    e_main: np.ndarray,
    i_hab: np.ndarray,
    e_hab: np.ndarray,
    use: np.ndarray,
    *,
    fit_rescale: bool,
    fit_shift: bool,
    rescale: float = 1.0,
    shift: float = 0.0,
) -> tuple[float, float]:
    """Rescale and shift of the front bank minimising
    ``sum[(I_main - rescale*I_hab - shift)^2 / (e_main^2 + rescale^2 e_hab^2)]`` over the
    bins ``use``. Factors not fitted keep the values given. Raises ``ValueError`` when too few
    bins overlap."""
    use = np.asarray(use, dtype=bool) & (e_main > 0) & (e_hab > 0)
    n_free = int(fit_rescale) + int(fit_shift)
    if n_free == 0:
        return rescale, shift
    if use.sum() < n_free + 1:
        raise ValueError(f"only {int(use.sum())} Q bins have data on both banks; cannot fit the merge")
    y, ey, x, ex = i_main[use], e_main[use], i_hab[use], e_hab[use]
    for _ in range(5):  # the weights depend on the rescale: iterate to a fixed point
        w = 1.0 / (ey**2 + rescale**2 * ex**2)
        if fit_rescale and fit_shift:
            a = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
            b = np.array([np.sum(w * x * y), np.sum(w * y)])
            rescale, shift = (float(v) for v in np.linalg.solve(a, b))
        elif fit_rescale:
            rescale = float(np.sum(w * x * (y - shift)) / np.sum(w * x * x))
        else:
            shift = float(np.sum(w * (y - rescale * x)) / np.sum(w))
    if not np.isfinite(rescale) or not np.isfinite(shift) or rescale <= 0:
        raise ValueError(f"the merge fit failed (rescale {rescale:.4g}, shift {shift:.4g})")
    return rescale, shift


def merge_banks(
    q: np.ndarray,
    main: tuple[np.ndarray, np.ndarray, np.ndarray],
    hab: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    rescale: float = 1.0,
    shift: float = 0.0,
    fit_rescale: bool = False,
    fit_shift: bool = False,
    fit_range: tuple[float, float] | None = None,
    overlap: tuple[float, float] | None = None,
) -> MergeResult:
    """Merge two I(Q) curves on one Q grid (bin centres ``q``, 1/Å).

    ``main`` and ``hab`` are ``(I, sigma_I, N)`` with ``N`` the normalisation (Q1D's
    denominator, 0 where the bank has no data). ``overlap`` is the merge range; by default the
    Q range where both banks have data. The fit uses ``fit_range``, else the merge range.
    """
    i_m, e_m, n_m = (np.asarray(a, dtype=np.float64) for a in main)
    i_h, e_h, n_h = (np.asarray(a, dtype=np.float64) for a in hab)
    q = np.asarray(q, dtype=np.float64)
    both = (n_m > 0) & (n_h > 0)
    if overlap is None:
        if not both.any():
            raise ValueError("the main and high-angle banks share no Q bin; give DET/OVERLAP or widen L/Q")
        overlap = (float(q[both].min()), float(q[both].max()))
    in_overlap = (q >= overlap[0]) & (q <= overlap[1])
    fit_bins = both & ((q >= fit_range[0]) & (q <= fit_range[1]) if fit_range else in_overlap)
    rescale, shift = fit_rescale_shift(i_m, e_m, i_h, e_h, fit_bins, fit_rescale=fit_rescale,
                                       fit_shift=fit_shift, rescale=rescale, shift=shift)
    i_h2 = np.where(n_h > 0, rescale * i_h + shift, 0.0)
    e_h2 = rescale * e_h
    mix = in_overlap & both
    use_m = (n_m > 0) & ~mix & ((q < overlap[0]) | (n_h <= 0))
    use_h = (n_h > 0) & ~mix & ~use_m
    total = np.where(mix, n_m + n_h, 1.0)
    intensity = np.select([mix, use_m, use_h], [(n_m * i_m + n_h * i_h2) / total, i_m, i_h2], 0.0)
    error = np.select([mix, use_m, use_h], [np.hypot(n_m * e_m, n_h * e_h2) / total, e_m, e_h2], 0.0)
    source = np.select([mix, use_m, use_h], [2, 0, 1], -1)
    return MergeResult(intensity, error, rescale, shift, overlap, source)
