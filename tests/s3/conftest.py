"""Fixtures for the s3:// tests: a real S3-compatible server (Ceph's RADOS Gateway,
started by scripts/s3-server.sh once per session), the store, a fresh prefix per test,
and a fault-injecting proxy in front of the server.

If PANREDUCE_S3_ENDPOINT is already set, that server is used as it is. If the server
cannot be started, the tests are skipped with the reason — and fail under CI=true."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse

import pytest
from s3_faults import FaultProxy

from panreduce.s3 import S3Config, S3Store

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "s3-server.sh"
BUCKET = "panreduce"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"the S3 test server is required under CI: {reason}")
    pytest.skip(f"no S3 test server: {reason}")


def _exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line[len("export ") :].partition("=")
            env[name] = value.strip().strip('"')
    return env


@pytest.fixture(scope="session")
def s3_env():
    """The PANREDUCE_S3_* settings of the running test server."""
    if os.environ.get("PANREDUCE_S3_ENDPOINT"):
        yield {k: v for k, v in os.environ.items() if k.startswith("PANREDUCE_S3_")}
        return
    was_running = subprocess.run([str(SCRIPT), "status"], capture_output=True).returncode == 0
    try:
        done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"{SCRIPT.name} start: {exc}")
    if done.returncode != 0:
        _unavailable(f"{SCRIPT.name} start failed: {done.stderr.strip()[-2000:]}")
    env = _exports(done.stdout)
    try:
        yield env
    finally:
        if not was_running:
            subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def s3_config(s3_env) -> S3Config:
    config = S3Config.from_env(s3_env)
    assert config is not None, "the server's settings do not configure S3"
    return config


@pytest.fixture(scope="session")
def s3(s3_config) -> S3Store:
    return S3Store(s3_config)


@pytest.fixture
def s3_prefix(s3):
    """A fresh s3://panreduce/tests/<id>/ prefix, emptied afterwards."""
    prefix = f"s3://{BUCKET}/tests/{uuid.uuid4().hex[:12]}/"
    yield prefix
    s3.delete_prefix(prefix)


@pytest.fixture
def fault_proxy(s3_config):
    """A FaultProxy in front of the server; ``store_via(proxy, **config changes)`` gives an
    S3Store that talks through it."""
    url = urlparse(s3_config.endpoint)
    proxy = FaultProxy((url.hostname or "127.0.0.1", url.port or 80))
    yield proxy
    proxy.close()
