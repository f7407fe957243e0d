"""The technique end to end through the kit's Context: hit finding on synthetic frames
with a known answer (hits, the hits-only CXI file and its peak lists, the table, the
powder), the real CSPAD hits and stream, frame readers (Eiger master, CBF), attacks, and
a sharded job through a real gateway equal to the whole one."""

from __future__ import annotations

import csv
import json

import fabio
import gemmi
import h5py
import numpy as np
import pytest
from sx_synthetic import GEOM, SHAPE, background, render, spots, write_stack

from panreduce import kit
from panreduce.client import Client
from panreduce.errors import InvalidInput, InvalidParameters, InvalidRequest
from panreduce.storage import Stores
from panreduce_serial_crystallography.technique import Technique

PF = {
    "threshold": 60,
    "min_snr": 5,
    "min_pix_count": 2,
    "max_pix_count": 30,
    "local_bg_radius": 3,
    "min_peaks": 10,
    "block_frames": 3,
}


def _run(paths, tmp_path, **raw):
    """(summary, output folder) of one in-process job (kit.run)."""
    out = tmp_path / "job" / "out"
    result = kit.run(Technique, [str(p) for p in paths], raw, out, stores=Stores(tmp_path / "job" / "store"))
    json.dumps(result.summary, allow_nan=False)
    return result.summary, out


def _frames(tmp_path, n=8, seed=5):
    """n frames; even ones are hits with 12-30 spots, odd ones have 0-3 spots."""
    rng = np.random.default_rng(seed)
    frames, truth = [], []
    for i in range(n):
        c = spots(rng, int(rng.integers(12, 30)) if i % 2 == 0 else int(rng.integers(0, 4)))
        frames.append(render(c, rng.uniform(200, 1500, len(c)), rng=rng))
        truth.append(c)
    mask = np.zeros(SHAPE, np.uint16)
    mask[150:152, 10:12] = 1
    geom = tmp_path / "det.geom"
    geom.write_text(GEOM)
    return write_stack(tmp_path / "run.cxi", np.array(frames), mask), geom, truth


def test_hit_finding_with_known_answer(tmp_path):
    cxi, geom, truth = _frames(tmp_path)
    summary, out = _run([cxi, geom], tmp_path, **PF)
    assert summary["n_frames"] == 8 and summary["n_hits"] == 4 and summary["hit_rate"] == 0.5
    rows = list(csv.DictReader(line for line in open(out / "frames.csv") if not line.startswith("#")))
    assert [int(r["hit"]) for r in rows] == [1, 0] * 4
    # photon energy from the geometry's value; resolution of the farthest peak
    assert {float(r["photon_energy_ev"]) for r in rows} == {9000.0}
    for r in rows[::2]:
        d = float(r["resolution_angstrom"])
        # the farthest pixel of the detector is at ~ 165 px = 16.5 mm at 100 mm: d > 4.4 Å
        assert 4.4 < d < 30
    with h5py.File(out / "hits.cxi", "r") as f:
        data = f["entry_1/data_1/data"]
        assert data.shape == (4, *SHAPE)
        res = f["entry_1/result_1"]
        n = res["nPeaks"][()]
        assert f["entry_1/source_frame"][()].tolist() == [0, 2, 4, 6]
        for k, frame in enumerate([0, 2, 4, 6]):
            assert n[k] == int(rows[frame]["n_peaks"])
            fs = res["peakXPosRaw"][k, : n[k]]
            ss = res["peakYPosRaw"][k, : n[k]]
            found = sum(np.hypot(fs - a, ss - b).min() < 1.5 for a, b in truth[frame])
            assert found >= 0.9 * len(truth[frame]) and n[k] <= len(truth[frame]) + 1
            assert (res["peakSNR"][k, : n[k]] >= 5).all()
            assert (res["peakXPosRaw"][k, n[k] :] == 0).all()  # padding
        with h5py.File(cxi, "r") as src:
            np.testing.assert_array_equal(data[1], src["entry_1/data_1/data"][2])
        assert f["entry_1/data_1/mask"][150, 10] == 1
    assert (out / "hits.lst").read_text().splitlines() == [f"hits.cxi //{i}" for i in range(4)]
    assert "peak_list = /entry_1/result_1" in (out / "hits.geom").read_text()
    with h5py.File(out / "powder.h5", "r") as f:
        assert int(f["entry/n_hits"][()]) == 4
        assert f["entry/sum"][()].mean() == pytest.approx(4 * background().mean(), rel=0.2)
    for png in ("hit_rate.png", "powder_max.png", "powder_sum.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_export_and_frame_limits(tmp_path):
    cxi, geom, _ = _frames(tmp_path, n=3)
    summary, out = _run([cxi, geom], tmp_path, export_hits=False, **PF)
    assert not (out / "hits.cxi").exists() and summary["n_frames"] == 3


def test_eiger_master_and_cbf(tmp_path):
    rng = np.random.default_rng(2)
    frames = np.array([render(spots(rng, 15), np.full(15, 900.0), rng=rng) for _ in range(4)])
    for i, part in enumerate((frames[:3], frames[3:])):
        with h5py.File(tmp_path / f"x_data_{i + 1:06d}.h5", "w") as f:
            f["entry/data/data"] = part.astype(np.uint32)
    with h5py.File(tmp_path / "x_master.h5", "w") as f:
        for i in range(2):
            f[f"entry/data/data_{i + 1:06d}"] = h5py.ExternalLink(f"x_data_{i + 1:06d}.h5", "entry/data/data")
    geom = tmp_path / "eiger.geom"
    geom.write_text(GEOM.replace("/entry_1/data_1/data", "/entry/data"))
    summary, out = _run([tmp_path / "x_master.h5", geom], tmp_path / "e", **PF)
    assert summary["n_frames"] == 4 and summary["n_hits"] == 4
    cbf_dir = tmp_path / "cbf"
    cbf_dir.mkdir()
    paths = []
    for i in range(2):
        p = cbf_dir / f"img_{i}.cbf"
        fabio.cbfimage.CbfImage(data=frames[i].astype(np.int32)).write(str(p))
        paths.append(p)
    g2 = cbf_dir / "det.geom"
    g2.write_text(GEOM)
    summary, out = _run([*paths, g2], tmp_path / "c", **PF)
    assert summary["n_frames"] == 2 and summary["n_hits"] == 2
    rows = list(csv.DictReader(line for line in open(out / "frames.csv") if not line.startswith("#")))
    assert [r["file"] for r in rows] == ["img_0.cbf", "img_1.cbf"]


def test_attacks(tmp_path):
    cxi, geom, _ = _frames(tmp_path, n=2)
    with pytest.raises(InvalidParameters, match="geometry"):
        _run([cxi, geom], tmp_path / "a", geometry="other.geom")
    with pytest.raises(InvalidParameters):
        Technique.validate_parameters({"geometry": "../../etc/passwd"})
    with pytest.raises(InvalidParameters):
        Technique.validate_parameters({"data_path": "entry; rm"})
    with pytest.raises(InvalidParameters):
        Technique.validate_parameters({"block_frames": 10**6})
    wrong = tmp_path / "wrong.geom"
    wrong.write_text(GEOM.replace("max_ss = 191", "max_ss = 200"))
    with pytest.raises(InvalidInput, match="shape"):
        _run([cxi, wrong], tmp_path / "b")
    broken = tmp_path / "broken.geom"
    broken.write_text("nonsense\n")
    with pytest.raises(InvalidInput, match=r"broken.geom"):
        _run([cxi, broken], tmp_path / "c")
    junk = tmp_path / "junk.cxi"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(InvalidInput, match=r"junk.cxi"):
        _run([junk, geom], tmp_path / "d")
    with pytest.raises(InvalidRequest):
        _run([geom], tmp_path / "e")
    bad_stream = tmp_path / "x.stream"
    bad_stream.write_text("CrystFEL stream format 2.3\n----- Begin chunk -----\n")
    with pytest.raises(InvalidInput, match=r"x.stream"):
        _run([bad_stream], tmp_path / "f")
    with pytest.raises(InvalidParameters):
        Technique.validate_parameters({"point_group": "m m m; drop"})


@pytest.mark.data
def test_acceptance_cspad(dataset, tmp_path):
    cxi = dataset("sfx-thermolysin-cspad/thermolysin_cspad_4hits.cxi")
    geom = dataset("sfx-thermolysin-cspad/thermolysin_cspad_derived.geom")
    summary, out = _run(
        [cxi, geom],
        tmp_path,
        geometry=geom.name,
        threshold=200,
        min_snr=6,
        min_pix_count=2,
        max_pix_count=30,
        local_bg_radius=3,
        min_peaks=10,
    )
    assert summary["n_hits"] == 4
    rows = list(csv.DictReader(line for line in open(out / "frames.csv") if not line.startswith("#")))
    # per-frame photon energies from /LCLS/photon_energy_eV
    assert [float(r["photon_energy_ev"]) for r in rows] == pytest.approx([9742.5363, 9743.7843, 9748.1357, 9755.4914])
    with h5py.File(out / "hits.cxi", "r") as f:
        assert f["entry_1/data_1/data"].shape == (4, 1480, 1552)
        assert f["LCLS/photon_energy_eV"][()] == pytest.approx([9742.536, 9743.784, 9748.136, 9755.491], abs=1e-3)
        assert (f["entry_1/result_1/nPeaks"][()] >= 50).all()


@pytest.mark.data
def test_acceptance_stream(dataset, tmp_path):
    stream = dataset("crystfel-stream/test.stream")
    summary, out = _run([stream, dataset("crystfel-stream/pilatus.geom")], tmp_path, point_group="mmm")
    assert summary["n_crystals"] == 32 and summary["n_observations"] == 7966
    assert summary["space_group"] == "C 2 2 2"
    mtz = gemmi.read_mtz_file(str(out / "merged.mtz"))
    assert mtz.nreflections == summary["n_unique"]
    assert mtz.column_with_label("IMEAN") is not None and mtz.column_with_label("SIGIMEAN") is not None
    rows = list(csv.DictReader(line for line in open(out / "foms.csv") if not line.startswith("#")))
    assert rows[-1]["shell"] == "overall" and len(rows) == 11
    assert float(rows[-1]["multiplicity"]) > 2
    hkl = (out / "merged.hkl").read_text().splitlines()
    assert hkl[0] == "CrystFEL reflection list version 2.0" and hkl[1] == "Symmetry: mmm"


@pytest.fixture(scope="module")
def gateway(gateway_for):
    return gateway_for("serial_crystallography")


def test_sharded_equals_whole(gateway, tmp_path):
    cxi, geom, _ = _frames(tmp_path, n=7)
    params = {k: v for k, v in PF.items()}
    with Client(gateway, timeout=300) as c:
        whole = dict(
            c.reduce("serial_crystallography", [str(cxi), str(geom)], params, str(tmp_path / "w"), split=1).summary
        )
        parts = dict(
            c.reduce("serial_crystallography", [str(cxi), str(geom)], params, str(tmp_path / "s"), split=3).summary
        )
    assert parts["shards"] == 3 and parts["n_hits"] == whole["n_hits"] == 4

    def table(d):
        return [line for line in open(d / "frames.csv") if not line.startswith("#")]

    assert table(tmp_path / "w") == table(tmp_path / "s")
    with h5py.File(tmp_path / "w/hits.cxi", "r") as a, h5py.File(tmp_path / "s/hits.cxi", "r") as b:
        for name in (
            "entry_1/data_1/data",
            "entry_1/result_1/nPeaks",
            "entry_1/result_1/peakXPosRaw",
            "entry_1/result_1/peakTotalIntensity",
            "entry_1/source_frame",
        ):
            np.testing.assert_array_equal(a[name][()], b[name][()])
    with h5py.File(tmp_path / "w/powder.h5", "r") as a, h5py.File(tmp_path / "s/powder.h5", "r") as b:
        np.testing.assert_allclose(a["entry/sum"][()], b["entry/sum"][()])
        np.testing.assert_array_equal(a["entry/max"][()], b["entry/max"][()])
    assert (tmp_path / "s/hits.lst").read_text() == (tmp_path / "w/hits.lst").read_text()
