"""The job table and event log in PostgreSQL, for a replicated gateway.

Same interface and catalogue as the SQLite store (``panreduce.sqlstore``), plus
ownership: every job records the gateway instance that runs it, each instance renews a
heartbeat, and ``unfinished()`` hands an instance the unfinished jobs whose runner has
not been seen for ``lease`` seconds (a crashed replica), claiming them atomically with
``FOR UPDATE SKIP LOCKED`` so that no two replicas run the same job.

Idempotency keys are unique per (proposal, owner) by a unique index, and taken with one
``INSERT ... ON CONFLICT DO NOTHING`` so that replicas racing on a key agree on one job;
tables from before (a global UNIQUE key) are migrated when a gateway opens them.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from typing import TYPE_CHECKING, Any, cast

from panreduce.sqlstore import catalogue_rows, list_query
from panreduce.v1 import reduce_pb2 as pb

if TYPE_CHECKING:
    from panreduce.jobs import JobStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    technique TEXT NOT NULL,
    state INTEGER NOT NULL,
    created_ns BIGINT NOT NULL,
    finished_ns BIGINT NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    proposal TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    runner TEXT NOT NULL DEFAULT '',
    job BYTEA NOT NULL,
    request_hash TEXT
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS request_hash TEXT;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_idempotency_key_key;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (proposal, owner, idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_proposal ON jobs (proposal, created_ns);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_ns);
CREATE INDEX IF NOT EXISTS jobs_technique ON jobs (technique, created_ns);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event BYTEA NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS catalogue (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (job_id, key, value)
);
CREATE INDEX IF NOT EXISTS catalogue_key_value ON catalogue (key, lower(value));
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    seen TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""

TERMINAL_STATES = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


class PostgresJobStore:
    """Implements ``panreduce.jobs.JobStore`` over PostgreSQL (``dsn``: a libpq URI)."""

    def __init__(self, dsn: str, *, lease: float = 60.0, heartbeat: float = 10.0) -> None:
        import psycopg  # here: SQLite and in-memory tables (the command line) do not pay for it

        self.instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease = lease
        self._lock = threading.RLock()
        self._db = psycopg.connect(dsn, autocommit=True)
        with self._lock:
            self._db.execute("SELECT pg_advisory_lock(727270)")  # one schema migration at a time
            try:
                self._db.execute(SCHEMA)
            finally:
                self._db.execute("SELECT pg_advisory_unlock(727270)")
        self._beat()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._heartbeat, args=(heartbeat,), daemon=True, name="pgstore-heartbeat"
        )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._db.execute("DELETE FROM gateways WHERE id = %s", (self.instance,))
            self._db.close()

    def _beat(self) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO gateways (id, seen) VALUES (%s, now()) ON CONFLICT (id) DO UPDATE SET seen = now()",
                (self.instance,),
            )

    def _heartbeat(self, every: float) -> None:
        import psycopg

        while not self._stop.wait(every):
            try:
                self._beat()
            except psycopg.Error:
                pass  # the next beat tries again; a long outage lets another replica take over

    # -- JobStore -----------------------------------------------------------------------
    def add(self, job: pb.Job) -> None:
        with self._lock, self._db.transaction():
            self._db.execute(
                "INSERT INTO jobs (job_id, technique, state, created_ns, owner, proposal, idempotency_key, runner, job)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    job.job_id,
                    job.technique,
                    job.state,
                    job.created.ToNanoseconds(),
                    job.owner,
                    job.proposal,
                    job.request.idempotency_key or None,
                    self.instance,
                    job.SerializeToString(),
                ),
            )
            self._index(job)

    def get(self, job_id: str) -> pb.Job | None:
        with self._lock:
            row = self._db.execute("SELECT job FROM jobs WHERE job_id = %s", (job_id,)).fetchone()
        return pb.Job.FromString(row[0]) if row else None

    def put(self, job: pb.Job) -> None:
        finished = job.finished.ToNanoseconds() if job.HasField("finished") else 0
        with self._lock, self._db.transaction():
            self._db.execute(
                "UPDATE jobs SET state = %s, finished_ns = %s, job = %s WHERE job_id = %s",
                (job.state, finished, job.SerializeToString(), job.job_id),
            )
            if job.HasField("result"):
                self._index(job)

    def append_event(self, event: pb.JobEvent) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO events (job_id, seq, event) VALUES (%s, %s, %s) "
                "ON CONFLICT (job_id, seq) DO UPDATE SET event = EXCLUDED.event",
                (event.job_id, event.seq, event.SerializeToString()),
            )

    def events_after(self, job_id: str, after_seq: int) -> list[pb.JobEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM events WHERE job_id = %s AND seq > %s ORDER BY seq", (job_id, after_seq)
            ).fetchall()
        return [pb.JobEvent.FromString(r[0]) for r in rows]

    def by_idempotency_key(self, key: str, *, proposal: str = "", owner: str = "") -> pb.Job | None:
        found = self.find_idempotent(key, proposal=proposal, owner=owner)
        return found[0] if found else None

    def find_idempotent(self, key: str, *, proposal: str, owner: str) -> tuple[pb.Job, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job, request_hash FROM jobs WHERE proposal = %s AND owner = %s AND idempotency_key = %s",
                (proposal, owner, key),
            ).fetchone()
        return (pb.Job.FromString(row[0]), row[1] or "") if row else None

    def add_idempotent(self, job: pb.Job, request_digest: str) -> tuple[pb.Job, str]:
        """Insert-or-fetch in one transaction: a concurrent insert of the same key (another
        replica) makes this one wait for it, do nothing, and read the winner."""
        with self._lock, self._db.transaction():
            inserted = self._db.execute(
                "INSERT INTO jobs (job_id, technique, state, created_ns, owner, proposal, idempotency_key, runner, job,"
                " request_hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (proposal, owner, idempotency_key) DO NOTHING RETURNING job_id",
                (
                    job.job_id,
                    job.technique,
                    job.state,
                    job.created.ToNanoseconds(),
                    job.owner,
                    job.proposal,
                    job.request.idempotency_key,
                    self.instance,
                    job.SerializeToString(),
                    request_digest,
                ),
            ).fetchone()
            if inserted is not None:
                self._index(job)
                return job, request_digest
            row = self._db.execute(
                "SELECT job, request_hash FROM jobs WHERE proposal = %s AND owner = %s AND idempotency_key = %s",
                (job.proposal, job.owner, job.request.idempotency_key),
            ).fetchone()
        row = cast(tuple[Any, ...], row)
        return pb.Job.FromString(row[0]), row[1] or ""

    def unfinished(self) -> list[pb.Job]:
        """Claim and return the unfinished jobs this instance should run: its own, and
        those of gateways not seen for ``lease`` seconds."""
        with self._lock, self._db.transaction():
            rows = self._db.execute(
                """UPDATE jobs SET runner = %(me)s WHERE job_id IN (
                       SELECT j.job_id FROM jobs j LEFT JOIN gateways g ON g.id = j.runner
                       WHERE j.state <> ALL(%(terminal)s)
                         AND (j.runner = %(me)s OR g.seen IS NULL
                              OR g.seen < now() - make_interval(secs => %(lease)s))
                       ORDER BY j.created_ns
                       FOR UPDATE OF j SKIP LOCKED)
                   RETURNING job""",
                {"me": self.instance, "terminal": list(TERMINAL_STATES), "lease": self.lease},
            ).fetchall()
        return sorted((pb.Job.FromString(r[0]) for r in rows), key=lambda j: j.created.ToNanoseconds())

    def list(self, q: pb.ListJobsRequest) -> list[pb.Job]:
        sql, args = list_query(q, ph="%s", like="ILIKE")
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [pb.Job.FromString(r[0]) for r in rows]

    def delete(self, job_id: str) -> None:
        with self._lock, self._db.transaction():
            for table in ("events", "catalogue", "jobs"):
                self._db.execute(f"DELETE FROM {table} WHERE job_id = %s", (job_id,))  # table: one of ours

    def _index(self, job: pb.Job) -> None:
        with self._db.cursor() as cur:
            cur.executemany(
                "INSERT INTO catalogue (job_id, key, value) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(job.job_id, k, v) for k, v in catalogue_rows(job)],
            )


def open_job_store(spec: str | None) -> JobStore | None:
    """A job store from a setting: a ``postgresql://`` DSN, a SQLite file path, or None
    (in memory)."""
    if not spec:
        return None
    if spec.startswith(("postgresql://", "postgres://")):
        from panreduce.settings import get_settings

        settings = get_settings()
        return PostgresJobStore(spec, lease=settings.db_lease, heartbeat=settings.db_heartbeat)
    from panreduce.sqlstore import SqliteJobStore

    return SqliteJobStore(spec)
