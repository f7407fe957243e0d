"""The technique end to end through the kit's Context: synthetic scans with known
answers (centre, attenuation, volume fraction), slabs, shards, uint16, 4-D series, and
the real tooth scan."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from tomo_synthetic import nrmse, phantom_scan, read_csv, run, write_data_exchange, write_nxtomo

from panreduce import errors
from panreduce_tomography import phantom as ph
from panreduce_tomography import recon
from panreduce_tomography.technique import Technique


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("scan")
    scan = phantom_scan(n=64, n_angles=100, n_rows=6, offset=3.6, rings=0.02, zingers=5e-4, seed=7)
    return write_data_exchange(d / "phantom.h5", scan), scan


def test_phantom_end_to_end(scan_file, tmp_path):
    path, scan = scan_file
    summary, outs, events = run(
        [path], tmp_path, ring_removal="sorting", ring_size=11, zinger_threshold=0.5, slab_rows=4
    )
    assert abs(summary["center"] - scan["center"]) < 0.5
    assert summary["center_found"] is True and summary["slices"] == 6
    assert {"tomography.nxs", "preview_row00001.png"} <= set(outs)
    assert outs["tomography.nxs"].format == "nexus" and outs["preview_row00001.png"].role == "preview"
    assert [e[0] for e in events if e[0] == "reconstruct"]  # progress per slab
    with h5py.File(outs["tomography.nxs"].path) as f:
        e = f["entry"]
        assert e.attrs["NX_class"] == "NXentry" and e["definition"][()] == b"NXtomoproc"
        assert e["instrument/source"].attrs["NX_class"] == "NXsource"
        assert e["reconstruction"].attrs["NX_class"] == "NXprocess"
        par = e["reconstruction/parameters"]
        assert par["rotation_centre"][()] == pytest.approx(summary["center"])
        assert json.loads(par["parameters_json"][()])["corrections"]["ring_removal"] == "sorting"
        d = e["data"]
        assert d.attrs["signal"] == "data" and list(d.attrs["axes"]) == ["z", "y", "x"]
        vol = d["data"][()]
        assert vol.dtype == np.float32 and vol.shape == (6, 64, 64)
        assert np.array_equal(d["z"][()], np.arange(6))
    mask = recon.circle_mask(64, 28)
    err = nrmse(vol, scan["truth"], mask)
    assert err < 0.42, err  # noise, rings and zingers included (noise-free data: 0.24)


def test_torch_backend_runs_gridrec(scan_file, tmp_path):
    """backend=torch (CPU torch here): gridrec is the torch gridding, reported as gridrec,
    and the volume equals the numpy (finufft) job's to the NUFFT accuracy."""
    pytest.importorskip("torch")
    path, scan = scan_file
    common = dict(
        center=scan["center"], slab_rows=4, ring_removal="sorting", ring_size=11, zinger_threshold=0.5, previews=0
    )
    s_t, o_t, _ = run([path], tmp_path, name="torch", device="torch-cpu", **common)
    _s_n, o_n, _ = run([path], tmp_path, name="numpy", device="cpu", **common)
    assert s_t["algorithm"] == "gridrec" and s_t["backend"].startswith("torch:")
    with h5py.File(o_t["tomography.nxs"].path) as ft, h5py.File(o_n["tomography.nxs"].path) as fn:
        vt, vn = ft["entry/data/data"][()], fn["entry/data/data"][()]
        assert ft["entry/reconstruction/parameters/backend"][()] == b"torch"
    mask = recon.circle_mask(64, 28)
    assert nrmse(vt, vn, mask) < 2e-3
    assert nrmse(vt, scan["truth"], mask) < 0.42


def test_slabs_and_shards_give_the_same_volume(scan_file, tmp_path):
    """Slab size and sharding change nothing: a job split 2 or 4 ways is merged by the
    same writer into the same files as the whole job (previews and tables too)."""
    path, scan = scan_file
    common = dict(center=scan["center"], previews=2, output_dtype="uint16")
    _, whole, _ = run([path], tmp_path, name="a", slab_rows=6, **common)
    _, small, _ = run([path], tmp_path, name="b", slab_rows=1, **common)
    with h5py.File(whole["tomography.nxs"].path) as f:
        ref, scale = f["entry/data/data"][()], f["entry/data/data"].attrs["scale_factor"]
        ref_z = f["entry/data/z"][()]
    for name, split, outs in [("b", None, small)] + [(f"s{k}", k, None) for k in (2, 4)]:
        if outs is None:
            summary, outs, _ = run([path], tmp_path, name=name, split=split, slab_rows=2, **common)
            assert summary["shards"] == split and summary["slices"] == 6
        assert set(outs) == set(whole), name
        with h5py.File(outs["tomography.nxs"].path) as f:
            d = f["entry/data/data"]
            assert d.dtype == np.uint16 and d.attrs["scale_factor"] == pytest.approx(scale, rel=1e-6)
            assert np.abs(d[()].astype(int) - ref.astype(int)).max() <= 1, name  # one quantisation step
            np.testing.assert_array_equal(f["entry/data/z"][()], ref_z)
            assert f.attrs["default"] == "entry"


def test_shards_agree_on_the_found_centre(scan_file, tmp_path):
    """Every shard finds the centre on the whole request's rows (the merge refuses parts
    that disagree), so a split job reports the whole job's centre."""
    path, scan = scan_file
    whole = run([path], tmp_path, name="w", previews=0)[0]["center"]
    split = run([path], tmp_path, name="c", split=3, previews=0)[0]["center"]
    assert split == pytest.approx(whole, abs=1e-9) and abs(whole - scan["center"]) < 0.5


def test_one_slice_split_four_ways(scan_file, tmp_path):
    """One slice over four shards: three shards are empty, the merge writes the slice."""
    path, _ = scan_file
    s1, o1, _ = run([path], tmp_path, name="one", slice_start=2, slice_stop=3, previews=1)
    s4, o4, _ = run([path], tmp_path, name="four", split=4, slice_start=2, slice_stop=3, previews=1)
    assert s4["slices"] == s1["slices"] == 1 and s4["shards"] == 1 and set(o4) == set(o1)
    with h5py.File(o1["tomography.nxs"].path) as a, h5py.File(o4["tomography.nxs"].path) as b:
        np.testing.assert_allclose(b["entry/data/data"][()], a["entry/data/data"][()], atol=1e-6)


def test_uint16_output_is_rescaled(scan_file, tmp_path):
    path, scan = scan_file
    _, f32, _ = run([path], tmp_path, name="f", center=scan["center"], previews=0)
    _, u16, _ = run([path], tmp_path, name="u", center=scan["center"], previews=0, output_dtype="uint16")
    with h5py.File(f32["tomography.nxs"].path) as a, h5py.File(u16["tomography.nxs"].path) as b:
        ref = a["entry/data/data"][()]
        d = b["entry/data/data"]
        assert d.dtype == np.uint16 and d[()].max() == 65535
        value = d.attrs["add_offset"] + d.attrs["scale_factor"] * d[()].astype(np.float64)
        mask = recon.circle_mask(64, 32)
        assert np.abs(value - ref)[:, mask].max() <= d.attrs["scale_factor"]


def test_algorithms_and_corrections_run_through_the_technique(tmp_path):
    scan = phantom_scan(n=48, n_angles=60, n_rows=4, offset=-2.0, seed=9)
    path = write_nxtomo(tmp_path / "scan.nxs", scan)
    mask = recon.circle_mask(48, 20)
    for algo, extra in [
        ("fbp", {"filter": "hann"}),
        ("sirt", {"iterations": 60}),
        ("cgls", {"iterations": 8}),
        ("gridrec", {"flat_field": "dynamic", "dynamic_components": 2}),
    ]:
        s, outs, _ = run([path], tmp_path, name=algo, algorithm=algo, previews=0, **extra)
        assert abs(s["center"] - scan["center"]) < 0.5, (algo, s["center"])
        with h5py.File(outs["tomography.nxs"].path) as f:
            vol = f["entry/data/data"][()]
        assert nrmse(vol, scan["truth"], mask) < 0.45, algo
    s, outs, _ = run(
        [path],
        tmp_path,
        name="pag",
        phase_retrieval="paganin",
        pixel_size_um=1.0,
        distance_m=0.05,
        energy_kev=30.0,
        delta_beta=50.0,
        previews=0,
        center=scan["center"],
    )
    with h5py.File(outs["tomography.nxs"].path) as f:
        vol = f["entry/data/data"][()]
    # Paganin low-passes the slice: mean attenuation kept, noise (pixel-to-pixel) down
    assert vol[:, mask].mean() == pytest.approx(scan["truth"][:, mask].mean(), rel=0.1)


def test_series_with_segmentation(tmp_path):
    """Three spheres, one of which grows between two time points: volume fraction and
    object sizes from the quantification tables follow the truth."""
    n, rows = 48, 12
    paths, truths = [], []
    for t, r3 in enumerate((5.0, 8.0)):
        ell = [
            ph.Ellipsoid(0.05, (6, 6, 6), (-10, -8, 0)),
            ph.Ellipsoid(0.05, (4, 4, 4), (10, -6, 1)),
            ph.Ellipsoid(0.05, (r3, r3, r3), (0, 10, 0)),
        ]
        scan = phantom_scan(n=n, n_angles=80, n_rows=rows, offset=1.0, seed=t, ellipsoids=ell, flux=1e5)
        paths.append(write_data_exchange(tmp_path / f"t{t}.h5", scan))
        truths.append(scan["truth"])
    summary, outs, _ = run(paths, tmp_path, segment=True, center=scan["center"], previews=1)
    with h5py.File(outs["tomography.nxs"].path) as f:
        assert f["entry/data/data"].shape == (2, rows, n, n)
        assert list(f["entry/data"].attrs["axes"]) == ["time", "z", "y", "x"]
    table = read_csv(outs["quantification.csv"].path)
    assert [int(r["object_count"]) for r in table] == [3, 3]
    mask = recon.circle_mask(n, n / 2)
    for row, truth in zip(table, truths, strict=True):
        true_frac = (truth > 0.025)[:, mask].mean()
        assert float(row["volume_fraction"]) == pytest.approx(true_frac, rel=0.15)
    assert float(table[1]["volume_fraction"]) > float(table[0]["volume_fraction"])
    objects = read_csv(outs["objects.csv"].path)
    grown = [float(o["voxels"]) for o in objects if float(o["centroid_y"]) > n // 2 + 5]
    assert len(grown) == 2 and grown[1] > 2 * grown[0]
    assert "size_distribution.csv" in outs
    assert summary["quantification"][1]["object_count"] == 3


@pytest.mark.data
def test_real_tooth_scan(dataset, tmp_path):
    summary, outs, _ = run(
        [dataset("tomo/tooth/tooth.h5")], tmp_path, output_dtype="uint16", previews=1, ring_removal="sorting"
    )
    assert 294.5 < summary["center"] < 296.5
    with h5py.File(outs["tomography.nxs"].path) as f:
        vol = (
            f["entry/data/data"][()] * f["entry/data/data"].attrs["scale_factor"]
            + f["entry/data/data"].attrs["add_offset"]
        )
    # the tooth (attenuating) is in the middle; air around it is near zero
    n = vol.shape[-1]
    centre_val = np.median(vol[0, n // 2 - 60 : n // 2 + 60, n // 2 - 60 : n // 2 + 60])
    air = np.median(vol[0, 40:80, n // 2 - 20 : n // 2 + 20])
    assert centre_val > 5 * abs(air)


def test_bad_parameters_and_inputs(scan_file, tmp_path):
    path, _ = scan_file
    with pytest.raises(errors.InvalidParameters) as err:
        run([path], tmp_path, slice_start=50)
    assert err.value.violations[0].field == "slice_start"
    with pytest.raises(errors.InvalidParameters):
        Technique.validate_parameters({"algorithm": "art"})
    with pytest.raises(errors.InvalidParameters) as err:
        run([path], tmp_path, name="x", center=1e6)
    assert err.value.violations[0].field == "axis.center"
    other = write_data_exchange(tmp_path / "other.h5", phantom_scan(n=32, n_angles=10, n_rows=2))
    with pytest.raises(errors.InvalidInput, match=r"other\.h5"):
        run([path, other], tmp_path, name="y")
