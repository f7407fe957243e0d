"""Limits on every field of a request, declared in one place and checked at the edge.

Both the gateway and every technique service call these checks at the top of each RPC,
before anything is stored, queued or opened, so an unbounded request never reaches the
job table (two 40 MB labels would otherwise break ListJobs for everyone) and a caller's
mistake is an INVALID_ARGUMENT naming the field and the limit — never INTERNAL.

The numbers are one typed, frozen model (:class:`Limits`, instance :data:`LIMITS`);
``docs/gateway.md`` lists them. Lengths are in characters unless they say bytes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from urllib.parse import urlsplit

import pydantic
from google.protobuf import struct_pb2

from panreduce import errors
from panreduce.v1 import reduce_pb2 as pb


class Limits(pydantic.BaseModel):
    """The bounds of a request's fields (see docs/gateway.md, "Limits")."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    technique_chars: int = 64
    inputs: int = 10_000  # URIs in one request (a folder prefix counts once)
    uri_chars: int = 4096  # each input, the output, a Download or GetMetadata URI
    labels: int = 64  # labels on one request (and in a ListJobs filter)
    label_key_chars: int = 128
    label_value_chars: int = 1024
    parameters: int = 256  # top-level parameters
    parameters_bytes: int = 1 << 20  # the parameters, serialised
    split: int = 1024  # shards the gateway may split a job into
    shard_count: int = 1024  # shard.count of a request
    idempotency_key_chars: int = 256
    job_id_chars: int = 128
    filter_chars: int = 256  # ListJobs technique, owner, proposal, sample
    page_size: int = 1000  # ListJobs; 0 means the default below
    default_page_size: int = 100
    page_token_chars: int = 20  # a decimal offset this server issued
    upload_name_bytes: int = 255  # one file name component (a file system's limit)
    proposal_chars: int = 128  # x-panreduce-proposal on an Upload
    echoed_chars: int = 200  # caller text echoed in an error's details


LIMITS = Limits()


def _violation(field: str, description: str) -> errors.FieldViolation:
    return errors.FieldViolation(errors.clip(field, 120), description)


def _text(field: str, value: str, limit: int, out: list[errors.FieldViolation], *, what: str = "characters") -> None:
    if len(value) > limit:
        out.append(_violation(field, f"{len(value)} {what} is over the limit of {limit}"))
    elif "\x00" in value:
        out.append(_violation(field, "contains a NUL character"))


def _uri(field: str, uri: str, out: list[errors.FieldViolation]) -> None:
    before = len(out)
    _text(field, uri, LIMITS.uri_chars, out)
    if len(out) == before:
        try:
            urlsplit(uri)
        except ValueError as exc:
            out.append(_violation(field, f"is not a valid URI ({exc})"))


def _count(field: str, n: int, limit: int, noun: str, out: list[errors.FieldViolation]) -> bool:
    if n > limit:
        out.append(_violation(field, f"{n} {noun} is over the limit of {limit}"))
        return False
    return True


def _labels(field: str, labels: Mapping[str, str], out: list[errors.FieldViolation]) -> None:
    if not _count(field, len(labels), LIMITS.labels, "labels", out):
        return
    for key, value in labels.items():
        if len(key) > LIMITS.label_key_chars or "\x00" in key or not key:
            _text(f"{field} key", key, LIMITS.label_key_chars, out)
            if not key:
                out.append(_violation(f"{field} key", "is empty"))
            continue
        _text(f"{field}[{key}]", value, LIMITS.label_value_chars, out)


def _raise(out: list[errors.FieldViolation]) -> None:
    if out:
        raise errors.LimitExceeded(out)


def check_reduce_request(request: pb.ReduceRequest) -> None:
    """Every field of a Reduce/Submit request within :data:`LIMITS`, else LimitExceeded
    (INVALID_ARGUMENT) naming each field and its limit."""
    out: list[errors.FieldViolation] = []
    _text("technique", request.technique, LIMITS.technique_chars, out)
    if _count("inputs", len(request.inputs), LIMITS.inputs, "inputs", out):
        for i, uri in enumerate(request.inputs):
            _uri(f"inputs[{i}]", uri, out)
            if len(out) >= 5:
                break
    _uri("output", request.output, out)
    _text("idempotency_key", request.idempotency_key, LIMITS.idempotency_key_chars, out)
    _labels("labels", request.labels, out)
    if request.split > LIMITS.split:
        out.append(_violation("split", f"{request.split} shards is over the limit of {LIMITS.split}"))
    if request.shard.count > LIMITS.shard_count:
        out.append(_violation("shard.count", f"{request.shard.count} is over the limit of {LIMITS.shard_count}"))
    if _count("parameters", len(request.parameters.fields), LIMITS.parameters, "parameters", out):
        size = request.parameters.ByteSize()
        if size > LIMITS.parameters_bytes:
            out.append(_violation("parameters", f"{size} bytes is over the limit of {LIMITS.parameters_bytes}"))
    _raise(out)


def nonfinite_numbers(value: struct_pb2.Struct | struct_pb2.ListValue | struct_pb2.Value, path: str = "") -> list[str]:
    """Dotted paths of the NaN or infinite numbers in a parameters Struct (which JSON, and
    so the parameter models, cannot take)."""
    found: list[str] = []
    if isinstance(value, struct_pb2.Struct):
        for key, item in value.fields.items():
            found += nonfinite_numbers(item, f"{path}.{key}" if path else key)
    elif isinstance(value, struct_pb2.ListValue):
        for i, item in enumerate(value.values):
            found += nonfinite_numbers(item, f"{path}.{i}")
    else:
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            found.append(path)
        elif kind == "struct_value":
            found += nonfinite_numbers(value.struct_value, path)
        elif kind == "list_value":
            found += nonfinite_numbers(value.list_value, path)
    return found


def check_job_id(job_id: str, field: str = "job_id") -> None:
    """A job id a caller names (Watch, Cancel, GetJob)."""
    out: list[errors.FieldViolation] = []
    if not job_id:
        out.append(_violation(field, "is empty: name a job"))
    _text(field, job_id, LIMITS.job_id_chars, out)
    _raise(out)


def check_uri(uri: str, field: str = "uri") -> None:
    """A URI a caller names (Download, GetMetadata)."""
    out: list[errors.FieldViolation] = []
    if not uri:
        out.append(_violation(field, "is empty: name a file or object"))
    _uri(field, uri, out)
    _raise(out)


def check_technique(name: str, field: str = "technique") -> None:
    out: list[errors.FieldViolation] = []
    _text(field, name, LIMITS.technique_chars, out)
    _raise(out)


def check_list_request(request: pb.ListJobsRequest) -> None:
    """Filters and paging of a ListJobs request (the page token is parsed by :func:`page_start`)."""
    out: list[errors.FieldViolation] = []
    for name in ("technique", "owner", "proposal", "sample"):
        _text(name, getattr(request, name), LIMITS.filter_chars, out)
    _labels("labels", request.labels, out)
    if request.state not in pb.JobState.values():
        out.append(_violation("state", f"{request.state} is not a JobState"))
    if request.page_size > LIMITS.page_size:
        out.append(_violation("page_size", f"{request.page_size} is over the limit of {LIMITS.page_size}"))
    _raise(out)
    page_start(request.page_token)


def page_size(request: pb.ListJobsRequest) -> int:
    return request.page_size or LIMITS.default_page_size


def page_start(token: str) -> int:
    """The offset a page token stands for; a token this server did not issue is
    INVALID_ARGUMENT (never INTERNAL)."""
    if not token:
        return 0
    if len(token) > LIMITS.page_token_chars or not token.isascii() or not token.isdigit():
        raise errors.LimitExceeded(
            [_violation("page_token", "is not a page token this server issued (pass next_page_token back unchanged)")]
        )
    return int(token)


def check_upload_name(name: str, field: str = "header.name") -> None:
    """The file name an upload is kept under: no NUL, no longer than one path component,
    and nothing its upload:// URI could not carry as it is (a location is decoded once
    and refused with control characters, '%', '\\', '?' or '#': such an upload was
    accepted and then could not be named)."""
    out: list[errors.FieldViolation] = []
    if "\x00" in name:
        out.append(_violation(field, "contains a NUL character"))
    else:
        bad = next((c for c in name if ord(c) < 0x20 or ord(c) == 0x7F or c in "%\\?#"), None)
        if bad is not None:
            out.append(
                _violation(field, f"contains {bad!r}, which an upload:// location cannot carry (rename the file)")
            )
    size = len(name.encode("utf-8", "surrogatepass"))
    base = name.rsplit("/", 1)[-1]
    if size > LIMITS.upload_name_bytes or len(base.encode("utf-8", "surrogatepass")) > LIMITS.upload_name_bytes:
        out.append(_violation(field, f"{size} bytes is over the limit of {LIMITS.upload_name_bytes} bytes"))
    _raise(out)


def check_upload_header(header: pb.ObjectHeader) -> None:
    check_upload_name(header.name)
    sha = header.sha256
    if sha and (len(sha) != 64 or any(c not in "0123456789abcdefABCDEF" for c in sha)):
        raise errors.LimitExceeded([_violation("header.sha256", "is not a SHA-256 in hex (64 characters)")])


def check_proposal(proposal: str, field: str = "x-panreduce-proposal") -> None:
    out: list[errors.FieldViolation] = []
    _text(field, proposal, LIMITS.proposal_chars, out)
    _raise(out)
