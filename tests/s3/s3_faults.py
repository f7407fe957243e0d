"""A small HTTP proxy in front of the real S3 server that injects faults (5xx answers,
4xx answers, bodies cut off mid-way) and records every request, so tests can see
retries, ranged reads and their concurrency happen against the real server.

Requests are forwarded unchanged (the Host header included, so SigV4 signatures made
for the proxy's address stay valid at the server)."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection"}


@dataclass
class Seen:
    method: str
    path: str
    range: str
    status: int = 0
    fault: str = ""


@dataclass
class Fault:
    """Answer ``status`` (or cut the body after ``truncate`` bytes) for the next ``times``
    requests that ``match`` (method, path, headers with lower-case names)."""

    match: Callable[[str, str, dict], bool]
    status: int = 0
    truncate: int = -1
    times: int = 1


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()
            self.seen.clear()
            self.max_in_flight = 0

    def _fault_for(self, method: str, path: str, headers: dict) -> Fault | None:
        with self._lock:
            for f in self.faults:
                if f.times > 0 and f.match(method, path, headers):
                    f.times -= 1
                    return f
        return None

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        record = Seen(h.command, h.path, h.headers.get("Range", ""))
        with self._lock:
            self.seen.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            fault = self._fault_for(h.command, h.path, headers)
            if fault is not None and fault.status:
                record.status, record.fault = fault.status, f"status {fault.status}"
                payload = b'<?xml version="1.0"?><Error><Code>Injected</Code></Error>'
                h.send_response(fault.status)
                h.send_header("Content-Type", "application/xml")
                h.send_header("Content-Length", str(len(payload)))
                h.end_headers()
                if h.command != "HEAD":
                    h.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            try:
                conn.request(
                    h.command,
                    h.path,
                    body=body,
                    headers={k: v for k, v in headers.items() if k.lower() not in HOP - {"content-length"}},
                )
                resp = conn.getresponse()
                data = resp.read()
                record.status = resp.status
                h.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        h.send_header(k, v)
                declared = resp.getheader("Content-Length") if h.command == "HEAD" else str(len(data))
                h.send_header("Content-Length", declared or "0")
                if fault is not None and fault.truncate >= 0 and h.command != "HEAD":
                    record.fault = f"cut after {fault.truncate} bytes"
                    h.send_header("Connection", "close")
                    h.end_headers()
                    h.wfile.write(data[: fault.truncate])
                    h.wfile.flush()
                    h.close_connection = True
                    return
                h.end_headers()
                if h.command != "HEAD":
                    h.wfile.write(data)
            finally:
                conn.close()
        finally:
            with self._lock:
                self.in_flight -= 1
