"""The service kit on its own: errors across the wire, parameters, staging and
publishing, provenance, inline transfers, jobs, cancellation and deadlines."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import zlib
from pathlib import Path

import grpc
import h5py
import numpy as np
import pytest

from panreduce import errors, provenance, rpc
from panreduce.client import Client, make_request
from panreduce.jobs import JobManager
from panreduce.kit import Context, Inputs, StagedFile, StagedInput
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.storage import LocalStore, Stores, stage_inputs
from panreduce.transfer import file_chunks, receive_upload
from panreduce.v1 import reduce_pb2 as pb


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidParameters([errors.FieldViolation("q_min", "must be > 0")]), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InputNotFound("/x.nxs"), grpc.StatusCode.NOT_FOUND),
        (errors.InvalidInput("x.nxs", "truncated"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InputTooLarge("x.nxs", 10, 5), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.JobCancelled(), grpc.StatusCode.CANCELLED),
        (errors.DeadlineExceeded(), grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.Unavailable("down"), grpc.StatusCode.UNAVAILABLE),
        (errors.InternalError("disk full"), grpc.StatusCode.INTERNAL),
        (KeyError("unexpected"), grpc.StatusCode.INTERNAL),
    ],
)
def test_every_error_has_its_status_and_survives_the_wire(exc, code):
    failure = rpc.failure_of(exc)
    assert failure.code == code.name
    back = rpc.error_of_failure(failure)
    assert back.code == code
    if isinstance(exc, errors.PanReduceError):
        assert type(back) is type(exc)
        assert back.message == exc.message
    else:  # a bug is reported as the server's fault, with an incident id, never blaming the caller
        assert isinstance(back, errors.InternalError)
        assert "not of the request" in back.message and back.metadata["incident"]
    if isinstance(exc, errors.InvalidParameters):
        assert back.violations == exc.violations


def test_parameter_errors_name_field_and_range():
    with pytest.raises(errors.InvalidParameters) as err:
        Toy.validate_parameters({"scale": 0, "steps": 20000, "mode": "median", "what": 1})
    by_field = {v.field: v.description for v in err.value.violations}
    assert set(by_field) == {"scale", "steps", "mode", "what"}
    assert "0 < value <= 1000" in by_field["scale"]
    assert "1 <= value <= 10000" in by_field["steps"]
    assert "'sum'" in by_field["mode"] and "'mean'" in by_field["mode"]
    assert "unknown parameter" in by_field["what"] and "scale" in by_field["what"]
    # numbers sent as JSON doubles are accepted for integer fields
    assert Toy.validate_parameters({"steps": 3.0}).steps == 3


# -- staging and publishing ------------------------------------------------------------------
def test_stage_inputs_files_and_prefixes(tmp_path):
    (tmp_path / "run" / "sub").mkdir(parents=True)
    (tmp_path / "run" / "a.dat").write_bytes(b"aaaa")
    (tmp_path / "run" / "sub" / "b.dat").write_bytes(b"bb")
    (tmp_path / "run" / ".hidden").write_bytes(b"x")
    single = tmp_path / "single.dat"
    single.write_bytes(b"123")
    stores = Stores(tmp_path / "store")
    inputs = stage_inputs(stores, [str(single), str(tmp_path / "run") + "/"], tmp_path / "scratch")
    assert [f.name for f in inputs.files] == ["single.dat", "a.dat", "sub/b.dat"]
    assert inputs.files[0].sha256 == hashlib.sha256(b"123").hexdigest()
    assert inputs.items[1].is_prefix and inputs.items[1].root == tmp_path / "run"
    assert inputs.find("b.dat").size == 2
    with pytest.raises(errors.InputNotFound):
        stage_inputs(stores, [str(tmp_path / "nope") + "/"], tmp_path / "scratch")
    with pytest.raises(errors.InputTooLarge):
        stage_inputs(stores, [str(single)], tmp_path / "scratch", max_bytes=2)
    with pytest.raises(errors.InvalidRequest, match="no store"):
        stage_inputs(stores, ["s3://bucket/key"], tmp_path / "scratch")


def test_publish_is_all_or_nothing_and_never_overwrites(tmp_path):
    store = LocalStore()
    src = tmp_path / "scratch"
    src.mkdir()
    for name in ("a.h5", "b.csv"):
        (src / name).write_text(name)
    dest = tmp_path / "results"
    uris = store.publish([(src / "a.h5", "a.h5"), (src / "b.csv", "b.csv")], str(dest))
    assert sorted(Path(u).name for u in uris) == ["a.h5", "b.csv"]
    # a second publish to the same place would overwrite: refused before anything moves
    (src / "c.png").write_text("c")
    with pytest.raises(errors.FailedPrecondition, match="overwrite"):
        store.publish([(src / "c.png", "c.png"), (src / "a.h5", "a.h5")], str(dest))
    assert sorted(p.name for p in dest.iterdir()) == ["a.h5", "b.csv"]
    # a failure while copying leaves no partial file and nothing published
    with pytest.raises(FileNotFoundError):
        store.publish([(src / "c.png", "c.png"), (src / "missing", "d.txt")], str(tmp_path / "r2"))
    assert not any((tmp_path / "r2").iterdir())


def test_upload_area_refuses_path_traversal(tmp_path):
    stores = Stores(tmp_path)
    with pytest.raises(errors.PermissionDenied, match=r"'\.\.'"):  # one rule for '..' (panreduce.locations)
        stores.uploads.path_of("upload://../../etc/passwd")


# -- provenance ----------------------------------------------------------------------------
def test_provenance_is_embedded_in_each_format(tmp_path):
    ctx = Context(job_id="j1", scratch=tmp_path)
    nx = ctx.output_path("r.nxs", format="nexus")
    with h5py.File(nx, "w") as f:
        f.create_group("entry").attrs["NX_class"] = "NXentry"
    csv = ctx.output_path("t.csv", format="csv", role="table")
    csv.write_text("a,b\n1,2\n")
    png = ctx.output_path("p.png", format="png", role="preview")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.figure()
    plt.plot([1, 2])
    plt.savefig(png)
    plt.close("all")
    src = tmp_path / "in.dat"
    src.write_bytes(b"x")
    inputs = Inputs((StagedInput(str(src), src, False, (StagedFile(src, str(src), "in.dat", 1, "ab" * 32),)),))
    from datetime import UTC, datetime

    record = provenance.build(
        job_id="j1",
        technique="toy",
        technique_version="1.0.0",
        technique_distribution="panreduce-common",
        request={"inputs": [str(src)]},
        parameters={"scale": 2.0},
        inputs=inputs,
        started=datetime.now(UTC),
    )
    assert record["software"]["numpy"] == np.__version__
    for out in ctx.outputs:
        provenance.embed(record, out)
    with h5py.File(nx) as f:
        note = json.loads(f["entry/provenance/data"][()])
        assert f["entry/provenance"].attrs["NX_class"] == "NXnote"
    assert note["inputs"][0]["sha256"] == "ab" * 32 and note["parameters"] == {"scale": 2.0}
    lines = csv.read_text().splitlines()
    assert lines[0].startswith("# provenance_id: prov-j1") and lines[2:] == ["a,b", "1,2"]
    assert json.loads(provenance.read_png_text(png)["panreduce:provenance"])["id"] == "prov-j1"
    import matplotlib.image

    assert matplotlib.image.imread(png).ndim == 3  # still a valid PNG


# -- inline transfers -----------------------------------------------------------------------
def test_upload_verifies_crc_offsets_and_checksum(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)
    src = tmp_path / "blob.bin"
    src.write_bytes(data)
    stores = Stores(tmp_path / "store")
    info = receive_upload(file_chunks(src), stores)
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    assert stores.uploads.path_of(info.uri).read_bytes() == data

    def tampered(kind):
        for i, chunk in enumerate(file_chunks(src)):
            if i == 2 and kind == "crc":
                chunk.data = chunk.data[:-1] + b"\x00"
            if i == 2 and kind == "gap":
                continue
            if kind == "sha" and chunk.HasField("trailer"):
                chunk.trailer.sha256 = "0" * 64
            if kind == "header-sha" and chunk.HasField("header"):
                chunk.header.sha256 = "0" * 64
            if kind == "no-sha" and chunk.HasField("trailer"):
                continue
            yield chunk

    for kind in ("crc", "gap", "sha", "header-sha", "no-sha"):
        with pytest.raises(errors.TransferError):
            receive_upload(tampered(kind), stores)
    leftovers = [p for p in (tmp_path / "store" / "uploads").rglob("*") if p.is_file()]
    assert leftovers == [stores.uploads.path_of(info.uri)]  # only the good upload remains


def test_upload_and_download_through_a_server(tmp_path):
    data = np.random.default_rng(1).bytes(5 * (1 << 20) + 3)
    src = tmp_path / "in.npy"
    np.save(src, np.frombuffer(data, dtype=np.uint8))
    stores = Stores(tmp_path / "store")
    server = start_technique(Toy, stores=stores)
    try:
        with Client(server.address, timeout=60) as c:
            info = c.upload(src)
            assert info.uri.startswith("upload://")
            done = c.reduce("toy", [info.uri], {"mode": "mean"}, str(tmp_path / "out"))
            assert done.summary["total"] == pytest.approx(np.frombuffer(data, np.uint8).mean())
            got = c.download(done.outputs[0].uri, tmp_path / "copy.nxs")
            assert got.sha256 == done.outputs[0].sha256
            with pytest.raises(errors.PermissionDenied):
                c.download("/etc/hostname", tmp_path / "x")
    finally:
        server.drain_and_stop(2)


@pytest.mark.large
def test_three_gib_upload(tmp_path):
    """No size ceiling: a 3 GiB input streams through in ~1 MiB chunks."""
    src = tmp_path / "big.bin"
    size = 3 * (1 << 30)
    with open(src, "wb") as f:
        block = np.random.default_rng(2).bytes(1 << 24)
        for _ in range(size // len(block)):
            f.write(block)
    stores = Stores(tmp_path / "store")
    server = start_technique(Toy, stores=stores)
    try:
        with Client(server.address) as c:
            info = c.upload(src)
        assert info.size == size
        assert stores.uploads.path_of(info.uri).stat().st_size == size
    finally:
        server.drain_and_stop(2)


# -- jobs -------------------------------------------------------------------------------
def test_job_manager_cancel_reaches_the_algorithm_between_steps(tmp_path):
    stores = Stores(tmp_path / "store")
    np.save(tmp_path / "v.npy", np.ones(4))
    server = start_technique(Toy, stores=stores)
    Toy.steps_done = 0
    Toy.started.clear()
    try:
        with Client(server.address, timeout=60) as c:
            job = c.submit(
                "toy", [str(tmp_path / "v.npy")], {"steps": 1000, "step_seconds": 0.01}, str(tmp_path / "out")
            )
            assert Toy.started.wait(10)
            time.sleep(0.1)
            c.cancel(job.job_id)
            final = c.wait(job.job_id)
        assert final.state == pb.CANCELLED
        assert final.failure.code == "CANCELLED"
        assert 0 < Toy.steps_done < 1000  # stopped between steps, well before the end
        assert not (tmp_path / "out").exists()
    finally:
        server.drain_and_stop(2)


def test_deadline_reaches_the_algorithm(tmp_path):
    stores = Stores(tmp_path / "store")
    np.save(tmp_path / "v.npy", np.ones(4))
    server = start_technique(Toy, stores=stores)
    try:
        with Client(server.address) as c:
            t0 = time.monotonic()
            with pytest.raises(errors.DeadlineExceeded):
                c.reduce(
                    "toy",
                    [str(tmp_path / "v.npy")],
                    {"steps": 500, "step_seconds": 0.01},
                    str(tmp_path / "out"),
                    timeout=0.5,
                )
            assert time.monotonic() - t0 < 3
            # the job itself stops too (the call's deadline is the job's deadline)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                jobs = c.list_jobs()
                if jobs and jobs[0].state != pb.RUNNING:
                    break
                time.sleep(0.05)
            assert jobs[0].state in (pb.FAILED, pb.CANCELLED)
            assert jobs[0].failure.code in ("DEADLINE_EXCEEDED", "CANCELLED")
        assert not (tmp_path / "out").exists()
    finally:
        server.drain_and_stop(2)


def test_idempotency_key_never_runs_twice():
    runs = []

    def runner(handle):
        runs.append(handle.job_id)
        return pb.Result()

    manager = JobManager(runner, max_running=2)
    req = make_request("toy", ["/x"], idempotency_key="k1")
    results = []
    threads = [threading.Thread(target=lambda: results.append(manager.submit(req)[0].job_id)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    list(manager.watch(results[0]))
    assert runs == [results[0]]
    manager.shutdown()


def test_watch_resumes_and_queued_jobs_cancel_at_once():
    gate = threading.Event()

    def runner(handle):
        handle.progress("work", 0.5, "half")
        gate.wait(5)
        return pb.Result(provenance_id="p")

    manager = JobManager(runner, max_running=1)
    first, _ = manager.submit(make_request("toy", ["/x"]))
    second, _ = manager.submit(make_request("toy", ["/y"]))
    assert manager.cancel(second.job_id).state == pb.CANCELLED  # was queued behind the first
    gate.set()
    events = list(manager.watch(first.job_id))
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds == ["accepted", "progress", "result"]
    assert [e.seq for e in manager.watch(first.job_id, after_seq=1)] == [2, 3]
    assert manager.cancel(first.job_id).state == pb.SUCCEEDED  # finished jobs stay as they are
    manager.shutdown()


def test_crc_helper_matches_zlib():
    chunk = next(c for c in file_chunks(Path(__file__)) if c.HasField("data"))
    assert chunk.crc32 == zlib.crc32(Path(__file__).read_bytes()[: len(chunk.data)])


def test_submit_timeout_is_not_the_jobs_deadline(tmp_path):
    """Only Reduce ties the job to its call; a submitted job outlives the Submit call."""
    stores = Stores(tmp_path / "store")
    np.save(tmp_path / "v.npy", np.ones(4))
    server = start_technique(Toy, stores=stores)
    try:
        with Client(server.address, timeout=0.5) as c:
            job = c.submit("toy", [str(tmp_path / "v.npy")], {"steps": 20, "step_seconds": 0.05}, str(tmp_path / "out"))
        with Client(server.address) as c:
            assert c.wait(job.job_id).state == pb.SUCCEEDED
    finally:
        server.drain_and_stop(2)


def test_toy_split_through_the_gateway_equals_the_whole_job(tmp_path):
    """Four files split two ways through a real gateway: the shards' parts, combined,
    give what the unsplit job gives, and the shard scratch is gone afterwards."""
    from panreduce.serving import start_server
    from panreduce_gateway.gateway import GatewayService

    stores = Stores(tmp_path / "store")
    for i in range(4):
        np.save(tmp_path / f"v{i}.npy", np.full(3, float(i)))
    files = [str(tmp_path / f"v{i}.npy") for i in range(4)]
    service = start_technique(Toy, stores=stores)
    gw_service = GatewayService({"toy": service.address}, stores=stores)
    gw = start_server(gw_service, name="gateway", manager=gw_service.manager)
    gw.set_serving(True)
    try:
        with Client(gw.address, timeout=60) as c:
            split = c.reduce("toy", files, {}, str(tmp_path / "split"), split=2)
            whole = c.reduce("toy", files, {}, str(tmp_path / "whole"), split=1)
        assert split.summary["total"] == whole.summary["total"] == 3 * (0 + 1 + 2 + 3)
        assert split.summary["files"] == whole.summary["files"] == [f"v{i}.npy" for i in range(4)]
        assert split.summary["shards"] == 2
        with h5py.File(tmp_path / "split" / "toy.nxs") as a, h5py.File(tmp_path / "whole" / "toy.nxs") as b:
            np.testing.assert_array_equal(a["entry/values"][()], b["entry/values"][()])
        assert not (tmp_path / "split" / "part.h5").exists()
        assert not any((stores.root / "shards").iterdir())
    finally:
        gw.drain_and_stop(1)
        gw_service.close()
        service.drain_and_stop(1)


def test_hdf5_reader_names_the_file_and_keeps_bugs_internal(tmp_path):
    from panreduce.kit.readers import open_hdf5, read_array

    good = tmp_path / "good.nxs"
    with h5py.File(good, "w") as f:
        f["entry/data"] = np.arange(1000.0)
        f["entry/nan"] = np.array([1.0, np.nan])
    with pytest.raises(errors.InvalidInput, match="not an HDF5"):
        (tmp_path / "text.nxs").write_text("hello")
        with open_hdf5(tmp_path / "text.nxs"):
            pass
    truncated = tmp_path / "cut.nxs"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(errors.InvalidInput, match=r"cut\.nxs"), open_hdf5(truncated) as f:
        f["entry/data"][()]
    with pytest.raises(errors.InvalidInput, match="missing"), open_hdf5(good) as f:
        read_array(f, "entry/missing", "good.nxs")
    with pytest.raises(errors.InvalidInput, match="NaN"), open_hdf5(good) as f:
        read_array(f, "entry/nan", "good.nxs")
    with pytest.raises(errors.InvalidInput, match="lacks"), open_hdf5(good) as f:
        f["entry/other"]
    with pytest.raises(KeyError), open_hdf5(good):  # a bug in the technique stays a bug
        {}["summary"]


def test_dotted_keys_reach_step_models_once():
    """`-p step.field=value` is one mechanism of the kit's Parameters for every technique
    with step models: dotted keys nest, merge into a step given as a mapping and win over it, and a dotted key naming no field is refused as unknown."""
    import pydantic
    import pytest as _pytest

    from panreduce.errors import InvalidParameters
    from panreduce.kit import Parameters, Technique

    class Step(Parameters):
        a: int = pydantic.Field(1, ge=0, le=10)
        b: str = "x"

    class Model(Parameters):
        step: Step = pydantic.Field(default_factory=Step)
        top: int = 0

    class T(Technique):
        name = "dotted"
        Parameters = Model

    p = T.validate_parameters({"step.a": 3, "step": {"b": "y"}, "top": 2})
    assert (p.step.a, p.step.b, p.top) == (3, "y", 2)
    raw = {"step": {"a": 4}, "step.a": 3}
    assert T.validate_parameters(raw).step.a == 3  # the dotted key wins (-p over --params FILE)
    assert raw == {"step": {"a": 4}, "step.a": 3}  # the caller's mapping untouched
    with _pytest.raises(InvalidParameters, match=r"nope.a: unknown parameter"):
        T.validate_parameters({"nope.a": 1})
    with _pytest.raises(InvalidParameters) as err:
        T.validate_parameters({"top.a": 1})
    assert [v.field for v in err.value.violations] == ["top"]
    with _pytest.raises(InvalidParameters, match="allowed"):
        T.validate_parameters({"step.a": 11})
