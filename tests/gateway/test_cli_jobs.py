"""One job id everywhere, retention over the embedded store, `jobs watch` outcomes and a
busy port (issue 14), through real `panreduce` processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py

from panreduce.jobs import new_job_id, now_ts
from panreduce.sqlstore import SqliteJobStore
from panreduce.v1 import reduce_pb2 as pb

PANREDUCE = str(Path(sys.executable).parent / "panreduce")


def embedded_provenance_ids(folder: Path) -> dict[str, set[str]]:
    """Every job id written into the outputs of a results folder: provenance.json, each
    NeXus file's provenance notes, and the CSV/PNG/JSON outputs listed in provenance.json."""
    ids: dict[str, set[str]] = {}
    for path in sorted(folder.iterdir()):
        found: set[str] = set()
        if path.suffix == ".nxs":
            with h5py.File(path) as f:

                def visit(_name: str, obj: object, found: set[str] = found) -> None:
                    if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "OSU" and obj.shape == ():
                        value = obj[()]
                        text = value.decode() if isinstance(value, bytes) else str(value)
                        if '"job_id"' in text:
                            found.add(json.loads(text)["job_id"])

                f.visititems(visit)
        elif path.name == "provenance.json":
            found.add(json.loads(path.read_text())["job_id"])
        if found:
            ids[path.name] = found
    return ids


def test_one_job_id_embedded(cli, tmp_path, dataset):
    res = cli("reduce", "scan", str(dataset("i16-scans/794934.nxs")), "--json", "--output", "out")
    assert res.returncode == 0, res.stderr
    job_id = json.loads(res.stdout)["job_id"]
    ids = embedded_provenance_ids(tmp_path / "out")
    assert "provenance.json" in ids and any(name.endswith(".nxs") for name in ids)
    assert all(found == {job_id} for found in ids.values()), (job_id, ids)
    listed = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert listed["job_id"] == job_id


def test_one_job_id_through_serve_sharded_and_in_jobs_list(cli, served, tmp_path, dataset):
    batch = tmp_path / "batch"
    batch.mkdir()
    for n in (794932, 794933, 794934, 794935):
        (batch / f"{n}.nxs").symlink_to(dataset(f"i16-scans/{n}.nxs"))
    gw = ["--gateway", served["address"]]
    res = cli("reduce", "scan", f"{batch}/", "--split", "2", "--json", "--output", str(tmp_path / "out"), *gw)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    job_id = doc["job_id"]
    ids = embedded_provenance_ids(tmp_path / "out")
    assert ids and all(found == {job_id} for found in ids.values()), (job_id, ids)
    listed = cli("jobs", "list", "--json", *gw)
    assert listed.returncode == 0, listed.stderr
    assert job_id in [j["job_id"] for j in json.loads(listed.stdout)]
    shown = json.loads(cli("jobs", "show", job_id, "--json", *gw).stdout)
    assert shown["job_id"] == job_id and int(shown["shards"]) == 2  # it was split: shards and a merge


def test_retention_covers_embedded_reductions(cli, tmp_path, dataset):
    res = cli("reduce", "scan", str(dataset("i16-scans/794935.nxs")), "--json")  # default output: the store
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    outputs = [Path(o["uri"]) for o in doc["outputs"]]
    assert all(p.is_file() and (tmp_path / "panreduce-store") in p.parents for p in outputs)
    kept = cli("retention", "--dry-run", "--json")  # nothing is 90 days old
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["jobs"] == []
    time.sleep(1.2)
    tiny = "0.00001"  # 0.864 s
    listed = cli("retention", "--dry-run", "--days", tiny, "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = json.loads(listed.stdout)["jobs"]
    assert [j["job_id"] for j in jobs] == [doc["job_id"]]
    assert sorted(jobs[0]["outputs"]) == sorted(str(p) for p in outputs)
    assert all(p.is_file() for p in outputs)  # a dry run deletes nothing
    applied = cli("retention", "--apply", "--days", tiny, "--json")
    assert applied.returncode == 0, applied.stderr
    assert sorted(json.loads(applied.stdout)["deleted"]) == sorted(str(p) for p in outputs)
    assert not any(p.exists() for p in outputs)
    after = cli("retention", "--dry-run", "--days", tiny, "--json")
    assert json.loads(after.stdout)["jobs"] == []


def test_retention_deletes_old_uploads_but_not_one_a_running_job_reads(cli, tmp_path):
    uploads = tmp_path / "panreduce-store" / "uploads"
    old_days = 120 * 86400
    files = {}
    for name, age in (("old", old_days), ("used", old_days), ("young", 0)):
        f = uploads / "pA" / (name[0] * 32) / f"{name}.nxs"
        f.parent.mkdir(parents=True)
        f.write_bytes(b"x" * 10)
        os.utime(f, (time.time() - age, time.time() - age))
        files[name] = f
    outside = tmp_path / "elsewhere.nxs"  # a link in the uploads area is never followed
    outside.write_bytes(b"keep")
    os.utime(outside, (time.time() - old_days, time.time() - old_days))
    (uploads / "pA" / "link.nxs").symlink_to(outside)
    store = SqliteJobStore(tmp_path / "panreduce-store" / "jobs.sqlite")
    store.add(
        pb.Job(
            job_id=new_job_id(),
            technique="scan",
            state=pb.RUNNING,
            created=now_ts(),
            request=pb.ReduceRequest(technique="scan", inputs=["upload://pA/" + "u" * 32 + "/used.nxs"]),
        )
    )
    store.close()
    listed = cli("retention", "--dry-run", "--json")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert [u["uri"] for u in doc["uploads"]] == ["upload://pA/" + "o" * 32 + "/old.nxs"]
    assert doc["uploads"][0]["proposal"] == "pA" and doc["uploads"][0]["bytes"] == 10
    assert all(f.exists() for f in files.values())  # a dry run deletes nothing
    applied = cli("retention", "--apply")
    assert applied.returncode == 0, applied.stderr
    assert "1 upload(s) deleted" in applied.stdout
    assert not files["old"].exists() and not files["old"].parent.exists()  # its upload folder too
    assert files["used"].exists() and files["young"].exists() and outside.read_bytes() == b"keep"


def test_bad_days_is_one_clear_error(cli, tmp_path):
    for bad in ("0", "-3", "abc", "nan", "inf", "1e9"):
        res = cli("retention", "--dry-run", "--days", bad)
        assert res.returncode == 2, (bad, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "--days" in lines[0] and "Traceback" not in res.stderr, (bad, res.stderr)
        res = cli("retention", "--dry-run", "--days", bad, "--json")
        assert res.returncode == 2 and res.stderr == ""
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "USAGE" and "--days" in err["message"]
    res = cli("retention", "--dry-run", env={"PANREDUCE_RETENTION_DAYS": "-1"})
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "PANREDUCE_RETENTION_DAYS" in res.stderr


def test_embedded_reduce_does_not_run_another_commands_job(cli, tmp_path, dataset):
    """A job another command left running in the store's job table is not run again by
    the next `reduce` (it may be running now in that other command)."""
    store = SqliteJobStore(tmp_path / "panreduce-store" / "jobs.sqlite")
    other = pb.Job(
        job_id=new_job_id(),
        technique="scan",
        state=pb.RUNNING,
        created=now_ts(),
        attempts=1,
        request=pb.ReduceRequest(
            technique="scan", inputs=[str(dataset("i16-scans/794932.nxs"))], output=str(tmp_path / "others")
        ),
    )
    store.add(other)
    store.close()
    res = cli("reduce", "scan", str(dataset("i16-scans/794933.nxs")), "--output", "mine")
    assert res.returncode == 0, res.stderr
    store = SqliteJobStore(tmp_path / "panreduce-store" / "jobs.sqlite")
    try:
        again = store.get(other.job_id)
        assert again is not None and again.state == pb.RUNNING and again.attempts == 1
    finally:
        store.close()
    assert not (tmp_path / "others").exists()


def test_jobs_watch_exits_with_the_outcome(cli, served, tmp_path, dataset):
    gw = ["--gateway", served["address"]]
    ok = cli("reduce", "scan", str(dataset("i16-scans/794932.nxs")), "--detach", *gw)
    assert ok.returncode == 0, ok.stderr
    watched = cli("jobs", "watch", ok.stdout.strip(), *gw)
    assert watched.returncode == 0, watched.stderr
    assert " result " in watched.stdout

    broken = tmp_path / "broken.nxs"
    broken.write_bytes(dataset("i16-scans/794934.nxs").read_bytes()[:150_000])
    bad = cli("reduce", "scan", str(broken), "--detach", *gw)
    assert bad.returncode == 0, bad.stderr
    watched = cli("jobs", "watch", bad.stdout.strip(), *gw)
    assert watched.returncode == 1, (watched.stdout, watched.stderr)
    assert " failure " in watched.stdout

    batch = tmp_path / "many"
    batch.mkdir()
    source = dataset("i16-scans/794933.nxs")
    for i in range(120):
        (batch / f"{i:03d}.nxs").symlink_to(source)
    long = cli("reduce", "scan", f"{batch}/", "--detach", *gw)
    job_id = long.stdout.strip()
    cancelled = cli("jobs", "cancel", job_id, *gw)
    assert cancelled.returncode == 0, cancelled.stderr
    watched = cli("jobs", "watch", job_id, *gw)
    assert watched.returncode == 130, (watched.stdout, watched.stderr)
    watched_json = cli("jobs", "watch", job_id, "--json", *gw)
    assert watched_json.returncode == 130
    events = [json.loads(line) for line in watched_json.stdout.splitlines()]
    assert events[-1]["failure"]["code"] == "CANCELLED"
    missing = cli("jobs", "watch", "0123456789abcdef", "--json", *gw)
    assert missing.returncode == 3 and json.loads(missing.stdout)["error"]["code"] == "JOB_NOT_FOUND"


def test_serve_on_a_busy_port_is_one_line_and_exit_4(cli, served, tmp_path):
    """Taken by a plain socket, and by a running `panreduce serve` (gRPC binds with
    SO_REUSEPORT: without the check a second server would share the port)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        t0 = time.monotonic()
        res = cli("serve", "--port", str(port), "--store", str(tmp_path / "s1"), timeout=60)
        assert res.returncode == 4, res.stderr
        assert res.stderr.strip().splitlines() == [res.stderr.strip()]
        assert f"port {port}" in res.stderr and "in use" in res.stderr and "Traceback" not in res.stderr
        assert time.monotonic() - t0 < 30
        assert not (tmp_path / "s1").exists()  # nothing was started, nothing written
    second = subprocess.run(
        [PANREDUCE, "serve", "--port", str(served["port"]), "--store", str(tmp_path / "s2"), "--techniques", "scan"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert second.returncode == 4, second.stderr
    assert "in use" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert served["proc"].poll() is None  # the running one is untouched
