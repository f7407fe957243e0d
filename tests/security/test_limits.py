"""Limits on every request field, checked at the edge (gateway and service), and caller
mistakes that used to be INTERNAL: each attack of issue 12 as a regression test through
a real gateway and a real scan service on loopback."""

from __future__ import annotations

import time

import grpc
import h5py
import numpy as np
import pytest
from google.protobuf import struct_pb2
from limits_support import platform, status_of, upload_chunks, violations_of, write_scan
from stores_support import STORES, job_store

from panreduce import errors, limits, rpc
from panreduce.kit.readers import read_dataset
from panreduce.v1 import reduce_pb2 as pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module", params=STORES)
def plat(request, tmp_path_factory):
    """The platform with the gateway's job table in SQLite or PostgreSQL."""
    root = tmp_path_factory.mktemp("limits")
    with job_store(request.param, root, request) as store, platform(root, job_store=store) as p:
        yield p


def reduce_request(plat, **fields) -> pb.ReduceRequest:
    req = pb.ReduceRequest(technique="scan", inputs=[str(plat.scan)])
    for key, value in fields.items():
        if key == "labels":
            req.labels.update(value)
        elif key == "inputs":
            req.inputs[:] = value
        else:
            setattr(req, key, value)
    return req


def jobs_now(plat) -> int:
    return len(plat.gateway_service.manager.list(pb.ListJobsRequest()))


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_two_40_mb_labels_are_refused_and_listjobs_still_works(plat, address):
    stub = plat.stub(getattr(plat, address))
    before = jobs_now(plat)
    huge = "x" * (40 * 1024 * 1024)
    for key in ("notes", "more"):
        code, details, err = status_of(stub.Submit, reduce_request(plat, labels={key: huge}), timeout=60)
        assert code == INVALID
        # the field and the limit are named; the 40 MB value is not echoed back
        assert violations_of(err) == {f"labels[{key}]": f"{len(huge)} characters is over the limit of 1024"}
        assert len(details) < 2000
    assert jobs_now(plat) == before
    listed = stub.ListJobs(pb.ListJobsRequest(), timeout=10)
    assert all(len(v) <= limits.LIMITS.label_value_chars for j in listed.jobs for v in j.request.labels.values())


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_split_of_a_billion_and_a_huge_shard_count(plat, address):
    stub = plat.stub(getattr(plat, address))
    code, _, err = status_of(stub.Submit, reduce_request(plat, split=10**9), timeout=10)
    assert code == INVALID
    assert violations_of(err)["split"] == "1000000000 shards is over the limit of 1024"
    req = reduce_request(plat)
    req.shard.index, req.shard.count = 5, 4_000_000_000
    code, _, err = status_of(stub.Submit, req, timeout=10)
    assert code == INVALID and "shard.count" in violations_of(err)


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_a_hundred_thousand_inputs(plat, address):
    stub = plat.stub(getattr(plat, address))
    t0 = time.monotonic()
    code, _details, err = status_of(stub.Submit, reduce_request(plat, inputs=[str(plat.scan)] * 100_000), timeout=30)
    assert code == INVALID
    assert violations_of(err) == {"inputs": "100000 inputs is over the limit of 10000"}
    assert time.monotonic() - t0 < 10  # refused before any of them is looked at


def test_over_long_uri_idempotency_key_and_parameters(plat):
    stub = plat.stub()
    code, _, err = status_of(stub.Submit, reduce_request(plat, inputs=["/" + "a" * 5000]), timeout=10)
    assert code == INVALID and violations_of(err) == {"inputs[0]": "5001 characters is over the limit of 4096"}
    code, _, err = status_of(stub.Submit, reduce_request(plat, output="/tmp/" + "o" * 5000), timeout=10)
    assert code == INVALID and "output" in violations_of(err)
    code, _, err = status_of(stub.Submit, reduce_request(plat, idempotency_key="k" * 300), timeout=10)
    assert code == INVALID and "idempotency_key" in violations_of(err)
    req = reduce_request(plat)
    req.parameters.update({f"p{i}": i for i in range(300)})
    code, _, err = status_of(stub.Submit, req, timeout=10)
    assert code == INVALID and violations_of(err) == {"parameters": "300 parameters is over the limit of 256"}
    req = reduce_request(plat)
    req.parameters.update({"model": "m" * (2 << 20)})
    code, _, err = status_of(stub.Submit, req, timeout=10)
    assert code == INVALID and "bytes is over the limit of 1048576" in violations_of(err)["parameters"]


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_garbage_and_ten_megabyte_page_tokens(plat, address):
    stub = plat.stub(getattr(plat, address))
    for token in ("abc", "-5", "1e3", "٣", "7" * (10 * 1024 * 1024)):
        code, details, err = status_of(stub.ListJobs, pb.ListJobsRequest(page_token=token), timeout=30)
        assert code == INVALID, token[:20]
        assert "page_token" in violations_of(err)
        assert len(details) < 2000
    code, _, err = status_of(stub.ListJobs, pb.ListJobsRequest(page_size=10**6), timeout=10)
    assert code == INVALID and "page_size" in violations_of(err)
    # a token the server issued still pages
    assert stub.ListJobs(pb.ListJobsRequest(page_token="0", page_size=5), timeout=10) is not None


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_nan_and_inf_parameters_name_the_parameter(plat, address):
    stub = plat.stub(getattr(plat, address))
    for value in (float("nan"), float("inf"), -float("inf")):
        req = reduce_request(plat)
        req.parameters.fields["edge_margin_fwhm"].number_value = value
        code, _, err = status_of(stub.Submit, req, timeout=10)
        assert code == INVALID
        assert "finite" in violations_of(err)["edge_margin_fwhm"]


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_output_naming_an_existing_file_is_refused_before_the_job_runs(plat, address, tmp_path):
    stub = plat.stub(getattr(plat, address))
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    before = jobs_now(plat)
    for output in (str(existing), str(existing / "sub")):
        t0 = time.monotonic()
        code, details, _ = status_of(stub.Submit, reduce_request(plat, output=output), timeout=10)
        assert code == INVALID
        assert "is an existing file, not a folder" in details
        assert time.monotonic() - t0 < 2
    assert jobs_now(plat) == before  # no job was queued
    assert existing.read_text() == "keep me"
    # a folder, new or existing, is fine (validate_only: nothing runs)
    ok = stub.Submit(reduce_request(plat, output=str(tmp_path / "new"), validate_only=True), timeout=10)
    assert ok.state == pb.JOB_STATE_UNSPECIFIED


def test_dataset_declaring_a_huge_shape_is_input_too_large(plat, tmp_path):
    path = write_scan(tmp_path / "huge.nxs", huge_1d=True, huge_3d=True)
    assert path.stat().st_size < 200_000
    with h5py.File(path) as f:
        with pytest.raises(errors.InputTooLarge) as caught:
            read_dataset(f["entry1/instrument/pil/data"])
        assert "(1000000, 1000000, 1000)" in caught.value.message
        assert caught.value.metadata["size"] == str(8 * 10**15)
        # the ceiling is configurable; a small dataset under it is read
        assert read_dataset(f["entry1/measurement/eta"], max_bytes=31 * 8).shape == (31,)
        with pytest.raises(errors.InputTooLarge):
            read_dataset(f["entry1/measurement/eta"], max_bytes=31 * 8 - 1)
    # through the gateway: the scan reader meets the 10**15-point column
    code, details, err = status_of(plat.stub().Reduce, reduce_request(plat, inputs=[str(path)]), timeout=60)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert rpc.failure_from_rpc_error(err).reason == "INPUT_TOO_LARGE"
    assert "8000000000000000 bytes is over the limit" in details


def test_memory_error_in_a_job_is_resource_exhausted_not_internal():
    failure = rpc.failure_of(MemoryError("Unable to allocate 7.3 PiB for an array"))
    assert failure.code == "RESOURCE_EXHAUSTED"
    assert failure.reason == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_nul_and_over_long_upload_names(plat, address):
    stub = plat.stub(getattr(plat, address))
    for name, field_text in (
        ("a\x00b.nxs", "contains a NUL character"),
        ("n" * 300 + ".nxs", "304 bytes is over the limit of 255 bytes"),
        ("é" * 200, "400 bytes is over the limit of 255 bytes"),
    ):
        code, _, err = status_of(stub.Upload, iter(upload_chunks(name)), timeout=10)
        assert code == INVALID
        assert violations_of(err) == {"header.name": field_text}
    info = stub.Upload(iter(upload_chunks("fine.nxs")), timeout=10)
    assert info.uri.endswith("/fine.nxs") and info.size == 5


@pytest.mark.parametrize("address", ["gateway", "service"])
def test_job_ids_and_uris_over_their_limits(plat, address):
    stub = plat.stub(getattr(plat, address))
    for call, request in (
        (stub.GetJob, pb.GetJobRequest(job_id="j" * 10_000)),
        (stub.Cancel, pb.CancelRequest(job_id="j" * 10_000)),
        (stub.Watch, pb.WatchRequest(job_id="j" * 10_000)),
        (stub.GetJob, pb.GetJobRequest(job_id="ab\x00cd")),
        (stub.Download, pb.DownloadRequest(uri="file:///" + "d" * 10_000)),
        (stub.GetMetadata, pb.MetadataRequest(uri="/" + "m" * 10_000)),
        (stub.GetMetadata, pb.MetadataRequest(uri="file://[::1/x.nxs")),
    ):
        code, details, _ = status_of(call, request, timeout=10)
        assert code == INVALID, (call, details)
        assert len(details) < 2000


def test_error_details_never_echo_unbounded_input():
    """However long the caller's text, a status's message, metadata and violations stay
    within a few KB, so gRPC's metadata limit never turns them into RESOURCE_EXHAUSTED."""
    long = "ü" * 100_000
    for exc in (
        errors.InputNotFound(long),
        errors.JobNotFound(long),
        errors.ObjectNotFound(long),
        errors.UnknownTechnique(long, ["scan"]),
        errors.InvalidInput(long, "broken"),
        errors.InvalidRequest(long),
        errors.InvalidParameters([errors.FieldViolation(long, long)] * 50),
    ):
        status = rpc.status_of_failure(rpc.failure_of(exc))
        assert len(status.SerializeToString()) < 6000, type(exc).__name__
        assert len(status.message.encode()) <= rpc.MAX_ERROR_MESSAGE_BYTES + 40
    assert errors.clip("short") == "short"
    clipped = errors.clip("x" * 1000)
    assert len(clipped.encode()) <= errors.ECHO_BYTES and clipped.endswith("(1000 chars)")


def test_long_echoed_values_reach_the_caller_intact_as_a_status(plat):
    """A 50 KB unknown technique name: NOT_FOUND with a clipped message, not
    RESOURCE_EXHAUSTED from an oversized trailer."""
    code, details, _err = status_of(
        plat.stub(plat.service).Describe, pb.DescribeRequest(technique="t" * 50), timeout=10
    )
    assert code == grpc.StatusCode.NOT_FOUND
    name = "€" * 50_000
    req = pb.ReduceRequest(technique="scan", inputs=["/nonexistent/" + name[:1000]])
    code, details, _err = status_of(plat.stub().Submit, req, timeout=10)
    assert code == grpc.StatusCode.NOT_FOUND
    assert len(details.encode()) < 1100


def test_limits_are_one_typed_model():
    assert isinstance(limits.LIMITS, limits.Limits)
    with pytest.raises(Exception):  # noqa: B017 - frozen
        limits.LIMITS.inputs = 10**9  # type: ignore[misc]
    assert limits.page_start("") == 0 and limits.page_start("200") == 200
    s = struct_pb2.Struct()
    s.update({"a": np.float64(1.0).item()})
    limits.check_reduce_request(pb.ReduceRequest(technique="scan", inputs=["x"], parameters=s))
