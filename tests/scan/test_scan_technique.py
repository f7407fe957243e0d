"""The scan technique end to end: load + reduce through the kit's Context."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from scan_synthetic import synthetic_counts, write_i16_file

from panreduce import kit
from panreduce.errors import InvalidInput, InvalidParameters
from panreduce.storage import Stores
from panreduce_scan.technique import Technique

BATCH = [f"i16-scans/{n}.nxs" for n in range(794932, 794937)]


class _Job:
    """A finished kit.run job: its outputs by name (provenance.json aside) and folder."""

    def __init__(self, result: kit.Result, out_dir: Path) -> None:
        self.result = result
        self.out_dir = out_dir
        self.outputs = [
            SimpleNamespace(name=o.uri.rsplit("/", 1)[1], path=Path(o.uri), format=o.format, role=o.role)
            for o in result.outputs
            if o.role != "provenance"
        ]


def _run(paths, tmp_path, shard=None, **raw):
    events = []
    out = tmp_path / "out"
    result = kit.run(
        Technique,
        [str(p) for p in paths],
        raw,
        out,
        shard=shard,
        stores=Stores(tmp_path / "store"),
        progress=lambda stage, frac, msg: events.append((stage, frac)),
    )
    json.dumps(result.summary, allow_nan=False)  # JSON-serialisable, no NaN
    return result.summary, _Job(result, out), events


def _check_nxdata(group: h5py.Group) -> None:
    assert group.attrs["NX_class"] == "NXdata"
    signal = group.attrs["signal"]
    axes = list(group.attrs["axes"])
    assert signal in group and all(a in group for a in axes)
    assert group[signal].shape == group[axes[0]].shape


@pytest.mark.data
def test_batch_of_rocking_curves(dataset, tmp_path):
    paths = [dataset(n) for n in BATCH]
    summary, ctx, events = _run(paths, tmp_path)
    assert summary["n_scans"] == 5 and summary["series_axis"] == "spara"
    # the rocking curves are far sharper-tailed than any of the models: chi^2 is thousands
    # of times counting statistics and the pseudo-Voigt's tails pull the background
    # negative by many sigma; a scientist flags both, and so must the reduction
    assert summary["n_flagged"] == 5
    for scan in summary["scans"]:
        assert scan["axis"] == "eta" and scan["signal"] == "roi2_sum"
        assert "poor_fit" in scan["flags"] and scan["chi2_reduced"] > 1000
        assert "negative_background" in scan["flags"]
        assert not {"edge", "flat", "unfittable", "outside_range"} & set(scan["flags"])
        # a rocking curve centred in the 29.71..30.31 deg scan, known to ~0.001 deg
        assert 29.9 < scan["center"] < 30.1 and 0 < scan["center_err"] < 0.005
        # mosaic width of hundredths of a degree, resolved by the 0.01 deg step
        assert 0.03 < scan["fwhm"] < 0.2 and scan["fwhm_err"] < 0.1 * scan["fwhm"]
        assert scan["area"] > 10 * scan["area_err"] > 0
        assert scan["transmission"] == pytest.approx(6.167e-5, rel=1e-3)
    # the Bragg angle drifts monotonically as the beam moves along the sample
    centers = [row["center"] for row in summary["series"]]
    assert centers == sorted(centers) and centers[-1] - centers[0] > 0.02

    outputs = {o.name: o for o in ctx.outputs}
    assert {"scans.nxs", "scans.csv", "series.png"} <= set(outputs)
    assert {o.role for o in outputs.values()} == {"result", "table", "preview"}
    assert sum(o.format == "png" for o in outputs.values()) == 6
    for o in outputs.values():
        assert o.path.is_file() and o.path.stat().st_size > 0
        assert o.path.is_relative_to(ctx.out_dir)
    assert outputs["series.png"].path.read_bytes()[:4] == b"\x89PNG"

    with h5py.File(outputs["scans.nxs"].path) as f:
        entries = [k for k in f if f[k].attrs.get("NX_class") == "NXentry"]
        assert sorted(entries) == [f"scan_{n}" for n in range(794932, 794937)] + ["series"]
        assert f.attrs["default"] in f
        e = f["scan_794934"]
        _check_nxdata(e["data"])
        _check_nxdata(e["fit_curve"])
        assert e["data"].attrs["axes"][0] == "eta"
        assert e["data/eta"].attrs["units"] == "deg"
        assert "fit" in list(e["data"].attrs["auxiliary_signals"])
        i = np.asarray(e["data/intensity"])
        # normalised: roi2_sum / Transmission / count_time * 300 / rc
        raw = np.asarray(e["data/counts"])
        rc = np.asarray(e["input/ring_current"])
        assert i == pytest.approx(raw / float(e["input/transmission"][()]) * 300.0 / rc)
        proc = e["peak_fit"]
        assert proc.attrs["NX_class"] == "NXprocess"
        row = next(s for s in summary["scans"] if s["scan"] == 794934)
        assert proc["center"][()] == pytest.approx(row["center"])
        assert proc["center_errors"][()] == pytest.approx(row["center_err"])
        assert proc["chi2_reduced"][()] > 0
        _check_nxdata(f["series/data"])
        assert f["series/data"].attrs["axes"][0] == "spara"

    with open(outputs["scans.csv"].path) as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))  # provenance lines
    assert [int(r["scan"]) for r in rows] == list(range(794932, 794937))
    assert all(r["axis"] == "eta" and r["series_axis"] == "spara" for r in rows)
    assert float(rows[2]["center"]) == pytest.approx(row["center"])
    assert [stage for stage, _ in events].count("fit") >= 5


@pytest.mark.data
def test_single_hkl_scan_keys_at_top_level(dataset, tmp_path):
    summary, ctx, _ = _run([dataset("i16-scans/782761.nxs")], tmp_path, model="gaussian")
    assert summary["n_scans"] == 1 and summary["axis"] == "k" and summary["scan"] == 782761
    # the k scan starts on the feature (k = 0.5) and then climbs on a rising background:
    # no complete peak in the scan, which the flags must say
    assert 0.5 <= summary["center"] <= 0.9 and math.isfinite(summary["center_err"])
    assert "edge" in summary["flags"] or "flat" in summary["flags"]
    assert summary["n_flagged"] == 1
    assert {o.name for o in ctx.outputs} == {"scans.nxs", "scans.csv", "782761.png"}


@pytest.mark.data
def test_2024_scan_is_flat(dataset, tmp_path):
    """7 photons in 21 points at 9.7 mA: there is no peak to fit, the scan is flagged."""
    summary, _, _ = _run([dataset("i16-scans/hdfmap_1040323.nxs")], tmp_path)
    assert summary["axis"] == "l" and summary["signal"] == "roi2.total"
    assert "flat" in summary["flags"]
    assert summary["ring_current"] == pytest.approx(9.72, abs=0.01)


@pytest.mark.data
def test_two_scans_series_by_scan_number(dataset, tmp_path):
    """Two scans are too few to tell a stepped motor from drift: the series is by scan."""
    paths = [dataset(n) for n in BATCH[:2]]
    summary, ctx, _ = _run(paths, tmp_path, series_axis="auto", plots=False)
    assert summary["series_axis"] == "scan"
    assert [row["scan"] for row in summary["series"]] == [794932, 794933]
    with h5py.File(next(o.path for o in ctx.outputs if o.name == "scans.nxs")) as f:
        _check_nxdata(f["series/data"])
        assert f["series/data/scan"][()].tolist() == [794932, 794933]


@pytest.mark.data
def test_shard_reads_its_part(dataset, tmp_path):
    paths = [dataset(n) for n in BATCH]
    summary, job, _ = _run(paths, tmp_path, shard=(1, 2), plots=False)
    # contiguous blocks: shard 1 of 2 of five files holds the last three, as one part
    assert summary["unit_range"] == [2, 5] and summary["of_units"] == 5
    assert {o.name for o in job.outputs} == {"part.h5", "summary.json"}
    part = kit.load_part(next(o.path for o in job.outputs if o.name == "part.h5"), Technique.Part)
    assert [s.data.scan for s in part.scans] == [794934, 794935, 794936]
    assert all(np.isfinite(s.fit.center) for s in part.scans)


def _synthetic_batch(tmp_path, temperatures):
    paths = []
    for i, t in enumerate(temperatures):
        x = np.linspace(29.7, 30.3, 41)
        counts = synthetic_counts(
            np.random.default_rng(i), x, center=30.0 + 0.001 * t, fwhm=0.05, area=200.0, background=30.0, slope=0.0
        )
        cols = {"eta": x, "roi2_sum": counts, "count_time": np.full(41, 2.0)}
        paths.append(
            write_i16_file(
                tmp_path / f"{1000 + i}.nxs",
                cols,
                declared_axis="eta",
                scan_command="scan eta 29.7 30.3 0.015 pil3_100k 2 roi2",
                before_scan={"Ta": t, "Transmission": 0.5},
                entry_identifier=str(1000 + i),
            )
        )
    return paths


def test_temperature_series_recovers_the_shift(tmp_path):
    """Synthetic: centre = 30 + 0.001 * T deg; the series against Ta recovers the slope."""
    temps = [50.0, 10.0, 30.0, 70.0, 90.0]
    summary, _ctx, _ = _run(_synthetic_batch(tmp_path, temps), tmp_path, model="gaussian")
    assert summary["series_axis"] == "Ta"
    t = np.array([row["Ta"] for row in summary["series"]])
    c = np.array([row["center"] for row in summary["series"]])
    e = np.array([row["center_err"] for row in summary["series"]])
    assert t.tolist() == sorted(temps)
    slope, _ = np.polyfit(t, c, 1, w=1 / e)
    assert slope == pytest.approx(0.001, abs=2e-4)
    assert np.all(np.abs(c - (30 + 0.001 * t)) < 4 * e)
    # counts / transmission 0.5 / 2 s: area 200 counts*deg -> 200 counts/s*deg
    areas = np.array([s["area"] for s in summary["scans"]])
    errs = np.array([s["area_err"] for s in summary["scans"]])
    assert np.all(np.abs(areas - 200.0) < 4 * errs)


def test_bad_file_in_batch_names_it(tmp_path):
    good = _synthetic_batch(tmp_path, [10.0])
    bad = tmp_path / "broken.nxs"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(InvalidInput, match=r"broken.nxs"):
        _run([*good, bad], tmp_path)


def test_parameters_are_validated(tmp_path):
    with pytest.raises(InvalidParameters) as err:
        Technique.validate_parameters({"model": "voigt", "edge_margin_fwhm": 20})
    fields = {v.field for v in err.value.violations}
    assert fields == {"model", "edge_margin_fwhm"}
    with pytest.raises(InvalidParameters, match="min_points"):
        Technique.validate_parameters({"model": "pseudo_voigt", "min_points": 6})
    with pytest.raises(InvalidParameters, match="series_axis"):
        _run(_synthetic_batch(tmp_path, [10.0, 20.0]), tmp_path, series_axis="Tsample")
    schema = Technique.parameters_schema()
    assert all(p.get("description") for p in schema["properties"].values())


def test_declaration():
    assert Technique.name == "scan" and Technique.shardable and Technique.shard_unit
    assert Technique.input_kinds == ("nexus/i16-scan",)
    assert set(Technique.output_formats) == {"nexus", "csv", "png"}
