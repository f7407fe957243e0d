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


# -- the specular ridge ---------------------------------------------------------------------
# The beam's centre on the detector is searched for as refnx does it (idea of
# ``refnx.reduce.platypusnexus.find_specular_ridge``, reimplemented): the pixel profile is
# summed over the longest-wavelength bins first, a Gaussian on a flat background is fitted to
# it, and the summed range grows towards shorter wavelengths, ``increment`` bins at a time,
# until the fitted centre moves by less than ``atol_px`` and the width by less than ``rtol``.
# The long wavelengths carry the sharpest, least diffuse part of a specular beam, and for a
# reflected beam they are where it sits highest (it left the sample steepest).


def gauss_fit(x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    """(mean, sd) of a Gaussian on a flat background fitted to y(x) by weighted least squares
    (Levenberg–Marquardt on bkg, height, mean, sd); ValueError when it does not converge."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    w = 1.0 / np.asarray(sigma, dtype=float) ** 2
    tot = y.sum()
    if not tot > 0:
        raise ValueError("no counts to fit")
    mean0 = float(np.sum(x * y) / tot)
    sd0 = float(np.sqrt(max(np.sum((x - mean0) ** 2 * y) / tot, 0.25)))
    p = np.array([float(np.min(y)), float(np.max(y) - np.min(y)), float(x[np.argmax(y)]), min(sd0, 0.5 * np.ptp(x))])

    def resid_jac(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g = np.exp(-0.5 * ((x - q[2]) / q[3]) ** 2)
        r = q[0] + q[1] * g - y
        jac = np.stack(
            [np.ones_like(x), g, q[1] * g * (x - q[2]) / q[3] ** 2, q[1] * g * (x - q[2]) ** 2 / q[3] ** 3], 1
        )
        return r, jac

    lam = 1e-3
    r, jac = resid_jac(p)
    chi = float(np.sum(w * r**2))
    for _ in range(200):
        a = jac.T @ (w[:, None] * jac)
        b = -jac.T @ (w * r)
        step = np.linalg.solve(a + lam * np.diag(np.diag(a) + 1e-30), b)
        q = p + step
        if q[3] <= 0 or not np.all(np.isfinite(q)):
            lam *= 10.0
            continue
        r2, jac2 = resid_jac(q)
        chi2 = float(np.sum(w * r2**2))
        if chi2 <= chi:
            done = abs(chi - chi2) <= 1e-10 * max(chi, 1.0) and np.all(np.abs(step) <= 1e-8 * (np.abs(p) + 1e-8))
            p, r, jac, chi = q, r2, jac2, chi2
            lam = max(lam / 10.0, 1e-12)
            if done:
                break
        else:
            lam *= 10.0
            if lam > 1e12:
                break
    if not (x[0] <= p[2] <= x[-1]) or p[1] <= 0:
        raise ValueError("the Gaussian fit did not find a peak")
    return float(p[2]), float(abs(p[3]))


def _shifted(column: np.ndarray, edges: np.ndarray, shift: float) -> np.ndarray:
    """A pixel profile moved by ``shift`` (in pixels, + = to higher indices), counts shared
    between pixels in proportion to overlap (cumulative-sum rebinning)."""
    cum = np.concatenate(([0.0], np.cumsum(column)))
    return np.diff(np.interp(edges - shift, edges, cum))


def ridge_centre(
    counts: np.ndarray,
    pixel_y_m: np.ndarray,
    wavelength: np.ndarray,
    wavelength_range: tuple[float, float],
    *,
    rows: np.ndarray,
    drop_m: np.ndarray | None = None,
    increment: int = 50,
    atol_px: float = 0.012,
    rtol: float = 0.015,
) -> tuple[float, float]:
    """(height [m], sd [m]) of a beam's specular ridge over the contiguous ``rows`` (pixels
    of equal pitch, heights ``pixel_y_m``), found over the λ bins in range, longest first,
    summed ``increment`` more at a time until the Gaussian centre is stable (see above).
    ``drop_m`` (per λ bin, m) is removed from each bin's profile first (gravity)."""
    rows = np.asarray(rows)
    sel = np.flatnonzero((wavelength >= wavelength_range[0]) & (wavelength <= wavelength_range[1]))
    if sel.size == 0:
        raise ValueError("no wavelength bins in range to find the beam in")
    sel = sel[np.argsort(wavelength[sel])[::-1]]  # longest λ first
    c = np.clip(np.asarray(counts, dtype=float)[rows][:, sel], 0.0, None)
    y = pixel_y_m[rows]
    pitch = float((y[-1] - y[0]) / (len(y) - 1)) if len(y) > 1 else 1.0
    if drop_m is not None:
        edges = np.arange(len(rows) + 1, dtype=float)
        d = np.asarray(drop_m, dtype=float)[sel] / pitch
        c = np.stack([_shifted(c[:, k], edges, -d[k]) for k in range(c.shape[1])], axis=1)
    x = np.arange(len(rows), dtype=float)
    increment = max(int(increment), 1)
    last: tuple[float, float] | None = None
    found: tuple[float, float] | None = None
    for n in range(increment, c.shape[1] + increment, increment):
        prof = c[:, :n].sum(axis=1)
        if not prof.max() > 0:
            continue
        try:
            centre, sd = gauss_fit(x, prof, np.sqrt(np.maximum(prof, 1.0)))
        except (ValueError, np.linalg.LinAlgError):
            continue
        if sd > 0.25 * len(rows):  # a Gaussian as wide as the window is the background, not the beam
            continue
        if last is not None and abs(centre - last[0]) < atol_px and abs(sd - last[1]) <= rtol * abs(last[1]):
            found = (centre, sd)
            break
        last = (centre, sd)
    if found is None:
        if last is None:
            raise ValueError("no counts in the beam to find its centre")
        found = last  # not converged over the whole range: the fit over all of it
    return float(y[0] + found[0] * pitch), abs(found[1] * pitch)
