"""End to end through the `panreduce` command: embedded, and against `panreduce serve`
on loopback (real processes, real gRPC, real I16 files)."""

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
from panreduce.v1 import reduce_pb2 as pb

PANREDUCE = str(Path(sys.executable).parent / "panreduce")


def run(*args: str, cwd: Path, timeout: float = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PANREDUCE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scan_range(path: Path, axis: str) -> tuple[float, float]:
    import h5py

    with h5py.File(path) as f:
        values = f[f"entry1/measurement/{axis}"][()]
    return float(values.min()), float(values.max())


def test_techniques_json_lists_scan_with_schema(tmp_path):
    res = run("techniques", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    techniques = {t["name"]: t for t in json.loads(res.stdout)}
    assert "scan" in techniques
    schema = techniques["scan"]["parameters_schema"]
    assert schema["type"] == "object" and schema["properties"]
    assert techniques["scan"]["shardable"]


def test_reduce_one_scan_embedded(tmp_path, dataset):
    path = dataset("i16-scans/794933.nxs")
    res = run("reduce", "scan", str(path), "--json", "--output", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) >= {"job_id", "technique", "outputs", "summary", "provenance"}
    summary = doc["summary"]
    assert summary["axis"] == "eta"
    lo, hi = scan_range(path, "eta")
    assert lo < summary["center"] < hi
    assert 0 < summary["center_err"] < (hi - lo) / 10
    formats = {o["format"] for o in doc["outputs"]}
    assert {"nexus", "csv", "png", "json"} <= formats
    for o in doc["outputs"]:
        assert Path(o["uri"]).parent == tmp_path / "out"
        assert Path(o["uri"]).stat().st_size == o["size"]
    # the same output folder is never overwritten
    again = run("reduce", "scan", str(path), "--json", "--output", "out", cwd=tmp_path)
    assert again.returncode == 2 and "overwrite" in json.loads(again.stdout)["error"]["message"]  # --json: on stdout


@pytest.mark.parametrize("damage", ["not-nexus", "truncated"])
def test_bad_file_fails_cleanly(tmp_path, dataset, damage):
    src = dataset("i16-scans/794934.nxs")
    bad = tmp_path / "broken.nxs"
    if damage == "not-nexus":
        bad.write_text("#S 1 ascan eta 29.7 30.3 60 1\n1 2 3\n")
    else:
        bad.write_bytes(src.read_bytes()[:150_000])
    res = run("reduce", "scan", str(bad), "--json", "--output", "out", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr == ""  # with --json the error is one JSON object on stdout
    error = json.loads(res.stdout)["error"]
    assert error["code"] == "CORRUPT_INPUT" and error["exit_code"] == 2 and "broken.nxs" in error["message"]
    plain = run("reduce", "scan", str(bad), "--output", "out", cwd=tmp_path)
    lines = plain.stderr.strip().splitlines()
    assert plain.returncode == 2 and plain.stdout == ""
    assert len(lines) == 1 and lines[0].startswith("panreduce: error:") and "broken.nxs" in lines[0]
    assert not (tmp_path / "out").exists()


def test_missing_file_and_bad_parameter(tmp_path, dataset):
    res = run("reduce", "scan", str(tmp_path / "nope.nxs"), cwd=tmp_path)
    assert res.returncode == 3 and "nope.nxs" in res.stderr
    res = run("reduce", "scan", str(dataset("i16-scans/794934.nxs")), "-p", "no_such=1", cwd=tmp_path)
    assert res.returncode == 2 and "no_such" in res.stderr
    res = run("reduce", "no-such-technique", str(dataset("i16-scans/794934.nxs")), cwd=tmp_path)
    assert res.returncode == 3 and "unknown technique" in res.stderr


@pytest.fixture
def served(tmp_path):
    """`panreduce serve` as its own process on a free loopback port."""
    port = free_port()
    store = tmp_path / "store"
    proc = subprocess.Popen(
        [PANREDUCE, "serve", "--port", str(port), "--store", str(store), "--techniques", "scan"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(address, timeout=2) as c:
                if c.health() == "SERVING":
                    break
        except errors.PanReduceError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"panreduce serve did not start: {proc.stderr.read()}")
        time.sleep(0.2)
    yield {"address": address, "proc": proc, "store": store}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_reduce_through_serve_and_jobs(served, tmp_path, dataset):
    path = dataset("i16-scans/782761.nxs")
    gw = ["--gateway", served["address"]]
    res = run("reduce", "scan", str(path), "--json", "--label", "sample=GFP", *gw, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["summary"]["axis"] == "k"
    assert Path(doc["outputs"][0]["uri"]).is_relative_to(served["store"] / "results" / doc["job_id"])
    listed = run("jobs", "list", "--json", "--label", "sample=GFP", *gw, cwd=tmp_path)
    assert [j["job_id"] for j in json.loads(listed.stdout)] == [doc["job_id"]]
    shown = run("jobs", "show", doc["job_id"], *gw, cwd=tmp_path)
    assert shown.returncode == 0 and "succeeded" in shown.stdout
    watched = run("jobs", "watch", doc["job_id"], "--json", *gw, cwd=tmp_path)
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert "result" in events[-1] and events[0]["seq"] == "1"
    missing = run("jobs", "show", "nope", *gw, cwd=tmp_path)
    assert missing.returncode == 3


def test_cancel_through_the_gateway_stops_and_leaves_nothing(served, tmp_path, dataset):
    batch = tmp_path / "batch"
    batch.mkdir()
    src = [dataset(f"i16-scans/79493{i}.nxs") for i in range(2, 7)]
    for i in range(120):  # a batch long enough to be cancelled mid-way
        (batch / f"{i:04d}_{src[i % 5].name}").symlink_to(src[i % 5])
    out = tmp_path / "out"
    with Client(served["address"], timeout=60) as c:
        job = c.submit("scan", [str(batch) + "/"], {}, str(out))
        for event in c.watch(job.job_id):
            if event.HasField("progress") and event.progress.fraction > 0.3:
                c.cancel(job.job_id)
                break
        final = c.wait(job.job_id)
    assert final.state == pb.CANCELLED, pb.JobState.Name(final.state)
    assert not out.exists()
    time.sleep(0.5)
    # each service process has its folder (panreduce.kit.scratch), the job's is inside it
    scratch = [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("panreduce-scan/*/*") if job.job_id in p.name]
    assert scratch == [] or all(not any(p.iterdir()) for p in scratch)


def test_serve_drains_on_sigterm(served):
    proc = served["proc"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def test_metadata_command_and_rpc(served, tmp_path, dataset):
    path = dataset("i16-scans/hdfmap_1040323.nxs")
    local = run("metadata", str(path), "--json", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    doc = json.loads(local.stdout)
    records = {r["path"]: r for r in doc["records"]}
    assert records["/entry/instrument/name"]["value"] == "i16"
    assert any(r["nx_class"] == "NXuser" for r in doc["records"])
    remote = run("metadata", str(path), "--json", "--gateway", served["address"], cwd=tmp_path)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout)["summary"] == doc["summary"]
    text = run("metadata", str(path), cwd=tmp_path).stdout
    assert "[user]" in text or "[sample]" in text
    bad = run("metadata", str(dataset("saxs-biocat/GI2_A9_19.spec")), "--gateway", served["address"], cwd=tmp_path)
    assert bad.returncode == 2 and "not an HDF5" in bad.stderr
    missing = run("metadata", str(tmp_path / "nope.nxs"), "--gateway", served["address"], cwd=tmp_path)
    assert missing.returncode == 3
