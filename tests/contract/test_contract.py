"""The contract every technique keeps, checked against each registered technique
(and the kit's toy technique) through real gRPC servers on loopback: the technique
server itself and the gateway in front of it.

A technique takes part by providing ``tests/<technique>/contract_example.py`` with
``example(dataset, tmp_path) -> {"inputs": [...], "params": {...}}``: a small valid
reduction. A registered technique without one fails here.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import grpc
import h5py
import pytest
from contract_examples import TECHNIQUES, load_example, technique_class  # this folder (pytest's rootdir-less import)
from grpc_health.v1 import health_pb2, health_pb2_grpc

from panreduce import errors
from panreduce.client import Client, make_request
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb
from panreduce_gateway.gateway import GatewayService


@pytest.fixture(scope="module", params=TECHNIQUES)
def platform(request, tmp_path_factory):
    """A technique server and a gateway in front of it, both on loopback."""
    name = request.param
    root = tmp_path_factory.mktemp(f"store-{name}")
    stores = Stores(root)
    service = start_technique(technique_class(name), stores=stores)
    gateway = GatewayService({name: service.address}, stores=stores)
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    yield {"name": name, "service": service, "gateway": gw, "root": root}
    gw.drain_and_stop(2)
    gateway.close()
    service.drain_and_stop(2)


@pytest.fixture(params=["service", "gateway"])
def client(request, platform):
    with Client(platform[request.param].address, timeout=120) as c:
        yield c


@pytest.fixture
def example(platform, dataset, tmp_path):
    return load_example(platform["name"])(dataset, tmp_path)


# -- Describe -------------------------------------------------------------------------
def test_describe_declares_the_technique(client, platform):
    resp = client.describe()
    assert [t.name for t in resp.techniques] == [platform["name"]]
    info = resp.techniques[0]
    assert info.version.count(".") == 2
    assert info.title and info.input_kinds and info.output_formats
    assert info.shardable == bool(info.shard_unit)
    schema = json.loads(info.parameters_schema)
    assert schema["type"] == "object"
    assert schema.get("additionalProperties") is False, "unknown parameters must be refused"
    defs = schema.get("$defs", {})
    for field, prop in schema["properties"].items():
        if "$ref" in prop and not prop.get("description"):  # a step model: described by its own schema
            sub = defs[prop["$ref"].rsplit("/", 1)[-1]]
            assert sub.get("description"), f"parameter {field!r} (a step model) has no description"
            for key, p in sub["properties"].items():
                assert p.get("description"), f"parameter {field}.{key} has no description"
        else:
            assert prop.get("description"), f"parameter {field!r} has no description"


def test_describe_unknown_technique_is_not_found(client):
    with pytest.raises(errors.UnknownTechnique) as err:
        client.describe("no-such-technique")
    assert err.value.code == grpc.StatusCode.NOT_FOUND


def test_health_is_serving(platform):
    for server in ("service", "gateway"):
        with grpc.insecure_channel(platform[server].address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            for service in ("", "panreduce.v1.Reducer"):
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_contract(platform):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with grpc.insecure_channel(platform["service"].address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"panreduce.v1.Reducer", "grpc.health.v1.Health"} <= names


# -- bad requests -----------------------------------------------------------------------
def test_unknown_parameter_is_named(client, platform, example):
    with pytest.raises(errors.InvalidParameters) as err:
        client.reduce(platform["name"], example["inputs"], {**example["params"], "no_such_parameter": 1})
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in err.value.violations] == ["no_such_parameter"]


def _numeric_fields(schema: dict) -> list[tuple[str, dict]]:
    return [(k, p) for k, p in schema["properties"].items() if p.get("type") in ("number", "integer")]


def test_wrong_type_and_out_of_range_are_named(client, platform, example):
    schema = json.loads(client.describe().techniques[0].parameters_schema)
    numeric = _numeric_fields(schema)
    if not numeric:
        pytest.skip("the technique has no numeric parameters")
    field, prop = numeric[0]
    with pytest.raises(errors.InvalidParameters) as err:
        client.reduce(platform["name"], example["inputs"], {**example["params"], field: "not a number"})
    assert field in [v.field for v in err.value.violations]
    bounded = [(k, p) for k, p in numeric if "minimum" in p or "exclusiveMinimum" in p]
    if bounded:
        field, prop = bounded[0]
        low = prop.get("minimum", prop.get("exclusiveMinimum")) - 1
        with pytest.raises(errors.InvalidParameters) as err:
            client.reduce(platform["name"], example["inputs"], {**example["params"], field: low})
        (violation,) = [v for v in err.value.violations if v.field == field]
        assert "allowed" in violation.description


def test_missing_input_is_not_found(client, platform, example, tmp_path):
    missing = str(tmp_path / "does-not-exist.nxs")
    with pytest.raises(errors.InputNotFound) as err:
        client.reduce(platform["name"], [missing], example["params"], str(tmp_path / "out"))
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    assert missing in err.value.message
    assert not (tmp_path / "out").exists()


def test_no_inputs_is_invalid(client, platform):
    with pytest.raises(errors.InvalidRequest):
        client.reduce(platform["name"], [], {})


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_input_is_named_and_leaves_nothing(client, platform, example, tmp_path, damage):
    first = Path(example["inputs"][0])
    if first.is_dir():
        pytest.skip("the example's first input is a folder")
    bad = tmp_path / "bad" / first.name
    bad.parent.mkdir()
    data = first.read_bytes()
    bad.write_bytes(
        {"garbage": b"this is not a detector file\n" * 40, "truncated": data[: max(len(data) // 3, 1)], "empty": b""}[
            damage
        ]
    )
    inputs = [str(bad), *example["inputs"][1:]]
    out = tmp_path / "out"
    with pytest.raises(errors.InvalidInput) as err:
        client.reduce(platform["name"], inputs, example["params"], str(out))
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert first.name in err.value.message, err.value.message
    assert not out.exists() or not any(out.iterdir())


# -- a good run --------------------------------------------------------------------------
def test_example_succeeds_with_provenance(client, platform, example, tmp_path):
    out = tmp_path / "out"
    done = client.reduce(platform["name"], example["inputs"], example["params"], str(out))
    assert done.outputs
    formats = {o.format for o in done.outputs}
    assert "json" in formats  # provenance.json
    record = json.loads((out / "provenance.json").read_text())
    assert record["id"] == done.result.provenance_id
    assert record["technique"]["name"] == platform["name"]
    assert record["software"]["python"]
    assert all(len(i["sha256"]) == 64 for i in record["inputs"])
    for o in done.outputs:
        path = Path(o.uri)
        assert path.is_file() and path.stat().st_size == o.size
        if o.format in ("nexus", "nxcansas", "hdf5"):
            with h5py.File(path) as f:
                notes = [
                    g["provenance/data"][()] for g in f.values() if isinstance(g, h5py.Group) and "provenance" in g
                ]
                assert notes, f"{path.name} has no provenance note"
                assert json.loads(notes[0])["id"] == record["id"]
    assert not [p for p in out.rglob("*") if ".partial" in p.name]


def test_cancel_leaves_nothing_behind(client, platform, example, tmp_path):
    """Cancel as soon as the job reports progress: it ends CANCELLED with no output,
    or (if it finished first) with every output; never half."""
    out = tmp_path / "out"
    call = client.reduce_call(make_request(platform["name"], example["inputs"], example["params"], str(out)), 120)
    seen = []
    outcome = "succeeded"
    try:
        for event in call:
            seen.append(event.WhichOneof("kind"))
            if event.HasField("progress"):
                call.cancel()
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.CANCELLED
        outcome = "cancelled"
    assert "accepted" in seen
    files = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    if outcome == "cancelled":
        assert files == []
    else:
        assert "provenance.json" in files


def test_submit_watch_and_idempotency(client, platform, example, tmp_path):
    key = f"contract-{platform['name']}-{tmp_path.name}"
    req = dict(labels={"sample": "contract"}, idempotency_key=key)
    job = client.submit(platform["name"], example["inputs"], example["params"], str(tmp_path / "o"), **req)
    again = client.submit(platform["name"], example["inputs"], example["params"], str(tmp_path / "o"), **req)
    assert again.job_id == job.job_id
    with pytest.raises(errors.AlreadyExists):  # the same key for another request
        client.submit(platform["name"], example["inputs"], example["params"], str(tmp_path / "o2"), **req)
    final = client.wait(job.job_id)
    assert final.state == pb.SUCCEEDED, final.failure.message
    events = list(client.watch(job.job_id))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].HasField("result")
    resumed = list(client.watch(job.job_id, after_seq=2))
    assert [e.seq for e in resumed] == [e.seq for e in events[2:]]
    assert not (tmp_path / "o2").exists()
    listed = client.list_jobs(labels={"sample": "contract"})
    assert job.job_id in [j.job_id for j in listed]


def test_unknown_job_is_not_found(client):
    with pytest.raises(errors.JobNotFound):
        client.get_job("no-such-job")
    with pytest.raises(errors.JobNotFound):
        client.cancel("no-such-job")


def test_drain_refuses_new_jobs(platform, example, tmp_path):
    """A draining server says NOT_SERVING and refuses new jobs with UNAVAILABLE."""
    stores = Stores(tmp_path / "store")
    running = start_technique(technique_class(platform["name"]), stores=stores)
    stopper = threading.Thread(target=running.drain_and_stop, args=(5,))
    running.manager.stop_accepting()
    running.set_serving(False)
    with Client(running.address, timeout=30) as c:
        assert c.health() == "NOT_SERVING"
        with pytest.raises(errors.Unavailable):
            c.reduce(platform["name"], example["inputs"], example["params"], str(tmp_path / "o"))
    stopper.start()
    stopper.join(30)
    shutil.rmtree(tmp_path / "store", ignore_errors=True)
