"""Liveness under load: long streams never take the threads health checks need.

grpc's synchronous server runs every call, health checks included, on one thread pool,
and a streaming call (Reduce, Watch, Download, Upload) holds its thread for as long as
it lasts. A server therefore admits at most ``max_streams`` long streams at once
(``$PANREDUCE_MAX_STREAMS``, default 200); one more is refused at once with
RESOURCE_EXHAUSTED, reason ``TOO_MANY_STREAMS`` and a retry hint (``retry_after_s``),
instead of queueing behind the others. Its pool has ``max_streams`` threads plus a
reserve for short calls (``max_workers``), so Check, GetJob, Describe and the
Kubernetes gRPC probes are always answered, however many streams are open.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from panreduce import rpc
from panreduce.settings import get_settings
from panreduce.v1 import reduce_pb2 as pb

if TYPE_CHECKING:
    import grpc

LONG_STREAMS = ("Reduce", "Watch", "Download", "Upload")
RETRY_AFTER_S = 1


def max_streams() -> int:
    """Long streams a server admits at once: ``$PANREDUCE_MAX_STREAMS`` (default 200)."""
    return get_settings().max_streams


class StreamLimit:
    """A count of the long streams in flight, refusing those past ``limit``."""

    def __init__(self, limit: int | None = None, *, name: str = "") -> None:
        self.limit = max_streams() if limit is None else max(int(limit), 1)
        self.name = name
        self._slots = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.refused = 0

    def pool_size(self, reserve: int) -> int:
        """Threads for the server's pool: every admitted stream plus ``reserve`` for short calls."""
        return self.limit + max(reserve, 4)

    def _enter(self, context: grpc.ServicerContext) -> None:
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self.refused += 1
            failure = pb.Failure(
                code="RESOURCE_EXHAUSTED",
                reason="TOO_MANY_STREAMS",
                message=f"{self.name or 'the server'} has {self.limit} streams open, its limit; "
                f"retry in {RETRY_AFTER_S} s",
            )
            failure.metadata["retry_after_s"] = str(RETRY_AFTER_S)
            failure.metadata["limit"] = str(self.limit)
            rpc.abort_failure(context, failure)
        with self._lock:
            self.in_flight += 1

    def _exit(self) -> None:
        with self._lock:
            self.in_flight -= 1
        self._slots.release()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` (a bound servicer method) counted against the limit."""
        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                self._enter(context)
                try:
                    yield from fn(request, context)
                finally:
                    self._exit()

            return stream

        @functools.wraps(fn)
        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            self._enter(context)
            try:
                return fn(request, context)
            finally:
                self._exit()

        return unary


class Limited:
    """A Reducer servicer whose long streams go through ``limit`` (everything else as is)."""

    def __init__(self, servicer: Any, limit: StreamLimit) -> None:
        self._servicer = servicer
        self._limit = limit

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._servicer, name)
        if name in LONG_STREAMS and callable(attr):
            return self._limit.wrap(attr)
        return attr
