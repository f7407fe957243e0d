"""Analytic phantoms made of ellipsoids: exact line integrals (parallel beam, rotation
about the vertical axis, off-centre axis allowed) and the matching voxel ground truth.

Used by the tests and the benchmark; also handy to check a deployment. Coordinates:
the rotation axis is the z axis; a detector row ``r`` sees height
``z = r - (n_rows - 1) / 2`` and a column ``j`` the distance ``s = j - center`` from the
axis (pixels). The ground-truth slice uses the reconstruction grid of
:mod:`panreduce_tomography.recon` (pixel ``(i, j)`` at ``x = j - n//2, y = i - n//2``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ellipsoid:
    value: float  # attenuation added inside (1/pixel)
    axes: tuple[float, float, float]  # semi-axes a, b, c (pixels)
    centre: tuple[float, float, float]  # x0, y0, z0 (pixels)
    phi: float = 0.0  # rotation about z (radians)


# 3-D Shepp-Logan (Kak & Slaney 1988, table 3.2 extended to 3-D as in Shepp's 3-D
# head phantom), with the higher-contrast "modified" values of Toft (1996);
# columns: value, a, b, c, x0, y0, z0, phi (degrees). Unit: fraction of the radius.
SHEPP_LOGAN_3D = (
    (1.0, 0.6900, 0.920, 0.810, 0.0, 0.0, 0.0, 0.0),
    (-0.8, 0.6624, 0.874, 0.780, 0.0, -0.0184, 0.0, 0.0),
    (-0.2, 0.1100, 0.310, 0.220, 0.22, 0.0, 0.0, -18.0),
    (-0.2, 0.1600, 0.410, 0.280, -0.22, 0.0, 0.0, 18.0),
    (0.1, 0.2100, 0.250, 0.410, 0.0, 0.35, -0.15, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.0, 0.1, 0.25, 0.0),
    (0.1, 0.0460, 0.046, 0.050, 0.0, -0.1, 0.25, 0.0),
    (0.1, 0.0460, 0.023, 0.050, -0.08, -0.605, 0.0, 0.0),
    (0.1, 0.0230, 0.023, 0.020, 0.0, -0.606, 0.0, 0.0),
    (0.1, 0.0230, 0.046, 0.020, 0.06, -0.605, 0.0, 0.0),
)


def shepp_logan_3d(radius: float, scale: float = 1.0) -> list[Ellipsoid]:
    """The 3-D Shepp-Logan head scaled to ``radius`` pixels; values times ``scale``
    (1/pixel). The y axis of the table points down the image rows."""
    out = []
    for v, a, b, c, x0, y0, z0, phi in SHEPP_LOGAN_3D:
        out.append(
            Ellipsoid(
                v * scale,
                (a * radius, b * radius, c * radius),
                (x0 * radius, -y0 * radius, z0 * radius),
                np.deg2rad(phi),
            )
        )
    return out


def random_ellipsoids(
    n: int,
    radius: float,
    *,
    rng: np.random.Generator,
    value_range: tuple[float, float] = (0.2, 1.0),
    size_range: tuple[float, float] = (0.05, 0.25),
    z_scale: float = 1.0,
) -> list[Ellipsoid]:
    """``n`` random ellipsoids inside a sphere of ``radius`` pixels (positive values);
    ``z_scale`` < 1 keeps their centres near the z = 0 plane."""
    out = []
    while len(out) < n:
        ax = rng.uniform(*size_range, size=3) * radius
        c = rng.uniform(-1, 1, size=3) * radius * np.array([1.0, 1.0, z_scale])
        if np.linalg.norm(c) + ax.max() > radius:
            continue
        out.append(Ellipsoid(float(rng.uniform(*value_range)), tuple(ax), tuple(c), float(rng.uniform(0, np.pi))))
    return out


def _frame(e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, ...]:
    c, s = np.cos(e.phi), np.sin(e.phi)
    dx, dy, dz = x - e.centre[0], y - e.centre[1], z - e.centre[2]
    u = (c * dx + s * dy) / e.axes[0]
    v = (-s * dx + c * dy) / e.axes[1]
    w = dz / e.axes[2]
    return u, v, w


def line_integrals(ellipsoids: list[Ellipsoid], angles: np.ndarray, s: np.ndarray, z: float) -> np.ndarray:
    """Exact line integrals (value x chord length, pixels) along the rays at detector
    positions ``s`` (distance from the axis, pixels) and height ``z``, for each angle:
    ray ``p(t) = s (cos th, sin th, z) + t (-sin th, cos th, 0)``. Returns (A, len(s))."""
    th = np.asarray(angles, dtype=np.float64)[:, None]
    s = np.asarray(s, dtype=np.float64)[None, :]
    px, py = s * np.cos(th), s * np.sin(th)
    dx, dy = -np.sin(th) + 0 * s, np.cos(th) + 0 * s
    out = np.zeros(np.broadcast(th, s).shape)
    for e in ellipsoids:
        c, sn = np.cos(e.phi), np.sin(e.phi)
        u0, v0, w0 = _frame(e, px, py, z)
        du = (c * dx + sn * dy) / e.axes[0]
        dv = (-sn * dx + c * dy) / e.axes[1]
        aa = du * du + dv * dv
        bb = u0 * du + v0 * dv
        cc = u0 * u0 + v0 * v0 + w0 * w0 - 1.0
        disc = bb * bb - aa * cc
        out += e.value * np.where(disc > 0, 2.0 * np.sqrt(np.maximum(disc, 0)) / aa, 0.0)
    return out


def sinogram(
    ellipsoids: list[Ellipsoid], angles: np.ndarray, n_det: int, center: float, z: float = 0.0, *, supersample: int = 4
) -> np.ndarray:
    """Line integrals averaged over each detector pixel's width (``supersample`` rays per
    pixel); the rotation axis at detector column ``center``. (A, n_det)."""
    j = np.arange(n_det)[:, None] + (np.arange(supersample) + 0.5)[None, :] / supersample - 0.5
    s = (j - center).ravel()
    li = line_integrals(ellipsoids, angles, s, z)
    return li.reshape(len(angles), n_det, supersample).mean(-1)


def slice_image(ellipsoids: list[Ellipsoid], n: int, z: float = 0.0, *, supersample: int = 3) -> np.ndarray:
    """Ground-truth attenuation of the slice at height ``z`` on the reconstruction grid,
    averaged over each pixel's area (``supersample``^2 points per pixel). (n, n)."""
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    c = np.arange(n) - n // 2
    out = np.zeros((n, n))
    for row0 in range(0, n, 256):
        rows = c[row0 : row0 + 256]
        yy = (rows[:, None] + sub[None, :]).ravel()
        xx = (c[:, None] + sub[None, :]).ravel()
        y, x = np.meshgrid(yy, xx, indexing="ij")
        acc = np.zeros_like(x)
        for e in ellipsoids:
            u, v, w = _frame(e, x, y, z)
            acc += np.where(u * u + v * v + w * w <= 1.0, e.value, 0.0)
        out[row0 : row0 + len(rows)] = acc.reshape(len(rows), supersample, n, supersample).mean((1, 3))
    return out


def volume(ellipsoids: list[Ellipsoid], n: int, n_rows: int, *, supersample: int = 2) -> np.ndarray:
    """Ground truth slices for every detector row, (n_rows, n, n)."""
    zs = np.arange(n_rows) - (n_rows - 1) / 2
    return np.stack([slice_image(ellipsoids, n, float(z), supersample=supersample) for z in zs])


def projections(
    ellipsoids: list[Ellipsoid], angles: np.ndarray, n_rows: int, n_det: int, center: float, *, supersample: int = 4
) -> np.ndarray:
    """Line-integral projections (A, n_rows, n_det) of the phantom."""
    zs = np.arange(n_rows) - (n_rows - 1) / 2
    return np.stack(
        [sinogram(ellipsoids, angles, n_det, center, float(z), supersample=supersample) for z in zs], axis=1
    )


def simulate_scan(
    line_int: np.ndarray,
    *,
    rng: np.random.Generator,
    flux: float = 2e4,
    dark_level: float = 100.0,
    n_flats: int = 10,
    n_darks: int = 5,
    ring_amplitude: float = 0.0,
    zinger_fraction: float = 0.0,
) -> dict[str, np.ndarray]:
    """Raw detector counts of a scan with the given line integrals (A, rows, cols):
    ``I = dark + gain * flux * exp(-p)`` with Poisson noise, a smooth beam profile in
    the flats, stripes of column-gain errors not seen in the flats (``ring_amplitude``:
    relative size, they make rings) and zingers (isolated hot pixels)."""
    _a, r, c = line_int.shape
    yy, xx = np.mgrid[0:r, 0:c]
    beam = flux * (1.0 + 0.2 * np.cos(2 * np.pi * xx / c) * np.exp(-((yy - r / 2) ** 2) / (r * r + 1)))
    gain = 1.0 + ring_amplitude * rng.standard_normal(c) * (rng.uniform(size=c) < 0.2)
    darks = rng.poisson(dark_level, size=(n_darks, r, c)).astype(np.float32)
    flats = (rng.poisson(beam, size=(n_flats, r, c)) + rng.poisson(dark_level, size=(n_flats, r, c))).astype(np.float32)
    counts = rng.poisson(beam[None] * gain[None, None, :] * np.exp(-line_int)) + rng.poisson(
        dark_level, size=line_int.shape
    )
    counts = counts.astype(np.float32)
    if zinger_fraction > 0:
        hit = rng.uniform(size=counts.shape) < zinger_fraction
        counts[hit] += 20 * flux
    return {"data": counts, "darks": darks, "flats": flats}
