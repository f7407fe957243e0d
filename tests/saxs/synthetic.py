"""Synthetic detector images with a known geometry, computed independently of pyFAI.

Pixel (row, col) has its centre at ((col + 0.5) p2, (row + 0.5) p1) on the detector;
the beam hits (cx p2, cy p1); no tilt. q = 4 pi sin(theta) / lambda with
2 theta = atan(r / d); the solid angle of a pixel relative to normal incidence is
cos^3(2 theta).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from panreduce.constants import xray_energy_kev

AGBEH_D_A = 58.380  # silver behenate long period (Å), Huang et al. 1993
AGBEH_Q1 = 2 * np.pi / AGBEH_D_A


class Geo:
    def __init__(self, shape=(300, 320), pixel_um=172.0, distance_mm=300.0, wavelength_A=1.0, cx=160.3, cy=140.7):
        self.shape = shape
        self.p = pixel_um * 1e-6
        self.d = distance_mm * 1e-3
        self.lam = wavelength_A
        self.cx, self.cy = cx, cy
        rows = np.arange(shape[0])[:, None] + 0.5
        cols = np.arange(shape[1])[None, :] + 0.5
        self.dx = (cols - cx) * self.p
        self.dy = (rows - cy) * self.p
        self.r = np.hypot(self.dx, self.dy)
        self.two_theta = np.arctan(self.r / self.d)
        self.q = 4 * np.pi * np.sin(self.two_theta / 2) / wavelength_A
        self.solid_angle = np.cos(self.two_theta) ** 3

    def params(self) -> dict:
        return {
            "geometry.distance_mm": self.d * 1e3,
            "geometry.wavelength_angstrom": self.lam,
            "geometry.pixel_um": self.p * 1e6,
            "geometry.beam_center_px": [self.cx, self.cy],
        }

    def params_nested(self) -> dict:
        """The geometry group of the saxs parameters."""
        return {key.split(".", 1)[1]: value for key, value in self.params().items()}

    def image(self, intensity, *, solid_angle=True) -> np.ndarray:
        """Counts expected on the detector for a scattering law ``intensity(q)``."""
        img = intensity(self.q)
        if solid_angle:
            img = img * self.solid_angle
        return img


def agbeh(q, *, orders=(1, 2, 3, 4, 5), width=0.0015, background=20.0):
    """Silver behenate-like rings: Gaussian lamellar orders on a flat background."""
    out = np.full_like(q, background, dtype=float)
    for n in orders:
        out += 1000.0 / n * np.exp(-0.5 * ((q - n * AGBEH_Q1) / width) ** 2)
    return out


def guinier_sphere(q, *, i0=1000.0, rg=30.0, background=5.0):
    return i0 * np.exp(-((q * rg) ** 2) / 3) + background


def write_tiff(path, image):
    import tifffile

    tifffile.imwrite(path, np.asarray(image, dtype=np.float32))
    return path


def write_nexus_stack(path: Path, frames, times=None, *, geo: Geo | None = None, positions=None) -> Path:
    """A NeXus frame stack: ``entry/instrument/detector/data`` (frames, rows, cols), optional
    ``entry/data/time`` and sample motor ``positions``; with ``geo``, the detector geometry
    (distance, pixel size, beam centre in mixed units) and the monochromator energy."""
    frames = np.asarray(frames, np.float32)
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        inst = e.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", data=frames, chunks=(1, *frames.shape[1:]))
        if geo is not None:
            det.create_dataset("distance", data=geo.d * 1000).attrs["units"] = "mm"
            det.create_dataset("x_pixel_size", data=geo.p * 1e6).attrs["units"] = "um"
            det.create_dataset("y_pixel_size", data=geo.p * 1e6).attrs["units"] = "um"
            det.create_dataset("beam_center_x", data=geo.cx).attrs["units"] = "pixel"
            det.create_dataset("beam_center_y", data=geo.cy * geo.p * 1000).attrs["units"] = "mm"
            mono = inst.create_group("monochromator")
            mono.attrs["NX_class"] = "NXmonochromator"
            mono.create_dataset("energy", data=xray_energy_kev(geo.lam)).attrs["units"] = "keV"
        sample = e.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        for name, values in (positions or {}).items():
            sample.create_dataset(name, data=np.asarray(values, float))
        if times is not None:
            data = e.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            data.create_dataset("time", data=np.asarray(times, float))
    return path
