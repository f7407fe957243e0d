"""Technique services serve only the gateway: every RPC without the service token (or
with a wrong one) is UNAUTHENTICATED; a service without a token, or without the scope key,
does not start unless told --insecure; the
gateway with the token works end to end and tells the service whom it calls for."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_support import SERVICE_TOKEN, access_for, proposal_data, toy_platform
from stores_support import STORES, job_store

from panreduce import errors
from panreduce.client import Client
from panreduce.scope import SCOPE_HEADER
from panreduce.serving import SERVICE_TOKEN_HEADER, read_service_token, service_token_setting
from panreduce.transfer import file_chunks
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

BIN = Path(sys.executable).parent


def every_rpc(stub: pb_grpc.ReducerStub, data: Path, metadata):
    """Each Reducer RPC, called once with ``metadata``; yields (name, thunk)."""
    req = pb.ReduceRequest(technique="toy", inputs=[str(data)])
    kw = {"metadata": metadata, "timeout": 10}
    yield "Describe", lambda: stub.Describe(pb.DescribeRequest(), **kw)
    yield "Reduce", lambda: list(stub.Reduce(req, **kw))
    yield "Submit", lambda: stub.Submit(req, **kw)
    yield "ListJobs", lambda: stub.ListJobs(pb.ListJobsRequest(), **kw)
    yield "GetJob", lambda: stub.GetJob(pb.GetJobRequest(job_id="j1"), **kw)
    yield "Watch", lambda: list(stub.Watch(pb.WatchRequest(job_id="j1"), **kw))
    yield "Cancel", lambda: stub.Cancel(pb.CancelRequest(job_id="j1"), **kw)
    yield "Upload", lambda: stub.Upload(file_chunks(data, "x.npy"), **kw)
    yield "Download", lambda: list(stub.Download(pb.DownloadRequest(uri=str(data)), **kw))
    yield "GetMetadata", lambda: stub.GetMetadata(pb.MetadataRequest(uri=str(data)), **kw)


@pytest.mark.parametrize(
    "given",
    [None, "wrong-token-of-the-same-length-0123456789ab", SERVICE_TOKEN[:-1]],
    ids=["none", "wrong", "truncated"],
)
def test_every_rpc_without_the_service_token_is_unauthenticated(tmp_path, given):
    data = proposal_data(tmp_path)["pA"]
    with toy_platform(tmp_path) as (service, _, _), grpc.insecure_channel(service.address) as channel:
        stub = pb_grpc.ReducerStub(channel)
        metadata = [(SERVICE_TOKEN_HEADER, given)] if given else None
        codes = {}
        for name, call in every_rpc(stub, data, metadata):
            with pytest.raises(grpc.RpcError) as caught:
                call()
            codes[name] = caught.value.code()
        assert codes == dict.fromkeys(codes, grpc.StatusCode.UNAUTHENTICATED)
        assert len(codes) == 10
        # nothing ran, nothing was stored: the toy service has no job and no upload
        assert service.manager.list(pb.ListJobsRequest()) == []
        assert not (tmp_path / "store" / "uploads").exists() or not any((tmp_path / "store" / "uploads").rglob("*.npy"))
        # health (the kubelet's probe) stays open
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_right_token_is_served(tmp_path):
    data = proposal_data(tmp_path)["pA"]
    with toy_platform(tmp_path) as (service, _, _), grpc.insecure_channel(service.address) as channel:
        stub = pb_grpc.ReducerStub(channel)
        md = [(SERVICE_TOKEN_HEADER, SERVICE_TOKEN), (SCOPE_HEADER, "*")]  # a data call names its scope
        assert stub.Describe(pb.DescribeRequest(), metadata=md, timeout=10).techniques[0].name == "toy"
        events = list(
            stub.Reduce(
                pb.ReduceRequest(technique="toy", inputs=[str(data)], output=str(tmp_path / "direct")),
                metadata=md,
                timeout=30,
            )
        )
        assert events[-1].result.summary["total"] == 10.0


@pytest.mark.parametrize("kind", STORES)
def test_gateway_with_the_token_works_end_to_end_and_names_the_caller(tmp_path, caplog, kind, request):
    files = proposal_data(tmp_path)
    with (
        job_store(kind, tmp_path, request) as store,
        toy_platform(tmp_path, access=access_for(tmp_path), store=store) as (_, gw, _),
    ):
        with (
            caplog.at_level(logging.INFO, logger="panreduce.kit"),
            Client(gw.address, token="bob-token", timeout=30) as c,
        ):
            result = c.reduce("toy", [str(files["pB"])], {"scale": 2.0}, str(tmp_path / "data" / "pB" / "out"))
        assert result.summary["total"] == 200.0  # (10+20+30+40) x 2
        accepted = [r for r in caplog.records if r.name == "panreduce.kit" and "accepted for" in r.getMessage()]
        assert accepted and {(r.subject, r.proposal) for r in accepted} == {("bob", "pB")}


def test_gateway_with_a_wrong_token_is_a_server_fault_not_the_callers(tmp_path):
    files = proposal_data(tmp_path)
    with (
        toy_platform(tmp_path, gateway_token="not-the-service-token-0123456789") as (_, gw, _),
        Client(gw.address, timeout=30) as c,
    ):
        with pytest.raises(errors.InternalError, match="service token"):
            c.submit("toy", [str(files["pA"])], {}, str(tmp_path / "o"))


CREDENTIAL_VARIABLES = (
    "PANREDUCE_SERVICE_TOKEN_FILE",
    "PANREDUCE_SERVICE_TLS_DIR",
    "PANREDUCE_SCOPE_KEY_FILE",
    "PANREDUCE_INSECURE",
)


def _run_service(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES} | (env_extra or {})
    return subprocess.run([*args, "--port", "0"], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("command", [["panreduce-service", "scan"], ["panreduce", "service", "scan"]])
def test_a_service_without_a_token_refuses_to_start(command, tmp_path):
    done = _run_service(str(BIN / command[0]), *command[1:])
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no service token" in lines[0] and "--insecure" in lines[0]
    short = tmp_path / "short"
    short.write_text("abc\n")
    done = _run_service(str(BIN / command[0]), *command[1:], env_extra={"PANREDUCE_SERVICE_TOKEN_FILE": str(short)})
    assert done.returncode == 2 and "16" in done.stderr


@pytest.mark.parametrize("command", [["panreduce-service", "scan"], ["panreduce", "service", "scan"]])
def test_a_service_with_a_credential_but_no_scope_key_refuses_to_start(command, tmp_path):
    """A token alone is not enough: without the gateway's public scope key a token holder
    could name any proposal's locations, so the service does not start (one line, exit 2)."""
    token = tmp_path / "token"
    token.write_text(SERVICE_TOKEN)
    done = _run_service(str(BIN / command[0]), *command[1:], "--service-token-file", str(token))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "no scope key" in lines[0] and "--scope-key-file" in lines[0] and "--insecure" in lines[0]
    done = _run_service(
        str(BIN / command[0]), *command[1:], env_extra={"PANREDUCE_SERVICE_TOKEN_FILE": str(token)}
    )  # the same from the environment
    assert done.returncode == 2 and "no scope key" in done.stderr


@pytest.mark.parametrize(
    ("command", "how"),
    [(["panreduce-service", "scan"], "flag"), (["panreduce", "service", "scan"], "env")],
    ids=["panreduce-service --insecure", "panreduce service PANREDUCE_INSECURE"],
)
def test_an_insecure_service_serves_anyone_and_says_so(command, how, tmp_path):
    """``--insecure`` (or $PANREDUCE_INSECURE=true): no credential, no scope key, and the
    service serves a caller without a token, having logged a warning naming both gaps."""
    from faults_support import free_port, wait_serving

    port = free_port()
    log = tmp_path / "service.log"
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_VARIABLES} | {"PANREDUCE_LOG_FORMAT": "text"}
    argv = [str(BIN / command[0]), *command[1:], "--port", str(port), "--store", str(tmp_path / "store")]
    if how == "flag":
        argv.append("--insecure")
    else:
        env["PANREDUCE_INSECURE"] = "true"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        wait_serving(f"127.0.0.1:{port}")
        with Client(f"127.0.0.1:{port}", timeout=10) as c:
            assert [t.name for t in c.describe().techniques] == ["scan"]
            assert c.list_jobs() == []  # a fresh store, and no token asked for
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    warning = [line for line in text.splitlines() if "WARNING" in line and "INSECURE" in line]
    assert len(warning) == 1, text
    assert "no service credential" in warning[0] and "no scope key" in warning[0]


def test_a_bad_insecure_value_stops_the_service_naming_it():
    done = _run_service(str(BIN / "panreduce-service"), "scan", env_extra={"PANREDUCE_INSECURE": "perhaps"})
    assert done.returncode == 2 and "PANREDUCE_INSECURE" in done.stderr


def test_token_file_rules(tmp_path):
    good = tmp_path / "t"
    good.write_text(f"  {SERVICE_TOKEN}\n")
    assert read_service_token(good) == SERVICE_TOKEN
    assert service_token_setting(None, env={"PANREDUCE_SERVICE_TOKEN_FILE": str(good)}) == SERVICE_TOKEN
    assert service_token_setting(None, insecure=True, env={}) is None
    with pytest.raises(errors.InvalidRequest, match="no service token"):
        service_token_setting(None, env={})
    for bad in ("", "short", "has a space in the middle of it", "x" * 5000):
        good.write_text(bad)
        with pytest.raises(errors.InvalidRequest):
            read_service_token(good)
    with pytest.raises(errors.InvalidRequest, match="cannot read"):
        read_service_token(tmp_path / "missing")


def test_embedded_platform_services_refuse_callers_without_its_token(tmp_path):
    """``panreduce serve``'s services: a caller on their port gets UNAUTHENTICATED; through
    the gateway everything works."""
    from panreduce_gateway.embedded import Platform

    with Platform(["scan"], store_root=tmp_path / "store") as platform:
        assert len(platform.service_token) >= 32
        with Client(platform.services["scan"].address, timeout=10) as c, pytest.raises(errors.Unauthenticated):
            c.list_jobs()
        with Client(platform.address, timeout=10) as c:
            assert [t.name for t in c.describe().techniques] == ["scan"]
        other = Platform(["scan"], store_root=tmp_path / "store2")
        assert other.service_token != platform.service_token  # one per run
