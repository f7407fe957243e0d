"""What every PaNReduce gRPC server shares: error mapping for RPC methods, health,
reflection, metrics, the service credential, and a graceful SIGTERM drain.

The service credential: technique services serve only the gateway. They are started
with a shared secret (``--service-token-file``) and refuse, UNAUTHENTICATED, every call
that does not carry it in the ``x-panreduce-service-token`` metadata; the gateway sends
it on every call. Health checks (the kubelet's probes) and server reflection (the
public contract) stay open. A service without a token refuses to start unless told
``--insecure`` (development only).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import inspect
import logging
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from panreduce import audit, errors, rpc
from panreduce.jobs import JobManager
from panreduce.liveness import Limited, StreamLimit
from panreduce.metrics import RPCS
from panreduce.mtls import ServiceTLS
from panreduce.settings import settings_for
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

log = logging.getLogger("panreduce.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Reducer"].full_name

# The service credential and the caller the gateway acts for, as call metadata.
SERVICE_TOKEN_HEADER = "x-panreduce-service-token"
SUBJECT_HEADER = "x-panreduce-subject"
PROPOSAL_HEADER = "x-panreduce-proposal"
JOB_ID_HEADER = "x-panreduce-job-id"  # the gateway's job id: the one in every output's provenance
SERVICE_TOKEN_ENV = "PANREDUCE_SERVICE_TOKEN_FILE"
MIN_SERVICE_TOKEN_CHARS = 16
MAX_SERVICE_TOKEN_CHARS = 4096
# Open without the credential: health checks (probes) and reflection (the public contract).
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def read_service_token(path: Path | str) -> str:
    """The service token in a file (surrounding whitespace ignored); refuses an empty,
    short (under 16 characters) or non-printable one."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.InvalidRequest(f"cannot read the service token file {path}: {exc}") from None
    if len(text) < MIN_SERVICE_TOKEN_CHARS or len(text) > MAX_SERVICE_TOKEN_CHARS:
        raise errors.InvalidRequest(
            f"the service token in {path} must be {MIN_SERVICE_TOKEN_CHARS} to {MAX_SERVICE_TOKEN_CHARS} "
            f"characters (it has {len(text)}); make one with: openssl rand -hex 32"
        )
    if not text.isascii() or not text.isprintable() or any(c.isspace() for c in text):
        raise errors.InvalidRequest(f"the service token in {path} must be printable ASCII without spaces")
    return text


def service_token_setting(
    path: Path | str | None, *, insecure: bool = False, required: bool = True, env: dict[str, str] | None = None
) -> str | None:
    """The service token from ``path``, else ``$PANREDUCE_SERVICE_TOKEN_FILE``. None
    when there is none and ``insecure`` (or not ``required``); otherwise a missing token
    is an error that says how to give one."""
    path = path or settings_for(env).service_token_file or None
    if path:
        return read_service_token(path)
    if insecure or not required:
        return None
    raise errors.InvalidRequest(
        f"no service token: give --service-token-file FILE (or ${SERVICE_TOKEN_ENV}) with the secret the "
        "gateway sends, or --insecure to serve every caller unauthenticated (development only)"
    )


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str:
    for k, v in metadata or ():
        if k == key:
            return v.decode("utf-8", "replace") if isinstance(v, bytes) else v
    return ""


def caller_of(context: grpc.ServicerContext) -> tuple[str, str]:
    """(subject, proposal) the gateway says it calls for (empty when not said)."""
    md = context.invocation_metadata()
    return _metadata_value(md, SUBJECT_HEADER)[:256], _metadata_value(md, PROPOSAL_HEADER)[:256]


def job_id_of(context: grpc.ServicerContext) -> str:
    """The gateway's id of the job a call runs (empty when not said, or not an id)."""
    value = _metadata_value(context.invocation_metadata(), JOB_ID_HEADER)
    return value if 0 < len(value) <= 64 and all(c.isascii() and (c.isalnum() or c in "-_") for c in value) else ""


class ServiceTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type information
    """Refuses, UNAUTHENTICATED, every call without the service token (compared in
    constant time), except health checks and reflection."""

    def __init__(self, token: str, *, name: str = "") -> None:
        self._digest = hashlib.sha256(token.encode()).digest()
        self.name = name

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.startswith(OPEN_METHOD_PREFIXES):
            return continuation(handler_call_details)
        given = _metadata_value(handler_call_details.invocation_metadata, SERVICE_TOKEN_HEADER)
        if given and hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._digest):
            return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        why = "a wrong service token" if given else "no service token"
        log.warning("%s: refused %s with %s", self.name or "server", method.rsplit("/", 1)[-1], why)
        return _refusing(
            handler, errors.Unauthenticated(f"this technique service serves only its gateway: the call came with {why}")
        )


def _refusing(handler: grpc.RpcMethodHandler, exc: errors.PanReduceError) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that ends the call with ``exc``."""

    def deny(_request: object, context: grpc.ServicerContext) -> None:
        rpc.abort(context, exc)

    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)


class ServiceTokenCredentials(rpc.AddMetadata):
    """Client side: adds the service token to every call on a channel."""

    def __init__(self, token: str) -> None:
        super().__init__((SERVICE_TOKEN_HEADER, token))


def with_service_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    """``channel`` sending the service token on every call (unchanged without one)."""
    return grpc.intercept_channel(channel, ServiceTokenCredentials(token)) if token else channel


class AbortWith(Exception):
    """Raised inside an RPC method to end it with the status of a Failure."""

    def __init__(self, failure: pb.Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


F = TypeVar("F", bound=Callable[..., Any])


def rpc_method(fn: F) -> F:
    """Decorate a servicer method: PanReduceErrors become rich statuses, anything else
    INTERNAL (logged with an incident id). Works for unary and streaming methods; the
    servicer's ``name`` labels the metrics."""
    method = fn.__name__

    def fail(self: Any, exc: BaseException, context: grpc.ServicerContext) -> None:
        failure = exc.failure if isinstance(exc, AbortWith) else rpc.failure_of(exc)
        RPCS.labels(self.name, method, failure.code).inc()
        rpc.abort_failure(context, failure)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            audit.set_rpc(method)
            try:
                yield from fn(self, request, context)
            except Exception as exc:
                fail(self, exc, context)
            else:
                RPCS.labels(self.name, method, "OK").inc()

        return cast(F, stream)

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        audit.set_rpc(method)
        try:
            response = fn(self, request, context)
        except Exception as exc:
            fail(self, exc, context)
        RPCS.labels(self.name, method, "OK").inc()
        return response

    return cast(F, unary)


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    name: str
    manager: JobManager | None = None
    extra: list[grpc.Server] = field(default_factory=list)  # e.g. the plain-text health server beside mTLS
    health_port: int = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def drain_and_stop(self, grace: float = 30.0) -> None:
        """Stop taking jobs, let running ones finish for ``grace`` s, stop the rest
        without ending them (:meth:`JobManager.leave`), stop."""
        self.set_serving(False)
        if self.manager is not None:
            self.manager.stop_accepting()
            if not self.manager.drain(grace):
                # Not the caller's cancel: the jobs are left to run again (a restart or a
                # replica of the gateway resumes them; the gateway retries a service's).
                log.warning("%s: jobs still running after %.0f s; leaving them to be resumed", self.name, grace)
                self.manager.leave(f"{self.name} shut down while the job ran; it will resume")
                self.manager.drain(10.0)
        self.server.stop(5.0).wait()
        for other in self.extra:
            other.stop(1.0).wait()
        if self.manager is not None:
            self.manager.shutdown(wait=False)


class _Undecodable:
    """Stands for a request message that could not be parsed (e.g. a string field that
    is not UTF-8): the method then answers INVALID_ARGUMENT instead of gRPC's INTERNAL
    "Exception deserializing request!"."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _refuse(context: grpc.ServicerContext, bad: _Undecodable) -> None:
    context.abort(
        grpc.StatusCode.INVALID_ARGUMENT, f"the request message cannot be parsed: {errors.clip(str(bad.error))}"
    )


def _tolerant(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler`` with a deserializer that never raises and a behaviour that refuses an
    undecodable request (or stream element) as the caller's mistake."""
    decode = handler.request_deserializer

    def deserialize(data: bytes) -> object:
        try:
            return decode(data)
        except Exception as exc:
            return _Undecodable(exc)

    if handler.request_streaming:
        behaviour = handler.stream_unary or handler.stream_stream

        def checked_stream(request_iterator: Iterable[object], context: grpc.ServicerContext) -> Any:
            def requests() -> Iterator[object]:
                for item in request_iterator:
                    if isinstance(item, _Undecodable):  # the methods map kit errors to statuses
                        raise errors.InvalidRequest(
                            f"a stream message cannot be parsed: {errors.clip(str(item.error))}"
                        )
                    yield item

            return behaviour(requests(), context)

        field = "stream_unary" if handler.stream_unary else "stream_stream"
    else:
        behaviour = handler.unary_unary or handler.unary_stream

        def checked_unary(request: object, context: grpc.ServicerContext) -> Any:
            if isinstance(request, _Undecodable):
                _refuse(context, request)
            return behaviour(request, context)

        field = "unary_unary" if handler.unary_unary else "unary_stream"
    replacement = checked_stream if handler.request_streaming else checked_unary
    return handler._replace(request_deserializer=deserialize, **{field: replacement})


class _Capture:
    """Takes the handlers a generated ``add_*Servicer_to_server`` registers."""

    def __init__(self) -> None:
        self.name = ""
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    def add_generic_rpc_handlers(self, _handlers: object) -> None:
        pass

    def add_registered_method_handlers(self, name: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.name, self.handlers = name, handlers


def add_reducer(servicer: pb_grpc.ReducerServicer | Limited, server: grpc.Server) -> None:
    """Register the Reducer service on ``server`` with parse failures refused as
    INVALID_ARGUMENT (see :class:`_Undecodable`)."""
    capture = _Capture()
    pb_grpc.add_ReducerServicer_to_server(servicer, capture)  # type: ignore[no-untyped-call]  # generated, untyped
    handlers = {method: _tolerant(h) for method, h in capture.handlers.items()}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(capture.name, handlers),))
    server.add_registered_method_handlers(capture.name, handlers)


def connection_age_options() -> list[tuple[str, int]]:
    """A server closes each client connection (GOAWAY) after ``$PANREDUCE_MAX_CONNECTION_AGE_S``,
    so a client behind a DNS name (the gateway's ``dns:///`` routes, a headless Service)
    resolves again and connects to replicas that started since. Calls running then keep
    their connection for ``$PANREDUCE_MAX_CONNECTION_AGE_GRACE_S`` (0: until they end, so
    a long job's stream is never cut); new calls go over a new connection."""
    settings = settings_for()
    options: list[tuple[str, int]] = []
    if settings.max_connection_age_s > 0:
        options.append(("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)))
        if settings.max_connection_age_grace_s > 0:
            options.append(("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_s * 1000)))
    return options


def start_server(
    servicer: pb_grpc.ReducerServicer,
    *,
    address: str = "127.0.0.1:0",
    name: str,
    manager: JobManager | None = None,
    max_workers: int = 32,
    tls: tuple[bytes, bytes] | None = None,
    service_token: str | None = None,
    service_tls: ServiceTLS | None = None,
    health_address: str | None = None,
) -> RunningServer:
    """Start a gRPC server with the Reducer service, health and reflection.

    ``tls``: (certificate chain PEM, private key PEM) to serve TLS on the port.
    ``service_token``: refuse every Reducer call without it (health and reflection stay open).
    ``service_tls``: mutual TLS (panreduce.mtls): only clients with a certificate signed
    by its CA get through the handshake. ``health_address``: also answer health checks,
    and nothing else, in plain text there (for probes that cannot do mTLS).
    Health is NOT_SERVING until the caller calls ``set_serving(True)``.
    """
    interceptors = [ServiceTokenInterceptor(service_token, name=name)] if service_token else []
    # Long streams are bounded (panreduce.liveness); the pool holds them all plus
    # ``max_workers`` threads for short calls and health checks.
    limit = StreamLimit(name=name)
    server = grpc.server(
        ThreadPoolExecutor(max_workers=limit.pool_size(max_workers), thread_name_prefix=f"rpc-{name}"),
        options=[*rpc.SERVER_OPTIONS, *connection_age_options()],
        interceptors=interceptors,
    )
    add_reducer(Limited(servicer, limit), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server
    )
    if service_tls is not None:
        port = server.add_secure_port(address, service_tls.server_credentials())
    elif tls is not None:
        cert, key = tls
        port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"{name}: could not listen on {address}")
    extra: list[grpc.Server] = []
    health_port = 0
    if health_address:
        probe = grpc.server(ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"health-{name}"))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, probe)
        health_port = probe.add_insecure_port(health_address)
        if health_port == 0:
            raise OSError(f"{name}: could not listen on {health_address} (health)")
        probe.start()
        extra.append(probe)
    server.start()
    running = RunningServer(server, port, health_servicer, name, manager, extra=extra, health_port=health_port)
    running.set_serving(False)
    return running


class StopSignals:
    """SIGTERM and SIGINT caught from now on (not only once the servers are waited on):
    a process that starts several things (``serve``: services, gateway, web page) takes
    this before the first of them reports ready, so a signal in between still drains."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self._previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum: int, _frame: object) -> None:
        log.info("signal %s: draining", signal.Signals(signum).name)
        self.event.set()

    def wait(self) -> None:
        """Block until a signal came (at once if one came already), then restore the handlers."""
        try:
            while not self.event.wait(0.5):
                pass
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)


def run_until_signal(servers: list[RunningServer], grace: float = 30.0, *, signals: StopSignals | None = None) -> None:
    """Block until SIGTERM or SIGINT (caught since ``signals`` was made, or from now on),
    then drain every server (gateway last is the caller's order) and return."""
    (signals or StopSignals()).wait()
    for running in servers:
        running.drain_and_stop(grace)
