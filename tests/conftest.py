"""Shared fixtures: real facility files from the dataset registry."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from panreduce import datasets


def _missing(exc: Exception) -> None:
    # Under CI the data must be there: a missing file is a failure, not a skip.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(str(exc))
    pytest.skip(str(exc))


@pytest.fixture(scope="session")
def dataset():
    """``dataset("i16-scans/794932.nxs")`` -> verified local Path (skip, or fail under CI)."""

    def get(name: str) -> Path:
        try:
            return datasets.path(name)
        except datasets.DatasetMissing as exc:
            _missing(exc)
            raise  # unreachable

    return get


@pytest.fixture(scope="session")
def dataset_folder():
    """``dataset_folder("tomo/savu-tiff")`` -> verified local folder."""

    def get(prefix: str) -> Path:
        try:
            return datasets.folder(prefix)
        except datasets.DatasetMissing as exc:
            _missing(exc)
            raise

    return get


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server on loopback (scripts/pg-server.sh); yields its admin DSN."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "pg-server.sh"
    was_running = subprocess.run([str(script), "status"], capture_output=True).returncode == 0
    done = subprocess.run([str(script), "start"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        _missing(RuntimeError(f"PostgreSQL could not be started: {done.stderr.strip()[-1000:]}"))
    dsn = done.stdout.strip().split("=", 1)[1]
    yield dsn
    if not was_running:
        subprocess.run([str(script), "stop"], capture_output=True, timeout=60)


@pytest.fixture
def pg_database(pg_server):
    """A fresh, empty database on the test PostgreSQL server; dropped afterwards."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield pg_server.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="module")
def gateway_for(tmp_path_factory):
    """``gateway_for("sans")`` (or a Technique class) -> the address of a gateway in front
    of that technique's server, both real gRPC servers on loopback, for the module."""
    from panreduce import registry
    from panreduce.kit.server import start_technique
    from panreduce.serving import start_server
    from panreduce.storage import Stores
    from panreduce_gateway.gateway import GatewayService

    started: dict = {}

    def start(technique) -> str:
        cls = registry.load(technique) if isinstance(technique, str) else technique
        if cls.name not in started:
            stores = Stores(tmp_path_factory.mktemp(f"store-{cls.name}"))
            service = start_technique(cls, stores=stores)
            gateway = GatewayService({cls.name: service.address}, stores=stores)
            gw = start_server(gateway, name="gateway", manager=gateway.manager)
            gw.set_serving(True)
            started[cls.name] = (service, gateway, gw, stores)
        return started[cls.name][2].address

    start.stores = lambda name: started[name][3]  # type: ignore[attr-defined]
    yield start
    for service, gateway, gw, _ in started.values():
        gw.drain_and_stop(2)
        gateway.close()
        service.drain_and_stop(2)
