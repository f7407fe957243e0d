"""The speed-ups of the engines: the DPC initial object, sub-pixel shifts quantised to a
grid (one shifted probe per shift class), and their equality with the exact paths."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from ptycho_helpers import model_probe, quality, run, small_sim, true_corners_on_grid

from panreduce_ptychography.backend import Backend, get_backend
from panreduce_ptychography.engines import Options, State, initial_object, initial_probe, reconstruct
from panreduce_ptychography.problem import prepare


@pytest.fixture(scope="module")
def sim():
    return small_sim(bad_pixels=20, dark_level=3.0)


def test_dpc_initial_object_holds_the_low_frequency_phase(sim):
    """The centre-of-mass shifts of the frames integrate to the specimen's phase at the
    probe's scale: far closer to the truth than a flat start, and the sign matters (the
    complex conjugate, i.e. the opposite phase, is worse than flat)."""
    problem = prepare(sim.scan)
    probe = initial_probe(problem, model_probe(), 1)
    flat = np.ones(problem.object_shape, np.complex64)
    dpc = initial_object(problem, probe)
    assert dpc.shape == flat.shape and dpc.dtype == np.complex64
    assert np.allclose(np.abs(dpc), 1, atol=1e-5)
    e_flat, _, _ = quality(sim, problem, flat)
    e_dpc, _, _ = quality(sim, problem, dpc)
    e_conj, _, _ = quality(sim, problem, np.conj(dpc))
    assert e_dpc < 0.8 * e_flat, (e_dpc, e_flat)
    assert e_conj > e_flat > e_dpc


def test_dpc_of_a_uniform_object_is_flat():
    """A uniform specimen shifts no frame (and a uniform phase ramp would shift all
    alike, removed with the mean shift): nothing to integrate, the initial object is
    flat."""
    s = small_sim(phase_range=0.0, amplitude_contrast=0.0, noise=False, n_positions=30)
    problem = prepare(s.scan)
    dpc = initial_object(problem)
    assert np.abs(np.angle(dpc)).max() < 1e-3


def _on_grid(problem, grid: int):
    pos = np.round(problem.positions * grid) / grid
    return dataclasses.replace(problem, positions=pos)


@pytest.mark.parametrize("engine", ["dm", "ml", "lsqml"])
def test_quantised_shifts_equal_exact_shifts_on_the_grid(sim, engine):
    """When every position lies on the 1/4 px grid, the class-wise shifts are the exact
    model: the same iterates as one Fourier shift per position."""
    problem = _on_grid(prepare(sim.scan), 4)
    frac = problem.positions - np.floor(problem.positions + 0.5)
    assert len(np.unique(np.round(frac * 4), axis=0)) > 4  # several shift classes
    state = State(
        obj=np.ones(problem.object_shape, np.complex64),
        probe=initial_probe(problem, model_probe(), 1),
        positions=problem.positions.copy(),
    )
    a = reconstruct(
        problem,
        state,
        engine=engine,
        iterations=5,
        backend=Backend(),
        options=Options(subpixel_grid=0, lsqml_batches=2),
    )
    b = reconstruct(
        problem,
        state,
        engine=engine,
        iterations=5,
        backend=Backend(),
        options=Options(subpixel_grid=4, lsqml_batches=2),
    )
    assert np.abs(a.obj - b.obj).max() < 2e-3 * np.abs(a.obj).max()
    assert np.abs(a.probe - b.probe).max() < 2e-3 * np.abs(a.probe).max()
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["fourier_error"] == pytest.approx(hb["fourier_error"], rel=1e-3)


def test_quantised_shifts_keep_the_accuracy(sim):
    """On jittered positions (off the grid) a 1/4 px grid costs little accuracy, while
    rounding to whole pixels costs more."""
    problem, exact = run(sim, "dm", 60, subpixel_grid=0)
    _, quant = run(sim, "dm", 60, problem=problem, subpixel_grid=4)
    e_exact, _, _ = quality(sim, problem, exact.obj)
    e_quant, _, _ = quality(sim, problem, quant.obj)
    assert e_quant < 1.15 * e_exact + 2e-3, (e_quant, e_exact)


@pytest.mark.parametrize("engine", ["dm", "ml"])
def test_torch_path_matches_numpy_with_quantised_shifts(sim, engine):
    pytest.importorskip("torch")
    problem = prepare(sim.scan)
    probe = initial_probe(problem, model_probe(), 1)
    state = State(obj=initial_object(problem, probe), probe=probe, positions=problem.positions.copy())
    opts = Options(subpixel_grid=4)
    a = reconstruct(problem, state, engine=engine, iterations=6, backend=Backend(), options=opts)
    b = reconstruct(problem, state, engine=engine, iterations=6, backend=get_backend("torch-cpu"), options=opts)
    assert np.abs(a.obj - b.obj).max() < 1e-3 * np.abs(a.obj).max()
    assert np.abs(a.probe - b.probe).max() < 5e-3 * np.abs(a.probe).max()


def test_joint_probe_and_position_refinement_from_a_rough_probe():
    """Positions off by up to +-1 px and a probe model 5-15 % off: ML refines the probe
    first and the positions from iteration 60 (once the probe has converged, the
    position gradients point the right way) and recovers both."""
    s = small_sim(n_positions=80, photons=1e7, seed=5)
    problem = prepare(s.scan)
    truth = true_corners_on_grid(s, problem)
    problem.positions = truth + np.random.default_rng(1).uniform(-1.0, 1.0, truth.shape)

    def rms(p):
        d = p - truth
        d -= d.mean(axis=0)  # a common shift of all positions is not determined
        return float(np.sqrt((d**2).sum(1).mean()))

    probe = initial_probe(problem, model_probe(), 1)
    state = State(obj=initial_object(problem, probe), probe=probe, positions=problem.positions.copy())
    _, out = run(s, "ml", 160, problem=problem, state=state, position_refinement=True, position_start=60)
    before, after = rms(problem.positions), rms(out.positions)
    assert before > 0.7
    assert after < 0.25, f"position error {before:.2f} -> {after:.2f} px"
    err, _, comp = quality(s, problem, out.obj)
    assert err < 0.02, err
    true_p = np.abs(s.probe[0]) ** 2
    got = np.abs(np.roll(out.probe[0], np.round(comp.shift_px).astype(int), axis=(0, 1))) ** 2
    assert np.sum(true_p * got) / np.sqrt(np.sum(true_p**2) * np.sum(got**2)) > 0.9
