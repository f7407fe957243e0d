"""The ptychography technique end to end through the kit's Context: inputs, sharding by
projection, outputs read back with h5py, progress events, parameter checks."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from ptycho_helpers import model_probe, quality, small_sim

from panreduce import errors, kit
from panreduce.storage import Stores
from panreduce_ptychography.io import write_cxi, write_nexus
from panreduce_ptychography.problem import Problem, Scan
from panreduce_ptychography.technique import Technique


class _Job:
    """A finished kit.run job: its outputs by name (provenance.json aside)."""

    def __init__(self, result: kit.Result) -> None:
        self.result = result
        self.outputs = [
            SimpleNamespace(name=o.uri.rsplit("/", 1)[1], path=Path(o.uri), format=o.format)
            for o in result.outputs
            if o.role != "provenance"
        ]


def _run(paths, tmp_path, split=None, **raw):
    events = []
    args = dict(stores=Stores(tmp_path / "store"), progress=lambda stage, frac, msg: events.append((stage, frac, msg)))
    if split:
        result = kit.run_split(Technique, [str(p) for p in paths], raw, tmp_path / "out", split=split, **args)
    else:
        result = kit.run(Technique, [str(p) for p in paths], raw, tmp_path / "out", **args)
    json.dumps(result.summary, allow_nan=False)
    return result.summary, _Job(result), events


@pytest.fixture(scope="module")
def sim():
    s = small_sim(bad_pixels=10, dark_level=1.0)
    s.scan.probe = model_probe()
    return s


def test_reconstruction_end_to_end(sim, tmp_path):
    path = tmp_path / "scan.nxs"
    write_nexus(path, sim.scan)
    summary, ctx, events = _run([path], tmp_path, iterations=60, engine="dm", device="cpu")
    (proj,) = summary["projections"]
    n_dm, n_ml = proj["iterations_by_engine"]
    assert proj["engines"] == ["dm", "ml"] and proj["iterations"] == n_dm + n_ml
    assert 20 <= n_dm <= 60 and 20 <= n_ml < 100 and proj["iterations_cap"] == 360
    assert proj["initial_probe"]["init"] == "scan"
    # the convergence verdict: a well-posed scan, the fit at the noise after DM -> ML
    assert proj["converged"] is True and proj["convergence"] == "converged", {
        k: proj[k] for k in ("convergence", "stop_reasons", "iterations_by_engine", "reduced_deviance")
    }
    assert 0.5 < proj["reduced_deviance"] < 1.5
    names = {o.name: o for o in ctx.outputs}
    assert set(names) == {"scan.nxs", "scan.png"}
    assert names["scan.png"].path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # progress: one event per iteration, with the error metrics
    it_events = [e for e in events if e[0] in ("dm", "ml")]
    assert len(it_events) == n_dm + n_ml
    assert "fourier_error" in it_events[0][2] and "poisson_deviance" in it_events[-1][2]
    fracs = [e[1] for e in events]
    assert fracs == sorted(fracs)
    with h5py.File(names["scan.nxs"].path) as f:
        e = f["entry"]
        assert e["object"].attrs["signal"] == "phase"
        obj = e["object/object"][()]
        assert obj.dtype == np.complex64
        assert np.allclose(np.angle(obj), e["object/phase"][()], atol=1e-6)
        dx = e["object/pixel_size"][()]
        assert e["object/x"][1] - e["object/x"][0] == pytest.approx(dx)
        probe = e["probe/probe"][()]
        assert probe.shape == (1, 64, 64)
        assert e["probe/power_fraction"][()] == pytest.approx([1.0])
        assert len(e["error_history/fourier_error"]) == n_dm + n_ml
        assert list(e["error_history/engine"].asstr()[()][[0, -1]]) == ["dm", "ml"]
        # positions written in metres, as read (no refinement: unchanged)
        assert np.allclose(np.c_[e["positions/y"][()], e["positions/x"][()]], sim.scan.positions_m, atol=1e-12)
        conv = e["reconstruction/convergence"]
        assert bool(conv["converged"][()]) and conv["reason"].asstr()[()] == "converged"
        assert conv["reduced_deviance"][()] == pytest.approx(proj["reduced_deviance"])
        params = json.loads(e["reconstruction/parameters"][()])
        assert params["engine"] == "dm"
        x0 = e["object/x"][0] - dx / 2
        y0 = e["object/y"][0] - dx / 2
    # the object in the file is the specimen: phase error against the truth
    problem = Problem(
        counts=np.zeros((1, 64, 64)),
        mask=np.ones((64, 64)),
        positions=np.zeros((1, 2)),
        object_shape=obj.shape,
        pixel_size_m=dx,
        origin_m=(y0, x0),
    )
    err, frc, _ = quality(sim, problem, obj)
    assert err < 0.03 and frc > 0.95


def test_pxct_is_sharded_by_projection(sim, tmp_path):
    small = small_sim(frame_size=32, n_positions=25, photons=1e6)
    scans = [Scan(**{**small.scan.__dict__, "metadata": {"rotation_angle_deg": a}}) for a in (0.0, 60.0, 120.0)]
    path = tmp_path / "pxct.nxs"
    write_nexus(path, scans[:2], entries=["proj_000", "proj_001"])
    path2 = tmp_path / "pxct2.nxs"
    write_nexus(path2, scans[2])
    summary, job, _ = _run([path, path2], tmp_path / "split", split=3, iterations=3, ml_iterations=0)
    keys = [p["projection"] for p in summary["projections"]]
    assert summary["shards"] == 3
    assert [p["rotation_angle_deg"] for p in summary["projections"]] == [0.0, 60.0, 120.0]
    assert {o.name for o in job.outputs} == {f"{k}.{ext}" for k in keys for ext in ("nxs", "png")}
    assert keys == ["pxct_proj_000", "pxct_proj_001", "pxct2"]
    summary, _, _ = _run([path, path2], tmp_path / "all", iterations=2, ml_iterations=0, plots=False)
    assert summary["n_projections"] == 3


def test_cxi_input(sim, tmp_path):
    small = small_sim(frame_size=32, n_positions=25, photons=1e6)
    path = tmp_path / "scan.cxi"
    write_cxi(path, small.scan)
    summary, _, _ = _run([path], tmp_path, iterations=5, ml_iterations=0, engine="lsqml", probe={"modes": 2})
    assert len(summary["projections"][0]["probe_mode_power"]) == 2


def test_parameters_are_validated():
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"preparation": {"center_row": 10.0}})
    assert [v.field for v in err.value.violations] == ["preparation.center_col"]
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"position": {"refinement": True}, "subpixel": False})
    assert [v.field for v in err.value.violations] == ["subpixel"]
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"engine": "epie"})
    assert [v.field for v in err.value.violations] == ["engine"]


def test_gpu_refused_without_one(sim, tmp_path):
    from panreduce_ptychography.backend import cuda_available

    if cuda_available():
        pytest.skip("this machine has a GPU")
    path = tmp_path / "scan.nxs"
    write_nexus(path, sim.scan)
    with pytest.raises(errors.FailedPrecondition, match=r"no CUDA GPU"):
        _run([path], tmp_path, device="gpu")


def test_wrong_probe_shape_is_named(sim, tmp_path):
    scan = Scan(**{**sim.scan.__dict__, "probe": np.ones((1, 32, 32), np.complex64)})
    path = tmp_path / "probe.nxs"
    write_nexus(path, scan)
    with pytest.raises(errors.InvalidInput, match=r"probe.nxs.*initial probe is 32 x 32"):
        _run([path], tmp_path, iterations=1)


def test_empty_frames_are_refused(sim, tmp_path):
    scan = Scan(**{**sim.scan.__dict__, "frames": np.zeros_like(sim.scan.frames), "dark": None})
    path = tmp_path / "dark.nxs"
    write_nexus(path, scan)
    with pytest.raises(errors.InvalidInput, match=r"dark.nxs.*no photons"):
        _run([path], tmp_path, iterations=1)


def test_declaration():
    assert Technique.name == "ptychography"
    assert Technique.shardable and Technique.shard_unit == "projection"
    schema = Technique.parameters_schema()
    defs = schema.get("$defs", {})
    for name, prop in schema["properties"].items():
        if "$ref" in prop:  # a step model: described, and so is each of its fields
            sub = defs[prop["$ref"].rsplit("/", 1)[-1]]
            assert sub.get("description"), name
            assert all(p.get("description") for p in sub["properties"].values()), name
        else:
            assert prop.get("description"), name


def test_engine_options_follow_the_step_models():
    """Every engine option comes from the parameter model by name (no hand copy): the
    step fields and top-level fields land in Options; unknown step keys are refused."""
    import dataclasses

    from panreduce_ptychography.model import Options
    from panreduce_ptychography.params import engine_options

    params = Technique.validate_parameters(
        {
            "dm": {"alpha": 0.8, "fourier_eps": 1.5},
            "ml": {"regularisation": 0.2},
            "lsqml": {"batches": 7},
            "probe": {"support": 0.3, "update_start": 4},
            "position": {"refinement": True, "start": 3, "every": 2, "max_step_px": 0.25},
            "subpixel_grid": 8,
            "seed": 11,
        }
    )
    opts = engine_options(params)
    assert (opts.dm_alpha, opts.dm_fourier_eps, opts.ml_regularisation, opts.lsqml_batches) == (0.8, 1.5, 0.2, 7)
    assert (opts.probe_support, opts.probe_update_start) == (0.3, 4)
    assert (opts.position_refinement, opts.position_start, opts.position_every, opts.position_max_step_px) == (
        True,
        3,
        2,
        0.25,
    )
    assert (opts.subpixel_grid, opts.seed) == (8, 11)
    # every option but the inertias (internal regularisation) and the ML step options that
    # only the DM -> ML hand-over sets (plan.ml_stage_options, issue 19) is a parameter
    default = Technique.validate_parameters({})
    top = type(default).model_fields
    unmapped = set()
    for f in dataclasses.fields(Options):
        step, _, key = f.name.partition("_")
        if f.name not in top and not (step in top and key in type(getattr(default, step)).model_fields):
            unmapped.add(f.name)
    assert unmapped == {"object_inertia", "probe_inertia", "ml_separate_steps", "ml_probe_scale"}
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"dm": {"alpha": 0.5, "beta": 1}})
    assert err.value.violations[0].field.startswith("dm")
