"""Synthetic detector images with a known geometry, computed independently of pyFAI.

Pixel (row, col) has its centre at ((col + 0.5) p2, (row + 0.5) p1) on the detector;
the beam hits (cx p2, cy p1); no tilt. q = 4 pi sin(theta) / lambda with
2 theta = atan(r / d); the solid angle of a pixel relative to normal incidence is
cos^3(2 theta).
"""

from __future__ import annotations

import numpy as np

AGBEH_D_A = 58.380  # silver behenate long period (Å), Huang et al. 1993
AGBEH_Q1 = 2 * np.pi / AGBEH_D_A


class Geo:
    def __init__(self, shape=(300, 320), pixel_um=172.0, distance_mm=300.0, wavelength_A=1.0,
                 cx=160.3, cy=140.7):
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
        return {"distance_mm": self.d * 1e3, "wavelength_A": self.lam, "pixel_um": self.p * 1e6,
                "beam_center_px": [self.cx, self.cy]}

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
    return i0 * np.exp(-(q * rg) ** 2 / 3) + background


def write_tiff(path, image):
    import tifffile

    tifffile.imwrite(path, np.asarray(image, dtype=np.float32))
    return path
