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


# Si: b = 4.1491 fm, 2.329 g/cm³ (4.994e-2 atoms/Å³) -> SLD 2.073e-6 Å⁻², Qc = 4·sqrt(π·SLD)
SI_SLD = 2.073e-6
SI_QC_FROM_SLD = 4.0 * float(np.sqrt(np.pi * SI_SLD))
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(31)


def fresnel_rough(q: np.ndarray, qc: float, sigma: float) -> np.ndarray:
    """|r|² of a substrate with critical edge ``qc`` and Névot–Croce roughness ``sigma`` (Å)."""
    kz = np.asarray(q, dtype=complex) / 2.0
    kz2 = np.sqrt(kz**2 - (qc / 2.0) ** 2)
    r = (kz - kz2) / (kz + kz2) * np.exp(-2.0 * kz * kz2 * sigma**2)
    return np.abs(r) ** 2


def smeared_edge(q: np.ndarray, k: float, scale: float, fwhm: float, sigma: float, qc: float) -> np.ndarray:
    """scale · (Fresnel-with-roughness at k·Q) averaged over a Gaussian dQ = fwhm·Q (FWHM) per point."""
    s = fwhm * q / 2.3548
    qq = np.abs(q[:, None] + s[:, None] * _NODES[None, :]) * k
    return scale * (fresnel_rough(qq, qc, sigma) * _WEIGHTS).sum(axis=1) / _WEIGHTS.sum()


def fit_si_edge(
    q: np.ndarray,
    r: np.ndarray,
    dr: np.ndarray,
    *,
    q_min: float = 0.0062,
    q_max: float = 0.02,
    fwhm: float | None = None,
    qc: float = SI_QC_FROM_SLD,
) -> dict[str, float]:
    """Least-squares fit of Si's edge (its Qc fixed from its SLD) to R(Q) in [q_min, q_max]:
    free Q scale k (the true Q is k·Q, so the angle the edge wants is θ·k for small θ), plateau
    scale, roughness, and the resolution dQ/Q (FWHM) unless ``fwhm`` fixes it. Returns the
    values, ``k_err`` (from the covariance, scaled by χ²/dof when above 1) and ``chi2`` per dof."""
    from scipy.optimize import least_squares

    m = (q > q_min) & (q < q_max) & np.isfinite(r) & (dr > 0)
    q, r, dr = q[m], r[m], dr[m]
    free_f = fwhm is None

    def model(p: np.ndarray) -> np.ndarray:
        return smeared_edge(q, p[0], p[1], p[3] if free_f else float(fwhm), p[2], qc)

    p0 = [1.0, 1.0, 3.0] + ([0.03] if free_f else [])
    lo = [0.9, 0.5, 0.0] + ([0.001] if free_f else [])
    hi = [1.1, 1.5, 40.0] + ([0.2] if free_f else [])
    res = least_squares(lambda p: (model(p) - r) / dr, p0, bounds=(lo, hi), x_scale="jac")
    chi2 = float(np.sum(res.fun**2)) / (q.size - len(p0))
    cov = np.linalg.pinv(res.jac.T @ res.jac) * max(chi2, 1.0)
    out = {"k": float(res.x[0]), "scale": float(res.x[1]), "sigma": float(res.x[2]), "chi2": chi2}
    out["fwhm"] = float(res.x[3]) if free_f else float(fwhm)
    out["k_err"] = float(np.sqrt(cov[0, 0]))
    out["points"] = float(q.size)
    return out
