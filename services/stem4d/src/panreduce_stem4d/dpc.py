"""Centre of mass / differential phase contrast on the scan grid.

The CoM shift (detector frame, after descan removal and distortion correction) is turned
into the scan frame by an optional flip (detector y negated) then a rotation by
``rotation_deg`` (counter-clockwise, +x towards +y). Rotations θ and θ + 180° give the same
|curl|: the search returns θ in [-90, 90); the caller states the other branch explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from scipy import optimize
else:
    optimize = lazy.module("scipy.optimize")


def to_scan_frame(
    com_x: np.ndarray, com_y: np.ndarray, rotation_deg: float, flip: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Detector-frame CoM components -> scan-frame (x, y) components."""
    if flip:
        com_y = -com_y
    t = np.radians(rotation_deg)
    c, s = np.cos(t), np.sin(t)
    return c * com_x - s * com_y, s * com_x + c * com_y


def detector_to_scan(rotation_deg: float, flip: bool) -> np.ndarray:
    """The 2x2 matrix M taking detector-frame (x, y) vectors to the scan frame (as
    :func:`to_scan_frame`): M = R(θ) · diag(1, -1 if flip else 1)."""
    t = np.radians(rotation_deg)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    return r @ np.diag([1.0, -1.0 if flip else 1.0])


def divergence(fx: np.ndarray, fy: np.ndarray, step_x: float = 1.0, step_y: float = 1.0) -> np.ndarray:
    """∂fx/∂x + ∂fy/∂y (central differences; units of f per unit of step)."""
    return np.gradient(fx, step_x, axis=1) + np.gradient(fy, step_y, axis=0)


def curl(fx: np.ndarray, fy: np.ndarray, step_x: float = 1.0, step_y: float = 1.0) -> np.ndarray:
    """∂fy/∂x − ∂fx/∂y (central differences)."""
    return np.gradient(fy, step_x, axis=1) - np.gradient(fx, step_y, axis=0)


@dataclass(frozen=True)
class Rotation:
    rotation_deg: float
    curl_rms: float  # of the rotated field, in the field's units per scan step
    divergence_rms: float


def _curl_power(com_x: np.ndarray, com_y: np.ndarray, deg: float, flip: bool) -> float:
    fx, fy = to_scan_frame(com_x, com_y, deg, flip)
    return float(np.nanmean(curl(fx, fy) ** 2))


def find_rotation(com_x: np.ndarray, com_y: np.ndarray, *, flip: bool = False) -> Rotation:
    """The scan–detector rotation (deg, in [-90, 90)) that minimises the mean squared curl."""
    grid = np.arange(-90.0, 90.0, 1.0)
    powers = [_curl_power(com_x, com_y, d, flip) for d in grid]
    best = float(grid[int(np.argmin(powers))])
    res = optimize.minimize_scalar(
        lambda d: _curl_power(com_x, com_y, d, flip),
        bounds=(best - 1.0, best + 1.0),
        method="bounded",
        options={"xatol": 1e-4},
    )
    deg = (float(res.x) + 90.0) % 180.0 - 90.0
    fx, fy = to_scan_frame(com_x, com_y, deg, flip)
    return Rotation(
        deg, float(np.sqrt(np.nanmean(curl(fx, fy) ** 2))), float(np.sqrt(np.nanmean(divergence(fx, fy) ** 2)))
    )


def integrate_gradient(gx: np.ndarray, gy: np.ndarray, step_x: float = 1.0, step_y: float = 1.0) -> np.ndarray:
    """φ with ∇φ ≈ (gx, gy), by Fourier integration on the mirror-extended grid (zero mean).
    ``g`` in units of φ per unit of step."""
    gx = np.nan_to_num(gx)
    gy = np.nan_to_num(gy)
    ny, nx = gx.shape
    # mirror so the field is periodic: gx is odd under x-reflection, gy odd under y-reflection
    ex = np.block([[gx, -gx[:, ::-1]], [gx[::-1], -gx[::-1, ::-1]]])
    ey = np.block([[gy, gy[:, ::-1]], [-gy[::-1], -gy[::-1, ::-1]]])
    ky = np.fft.fftfreq(2 * ny, d=step_y)[:, None] * 2 * np.pi
    kx = np.fft.fftfreq(2 * nx, d=step_x)[None, :] * 2 * np.pi
    k2 = kx * kx + ky * ky
    k2[0, 0] = 1.0
    phi_k = (-1j * kx * np.fft.fft2(ex) - 1j * ky * np.fft.fft2(ey)) / k2
    phi_k[0, 0] = 0.0
    phi = np.real(np.fft.ifft2(phi_k))[:ny, :nx]
    return phi - phi.mean()


def phase_from_com(
    com_x_mrad: np.ndarray, com_y_mrad: np.ndarray, *, step_nm: tuple[float, float], wavelength_nm: float
) -> np.ndarray:
    """The DPC phase (rad) whose gradient is 2π θ / λ, θ the scan-frame CoM deflection (mrad)."""
    k = 2 * np.pi / wavelength_nm * 1e-3  # rad per nm per mrad
    return integrate_gradient(com_x_mrad * k, com_y_mrad * k, step_x=step_nm[1], step_y=step_nm[0])
