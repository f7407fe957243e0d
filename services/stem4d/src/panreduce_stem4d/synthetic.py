"""Synthetic 4D-STEM scans with a known truth (for tests, examples and benchmarks).

A pattern is drawn in corrected detector coordinates u = A (p − c) (A the ellipse
correction, identity without distortion): a bright-field disc, an ADF ring, optionally a
lattice of Bragg discs, all moved by the beam shift (DPC deflection + descan). The
thickness t moves intensity from the disc (1 − t) to the ring (t).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panreduce_stem4d.calibration import Ellipse


@dataclass
class Synthetic:
    frames: np.ndarray  # (ny, nx, dy, dx) float32
    center_yx_px: tuple[float, float]
    shift_scan_xy_px: np.ndarray  # (2, ny, nx) the DPC deflection in the scan frame (x, y), px
    shift_det_xy_px: np.ndarray  # (2, ny, nx) total shift in (corrected) detector frame incl. descan
    descan_xy_px: np.ndarray  # (2, ny, nx)
    thickness: np.ndarray  # (ny, nx) in [0, 1]
    truth: dict[str, object] = field(default_factory=dict)


def _soft_disc(r: np.ndarray, radius: float) -> np.ndarray:
    return np.clip(radius - r + 0.5, 0.0, 1.0)


def make_scan(
    ny: int = 16,
    nx: int = 16,
    det: int = 64,
    *,
    disc_radius_px: float = 5.0,
    ring_radius_px: float = 20.0,
    ring_width_px: float = 2.0,
    shift_amplitude_px: float = 2.0,
    rotation_deg: float = 0.0,
    flip: bool = False,
    descan_px: tuple[float, float] = (0.8, -0.5),
    axis_ratio: float = 1.0,
    ellipse_theta_deg: float = 0.0,
    lattice: np.ndarray | None = None,
    strain_exx_right: float = 0.0,
    strain_frame: str = "detector",
    bragg_radius_px: float = 3.0,
    bragg_intensity: float = 0.5,
    center_yx_px: tuple[float, float] | None = None,
    counts: float = 1000.0,
    poisson: bool = False,
    seed: int = 0,
) -> Synthetic:
    """A scan: DPC field = gradient of sin(2πx/nx)·sin(2πy/ny) scaled to ±``shift_amplitude_px``
    in the scan frame, seen on the detector through ``rotation_deg`` / ``flip`` (the inverse
    of :func:`panreduce_stem4d.dpc.to_scan_frame`); descan = a plane reaching ``descan_px``
    (x, y) at the scan's far corner; thickness = a smooth bump in [0.1, 0.9]. ``lattice``
    (2, 2) columns g1, g2 in corrected px adds Bragg discs; positions with x ≥ nx/2 get a
    real-space εxx of ``strain_exx_right``, along the detector's corrected x
    (``strain_frame="detector"``) or along the scan's x (``"scan"``: the strain seen on the
    detector through ``rotation_deg`` / ``flip``, as the beam shift is)."""
    rng = np.random.default_rng(seed)
    cy, cx = center_yx_px if center_yx_px is not None else ((det - 1) / 2 + 0.3, (det - 1) / 2 - 0.2)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    kx, ky = 2 * np.pi / nx, 2 * np.pi / ny
    gx = kx * np.cos(kx * xx) * np.sin(ky * yy)
    gy = ky * np.sin(kx * xx) * np.cos(ky * yy)
    scale = shift_amplitude_px / max(np.abs(gx).max(), np.abs(gy).max(), 1e-12)
    sx, sy = gx * scale, gy * scale
    t = np.radians(rotation_deg)
    dx = np.cos(t) * sx + np.sin(t) * sy  # R(-θ) s
    dy = -np.sin(t) * sx + np.cos(t) * sy
    if flip:
        dy = -dy
    desc_x = descan_px[0] * (xx + yy) / max(nx + ny - 2, 1)
    desc_y = descan_px[1] * (xx - 0.5 * yy) / max(nx - 1, 1)
    tx, ty = dx + desc_x, dy + desc_y
    thick = 0.1 + 0.8 * np.exp(-(((xx - 0.6 * nx) / (0.3 * nx)) ** 2 + ((yy - 0.4 * ny) / (0.35 * ny)) ** 2))
    a = Ellipse(0, 0, axis_ratio, 1.0, ellipse_theta_deg).affine_xy() if axis_ratio != 1.0 else np.eye(2)
    py, px = np.mgrid[0:det, 0:det].astype(np.float64)
    ux0 = a[0, 0] * (px - cx) + a[0, 1] * (py - cy)
    uy0 = a[1, 0] * (px - cx) + a[1, 1] * (py - cy)
    frames = np.empty((ny, nx, det, det), np.float32)
    disc_area = np.pi * disc_radius_px**2
    ring_area = 2 * np.pi * ring_radius_px * ring_width_px * np.sqrt(2 * np.pi)
    for i in range(ny):
        for j in range(nx):
            ux, uy = ux0 - tx[i, j], uy0 - ty[i, j]
            r = np.hypot(ux, uy)
            img = (1 - thick[i, j]) * counts / disc_area * _soft_disc(r, disc_radius_px)
            img += thick[i, j] * counts / ring_area * np.exp(-0.5 * ((r - ring_radius_px) / ring_width_px) ** 2)
            if lattice is not None:
                g = np.asarray(lattice, float)
                if j >= nx / 2 and strain_exx_right:
                    f = np.diag([1 + strain_exx_right, 1.0])
                    if strain_frame == "scan":  # F_det = M^-1 F_scan M, M = R(θ) diag(1, ±1)
                        m = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
                        m = m @ np.diag([1.0, -1.0 if flip else 1.0])
                        f = np.linalg.inv(m) @ f @ m
                    g = np.linalg.inv(f).T @ g
                for h in range(-4, 5):
                    for k in range(-4, 5):
                        if h == 0 and k == 0:
                            continue
                        gxk, gyk = g[:, 0] * h + g[:, 1] * k
                        if np.hypot(gxk, gyk) > det / 2 - bragg_radius_px - 4:
                            continue
                        img += (
                            bragg_intensity
                            * counts
                            / disc_area
                            * _soft_disc(np.hypot(ux - gxk, uy - gyk), bragg_radius_px)
                        )
            frames[i, j] = img
    if poisson:
        frames = rng.poisson(frames).astype(np.float32)
    return Synthetic(
        frames=frames,
        center_yx_px=(cy, cx),
        shift_scan_xy_px=np.stack([sx, sy]),
        shift_det_xy_px=np.stack([tx, ty]),
        descan_xy_px=np.stack([desc_x, desc_y]),
        thickness=thick,
        truth={
            "rotation_deg": rotation_deg,
            "flip": flip,
            "axis_ratio": axis_ratio,
            "ellipse_theta_deg": ellipse_theta_deg,
            "affine_xy": a,
            "strain_exx_right": strain_exx_right,
            "strain_frame": strain_frame,
        },
    )


def write_nexus(
    path, frames: np.ndarray, *, step_nm: float = 1.0, energy_kev: float | None = None, dtype: str = "uint16"
) -> None:
    """``frames`` as a NeXus NXdata 4-D signal (scan y, scan x, detector y, detector x),
    root @default -> entry -> data; scan axes in nm, detector axes in px."""
    import h5py

    ny, nx, dy, dx = frames.shape
    tmp = str(path) + ".part"
    with h5py.File(tmp, "w") as f:
        f.attrs["default"] = "entry"
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e.attrs["default"] = "data"
        d = e.create_group("data")
        d.attrs.update(
            {"NX_class": "NXdata", "signal": "frames", "axes": ["scan_y", "scan_x", "detector_y", "detector_x"]}
        )
        data = np.rint(frames).astype(dtype) if np.dtype(dtype).kind in "ui" else frames.astype(dtype)
        d.create_dataset("frames", data=data, chunks=(1, nx, dy, dx))
        for name, n, unit, step in (
            ("scan_y", ny, "nm", step_nm),
            ("scan_x", nx, "nm", step_nm),
            ("detector_y", dy, "pixel", 1.0),
            ("detector_x", dx, "pixel", 1.0),
        ):
            d.create_dataset(name, data=np.arange(n) * step).attrs["units"] = unit
        if energy_kev is not None:
            e.create_dataset("instrument/source/voltage", data=energy_kev).attrs["units"] = "kV"
    import os

    os.replace(tmp, path)
