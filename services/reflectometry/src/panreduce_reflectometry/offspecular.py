"""The off-specular map: intensity over (Qx, Qz), or over (pi − pf, pi + pf), from the
position-sensitive detector.

pi = k·sin α_i and pf = k·sin α_f (k = 2π/λ, 1/Å) are the normal components of the
incident and exit wave vectors; pi + pf = Qz, and pi − pf = 0 on the specular line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OffSpecularMap:
    qx_edges: np.ndarray  # 1/Å, edges of the horizontal axis (Qx, or pi − pf)
    qz_edges: np.ndarray  # 1/Å, edges of the vertical axis (Qz, or pi + pf)
    intensity: np.ndarray  # (n_qz, n_qx): counts / I0
    variance: np.ndarray
    axes: tuple[str, str] = ("Qx", "Qz")  # names of (horizontal, vertical): ("pi-pf", "pi+pf") for those axes


def scattering_vector(wavelength: np.ndarray, alpha_i: float, alpha_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Qx, Qz) [1/Å] for incidence α_i and exit angles α_f [rad] at wavelengths [Å]:
    Qx = k(cos α_f − cos α_i), Qz = k(sin α_i + sin α_f), k = 2π/λ."""
    k = 2.0 * math.pi / np.asarray(wavelength, dtype=float)
    return k * (np.cos(alpha_f) - math.cos(alpha_i)), k * (math.sin(alpha_i) + np.sin(alpha_f))


def pi_pf(wavelength: np.ndarray, alpha_i: float, alpha_f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pi − pf, pi + pf) [1/Å] for incidence α_i and exit angles α_f [rad] at wavelengths [Å]:
    pi = k sin α_i, pf = k sin α_f, k = 2π/λ."""
    k = 2.0 * math.pi / np.asarray(wavelength, dtype=float)
    pi, pf = k * math.sin(alpha_i), k * np.sin(alpha_f)
    return pi - pf, pi + pf


def offspecular_map(
    counts: np.ndarray,
    var: np.ndarray,
    lambda_edges: np.ndarray,
    two_theta: np.ndarray,
    *,
    theta_rad: float,
    i0: float,
    wavelength_range: tuple[float, float],
    n_qx: int = 200,
    n_qz: int = 200,
    axes: str = "qx_qz",
) -> OffSpecularMap:
    """Histogram every (pixel, λ bin) at its centre onto a (Qx, Qz) grid spanning the data
    (``axes="qx_qz"``), or onto (pi − pf, pi + pf) (``axes="pi_pf"``): α_f = 2θ_pixel − θ,
    α_i = θ. ``counts``/``var`` (n_pix, n), ``lambda_edges`` (n_pix, n+1). Counts are
    conserved (divided by ``i0``)."""
    lam = 0.5 * (lambda_edges[:, 1:] + lambda_edges[:, :-1])
    alpha_f = (two_theta - theta_rad)[:, None] * np.ones_like(lam)
    if axes == "pi_pf":
        qx, qz = pi_pf(lam, theta_rad, alpha_f)
        names = ("pi-pf", "pi+pf")
    elif axes == "qx_qz":
        qx, qz = scattering_vector(lam, theta_rad, alpha_f)
        names = ("Qx", "Qz")
    else:
        raise ValueError(f"offspecular_axes: {axes!r} is not qx_qz or pi_pf")
    keep = (lam >= wavelength_range[0]) & (lam <= wavelength_range[1]) & np.isfinite(counts)
    qx, qz, y, v = qx[keep], qz[keep], counts[keep], var[keep]
    qx_edges = np.linspace(qx.min(), qx.max(), n_qx + 1)
    qz_edges = np.linspace(qz.min(), qz.max(), n_qz + 1)
    h, _, _ = np.histogram2d(qz, qx, bins=(qz_edges, qx_edges), weights=y / i0)
    hv, _, _ = np.histogram2d(qz, qx, bins=(qz_edges, qx_edges), weights=v / i0**2)
    return OffSpecularMap(qx_edges, qz_edges, h, hv, names)
