"""A sharded saxs job through a real gateway equals the unsharded one, in every mode: the
frame series (curves in frame order, CSVs, the 2-D outputs of the first frame), kinetics
(the time axis from the job's first frame, the kinetic table) and scanning maps (the grid
built from every frame's motor positions), on synthetic frames and the real BioCAT frame.

Every HDF5 output is compared dataset by dataset (rtol 1e-9), every table and text image
line by line; each case also checks the physics the frames were made with."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from compare import assert_same_h5, assert_same_outputs, body, same, table
from conftest import run_saxs, stage  # at import: the saxs conftest (a later folder's would shadow it)
from contract_example import BIOCAT_PARAMS
from synthetic import Geo, guinier_sphere, write_nexus_stack, write_tiff

from panreduce.client import Client
from panreduce_saxs.analysis import FWHM_PER_SIGMA

GEO = Geo(shape=(120, 140), pixel_um=172.0, distance_mm=1000.0, wavelength_A=1.0, cx=70.3, cy=60.6)


@pytest.fixture(scope="module")
def gateway(gateway_for):
    return gateway_for("saxs")


def run(address, inputs, params, out: Path, split: int) -> dict:
    with Client(address, timeout=300) as c:
        return dict(c.reduce("saxs", [str(p) for p in inputs], params, str(out), split=split).summary)


def whole_and_split(address, inputs, params, tmp_path, split, shards=None):
    whole = run(address, inputs, params, tmp_path / "whole", 1)
    parts = run(address, inputs, params, tmp_path / "split", split)
    assert parts["shards"] == (split if shards is None else shards)
    assert_same_outputs(tmp_path / "whole", tmp_path / "split", whole, parts)
    return whole, parts


def _curves(path: Path) -> list[tuple[str, np.ndarray]]:
    with h5py.File(path, "r") as f:
        return [(name, f[name]["sasdata/I"][()]) for name in sorted(f) if name.startswith("sasentry")]


# -- frame series ----------------------------------------------------------------------------------
def test_frame_series_split_in_three(gateway, tmp_path):
    """Five frames of one law at different monitors; the first frame has dead pixels
    (negative), masked in every frame as in the unsharded job (masks come from the job's
    first frame, not each shard's). Cake and 2-D image from the first frame."""
    law = lambda q: guinier_sphere(q, i0=500.0, rg=25.0, background=2.0)  # noqa: E731
    monitors = [1.0, 1.5, 0.8, 2.0, 1.2]
    rng = np.random.default_rng(5)
    files = []
    for k, mon in enumerate(monitors):
        img = rng.poisson(GEO.image(law) * mon * 40).astype(np.float32) / 40
        if k == 0:
            img[10:13, 60:64] = -1  # dead pixels of frame 0 only
        files.append(write_tiff(tmp_path / f"run_001_{k:04d}.tiff", img))
    spec = tmp_path / "run.spec"
    spec.write_text("#F run\n#S 1 loopscan\n#L Time  I0\n" + "".join(f"{k} {m}\n" for k, m in enumerate(monitors)))
    params = {
        **GEO.params(),
        "mode": "azimuthal",
        "normalisation.counter": "I0",
        "integration.q_bins": 60,
        "masks.beamstop": "none",
        "outputs.cake": True,
        "outputs.image_2d": True,
        "integration.chi_bins": 24,
    }
    _whole, split = whole_and_split(gateway, [*files, spec], params, tmp_path, 3)
    assert split["frames"] == 5 and split["mode"] == "azimuthal" and split["masked_threshold"] == 12
    out = tmp_path / "split"
    curves = _curves(out / "saxs_iq.h5")
    assert [name for name, _ in curves] == [f"sasentry{k + 1:02d}_run_001_{k:04d}" for k in range(5)]
    assert {f"run_001_{k:04d}_iq.csv" for k in range(5)} | {"iq.png", "cake.nxs", "cake.png", "image_2d.h5"} <= {
        p.name for p in out.iterdir()
    }
    # every frame normalised by its own monitor: the same law
    for k in range(5):
        c = table(out / f"run_001_{k:04d}_iq.csv")
        assert np.allclose(c[:, 1], law(c[:, 0]), rtol=0.03), k


# -- kinetics -------------------------------------------------------------------------------------------
def test_kinetics_split_in_three(gateway, tmp_path):
    """Growing particles in one NeXus stack (5 frames: the first shard holds one frame, and
    mode 'auto' is still kinetics); times start at the job's first frame."""
    rgs = np.linspace(20.0, 32.0, 5)
    i0s = 2000.0 * (rgs / 20.0) ** 3
    rng = np.random.default_rng(3)
    frames = [
        rng.poisson(GEO.image(lambda q, rg=rg, i0=i0: guinier_sphere(q, i0=i0, rg=rg, background=1.0)) * 50) / 50
        for rg, i0 in zip(rgs, i0s, strict=True)
    ]
    times = 10.0 + 2.5 * np.arange(5)
    path = write_nexus_stack(tmp_path / "kin.nxs", frames, times)
    params = {**GEO.params(), "integration.q_bins": 80, "masks.beamstop": "none", "kinetics.guinier_q_max": 0.1}
    _whole, split = whole_and_split(gateway, [path], params, tmp_path, 3)
    assert split["mode"] == "kinetics" and split["frames"] == 5 and split["guinier_fits_ok"] == 5
    assert split["time_s"] == pytest.approx(list(times - times[0]))
    assert np.allclose(split["rg_A"], rgs, rtol=0.03)
    assert np.allclose(split["i0"], i0s, rtol=0.03)
    with h5py.File(tmp_path / "split" / "kinetics.nxs") as f:
        assert f["entry/intensity/I"].shape == (5, split["q_points"])
        np.testing.assert_allclose(f["entry/kinetics/rg"][()], split["rg_A"], rtol=1e-12)
        np.testing.assert_allclose(f["entry/kinetics/time"][()], times - times[0], rtol=1e-12)
    kin = table(tmp_path / "split" / "kinetics.csv")
    assert kin.shape == (5, 11) and list(kin[:, 0]) == [0, 1, 2, 3, 4]


# -- scanning map -----------------------------------------------------------------------------------------
NX, NY = 6, 5
MAP_PARAMS = {**GEO.params(), "integration.q_bins": 120, "masks.beamstop": "none", "map.peak_q_range": "0.02,0.095"}


def _scan(tmp_path: Path):
    """A 6 x 5 snake raster with jittered motors and one point (7) missing, in three files:
    (files, x, y, true peak position, frames kept)."""
    nx, ny = NX, NY
    gx, gy = np.meshgrid(np.arange(nx) * 0.05, np.arange(ny) * 0.1)
    gx[1::2] = gx[1::2, ::-1]
    rng = np.random.default_rng(4)
    xs = gx.ravel() + rng.normal(0, 0.004, nx * ny)
    ys = gy.ravel() + rng.normal(0, 0.006, nx * ny)
    truth = 0.04 + 0.1 * gx.ravel() + 0.02 * gy.ravel()
    frames = []
    for x, y, p in zip(xs, ys, truth, strict=True):
        s = (0.004 + 0.0005 * y) / FWHM_PER_SIGMA
        law = lambda q, p=p, s=s, h=200.0 + 20 * x: h * np.exp(-0.5 * ((q - p) / s) ** 2) + 30  # noqa: E731
        frames.append(rng.poisson(GEO.image(law) * 20) / 20)
    keep = np.delete(np.arange(nx * ny), 7)
    paths = [
        write_nexus_stack(
            tmp_path / f"swing_scan_{k + 1:05d}.nxs",
            [frames[j] for j in part],
            positions={"tx": xs[part], "tz": ys[part]},
        )
        for k, part in enumerate(np.array_split(keep, 3))
    ]
    return paths, xs, ys, truth, keep


def test_map_split_in_three(gateway, tmp_path):
    """A 6 x 5 snake raster with jittered motors and one point missing, in three files;
    the three shards cut across the files and rows. The map, grid and per-frame fits
    equal the unsharded job's, and recover the peak positions the frames were made with."""
    nx, ny = NX, NY
    paths, xs, _ys, truth, keep = _scan(tmp_path)
    params = MAP_PARAMS
    _whole, split = whole_and_split(gateway, paths, params, tmp_path, 3)
    assert split["mode"] == "map" and split["frames"] == nx * ny - 1
    assert (split["motor_x"], split["motor_y"]) == ("tx", "tz") and split["map_shape"] == [ny, nx]
    assert split["map_step"] == pytest.approx([0.05, 0.1], rel=0.05)
    with h5py.File(tmp_path / "split" / "map.nxs") as f:
        pos = f["entry/position/position"][()]
        err = f["entry/position/position_errors"][()]
        rows, cols = f["entry/peak_fits/grid_row"][()], f["entry/peak_fits/grid_column"][()]
        np.testing.assert_allclose(f["entry/frames/tx"][()], xs[keep], rtol=1e-12)
    assert len(set(zip(rows, cols, strict=True))) == nx * ny - 1  # one frame per node
    assert np.all(np.abs(pos[rows, cols] - truth[keep]) < 4 * err[rows, cols] + 2e-4)
    assert np.isnan(pos).sum() == 1  # the point never measured
    with h5py.File(tmp_path / "split" / "scan_iq.h5") as f:
        assert f["scan/sasdata/I"].shape[0] == nx * ny - 1


# -- the real BioCAT frame ---------------------------------------------------------------------------------
def test_biocat_single_frame_with_an_empty_shard(gateway, biocat, tmp_path):
    """One frame asked to split in two: the gateway makes no shard without a frame (one
    shard), and the result is the unsharded one."""
    tiff, spec = biocat
    _whole, split = whole_and_split(gateway, [tiff, spec], BIOCAT_PARAMS, tmp_path, 2, shards=1)
    assert split["frames"] == 1 and split["mode"] == "azimuthal" and split["intensity_units"] == "1/cm"
    assert 900 < split["masked_beamstop"] < 1400


def test_biocat_series_split_in_two(gateway, biocat, tmp_path):
    """The frame as four frames of its SPEC series (rows 0-3: their own diode and Time):
    kinetics over the real frame; each curve is the first scaled by the diode ratio."""
    tiff, spec = biocat
    files = [shutil.copyfile(tiff, tmp_path / f"GI2_A9_19_001_{k:04d}.tiff") for k in range(4)]
    _whole, split = whole_and_split(gateway, [*files, spec], BIOCAT_PARAMS, tmp_path, 2)
    assert split["mode"] == "kinetics" and split["frames"] == 4
    assert split["time_s"] == pytest.approx([0.0, 1.0509469, 2.1007709, 3.1505820], abs=1e-6)
    diode = np.array([39391, 39417, 39737, 39138], float)
    curves = [i for _, i in _curves(tmp_path / "split" / "saxs_iq.h5")]
    for k in range(1, 4):
        np.testing.assert_allclose(curves[k], curves[0] * diode[0] / diode[k], rtol=1e-6)


def test_map_merge_fits_again_on_the_jobs_q_grid(tmp_path):
    """When a block fitted its peaks on another q grid than the whole job's, combine drops
    the blocks' fits and write fits again on the job's grid: still the unsharded result
    (in-process blocks, their parts through the kit's part files)."""
    from panreduce.kit import Context
    from panreduce.kit.parts import load_part, save_part
    from panreduce_saxs.technique import SaxsPart, Technique

    paths = _scan(tmp_path)[0]
    whole, whole_out = run_saxs(paths, MAP_PARAMS, tmp_path / "whole")
    technique = Technique()
    params = technique.validate_parameters(MAP_PARAMS)
    inputs = stage(paths)
    units = list(technique.units(inputs, params))
    parts = []
    for k, (lo, hi) in enumerate(((0, 12), (12, len(units)))):
        part = technique.reduce_block(units[lo:hi], inputs, params, Context(job_id="s", scratch=tmp_path / f"s{k}"))
        save_part(tmp_path / f"part{k}.h5", part)
        parts.append(load_part(tmp_path / f"part{k}.h5", SaxsPart))
    assert parts[0].fits is not None and np.array_equal(parts[0].fit_q, parts[1].fit_q)
    parts[1].fit_q = parts[1].fit_q[:-1]  # as if fitted on a grid with one bin less
    parts[1].fits["position"][...] = 0.0
    combined = technique.combine(parts, params)
    assert combined.fits is None and len(combined.curves) == len(units)
    ctx = Context(job_id="merge", scratch=tmp_path / "merge")
    merged = technique.write(combined, params, ctx)
    outputs = {o.name: o.path for o in ctx.outputs}
    assert sorted(outputs) == sorted(whole_out)
    for name in ("map.nxs", "scan_iq.h5"):
        assert_same_h5(whole_out[name], outputs[name])
    assert body(outputs["peak_fits.csv"]) == body(whole_out["peak_fits.csv"])
    same(whole, merged, "summary")
