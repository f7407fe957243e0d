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

The LOQ high-angle bank (HAB) is **provisional**: see :data:`LOQ_HAB_LAYOUT_NOTE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "INSTRUMENTS",
    "LOQ",
    "LOQ_HAB_LAYOUT_NOTE",
    "Bank",
    "Instrument",
    "ModularBank",
    "PixelGeometry",
    "RectangularBank",
    "pixel_geometry",
]


@dataclass(frozen=True)
class RectangularBank:
    """A rectangular detector bank (or module) in the plane ``z``: ``nx * ny`` pixels, ids
    filled along its fast axis first.

    Pixel ``(ix, iy)`` has spectrum/detector id ``id_start + ix + nx*iy`` and, before any
    beam-centre move, its centre at ``(x0, y0) + dx*ix*fast + dy*iy*slow`` (``fast`` and
    ``slow`` are unit vectors in the detector plane; by default the x and y axes).
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
    fast: tuple[float, float] = (1.0, 0.0)  # in-plane direction of increasing ix
    slow: tuple[float, float] = (0.0, 1.0)  # in-plane direction of increasing iy

    @property
    def n_pixels(self) -> int:
        return self.nx * self.ny

    @property
    def grid(self) -> bool:
        """Whether rows and columns (``MASK Hn``/``Vn``) are defined: one rectangular grid."""
        return True

    @property
    def pixel_size(self) -> tuple[float, float]:
        """(width, height) of a pixel in m."""
        return self.dx, self.dy

    def areas(self) -> np.ndarray:
        """Pixel areas (m²), in id order."""
        return np.full(self.n_pixels, self.dx * self.dy)

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
        u, v = self.dx * ix, self.dy * iy
        x = self.x0 + u * self.fast[0] + v * self.slow[0] + shift[0]
        y = self.y0 + u * self.fast[1] + v * self.slow[1] + shift[1]
        return x, y


@dataclass(frozen=True)
class ModularBank:
    """A bank of flat rectangular modules in one plane ``z`` (e.g. the LOQ high-angle bank).

    Spectra, positions and areas are the modules' in module order. Rows and columns are
    not defined across modules, so ``MASK Hn``/``Vn`` do not apply to it.
    """

    name: str
    modules: tuple[RectangularBank, ...]

    def __post_init__(self) -> None:
        if not self.modules or len({m.z for m in self.modules}) != 1:
            raise ValueError("a modular bank needs modules, all in one plane z")

    @property
    def z(self) -> float:
        return self.modules[0].z

    @property
    def grid(self) -> bool:
        return False

    @property
    def n_pixels(self) -> int:
        return sum(m.n_pixels for m in self.modules)

    @property
    def pixel_size(self) -> tuple[float, float]:
        return self.modules[0].pixel_size

    @property
    def spectra(self) -> np.ndarray:
        return np.concatenate([m.spectra for m in self.modules])

    def areas(self) -> np.ndarray:
        return np.concatenate([m.areas() for m in self.modules])

    def module_index(self) -> np.ndarray:
        """Module number (0-based) of every pixel, in id order."""
        return np.concatenate([np.full(m.n_pixels, k) for k, m in enumerate(self.modules)])

    def indices(self) -> tuple[np.ndarray, np.ndarray]:
        raise ValueError(f"{self.name} is modular: rows and columns are not defined")

    def positions(self, shift: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
        xy = [m.positions(shift) for m in self.modules]
        return np.concatenate([p[0] for p in xy]), np.concatenate([p[1] for p in xy])


Bank = RectangularBank | ModularBank


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
    # The high-angle (front) bank, if any, and why its description may be provisional.
    hab: ModularBank | None = None
    hab_note: str = ""

    def bank(self, which: str) -> Bank:
        """The bank called ``main`` (rear, LAB) or ``hab`` (front)."""
        if which == "main":
            return self.main
        if which == "hab" and self.hab is not None:
            return self.hab
        raise ValueError(f"{self.name} has no {which!r} bank")

    def beam_centre_shift(self, centre: tuple[float, float]) -> tuple[float, float]:
        """Bank shift (m) for a ``SET CENTRE`` position ``centre`` (m)."""
        if self.centre_reference is None:
            return -centre[0], -centre[1]
        return self.centre_reference[0] - centre[0], self.centre_reference[1] - centre[1]


LOQ_HAB_LAYOUT_NOTE = (
    "The LOQ high-angle bank layout is provisional: the IDF LOQ_Definition_20121016-.xml was not "
    "available. From the fact sheet (loq-sans.md §2.1, §3): 4 modules x 348 pixels of 12 mm at "
    "z = 11.58 m, spectra 16387-17784. From the raw files' DAE tables (MODN/MPOS): 350 channels per "
    "module, the last two spare, so module k holds spectra 16387+350k ... 16734+350k. Inferred from "
    "the GFP data: 12 x 29 pixels per module, 12 fastest (the counts repeat with period 12 and fall "
    "along it, so it runs outwards), and the four 144 x 348 mm modules abut in a pinwheel round a "
    "204 mm square hole (the counts along each module peak at row 19-20 of 29, where such a pinwheel "
    "puts the point nearest the beam, 246 mm from the row-0 end). The module order and handedness "
    "are not constrained by the data. HAB-only intensities are not on an absolute scale: on the GFP "
    "data they read about 1.9 times lower than the main bank where both overlap, and a 6 mm change in "
    "the modules' distance from the beam moves that factor between 1.6 and 2.2. Merge with "
    "DET/MERGED and DET/RESCALE/FIT, and check the layout against the IDF."
)


def _pinwheel(
    name: str, *, id_start: int, ids_per_module: int, n_radial: int, n_along: int, pixel: float, z: float
) -> ModularBank:
    """Four square-pixel modules in a pinwheel round the beam axis, module k turned by k*90°.

    Module 0 lies above the beam (``y`` from ``h`` to ``h + n_radial*pixel``), its rows running
    along ``+x`` from ``x = -(h + n_radial*pixel)``, where ``h = (n_along - n_radial)*pixel/2`` is
    the half-width of the hole the abutting modules leave.
    """
    hole = 0.5 * (n_along - n_radial) * pixel
    origin = np.array([-(hole + n_radial * pixel) + 0.5 * pixel, hole + 0.5 * pixel])
    fast, slow = np.array([0.0, 1.0]), np.array([1.0, 0.0])
    modules = []
    for k in range(4):
        c, s = np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)
        rot = np.array([[c, -s], [s, c]]).round(12)
        o, f, w = rot @ origin, rot @ fast, rot @ slow
        modules.append(
            RectangularBank(
                name=f"{name}-module-{k}",
                id_start=id_start + k * ids_per_module,
                nx=n_radial,
                ny=n_along,
                x0=float(o[0]),
                y0=float(o[1]),
                dx=pixel,
                dy=pixel,
                z=z,
                fast=(float(f[0]), float(f[1])),
                slow=(float(w[0]), float(w[1])),
            )
        )
    return ModularBank(name, tuple(modules))


LOQ = Instrument(
    name="LOQ",
    main=RectangularBank(
        name="main-detector-bank",
        id_start=3,
        nx=128,
        ny=128,
        x0=-0.3136009,
        y0=-0.3124091,
        dx=0.005038,
        dy=0.005041,
        z=15.15,
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
    hab=_pinwheel("HAB", id_start=16387, ids_per_module=350, n_radial=12, n_along=29, pixel=0.012, z=11.58),
    hab_note=LOQ_HAB_LAYOUT_NOTE,
    sources=(
        "mantidproject/mantid instrument/LOQ_Definition_20121016-.xml",
        "mantidproject/mantid instrument/LOQ_trans_Definition.xml",
        "mantidproject/mantid instrument/LOQ_Parameters.xml",
        "mantidproject/mantid scripts/SANS/sans/algorithm_detail/move_workspaces.py (StateMoveLOQ)",
        "mantidproject/mantid scripts/SANS/sans/algorithm_detail/scale_helpers.py",
        "HAB: fact sheet loq-sans.md §2.1 and §3, the raw files' DAE tables, and a layout inferred from "
        "the data (LOQ_HAB_LAYOUT_NOTE)",
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


def pixel_geometry(bank: Bank, *, sample_z: float, shift: tuple[float, float] = (0.0, 0.0)) -> PixelGeometry:
    """Scattering geometry of every pixel of ``bank`` for a sample at ``sample_z`` (m).

    ``L2 = sqrt(x^2 + y^2 + dz^2)``, ``2theta = arccos(dz/L2)``, ``R = sqrt(x^2 + y^2)`` and
    the flat-pixel solid angle ``Omega = A*dz/L2^3`` with ``A`` the pixel area and
    ``dz = z_bank - sample_z`` (fact sheet §5.2).
    """
    x, y = bank.positions(shift)
    dz = bank.z - sample_z
    if dz <= 0:
        raise ValueError(f"the bank at z={bank.z} m is not behind the sample at z={sample_z} m")
    l2 = np.sqrt(x * x + y * y + dz * dz)
    two_theta = np.arccos(dz / l2)
    solid_angle = bank.areas() * dz / l2**3
    return PixelGeometry(
        spectra=bank.spectra,
        x=x,
        y=y,
        radius=np.hypot(x, y),
        l2=l2,
        two_theta=two_theta,
        solid_angle=solid_angle,
        l1=sample_z,
    )
