"""What every PaNReduce gRPC server shares: error mapping for RPC methods, health,
reflection, metrics, and a graceful SIGTERM drain."""

from __future__ import annotations

import functools
import inspect
import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from panreduce import rpc
from panreduce.jobs import JobManager
from panreduce.liveness import Limited, StreamLimit
from panreduce.metrics import RPCS
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

log = logging.getLogger("panreduce.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Reducer"].full_name


class AbortWith(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised inside an RPC method to end it with the status of a Failure."""

    def __init__(self, failure: pb.Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def rpc_method(fn: Callable) -> Callable:
    """Decorate a servicer method: PanReduceErrors become rich statuses, anything else
    INTERNAL (logged with an incident id). Works for unary and streaming methods; the
    servicer's ``name`` labels the metrics."""
    method = fn.__name__

    def fail(self, exc: BaseException, context: grpc.ServicerContext) -> None:  # noqa: ANN001
        failure = exc.failure if isinstance(exc, AbortWith) else rpc.failure_of(exc)
        RPCS.labels(self.name, method, failure.code).inc()
        rpc.abort_failure(context, failure)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(self, request, context):  # noqa: ANN001, ANN202
            try:
                yield from fn(self, request, context)
            except Exception as exc:  # noqa: BLE001
                fail(self, exc, context)
            else:
                RPCS.labels(self.name, method, "OK").inc()
        return stream

    @functools.wraps(fn)
    def unary(self, request, context):  # noqa: ANN001, ANN202
        try:
            response = fn(self, request, context)
        except Exception as exc:  # noqa: BLE001
            fail(self, exc, context)
        RPCS.labels(self.name, method, "OK").inc()
        return response
    return unary


@dataclass
class RunningServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    name: str
    manager: JobManager | None = None

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
        if self.manager is not None:
            self.manager.shutdown(wait=False)


def start_server(servicer: pb_grpc.ReducerServicer, *, address: str = "127.0.0.1:0", name: str,
                 manager: JobManager | None = None, max_workers: int = 32,
                 tls: tuple[bytes, bytes] | None = None) -> RunningServer:
    """Start a gRPC server with the Reducer service, health and reflection.

    ``tls``: (certificate chain PEM, private key PEM) to serve TLS on the port.
    Health is NOT_SERVING until the caller calls ``set_serving(True)``.
    """
    # Long streams are bounded (panreduce.liveness); the pool holds them all plus
    # ``max_workers`` threads for short calls and health checks.
    limit = StreamLimit(name=name)
    server = grpc.server(ThreadPoolExecutor(max_workers=limit.pool_size(max_workers), thread_name_prefix=f"rpc-{name}"),
                         options=rpc.SERVER_OPTIONS)
    pb_grpc.add_ReducerServicer_to_server(Limited(servicer, limit), server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    if tls is not None:
        cert, key = tls
        port = server.add_secure_port(address, grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"{name}: could not listen on {address}")
    server.start()
    running = RunningServer(server, port, health_servicer, name, manager)
    running.set_serving(False)
    return running


def run_until_signal(servers: list[RunningServer], grace: float = 30.0) -> None:
    """Block until SIGTERM or SIGINT, then drain every server (gateway last is the
    caller's order) and return."""
    stop = threading.Event()

    def on_signal(signum: int, _frame) -> None:  # noqa: ANN001
        log.info("signal %s: draining", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for running in servers:
        running.drain_and_stop(grace)
