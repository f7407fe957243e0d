"""Retention: results are kept at least the configured time (default 90 days, the
facility minimum of three months); older ones can be listed and deleted.

Only finished jobs count: the outputs of a queued or running job are never touched,
and nothing younger than the retention is ever listed. Uploads (``<store>/uploads`` or,
with ``PANREDUCE_UPLOADS_URI``, the S3 prefix) are kept the same time from their last
change; one that a queued or running job reads is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from panreduce import errors
from panreduce.jobs import TERMINAL, JobStore
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb

if TYPE_CHECKING:
    from panreduce.s3 import S3Store

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


@dataclass(frozen=True)
class ExpiredUpload:
    uri: str  # upload://PROPOSAL/ID/NAME, or the s3:// key of one (a stale temporary key too)
    proposal: str
    modified: datetime
    size: int
    where: str  # the file or object to delete


def expired_uploads(
    store: JobStore, stores: Stores, *, days: float = DEFAULT_DAYS, now: datetime | None = None, s3_uploads: str = ""
) -> list[ExpiredUpload]:
    """Uploads last changed more than ``days`` before ``now`` (oldest first): the files of
    ``<store>/uploads``, and the objects under ``s3_uploads`` when it is an ``s3://`` prefix.
    Uploads named by a job that has not finished are never listed."""
    if days <= 0:
        raise ValueError("the retention must be a positive number of days")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    in_use = {i for job in store.list(pb.ListJobsRequest()) if job.state not in TERMINAL for i in job.request.inputs}
    out = []
    root = stores.uploads.root
    if root is not None and root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.is_symlink() or not path.is_file():
                continue  # only what receive_upload wrote; never through a link
            rel = path.relative_to(root)
            uri = "upload://" + rel.as_posix()
            stat = path.stat()
            when = datetime.fromtimestamp(stat.st_mtime, UTC)
            if when < cutoff and not _used(uri, rel.parts, in_use):
                out.append(ExpiredUpload(uri, rel.parts[0], when, stat.st_size, str(path)))
    if s3_uploads.startswith("s3://"):
        prefix = s3_uploads.rstrip("/") + "/"
        for key_uri, size, when in _s3(stores, prefix).modified(prefix):
            parts = tuple(key_uri[len(prefix) :].split("/"))
            uri = "upload://" + "/".join(parts) if len(parts) == 3 else key_uri
            if when < cutoff and not _used(uri, parts, in_use) and key_uri not in in_use:
                out.append(ExpiredUpload(uri, parts[0] if len(parts) == 3 else "", when, size, key_uri))
    return sorted(out, key=lambda e: e.modified)


def _s3(stores: Stores, uri: str) -> S3Store:
    from panreduce.s3 import S3Store  # obstore only when uploads are on S3

    store = stores.for_uri(uri)
    if not isinstance(store, S3Store):
        raise errors.InvalidRequest(f"{uri}: no S3 store is configured for the uploads")
    return store


def _used(uri: str, parts: tuple[str, ...], in_use: set[str]) -> bool:
    """Whether an unfinished job names this upload, its folder or its proposal's uploads."""
    prefixes = ["upload://" + "/".join(parts[:n]) + "/" for n in range(1, len(parts))]
    return uri in in_use or any(p in in_use for p in prefixes)


def apply_uploads(stores: Stores, items: list[ExpiredUpload]) -> list[str]:
    """Delete expired uploads (and their upload folders when emptied); returns what was deleted."""
    deleted = []
    root = stores.uploads.root
    for item in items:
        if item.where.startswith("s3://"):
            _s3(stores, item.where).delete(item.where)
        else:
            path = Path(item.where)
            if root is None or root.resolve() not in path.resolve().parents:
                raise errors.PermissionDenied(f"{item.where} is not in the uploads area")  # never outside it
            path.unlink(missing_ok=True)
            for folder in (path.parent, path.parent.parent):
                try:
                    if folder != root:
                        folder.rmdir()  # only if now empty
                except OSError:
                    break
        deleted.append(item.uri)
    return deleted
