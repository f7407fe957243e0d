"""Detector geometry and virtual detectors.

Detector offsets are taken from the beam centre (px) and corrected for elliptical
distortion by a 2x2 affine ``A`` acting on (x, y) offsets; angles in mrad are the
corrected offsets times ``mrad_per_px``. Masks are float32 images of the detector.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Geometry:
    """Where the unscattered beam lands and how pixels map to scattering angles."""

    center_yx_px: tuple[float, float]
    mrad_per_px: float
    affine_xy: np.ndarray = field(default_factory=lambda: np.eye(2))  # corrected = A @ (dx, dy)

    def offsets_px(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Corrected (x, y) offsets of every pixel centre from the beam centre, in px."""
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
        dx = xx - self.center_yx_px[1]
        dy = yy - self.center_yx_px[0]
        a = np.asarray(self.affine_xy, float)
        return a[0, 0] * dx + a[0, 1] * dy, a[1, 0] * dx + a[1, 1] * dy

    def polar_mrad(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(scattering angle in mrad, azimuth in degrees from +x towards +y) of every pixel."""
        ux, uy = self.offsets_px(shape)
        return np.hypot(ux, uy) * self.mrad_per_px, np.degrees(np.arctan2(uy, ux))


@dataclass(frozen=True)
class MaskSpec:
    """A virtual detector: an annulus [inner, outer) in mrad, optionally a sector in degrees."""

    name: str
    inner_mrad: float
    outer_mrad: float
    azimuth_deg: tuple[float, float] | None = None  # [start, stop) measured from +x towards +y

    def render(self, geometry: Geometry, shape: tuple[int, int]) -> np.ndarray:
        r, phi = geometry.polar_mrad(shape)
        m = (r >= self.inner_mrad) & (r < self.outer_mrad)
        if self.azimuth_deg is not None:
            a0, a1 = self.azimuth_deg
            width = (a1 - a0) % 360.0 or 360.0
            m &= ((phi - a0) % 360.0) < width
        return m.astype(np.float32)


def parse_mask(name: str, text: str) -> MaskSpec:
    """'disc:R', 'annulus:RI,RO' or 'sector:RI,RO,A0,A1' (mrad, degrees) as a MaskSpec."""
    kind, _, rest = text.partition(":")
    try:
        values = [float(v) for v in rest.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"mask {name!r}: {rest!r} is not a list of numbers") from None
    kind = kind.strip().lower()
    if kind == "disc" and len(values) == 1:
        spec = MaskSpec(name, 0.0, values[0])
    elif kind == "annulus" and len(values) == 2:
        spec = MaskSpec(name, values[0], values[1])
    elif kind == "sector" and len(values) == 4:
        spec = MaskSpec(name, values[0], values[1], (values[2], values[3]))
    else:
        raise ValueError(
            f"mask {name!r}: expected disc:R, annulus:RI,RO or sector:RI,RO,A0,A1 (mrad, degrees), got {text!r}"
        )
    if not (0 <= spec.inner_mrad < spec.outer_mrad <= 1e4) or any(not np.isfinite(v) for v in values):
        raise ValueError(f"mask {name!r}: radii must satisfy 0 ≤ inner < outer ≤ 10000 mrad")
    return spec
