"""Services check the caller's locations too (panreduce.scope; defence in depth): a
caller that holds the service token, but not the gateway's check, is refused another
proposal's data, however it names it; a gateway whose own check is broken still cannot
hand a service another proposal's path. Real servers on loopback; the gateway's job
table in SQLite and PostgreSQL."""

from __future__ import annotations

import os

import grpc
import pytest
from service_support import SERVICE_TOKEN, access_for, proposal_data, toy_platform

from panreduce import errors, locations
from panreduce.client import Client
from panreduce.scope import SCOPE_HEADER, Scope, job_scope
from panreduce.serving import SERVICE_TOKEN_HEADER
from panreduce.sqlstore import SqliteJobStore
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc
from panreduce_gateway.gateway import GatewayService

SERVER_FAULTS = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        out = call()
        if hasattr(out, "__iter__") and not isinstance(out, pb.Job):
            out = list(out)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, repr(out)[:300]


def alice_scope(root, stores: Stores, job_id: str = "j-test") -> Scope:
    """What the gateway sends for alice (proposal pA)."""
    return job_scope(
        access_for(root).allowed("pA"),
        uploads=stores.uploads.root,
        proposal="pA",
        extra=[stores.default_output(job_id), stores.scratch_uri(job_id)],
    )


def test_a_token_holder_is_refused_other_proposals_paths_at_the_service(tmp_path):
    files = proposal_data(tmp_path)
    a, b = files["pA"].parent, files["pB"].parent
    (a / "to-b.npy").symlink_to(files["pB"])
    (a / "b-folder").symlink_to(b, target_is_directory=True)
    mixed = a / "mixed"
    mixed.mkdir()
    (mixed / "mine.npy").write_bytes(files["pA"].read_bytes())
    (mixed / "theirs.npy").symlink_to(files["pB"])
    with toy_platform(tmp_path) as (service, _, _), grpc.insecure_channel(service.address) as channel:
        stub = pb_grpc.ReducerStub(channel)
        stores = Stores(tmp_path / "store")
        token = (SERVICE_TOKEN_HEADER, SERVICE_TOKEN)
        scoped = [token, (SCOPE_HEADER, alice_scope(tmp_path, stores).encode())]

        def reduce(inputs, output="", md=scoped):
            req = pb.ReduceRequest(technique="toy", inputs=inputs, output=output)
            return _code(lambda: stub.Reduce(req, metadata=md, timeout=30))

        # the token alone, without the gateway's scope: no data call is served
        for what, call in [
            (
                "Reduce",
                lambda: stub.Reduce(
                    pb.ReduceRequest(technique="toy", inputs=[str(files["pA"])]), metadata=[token], timeout=10
                ),
            ),
            (
                "Submit",
                lambda: stub.Submit(
                    pb.ReduceRequest(technique="toy", inputs=[str(files["pA"])]), metadata=[token], timeout=10
                ),
            ),
            ("Download", lambda: stub.Download(pb.DownloadRequest(uri=str(files["pB"])), metadata=[token], timeout=10)),
            (
                "GetMetadata",
                lambda: stub.GetMetadata(pb.MetadataRequest(uri=str(files["pB"])), metadata=[token], timeout=10),
            ),
        ]:
            code, details = _code(call)
            assert code == grpc.StatusCode.PERMISSION_DENIED, (what, code, details)
            assert SCOPE_HEADER in details
        # alice's scope naming bob's data, every way
        attacks = [
            [str(files["pB"])],
            ["file://" + str(files["pB"])],
            [str(b) + "/"],
            ["file://" + str(a) + "/%2e%2e/pB/x.npy"],
            [str(a / "to-b.npy")],
            [str(a / "b-folder") + "/"],
            [str(a / "b-folder" / "x.npy")],
            [str(mixed) + "/"],
            [str(files["pA"]), str(files["pB"])],
        ]
        for inputs in attacks:
            code, details = reduce(inputs)
            assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT), (inputs, code)
            # bob's values (10..40, sum 100) never come back; paths are stripped first, as
            # pytest's temporary folder may itself contain "100" (pytest-100)
            leaked = details.replace(str(tmp_path), "<tmp>")
            assert "10.0" not in leaked and "100" not in leaked
        code, _ = reduce([str(files["pA"])], output=str(b / "stolen"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert not (b / "stolen").exists()
        for uri in (str(files["pB"]), str(a / "to-b.npy"), "file://" + str(a) + "/%2e%2e/pB/x.npy"):
            for call in (
                lambda uri=uri: stub.Download(pb.DownloadRequest(uri=uri), metadata=scoped, timeout=10),
                lambda uri=uri: stub.GetMetadata(pb.MetadataRequest(uri=uri), metadata=scoped, timeout=10),
            ):
                code, details = _code(call)
                assert code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT), (uri, code)
        assert {j.request.inputs[0] for j in service.manager.list(pb.ListJobsRequest())} <= set()  # nothing ran
        # her own data under her scope is served (the output: her folder, or the job's default)
        code, details = reduce([str(files["pA"])], output=str(a / "out"))
        assert code == grpc.StatusCode.OK, details
        code, details = reduce([str(files["pA"])], output=stores.default_output("j-test"))
        assert code == grpc.StatusCode.OK, details
        # a malformed scope is the caller's mistake, never INTERNAL
        for bad in (
            "",
            "[",
            "{}",
            '[""]',
            "[1]",
            '["/x%00"]',
            "x" * 20_000,
            '["/a"' + ',"/b"' * 100 + "]",
            '["/a/../b"]',
        ):
            code, _ = reduce([str(files["pA"])], md=[token, (SCOPE_HEADER, bad)])
            assert code not in SERVER_FAULTS and code != grpc.StatusCode.OK, (bad, code)


class Checkless(GatewayService):
    """A gateway with its own location check broken (passes every input and output on
    as given): only the services' check stands between alice and bob's data."""

    def _check_request_uris(self, identity, proposal, request):
        return list(request.inputs), request.output


@pytest.fixture(params=["sqlite", "postgresql"])
def job_store(request, tmp_path):
    if request.param == "sqlite":
        return SqliteJobStore(tmp_path / "jobs.sqlite")
    from panreduce_gateway.pgstore import PostgresJobStore

    return PostgresJobStore(request.getfixturevalue("pg_database"))


def test_a_gateway_that_fails_to_check_still_cannot_give_a_service_bobs_data(tmp_path, job_store, monkeypatch):
    files = proposal_data(tmp_path)
    monkeypatch.setattr("service_support.GatewayService", Checkless)
    with toy_platform(tmp_path, access=access_for(tmp_path), store=job_store) as (service, gw, gateway):
        assert isinstance(gateway, Checkless)
        with Client(gw.address, token="alice-token", timeout=30) as alice:
            with pytest.raises(errors.PermissionDenied, match="outside the locations the gateway gave"):
                alice.reduce("toy", [str(files["pB"])], {})
            with pytest.raises(errors.PermissionDenied):
                alice.reduce("toy", [str(files["pA"])], {}, str(files["pB"].parent / "stolen"))
            assert not (files["pB"].parent / "stolen").exists()
            assert alice.reduce("toy", [str(files["pA"])], {}).summary["total"] == pytest.approx(10.0)
            mine = alice.upload(files["pA"])
            assert alice.reduce("toy", [mine.uri], {}).summary["total"] == pytest.approx(10.0)
        with Client(gw.address, token="bob-token", timeout=30) as bob:
            # bob's split job: shards write to the job's scratch and merge from it, all in scope
            (files["pB"].parent / "y.npy").write_bytes(files["pB"].read_bytes())
            split = bob.reduce("toy", [str(files["pB"]), str(files["pB"].parent / "y.npy")], {}, split=2)
            assert split.summary["total"] == pytest.approx(200.0)
        assert all(j.proposal in ("pA", "pB") for j in service.manager.list(pb.ListJobsRequest()))


def test_scope_compares_resolved_locations_by_whole_components(tmp_path):
    (tmp_path / "data" / "pA").mkdir(parents=True)
    (tmp_path / "data" / "pAB").mkdir(parents=True)
    scope = Scope.of([str(tmp_path / "data" / "pA") + "/", "s3://beamline/pA/"])
    assert scope.admits(locations.resolve(str(tmp_path / "data" / "pA" / "x.nxs")))
    assert not scope.admits(locations.resolve(str(tmp_path / "data" / "pAB" / "x.nxs")))
    assert scope.admits(locations.resolve("s3://beamline/pA/run/1.nxs"))
    assert not scope.admits(locations.resolve("s3://beamline/pAB/1.nxs"))
    assert not scope.admits(locations.resolve("s3://other/pA/1.nxs"))
    assert Scope.decode(scope.encode()) == scope
    assert Scope.decode("*").admits(locations.resolve("/anything"))
    os.symlink(tmp_path / "data" / "pAB", tmp_path / "data" / "pA" / "link")
    assert not scope.admits(locations.resolve(str(tmp_path / "data" / "pA" / "link" / "x.nxs")))
