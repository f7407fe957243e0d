"""Stitching reflectivity curves measured at several angles (Mantid Stitch1DMany's rules)
on a shared bin grid: pure numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """R(Q) on bins: ``edges`` (n+1,) in 1/Å ascending, ``r``/``var`` (n,), NaN where empty."""

    edges: np.ndarray
    r: np.ndarray
    var: np.ndarray


@dataclass(frozen=True)
class StitchResult:
    curve: Curve
    factors: list[float]  # one per curve, the first 1 (or its manual factor)
    factor_errors: list[float]
    overlaps: list[tuple[float, float] | None]  # Q range of each curve's overlap with the ones before
    mode: str  # "automatic" or "manual"


def common_grid(curves: list[Curve]) -> np.ndarray:
    """The union grid of curves whose edges come from one aligned log grid."""
    edges = np.unique(np.concatenate([c.edges for c in curves]))
    return edges


def place(curve: Curve, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve's values on ``grid`` (a superset of its edges); NaN elsewhere."""
    r = np.full(grid.size - 1, np.nan)
    v = np.full(grid.size - 1, np.nan)
    idx = np.searchsorted(grid, curve.edges[:-1])
    near = np.isclose(grid[np.clip(idx, 0, grid.size - 1)], curve.edges[:-1], rtol=1e-9, atol=0.0)
    if not near.all():
        raise ValueError("curves to stitch must share one bin grid (aligned log bins)")
    r[idx] = curve.r
    v[idx] = curve.var
    return r, v


def stitch(curves: list[Curve], *, manual_factors: list[float] | None = None) -> StitchResult:
    """Stitch curves left to right; the first keeps its scale.

    Automatic factor for curve i: f = ΣLHS·w / ΣRHS·w over the bins of the overlap (the
    intersection of the stitched-so-far's Q range and curve i's) where both are finite,
    σ_f from both sums' errors. Manual: ``manual_factors`` multiplies each curve as given
    (one per curve, the first included). In the overlap the output is the inverse-variance
    weighted mean (a plain mean when either error is 0); elsewhere whichever exists."""
    if not curves:
        raise ValueError("nothing to stitch")
    grid = common_grid(curves)
    width = np.diff(grid)
    mode = "manual" if manual_factors is not None else "automatic"
    if manual_factors is not None and len(manual_factors) != len(curves):
        raise ValueError(f"{len(manual_factors)} manual factors for {len(curves)} curves")
    f0 = manual_factors[0] if manual_factors is not None else 1.0
    lhs, lhs_var = place(curves[0], grid)
    lhs, lhs_var = lhs * f0, lhs_var * f0 * f0
    factors, errors, overlaps = [f0], [0.0], [None]
    for i, cur in enumerate(curves[1:], start=1):
        rhs, rhs_var = place(cur, grid)
        lhs_has = np.isfinite(lhs)
        rhs_has = np.isfinite(rhs)
        both = lhs_has & rhs_has
        lo = max(float(grid[:-1][rhs_has].min()), float(grid[:-1][lhs_has].min()))
        hi = min(float(grid[1:][lhs_has].max()), float(grid[1:][rhs_has].max()))
        overlaps.append((lo, hi) if both.any() else None)
        if manual_factors is not None:
            f, sf = float(manual_factors[i]), 0.0
        elif both.any():
            a = float(np.sum(lhs[both] * width[both]))
            b = float(np.sum(rhs[both] * width[both]))
            if not (b > 0 and a > 0):
                raise ValueError(f"curve {i + 1}: the overlap holds no positive signal to scale by")
            f = a / b
            va = float(np.sum(lhs_var[both] * width[both] ** 2))
            vb = float(np.sum(rhs_var[both] * width[both] ** 2))
            sf = f * math.sqrt(va / a**2 + vb / b**2)
        else:
            raise ValueError(f"curve {i + 1} does not overlap the curves before it: give manual scale factors")
        rhs_var = rhs_var * f * f + (rhs**2) * sf * sf
        rhs = rhs * f
        out = np.where(lhs_has, lhs, rhs)
        out_var = np.where(lhs_has, lhs_var, rhs_var)
        with np.errstate(divide="ignore", invalid="ignore"):
            wl = 1.0 / lhs_var
            wr = 1.0 / rhs_var
            weighted = (lhs * wl + rhs * wr) / (wl + wr)
            weighted_var = 1.0 / (wl + wr)
        plain = (lhs_var <= 0) | (rhs_var <= 0)
        out[both] = np.where(plain[both], 0.5 * (lhs[both] + rhs[both]), weighted[both])
        out_var[both] = np.where(plain[both], 0.25 * (lhs_var[both] + rhs_var[both]), weighted_var[both])
        lhs, lhs_var = out, out_var
        factors.append(f)
        errors.append(sf)
    return StitchResult(Curve(grid, lhs, lhs_var), factors, errors, overlaps, mode)
