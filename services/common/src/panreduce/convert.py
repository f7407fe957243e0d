"""Conversions between protobuf messages and plain Python values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, cast

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from panreduce.v1 import reduce_pb2 as pb


def plain(value: Any) -> Any:
    """A JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None, paths to str."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(plain(value))
    return s


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as a dict; whole-number floats come back as ints."""
    return cast(dict[str, Any], _ints(json_format.MessageToDict(s)))


def _ints(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _ints(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_ints(x) for x in v]
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    return v


def message_to_dict(msg: Message) -> dict[str, Any]:
    return cast(dict[str, Any], json_format.MessageToDict(msg, preserving_proto_field_name=True))


def result_to_dict(job: pb.Job) -> dict[str, Any]:
    """The CLI's --json document for a finished job."""
    result = job.result
    return {
        "job_id": job.job_id,
        "technique": job.technique,
        "outputs": [
            {"uri": o.uri, "format": o.format, "role": o.role, "size": o.size, "sha256": o.sha256}
            for o in result.outputs
        ],
        "summary": from_struct(result.summary),
        "provenance": {"id": result.provenance_id, "uri": result.provenance_uri},
    }
