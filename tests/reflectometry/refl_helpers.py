"""Shared helpers of the reflectometry tests."""

from __future__ import annotations

import numpy as np


def fringe_period(q: np.ndarray, r: np.ndarray, q_min: float, q_max: float) -> float:
    """The dominant period in Q (1/Å) of the oscillation of log(R·Q⁴) about a cubic trend
    between q_min and q_max: a discrete Fourier power scan over 0.003–0.012 1/Å."""
    sel = (q >= q_min) & (q <= q_max) & np.isfinite(r) & (r > 0)
    q, y = q[sel], np.log(r[sel] * q[sel] ** 4)
    y = y - np.polyval(np.polyfit(q, y, 3), q)
    periods = np.linspace(0.003, 0.012, 400)
    power = [abs(np.sum(y * np.exp(2j * np.pi * q / p))) ** 2 for p in periods]
    return float(periods[int(np.argmax(power))])
