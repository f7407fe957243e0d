"""Joining the reductions of the main (rear) and high-angle (front) banks: DET/MERGED.

As the ISIS SANS reducer does (Mantid ``SANSFitShiftScale`` and ``SANSStitch``):

* the front bank is rescaled and shifted, ``I_hab' = rescale*(I_hab + shift)``; either or both
  factors may be fitted to the main bank (``I_main ~ rescale*I_hab + rescale*shift``) by
  weighted least squares where both banks have data (optionally within a Q range), on the
  can-subtracted curves;
* sample and can are then each stitched on their own counts and normalisations, and the
  stitched can is subtracted from the stitched sample. Over the merge range a bin of the
  stitched curve is ``(C_main + C_hab + shift*N_hab)/(N_main + N_hab/rescale)``, i.e. the
  weighted mean of ``I_main`` and ``I_hab'`` with weights ``N_main`` and ``N_hab/rescale``;
  the shift is added to the sample only. Below the range the main bank is used, above it the
  front bank.

Pure numpy on binned curves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MergeResult", "fit_rescale_shift", "merge_range", "stitch"]


@dataclass(frozen=True)
class MergeResult:
    intensity: np.ndarray
    error: np.ndarray
    rescale: float
    shift: float  # 1/cm, added to I_hab before the rescale
    overlap: tuple[float, float]  # 1/Å, the merge range used
    source: np.ndarray  # per Q bin: 0 main only, 1 HAB only, 2 both, -1 neither


def merge_range(
    q: np.ndarray, n_main: np.ndarray, n_hab: np.ndarray, overlap: tuple[float, float] | None = None
) -> tuple[float, float]:
    """The merge range: ``overlap`` if given, else the Q range (bin centres, 1/Å) where both
    banks have data (normalisation > 0). Raises ``ValueError`` when they share no bin."""
    if overlap is not None:
        return overlap
    both = (np.asarray(n_main) > 0) & (np.asarray(n_hab) > 0)
    if not both.any():
        raise ValueError("the main and high-angle banks share no Q bin; give DET/OVERLAP or widen L/Q")
    return float(np.asarray(q)[both].min()), float(np.asarray(q)[both].max())


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
    """``(rescale, shift)`` minimising ``sum[(I_main - rescale*(I_hab + shift))^2 /
    (e_main^2 + rescale^2 e_hab^2)]`` over the bins ``use``; factors not fitted keep the values
    given. The model is linear in ``(rescale, rescale*shift)``; the weights depend on the
    rescale and are iterated to a fixed point. Raises ``ValueError`` when too few bins overlap
    or the fit fails."""
    use = np.asarray(use, dtype=bool) & (e_main > 0) & (e_hab > 0)
    n_free = int(fit_rescale) + int(fit_shift)
    if n_free == 0:
        return rescale, shift
    if use.sum() < n_free + 1:
        raise ValueError(f"only {int(use.sum())} Q bins have data on both banks; cannot fit the merge")
    y, ey, x, ex = i_main[use], e_main[use], i_hab[use], e_hab[use]
    for _ in range(5):
        w = 1.0 / (ey**2 + rescale**2 * ex**2)
        if fit_rescale and fit_shift:
            a = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
            b = np.array([np.sum(w * x * y), np.sum(w * y)])
            rescale, offset = (float(v) for v in np.linalg.solve(a, b))
            shift = offset / rescale if rescale != 0 else np.inf
        elif fit_rescale:
            rescale = float(np.sum(w * (x + shift) * y) / np.sum(w * (x + shift) ** 2))
        else:
            shift = float(np.sum(w * (y / rescale - x)) / np.sum(w))
    if not np.isfinite(rescale) or not np.isfinite(shift) or rescale <= 0:
        raise ValueError(f"the merge fit failed (rescale {rescale:.4g}, shift {shift:.4g})")
    return rescale, shift


def stitch(
    q: np.ndarray,
    main: tuple[np.ndarray, np.ndarray, np.ndarray],
    hab: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    rescale: float,
    shift: float,
    overlap: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stitch one curve (sample or can) of the two banks: ``(I, sigma_I, source)``.

    ``main`` and ``hab`` are ``(I, sigma_I, N)``, N the Q1D normalisation (0 where a bank has no
    data). Inside ``overlap`` (1/Å) where both have data: the mean of ``I_main`` and
    ``rescale*(I_hab + shift)`` weighted by ``N_main`` and ``N_hab/rescale``, with
    ``sigma = sqrt((N_main sigma_main)^2 + (N_hab sigma_hab)^2)/(N_main + N_hab/rescale)``;
    elsewhere the main bank below the range (or where the HAB has no data) and the rescaled
    HAB above it.
    """
    i_m, e_m, n_m = (np.asarray(a, dtype=np.float64) for a in main)
    i_h, e_h, n_h = (np.asarray(a, dtype=np.float64) for a in hab)
    q = np.asarray(q, dtype=np.float64)
    both = (n_m > 0) & (n_h > 0)
    mix = both & (q >= overlap[0]) & (q <= overlap[1])
    use_m = (n_m > 0) & ~mix & ((q < overlap[0]) | (n_h <= 0))
    use_h = (n_h > 0) & ~mix & ~use_m
    i_h2 = rescale * (i_h + shift)
    w_h = n_h / rescale
    total = np.where(mix, n_m + w_h, 1.0)
    intensity = np.select([mix, use_m, use_h], [(n_m * i_m + w_h * i_h2) / total, i_m, i_h2], 0.0)
    error = np.select([mix, use_m, use_h], [np.hypot(n_m * e_m, n_h * e_h) / total, e_m, rescale * e_h], 0.0)
    source = np.select([mix, use_m, use_h], [2, 0, 1], -1)
    return intensity, error, source
