"""Run the live data page with uvicorn: in the foreground (``panreduce web``) or in a
thread beside the embedded platform (``panreduce serve``)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panreduce_web.app import WebConfig, create_app


def config_from_settings(
    gateway: str,
    *,
    auth: str | None = None,
    public_url: str = "",
    oidc_client_id: str = "",
    oidc_client_secret_file: Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
    access_enabled: bool | None = None,
    **overrides: Any,
) -> WebConfig:
    """A WebConfig from panreduce.settings (the gateway's own: TLS CA, JWT issuer and
    audience) and the command line's flags. ``auth`` default: ``oidc`` when an issuer and
    a client id are known, else ``tokens`` (``none`` when ``access_enabled`` is False)."""
    from panreduce.settings import get_settings

    s = get_settings()
    client_id = oidc_client_id or (s.jwt_audience or "")
    if auth is None:
        if s.jwt_issuer and client_id:
            auth = "oidc"
        else:
            auth = "none" if access_enabled is False else "tokens"
    secret = oidc_client_secret_file.read_text().strip() if oidc_client_secret_file else ""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return WebConfig(
        gateway=gateway,
        auth=auth,
        public_url=public_url or f"http://{shown}:{port}",
        gateway_ca=s.tls_ca.read_bytes() if s.tls_ca else None,
        oidc_issuer=s.jwt_issuer or "",
        oidc_client_id=client_id,
        oidc_client_secret=secret,
        **overrides,
    )


@dataclass
class RunningWeb:
    server: Any
    thread: threading.Thread
    port: int
    host: str

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def _socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def start_web(
    config: WebConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tls: tuple[Path, Path] | None = None,
    log_level: str = "warning",
) -> RunningWeb:
    """Serve in a background thread (port 0: a free one); returns once it listens."""
    import uvicorn

    sock = _socket(host, port)
    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs.update(ssl_certfile=str(tls[0]), ssl_keyfile=str(tls[1]))
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_level=log_level, access_log=False, timeout_graceful_shutdown=2, **kwargs)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="panreduce-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the web page did not start on {host}:{port}")
        time.sleep(0.02)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return RunningWeb(server, thread, sock.getsockname()[1], shown)


def serve_web(config: WebConfig, *, host: str, port: int, tls: tuple[Path, Path] | None = None) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    kwargs: dict[str, Any] = {}
    if tls is not None:
        kwargs.update(ssl_certfile=str(tls[0]), ssl_keyfile=str(tls[1]))
    # uvicorn drains on SIGTERM and then raises the signal again with the handler it found: a
    # no-op one makes a drained stop exit 0, as the gRPC services do (not 143, "killed")
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        uvicorn.run(create_app(config), host=host, port=port, log_level="info", access_log=False, **kwargs)
    finally:
        signal.signal(signal.SIGTERM, previous)
