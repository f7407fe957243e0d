"""Jobs: the table, the event log, idempotency, watching and cancellation.

Both a technique server and the gateway keep their jobs with a :class:`JobManager`.
It stores jobs and their events through a :class:`JobStore` (in memory here; the
gateway may use a persistent one) and runs each job's work in a worker thread
through a *runner*: a callable given a :class:`JobHandle` that reports progress and
logs and returns the result, or raises a ``PanReduceError``.
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from panreduce import errors
from panreduce.rpc import failure_of
from panreduce.settings import get_settings
from panreduce.v1 import reduce_pb2 as pb

log = logging.getLogger("panreduce.jobs")

M = TypeVar("M", bound=Message)
TERMINAL = frozenset({pb.SUCCEEDED, pb.FAILED, pb.CANCELLED})


def history_limit() -> int:
    """Finished jobs a server keeps in memory: ``$PANREDUCE_JOB_HISTORY`` (default 1000)."""
    return get_settings().job_history


def history_seconds() -> float:
    """How long a finished job stays in memory: ``$PANREDUCE_JOB_HISTORY_SECONDS`` (default 3600)."""
    return get_settings().job_history_seconds


def now_ts() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def request_digest(request: pb.ReduceRequest) -> str:
    """A canonical hash (SHA-256 hex) of a request as its caller sent it, without its
    idempotency key and ``validate_only``: the same key with another digest is another
    request."""
    r = pb.ReduceRequest()
    r.CopyFrom(request)
    r.idempotency_key = ""
    r.validate_only = False
    return hashlib.sha256(r.SerializeToString(deterministic=True)).hexdigest()


def key_scope(job: pb.Job) -> tuple[str, str, str]:
    """An idempotency key belongs to the (proposal, owner) that used it."""
    return job.proposal, job.owner, job.request.idempotency_key


class JobStore(Protocol):
    """Where jobs and their events live. Implementations must be thread-safe."""

    def add(self, job: pb.Job) -> None: ...
    def get(self, job_id: str) -> pb.Job | None: ...
    def put(self, job: pb.Job) -> None: ...
    def append_event(self, event: pb.JobEvent) -> None: ...
    def events_after(self, job_id: str, after_seq: int) -> list[pb.JobEvent]: ...
    def by_idempotency_key(self, key: str, *, proposal: str = "", owner: str = "") -> pb.Job | None: ...
    def find_idempotent(self, key: str, *, proposal: str, owner: str) -> tuple[pb.Job, str] | None:
        """The job under (proposal, owner, key) and its request digest ('' if unknown)."""

    def add_idempotent(self, job: pb.Job, request_digest: str) -> tuple[pb.Job, str]:
        """Atomically: add ``job`` unless its (proposal, owner, key) is taken; returns the
        job stored under the key (``job`` itself when added) and its request digest."""

    def list(self, query: pb.ListJobsRequest) -> list[pb.Job]: ...
    def unfinished(self) -> builtins.list[pb.Job]: ...
    def delete(self, job_id: str) -> None: ...


class MemoryJobStore:
    """Jobs kept in this process's memory (technique servers; the embedded gateway)."""

    def __init__(self, *, max_finished: int | None = None, max_age_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, pb.Job] = {}
        # A bounded history: finished jobs beyond ``max_finished`` (default
        # $PANREDUCE_JOB_HISTORY or 1000), or finished more than ``max_age_s`` ago (default
        # $PANREDUCE_JOB_HISTORY_SECONDS or 3600), leave memory, oldest first.
        self.max_finished = history_limit() if max_finished is None else max_finished
        self.max_age_s = history_seconds() if max_age_s is None else max_age_s
        self._finished: dict[str, float] = {}  # job id -> time.monotonic() it finished, in order
        self._events: dict[str, list[pb.JobEvent]] = {}
        self._keys: dict[tuple[str, str, str], tuple[str, str]] = {}  # scope -> (job id, digest)

    def add(self, job: pb.Job, request_digest: str = "") -> None:
        with self._lock:
            self._add(job, request_digest)

    def _add(self, job: pb.Job, request_digest: str) -> None:
        self._jobs[job.job_id] = _copy(job)
        self._events[job.job_id] = []
        if job.request.idempotency_key:
            self._keys[key_scope(job)] = (job.job_id, request_digest)

    def add_idempotent(self, job: pb.Job, request_digest: str) -> tuple[pb.Job, str]:
        with self._lock:
            known = self._keys.get(key_scope(job))
            if known is not None:
                return _copy(self._jobs[known[0]]), known[1]
            self._add(job, request_digest)
            return _copy(job), request_digest

    def find_idempotent(self, key: str, *, proposal: str, owner: str) -> tuple[pb.Job, str] | None:
        with self._lock:
            known = self._keys.get((proposal, owner, key))
            return (_copy(self._jobs[known[0]]), known[1]) if known else None

    def get(self, job_id: str) -> pb.Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return _copy(job) if job is not None else None

    def put(self, job: pb.Job) -> None:
        with self._lock:
            self._jobs[job.job_id] = _copy(job)
            if job.state in TERMINAL and job.job_id not in self._finished:
                self._finished[job.job_id] = time.monotonic()
            expired = self._expired(keep=job.job_id)
        for job_id in expired:
            self.delete(job_id)

    def _expired(self, keep: str) -> list[str]:
        """Finished jobs past the history bounds, oldest first, never ``keep`` (the job
        being stored now); the lock is held."""
        out: list[str] = []
        now = time.monotonic()
        extra = len(self._finished) - self.max_finished
        for job_id, when in self._finished.items():
            if job_id == keep:
                break
            if extra > 0 or now - when > self.max_age_s:
                out.append(job_id)
                extra -= 1
            else:
                break
        for job_id in out:
            del self._finished[job_id]
        return out

    def append_event(self, event: pb.JobEvent) -> None:
        with self._lock:
            self._events[event.job_id].append(_copy(event))

    def events_after(self, job_id: str, after_seq: int) -> list[pb.JobEvent]:
        with self._lock:
            return [_copy(e) for e in self._events.get(job_id, []) if e.seq > after_seq]

    def by_idempotency_key(self, key: str, *, proposal: str = "", owner: str = "") -> pb.Job | None:
        found = self.find_idempotent(key, proposal=proposal, owner=owner)
        return found[0] if found else None

    def list(self, query: pb.ListJobsRequest) -> list[pb.Job]:
        with self._lock:
            jobs = [_copy(j) for j in self._jobs.values()]
        return [j for j in jobs if matches(j, query)]

    def unfinished(self) -> builtins.list[pb.Job]:
        with self._lock:
            return [_copy(j) for j in self._jobs.values() if j.state not in TERMINAL]

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.pop(job_id, None)
            self._events.pop(job_id, None)
            if job is not None and job.request.idempotency_key:
                self._keys.pop(key_scope(job), None)


def matches(job: pb.Job, q: pb.ListJobsRequest) -> bool:
    if q.technique and job.technique != q.technique:
        return False
    if q.state and job.state != q.state:
        return False
    if q.proposal and job.proposal != q.proposal:
        return False
    users = job.result.catalogue.get("user", "").lower()
    if q.owner and job.owner != q.owner and q.owner.lower() not in users:
        return False
    samples = (job.request.labels.get("sample", "") + "; " + job.result.catalogue.get("sample", "")).lower()
    if q.sample and q.sample.lower() not in samples:
        return False
    for k, v in q.labels.items():
        if job.request.labels.get(k) != v:
            return False
    created = job.created.ToNanoseconds()
    if q.HasField("created_after") and created < q.created_after.ToNanoseconds():
        return False
    if q.HasField("created_before") and created >= q.created_before.ToNanoseconds():
        return False
    return True


def _same_request(key: str, job: pb.Job, stored_digest: str, digest: str) -> None:
    """Refuse a reused key for a different request (jobs stored before digests were
    kept have none, and match)."""
    if stored_digest and digest and stored_digest != digest:
        raise errors.AlreadyExists(key, job.job_id)


def _copy(msg: M) -> M:
    out: M = type(msg)()
    out.CopyFrom(msg)
    return out


@dataclass
class JobHandle:
    """What a runner gets: the job's request and the means to report and to stop."""

    job_id: str
    request: pb.ReduceRequest
    manager: JobManager
    cancel_event: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # time.monotonic() value
    _cancel_callbacks: list[Callable[[], None]] = field(default_factory=list)

    def progress(self, stage: str, fraction: float, message: str = "") -> None:
        self.manager._progress(self.job_id, stage, fraction, message)

    def log(self, level: str, message: str) -> None:
        self.manager._log(self.job_id, level, message)

    def accepted_upstream(self, upstream: str, upstream_job_id: str) -> None:
        self.manager._note_upstream(self.job_id, upstream, upstream_job_id)

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the job is cancelled; at once if it already is."""
        self._cancel_callbacks.append(callback)
        if self.cancel_event.is_set():
            callback()

    def _fire_cancel(self) -> None:
        self.cancel_event.set()
        for cb in list(self._cancel_callbacks):
            try:
                cb()
            except Exception:
                log.exception("cancel callback of job %s failed", self.job_id)


Runner = Callable[[JobHandle], pb.Result]
_LEVELS = {"debug": pb.LogLine.DEBUG, "info": pb.LogLine.INFO, "warning": pb.LogLine.WARNING, "error": pb.LogLine.ERROR}


class JobManager:
    """Accepts, runs, watches and cancels jobs.

    ``max_running`` jobs run at once; more wait QUEUED. ``describe_upstream`` names this
    server in Accepted events.
    """

    def __init__(
        self,
        runner: Runner,
        *,
        store: JobStore | None = None,
        max_running: int = 1,
        name: str = "",
        max_attempts: int = 1,
    ) -> None:
        self._runner = runner
        self.max_attempts = max_attempts
        self.store: JobStore = store or MemoryJobStore()
        self.name = name
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix=f"job-{name}")
        self._cond = threading.Condition()
        self._handles: dict[str, JobHandle] = {}
        self._seq: dict[str, int] = {}
        self._accepting = True
        self._running = 0
        self._leaving: str | None = None  # why this server left its running jobs (leave())

    # -- public API ---------------------------------------------------------------
    def submit(
        self,
        request: pb.ReduceRequest,
        *,
        deadline: float | None = None,
        job_id: str | None = None,
        owner: str = "",
        proposal: str = "",
        shards: int = 0,
        request_hash: str | None = None,
        hold: bool = False,
    ) -> tuple[pb.Job, bool]:
        """Create and queue a job. Returns (job, created).

        An idempotency key belongs to (``proposal``, ``owner``): the same key with the
        same request (``request_hash``, default :func:`request_digest` of ``request``)
        returns the first job and created=False; with a different request it is
        :class:`errors.AlreadyExists`; another proposal's or owner's use of the key is
        invisible. The check and the insert are one atomic step of the store, so
        concurrent submissions (several gateway replicas too) agree on one job."""
        digest = ""
        with self._cond:
            if request.idempotency_key:
                digest = request_hash or request_digest(request)
                existing = self.find_by_key(
                    request.idempotency_key, proposal=proposal, owner=owner, request_hash=digest
                )
                if existing is not None:
                    return existing, False
            if not self._accepting:
                raise errors.Unavailable(f"{self.name or 'server'} is shutting down; not accepting jobs")
            job = pb.Job(
                job_id=job_id or new_job_id(),
                technique=request.technique,
                state=pb.QUEUED,
                request=request,
                created=now_ts(),
                attempts=0,
                owner=owner,
                proposal=proposal,
                shards=shards,
            )
            if request.idempotency_key:
                stored, stored_digest = self.store.add_idempotent(job, digest)
                if stored.job_id != job.job_id:  # another submission (another replica) won the key
                    _same_request(request.idempotency_key, stored, stored_digest, digest)
                    return stored, False
            else:
                self.store.add(job)
            self._seq[job.job_id] = 0
            handle = JobHandle(job.job_id, request, self, deadline=deadline)
            self._handles[job.job_id] = handle
            self._emit(job.job_id, accepted=pb.Accepted(technique=request.technique))
        if not hold:  # held: QUEUED until release() (the gateway's wait for a replica)
            self._pool.submit(self._run, handle)
        return self.get(job.job_id), True

    def release(self, job_id: str, failure: BaseException | None = None) -> None:
        """Start a job submitted with ``hold=True``, or end it with ``failure``."""
        with self._cond:
            handle = self._handles.get(job_id)
            job = self.store.get(job_id)
            if handle is None or job is None or job.state != pb.QUEUED:
                self._handles.pop(job_id, None)
                return
            if failure is not None:
                self._finish_failed(job_id, failure)
                self._handles.pop(job_id, None)
                return
        self._pool.submit(self._run, handle)

    def find_by_key(self, key: str, *, proposal: str, owner: str, request_hash: str) -> pb.Job | None:
        """The job this (proposal, owner) submitted with idempotency ``key``, or None;
        AlreadyExists when that job was for a different request."""
        found = self.store.find_idempotent(key, proposal=proposal, owner=owner)
        if found is None:
            return None
        job, stored_digest = found
        _same_request(key, job, stored_digest, request_hash)
        return job

    def get(self, job_id: str) -> pb.Job:
        job = self.store.get(job_id)
        if job is None:
            raise errors.JobNotFound(job_id)
        return job

    def list(self, query: pb.ListJobsRequest) -> list[pb.Job]:
        jobs = self.store.list(query)
        jobs.sort(key=lambda j: j.created.ToNanoseconds(), reverse=True)
        return jobs

    def cancel(self, job_id: str) -> pb.Job:
        """Cancel a job. A queued job ends at once; a running one stops at its next
        check; a finished one is returned unchanged."""
        job = self.get(job_id)
        if job.state in TERMINAL:
            return job
        handle = self._handles.get(job_id)
        if handle is not None:
            handle._fire_cancel()
        with self._cond:
            job = self.get(job_id)
            if job.state == pb.QUEUED:
                self._finish_failed(job_id, errors.JobCancelled("cancelled before it started"))
        return self.get(job_id)

    def watch(
        self, job_id: str, after_seq: int = 0, *, is_active: Callable[[], bool] = lambda: True, poll: float = 0.5
    ) -> Iterator[pb.JobEvent]:
        """Events with seq > after_seq, as they come, until the job's terminal event."""
        self.get(job_id)
        seq = after_seq
        while True:
            with self._cond:
                events = self.store.events_after(job_id, seq)
                if not events:
                    job = self.get(job_id)
                    if job.state in TERMINAL and job.last_seq <= seq:
                        return
                    self._cond.wait(poll)
                    events = self.store.events_after(job_id, seq)
            for event in events:
                seq = event.seq
                yield event
                if event.HasField("result") or event.HasField("failure"):
                    return
            if not is_active():
                return

    def resume(self) -> builtins.list[str]:
        """After a restart: queue again every job the store holds as unfinished (its
        attempt counter goes on; past ``max_attempts`` it fails with the cause)."""
        resumed = []
        for job in self.store.unfinished():
            if job.job_id in self._handles:  # running here already
                continue
            with self._cond:
                self._seq[job.job_id] = job.last_seq
                if job.attempts >= self.max_attempts:
                    self._finish_failed(
                        job.job_id,
                        errors.Unavailable(
                            f"the server restarted while the job ran, {job.attempts} attempt(s) used; giving up"
                        ),
                    )
                    continue
                job.state = pb.QUEUED
                self.store.put(job)
                handle = JobHandle(job.job_id, job.request, self)
                self._handles[job.job_id] = handle
                self._log(
                    job.job_id,
                    "warning",
                    f"{self.name or 'server'} restarted; the job runs again "
                    f"(attempt {job.attempts + 1} of {self.max_attempts})",
                )
            self._pool.submit(self._run, handle)
            resumed.append(job.job_id)
        return resumed

    def handle(self, job_id: str) -> JobHandle | None:
        return self._handles.get(job_id)

    @property
    def running(self) -> int:
        return self._running

    def stop_accepting(self) -> None:
        with self._cond:
            self._accepting = False

    def drain(self, timeout: float) -> bool:
        """Wait until no job is queued or running (True) or ``timeout`` passes (False)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._active_jobs():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def leave(self, cause: str) -> None:
        """Shutting down with jobs still running: stop them without ending them.

        With a job table that outlives this process (SQLite, PostgreSQL) each job stays
        unfinished (QUEUED, the attempt not counted) with ``cause`` in its log, so a
        restart or a replica runs it again; in memory (a technique service) it fails as
        Unavailable naming ``cause``, which the gateway retries on another replica."""
        with self._cond:
            self._accepting = False
            self._leaving = cause
        for handle in list(self._handles.values()):
            handle._fire_cancel()

    def _leave_unfinished(self, job_id: str) -> None:
        if isinstance(self.store, MemoryJobStore):
            self._finish_failed(job_id, errors.Unavailable(self._leaving or "the server shut down"))
            return
        job = self.get(job_id)
        job.state = pb.QUEUED
        job.attempts = max(job.attempts - 1, 0)  # an operator's shutdown is not the job's failure
        self.store.put(job)
        self._log(job_id, "warning", self._leaving or "the server shut down")

    def cancel_all(self) -> None:
        for job_id in list(self._handles):
            try:
                self.cancel(job_id)
            except errors.JobNotFound:
                pass

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=False)

    # -- internals ----------------------------------------------------------------
    def _active_jobs(self) -> builtins.list[str]:
        return [j for j in self._handles if (job := self.store.get(j)) and job.state not in TERMINAL]

    def _run(self, handle: JobHandle) -> None:
        job_id = handle.job_id
        with self._cond:
            job = self.get(job_id)
            if job.state != pb.QUEUED:  # cancelled while queued
                self._handles.pop(job_id, None)
                return
            job.state = pb.RUNNING
            job.started.CopyFrom(now_ts())
            job.attempts += 1
            self.store.put(job)
            self._running += 1
            self._cond.notify_all()
        retry_in: float | None = None
        try:
            if handle.cancel_event.is_set():
                raise errors.JobCancelled("cancelled before it started")
            result = self._runner(handle)
        except BaseException as exc:  # every outcome must end the job
            if handle.cancel_event.is_set() and not isinstance(exc, errors.PanReduceError):
                exc = errors.JobCancelled("cancelled by the caller")
            with self._cond:
                attempts = self.get(job_id).attempts
                if self._leaving is not None:
                    self._leave_unfinished(job_id)
                elif (
                    isinstance(exc, errors.Unavailable)
                    and not handle.cancel_event.is_set()
                    and attempts < self.max_attempts
                    and self._accepting
                ):
                    # the service went away: try again (elsewhere, with several replicas)
                    job = self.get(job_id)
                    job.state = pb.QUEUED
                    self.store.put(job)
                    self._log(job_id, "warning", f"attempt {attempts} of {self.max_attempts} failed ({exc}); retrying")
                    retry_in = min(0.2 * 2**attempts, 5.0)
                else:
                    self._finish_failed(job_id, exc)
        else:
            with self._cond:
                job = self.get(job_id)
                job.state = pb.SUCCEEDED
                job.finished.CopyFrom(now_ts())
                job.result.CopyFrom(result)
                self.store.put(job)
                self._emit(job_id, result=result)
        finally:
            with self._cond:
                self._running -= 1
                if retry_in is None:
                    self._handles.pop(job_id, None)
                self._cond.notify_all()
        if retry_in is not None:
            time.sleep(retry_in)
            self._pool.submit(self._run, handle)

    def _finish_failed(self, job_id: str, exc: BaseException) -> None:
        failure = failure_of(exc)
        job = self.get(job_id)
        job.state = pb.CANCELLED if failure.code == "CANCELLED" else pb.FAILED
        job.finished.CopyFrom(now_ts())
        job.failure.CopyFrom(failure)
        self.store.put(job)
        self._emit(job_id, failure=failure)

    def _emit(self, job_id: str, **kind: Any) -> pb.JobEvent:
        with self._cond:
            self._seq[job_id] = self._seq.get(job_id, 0) + 1
            event = pb.JobEvent(seq=self._seq[job_id], job_id=job_id, time=now_ts(), **kind)
            self.store.append_event(event)
            job = self.store.get(job_id)
            if job is not None:
                job.last_seq = event.seq
                if event.HasField("progress"):
                    job.progress.CopyFrom(event.progress)
                self.store.put(job)
            self._cond.notify_all()
            return event

    def _progress(self, job_id: str, stage: str, fraction: float, message: str) -> None:
        self._emit(job_id, progress=pb.Progress(stage=stage, fraction=fraction, message=message))

    def _log(self, job_id: str, level: str, message: str) -> None:
        self._emit(job_id, log=pb.LogLine(level=_LEVELS.get(level, pb.LogLine.INFO), message=message))

    def _note_upstream(self, job_id: str, upstream: str, upstream_job_id: str) -> None:
        self._emit(
            job_id,
            accepted=pb.Accepted(
                technique=self.get(job_id).technique, upstream=upstream, upstream_job_id=upstream_job_id
            ),
        )
