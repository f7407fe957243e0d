"""Shared helpers of the ptychography tests: simulated scans and comparison with truth."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from panreduce_ptychography import metrics
from panreduce_ptychography.engines import Options, State, initial_probe, reconstruct
from panreduce_ptychography.problem import Problem, prepare
from panreduce_ptychography.simulate import Simulation, make_probe, simulate

FRAME = 64


def model_probe(frame: int = FRAME) -> np.ndarray:
    """The optics model a user would start from: the simulated probe's pupil and
    defocus, both 10-15 % off."""
    return make_probe(frame, diameter_px=0.4 * frame * 1.15, pupil_radius=0.25 * 0.95)


def small_sim(**kw) -> Simulation:
    args = dict(frame_size=FRAME, n_positions=100, photons=1e7, jitter_px=0.3, seed=0)
    args.update(kw)
    return simulate(**args)


def truth_on_grid(sim: Simulation, problem: Problem) -> np.ndarray:
    """The true object on the reconstruction's grid (whole-pixel offset, see prepare)."""
    lo = np.round(np.array(problem.origin_m) / problem.pixel_size_m).astype(int)
    out = np.ones(problem.object_shape, np.complex64)
    h = min(problem.object_shape[0], sim.obj.shape[0] - lo[0])
    w = min(problem.object_shape[1], sim.obj.shape[1] - lo[1])
    out[:h, :w] = sim.obj[lo[0] : lo[0] + h, lo[1] : lo[1] + w]
    return out


def true_corners_on_grid(sim: Simulation, problem: Problem) -> np.ndarray:
    lo = np.round(np.array(problem.origin_m) / problem.pixel_size_m)
    return sim.corners - lo


def run(
    sim: Simulation, engine: str, iterations: int, *, modes: int = 1, backend=None, problem=None, state=None, **opts
):
    from panreduce_ptychography.backend import Backend

    problem = problem or prepare(sim.scan)
    if state is None:
        state = State(
            obj=np.ones(problem.object_shape, np.complex64),
            probe=initial_probe(problem, model_probe(problem.frame_shape[0]), modes),
            positions=problem.positions.copy(),
        )
    out = reconstruct(
        problem, state, engine=engine, iterations=iterations, backend=backend or Backend(), options=Options(**opts)
    )
    return problem, out


def quality(sim: Simulation, problem: Problem, obj: np.ndarray) -> tuple[float, float, metrics.Comparison]:
    """(phase error in the well-lit region (rad), mean FRC up to half Nyquist, comparison)."""
    truth = truth_on_grid(sim, problem)
    region = metrics.well_lit(problem.object_shape, sim.probe, true_corners_on_grid(sim, problem), 0.3)
    c = metrics.compare(obj, truth, region)
    f, curve = metrics.frc(c.aligned, truth, region)
    return c.phase_error_rad, float(curve[f < 0.5].mean()), c


def kb_raster_sim(
    frame: int = 96,
    photons: float = 1e6,
    side: int = 11,
    jitter: float = 0.5,
    seed: int = 7,
    defocus: tuple[float, float] = (60.0, 90.0),
    half_widths: tuple[float, float] = (0.22, 0.3),
) -> Simulation:
    """A scan unlike simulate()'s: a jittered ``side`` x ``side`` raster (step 0.35 of the
    probe's larger width) under an astigmatic KB-like probe (a rectangular pupil of
    ``half_widths`` cycles/px with defoci ``defocus`` (c_y, c_x), see
    initialisation.defocus_phase: 26 x 54 px by default), Poisson noise, no probe in the
    scan."""
    from panreduce_ptychography.initialisation import aperture_pupil, probe_from_pupil
    from panreduce_ptychography.problem import Scan, wavelength_m
    from panreduce_ptychography.simulate import diffraction, make_object, raster

    rng = np.random.default_rng(seed)
    p = probe_from_pupil(aperture_pupil((frame, frame), "rectangular", half_widths), defocus)[None]
    p = (p * np.sqrt(photons / np.sum(np.abs(p) ** 2))).astype(np.complex64)
    width = 2 * max(half_widths[0] * defocus[0], half_widths[1] * defocus[1])
    centres = raster(side, side, 0.35 * width, jitter=jitter, seed=seed)
    span = np.ptp(centres, axis=0)
    shape = (int(np.ceil(span[0])) + frame + 16, int(np.ceil(span[1])) + frame + 16)
    centres = centres + (np.array(shape) - span) / 2 - centres.min(axis=0)
    corners = centres - frame / 2
    obj = make_object(shape, seed=seed + 1, phase_range=1.2)
    frames = rng.poisson(diffraction(obj, p, corners)).astype(np.float32)
    dx = wavelength_m(8000.0) * 5.0 / (frame * 75e-6)
    scan = Scan(
        frames=frames,
        positions_m=centres * dx,
        energy_ev=8000.0,
        distance_m=5.0,
        pixel_size_m=(75e-6, 75e-6),
        name="kb-raster",
    )
    return Simulation(scan=scan, obj=obj, probe=p, corners=corners, pixel_size_m=dx)


def object_quality(path: Path, sim: Simulation, frame: int) -> tuple[float, float]:
    """(phase error in rad, FRC) of the object a job wrote to the NeXus file ``path``,
    against the simulation's truth, in the well-lit region (see :func:`quality`)."""
    with h5py.File(path) as f:
        e = f["entry"]
        obj = e["object/object"][()]
        dx = e["object/pixel_size"][()]
        y0 = e["object/y"][0] - dx / 2
        x0 = e["object/x"][0] - dx / 2
    problem = Problem(
        counts=np.zeros((1, frame, frame)),
        mask=np.ones((frame, frame)),
        positions=np.zeros((1, 2)),
        object_shape=obj.shape,
        pixel_size_m=dx,
        origin_m=(y0, x0),
    )
    err, frc, _ = quality(sim, problem, obj)
    return err, frc


def object_quality_m(path: Path, sim: Simulation, threshold: float = 0.3) -> float:
    """Phase error (rad) of the object a job wrote to ``path`` against the truth compared in
    metres: the truth resampled (cubic) at the written object's pixel centres (its own
    pixel size and origin, which differ from the simulation's when the job was given
    another energy or distance), over the truth's well-lit region."""
    from scipy import ndimage

    with h5py.File(path) as f:
        obj = f["entry/object/object"][()]
        dx = f["entry/object/pixel_size"][()]
        y = f["entry/object/y"][()] - dx / 2
        x = f["entry/object/x"][()] - dx / 2
    gy, gx = np.meshgrid(y / sim.pixel_size_m, x / sim.pixel_size_m, indexing="ij")
    truth = ndimage.map_coordinates(sim.obj.real, [gy, gx], order=3) + 1j * ndimage.map_coordinates(
        sim.obj.imag, [gy, gx], order=3
    )
    lit = metrics.well_lit(sim.obj.shape, sim.probe, sim.corners, threshold).astype(float)
    region = ndimage.map_coordinates(lit, [gy, gx], order=0) > 0.5
    return metrics.compare(obj, truth, region).phase_error_rad
