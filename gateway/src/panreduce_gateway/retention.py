"""Retention: results are kept at least the configured time (default 90 days, the
facility minimum of three months); older ones can be listed and deleted.

Only finished jobs count: the outputs of a queued or running job are never touched,
and nothing younger than the retention is ever listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from panreduce.jobs import TERMINAL, JobStore
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb

DEFAULT_DAYS = 90


@dataclass(frozen=True)
class Expired:
    job_id: str
    technique: str
    proposal: str
    finished: datetime
    outputs: tuple[pb.Output, ...]

    @property
    def size(self) -> int:
        return sum(o.size for o in self.outputs)


def finished_at(job: pb.Job) -> datetime:
    ts = job.finished if job.HasField("finished") else job.created
    return datetime.fromtimestamp(ts.ToNanoseconds() / 1e9, UTC)


def expired(store: JobStore, *, days: float = DEFAULT_DAYS, now: datetime | None = None) -> list[Expired]:
    """Finished jobs whose end is more than ``days`` before ``now``, oldest first."""
    if days <= 0:
        raise ValueError("the retention must be a positive number of days")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    out = []
    for job in store.list(pb.ListJobsRequest()):
        if job.state not in TERMINAL:
            continue
        end = finished_at(job)
        if end < cutoff:
            out.append(Expired(job.job_id, job.technique, job.proposal, end, tuple(job.result.outputs)))
    return sorted(out, key=lambda e: e.finished)


def apply(store: JobStore, stores: Stores, items: list[Expired]) -> list[str]:
    """Delete the outputs (and their result folders when emptied) and the job records."""
    deleted = []
    for item in items:
        job = store.get(item.job_id)
        if job is None or job.state not in TERMINAL:
            continue  # it changed since it was listed
        folders = set()
        for o in item.outputs:
            target = stores.for_uri(o.uri)
            if hasattr(target, "delete"):
                target.delete(o.uri)
                deleted.append(o.uri)
            elif "://" not in o.uri:
                p = Path(o.uri)
                p.unlink(missing_ok=True)
                deleted.append(o.uri)
                folders.add(p.parent)
        for folder in folders:
            try:
                folder.rmdir()  # only if now empty
            except OSError:
                pass
        store.delete(item.job_id)
    return deleted
