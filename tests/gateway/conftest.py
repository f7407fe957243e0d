"""The `panreduce` command as a user runs it: real processes, real gRPC on loopback,
real I16 files. ``cli`` runs one command; ``served`` is `panreduce serve` on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from panreduce import errors
from panreduce.client import Client

PANREDUCE = str(Path(sys.executable).parent / "panreduce")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> Path:
    """One XDG cache for the session's commands (the techniques descriptions)."""
    return tmp_path_factory.mktemp("xdg-cache")


@pytest.fixture
def cli(tmp_path, cli_cache):
    """``cli("reduce", "scan", FILE, cwd=..., env=...)`` -> CompletedProcess (text)."""

    def run(
        *args: str, cwd: Path | None = None, timeout: float = 180, env: dict | None = None, stderr=subprocess.PIPE
    ) -> subprocess.CompletedProcess:
        full_env = {**os.environ, "XDG_CACHE_HOME": str(cli_cache), **(env or {})}
        full_env.pop("PANREDUCE_GATEWAY", None)
        return subprocess.run(
            [PANREDUCE, *args],
            cwd=cwd or tmp_path,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=timeout,
            env=full_env,
        )

    return run


@pytest.fixture
def served(tmp_path, cli_cache):
    """`panreduce serve --techniques scan` as its own process on a free loopback port."""
    port = free_port()
    store = tmp_path / "store"
    log = open(tmp_path / "serve.log", "w+")  # read after the process ends
    env = {**os.environ, "XDG_CACHE_HOME": str(cli_cache)}
    proc = subprocess.Popen(
        [PANREDUCE, "serve", "--port", str(port), "--store", str(store), "--techniques", "scan"],
        cwd=tmp_path,
        stderr=log,
        text=True,
        env=env,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with Client(address, timeout=2) as c:
                if c.health() == "SERVING":
                    break
        except errors.PanReduceError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log.seek(0)
            pytest.fail(f"panreduce serve did not start: {log.read()}")
        time.sleep(0.2)
    yield {"address": address, "port": port, "proc": proc, "store": store}
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    log.close()
