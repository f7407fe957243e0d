"""The detector geometry of a saxs job: from a PONI file, NeXus metadata (an NXdetector's
fields or its ``depends_on`` chain of NXtransformations) and explicit parameters.

Conventions: pixel coordinates are pyFAI's (= Fit2D's): column ``x`` and row ``y`` of the
array as stored (row 0 first), the corner of pixel (0, 0) at (0, 0) and its centre at
(0.5, 0.5). :class:`Geometry` holds Fit2D-like terms (direct-beam distance, beam centre,
tilt and its plane) and, when a PONI file's rot3 or a NeXus placement must be kept as
is, pyFAI's own six numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panreduce import errors
from panreduce.errors import FieldViolation, InvalidParameters


@dataclass(frozen=True)
class Geometry:
    """A flat detector's geometry in Fit2D-like terms (pyFAI pixel convention)."""

    distance_m: float  # sample to point of normal incidence
    wavelength_m: float
    center_x_px: float  # column of the direct beam (pyFAI/Fit2D convention)
    center_y_px: float  # row of the direct beam
    pixel1_m: float  # pixel height (rows)
    pixel2_m: float  # pixel width (columns)
    tilt_deg: float = 0.0
    tilt_plane_deg: float = 0.0
    # pyFAI's (dist, poni1, poni2, rot1, rot2, rot3) (m, rad) when the geometry comes from
    # NeXus transformations: used as is (it keeps rot3, which Fit2D terms drop); the
    # Fit2D fields above are then its equivalent (beam centre, direct distance, tilt)
    poni: tuple[float, float, float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.poni is not None:
            object.__setattr__(self, "poni", tuple(float(v) for v in self.poni))

    @property
    def wavelength_angstrom(self) -> float:
        return self.wavelength_m * 1e10

    def q_of_radius(self, r_m: np.ndarray | float) -> np.ndarray:
        """q (1/Å) of a distance from the beam centre on an untilted detector (m)."""
        two_theta = np.arctan(np.asarray(r_m, dtype=float) / self.distance_m)
        return 4 * np.pi * np.sin(two_theta / 2) / self.wavelength_angstrom


def make_integrator(geometry: Geometry, shape: tuple[int, int]):  # -> AzimuthalIntegrator
    """A pyFAI AzimuthalIntegrator for ``geometry`` and a detector of ``shape`` pixels."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    det = Detector(pixel1=geometry.pixel1_m, pixel2=geometry.pixel2_m, max_shape=tuple(shape))
    if geometry.poni is not None:
        dist, poni1, poni2, rot1, rot2, rot3 = geometry.poni
        return AzimuthalIntegrator(
            dist=dist,
            poni1=poni1,
            poni2=poni2,
            rot1=rot1,
            rot2=rot2,
            rot3=rot3,
            detector=det,
            wavelength=geometry.wavelength_m,
        )
    ai = AzimuthalIntegrator(detector=det)
    ai.setFit2D(
        geometry.distance_m * 1e3,
        geometry.center_x_px,
        geometry.center_y_px,
        tilt=geometry.tilt_deg,
        tiltPlanRotation=geometry.tilt_plane_deg,
        pixelX=geometry.pixel2_m * 1e6,
        pixelY=geometry.pixel1_m * 1e6,
    )
    ai.wavelength = geometry.wavelength_m
    return ai


def geometry_of(ai) -> Geometry:
    """The Fit2D-like geometry of a pyFAI integrator (e.g. one loaded from a PONI file)."""
    f2d = ai.getFit2D()
    return Geometry(
        distance_m=f2d["directDist"] * 1e-3,
        wavelength_m=float(ai.wavelength),
        center_x_px=f2d["centerX"],
        center_y_px=f2d["centerY"],
        pixel1_m=float(ai.detector.pixel1),
        pixel2_m=float(ai.detector.pixel2),
        tilt_deg=f2d["tilt"],
        tilt_plane_deg=f2d["tiltPlanRotation"],
    )


def fit2d_of_poni(poni: tuple[float, ...], pixel1_m: float, pixel2_m: float) -> dict[str, float]:
    """Fit2D-like terms (direct distance m, beam centre px, tilt and its plane, degrees) of
    pyFAI's (dist, poni1, poni2, rot1, rot2, rot3)."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    dist, poni1, poni2, rot1, rot2, rot3 = poni
    ai = AzimuthalIntegrator(
        dist=dist,
        poni1=poni1,
        poni2=poni2,
        rot1=rot1,
        rot2=rot2,
        rot3=rot3,
        detector=Detector(pixel1=pixel1_m, pixel2=pixel2_m),
    )
    f2d = ai.getFit2D()
    return {
        "distance_m": f2d["directDist"] * 1e-3,
        "center_x_px": f2d["centerX"],
        "center_y_px": f2d["centerY"],
        "tilt_deg": f2d["tilt"],
        "tilt_plane_deg": f2d["tiltPlanRotation"],
    }


def read_poni(path: Path | str, source: str | None = None) -> tuple[dict[str, float], tuple | None]:
    """(Fit2D-like terms, pyFAI's six numbers when its rot3 is not 0) of a PONI file."""
    from pyFAI import load as load_poni

    try:
        ai = load_poni(str(path))
        g = geometry_of(ai)
    except Exception as exc:  # any parse failure is the file's
        raise errors.InvalidInput(source or Path(path).name, f"is not a readable PONI file ({exc})") from None
    base = dict(
        distance_m=g.distance_m,
        wavelength_m=g.wavelength_m,
        center_x_px=g.center_x_px,
        center_y_px=g.center_y_px,
        pixel1_m=g.pixel1_m,
        pixel2_m=g.pixel2_m,
        tilt_deg=g.tilt_deg,
        tilt_plane_deg=g.tilt_plane_deg,
    )
    # Fit2D terms cannot hold rot3 (it turns χ): then pyFAI's own numbers are kept
    placed = (ai.dist, ai.poni1, ai.poni2, ai.rot1, ai.rot2, ai.rot3) if abs(ai.rot3) > 1e-12 else None
    return base, placed


def _from_placement(
    nexus: Mapping[str, Any], base: dict[str, float], *, pixel_um: float | None, pixel_y_um: float | None
) -> tuple[tuple | None, bool]:
    """The NXdetector's depends_on chain placing the detector: (pyFAI's six numbers, whether
    the pixel size came from the file), ``base`` updated with their Fit2D equivalent."""
    placement = nexus["placement"]
    p1, p2 = placement.pixel_sizes(nexus.get("pixel1_m"), nexus.get("pixel2_m"))
    from_file = p1 is not None and p2 is not None
    if pixel_um is not None and not from_file:  # the file lacks it: the parameter's
        p2, p1 = pixel_um * 1e-6, (pixel_y_um or pixel_um) * 1e-6
    if p1 is None or p2 is None:
        return None, from_file
    try:
        placed = placement.to_pyfai(p1, p2).as_tuple()
    except ValueError as exc:
        raise errors.InvalidInput(nexus["source"], f"its detector's depends_on chain cannot be used: {exc}") from None
    base.update(fit2d_of_poni(placed, p1, p2), pixel1_m=p1, pixel2_m=p2)
    return placed, from_file


def _explicit_terms(
    base: dict[str, float],
    *,
    distance_mm: float | None,
    wavelength_angstrom: float | None,
    energy_kev: float | None,
    beam_center_px: tuple[float, float] | None,
    pixel_um: float | None,
    pixel_y_um: float | None,
    tilt_deg: float,
    tilt_plane_deg: float,
) -> None:
    """``base`` with every term a parameter gives replaced by it (SI units)."""
    from panreduce.constants import xray_wavelength_angstrom

    if distance_mm is not None:
        base["distance_m"] = distance_mm * 1e-3
    if wavelength_angstrom is not None:
        base["wavelength_m"] = wavelength_angstrom * 1e-10
    if energy_kev is not None:
        base["wavelength_m"] = xray_wavelength_angstrom(energy_kev) * 1e-10
    if beam_center_px is not None:
        base["center_x_px"], base["center_y_px"] = beam_center_px
    if pixel_um is not None:
        base["pixel2_m"] = pixel_um * 1e-6
        base["pixel1_m"] = (pixel_y_um or pixel_um) * 1e-6
    elif pixel_y_um is not None:
        base["pixel1_m"] = pixel_y_um * 1e-6
    if tilt_deg or "tilt_deg" not in base:
        base["tilt_deg"] = tilt_deg
    if tilt_plane_deg or "tilt_plane_deg" not in base:
        base["tilt_plane_deg"] = tilt_plane_deg


NEEDED = {
    "distance_m": "distance_mm",
    "wavelength_m": "wavelength_angstrom",
    "center_x_px": "beam_center_px",
    "center_y_px": "beam_center_px",
    "pixel1_m": "pixel_um",
    "pixel2_m": "pixel_um",
}


def resolve_geometry(
    shape: tuple[int, int],
    *,
    poni: Path | None = None,
    poni_name: str = "",
    nexus: Mapping[str, Any] | None = None,
    field_prefix: str = "",
    distance_mm: float | None = None,
    wavelength_angstrom: float | None = None,
    energy_kev: float | None = None,
    beam_center_px: tuple[float, float] | None = None,
    pixel_um: float | None = None,
    pixel_y_um: float | None = None,
    tilt_deg: float = 0.0,
    tilt_plane_deg: float = 0.0,
) -> Geometry:
    """The job's geometry: a PONI file's (``poni``), else what the NeXus frames record
    (``nexus``: ``inspect_nexus(...).geometry``), each term replaced by an explicit
    parameter when one is given. pyFAI's six numbers of the file (a PONI's rot3, a NeXus
    placement) are used as they are unless a parameter changes one of their terms.
    InvalidParameters names (``field_prefix`` + keyword) every term still missing."""
    nexus = nexus or {}
    overridden = distance_mm is not None or beam_center_px is not None or bool(tilt_deg) or bool(tilt_plane_deg)
    pixel_given = pixel_um is not None or pixel_y_um is not None
    placed = None
    if poni is not None:
        base, placed = read_poni(poni, poni_name or poni.name)
        pixel_from_file = True
    else:
        base = {k: v for k, v in nexus.items() if k in NEEDED}
        pixel_from_file = False
        if nexus.get("placement") is not None:
            placed, pixel_from_file = _from_placement(nexus, base, pixel_um=pixel_um, pixel_y_um=pixel_y_um)
    if overridden or (pixel_given and pixel_from_file):
        placed = None  # a term changed: the Fit2D equivalent, with it
    _explicit_terms(
        base,
        distance_mm=distance_mm,
        wavelength_angstrom=wavelength_angstrom,
        energy_kev=energy_kev,
        beam_center_px=beam_center_px,
        pixel_um=pixel_um,
        pixel_y_um=pixel_y_um,
        tilt_deg=tilt_deg,
        tilt_plane_deg=tilt_plane_deg,
    )
    missing = sorted({p for k, p in NEEDED.items() if k not in base})
    if missing and poni is None and nexus.get("placement_error"):
        raise errors.InvalidInput(nexus["source"], nexus["placement_error"])
    if missing:
        raise InvalidParameters(
            [
                FieldViolation(field_prefix + m, "needed: give it, a PONI file, or NeXus frames that record it")
                for m in missing
            ]
        )
    return Geometry(**base, poni=placed)
