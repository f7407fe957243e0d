"""`panreduce validate` against a real `panreduce serve` (scan, saxs, sans, tomography and
reflectometry) on loopback, as
processes: the recorded reference figures pass; a wrong expectation fails (exit 1); a
technique not installed, missing data and a name outside the registry are SKIP rows."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from panreduce import errors
from panreduce.client import Client
from panreduce_gateway import validate

PANREDUCE = str(Path(sys.executable).parent / "panreduce")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "xdg")}
    env.pop("PANREDUCE_GATEWAY", None)
    log = open(tmp / "serve.log", "w+")
    proc = subprocess.Popen(
        [
            PANREDUCE,
            "serve",
            "--port",
            str(port),
            "--store",
            str(tmp / "store"),
            "--techniques",
            "scan,saxs,sans,tomography,reflectometry",
            "--web-port",
            "0",
        ],
        cwd=tmp,
        stderr=log,
        env=env,
    )
    address = f"127.0.0.1:{port}"
    end = time.monotonic() + 120
    while True:
        try:
            with Client(address, timeout=2) as c:
                if c.health() == "SERVING":
                    break
        except errors.PanReduceError:
            pass
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            log.seek(0)
            pytest.fail(f"panreduce serve did not start: {log.read()}")
        time.sleep(0.3)
    yield {"address": address, "tmp": tmp, "env": env}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    log.close()


def run_validate(served, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PANREDUCE, "validate", "--gateway", served["address"], *args],
        cwd=served["tmp"],
        env=served["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_recorded_references_pass_through_a_live_serve(served, dataset, tmp_path):
    dataset("i16-scans/794934.nxs")  # skip (or fail under CI) without the data
    dataset("saxs-biocat/GI2_A9_19_001_0000.tiff")
    dataset("loq-gfp/raw/LOQ75884.nxs")
    dataset("tomo/tooth/tooth.h5")
    dataset("offspec-polymer/raw/OFFSPEC00046992.nxs")
    dataset("inter-61440/INTER_61440_TOF_MantidSave.nxs")
    out_json, out_md = tmp_path / "v.json", tmp_path / "v.md"
    res = run_validate(served, "--json", str(out_json), "--markdown", str(out_md))
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["technique", "case", "figure", "expected", "got", "tolerance", "pass"]
    report = json.loads(out_json.read_text())
    rows = report["rows"]
    assert report["passed"] is True
    assert {(r["technique"], r["case"]) for r in rows} == {
        ("scan", "i16-794934"),
        ("scan", "i16-794936"),
        ("saxs", "biocat-GI2_A9_19"),
        ("sans", "loq-gfp-batch"),
        ("tomography", "tooth"),
        ("reflectometry", "offspec-46992-46994"),
        ("reflectometry", "inter-61440"),
    }
    assert all(r["status"] == "PASS" for r in rows), rows
    for r in rows:  # the figures really were measured and compared
        assert r["got"] is not None and r["source"]
        assert abs(r["got"] - r["expected"]) <= 0.2 * abs(r["expected"]) + 0.002
    centre = next(r for r in rows if r["case"] == "i16-794934" and r["figure"] == "peak centre")
    assert 29.9 < centre["got"] < 30.1
    rg = next(r for r in rows if r["case"] == "loq-gfp-batch" and r["figure"].startswith("Guinier"))
    assert 17.0 < rg["got"] < 25.0  # GFP, read back from the downloaded NXcanSAS file
    md = out_md.read_text()
    assert md.startswith("| technique | case | figure | expected | got | tolerance | pass | source |")
    assert md.count("| PASS |") == len(rows) and f"{len(rows)} PASS, 0 FAIL, 0 SKIP, 0 ERROR" in md and len(rows) == 16


def test_wrong_expectations_fail_and_absent_cases_skip(served, dataset, tmp_path):
    dataset("i16-scans/794934.nxs")
    refs = {
        "cases": [
            {
                "technique": "scan",
                "case": "wrong",
                "inputs": ["i16-scans/794934.nxs"],
                "figures": [
                    {"name": "peak centre", "summary": ["center"], "expected": 31.0, "abs": 0.002, "source": "test"},
                    {"name": "no such figure", "summary": ["nope"], "expected": 1.0, "rel": 0.1, "source": "test"},
                ],
            },
            {
                "technique": "stem4d",
                "case": "phantom",
                "inputs": ["tomo/tooth/tooth.h5"],
                "figures": [{"name": "rmse", "summary": ["rmse"], "expected": 0.1, "abs": 0.01, "source": "test"}],
            },
            {
                "technique": "scan",
                "case": "outside-folder",
                "inputs": ["i16-scans/../../"],
                "figures": [
                    {"name": "peak centre", "summary": ["center"], "expected": 30.0, "abs": 1, "source": "test"}
                ],
            },
            {
                "technique": "scan",
                "case": "outside",
                "inputs": ["../../../etc/passwd"],
                "figures": [
                    {"name": "peak centre", "summary": ["center"], "expected": 30.0, "abs": 1, "source": "test"}
                ],
            },
        ]
    }
    path = tmp_path / "refs.json"
    path.write_text(json.dumps(refs))
    out_json = tmp_path / "v.json"
    res = run_validate(served, "--references", str(path), "--json", str(out_json))
    assert res.returncode == 1, res.stdout + res.stderr
    rows = {(r["case"], r["figure"]): r for r in json.loads(out_json.read_text())["rows"]}
    wrong = rows[("wrong", "peak centre")]
    assert wrong["status"] == "FAIL" and 29.9 < wrong["got"] < 30.1
    assert rows[("wrong", "no such figure")]["status"] == "ERROR"
    skipped = rows[("phantom", "rmse")]
    assert skipped["status"] == "SKIP" and "not installed" in skipped["note"]
    outside = rows[("outside", "peak centre")]
    assert outside["status"] == "SKIP" and "not a registered data set" in outside["note"]
    folder = rows[("outside-folder", "peak centre")]
    assert folder["status"] == "SKIP" and "not a registered data set" in folder["note"]
    assert "FAIL" in res.stdout and "SKIP (technique 'stem4d' is not installed" in res.stdout


def test_a_reference_file_without_sources_or_tolerances_is_refused(tmp_path):
    path = tmp_path / "refs.json"
    path.write_text(
        json.dumps(
            {
                "cases": [
                    {
                        "technique": "scan",
                        "case": "x",
                        "inputs": [],
                        "figures": [{"name": "c", "summary": ["center"], "expected": 1.0, "abs": 1}],
                    }
                ]
            }
        )
    )
    with pytest.raises(errors.InvalidRequest, match="no 'source'"):
        validate.load_references(path)
    path.write_text(
        json.dumps(
            {
                "cases": [
                    {
                        "technique": "scan",
                        "case": "x",
                        "inputs": [],
                        "figures": [{"name": "c", "summary": ["center"], "expected": 1.0, "source": "s"}],
                    }
                ]
            }
        )
    )
    with pytest.raises(errors.InvalidRequest, match="'abs' or 'rel'"):
        validate.load_references(path)
    assert len(validate.load_references()) == 7  # the recorded file is well formed


def test_curves_are_read_from_nxcansas_orso_and_csv_and_give_the_guinier_radius(tmp_path):
    import h5py
    import numpy as np

    q = np.linspace(0.005, 0.2, 80)
    rg = 23.0
    i = 0.7 * np.exp(-((q * rg) ** 2) / 3)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.attrs["default"] = "sasentry01"
        e = f.create_group("sasentry01")
        e.attrs["canSAS_class"] = "SASentry"
        e.create_group("other").attrs["canSAS_class"] = "SASnote"
        d = e.create_group("sasdata01")
        d.attrs["canSAS_class"] = "SASdata"
        d["Q"], d["I"] = q[::-1], i[::-1]  # any order
    np.savetxt(tmp_path / "c.ort", np.c_[q, i, 0.01 * i], header="# ORSO reflectivity data file\nQz R sR")
    (tmp_path / "c.csv").write_text(
        "# a comment\nQ (1/A),I (1/cm)\n" + "\n".join(f"{a},{b}" for a, b in zip(q, i, strict=True))
    )
    for name in ("c.h5", "c.ort", "c.csv"):
        pts = validate.curve_points(tmp_path / name)
        assert validate.curve_at(pts, 0.05) == pytest.approx(0.7 * np.exp(-((0.05 * rg) ** 2) / 3), rel=2e-3), name
        assert validate.guinier_rg(pts, 1.3 / rg) == pytest.approx(rg, rel=1e-6), name
    with pytest.raises(errors.InvalidInput, match="outside the curve"):
        validate.curve_at(validate.curve_points(tmp_path / "c.csv"), 0.5)
    with pytest.raises(errors.InvalidInput, match="fewer than 3"):
        validate.guinier_rg(validate.curve_points(tmp_path / "c.csv"), 0.001)
