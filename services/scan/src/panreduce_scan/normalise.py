"""I16 normalisation of detector counts, with counting-statistics errors.

    intensity = counts / transmission / count_time * (reference_mA / ring_current_mA)

(counts per second at full beam and at the reference ring current). The standard
deviation of the raw counts is sqrt(max(counts, 1)) (Poisson, with 1 count as the
floor so that empty points still weigh in the fit), scaled by the same factor; the
normalising quantities are taken as exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalised:
    """Normalised intensity and its standard deviation, per scan point."""

    intensity: np.ndarray  # counts/s at full transmission (and reference ring current)
    sigma: np.ndarray  # standard deviation of ``intensity``
    factor: np.ndarray  # intensity = counts * factor
    units: str


def counting_sigma(counts: np.ndarray) -> np.ndarray:
    """Standard deviation of raw counts: sqrt(max(counts, 1)) (counts)."""
    return np.sqrt(np.maximum(np.asarray(counts, float), 1.0))


def normalise(
    counts: np.ndarray,
    *,
    count_time: np.ndarray | float = 1.0,
    transmission: np.ndarray | float = 1.0,
    ring_current: np.ndarray | float | None = None,
    ring_current_reference: float = 300.0,
    enabled: bool = True,
) -> Normalised:
    """Normalise ``counts`` (counts per point) by ``count_time`` (s), attenuator
    ``transmission`` (0..1] and, when given, ``ring_current`` (mA) to
    ``ring_current_reference`` (mA). ``enabled=False`` returns raw counts and their
    Poisson sigma (factor 1)."""
    counts = np.asarray(counts, float)
    raw_sigma = counting_sigma(counts)
    if not enabled:
        factor = np.ones_like(counts)
        return Normalised(counts.copy(), raw_sigma, factor, "counts")
    per_second = 1.0 / np.asarray(count_time, float)
    full_beam = 1.0 / np.asarray(transmission, float)
    factor = np.broadcast_to(per_second * full_beam, counts.shape).astype(float)
    units = "counts/s (transmission 1)"
    if ring_current is not None:
        current_scale = ring_current_reference / np.asarray(ring_current, float)
        factor = factor * current_scale
        units = f"counts/s (transmission 1, {ring_current_reference:g} mA)"
    return Normalised(counts * factor, raw_sigma * factor, factor, units)
