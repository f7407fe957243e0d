"""A series of frames' curves: their times, kinetic table (Guinier, invariant), one
common q grid, the scan motors and the per-frame peak fits of a map."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from panreduce import errors
from panreduce.errors import FieldViolation, InvalidParameters
from panreduce_saxs import analysis
from panreduce_saxs.integrate import Curve

TIME_COUNTERS = ("Time", "time", "Epoch", "epoch", "elapsed_time", "Seconds")
KINETIC_COLUMNS = (
    "rg",
    "rg_err",
    "i0",
    "i0_err",
    "guinier_q_min",
    "guinier_q_max",
    "guinier_ok",
    "invariant",
    "invariant_err",
)


def frame_times(counters: Sequence[dict[str, float]], frame_time_s: float | None = None) -> np.ndarray:
    """Time of each frame (s) from the first: ``frame_time_s`` apart, else a time counter
    every frame records, else the frame number."""
    n = len(counters)
    if frame_time_s is not None:
        return np.arange(n) * frame_time_s
    for key in TIME_COUNTERS:
        if all(key in c for c in counters):
            t = np.array([c[key] for c in counters], dtype=float)
            return t - t[0]
    return np.arange(n, dtype=float)


def kinetic_table(
    curves: Sequence[Curve],
    *,
    guinier_qrg_max: float = 1.3,
    guinier_q_min: float = 0.0,
    guinier_q_max: float | None = None,
) -> np.ndarray:
    """(frames, KINETIC_COLUMNS): Guinier fit and invariant of each frame."""
    rows = []
    for c in curves:
        g = analysis.guinier_fit(c.q, c.i, c.sigma, q_min=guinier_q_min, qrg_max=guinier_qrg_max, q_max=guinier_q_max)
        inv, inv_err = analysis.invariant(c.q, c.i, c.sigma)
        rows.append((g.rg, g.rg_err, g.i0, g.i0_err, g.q_min, g.q_max, float(g.ok), inv, inv_err))
    return np.array(rows, dtype=float).reshape(len(curves), len(KINETIC_COLUMNS))


def common_q(curves: Sequence[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(q, I stack, σ stack) of the curves on one q grid: theirs when they share it, else
    the union of their grids with NaN where a curve has no bin (None when that union is
    more than 4 times a curve's grid: the grids really differ)."""
    q = curves[0].q
    if any(c.q.shape != q.shape or not np.allclose(c.q, q) for c in curves):
        allq = np.unique(np.concatenate([c.q for c in curves]))
        if allq.size > 4 * max(c.q.size for c in curves):
            return None
        stack = np.full((len(curves), allq.size), np.nan)
        sig = np.full_like(stack, np.nan)
        for k, c in enumerate(curves):
            idx = np.searchsorted(allq, c.q)
            stack[k, idx], sig[k, idx] = c.i, c.sigma
        return allq, stack, sig
    return q, np.stack([c.i for c in curves]), np.stack([c.sigma for c in curves])


def stacked(curves: Sequence[Curve], source: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`common_q`, or InvalidInput naming ``source`` when the grids differ."""
    common = common_q(curves)
    if common is None:
        raise errors.InvalidInput(source, "the frames' q grids differ (masks per frame?)")
    return common


def peak_fits(
    curves: Sequence[Curve], peak_q_range: tuple[float, float], source: str = ""
) -> tuple[np.ndarray, analysis.PeakFits]:
    """(the frames' common q grid, their Gaussian peak fits in ``peak_q_range``)."""
    q, stack, sig = stacked(curves, source)
    return q, analysis.fit_gaussian_peaks(q, stack, sig, peak_q_range)


def _violation(name: str, why: str) -> InvalidParameters:
    return InvalidParameters([FieldViolation(name, why)])


def check_motors(
    counters: Sequence[dict[str, float]], *, motor_x: str = "", motor_y: str = "", field_prefix: str = ""
) -> None:
    """Every frame records the motors named (InvalidParameters naming the field if not)."""
    keys = set.intersection(*(set(c) for c in counters)) if counters else set()
    for name, pname in ((motor_x, "motor_x"), (motor_y, "motor_y")):
        if name and name not in keys:
            raise _violation(
                field_prefix + pname, f"no positioner {name!r} (known: {', '.join(sorted(keys)) or 'none'})"
            )


def motors(
    counters: Sequence[dict[str, float]], *, motor_x: str = "", motor_y: str = "", field_prefix: str = ""
) -> tuple[str, str, np.ndarray, np.ndarray]:
    """(x name, y name, x, y) of the map: the motors named, else the fast axis (its grid
    node changes most often between consecutive frames) and the slowest moving one."""
    check_motors(counters, motor_x=motor_x, motor_y=motor_y, field_prefix=field_prefix)
    keys = set.intersection(*(set(c) for c in counters)) if counters else set()
    pos = {k: np.array([c[k] for c in counters]) for k in keys}
    moving = [k for k, v in pos.items() if np.ptp(v) > 0 and k not in TIME_COUNTERS and k != "time"]
    xname, yname = motor_x, motor_y
    if not xname or not yname:

        def changes(v: np.ndarray) -> float:
            nodes, step = analysis._axis_nodes(v, None)
            if not step:
                return 0.0
            idx = np.rint((v - nodes[0]) / step)
            return float((np.diff(idx) != 0).mean()) if v.size > 1 else 0.0

        ranked = sorted((k for k in moving if k not in (xname, yname)), key=lambda k: -changes(pos[k]))
        if not xname:
            if not ranked:
                raise _violation(field_prefix + "motor_x", "no moving positioner found for the map")
            xname = ranked.pop(0)
        if not yname:
            ranked = [k for k in ranked if k != xname]
            yname = ranked[-1] if ranked else ""
    x = pos[xname]
    y = pos[yname] if yname else np.zeros_like(x)
    return xname, (yname or "y"), x, y
