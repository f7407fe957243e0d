"""Gravity and the angle of incidence on a horizontal-beam reflectometer (Platypus), and θ
from the beam positions on the detector. Pure functions on arrays.

Source of the formulas: the parabolic-trajectory treatment of refnx (A. Nelson,
``refnx.reduce.parabolic_motion`` and ``refnx.reduce.reduce.PlatypusReduce._reduce_single_angle``,
BSD-3; method of M. James et al., Nucl. Instrum. Methods A 632 (2011) 112, the Platypus
instrument paper). Implemented here from the equations, not copied:

* a neutron of speed v = h/(m_n λ) [m/s] leaving the first collimation slit at angle α
  follows y(x) = x·tan α − g·x²·(1 + tan² α)/(2v²) (x horizontal from that slit, m);
* the beam through both collimation slits (both at height 0, distance D apart) has
  y(D) = 0: tan α = (1 − √(1 − 4a²))/(2a) with a = g·D/(2v²);
* it meets the sample, the line y = (x − X)·tan ω_nom through the sample centre (X from the
  first slit), where b·x² + (tan ω − tan α)·x − X·tan ω = 0 with b = g(1 + tan² α)/(2v²);
* its elevation there is ε = atan(tan α − 2b·x) (negative: the neutron falls), so the true
  angle of incidence is ω(λ) = ω_nom − ε(λ): it grows with λ;
* ω_nom = ½·atan((y_R − y_D)/L) from the reflected and direct beam heights y_R, y_D on
  the detector at L along the beam; the direct beam's centre is taken "for an
  infinitely fast neutron": its per-λ centroid minus the drop y(D + L_sd) at the detector.
"""

from __future__ import annotations

import numpy as np

from panreduce import constants

G = 9.80665  # m/s², standard gravity


def neutron_speed(wavelength_angstrom: np.ndarray) -> np.ndarray:
    """v = h/(m_n λ) [m/s] for λ in Å."""
    return constants.NEUTRON_H_OVER_M * 1e6 / np.asarray(wavelength_angstrom, dtype=float)  # Å·m/µs -> m/s


def collimated_trajectory(wavelength_angstrom: np.ndarray, collimation_m: float) -> np.ndarray:
    """tan α of the path that passes both collimation slits (same height, ``collimation_m`` apart)."""
    v = neutron_speed(wavelength_angstrom)
    a = G * collimation_m / (2.0 * v**2)
    return 2.0 * a / (1.0 + np.sqrt(1.0 - 4.0 * a**2))  # = (1 − √(1 − 4a²))/(2a), stable for small a


def drop_at(wavelength_angstrom: np.ndarray, collimation_m: float, distance_m: float) -> np.ndarray:
    """Height y [m] of that path at ``distance_m`` (horizontal) from the first slit (< 0 beyond the second)."""
    t = collimated_trajectory(wavelength_angstrom, collimation_m)
    v = neutron_speed(wavelength_angstrom)
    return distance_m * t - G * distance_m**2 * (1.0 + t**2) / (2.0 * v**2)


def elevation_at_sample(
    wavelength_angstrom: np.ndarray, omega_nom_rad: float, *, collimation_m: float, slit_to_sample_m: float
) -> np.ndarray:
    """ε(λ) [rad]: the path's angle to the horizontal where it meets the sample plane."""
    t = collimated_trajectory(wavelength_angstrom, collimation_m)
    v = neutron_speed(wavelength_angstrom)
    b = G * (1.0 + t**2) / (2.0 * v**2)
    tw = np.tan(omega_nom_rad)
    c = tw - t
    # root near X of b x² + c x − X tan ω = 0, written without cancellation: x = 2X tan ω / (c + √(c² + 4bX tan ω))
    disc = np.sqrt(c**2 + 4.0 * b * slit_to_sample_m * tw)
    x = np.where(np.abs(tw) > 1e-12, 2.0 * slit_to_sample_m * tw / (c + disc), slit_to_sample_m)
    return np.arctan(t - 2.0 * b * x)


def beam_height(
    counts: np.ndarray,
    pixel_y_m: np.ndarray,
    wavelength: np.ndarray,
    wavelength_range: tuple[float, float],
    *,
    rows: np.ndarray,
    drop_m: np.ndarray | None = None,
) -> float:
    """Height [m] of a beam on the detector: the count-weighted mean over the λ bins in range
    of each bin's centroid over ``rows``, after removing ``drop_m`` (the gravity drop per λ
    bin, m) when given. ``counts`` (n_pix, n_tof), ``wavelength`` (n_tof,) bin centres."""
    sel = (wavelength >= wavelength_range[0]) & (wavelength <= wavelength_range[1])
    c = np.clip(counts[rows][:, sel], 0.0, None)
    y = pixel_y_m[rows][:, None]
    w = c.sum(axis=0)
    good = w > 0
    if not good.any():
        raise ValueError("no counts in the beam to find its height")
    centroid = (c * y).sum(axis=0)[good] / w[good]
    if drop_m is not None:
        centroid = centroid - np.asarray(drop_m)[sel][good]
    return float(np.sum(centroid * w[good]) / np.sum(w[good]))


def omega_from_heights(y_reflected_m: float, y_direct_m: float, distance_m: float) -> float:
    """ω_nom [rad] = ½·atan((y_R − y_D)/L)."""
    return 0.5 * float(np.arctan((y_reflected_m - y_direct_m) / distance_m))
