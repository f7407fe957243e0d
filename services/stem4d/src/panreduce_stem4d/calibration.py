"""Calibration: beam centre and disc radius, descan removal, elliptical distortion, wavelength.

Conventions: detector coordinates are (x, y) = (column, row) in px; angles in degrees
from +x towards +y. An ellipse is (x0, y0, a, b, θ) with a ≥ b the semi-axes and θ the
direction of the major axis; ``axis_ratio`` = a / b ≥ 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from panreduce import constants, lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from scipy import ndimage
else:
    ndimage = lazy.module("scipy.ndimage")


@dataclass(frozen=True)
class Disc:
    center_yx_px: tuple[float, float]
    radius_px: float
    area_px: float


def fit_disc(pattern: np.ndarray, *, level: float = 0.5) -> Disc:
    """The bright disc of ``pattern``: pixels above ``level`` × (robust maximum − background)
    + background, largest connected region; centre = its intensity-weighted centroid (px),
    radius = sqrt(area / π) (px)."""
    img = ndimage.uniform_filter(np.asarray(pattern, np.float64), 3)
    background = float(np.percentile(img, 2))
    peak = float(np.percentile(img, 99.9))
    if peak <= background:
        raise ValueError("the pattern has no disc brighter than its background")
    mask = img > background + level * (peak - background)
    labels, n = ndimage.label(mask)
    if n == 0:
        raise ValueError("no disc found")
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    region = labels == (1 + int(np.argmax(sizes)))
    w = np.where(region, np.asarray(pattern, np.float64) - background, 0.0).clip(0)
    yy, xx = np.indices(region.shape)
    total = w.sum()
    cy, cx = (w * yy).sum() / total, (w * xx).sum() / total
    area = float(region.sum())
    return Disc((float(cy), float(cx)), float(np.sqrt(area / np.pi)), area)


# -- ellipse ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ellipse:
    x0: float
    y0: float
    a: float  # semi-major, px
    b: float  # semi-minor, px
    theta_deg: float  # direction of the major axis, in [-90, 90)

    @property
    def axis_ratio(self) -> float:
        return self.a / self.b

    def affine_xy(self) -> np.ndarray:
        """2x2 matrix mapping (dx, dy) offsets onto a circle of radius sqrt(a b) (area kept)."""
        t = np.radians(self.theta_deg)
        r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        s = np.diag([np.sqrt(self.b / self.a), np.sqrt(self.a / self.b)])
        return r @ s @ r.T


def ring_points(
    pattern: np.ndarray,
    center_yx: tuple[float, float],
    r_min_px: float,
    r_max_px: float,
    *,
    n_rays: int = 360,
    step_px: float = 0.25,
) -> np.ndarray:
    """(n, 2) (x, y) points of the ring's maximum along rays from ``center_yx`` between the
    radii: the centroid of each ray's profile above its half height."""
    img = np.asarray(pattern, np.float64)
    radii = np.arange(r_min_px, r_max_px + step_px / 2, step_px)
    phi = np.linspace(0, 2 * np.pi, n_rays, endpoint=False)
    xs = center_yx[1] + np.cos(phi)[:, None] * radii[None]
    ys = center_yx[0] + np.sin(phi)[:, None] * radii[None]
    prof = ndimage.map_coordinates(img, [ys.ravel(), xs.ravel()], order=1, mode="nearest").reshape(xs.shape)
    lo = prof.min(axis=1, keepdims=True)
    hi = prof.max(axis=1, keepdims=True)
    w = np.clip(prof - (lo + 0.5 * (hi - lo)), 0, None)
    good = (hi[:, 0] > lo[:, 0]) & (w.sum(axis=1) > 0)
    r_peak = (w * radii[None]).sum(axis=1) / np.where(good, w.sum(axis=1), 1.0)
    pts = np.stack([center_yx[1] + np.cos(phi) * r_peak, center_yx[0] + np.sin(phi) * r_peak], axis=1)
    return pts[good]


def fit_ellipse_points(points_xy: np.ndarray) -> Ellipse:
    """Least-squares conic A x² + B x y + C y² + D x + E y = 1 through the points -> Ellipse."""
    pts = np.asarray(points_xy, np.float64)
    if pts.shape[0] < 5:
        raise ValueError("an ellipse needs at least 5 points")
    m = pts.mean(axis=0)
    x, y = (pts - m).T
    design = np.stack([x * x, x * y, y * y, x, y], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.ones_like(x), rcond=None)
    a_, b_, c_, d_, e_ = coef
    q = np.array([[a_, b_ / 2], [b_ / 2, c_]])
    try:
        centre = np.linalg.solve(2 * q, -np.array([d_, e_]))
    except np.linalg.LinAlgError:
        raise ValueError("the ring points do not describe an ellipse") from None
    k = 1 + centre @ q @ centre  # (p - c)^T Q (p - c) = k
    evals, evecs = np.linalg.eigh(q / k)
    if np.any(evals <= 0):
        raise ValueError("the ring points do not describe an ellipse")
    a = 1 / np.sqrt(evals[0])  # smaller eigenvalue -> major axis
    b = 1 / np.sqrt(evals[1])
    vx, vy = evecs[:, 0]
    theta = (np.degrees(np.arctan2(vy, vx)) + 90.0) % 180.0 - 90.0
    return Ellipse(float(centre[0] + m[0]), float(centre[1] + m[1]), float(a), float(b), float(theta))


def fit_ellipse_ring(
    pattern: np.ndarray, center_yx: tuple[float, float], r_min_px: float, r_max_px: float, *, iterations: int = 3
) -> Ellipse:
    """Ellipse of a ring (amorphous or polycrystalline) lying between the two radii (px),
    re-centring the rays on the fitted centre each iteration."""
    c = center_yx
    ell = None
    for _ in range(iterations):
        ell = fit_ellipse_points(ring_points(pattern, c, r_min_px, r_max_px))
        c = (ell.y0, ell.x0)
    assert ell is not None
    return ell


def corrected_pattern(pattern: np.ndarray, center_yx: tuple[float, float], affine_xy: np.ndarray) -> np.ndarray:
    """``pattern`` resampled in corrected coordinates (about the same centre)."""
    inv = np.linalg.inv(affine_xy)
    yy, xx = np.indices(pattern.shape, dtype=np.float64)
    ux, uy = xx - center_yx[1], yy - center_yx[0]
    sx = inv[0, 0] * ux + inv[0, 1] * uy + center_yx[1]
    sy = inv[1, 0] * ux + inv[1, 1] * uy + center_yx[0]
    return ndimage.map_coordinates(np.asarray(pattern, np.float64), [sy, sx], order=1, mode="nearest")


def residual_ellipticity(pattern: np.ndarray, ellipse: Ellipse, r_min_px: float, r_max_px: float) -> float:
    """axis_ratio − 1 of the ring refitted after resampling the pattern through the correction."""
    c = (ellipse.y0, ellipse.x0)
    fixed = corrected_pattern(pattern, c, ellipse.affine_xy())
    return fit_ellipse_ring(fixed, c, r_min_px, r_max_px).axis_ratio - 1.0


# -- descan -------------------------------------------------------------------------------
def fit_descan(com: np.ndarray, *, order: int = 1) -> np.ndarray:
    """The descan map of a (ny, nx) CoM component: a least-squares polynomial surface of
    ``order`` (0 mean, 1 plane, 2 quadratic) in the scan indices, NaNs ignored."""
    ny, nx = com.shape
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    yy, xx = yy / max(ny - 1, 1), xx / max(nx - 1, 1)
    terms = [np.ones_like(yy)]
    if order >= 1:
        terms += [xx, yy]
    if order >= 2:
        terms += [xx * xx, xx * yy, yy * yy]
    design = np.stack([t.ravel() for t in terms], axis=1)
    ok = np.isfinite(com.ravel())
    if ok.sum() < design.shape[1]:
        return np.full_like(com, np.nanmean(com) if ok.any() else 0.0)
    coef, *_ = np.linalg.lstsq(design[ok], com.ravel()[ok], rcond=None)
    return (design @ coef).reshape(ny, nx)


# -- electrons ------------------------------------------------------------------------------
def electron_wavelength_nm(energy_kev: float) -> float:
    """Relativistic de Broglie wavelength (nm) of electrons accelerated through ``energy_kev`` kV."""
    return float(constants.electron_wavelength_angstrom(energy_kev * 1e3)) * 0.1
