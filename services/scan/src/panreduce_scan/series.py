"""Series of fitted peak parameters across a batch of scans.

Choosing the series axis (``series_axis="auto"``), from the scalar metadata every scan
of the batch has:

1. Physical control quantities, in this order: sample temperature (``Tsample``, ``Ta``,
   ``Tb``, ``T``, ``Tset``), energy (``en``, ``energy``, ``incident_energy``), azimuth
   (``psi``, ``azimuth``), field (``field``, ``B``). The first whose spread across the
   batch is larger than the fluctuation of that quantity at a fixed set-point (0.5 K,
   1 eV = 0.001 keV, 0.5 deg, 0.01 T) is the series axis.
2. Otherwise, with at least three scans, any other scalar whose values in scan order
   move monotonically in nearly equal steps (relative standard deviation of the steps
   below 10 %) and by more than 1e-3 of its magnitude - a quantity stepped on purpose,
   e.g. a sample translation ``spara`` in 0.05 mm steps. Ties go to the most regular
   and "roundest" step (distance of the step from 1, 2 or 5 x 10^k). Clocks, ring
   current, monitors and attenuation are never candidates.
3. Otherwise the scan number.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

#: (names, smallest spread that counts as deliberate, units)
PHYSICAL_AXES: tuple[tuple[tuple[str, ...], float, str], ...] = (
    (("Tsample", "Ta", "Tb", "T", "Tset"), 0.5, "K"),
    (("en", "energy", "incident_energy"), 0.001, "keV"),
    (("psi", "azimuth"), 0.5, "deg"),
    (("field", "B"), 0.01, "T"),
)
_EXCLUDED = re.compile(
    r"(?i)^(rc|current|ic\d?monitor|monitor|count_time|transmission|atten.*|.*time.*|epoch|"
    r"day|hours|minutes|seconds|year|month|.*gain|.*_offset|scan.*|duration|path|features|"
    r"calibration.*|.*temp|t\d?dcm.*)$"
)
SCAN_NUMBER = "scan"


def _round_step_distance(step: float) -> float:
    """Relative distance of |step| from the nearest 1, 2 or 5 x 10^k."""
    step = abs(step)
    if step == 0 or not math.isfinite(step):
        return 1.0
    exponent = math.floor(math.log10(step))
    candidates = [m * 10.0**e for e in (exponent - 1, exponent, exponent + 1) for m in (1, 2, 5)]
    return min(abs(step - c) / c for c in candidates)


def choose_series_axis(metadata: Sequence[Mapping[str, float]]) -> str:
    """The metadata key the batch varies (see the module doc), or ``"scan"``.
    ``metadata`` is one mapping per scan, in scan order."""
    if len(metadata) < 2:
        return SCAN_NUMBER
    common = set(metadata[0])
    for m in metadata[1:]:
        common &= set(m)

    def values(key: str) -> np.ndarray:
        return np.array([float(m[key]) for m in metadata], dtype=float)

    for names, tolerance, _units in PHYSICAL_AXES:
        for name in names:
            if name in common:
                v = values(name)
                if np.all(np.isfinite(v)) and np.ptp(v) > tolerance:
                    return name
    if len(metadata) < 3:
        return SCAN_NUMBER
    best: tuple[float, str] | None = None
    for key in sorted(common):
        if _EXCLUDED.match(key) or any(key in names for names, _, _ in PHYSICAL_AXES):
            continue
        v = values(key)
        if not np.all(np.isfinite(v)):
            continue
        steps = np.diff(v)
        if not (np.all(steps > 0) or np.all(steps < 0)):
            continue
        if np.ptp(v) <= 1e-3 * max(float(np.abs(v).max()), 1e-12):
            continue
        mean_step = float(np.mean(steps))
        regularity = float(np.std(steps) / abs(mean_step))
        if regularity > 0.1:
            continue
        score = regularity + _round_step_distance(mean_step)
        if best is None or score < best[0]:
            best = (score, key)
    return best[1] if best else SCAN_NUMBER


@dataclass(frozen=True)
class SeriesTable:
    """Fitted parameters against the series axis, one row per scan, sorted by it."""

    axis: str
    rows: list[dict[str, object]]

    def column(self, key: str) -> np.ndarray:
        """A numeric column (``nan`` where missing)."""
        out = []
        for r in self.rows:
            v = r.get(key)
            out.append(float(v) if isinstance(v, (int, float)) and v is not None else math.nan)
        return np.array(out, dtype=float)


def series_table(series_values: Sequence[float], results: Sequence[Mapping[str, object]], *, axis: str) -> SeriesTable:
    """Rows of ``results`` (per-scan fitted values) with ``axis`` = ``series_values`` (the
    series quantity of each scan, in its own units), sorted by that value (stable)."""
    if len(series_values) != len(results):
        raise ValueError("one series value per result is needed")
    rows = []
    for value, result in zip(series_values, results, strict=True):
        row: dict[str, object] = {axis: float(value)}
        row.update(result)  # a result's own value of the axis (e.g. its int scan) wins
        rows.append(row)
    keys = [float(r[axis]) for r in rows]  # type: ignore[arg-type]
    order = sorted(range(len(rows)), key=lambda i: (math.isnan(keys[i]), keys[i]))
    return SeriesTable(axis=axis, rows=[rows[i] for i in order])
