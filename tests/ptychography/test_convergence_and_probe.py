"""Issue 19: the error metric of the current estimate, the stop rule and the convergence
verdict; the initial probe from the data alone, from a model optic and from a previous
reconstruction. The scans have geometries unlike the benchmark's (64^2 and 48^2 frames,
Fermat spirals with other probe sizes, a jittered raster with an astigmatic KB-like probe)
and no probe in the file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from ptycho_helpers import kb_raster_sim, object_quality, quality, small_sim

from panreduce import errors, kit
from panreduce.storage import Stores
from panreduce_ptychography import engines as eng
from panreduce_ptychography.backend import Backend
from panreduce_ptychography.initialisation import parametric_probe, probe_from_data
from panreduce_ptychography.io import write_nexus
from panreduce_ptychography.model import expected_deviance
from panreduce_ptychography.problem import prepare
from panreduce_ptychography.technique import Technique


def _run(paths, tmp_path, **raw):
    events = []
    result = kit.run(
        Technique,
        [str(p) for p in paths],
        {"device": "cpu", **raw},
        tmp_path / "out",
        stores=Stores(tmp_path / "store"),
        progress=lambda st, fr, msg: events.append((st, fr, msg)),
    )
    json.dumps(result.summary, allow_nan=False)
    nxs = [Path(o.uri) for o in result.outputs if o.uri.endswith(".nxs")]
    return result.summary, nxs, events


def test_expected_deviance_matches_poisson_draws():
    rng = np.random.default_rng(0)
    for lam in (0.01, 0.3, 3.0, 50.0, 2e4):
        n = rng.poisson(lam, 400_000).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            d = 2 * (lam - n + np.where(n > 0, n * np.log(n / lam), 0))
        assert expected_deviance(np.array([lam]))[0] == pytest.approx(d.mean(), rel=0.02, abs=1e-3), lam


def test_stop_rule():
    rule = eng.StopRule(tolerance=1e-2, window=5)
    falling = [100 * 0.8**i for i in range(30)]
    assert not rule.levelled_off(falling)
    flat = [10.0] * 12
    assert rule.levelled_off(flat)
    assert not rule.levelled_off(flat[:9])  # before 2 x window iterations
    assert rule.levelled_off([10, 9, 8, 7, 6, 5, 6, 7, 8, 9, 10, 11])  # rising: levelled off


def test_metric_falls_for_every_engine_and_the_stop_rule_ends_early():
    """The recorded metric is that of the current object and probe: it falls for DM too
    (DM's own projected-wave error is kept as dm_fourier_error), and the stop rule ends
    the engine before the cap."""
    sim = small_sim(frame_size=48, n_positions=80, probe_diameter_px=20, photons=1e7, seed=9)
    problem = prepare(sim.scan)
    probe = eng.initial_probe(problem, sim.probe, 1)
    for engine in ("dm", "ml", "lsqml"):
        st = eng.State(obj=np.ones(problem.object_shape, np.complex64), probe=probe, positions=problem.positions.copy())
        out = eng.reconstruct(
            problem,
            st,
            engine=engine,
            iterations=300,
            backend=Backend(),
            options=eng.Options(subpixel_grid=4),
            stop=eng.StopRule(),
        )
        dev = [r["poisson_deviance"] for r in out.history]
        assert dev[-1] < 0.5 * dev[0], (engine, dev[0], dev[-1])
        if engine != "dm":  # near the noise floor (~0.8 per pixel here); DM's estimate P O
            # stays further from the data (its fixed point is the exit waves psi)
            assert dev[-1] < 1.5, (engine, dev[-1])
        assert out.stop_reason == "levelled_off" and len(out.history) < 300, engine
        if engine == "dm":
            assert "dm_fourier_error" in out.history[-1] and "exit_wave_change" in out.history[-1]


# -- the default command on a scan without a probe -----------------------------------------------
@pytest.fixture(scope="module")
def no_probe_scan(tmp_path_factory):
    """simulate.py's scan, written WITHOUT its probe (the usual case at a beamline)."""
    sim = small_sim(bad_pixels=10, dark_level=1.0)
    assert sim.scan.probe is None
    path = tmp_path_factory.mktemp("noprobe") / "scan.nxs"
    write_nexus(path, sim.scan)
    return sim, path


def test_default_command_without_a_probe_converges(no_probe_scan, tmp_path):
    sim, path = no_probe_scan
    summary, (nxs,), events = _run([path], tmp_path)
    (proj,) = summary["projections"]
    err, frc = object_quality(nxs, sim, 64)
    print(
        f"\ndefault command, no probe in the file: phase error {err:.4f} rad, FRC {frc:.3f}, "
        f"{proj['iterations_by_engine']} iterations, reduced deviance {proj['reduced_deviance']:.3f}"
    )
    assert proj["initial_probe"]["init"] == "data"
    # the probe's size found from the data: the true defocused pupil spreads it over 25.6 px
    assert proj["initial_probe"]["probe_diameter_px"] == pytest.approx([25.6, 25.6], rel=0.2)
    assert err < 0.02 and frc > 0.97  # issue 19's goal: <= 0.04 rad (0.167 before)
    assert proj["converged"] is True and proj["convergence"] == "converged"
    assert proj["stop_reasons"] == ["levelled_off", "levelled_off"]
    assert proj["iterations"] < proj["iterations_cap"]
    assert not [e for e in events if e[0] == "unconverged"]


def test_scrambled_positions_are_reported_unconverged(no_probe_scan, tmp_path):
    """The same frames with their positions shuffled cannot be reconstructed: the job
    says so (converged false, a warning event, the NeXus verdict), not success."""
    sim, _ = no_probe_scan
    rng = np.random.default_rng(3)
    scan = dataclasses.replace(sim.scan, positions_m=sim.scan.positions_m[rng.permutation(len(sim.scan.frames))])
    path = tmp_path / "scrambled.nxs"
    write_nexus(path, scan)
    summary, (nxs,), events = _run([path], tmp_path)
    (proj,) = summary["projections"]
    assert proj["converged"] is False and proj["convergence"] in ("poor_fit", "iteration_cap")
    assert proj["reduced_deviance"] > 3
    warn = [e for e in events if e[0] == "unconverged"]
    assert len(warn) == 1 and "did not converge" in warn[0][2]
    with h5py.File(nxs) as f:
        assert not bool(f["entry/reconstruction/convergence/converged"][()])


# -- initial probes ------------------------------------------------------------------------------
def test_probe_from_data_finds_the_defocus_on_other_geometries():
    for kw, diameter in (
        (dict(frame_size=64, n_positions=110, probe_diameter_px=64 / 3, seed=4), 64 / 3),
        (dict(frame_size=48, n_positions=80, probe_diameter_px=20, photons=1e6, seed=9), 20.0),
    ):
        sim = small_sim(**kw)
        problem = prepare(sim.scan)
        _, info = probe_from_data(problem)
        assert info["probe_diameter_px"] == pytest.approx([diameter, diameter], rel=0.2), (kw, info)


def test_default_command_on_a_kb_raster(tmp_path):
    """Issue 19's raster case, unlike the benchmark's: a jittered 11 x 11 raster, 96^2
    frames, 1e6 photons, an astigmatic KB-like probe (rectangular pupil, defoci 60 / 90 px:
    26 x 54 px), no probe in the file. The data probe finds both defoci (scored by ML on
    held-out frames; a DM score preferred a point-like probe here) and the default
    command reaches the issue's 0.04 rad, converged (measured 0.025)."""
    sim = kb_raster_sim()
    path = tmp_path / "kb.nxs"
    write_nexus(path, sim.scan)
    summary, (nxs,), _ = _run([path], tmp_path, plots=False)
    (proj,) = summary["projections"]
    info = proj["initial_probe"]
    assert info["defocus_c_px"] == pytest.approx([60.0, 90.0], rel=0.2), info
    assert info["probe_diameter_px"] == pytest.approx([26.4, 54.0], rel=0.2), info
    err, frc = object_quality(nxs, sim, 96)
    print(
        f"\nKB raster, default command: phase error {err:.4f} rad, FRC {frc:.3f}, "
        f"{proj['iterations_by_engine']} iterations, {proj['convergence']}"
    )
    assert err < 0.04
    assert proj["converged"] is True


def test_parametric_probes_have_the_optics_size():
    sim = small_sim(frame_size=64, n_positions=20)
    problem = prepare(sim.scan)
    lam, dx = problem.wavelength_m, problem.pixel_size_m
    # a circular lens: its pupil, in the far field, has radius D / (2 f lam) cycles/m
    f_m = 0.1
    d_m = 0.25 * 2 * f_m * lam / dx  # pupil radius 0.25 cycles/px: 16 px of the 64 px frame
    p = parametric_probe(problem, "circular", aperture_m=d_m, focal_length_m=f_m)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(p)))) ** 2
    ky, kx = np.mgrid[-32:32, -32:32]
    r_pupil = np.sqrt((spec * (ky**2 + kx**2)).sum() / spec.sum() * 2)  # uniform disc: <r^2> = R^2 / 2
    assert r_pupil == pytest.approx(16, rel=0.08)
    # a defocus z spreads it over 2 R |c| px, c = lam z / dx^2 (geometric optics)
    z = 80 * dx**2 / lam  # -> 40 px wide
    pz = parametric_probe(problem, "circular", aperture_m=d_m, focal_length_m=f_m, defocus_m=z)
    inten = np.abs(pz) ** 2
    width = np.sqrt((inten * (ky**2 + kx**2)).sum() / inten.sum() * 2) * 2
    assert width == pytest.approx(40, rel=0.2)
    # a Gaussian focus: its intensity FWHM
    g = np.abs(parametric_probe(problem, "gaussian", diameter_m=10 * dx)) ** 2
    row = g[32] / g[32].max()
    assert np.sum(row >= 0.5) == pytest.approx(10, abs=1.5)
    # a rectangular (KB) aperture: twice as wide as high in the far field
    pr = parametric_probe(problem, "rectangular", aperture_m=d_m, aperture_height_m=d_m / 2, focal_length_m=f_m)
    spec = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(pr)))) ** 2
    lit = spec > 0.5 * spec.max()
    assert lit.any(axis=0).sum() == pytest.approx(2 * lit.any(axis=1).sum(), rel=0.15)


def test_probe_from_a_previous_reconstruction(no_probe_scan, tmp_path):
    """probe.input names a job input (a previous job's NeXus output): that file gives the
    probe and is not reconstructed; a name that is not an input is refused."""
    sim, path = no_probe_scan
    summary, (first,), _ = _run([path], tmp_path / "a", ml_iterations=0, iterations=30)
    previous = tmp_path / "previous.nxs"
    previous.write_bytes(first.read_bytes())
    summary, (nxs,), _ = _run([path, previous], tmp_path / "b", probe={"input": "previous.nxs"})
    (proj,) = summary["projections"]
    assert proj["initial_probe"] == {"init": "input", "file": "previous.nxs"}
    err, _ = object_quality(nxs, sim, 64)
    assert err < 0.02 and proj["converged"]
    for bad in ("../../etc/passwd", "/etc/passwd", "nothere.nxs"):
        with pytest.raises(errors.InvalidParameters, match=r"probe.input"):
            _run([path], tmp_path / "c", probe={"input": bad})
    with pytest.raises(errors.InvalidParameters, match=r"probe.input"):
        Technique.validate_parameters({"probe": {"init": "input"}})
    with pytest.raises(errors.InvalidParameters, match=r"probe.aperture_m"):
        Technique.validate_parameters({"probe": {"init": "circular", "focal_length_m": 0.1}})


# -- DM -> ML ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw",
    [
        dict(frame_size=64, n_positions=110, probe_diameter_px=64 / 3, seed=4),
        dict(frame_size=48, n_positions=80, probe_diameter_px=20, photons=1e6, seed=9),
    ],
    ids=["110pos-21px", "48px-1e6"],
)
def test_dm_to_ml_is_not_worse_than_dm(kw):
    """The hand-over: 85 DM then 15 ML iterations (the old preset) end at least as close
    to the truth as 100 DM iterations, from the data's probe, on geometries unlike the
    benchmark's; measured 0.0031 against 0.0110 rad (110 positions)."""
    sim = small_sim(**kw)
    problem = prepare(sim.scan)
    p, _ = probe_from_data(problem)
    p0 = eng.initial_probe(problem, p[None], 1)
    st = eng.State(obj=eng.initial_object(problem, p0), probe=p0, positions=problem.positions.copy())
    opts = eng.Options(subpixel_grid=4)
    dm = eng.reconstruct(problem, st, engine="dm", iterations=85, backend=Backend(), options=opts)
    ml = eng.reconstruct(problem, dm, engine="ml", iterations=15, backend=Backend(), options=opts, start_iteration=85)
    dm100 = eng.reconstruct(
        problem, dm, engine="dm", iterations=15, backend=Backend(), options=opts, start_iteration=85
    )
    e_ml, _, _ = quality(sim, problem, ml.obj)
    e_dm, _, _ = quality(sim, problem, dm100.obj)
    print(f"\n{kw}: dm 85 + ml 15 {e_ml:.4f} rad, dm 100 {e_dm:.4f} rad")
    assert e_ml <= e_dm, (e_ml, e_dm)
    # and the likelihood ML optimises is lower than DM's
    assert ml.history[-1]["poisson_deviance"] < dm100.history[-1]["poisson_deviance"]
