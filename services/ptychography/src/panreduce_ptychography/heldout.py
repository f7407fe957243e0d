"""Scans unlike :func:`~panreduce_ptychography.simulate.simulate`'s, for held-out checks of
the default command (issue 19): frame size, probe kind (aperture, defocused zone plate,
astigmatic KB), probe size relative to the frame, overlap, scan pattern (Fermat spiral,
raster with and without jitter, concentric circles), photons per frame and object
strength all vary. The scans are :class:`~panreduce_ptychography.problem.Scan` objects
with no probe in them, written by :func:`~panreduce_ptychography.io.write_nexus` in the
NeXus layout of docs/ptychography.md.

Units: lengths on the object grid in object pixels; photons per frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from panreduce_ptychography.initialisation import aperture_pupil, probe_from_pupil
from panreduce_ptychography.problem import Scan, wavelength_m
from panreduce_ptychography.simulate import GOLDEN_ANGLE, Simulation, diffraction, fermat_spiral, make_object

PROBES = ("aperture", "zoneplate", "kb")
PATTERNS = ("fermat", "raster", "raster-jitter", "concentric")


@dataclass(frozen=True)
class Case:
    """One scan's geometry. ``probe_fraction``: probe width / frame side; ``overlap``: 1 -
    step / probe width (linear overlap); ``phase_range``: peak-to-peak object phase (rad)."""

    name: str
    frame: int = 64
    probe: str = "zoneplate"
    probe_fraction: float = 0.35
    overlap: float = 0.7
    pattern: str = "fermat"
    n_positions: int = 100
    photons: float = 1e7
    phase_range: float = 1.0
    seed: int = 0


def probe_field(frame: int, kind: str, width_px: float, rng: np.random.Generator) -> np.ndarray:
    """(frame, frame) probe of unit power about ``width_px`` wide: ``aperture`` a circular
    pinhole of that diameter a short Fresnel distance upstream (edge rings);
    ``zoneplate`` a circular pupil with a 30 % central stop, defocused; ``kb`` a
    rectangular pupil with different defoci along y and x (astigmatic, wider along x)."""
    if kind == "aperture":
        y, x = np.mgrid[0:frame, 0:frame] - frame / 2
        hole = ((y**2 + x**2) <= (width_px / 2) ** 2).astype(np.complex128)
        spec = np.fft.fft2(np.fft.ifftshift(hole))
        ky, kx = np.fft.fftfreq(frame)[:, None], np.fft.fftfreq(frame)[None, :]
        c = rng.uniform(20, 40)  # a short propagation (lam z / dx^2 px): Fresnel fringes
        p = np.fft.fftshift(np.fft.ifft2(spec * np.exp(1j * np.pi * c * (ky**2 + kx**2))))
    elif kind == "zoneplate":
        r = rng.uniform(0.18, 0.3)
        pupil = aperture_pupil((frame, frame), "circular", (r, r))
        ky, kx = np.fft.fftfreq(frame)[:, None], np.fft.fftfreq(frame)[None, :]
        pupil = pupil * (np.sqrt(ky**2 + kx**2) >= 0.3 * r)
        c = width_px / (2 * r) * rng.choice([-1, 1])
        p = probe_from_pupil(pupil, c)
    elif kind == "kb":
        ry, rx = rng.uniform(0.15, 0.25), rng.uniform(0.22, 0.32)
        cx = width_px / (2 * rx)
        cy = 0.6 * width_px / (2 * ry)
        p = probe_from_pupil(aperture_pupil((frame, frame), "rectangular", (ry, rx)), (cy, cx))
    else:
        raise ValueError(f"unknown probe kind {kind!r} (known: {', '.join(PROBES)})")
    return (p / np.sqrt(np.sum(np.abs(p) ** 2))).astype(np.complex64)


def positions(pattern: str, n: int, step: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) window centres (y, x), centred on 0: a Fermat spiral (0.2 px jitter),
    a square raster (whole rows, exactly on the grid), a raster jittered by +-0.25 step,
    or concentric circles ``step`` apart with points ``step`` apart along each."""
    if pattern == "fermat":
        return fermat_spiral(n, step) + rng.uniform(-0.2, 0.2, (n, 2))
    if pattern in ("raster", "raster-jitter"):
        side = int(np.ceil(np.sqrt(n)))
        yy, xx = np.mgrid[0:side, 0:side].astype(float)
        pts = np.stack([(yy - (side - 1) / 2).ravel(), (xx - (side - 1) / 2).ravel()], 1) * step
        if pattern == "raster-jitter":
            pts = pts + rng.uniform(-0.25 * step, 0.25 * step, pts.shape)
        return pts
    if pattern == "concentric":
        pts = [np.zeros((1, 2))]
        ring = 1
        while sum(len(p) for p in pts) < n:
            r = ring * step
            m = max(6, round(2 * np.pi * r / step))
            th = np.arange(m) * 2 * np.pi / m + ring * GOLDEN_ANGLE
            pts.append(np.stack([r * np.sin(th), r * np.cos(th)], 1))
            ring += 1
        return np.concatenate(pts)[:n]
    raise ValueError(f"unknown pattern {pattern!r} (known: {', '.join(PATTERNS)})")


def generate(case: Case) -> Simulation:
    """The scan of ``case``: Poisson frames (8 keV, 5 m, 75 um pixels), no probe in the scan."""
    rng = np.random.default_rng(case.seed)
    n = case.frame
    width = case.probe_fraction * n
    probe = probe_field(n, case.probe, width, rng)[None] * np.float32(np.sqrt(case.photons))
    centres = positions(case.pattern, case.n_positions, (1 - case.overlap) * width, rng)
    span = np.ptp(centres, axis=0)
    shape = (int(np.ceil(span[0])) + n + 16, int(np.ceil(span[1])) + n + 16)
    centres = centres + (np.array(shape) - span) / 2 - centres.min(axis=0)
    corners = centres - n / 2
    obj = make_object(
        shape, phase_range=case.phase_range, amplitude_contrast=0.05 * case.phase_range, seed=case.seed + 101
    )
    frames = rng.poisson(diffraction(obj, probe, corners)).astype(np.float32)
    dx = wavelength_m(8000.0) * 5.0 / (n * 75e-6)
    scan = Scan(
        frames=frames,
        positions_m=centres * dx,
        energy_ev=8000.0,
        distance_m=5.0,
        pixel_size_m=(75e-6, 75e-6),
        name=case.name,
        metadata={"heldout_case": str(asdict(case))},
    )
    return Simulation(scan=scan, obj=obj, probe=probe, corners=corners, pixel_size_m=dx)


#: the held-out set: every probe kind and pattern, frames 48-128, 1e5-1e8 photons
CASES = (
    Case(
        "zp-fermat-48",
        frame=48,
        probe="zoneplate",
        probe_fraction=0.4,
        overlap=0.7,
        pattern="fermat",
        n_positions=80,
        photons=1e6,
        phase_range=0.8,
        seed=11,
    ),
    Case(
        "kb-raster-64",
        frame=64,
        probe="kb",
        probe_fraction=0.45,
        overlap=0.65,
        pattern="raster",
        n_positions=100,
        photons=1e7,
        phase_range=1.0,
        seed=12,
    ),
    Case(
        "ap-concentric-64",
        frame=64,
        probe="aperture",
        probe_fraction=0.3,
        overlap=0.7,
        pattern="concentric",
        n_positions=90,
        photons=1e8,
        phase_range=1.5,
        seed=13,
    ),
    Case(
        "zp-rasterjit-80",
        frame=80,
        probe="zoneplate",
        probe_fraction=0.3,
        overlap=0.72,
        pattern="raster-jitter",
        n_positions=100,
        photons=1e6,
        phase_range=1.2,
        seed=14,
    ),
    Case(
        "kb-fermat-96",
        frame=96,
        probe="kb",
        probe_fraction=0.3,
        overlap=0.7,
        pattern="fermat",
        n_positions=90,
        photons=1e5,
        phase_range=0.6,
        seed=15,
    ),
    Case(
        "ap-raster-64",
        frame=64,
        probe="aperture",
        probe_fraction=0.4,
        overlap=0.7,
        pattern="raster",
        n_positions=81,
        photons=1e6,
        phase_range=1.0,
        seed=16,
    ),
    Case(
        "zp-concentric-128",
        frame=128,
        probe="zoneplate",
        probe_fraction=0.28,
        overlap=0.7,
        pattern="concentric",
        n_positions=70,
        photons=1e8,
        phase_range=2.0,
        seed=17,
    ),
    Case(
        "kb-rasterjit-64",
        frame=64,
        probe="kb",
        probe_fraction=0.4,
        overlap=0.7,
        pattern="raster-jitter",
        n_positions=100,
        photons=1e5,
        phase_range=0.5,
        seed=18,
    ),
)
