"""Physics of the engines on simulated scans with a known object, probe and positions.

The scan: 100 Fermat-spiral positions with 0.3 px jitter over a specimen with a 1 rad
phase range and 5 % amplitude contrast, 64 x 64 frames, 1e7 photons per frame with
Poisson noise, 20 dead/hot pixels (masked) and a dark level (subtracted). Every engine
starts from a flat object and a probe model whose pupil and defocus are 5-15 % off.
"""

from __future__ import annotations

import numpy as np
import pytest
from ptycho_helpers import quality, run, small_sim, true_corners_on_grid

from panreduce_ptychography import metrics
from panreduce_ptychography.backend import Backend, get_backend
from panreduce_ptychography.engines import Options, State, initial_probe, reconstruct, support_mask
from panreduce_ptychography.problem import prepare


@pytest.fixture(scope="module")
def sim():
    return small_sim(bad_pixels=20, dark_level=3.0)


# engine, iterations, phase error bound (rad), FRC bound (mean up to half Nyquist)
CASES = [("dm", 100, 0.03, 0.95), ("ml", 60, 0.015, 0.99), ("lsqml", 100, 0.04, 0.93)]


@pytest.mark.parametrize(("engine", "iterations", "max_phase_error", "min_frc"), CASES)
def test_engine_recovers_the_object(sim, engine, iterations, max_phase_error, min_frc):
    problem, out = run(sim, engine, iterations)
    err, frc, comp = quality(sim, problem, out.obj)
    # the flat starting object: the RMS phase of the specimen (1 rad range) as its error
    start_err, _, _ = quality(sim, problem, np.ones(problem.object_shape, np.complex64))
    assert start_err > 0.12
    assert err < max_phase_error, f"{engine}: phase error {err:.4f} rad"
    assert frc > min_frc, f"{engine}: FRC {frc:.3f}"
    # known positions pin the object: no shift beyond a fraction of a pixel
    assert np.all(np.abs(comp.shift_px) < 0.5)
    hist = out.history
    assert [h["iteration"] for h in hist] == list(range(1, iterations + 1))
    assert all(h["engine"] == engine for h in hist)
    assert all(np.isfinite(h["fourier_error"]) for h in hist)
    if engine != "dm":  # DM's error is that of its projected wave, not monotone
        assert hist[-1]["fourier_error"] < 0.05 * hist[0]["fourier_error"]
    if engine == "ml":
        # Poisson deviance per pixel near its noise floor (~1, less for dim pixels)
        assert 0.3 < hist[-1]["poisson_deviance"] < 1.5
    # the probe is recovered too: its intensity matches the truth's up to a shift
    true_p = np.abs(sim.probe[0]) ** 2
    got = np.abs(np.roll(out.probe[0], np.round(comp.shift_px).astype(int), axis=(0, 1))) ** 2
    corr = np.sum(true_p * got) / np.sqrt(np.sum(true_p**2) * np.sum(got**2))
    assert corr > 0.9, f"{engine}: probe intensity correlation {corr:.3f}"


@pytest.mark.parametrize("photons", [None, 1e5])
def test_dm_damped_modulus_projection_beats_the_plain_one(sim, photons):
    """DM's default modulus projection divides by |Psi| + 3 sqrt(photons) (Poisson
    amplitude noise ~0.5): on the test scan (1e7 photons/frame) and on a dim one (1e5)
    it ends closer to the truth than the plain projection (+0.1) after 60 iterations."""
    s = sim if photons is None else small_sim(photons=photons)
    problem, plain = run(s, "dm", 60, dm_fourier_eps=0.1)
    _, damped = run(s, "dm", 60, problem=problem)
    e_plain, _, _ = quality(s, problem, plain.obj)
    e_damped, _, _ = quality(s, problem, damped.obj)
    assert e_damped < 0.8 * e_plain, f"damped {e_damped:.4f} rad, plain {e_plain:.4f} rad"


def test_ml_polishes_a_dm_result(sim):
    problem, dm = run(sim, "dm", 40)
    _, ml = run(sim, "ml", 30, problem=problem, state=dm)
    e_dm, _, _ = quality(sim, problem, dm.obj)
    e_ml, _, _ = quality(sim, problem, ml.obj)
    assert e_ml < 0.6 * e_dm
    assert [h["engine"] for h in ml.history] == ["dm"] * 40 + ["ml"] * 30


def test_ml_smoothness_prior_smooths(sim):
    problem, plain = run(sim, "ml", 20)
    _, smooth = run(sim, "ml", 20, problem=problem, ml_regularisation=1.0)

    def roughness(o):
        ph = np.angle(o)
        return float(np.mean(np.abs(np.diff(ph, axis=0))) + np.mean(np.abs(np.diff(ph, axis=1))))

    assert roughness(smooth.obj) < roughness(plain.obj)


@pytest.mark.parametrize("engine", ["lsqml", "ml"])
def test_position_refinement_recovers_perturbed_positions(engine):
    """Positions off by up to +-1 px are refined to ~0.1 px, the probe being known (as in
    PXCT, where it comes from a previous reconstruction)."""
    sim = small_sim(n_positions=80, photons=1e7, seed=5)
    problem = prepare(sim.scan)
    truth = true_corners_on_grid(sim, problem)
    rng = np.random.default_rng(1)
    problem.positions = truth + rng.uniform(-1.0, 1.0, truth.shape)
    state = State(
        obj=np.ones(problem.object_shape, np.complex64), probe=sim.probe.copy(), positions=problem.positions.copy()
    )
    _, out = run(
        sim,
        engine,
        60,
        problem=problem,
        state=state,
        position_refinement=True,
        position_start=0,
        probe_update_start=1000,
    )

    def rms(p):
        d = p - truth
        d -= d.mean(axis=0)  # a common shift of all positions is not determined
        return float(np.sqrt((d**2).sum(1).mean()))

    before, after = rms(problem.positions), rms(out.positions)
    assert before > 0.7
    assert after < 0.2, f"{engine}: position error {before:.2f} -> {after:.2f} px"
    assert "position_step_px" in out.history[-1]
    err, _, _ = quality(sim, problem, out.obj)
    assert err < 0.03


def test_mixed_states():
    """A beam with 25 % of its power in a second incoherent mode: the true modes are a
    fixed point of every engine (powers kept, modes orthogonal, object recovered), and
    they explain the data better than one coherent mode can."""
    sim = small_sim(modes=2, mode_power=(0.25,), seed=2)
    problem = prepare(sim.scan)
    one_mode = State(
        obj=np.ones(problem.object_shape, np.complex64),
        probe=sim.probe[:1] / np.sqrt(0.75),
        positions=problem.positions.copy(),
    )
    _, one = run(sim, "ml", 40, problem=problem, state=one_mode)
    for engine in ("ml", "dm", "lsqml"):
        state = State(
            obj=np.ones(problem.object_shape, np.complex64), probe=sim.probe.copy(), positions=problem.positions.copy()
        )
        _, out = run(sim, engine, 40, problem=problem, state=state)
        power = (np.abs(out.probe) ** 2).sum(axis=(1, 2))
        frac = power / power.sum()
        assert abs(frac[1] - 0.25) < 0.02, (engine, frac)
        overlap = abs(np.vdot(out.probe[0], out.probe[1])) / np.sqrt(power[0] * power[1])
        assert overlap < 1e-3  # orthogonal modes
        err, _, _ = quality(sim, problem, out.obj)
        assert err < 0.05, (engine, err)
        if engine == "ml":
            assert out.history[-1]["poisson_deviance"] < 0.8 * one.history[-1]["poisson_deviance"]


def test_probe_support_is_enforced(sim):
    _, out = run(sim, "dm", 5, probe_support=0.3)
    outside = support_mask(out.probe.shape[-2:], 0.3) == 0
    assert np.all(out.probe[0][outside] == 0)
    assert np.abs(out.probe[0][~outside]).max() > 0


def test_subpixel_model_matters(sim):
    """Rounding positions to whole pixels (PtyPy's model) is worse on sub-pixel data."""
    problem, sub = run(sim, "ml", 30)
    _, rounded = run(sim, "ml", 30, problem=problem, subpixel=False)
    e_sub, _, _ = quality(sim, problem, sub.obj)
    e_round, _, _ = quality(sim, problem, rounded.obj)
    assert e_sub < e_round


# -- the comparison itself -------------------------------------------------------------------
def test_compare_removes_shift_phase_and_ramp(sim):
    truth = sim.obj
    region = np.zeros(truth.shape, bool)
    region[40:-40, 40:-40] = True
    yy, xx = np.mgrid[0 : truth.shape[0], 0 : truth.shape[1]]
    moved = metrics.fourier_shift(truth, np.array([0.4, -0.7])) * np.exp(1j * (1.3 + 0.02 * yy - 0.01 * xx)) * 0.8
    c = metrics.compare(moved, truth, region)
    assert np.allclose(c.shift_px, [0.4, -0.7], atol=0.03)
    assert np.allclose(c.ramp[1:], [0.02, -0.01], atol=2e-3)
    assert c.phase_error_rad < 0.02
    f, curve = metrics.frc(c.aligned, truth, region)
    assert curve[f < 0.8].min() > 0.95
    noise = np.random.default_rng(0).standard_normal(truth.shape)
    f, curve = metrics.frc(np.exp(1j * noise), truth, region)
    assert curve[f > 0.1].mean() < 0.2


# -- numpy and torch give the same result -------------------------------------------------------
@pytest.mark.parametrize("engine", ["dm", "ml", "lsqml"])
def test_torch_path_matches_numpy(sim, engine):
    pytest.importorskip("torch")
    _compare_backends(sim, engine, get_backend("torch-cpu"))


@pytest.mark.gpu
@pytest.mark.parametrize("engine", ["dm", "ml", "lsqml"])
def test_gpu_path_matches_numpy(sim, engine):
    pytest.importorskip("torch")
    _compare_backends(sim, engine, get_backend("gpu"))


def _compare_backends(sim, engine, other):
    problem = prepare(sim.scan)
    from ptycho_helpers import model_probe

    state = State(
        obj=np.ones(problem.object_shape, np.complex64),
        probe=initial_probe(problem, model_probe(), 2),
        positions=problem.positions.copy(),
    )
    opts = Options(position_refinement=True, position_start=3, probe_support=0.45, lsqml_batches=1)
    a = reconstruct(problem, state, engine=engine, iterations=6, backend=Backend(), options=opts)
    b = reconstruct(problem, state, engine=engine, iterations=6, backend=other, options=opts)
    scale = np.abs(a.obj).max()
    assert np.abs(a.obj - b.obj).max() < 1e-3 * scale
    assert np.abs(a.probe - b.probe).max() < 5e-3 * np.abs(a.probe).max()
    assert np.allclose(a.positions, b.positions, atol=1e-3)
    for ha, hb in zip(a.history, b.history, strict=True):
        assert ha["fourier_error"] == pytest.approx(hb["fourier_error"], rel=1e-3)
