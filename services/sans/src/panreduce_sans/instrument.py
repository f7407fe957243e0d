"""Instrument descriptions: typed, cited geometry of ISIS time-of-flight SANS instruments.

Another ISIS SANS instrument is a new :class:`Instrument` value, not new code. Frame: ``z``
along the beam, ``y`` up, the moderator (source) at the origin; lengths in metres.

LOQ values are taken from the Mantid instrument definition files (public repository
``mantidproject/mantid``, folder ``instrument/``; older revisions under
``Code/Mantid/instrument/``) as summarised in the fact sheet ``loq-sans.md`` §3:

* ``LOQ_Definition_20121016-.xml`` (valid from 2012-10-16): main bank, M1, M2;
* ``LOQ_trans_Definition.xml``: transmission-run monitors M1, M2 and M3 (spectrum 3) at
  z = 11.497 m;
* ``LOQ_Parameters.xml``: incident monitor spectrum 2, transmission monitor spectrum 3;
* the LOQ beam-centre convention (detector moved by ``317.5 mm - centre``) of Mantid's
  ISIS SANS reducer (``StateMoveLOQ``, ``scripts/SANS/sans/algorithm_detail/move_workspaces.py``);
* the LOQ absolute-scale convention (``100/pi``, "rescale to Colette") of
  ``scripts/SANS/sans/algorithm_detail/scale_helpers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["INSTRUMENTS", "LOQ", "Instrument", "PixelGeometry", "RectangularBank", "pixel_geometry"]


@dataclass(frozen=True)
class RectangularBank:
    """A rectangular detector bank: ``nx * ny`` pixels, ids filled along x first.

    Pixel ``(ix, iy)`` has spectrum/detector id ``id_start + ix + nx*iy`` and, before any
    beam-centre move, its centre at ``(x0 + dx*ix, y0 + dy*iy, z)``.
    """

    name: str
    id_start: int
    nx: int
    ny: int
    x0: float  # m, centre of pixel ix = 0
    y0: float  # m, centre of pixel iy = 0
    dx: float  # m, pixel pitch (and width) along x
    dy: float  # m, pixel pitch (and height) along y
    z: float  # m, from the moderator

    @property
    def n_pixels(self) -> int:
        return self.nx * self.ny

    @property
    def spectra(self) -> np.ndarray:
        """Spectrum numbers of the bank's pixels, in id order."""
        return np.arange(self.id_start, self.id_start + self.n_pixels)

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        """(ix, iy) of every pixel, in id order."""
        k = np.arange(self.n_pixels)
        return k % self.nx, k // self.nx

    def positions(self, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre x and y (m) after moving the bank by ``shift``, in id order."""
        ix, iy = self.indices()
        return self.x0 + self.dx * ix + shift[0], self.y0 + self.dy * iy + shift[1]


@dataclass(frozen=True)
class Instrument:
    """What the reduction needs to know about one ISIS TOF SANS instrument."""

    name: str
    main: RectangularBank
    sample_z: float  # m, nominal sample position from the moderator (before SAMPLE/OFFSET)
    monitor_z: dict[int, float]  # spectrum -> z (m) of the monitors in scattering runs
    trans_monitor_z: dict[int, float]  # spectrum -> z (m) in transmission/direct runs
    incident_monitor: int = 2
    transmission_monitor: int = 3
    # Prompt-pulse window removed from every monitor by linear interpolation (µs), or None.
    prompt_peak: tuple[float, float] | None = None
    # Beam-centre convention: the bank is moved by (reference - centre) so the beam axis is
    # x = y = 0; None means the centre is moved to the origin directly (shift = -centre).
    centre_reference: tuple[float, float] | None = None
    # Extra factor of the absolute scale (LOQ: 100/pi, "rescale to Colette"; others 100).
    scale_factor: float = 100.0
    valid_from: str = ""
    sources: tuple[str, ...] = field(default_factory=tuple)

    def beam_centre_shift(self, centre: tuple[float, float]) -> tuple[float, float]:
        """Bank shift (m) for a ``SET CENTRE`` position ``centre`` (m)."""
        if self.centre_reference is None:
            return -centre[0], -centre[1]
        return self.centre_reference[0] - centre[0], self.centre_reference[1] - centre[1]


LOQ = Instrument(
    name="LOQ",
    main=RectangularBank(
        name="main-detector-bank", id_start=3, nx=128, ny=128,
        x0=-0.3136009, y0=-0.3124091, dx=0.005038, dy=0.005041, z=15.15,
    ),
    sample_z=11.0,
    monitor_z={1: 6.356, 2: 10.424},
    trans_monitor_z={1: 6.356, 2: 10.424, 3: 11.497},
    incident_monitor=2,
    transmission_monitor=3,
    prompt_peak=(19000.0, 20500.0),
    centre_reference=(0.3175, 0.3175),
    scale_factor=100.0 / np.pi,
    valid_from="2012-10-16",
    sources=(
        "mantidproject/mantid instrument/LOQ_Definition_20121016-.xml",
        "mantidproject/mantid instrument/LOQ_trans_Definition.xml",
        "mantidproject/mantid instrument/LOQ_Parameters.xml",
        "mantidproject/mantid scripts/SANS/sans/algorithm_detail/move_workspaces.py (StateMoveLOQ)",
        "mantidproject/mantid scripts/SANS/sans/algorithm_detail/scale_helpers.py",
    ),
)

INSTRUMENTS: dict[str, Instrument] = {"LOQ": LOQ}


@dataclass(frozen=True)
class PixelGeometry:
    """Per-pixel scattering geometry of a bank (arrays in spectrum order)."""

    spectra: np.ndarray  # spectrum numbers
    x: np.ndarray  # m, relative to the beam axis
    y: np.ndarray  # m
    radius: np.ndarray  # m, distance from the beam axis in the detector plane
    l2: np.ndarray  # m, sample -> pixel
    two_theta: np.ndarray  # rad
    solid_angle: np.ndarray  # sr
    l1: float  # m, moderator -> sample


def pixel_geometry(
    bank: RectangularBank,
    *,
    sample_z: float,
    shift: tuple[float, float] = (0.0, 0.0),
) -> PixelGeometry:
    """Scattering geometry of every pixel of ``bank`` for a sample at ``sample_z`` (m).

    ``L2 = sqrt(x^2 + y^2 + dz^2)``, ``2theta = arccos(dz/L2)``, ``R = sqrt(x^2 + y^2)`` and
    the flat-pixel solid angle ``Omega = A*dz/L2^3`` with ``A = dx*dy`` and
    ``dz = z_bank - sample_z`` (fact sheet §5.2).
    """
    x, y = bank.positions(shift)
    dz = bank.z - sample_z
    if dz <= 0:
        raise ValueError(f"the bank at z={bank.z} m is not behind the sample at z={sample_z} m")
    l2 = np.sqrt(x * x + y * y + dz * dz)
    two_theta = np.arccos(dz / l2)
    solid_angle = bank.dx * bank.dy * dz / l2**3
    return PixelGeometry(
        spectra=bank.spectra, x=x, y=y, radius=np.hypot(x, y), l2=l2,
        two_theta=two_theta, solid_angle=solid_angle, l1=sample_z,
    )
