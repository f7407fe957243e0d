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


def fresnel(q: np.ndarray, qc: float) -> np.ndarray:
    """R(Q) of a bare substrate with critical edge ``qc`` (no roughness)."""
    q = np.asarray(q, dtype=complex)
    k = np.sqrt(q**2 - qc**2)
    return np.abs((q - k) / (q + k)) ** 2


def critical_edge(q: np.ndarray, r: np.ndarray, dr: np.ndarray, dq_q: float, q_min: float, q_max: float) -> float:
    """Qc of a Fresnel edge smeared by a Gaussian dQ/Q (FWHM) with a free scale, fitted by χ²
    on a 1e-5 1/Å grid to the points in [q_min, q_max]."""
    m = (q > q_min) & (q < q_max) & np.isfinite(r) & (dr > 0)
    q, r, dr = q[m], r[m], dr[m]
    s = dq_q * q[:, None] / 2.3548
    xs = q[:, None] + s * np.linspace(-3.5, 3.5, 41)[None, :]
    w = np.exp(-0.5 * ((xs - q[:, None]) / s) ** 2)
    best = (np.inf, 0.0)
    for qc in np.arange(0.5 * q_min + 0.5 * q_max - 0.005, 0.5 * q_min + 0.5 * q_max + 0.005, 1e-5):
        f = np.sum(w * fresnel(xs, qc), axis=1) / w.sum(axis=1)
        scale = np.sum(f * r / dr**2) / np.sum(f * f / dr**2)
        chi = float(np.sum(((r - scale * f) / dr) ** 2))
        if chi < best[0]:
            best = (chi, float(qc))
    return best[1]
