"""The gateway's job table for the attack tests, in SQLite and in PostgreSQL (a real
server on loopback, started by tests/conftest.py's ``pg_server``): every attack class
runs against both (tests/security has no conftest: others add files here too)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STORES = ["sqlite", "postgresql"]


@contextmanager
def job_store(kind: str, folder: Path, request) -> Iterator[object]:
    """A fresh job table of ``kind``; for PostgreSQL a new database, dropped afterwards."""
    if kind == "sqlite":
        from panreduce.sqlstore import SqliteJobStore

        yield SqliteJobStore(folder / "jobs.sqlite")
        return
    import psycopg

    from panreduce_gateway.pgstore import PostgresJobStore

    server = request.getfixturevalue("pg_server")
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    store = PostgresJobStore(server.rsplit("/", 1)[0] + "/" + name)
    try:
        yield store
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
