"""The saxs technique end to end on synthetic inputs: absolute scale from a standard with
background subtraction, kinetics from a NeXus stack, a multi-file scan map, errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import read_table, run_saxs
from synthetic import Geo, guinier_sphere, write_nexus_stack, write_tiff

from panreduce import errors
from panreduce.nxcansas import read_nxcansas
from panreduce_saxs.analysis import FWHM_PER_SIGMA

GEO = Geo(shape=(120, 140), pixel_um=172.0, distance_mm=1000.0, wavelength_A=1.0, cx=70.3, cy=60.6)


def _curve(outputs, name):
    return read_table(outputs[name])


def test_absolute_scale_from_water_with_background(tmp_path):
    """sample = (particles + cell) and cell measured apart; water in the same cell gives the
    scale; the result is the particles' law in 1/cm within 1%."""
    law = lambda q: guinier_sphere(q, i0=0.8, rg=30.0, background=0.0)  # noqa: E731  1/cm
    k = 5e5  # counts per (1/cm) per unit monitor and cm thickness
    cell = lambda q: np.full_like(q, 0.004)  # noqa: E731  cell scattering (1/cm equivalent)
    mon_s, mon_b, mon_w = 2.0, 1.5, 3.0
    t = 0.1  # cm
    sample = GEO.image(lambda q: (law(q) * t + cell(q) * t) * k * mon_s)
    empty = GEO.image(lambda q: cell(q) * t * k * mon_b)
    water = GEO.image(lambda q: (0.01632 * t + cell(q) * t) * k * mon_w)
    spec = tmp_path / "run.spec"
    spec.write_text("#F run\n#S 1 loopscan\n#L Time  I0\n0 2.0\n1 1.5\n2 3.0\n")
    files = [write_tiff(tmp_path / f"run_001_000{j}.tiff", img) for j, img in enumerate((sample, empty, water))]
    params = {
        **GEO.params(),
        "normalisation.counter": "I0",
        "normalisation.thickness_mm": 1.0,
        "absolute.standard_thickness_mm": 1.0,
        "background.file": files[1].name,
        "absolute.standard_file": files[2].name,
        "absolute.standard_reference": "water",
        "absolute.standard_background_file": files[1].name,
        "integration.q_bins": 80,
        "masks.beamstop": "none",
    }
    summary, outputs = run_saxs([*files, spec], params, tmp_path / "job")
    assert summary["frames"] == 1 and summary["intensity_units"] == "1/cm"
    # water gives the scale 1/k (within its own error)
    assert summary["absolute_scale"] == pytest.approx(1 / k, rel=0.005)
    curve = _curve(outputs, "run_001_0000_iq.csv")
    assert np.allclose(curve[:, 1], law(curve[:, 0]), rtol=0.01, atol=1e-5)


def test_bad_requests_are_named(tmp_path):
    img = write_tiff(tmp_path / "a.tiff", GEO.image(guinier_sphere))
    with pytest.raises(errors.InvalidParameters) as err:
        run_saxs([img], {"geometry.distance_mm": 1000}, tmp_path / "j1")
    assert {v.field for v in err.value.violations} == {
        "geometry.wavelength_angstrom",
        "geometry.beam_center_px",
        "geometry.pixel_um",
    }
    with pytest.raises(errors.InvalidParameters) as err:
        run_saxs([img], {**GEO.params(), "normalisation.counter": "diode"}, tmp_path / "j2")
    assert [v.field for v in err.value.violations] == ["normalisation.counter"]
    with pytest.raises(errors.InvalidParameters) as err:
        run_saxs([img], {**GEO.params(), "mode": "map"}, tmp_path / "j3")
    assert [v.field for v in err.value.violations] == ["map.peak_q_range"]
    with pytest.raises(errors.InvalidParameters) as err:
        run_saxs([img], {**GEO.params(), "background.file": "nope.tiff"}, tmp_path / "j4")
    assert [v.field for v in err.value.violations] == ["background.file"]
    with pytest.raises(errors.InvalidParameters) as err:
        run_saxs([img], {**GEO.params(), "integration.q_range": "0.3,0.1"}, tmp_path / "j5")
    assert [v.field for v in err.value.violations] == ["integration.q_range"]
    # the old flat names are refused, naming the groups
    with pytest.raises(errors.InvalidParameters) as err:
        run_saxs([img], {"distance_mm": 1000, "geometry": {"q_bins": 5}}, tmp_path / "j7")
    assert sorted(v.field for v in err.value.violations) == ["distance_mm", "geometry.q_bins"]
    why = {v.field: v.description for v in err.value.violations}
    assert "geometry" in why["distance_mm"]  # the allowed names: the groups
    assert "distance_mm" in why["geometry.q_bins"]  # the group's own fields
    other = write_tiff(tmp_path / "b.tiff", np.ones((10, 10)))
    with pytest.raises(errors.InvalidInput, match=r"b\.tiff"):
        run_saxs([img, other], GEO.params(), tmp_path / "j6")


def test_kinetics_from_a_nexus_stack(tmp_path):
    """Particles growing from Rg 20 to 35 Å: Guinier Rg and I(0) per frame, geometry read
    from the file's NXdetector/NXmonochromator, time from its NXdata."""
    rgs = np.linspace(20.0, 35.0, 6)
    i0s = 2000.0 * (rgs / 20.0) ** 3
    frames = [
        GEO.image(lambda q, rg=rg, i0=i0: guinier_sphere(q, i0=i0, rg=rg, background=1.0))
        for rg, i0 in zip(rgs, i0s, strict=True)
    ]
    rng = np.random.default_rng(2)
    frames = [rng.poisson(f * 50).astype(np.float32) / 50 for f in frames]  # high counts
    path = tmp_path / "kin.nxs"
    times = 10.0 + 2.5 * np.arange(6)
    write_nexus_stack(path, frames, times, geo=GEO)
    summary, outputs = run_saxs(
        [path],
        {"mode": "kinetics", "integration.q_bins": 100, "masks.beamstop": "none", "kinetics.guinier_q_max": 0.1},
        tmp_path / "job",
    )
    assert summary["mode"] == "kinetics" and summary["frames"] == 6
    assert summary["time_s"] == pytest.approx(list(times - times[0]))
    assert summary["guinier_fits_ok"] == 6
    assert np.allclose(summary["rg_A"], rgs, rtol=0.03)
    assert np.allclose(summary["i0"], i0s, rtol=0.03)
    inv = np.array(summary["invariant"])
    assert np.all(np.diff(inv) > 0)  # more scattering matter, more invariant
    assert {"kinetics.csv", "kinetics.png", "kinetics.nxs", "saxs_iq.h5"} <= set(outputs)
    with h5py.File(outputs["kinetics.nxs"]) as f:
        assert f["entry/intensity/I"].shape == (6, summary["q_points"])
        assert np.allclose(f["entry/kinetics/rg"][()], summary["rg_A"])
    assert len(read_nxcansas(outputs["saxs_iq.h5"])) == 6


def _scan(tmp_path, truth_pos, xs, ys, files=3, drop=None):
    """A multi-file scan sharing a root name: Gaussian peak whose position/width/height
    vary over the sample, frames on a jittered snake raster."""
    rng = np.random.default_rng(11)
    frames = []
    for x, y, p in zip(xs, ys, truth_pos, strict=True):
        width = 0.004 + 0.0005 * y
        height = 200.0 + 20 * x
        law = lambda q, p=p, w=width, h=height: h * np.exp(-0.5 * ((q - p) / (w / FWHM_PER_SIGMA)) ** 2) + 30  # noqa: E731
        frames.append(rng.poisson(GEO.image(law) * 20).astype(np.float32) / 20)
    idx = np.arange(len(frames))
    if drop is not None:
        idx = np.delete(idx, drop)
    paths = []
    for k, part in enumerate(np.array_split(idx, files)):
        path = tmp_path / f"swing_scan_{k + 1:05d}.nxs"
        write_nexus_stack(path, [frames[j] for j in part], None, positions={"tx": xs[part], "tz": ys[part]})
        paths.append(path)
    return paths


def test_scan_map_recovers_the_peak_map(tmp_path):
    nx, ny = 6, 5
    gx, gy = np.meshgrid(np.arange(nx) * 0.05, np.arange(ny) * 0.1)
    gx[1::2] = gx[1::2, ::-1]  # snake
    rng = np.random.default_rng(4)
    xs = gx.ravel() + rng.normal(0, 0.004, nx * ny)  # actual motor positions: jittered
    ys = gy.ravel() + rng.normal(0, 0.006, nx * ny)
    truth = 0.04 + 0.1 * gx.ravel() + 0.02 * gy.ravel()  # 0.04 .. 0.073 1/Å (q_max 0.099)
    drop = 7
    paths = _scan(tmp_path, truth, xs, ys, drop=drop)
    params = {**GEO.params(), "integration.q_bins": 150, "masks.beamstop": "none", "map.peak_q_range": "0.02,0.095"}
    summary, outputs = run_saxs(paths, params, tmp_path / "job")
    assert summary["mode"] == "map" and summary["frames"] == nx * ny - 1
    assert (summary["motor_x"], summary["motor_y"]) == ("tx", "tz")
    assert summary["map_shape"] == [ny, nx]
    assert summary["map_step"] == pytest.approx([0.05, 0.1], rel=0.05)
    with h5py.File(outputs["map.nxs"]) as f:
        pos = f["entry/position/position"][()]
        err = f["entry/position/position_errors"][()]
        assert f["entry/position"].attrs["signal"] == "position"
        assert np.allclose(f["entry/position/tx"][()], np.arange(nx) * 0.05, atol=0.01)
        fits = f["entry/peak_fits"]
        rows, cols = fits["grid_row"][()], fits["grid_column"][()]
        assert f["entry/frames/I"].shape[0] == nx * ny - 1
        assert "parameters" in f["entry/reduction"]
    truth_kept = np.delete(truth, drop)
    # every measured point in its own grid cell, recovered within errors
    assert len(set(zip(rows, cols, strict=True))) == nx * ny - 1
    got = pos[rows, cols]
    assert np.all(np.abs(got - truth_kept) < 4 * err[rows, cols] + 2e-4)
    assert np.nanmax(err) < 1e-3
    # the point never measured stays empty
    assert np.isnan(pos).sum() == 1
    ascii_pos = np.loadtxt(outputs["map_position.txt"])
    assert np.allclose(ascii_pos, pos, equal_nan=True, rtol=1e-6)
    assert {"map_fwhm.png", "map_height.txt", "peak_fits.csv", "scan_iq.h5"} <= set(outputs)
    (series,) = read_nxcansas(outputs["scan_iq.h5"])
    assert series.i.shape[0] == nx * ny - 1
    # split in two (shards of contiguous frames, then their merge): the same map
    split, split_out = run_saxs(paths, params, tmp_path / "split", split=2)
    assert split["shards"] == 2 and split["frames"] == nx * ny - 1
    with h5py.File(split_out["map.nxs"]) as f:
        np.testing.assert_allclose(f["entry/position/position"][()], pos, rtol=1e-9, equal_nan=True)


def test_cake_and_2d_image_outputs(tmp_path):
    img = write_tiff(tmp_path / "iso.tiff", GEO.image(lambda q: guinier_sphere(q, background=10)))
    _summary, outputs = run_saxs(
        [img],
        {
            **GEO.params(),
            "outputs.cake": True,
            "outputs.image_2d": True,
            "integration.chi_bins": 36,
            "integration.q_bins": 50,
            "masks.beamstop": "none",
        },
        tmp_path / "job",
    )
    with h5py.File(outputs["cake.nxs"]) as f:
        cake = f["entry/cake/I"][()]
        q = f["entry/cake/Q"][()]
    assert cake.shape == (36, 50)
    # isotropic: every χ row where pixels exist is the same law
    ratio = cake / guinier_sphere(q, background=10)[None, :]
    assert np.nanmax(np.abs(ratio - 1)) < 0.05
    (two_d,) = [c for c in [outputs["image_2d.h5"]]]
    with h5py.File(two_d) as f:
        (name,) = [k for k in f if k.startswith("sasentry")]
        i2 = f[name]["sasdata/I"][()]
        qx, qy = f[name]["sasdata/Qx"][()], f[name]["sasdata/Qy"][()]
    qq = np.hypot(qx, qy)
    assert np.allclose(qq, GEO.q, rtol=1e-4)
    assert np.allclose(i2, guinier_sphere(GEO.q, background=10), rtol=1e-4)
