"""One exception hierarchy for PaNReduce.

Science code raises these; it imports no transport (no grpc): the one table from
these exceptions to gRPC status codes lives in the transport layer
(``panreduce.rpc.STATUS_CODES``), which turns them into gRPC statuses with rich
details (google.rpc.ErrorInfo, google.rpc.BadRequest); the client turns them back
into the same exceptions (``rebuild``). Anything that is not a ``PanReduceError`` is
a server fault and is reported as INTERNAL, never as the caller's mistake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc

DOMAIN = "panreduce.v1"

# Caller text echoed in an error (a URI, a job id, a label) is clipped to this many
# UTF-8 bytes, so that no error detail repeats unbounded input.
ECHO_BYTES = 200


def clip(value: object, limit: int = ECHO_BYTES) -> str:
    """``value`` as text of at most ``limit`` UTF-8 bytes (cut at a character boundary,
    with an ellipsis and the full length when cut). The one place where caller input
    echoed in errors is bounded; the status conversion (``panreduce.rpc``) applies it to
    every message, metadata value and field violation too."""
    text = value if isinstance(value, str) else str(value)
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    cut = raw[: max(limit - 24, 8)].decode("utf-8", "ignore")
    return f"{cut}… ({len(text)} chars)"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its name (dotted path) and what is wrong with it."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class PanReduceError(Exception):
    """Base of every error PaNReduce reports to a caller."""

    reason = "ERROR"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata: dict[str, str] = {k: str(v) for k, v in (metadata or {}).items()}

    @property
    def code(self) -> grpc.StatusCode:
        """The gRPC status code of this error: the transport's table
        (``panreduce.rpc.STATUS_CODES``), imported on first use."""
        from panreduce import rpc

        return rpc.status_code_of(self)

    def __str__(self) -> str:
        return self.message


class CallerError(PanReduceError):
    """Something about the request is wrong; the caller can fix it."""


class InvalidParameters(CallerError):
    """Parameters that fail validation; every bad field is named."""

    reason = "BAD_PARAMETERS"

    def __init__(self, violations: Iterable[FieldViolation], *, context: str = "parameters") -> None:
        self.violations = list(violations)
        detail = "; ".join(str(v) for v in self.violations) or "invalid"
        super().__init__(f"invalid {context}: {detail}")


class InvalidRequest(CallerError):
    """A request that is malformed apart from its parameters (no inputs, bad URI, ...)."""

    reason = "BAD_REQUEST"


class LimitExceeded(InvalidRequest):
    """A request field over its limit (``panreduce.limits``): each field is named with
    its limit, as a google.rpc.BadRequest violation."""

    reason = "LIMIT_EXCEEDED"

    def __init__(self, violations: Iterable[FieldViolation]) -> None:
        self.violations = list(violations)
        detail = "; ".join(str(v) for v in self.violations[:5]) or "over a limit"
        super().__init__(
            f"request over its limits: {detail}", metadata={"fields": clip(",".join(v.field for v in self.violations))}
        )


class InputNotFound(CallerError):
    """An input (file, object, prefix) that does not exist."""

    reason = "INPUT_NOT_FOUND"

    def __init__(self, uri: str, detail: str = "no such file or object") -> None:
        super().__init__(f"input not found: {clip(uri)} ({detail})", metadata={"uri": clip(uri)})
        self.uri = uri


class InvalidInput(CallerError):
    """An input that exists but cannot be used: corrupt, truncated, wrong format or
    shape, missing a dataset, containing NaNs where numbers are needed."""

    reason = "CORRUPT_INPUT"

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{clip(source)}: {problem}", metadata={"source": clip(source)})
        self.source = str(source)
        self.problem = problem


class InputTooLarge(CallerError):
    """An input over the configured size limit."""

    reason = "INPUT_TOO_LARGE"

    def __init__(self, source: str, size: int, limit: int) -> None:
        super().__init__(
            f"{clip(source)}: {size} bytes is over the limit of {limit} bytes",
            metadata={"source": clip(source), "size": str(size), "limit": str(limit)},
        )


class UnknownTechnique(CallerError):
    reason = "UNKNOWN_TECHNIQUE"

    def __init__(self, name: str, known: Iterable[str]) -> None:
        known = sorted(known)
        super().__init__(
            f"unknown technique {clip(name)!r} (available: {', '.join(known) or 'none'})",
            metadata={"technique": clip(name)},
        )


class JobNotFound(CallerError):
    reason = "JOB_NOT_FOUND"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {clip(job_id)!r}", metadata={"job_id": clip(job_id)})


class ObjectNotFound(CallerError):
    reason = "OBJECT_NOT_FOUND"

    def __init__(self, uri: str) -> None:
        super().__init__(f"no object {clip(uri)!r}", metadata={"uri": clip(uri)})


class FailedPrecondition(CallerError):
    reason = "FAILED_PRECONDITION"


class PermissionDenied(CallerError):
    reason = "PERMISSION_DENIED"


class AlreadyExists(CallerError):
    """An idempotency key the caller already used for a different request."""

    reason = "ALREADY_EXISTS"

    def __init__(self, key: str, job_id: str = "") -> None:
        super().__init__(
            f"idempotency key {key[:200]!r} was already used for a different request"
            + (f" (job {job_id})" if job_id else "")
            + "; use a new key for a new request",
            metadata={"idempotency_key": key[:200], **({"job_id": job_id} if job_id else {})},
        )


class Unauthenticated(CallerError):
    """No valid credentials with the call."""

    reason = "UNAUTHENTICATED"


class TransferError(CallerError):
    """An upload whose bytes do not match what its header or chunks promised."""

    reason = "TRANSFER_CORRUPT"


class JobCancelled(PanReduceError):
    reason = "CANCELLED"

    def __init__(self, message: str = "cancelled") -> None:
        super().__init__(message)


class DeadlineExceeded(PanReduceError):
    reason = "DEADLINE_EXCEEDED"

    def __init__(self, message: str = "deadline exceeded") -> None:
        super().__init__(message)


class Unavailable(PanReduceError):
    """A service that is down, unreachable or draining; retrying later may work."""

    reason = "UNAVAILABLE"


class ResourceExhausted(PanReduceError):
    """The server ran out of a resource (memory) for this job; a smaller request, or a
    larger server, may work. Not the caller's mistake, nor reported as INTERNAL."""

    reason = "RESOURCE_EXHAUSTED"


class InternalError(PanReduceError):
    """A server fault. The message says what failed, never blames the request."""

    reason = "INTERNAL"


# reason -> exception class, for turning a status back into an exception
_BY_REASON: dict[str, type[PanReduceError]] = {}
for _cls in (
    InvalidParameters,
    InvalidRequest,
    InvalidInput,
    TransferError,
    InputNotFound,
    UnknownTechnique,
    JobNotFound,
    ObjectNotFound,
    InputTooLarge,
    FailedPrecondition,
    PermissionDenied,
    Unauthenticated,
    AlreadyExists,
    JobCancelled,
    LimitExceeded,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    InternalError,
):
    _BY_REASON[_cls.reason] = _cls


def is_caller_error(error: BaseException) -> bool:
    return isinstance(error, CallerError)


def rebuild(
    message: str,
    reason: str = "",
    violations: Iterable[FieldViolation] = (),
    metadata: Mapping[str, str] | None = None,
    *,
    default: type[PanReduceError] | None = None,
) -> PanReduceError:
    """The exception a server meant, from what travelled (``panreduce.rpc`` decodes the
    status): the class of ``reason``; for an unknown reason ``default`` (the transport's
    class for the status code; ``InternalError`` when None), or InvalidParameters when
    field violations came with a default of InvalidRequest."""
    cls = _BY_REASON.get(reason)
    violations = list(violations)
    default = default or InternalError
    err: PanReduceError
    if cls is InvalidParameters or (cls is None and violations and default is InvalidRequest):
        err = InvalidParameters.__new__(InvalidParameters)
        err.violations = violations
    else:
        chosen = cls or default
        err = chosen.__new__(chosen)
    Exception.__init__(err, message)
    if violations:
        err.violations = violations  # type: ignore[attr-defined]
    err.message = message
    err.metadata = dict(metadata or {})
    if isinstance(err, InvalidInput):
        err.source = err.metadata.get("source", "")
        err.problem = message
    if isinstance(err, InputNotFound):
        err.uri = err.metadata.get("uri", "")
    return err
