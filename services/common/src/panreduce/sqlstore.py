"""A persistent job table and event log in SQLite (the gateway's embedded default).

Jobs and events are stored as protobuf bytes beside the indexed columns the catalogue
searches: technique, state, creation time, owner, proposal, idempotency key, and a
key/value table of labels and metadata read from the inputs (sample, user, ...).

An idempotency key is unique per (proposal, owner), by a unique index, and stored with
the digest of the request it was used for; tables made before that (a global UNIQUE key,
no digest) are migrated when opened.

For a replicated gateway, the same interface over PostgreSQL is the way (see
docs/gateway.md); SQLite allows one writer process.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from panreduce.v1 import reduce_pb2 as pb

# The columns of the job table (one definition: the schema and its migration use it).
JOBS_COLUMNS = """
    job_id TEXT PRIMARY KEY,
    technique TEXT NOT NULL,
    state INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    finished_ns INTEGER NOT NULL DEFAULT 0,
    owner TEXT NOT NULL DEFAULT '',
    proposal TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    job BLOB NOT NULL,
    request_hash TEXT
"""

SCHEMA = f"""
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS jobs (
{JOBS_COLUMNS});
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (proposal, owner, idempotency_key);
CREATE INDEX IF NOT EXISTS jobs_proposal ON jobs (proposal, created_ns);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_ns);
CREATE INDEX IF NOT EXISTS jobs_technique ON jobs (technique, created_ns);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalogue (
    job_id TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL COLLATE NOCASE,
    PRIMARY KEY (job_id, key, value)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS catalogue_key_value ON catalogue (key, value);
"""

TERMINAL_STATES = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)

# Before idempotency keys were scoped: a global UNIQUE key and no request digest. The
# table is rebuilt (a column constraint cannot be dropped in place), in one transaction.
_MIGRATE_SCOPED_KEYS = f"""
BEGIN IMMEDIATE;
CREATE TABLE jobs_scoped (
{JOBS_COLUMNS});
INSERT INTO jobs_scoped (job_id, technique, state, created_ns, finished_ns, owner, proposal, idempotency_key, job)
    SELECT job_id, technique, state, created_ns, finished_ns, owner, proposal, idempotency_key, job FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_scoped RENAME TO jobs;
COMMIT;
"""


def _needs_scoped_keys(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone()
    return row is not None and "request_hash" not in row[0]


class SqliteJobStore:
    """Implements ``panreduce.jobs.JobStore`` in one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        with self._lock:
            if _needs_scoped_keys(self._db):
                self._db.executescript(_MIGRATE_SCOPED_KEYS)
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- JobStore -----------------------------------------------------------------------
    def add(self, job: pb.Job) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO jobs (job_id, technique, state, created_ns, owner, proposal, idempotency_key, job)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        job.job_id,
                        job.technique,
                        job.state,
                        job.created.ToNanoseconds(),
                        job.owner,
                        job.proposal,
                        job.request.idempotency_key or None,
                        job.SerializeToString(),
                    ),
                )
                self._index(job)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get(self, job_id: str) -> pb.Job | None:
        with self._lock:
            row = self._db.execute("SELECT job FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return pb.Job.FromString(row[0]) if row else None

    def put(self, job: pb.Job) -> None:
        finished = job.finished.ToNanoseconds() if job.HasField("finished") else 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "UPDATE jobs SET state = ?, finished_ns = ?, job = ? WHERE job_id = ?",
                    (job.state, finished, job.SerializeToString(), job.job_id),
                )
                if job.HasField("result"):
                    self._index(job)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def append_event(self, event: pb.JobEvent) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO events (job_id, seq, event) VALUES (?, ?, ?)",
                (event.job_id, event.seq, event.SerializeToString()),
            )

    def events_after(self, job_id: str, after_seq: int) -> list[pb.JobEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after_seq)
            ).fetchall()
        return [pb.JobEvent.FromString(r[0]) for r in rows]

    def by_idempotency_key(self, key: str, *, proposal: str = "", owner: str = "") -> pb.Job | None:
        found = self.find_idempotent(key, proposal=proposal, owner=owner)
        return found[0] if found else None

    def find_idempotent(self, key: str, *, proposal: str, owner: str) -> tuple[pb.Job, str] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT job, request_hash FROM jobs WHERE proposal = ? AND owner = ? AND idempotency_key = ?",
                (proposal, owner, key),
            ).fetchone()
        return (pb.Job.FromString(row[0]), row[1] or "") if row else None

    def add_idempotent(self, job: pb.Job, request_digest: str) -> tuple[pb.Job, str]:
        """Insert-or-fetch in one transaction, on the unique (proposal, owner, key) index."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "INSERT INTO jobs (job_id, technique, state, created_ns, owner, proposal, idempotency_key, job,"
                    " request_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (proposal, owner, idempotency_key) DO NOTHING",
                    (
                        job.job_id,
                        job.technique,
                        job.state,
                        job.created.ToNanoseconds(),
                        job.owner,
                        job.proposal,
                        job.request.idempotency_key,
                        job.SerializeToString(),
                        request_digest,
                    ),
                )
                if cur.rowcount == 1:
                    self._index(job)
                    stored = (job, request_digest)
                else:
                    row = self._db.execute(
                        "SELECT job, request_hash FROM jobs WHERE proposal = ? AND owner = ? AND idempotency_key = ?",
                        (job.proposal, job.owner, job.request.idempotency_key),
                    ).fetchone()
                    stored = (pb.Job.FromString(row[0]), row[1] or "")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return stored

    def unfinished(self) -> list[pb.Job]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT job FROM jobs WHERE state NOT IN ({','.join('?' * len(TERMINAL_STATES))}) ORDER BY created_ns",
                TERMINAL_STATES,
            ).fetchall()
        return [pb.Job.FromString(r[0]) for r in rows]

    def list(self, q: pb.ListJobsRequest) -> list[pb.Job]:
        sql, args = list_query(q)
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [pb.Job.FromString(r[0]) for r in rows]

    def delete(self, job_id: str) -> None:
        with self._lock:
            for table in ("events", "catalogue", "jobs"):
                self._db.execute(f"DELETE FROM {table} WHERE job_id = ?", (job_id,))  # table: one of ours

    # -- catalogue ------------------------------------------------------------------------
    def _index(self, job: pb.Job) -> None:
        self._db.executemany(
            "INSERT OR IGNORE INTO catalogue (job_id, key, value) VALUES (?, ?, ?)",
            [(job.job_id, k, v) for k, v in catalogue_rows(job)],
        )


def catalogue_rows(job: pb.Job) -> set[tuple[str, str]]:
    """(key, value) rows a job is found by: its labels (as ``label:KEY``), the sample it
    was labelled with, and the metadata read from its inputs (one row per value)."""
    rows = {(f"label:{k}", v) for k, v in job.request.labels.items()}
    if "sample" in job.request.labels:
        rows.add(("sample", job.request.labels["sample"]))
    for k, v in job.result.catalogue.items():
        for part in v.split("; "):
            if part:
                rows.add((k, part))
    return rows


def list_query(q: pb.ListJobsRequest, *, ph: str = "?", like: str = "LIKE") -> tuple[str, list[Any]]:
    """The SELECT for a ListJobs query (newest first); ``ph`` is the driver's placeholder,
    ``like`` its case-insensitive LIKE (SQLite's LIKE is; PostgreSQL needs ILIKE)."""
    where: list[str] = []
    args: list[Any] = []
    in_catalogue = f"job_id IN (SELECT job_id FROM catalogue WHERE key = {ph} AND value {like} {ph})"
    if q.technique:
        where.append(f"technique = {ph}")
        args.append(q.technique)
    if q.state:
        where.append(f"state = {ph}")
        args.append(q.state)
    if q.proposal:
        where.append(f"proposal = {ph}")
        args.append(q.proposal)
    if q.owner:
        where.append(f"(owner = {ph} OR {in_catalogue})")
        args += [q.owner, "user", f"%{q.owner}%"]
    if q.sample:
        where.append(in_catalogue)
        args += ["sample", f"%{q.sample}%"]
    for k, v in q.labels.items():
        where.append(f"job_id IN (SELECT job_id FROM catalogue WHERE key = {ph} AND value = {ph})")
        args += [f"label:{k}", v]
    if q.HasField("created_after"):
        where.append(f"created_ns >= {ph}")
        args.append(q.created_after.ToNanoseconds())
    if q.HasField("created_before"):
        where.append(f"created_ns < {ph}")
        args.append(q.created_before.ToNanoseconds())
    sql = "SELECT job FROM jobs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created_ns DESC"
    return sql, args
