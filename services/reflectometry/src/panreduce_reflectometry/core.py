"""The reduction arithmetic: pure functions on numpy arrays.

Units: time of flight in µs, lengths in m, wavelength λ in Å, angles in radians unless a
name ends in ``_deg``, momentum transfer Q in 1/Å. Histograms are given by bin *edges*
(n + 1 values for n bins); variances travel beside the values (``var`` = σ²).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from panreduce import constants

# λ[Å] = h / (m_n v) = NEUTRON_H_OVER_M · t[µs] / L[m]


def tof_to_wavelength(tof_us: np.ndarray, flight_path_m: float | np.ndarray) -> np.ndarray:
    """λ [Å] of neutrons that took ``tof_us`` [µs] over ``flight_path_m`` [m].
    A flight path array of shape (n,) with tof of shape (m,) gives (n, m)."""
    tof = np.asarray(tof_us, dtype=float)
    path = np.asarray(flight_path_m, dtype=float)
    if path.ndim:
        return constants.NEUTRON_H_OVER_M * tof[None, :] / path[:, None]
    return constants.NEUTRON_H_OVER_M * tof / float(path)


def wavelength_to_q(wavelength_angstrom: np.ndarray, theta_rad: float) -> np.ndarray:
    """Q = 4π sin θ / λ [1/Å]."""
    return 4.0 * math.pi * math.sin(theta_rad) / np.asarray(wavelength_angstrom, dtype=float)


def log_edges(q_min: float, q_max: float, dq_q: float) -> np.ndarray:
    """Logarithmic bin edges as Mantid's Rebin with a negative step: next = x·(1 + dq_q);
    an edge is added while x + 1.25·step ≤ q_max, then q_max itself closes the last bin."""
    if not (q_min > 0 and q_max > q_min and dq_q > 0):
        raise ValueError(f"log bins need 0 < q_min < q_max and dq_q > 0 (got {q_min}, {q_max}, {dq_q})")
    edges = [q_min]
    x = q_min
    while x + 1.25 * x * dq_q <= q_max:
        x = x * (1.0 + dq_q)
        edges.append(x)
    if edges[-1] < q_max:
        edges.append(q_max)
    return np.asarray(edges)


def aligned_log_edges(q_min: float, q_max: float, dq_q: float, anchor: float) -> np.ndarray:
    """Log edges anchor·(1 + dq_q)^k (k integer) covering [q_min, q_max]: every run binned
    with the same anchor and step shares its bins with every other, so stitching needs no
    second rebin."""
    ratio = math.log1p(dq_q)
    k0 = math.floor(math.log(q_min / anchor) / ratio + 1e-9)
    k1 = math.ceil(math.log(q_max / anchor) / ratio - 1e-9)
    return anchor * np.exp(ratio * np.arange(k0, max(k1, k0 + 1) + 1))


def rebin_counts(
    edges: np.ndarray, values: np.ndarray, var: np.ndarray, new_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Proportional rebin of counts (each old bin's content spread uniformly over it):
    new = Σ old·overlap/w_old, var_new = Σ var·overlap/w_old. Edges ascending. Works on
    the last axis; ``edges`` may be (n+1,) or one row per spectrum (k, n+1)."""
    edges = np.asarray(edges, dtype=float)
    values = np.asarray(values, dtype=float)
    var = np.asarray(var, dtype=float)
    new_edges = np.asarray(new_edges, dtype=float)
    if values.ndim == 1:
        return (_rebin_row(edges, values, new_edges), _rebin_row(edges, var, new_edges))
    out_v = np.empty((*values.shape[:-1], new_edges.size - 1))
    out_e = np.empty_like(out_v)
    for i in range(values.shape[0]):
        row_edges = edges if edges.ndim == 1 else edges[i]
        out_v[i] = _rebin_row(row_edges, values[i], new_edges)
        out_e[i] = _rebin_row(row_edges, var[i], new_edges)
    return out_v, out_e


def _rebin_row(edges: np.ndarray, values: np.ndarray, new_edges: np.ndarray) -> np.ndarray:
    cum = np.concatenate(([0.0], np.cumsum(np.nan_to_num(values))))
    at = np.interp(new_edges, edges, cum, left=0.0, right=cum[-1])
    return np.diff(at)


def rebin_distribution(
    edges: np.ndarray, values: np.ndarray, var: np.ndarray, new_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Width-averaged rebin of a distribution (values per unit x, or dimensionless ratios).

    Each new bin holds the average over the part of it that old data cover (a bin covered
    less than half is NaN): Y = Σ Y_old·overlap / covered, σ² = Σ σ²_old·w_old·overlap /
    covered² — Mantid's distribution rebin, except that the divisor is the covered width
    rather than the whole new width, so bins at the ends of the data are not biased low.
    NaN inputs count as not covered."""
    edges = np.asarray(edges, dtype=float)
    y = np.asarray(values, dtype=float)
    v = np.asarray(var, dtype=float)
    w_old = np.diff(edges)
    good = np.isfinite(y) & np.isfinite(v)
    c, cv = rebin_counts(edges, np.where(good, y * w_old, 0.0), np.where(good, v * w_old * w_old, 0.0), new_edges)
    covered, _ = rebin_counts(edges, np.where(good, w_old, 0.0), np.zeros_like(w_old), new_edges)
    w_new = np.diff(np.asarray(new_edges, dtype=float))
    ok = covered > 0.5 * w_new
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, c / covered, np.nan)
        out_var = np.where(ok, cv / covered**2, np.nan)
    return out, out_var


@dataclass(frozen=True)
class MonitorIntegral:
    value: float  # background-subtracted monitor counts in the integration range
    variance: float
    background_rate: float  # counts per Å, subtracted


def integrate_monitor(
    edges_angstrom: np.ndarray,
    counts: np.ndarray,
    *,
    background_angstrom: tuple[float, float] | None,
    integration_angstrom: tuple[float, float],
) -> MonitorIntegral:
    """The I0 monitor as one number: a flat background (a straight line fitted to the
    count rate in the background range, taken at its middle; Mantid CalculateFlatBackground
    "Linear Fit") subtracted bin by bin (negative bins become 0), then the sum over bins
    lying wholly inside the integration range (partial bins excluded)."""
    edges = np.asarray(edges_angstrom, dtype=float)
    y = np.asarray(counts, dtype=float)
    width = np.diff(edges)
    centre = 0.5 * (edges[:-1] + edges[1:])
    rate_bg = 0.0
    if background_angstrom is not None:
        lo, hi = background_angstrom
        sel = (edges[1:] > lo) & (edges[:-1] < hi)
        if sel.sum() >= 2:
            slope, intercept = np.polyfit(centre[sel], y[sel] / width[sel], 1)
            rate_bg = max(float(slope * 0.5 * (lo + hi) + intercept), 0.0)
    var = np.maximum(y, 0.0)  # Poisson: σ² = counts
    y = np.maximum(y - rate_bg * width, 0.0)
    lo, hi = integration_angstrom
    inside = (edges[:-1] >= lo) & (edges[1:] <= hi)
    return MonitorIntegral(float(y[inside].sum()), float(var[inside].sum()), rate_bg)


def subtract_background(
    counts: np.ndarray, var: np.ndarray, background_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-detector-average background: the mean over the background pixels, bin by bin,
    subtracted from every pixel; its variance (Σσ²/n²) added to each pixel's."""
    bg = counts[background_rows]
    n = bg.shape[0]
    mean = bg.mean(axis=0)
    mean_var = var[background_rows].sum(axis=0) / (n * n)
    return counts - mean[None, :], var + mean_var[None, :]


def projected_wavelength(
    wavelength: np.ndarray, two_theta: np.ndarray, *, two_theta_r: float, theta0: float
) -> np.ndarray:
    """λ_V = λ·sin(2θ_R − θ0)/sin(2θ − θ0): the wavelength a neutron seen at (λ, 2θ) would
    have at the reference angle on the same line of constant Q (Cubitt et al. 2015)."""
    return wavelength * math.sin(two_theta_r - theta0) / np.sin(two_theta - theta0)


def sum_in_q(
    lambda_edges: np.ndarray,
    values: np.ndarray,
    var: np.ndarray,
    *,
    two_theta: np.ndarray,
    two_theta_width: np.ndarray,
    two_theta_r: float,
    theta0: float,
    output_edges: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum pixels along lines of constant Q onto ``output_edges`` (virtual λ at 2θ_R).

    ``lambda_edges`` (n_pix, n+1) per pixel, ``values``/``var`` (n_pix, n), ``two_theta`` and
    ``two_theta_width`` (n_pix,) in radians. Each input bin is the rectangle
    [λ ± Δλ/2] × [2θ ± Δ2θ/2]; its opposite corners (λ−Δλ/2, 2θ+Δ2θ/2) and (λ+Δλ/2,
    2θ−Δ2θ/2) project to [v1, v2], over which its content is spread uniformly. Counts are
    conserved exactly (Mantid caps each share at the input width instead). Errors add
    linearly within a pixel and in quadrature across pixels, as in Mantid. Bins with
    non-finite or non-positive values are skipped."""
    if np.any(two_theta - 0.5 * two_theta_width <= theta0):
        raise ValueError("a pixel lies at or below the horizon (2θ ≤ θ0) of the lines of constant Q")
    out = np.zeros(output_edges.size - 1)
    out_var = np.zeros_like(out)
    factor = math.sin(two_theta_r - theta0)
    for p in range(values.shape[0]):
        edges = lambda_edges[p] if lambda_edges.ndim == 2 else lambda_edges
        y = values[p]
        e = np.sqrt(np.maximum(var[p], 0.0))
        keep = np.isfinite(y) & (y > 0)
        if not keep.any():
            continue
        l1 = edges[:-1][keep]
        l2 = edges[1:][keep]
        tt_hi = two_theta[p] + 0.5 * two_theta_width[p]
        tt_lo = two_theta[p] - 0.5 * two_theta_width[p]
        a = l1 * factor / math.sin(tt_hi - theta0)
        b = l2 * factor / math.sin(tt_lo - theta0)
        v1 = np.minimum(a, b)
        v2 = np.maximum(a, b)
        out += _spread(v1, v2, y[keep], output_edges)
        out_var += _spread(v1, v2, e[keep], output_edges) ** 2
    return out, out_var


def _spread(v1: np.ndarray, v2: np.ndarray, weight: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Σ_j weight_j · |[v1_j, v2_j] ∩ bin| / (v2_j − v1_j) for every bin of ``edges``: the
    cumulative of each uniform box is a difference of two ramps, summed with sorted
    cumulative sums (O(n log n))."""
    width = v2 - v1
    zero = width <= 0
    slope = np.where(zero, 0.0, weight / np.where(zero, 1.0, width))
    # F(x) = Σ slope·(max(x−v1,0) − max(x−v2,0)) + Σ_{zero-width, v1<x} weight
    pos = np.concatenate((v1, v2))
    sl = np.concatenate((slope, -slope))
    order = np.argsort(pos)
    pos, sl = pos[order], sl[order]
    cs = np.concatenate(([0.0], np.cumsum(sl)))
    cps = np.concatenate(([0.0], np.cumsum(sl * pos)))
    k = np.searchsorted(pos, edges, side="right")
    cdf = edges * cs[k] - cps[k]
    if zero.any():
        zp = np.sort(v1[zero])
        zc = np.concatenate(([0.0], np.cumsum(weight[zero][np.argsort(v1[zero])])))
        cdf = cdf + zc[np.searchsorted(zp, edges, side="right")]
    return np.diff(cdf)


def slit_resolution(*, slit1_mm: float, slit2_mm: float, slit_distance_mm: float, theta_rad: float) -> float:
    """dQ/Q (FWHM) from the collimation: atan((s1 + s2)/d12) / (2 tan θ) (Mantid
    NRCalculateSlitResolution)."""
    return math.atan((slit1_mm + slit2_mm) / slit_distance_mm) / (2.0 * math.tan(theta_rad))
