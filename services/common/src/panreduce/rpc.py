"""Errors across the wire: exceptions -> rich gRPC statuses and back.

A server aborts with :func:`to_status` (google.rpc.Status carrying ErrorInfo and,
for bad parameters, BadRequest); a client turns a ``grpc.RpcError`` into the same
``PanReduceError`` subclass with :func:`from_rpc_error`.
"""

from __future__ import annotations

import logging
import uuid
from collections import namedtuple
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from panreduce import errors
from panreduce.v1 import reduce_pb2 as pb

log = logging.getLogger("panreduce.rpc")

# Messages up to 64 MiB (data travels in ~1 MiB chunks; this is headroom for results).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
]
SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
]


# The one table from exceptions to gRPC status codes (the core, ``panreduce.errors``,
# knows no transport). Looked up along the MRO, so a subclass inherits its parent's
# code unless listed itself.
STATUS_CODES: dict[type[errors.PanReduceError], grpc.StatusCode] = {
    errors.InvalidParameters: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    errors.TransferError: grpc.StatusCode.DATA_LOSS,
    errors.InputNotFound: grpc.StatusCode.NOT_FOUND,
    errors.UnknownTechnique: grpc.StatusCode.NOT_FOUND,
    errors.JobNotFound: grpc.StatusCode.NOT_FOUND,
    errors.ObjectNotFound: grpc.StatusCode.NOT_FOUND,
    errors.InputTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.CallerError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.JobCancelled: grpc.StatusCode.CANCELLED,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.InternalError: grpc.StatusCode.INTERNAL,
    errors.PanReduceError: grpc.StatusCode.INTERNAL,
}

# status code -> exception class, for a status whose reason names no class
FALLBACK_CLASSES: dict[grpc.StatusCode, type[errors.PanReduceError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidRequest,
    grpc.StatusCode.NOT_FOUND: errors.ObjectNotFound,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.InputTooLarge,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: errors.PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unauthenticated,
    grpc.StatusCode.CANCELLED: errors.JobCancelled,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: errors.Unavailable,
    grpc.StatusCode.DATA_LOSS: errors.TransferError,
}


def status_code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an exception; INTERNAL for anything unexpected."""
    for cls in type(error).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL


def as_panreduce_error(exc: BaseException) -> errors.PanReduceError:
    """Any exception as a PanReduceError; unexpected ones become InternalError (logged).
    Running out of memory is RESOURCE_EXHAUSTED, never INTERNAL."""
    if isinstance(exc, errors.PanReduceError):
        return exc
    if isinstance(exc, MemoryError):
        log.warning("out of memory: %s", exc)
        return errors.ResourceExhausted(
            f"the job needed more memory than this server could give ({errors.clip(exc)}); "
            "reduce less data per job (fewer frames, a smaller region) or ask for a larger server"
        )
    if isinstance(exc, grpc.RpcError) and not isinstance(exc, grpc.Call):
        # raised by a request stream the caller (or a proxy in front) ended: not a fault here
        log.info("the caller ended its request stream")
        return errors.JobCancelled("the caller ended the request stream before it was complete")
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s", incident, exc_info=exc)
    return errors.InternalError(
        f"internal server error ({type(exc).__name__}; incident {incident}); "
        "this is a fault of the service, not of the request",
        metadata={"incident": incident},
    )


# Bounds of an error's details, so that a status always fits gRPC's metadata limit
# (8 KiB by default; the message travels twice, percent-encoded and in the details).
MAX_ERROR_MESSAGE_BYTES = 1000
MAX_ERROR_METADATA = 8
MAX_ERROR_VIOLATIONS = 8
MAX_VIOLATION_BYTES = 300


def bounded(failure: pb.Failure) -> pb.Failure:
    """``failure`` with every text clipped (``errors.clip``) and at most a few metadata
    entries and violations: no status detail echoes unbounded caller input."""
    out = pb.Failure(
        code=failure.code[:40],
        reason=errors.clip(failure.reason, 64),
        message=errors.clip(failure.message, MAX_ERROR_MESSAGE_BYTES),
    )
    for key in sorted(failure.metadata)[:MAX_ERROR_METADATA]:
        out.metadata[errors.clip(key, 64)] = errors.clip(failure.metadata[key])
    for v in failure.violations[:MAX_ERROR_VIOLATIONS]:
        out.violations.add(field=errors.clip(v.field, 120), description=errors.clip(v.description, MAX_VIOLATION_BYTES))
    if len(failure.violations) > MAX_ERROR_VIOLATIONS:
        out.violations.add(field="...", description=f"{len(failure.violations) - MAX_ERROR_VIOLATIONS} more")
    return out


def failure_of(exc: BaseException) -> pb.Failure:
    err = as_panreduce_error(exc)
    failure = pb.Failure(code=status_code_of(err).name, message=err.message, reason=err.reason)
    failure.metadata.update(err.metadata)
    for v in getattr(err, "violations", []):
        failure.violations.add(field=v.field, description=v.description)
    return bounded(failure)


def status_of_failure(failure: pb.Failure) -> status_pb2.Status:
    failure = bounded(failure)
    code = grpc.StatusCode[failure.code] if failure.code in grpc.StatusCode.__members__ else grpc.StatusCode.INTERNAL
    info = error_details_pb2.ErrorInfo(reason=failure.reason or "ERROR", domain=errors.DOMAIN)
    info.metadata.update(dict(failure.metadata))
    details = [info]
    if failure.violations:
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in failure.violations
                ]
            )
        )
    packed = []
    for d in details:
        a = any_pb2.Any()
        a.Pack(d)
        packed.append(a)
    return status_pb2.Status(code=code.value[0], message=failure.message, details=packed)


def to_status(exc: BaseException) -> grpc.Status:
    return rpc_status.to_status(status_of_failure(failure_of(exc)))


def abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    """Abort the RPC with the rich status for ``exc`` (raises)."""
    context.abort_with_status(to_status(exc))


def abort_failure(context: grpc.ServicerContext, failure: pb.Failure) -> None:
    context.abort_with_status(rpc_status.to_status(status_of_failure(failure)))


def failure_from_rpc_error(err: grpc.RpcError) -> pb.Failure:
    """The Failure a remote server meant, from the status it sent."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    failure = pb.Failure(code=code.name, message=message or code.name)
    try:
        status = rpc_status.from_call(err)
    except (ValueError, AttributeError):
        status = None
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                failure.reason = info.reason
                failure.metadata.update(dict(info.metadata))
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                br = error_details_pb2.BadRequest()
                detail.Unpack(br)
                for v in br.field_violations:
                    failure.violations.add(field=v.field, description=v.description)
    if not failure.reason:
        failure.reason = {
            grpc.StatusCode.UNAVAILABLE: "UNAVAILABLE",
            grpc.StatusCode.CANCELLED: "CANCELLED",
            grpc.StatusCode.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
        }.get(code, "")
    return failure


def error_of_failure(failure: pb.Failure) -> errors.PanReduceError:
    code = grpc.StatusCode[failure.code] if failure.code in grpc.StatusCode.__members__ else grpc.StatusCode.INTERNAL
    return errors.rebuild(
        failure.message,
        failure.reason,
        [errors.FieldViolation(v.field, v.description) for v in failure.violations],
        dict(failure.metadata),
        default=FALLBACK_CLASSES.get(code, errors.InternalError),
    )


def from_rpc_error(err: grpc.RpcError) -> errors.PanReduceError:
    return error_of_failure(failure_from_rpc_error(err))


class _CallDetails(
    namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,  # type: ignore[misc]  # grpc ships no type information
):
    pass


class AddMetadata(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]  # grpc ships no type information
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]  # grpc ships no type information
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]  # grpc ships no type information
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]  # grpc ships no type information
):
    """Client side: add the ``(key, value)`` pairs to the metadata of every call."""

    def __init__(self, *pairs: tuple[str, str]) -> None:
        self.pairs = list(pairs)

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        return _CallDetails(
            d.method, d.timeout, [*(d.metadata or []), *self.pairs], d.credentials, d.wait_for_ready, d.compression
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request_iterator: Any
    ) -> Any:
        return continuation(self._details(details), request_iterator)
