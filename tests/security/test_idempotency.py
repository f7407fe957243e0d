"""Idempotency keys belong to (proposal, subject) and are taken atomically: A and B
racing on one new key each get their own job; B's use of a key tells A nothing; the
same key with another request is ALREADY_EXISTS naming the key -- on the memory,
SQLite and PostgreSQL job stores, through a real gateway on loopback."""

from __future__ import annotations

import sqlite3
import threading

import pytest
from service_support import access_for, proposal_data, toy_platform

from panreduce import errors
from panreduce.client import Client
from panreduce.jobs import now_ts
from panreduce.sqlstore import SqliteJobStore
from panreduce.v1 import reduce_pb2 as pb


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def make_store(request, tmp_path):
    """A factory of job stores over ONE table (two calls: two replicas' connections)."""
    if request.param == "memory":
        shared = []

        def memory():
            from panreduce.jobs import MemoryJobStore

            if not shared:
                shared.append(MemoryJobStore())
            return shared[0]

        yield memory
    elif request.param == "sqlite":
        yield lambda: SqliteJobStore(tmp_path / "jobs.sqlite")
    else:
        from panreduce_gateway.pgstore import PostgresJobStore

        dsn = request.getfixturevalue("pg_database")
        opened = []

        def pg():
            opened.append(PostgresJobStore(dsn))
            return opened[-1]

        yield pg
        for s in opened:
            s.close()


def test_racing_callers_each_get_their_own_job(tmp_path, make_store):
    files = proposal_data(tmp_path)
    with (
        toy_platform(tmp_path, access=access_for(tmp_path), store=make_store()) as (_, gw, gateway),
        Client(gw.address, token="alice-token", timeout=30) as alice,
        Client(gw.address, token="bob-token", timeout=30) as bob,
    ):
        for trial in range(10):
            key = f"fresh-{trial}"
            barrier = threading.Barrier(2)
            got: dict[str, pb.Job] = {}

            def submit(name, client, proposal, barrier=barrier, got=got, key=key):
                barrier.wait()
                got[name] = client.submit("toy", [str(files[proposal])], {}, "", idempotency_key=key)

            threads = [
                threading.Thread(target=submit, args=("alice", alice, "pA")),
                threading.Thread(target=submit, args=("bob", bob, "pB")),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
            assert got["alice"].job_id != got["bob"].job_id, f"trial {trial}: one caller got the other's job"
            assert (got["alice"].owner, got["alice"].proposal) == ("alice", "pA")
            assert (got["bob"].owner, got["bob"].proposal) == ("bob", "pB")
        finals = {j.job_id: j for j in gateway.manager.list(pb.ListJobsRequest())}
        assert len(finals) == 20
        for job in finals.values():
            job = alice.wait(job.job_id) if job.proposal == "pA" else bob.wait(job.job_id)
            # each job reduced its own caller's data: pA sums to 10, pB to 100
            assert job.result.summary["total"] == (10.0 if job.proposal == "pA" else 100.0)


def test_one_after_the_other_a_key_tells_nothing_and_a_reuse_must_match(tmp_path, make_store):
    files = proposal_data(tmp_path)
    with (
        toy_platform(tmp_path, access=access_for(tmp_path), store=make_store()) as (_, gw, _),
        Client(gw.address, token="alice-token", timeout=30) as alice,
        Client(gw.address, token="bob-token", timeout=30) as bob,
    ):
        b_job = bob.submit("toy", [str(files["pB"])], {"scale": 3.0}, "", idempotency_key="run-1")
        a_job = alice.submit("toy", [str(files["pA"])], {}, "", idempotency_key="run-1")
        assert a_job.job_id != b_job.job_id and a_job.owner == "alice"
        # the same request again: the first job
        assert alice.submit("toy", [str(files["pA"])], {}, "", idempotency_key="run-1").job_id == a_job.job_id
        assert bob.submit("toy", [str(files["pB"])], {"scale": 3.0}, "", idempotency_key="run-1").job_id == b_job.job_id
        # the same key, another request: ALREADY_EXISTS naming the key (and only the caller's own job)
        with pytest.raises(errors.AlreadyExists, match="run-1") as caught:
            alice.submit("toy", [str(files["pA"])], {"scale": 2.0}, "", idempotency_key="run-1")
        assert caught.value.metadata["idempotency_key"] == "run-1"
        assert caught.value.metadata["job_id"] == a_job.job_id
        assert alice.wait(a_job.job_id).result.summary["total"] == 10.0
        assert bob.wait(b_job.job_id).result.summary["total"] == 300.0


def test_two_connections_race_on_one_key_and_agree(make_store):
    """The store's insert-or-fetch is atomic across connections (two gateway replicas):
    of 8 threads over two connections taking one key, exactly one job is stored."""
    stores = [make_store(), make_store()]
    barrier = threading.Barrier(8)
    winners = []

    def take(i: int) -> None:
        job = pb.Job(job_id=f"j{i}", technique="toy", state=pb.QUEUED, created=now_ts(), owner="alice", proposal="pA")
        job.request.idempotency_key = "k"
        barrier.wait()
        stored, digest = stores[i % 2].add_idempotent(job, "digest-a")
        winners.append((stored.job_id, digest))

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 8 and len(set(winners)) == 1 and winners[0][1] == "digest-a"
    assert stores[0].find_idempotent("k", proposal="pB", owner="alice") is None
    assert stores[1].find_idempotent("k", proposal="pA", owner="bob") is None


OLD_SQLITE_JOBS = """CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY, technique TEXT NOT NULL, state INTEGER NOT NULL, created_ns INTEGER NOT NULL,
    finished_ns INTEGER NOT NULL DEFAULT 0, owner TEXT NOT NULL DEFAULT '', proposal TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT UNIQUE, job BLOB NOT NULL)"""


def test_an_old_sqlite_table_is_migrated(tmp_path):
    """A table from before (a global UNIQUE key) keeps its jobs; afterwards the key is
    per (proposal, owner)."""
    path = tmp_path / "jobs.sqlite"
    old = pb.Job(job_id="old1", technique="toy", state=pb.SUCCEEDED, created=now_ts(), owner="bob", proposal="pB")
    old.request.idempotency_key = "k"
    with sqlite3.connect(path) as db:
        db.execute(OLD_SQLITE_JOBS)
        db.execute(
            "INSERT INTO jobs (job_id, technique, state, created_ns, owner, proposal, idempotency_key, job)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("old1", "toy", old.state, 1, "bob", "pB", "k", old.SerializeToString()),
        )
    store = SqliteJobStore(path)
    assert store.get("old1").owner == "bob"
    assert store.find_idempotent("k", proposal="pB", owner="bob") == (old, "")  # no digest kept: matches any
    new = pb.Job(job_id="new1", technique="toy", state=pb.QUEUED, created=now_ts(), owner="alice", proposal="pA")
    new.request.idempotency_key = "k"
    assert store.add_idempotent(new, "d")[0].job_id == "new1"  # the old global constraint is gone
    store.close()


def test_an_old_postgresql_table_is_migrated(pg_database):
    import psycopg

    from panreduce_gateway.pgstore import PostgresJobStore

    with psycopg.connect(pg_database, autocommit=True) as db:
        db.execute(
            "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, technique TEXT NOT NULL, state INTEGER NOT NULL,"
            " created_ns BIGINT NOT NULL, finished_ns BIGINT NOT NULL DEFAULT 0, owner TEXT NOT NULL DEFAULT '',"
            " proposal TEXT NOT NULL DEFAULT '', idempotency_key TEXT UNIQUE,"
            " runner TEXT NOT NULL DEFAULT '', job BYTEA NOT NULL)"
        )
        old = pb.Job(job_id="old1", technique="toy", state=pb.SUCCEEDED, owner="bob", proposal="pB")
        db.execute(
            "INSERT INTO jobs (job_id, technique, state, created_ns, owner, proposal, idempotency_key, job)"
            " VALUES ('old1', 'toy', 3, 1, 'bob', 'pB', 'k', %s)",
            (old.SerializeToString(),),
        )
    store = PostgresJobStore(pg_database)
    try:
        new = pb.Job(job_id="new1", technique="toy", state=pb.QUEUED, created=now_ts(), owner="alice", proposal="pA")
        new.request.idempotency_key = "k"
        assert store.add_idempotent(new, "d")[0].job_id == "new1"
        assert store.find_idempotent("k", proposal="pB", owner="bob")[0].job_id == "old1"
    finally:
        store.close()
