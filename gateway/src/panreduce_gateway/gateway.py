"""The gateway: one Reducer endpoint in front of every technique service.

It routes Reduce/Submit by technique to the service addresses in its configuration,
has the service check each request before queuing it (``validate_only``), relays the
service's events into its own job log, and keeps the job table (in memory, or SQLite
that survives restarts). With access control on, every caller is identified by a
bearer token and sees only its own proposals' jobs and data.

A shardable technique's job is split into shards spread over the service's replicas
through gRPC's round_robin balancing (a list of addresses, or a headless Service's DNS
name), with a bounded number in flight per replica, retries of a failed shard on the
next replica, and a merge step that the technique defines.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import grpc

from panreduce import __version__, audit, errors, limits, locations, metadata, rpc
from panreduce.jobs import JobHandle, JobManager, JobStore, new_job_id, request_digest
from panreduce.kit.runner import check_output_location
from panreduce.kit.server import deadline_of, list_jobs, reduce_stream
from panreduce.metrics import JOBS_RUNNING, QUEUE_DEPTH
from panreduce.mtls import ServiceTLS, secure_channel
from panreduce.scope import SCOPE_HEADER, Scope, job_scope
from panreduce.scopekey import ScopeSigner
from panreduce.serving import JOB_ID_HEADER, PROPOSAL_HEADER, SUBJECT_HEADER, rpc_method, with_service_token
from panreduce.settings import get_settings
from panreduce.storage import Stores, check_inputs_exist
from panreduce.transfer import receive_upload, receive_upload_s3, send_download, upload_key_uri
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc
from panreduce_gateway.auth import ANONYMOUS, Access, Identity

log = logging.getLogger("panreduce.gateway")

_LEVEL_NAMES = {v: k.lower() for k, v in pb.LogLine.Level.items()}
_RETRIED_METHODS = ("Describe", "GetJob", "ListJobs", "Reduce", "Submit")


def service_config(max_attempts: int = 4) -> str:
    """gRPC service config: round_robin over every resolved replica, and transparent
    retries of calls that found a replica unavailable."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [
                {
                    "name": [{"service": "panreduce.v1.Reducer", "method": m} for m in _RETRIED_METHODS],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def channel_target(addresses: Iterable[str]) -> str:
    """One gRPC target for a technique's replicas: ``host:port`` or ``dns:///name:port``
    as given; several IP addresses become an ``ipv4:``/``ipv6:`` list."""
    addresses = [a.strip() for a in addresses if a.strip()]
    if len(addresses) == 1:
        return addresses[0]
    hosts = [a.rsplit(":", 1)[0].strip("[]") for a in addresses]
    try:
        families = {socket.inet_pton(socket.AF_INET, h) and "ipv4" for h in hosts}
    except OSError:
        raise errors.InvalidRequest(
            f"several addresses for one technique must be IP addresses ({', '.join(addresses)}); "
            "for host names use one dns:///NAME:PORT target (e.g. a headless Service)"
        ) from None
    return f"{families.pop()}:{','.join(addresses)}"


@dataclass
class Route:
    technique: str
    target: str
    token: str | None = field(default=None, repr=False)  # the service credential, sent on every call
    tls: ServiceTLS | None = field(default=None, repr=False)  # mutual TLS to the service (panreduce.mtls)
    channel: grpc.Channel = field(init=False, repr=False)
    stub: pb_grpc.ReducerStub = field(init=False, repr=False)
    _replicas: tuple[float, int] = field(default=(0.0, 1), init=False, repr=False)

    def __post_init__(self) -> None:
        # reconnect attempts at most 10 s apart, so a replica that starts (scale from zero) is seen
        # soon; a dns:/// target is resolved again (at most every 5 s) when a connection fails or
        # a service closes it at its max connection age (panreduce.serving), so new replicas take load
        options = [
            *rpc.CHANNEL_OPTIONS,
            ("grpc.service_config", service_config()),
            ("grpc.enable_retries", 1),
            ("grpc.max_reconnect_backoff_ms", 10_000),
            ("grpc.dns_min_time_between_resolutions_ms", 5_000),
        ]
        self.channel = secure_channel(self.target, self.tls, options)
        self.stub: Any = pb_grpc.ReducerStub(with_service_token(self.channel, self.token))  # type: ignore[no-untyped-call]

    def replicas(self) -> int:
        """How many replicas the target names (a DNS name: its addresses, refreshed every 30 s)."""
        if self.target.startswith(("ipv4:", "ipv6:")):
            return self.target.count(",") + 1
        if not self.target.startswith("dns:"):
            return 1
        when, count = self._replicas
        if time.monotonic() - when > 30:
            host_port = self.target.split("/")[-1]
            host, _, port = host_port.rpartition(":")
            try:
                count = len({ai[4][0] for ai in socket.getaddrinfo(host, int(port or 50051), type=socket.SOCK_STREAM)})
            except OSError:
                count = 1
            self._replicas = (time.monotonic(), max(count, 1))
        return self._replicas[1]


@dataclass
class GatewayConfig:
    access: Access = field(default_factory=Access)
    max_attempts: int = 3  # runs of a job (or shard) whose service went away
    shard_slots_per_replica: int = 2  # shards in flight per replica
    describe_timeout: float = 10.0
    max_running: int = 64
    # How long a job waits in all for its service to be reachable before it fails naming
    # it ($PANREDUCE_SERVICE_WAIT_SECONDS, --service-wait).
    service_wait: float = field(default_factory=lambda: get_settings().service_wait_seconds)
    service_token: str | None = field(default=None, repr=False)  # sent to the services on every call
    service_tls: ServiceTLS | None = field(default=None, repr=False)  # mTLS to the services (panreduce.mtls)
    # Signs each call's scope (panreduce.scopekey; --scope-key-file): services given the
    # public key accept no other scope.
    scope_signer: ScopeSigner | None = field(default=None, repr=False)
    # Jobs held per technique while it has no ready replica ($PANREDUCE_QUEUE_MAX; 0: refuse
    # as UNAVAILABLE), and how long one waits for a replica ($PANREDUCE_QUEUE_WAIT_S).
    queue_max: int = field(default_factory=lambda: get_settings().queue_max)
    queue_wait: float = field(default_factory=lambda: get_settings().queue_wait_s)


@dataclass
class _Waiting:
    """A job the gateway holds until a replica of its technique is ready."""

    job_id: str
    since: float  # time.monotonic() it was queued


def caller_metadata(
    subject: str,
    proposal: str,
    scope: Scope | None = None,
    *,
    job_id: str = "",
    signer: ScopeSigner | None = None,
    rpc: str = "",
    request: object | None = None,
    audience: str = "",
) -> list[tuple[str, str]]:
    """Who a call to a service is made for (the service logs it): printable ASCII, clipped;
    and the locations it may touch (panreduce.scope), which the service checks again. With
    a ``signer``: the scope as a statement signed for this ``rpc``, job and ``request``
    (panreduce.scopekey), for the caller's proposal (no proposal: an admin's), addressed to
    the service of technique ``audience``."""
    safe = "@.:_-+/=,"
    subject_q, proposal_q = quote(subject[:200], safe=safe), quote(proposal[:200], safe=safe)
    md = [(SUBJECT_HEADER, subject_q), (PROPOSAL_HEADER, proposal_q)]
    if scope is not None and signer is not None:
        md.append(
            (
                SCOPE_HEADER,
                signer.sign(
                    subject=subject_q,
                    proposals=[proposal_q] if proposal else [],
                    admin=not proposal,
                    rpc=rpc,
                    scope=scope.encode(),
                    job=job_id,
                    request=request,
                    audience=audience,
                ),
            )
        )
    elif scope is not None:
        md.append((SCOPE_HEADER, scope.encode()))
    if job_id:  # the service writes the gateway's job id into the provenance
        md.append((JOB_ID_HEADER, job_id))
    return md


class GatewayService(pb_grpc.ReducerServicer):
    name = "gateway"

    def __init__(
        self,
        routes: Mapping[str, str | Iterable[str]],
        *,
        stores: Stores,
        store: JobStore | None = None,
        config: GatewayConfig | None = None,
        service_token: str | None = None,
    ) -> None:
        self.config = config or GatewayConfig()
        token = service_token or self.config.service_token
        self.routes = {
            t: Route(t, channel_target([a] if isinstance(a, str) else a), token, self.config.service_tls)
            for t, a in routes.items()
        }
        self.stores = stores
        self.access = self.config.access
        self.manager = JobManager(
            self._relay,
            store=store,
            max_running=self.config.max_running,
            name="gateway",
            max_attempts=self.config.max_attempts,
        )
        self._described: dict[str, pb.TechniqueInfo] = {}
        self._lock = threading.Lock()
        self._shard_pool = ThreadPoolExecutor(max_workers=64, thread_name_prefix="shard")
        self._closed = threading.Event()
        self._away_since: dict[str, float] = {}  # job id -> when it first found its service away
        self._waiting: dict[str, list[_Waiting]] = {t: [] for t in self.routes}  # technique -> held jobs
        self._queue_cond = threading.Condition()
        self._queue_thread: threading.Thread | None = None
        for technique in self.routes:  # the series exist (at 0) before the first job
            QUEUE_DEPTH.labels(technique).set(0)
            JOBS_RUNNING.labels("gateway", technique)

    def resume(self) -> list[str]:
        """Run again the jobs a previous gateway process left unfinished."""
        return self.manager.resume()

    def start_claiming(self, every: float | None = None) -> None:
        """With a shared job table (PostgreSQL), keep taking over the jobs of gateway
        replicas that stopped renewing their heartbeat (every ``$PANREDUCE_CLAIM_SECONDS``,
        default 30 s)."""
        if not hasattr(self.manager.store, "lease"):
            return
        every = every or get_settings().claim_seconds

        def loop() -> None:
            while not self._closed.wait(every):
                try:
                    taken = self.manager.resume()
                    if taken:
                        log.warning("took over %d job(s) of a vanished gateway: %s", len(taken), ", ".join(taken))
                except Exception:
                    log.exception("claiming orphaned jobs failed")

        threading.Thread(target=loop, daemon=True, name="claim-orphans").start()

    def close(self) -> None:
        self._closed.set()
        with self._queue_cond:
            self._queue_cond.notify_all()
        self._shard_pool.shutdown(wait=False, cancel_futures=True)
        for route in self.routes.values():
            route.channel.close()

    # -- routing --------------------------------------------------------------------
    def route(self, technique: str) -> Route:
        if not technique:
            raise errors.InvalidRequest("no technique named in the request")
        try:
            return self.routes[technique]
        except KeyError:
            raise errors.UnknownTechnique(technique, self.routes) from None

    def _upstream_error(self, route: Route, exc: grpc.RpcError) -> errors.PanReduceError:
        """The service's own error as it is; a lost connection (UNAVAILABLE, or a
        transport-level INTERNAL such as a reset stream, which carries none of our error
        details) as Unavailable, which the job manager retries."""
        failure = rpc.failure_from_rpc_error(exc)
        if failure.code == "UNAUTHENTICATED":  # the gateway's own credential: a server fault, never the caller's
            log.error("the %s service at %s refused the gateway's service token", route.technique, route.target)
            return errors.InternalError(
                f"the {route.technique} service refused this gateway's service token (a deployment fault: "
                "the gateway and its services must share one --service-token-file)"
            )
        transport = failure.reason in ("", "UNAVAILABLE") and failure.code in ("UNAVAILABLE", "INTERNAL", "UNKNOWN")
        if transport:
            return errors.Unavailable(
                f"the {route.technique} service at {route.target} is unavailable ({failure.message})"
            )
        return rpc.error_of_failure(failure)

    def _info(self, technique: str) -> pb.TechniqueInfo:
        route = self.route(technique)
        with self._lock:
            cached = self._described.get(technique)
        if cached is not None:
            return cached
        try:
            resp = route.stub.Describe(pb.DescribeRequest(technique=technique), timeout=self.config.describe_timeout)
        except grpc.RpcError as exc:
            raise self._upstream_error(route, exc) from None
        info = resp.techniques[0]
        with self._lock:
            self._described[technique] = info
        return cast(pb.TechniqueInfo, info)

    # -- access -----------------------------------------------------------------------
    def _job_for(self, identity: Identity, job_id: str) -> pb.Job:
        """A job the caller may see; another proposal's job is reported as not found."""
        job = self.manager.get(job_id)
        if not identity.may_see(job.proposal):
            audit.decision(
                subject=identity.subject,
                proposal=job.proposal,
                resource=f"job:{job_id}",
                allowed=False,
                reason="job of another proposal (reported as not found)",
            )
            raise errors.JobNotFound(job_id)
        audit.decision(
            subject=identity.subject,
            proposal=job.proposal,
            resource=f"job:{job_id}",
            allowed=True,
            reason="job of the caller's proposal",
        )
        return job

    def _check_request_uris(
        self, identity: Identity, proposal: str, request: pb.ReduceRequest
    ) -> tuple[list[str], str]:
        """Resolve every input and the output once (panreduce.locations) and check the
        resolved locations; returns them as they are passed on (inputs, output)."""
        inputs = []
        for uri in request.inputs:
            loc = audit.checked(
                functools.partial(self._check_input, identity, proposal, uri),
                subject=identity.subject,
                proposal=proposal,
                resource=uri,
                what="input",
            )
            if loc.scheme == "upload" and self._s3_uploads():
                inputs.append(upload_key_uri(self._s3_uploads(), loc.uri))  # the services stage it from S3
            elif loc.scheme == "upload" and loc.local is not None:
                inputs.append(str(loc.local) + ("/" if loc.is_prefix else ""))
            else:
                inputs.append(loc.uri)
        output = ""
        if request.output:
            output = audit.checked(
                lambda: self._guard_store(
                    identity,
                    self.access.check_uri(identity, proposal, request.output, uploads=self.stores.uploads.root),
                    request.output,
                ),
                subject=identity.subject,
                proposal=proposal,
                resource=request.output,
                what="output",
            ).uri
        return inputs, output

    def _scope(self, proposal: str, job_id: str) -> Scope:
        """The locations a job's calls to its service may touch (the service checks them
        again): the proposal's prefixes and uploads, the job's default output and shard
        scratch; anywhere when no prefixes are configured, or for an admin acting for no
        proposal (as :meth:`Access.check_uri` decides)."""
        own = [self.stores.default_output(job_id), self.stores.scratch_uri(job_id)]
        space = locations.upload_area_name(proposal)  # None: the proposal holds no uploads
        if self._s3_uploads() and space is not None:  # the proposal's uploads on S3 (upload_key_uri's layout)
            own.append(f"{self._s3_uploads().rstrip('/')}/{space}/")
        if self.access.enabled and proposal and not self.access.prefixes:
            # no prefixes: anywhere but the gateway's own store (as _guard_store), except
            # the proposal's uploads and this job's output and scratch
            mine = [str(self.stores.uploads_root / space) + "/"] if space is not None else []
            return Scope.anywhere_but([str(self.stores.root) + "/"], [*mine, *own])
        if not self.access.prefixes or (self.access.enabled and not proposal):
            return Scope.anywhere()
        return job_scope(self.access.allowed(proposal), uploads=self.stores.uploads.root, proposal=proposal, extra=own)

    def _guard_store(self, identity: Identity, loc: locations.Location, uri: str) -> locations.Location:
        """Refuse a local path into the gateway's own store (every proposal's uploads, results
        and shard scratch, and the job table) to a caller that is not an admin, whatever the
        prefixes say (none configured admits any path otherwise): uploads are named
        ``upload://`` (checked by namespace), results fetched with Download (by job)."""
        root = self.stores.root
        if (
            self.access.enabled
            and not identity.admin
            and loc.scheme == "file"
            and loc.local is not None
            and (loc.local == root or root in loc.local.parents)
        ):
            raise errors.PermissionDenied(
                f"{locations.shown(uri)} is in the gateway's own store, which holds every proposal's uploads and "
                "results: name an upload as upload://..., and fetch a job's results with Download"
            )
        return loc

    def _check_input(self, identity: Identity, proposal: str, uri: str) -> locations.Location:
        """An input's resolved location; a local folder's files are resolved one by one
        too, so that a link inside it cannot reach outside the proposal's locations."""
        loc = self._guard_store(
            identity, self.access.check_uri(identity, proposal, uri, uploads=self.stores.uploads.root), uri
        )
        restricted = self.access.prefixes and not (identity.admin and not proposal)
        guarded = self.access.enabled and not identity.admin
        if (restricted or guarded) and loc.scheme == "file" and loc.local is not None and loc.local.is_dir():
            for ref in self.stores.local.list(loc.uri):
                try:
                    inner = (
                        self.access.check_uri(identity, proposal, ref.uri) if restricted else locations.resolve(ref.uri)
                    )
                    self._guard_store(identity, inner, ref.uri)
                except errors.PermissionDenied:
                    raise errors.PermissionDenied(
                        f"{locations.shown(uri)}: {locations.shown(ref.name)} is a link to a location outside the "
                        f"locations of proposal {proposal!r}; it is not followed"
                    ) from None
        return loc

    # -- RPCs -----------------------------------------------------------------------
    @rpc_method
    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        self.access.identify(context)
        limits.check_technique(request.technique)
        resp = pb.DescribeResponse(server_kind="gateway", server_version=__version__)
        if request.technique:
            resp.techniques.append(self._info(request.technique))
            return resp
        for technique in sorted(self.routes):
            try:
                resp.techniques.append(self._info(technique))
            except errors.Unavailable as exc:
                log.warning("describe: %s", exc)
        return resp

    def _submit(self, request: pb.ReduceRequest, context: grpc.ServicerContext, *, follow: bool = False) -> pb.Job:
        """Check and queue a request; ``follow`` (Reduce): the call's deadline is the job's."""
        identity = self.access.identify(context)
        limits.check_reduce_request(request)
        if request.merge:
            # the merge step reads shard parts by name beside each summary, unchecked by
            # the input rules (a caller's crafted part could link to another proposal's
            # data); only the gateway sends it, to a service, for the shards it ran
            raise errors.InvalidRequest(
                "merge is the gateway's own step for the shards of a split job; send the job itself "
                "(split: the number of shards)"
            )
        route = self.route(request.technique)
        proposal = self.access.proposal_for(identity, request.labels.get("proposal", ""))
        # an idempotency key is the (proposal, subject)'s own: the same request again is
        # the first job, another request is ALREADY_EXISTS, other callers' keys are unseen
        digest = request_digest(request)
        if request.idempotency_key:
            existing = self.manager.find_by_key(
                request.idempotency_key, proposal=proposal, owner=identity.subject, request_hash=digest
            )
            if existing is not None:
                return existing
        inputs, output = self._check_request_uris(identity, proposal, request)
        # a plain/file:// path (a beamline mount) is the service's to find: it may be mounted
        # there and not here; the service's validate_only check below refuses a missing one
        check_inputs_exist(self.stores, [u for u in inputs if self.stores.for_uri(u) is not self.stores.local])
        check_output_location(self.stores, request.output)
        job_id = new_job_id()
        req = pb.ReduceRequest()
        req.CopyFrom(request)
        if proposal:
            req.labels["proposal"] = proposal
        req.inputs[:] = inputs  # resolved once: nothing downstream decodes again
        if output:
            req.output = output
        if not req.output:
            req.output = self.stores.default_output(job_id)
        # Let the service check parameters and inputs now, so a bad request fails the
        # call instead of becoming a failed job. No ready replica: the job is queued (held
        # QUEUED until one is ready, then checked the same way) unless the queue is full.
        try:
            shards = self._shard_count(req)
            self._check_upstream(route, req, identity.subject, proposal, job_id)
            held = False
        except errors.Unavailable:
            if req.validate_only or self.config.queue_max <= 0:
                raise
            held, shards = True, 0
        if req.validate_only:
            return pb.Job(technique=req.technique, request=req, proposal=proposal, owner=identity.subject)
        deadline = deadline_of(context) if follow else None
        if not held:
            job, _ = self.manager.submit(
                req,
                deadline=deadline,
                job_id=job_id,
                owner=identity.subject,
                proposal=proposal,
                shards=shards,
                request_hash=digest,
            )
            return job
        with self._queue_cond:
            waiting = self._waiting[route.technique]
            if len(waiting) >= self.config.queue_max:
                retry = max(min(self.config.queue_wait / 10, 60.0), 5.0)
                raise errors.ResourceExhausted(
                    f"the {route.technique} service has no ready replica and its queue is full "
                    f"({len(waiting)} of {self.config.queue_max} jobs waiting); retry in {retry:.0f} s",
                    metadata={
                        "retry_after_s": f"{retry:.0f}",
                        "technique": route.technique,
                        "limit": str(self.config.queue_max),
                    },
                )
            job, created = self.manager.submit(
                req,
                deadline=deadline,
                job_id=job_id,
                owner=identity.subject,
                proposal=proposal,
                request_hash=digest,
                hold=True,
            )
            if created:
                waiting.append(_Waiting(job.job_id, time.monotonic()))
                QUEUE_DEPTH.labels(route.technique).set(len(waiting))
                self.manager._log(
                    job.job_id,
                    "info",
                    f"queued: no ready replica of the {route.technique} service "
                    f"yet (waits at most {self.config.queue_wait:g} s)",
                )
                self._start_queue_thread()
                self._queue_cond.notify_all()
        return job

    def _check_upstream(self, route: Route, req: pb.ReduceRequest, subject: str, proposal: str, job_id: str) -> None:
        """The service's validate_only check of a request (Unavailable: no ready replica)."""
        check = pb.ReduceRequest()
        check.CopyFrom(req)
        check.validate_only = True
        check.split = 0
        try:
            route.stub.Submit(
                check,
                timeout=self.config.describe_timeout,
                metadata=caller_metadata(
                    subject,
                    proposal,
                    self._scope(proposal, job_id),
                    job_id=job_id,
                    signer=self.config.scope_signer,
                    rpc="Submit",
                    request=check,
                    audience=route.technique,
                ),
            )
        except grpc.RpcError as exc:
            raise self._upstream_error(route, exc) from None

    # -- the queue of jobs waiting for a replica ---------------------------------------
    def queue_depth(self, technique: str) -> int:
        with self._queue_cond:
            return len(self._waiting.get(technique, ()))

    def _start_queue_thread(self) -> None:
        """One thread serves every technique's queue (the queue lock is held)."""
        if self._queue_thread is None or not self._queue_thread.is_alive():
            self._queue_thread = threading.Thread(target=self._queue_loop, daemon=True, name="replica-queue")
            self._queue_thread.start()

    def _queue_loop(self) -> None:
        while not self._closed.is_set():
            with self._queue_cond:
                while not any(self._waiting.values()) and not self._closed.is_set():
                    self._queue_cond.wait(1.0)
                techniques = [t for t, w in self._waiting.items() if w]
            for technique in techniques:
                try:
                    self._serve_queue(technique)
                except Exception:
                    log.exception("the queue of %s failed", technique)
            self._closed.wait(0.25)

    def _replica_ready(self, route: Route, timeout: float = 0.25) -> bool:
        ready = grpc.channel_ready_future(route.channel)
        try:
            ready.result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False
        finally:
            ready.cancel()

    def _serve_queue(self, technique: str) -> None:
        """Start the held jobs of ``technique`` once a replica is ready (each checked by the
        service first, as at submission); end those cancelled, past the caller's deadline
        or past the queue wait."""
        route = self.routes[technique]
        with self._queue_cond:
            waiting = list(self._waiting[technique])
        ready = self._replica_ready(route)
        for w in waiting:
            job = self.manager.store.get(w.job_id)
            handle = self.manager.handle(w.job_id)
            failure: BaseException | None = None
            waited = time.monotonic() - w.since
            if job is None or handle is None or job.state != pb.QUEUED:
                pass  # cancelled (or gone): only dropped from the queue
            elif handle.deadline is not None and time.monotonic() > handle.deadline:
                failure = errors.DeadlineExceeded(
                    f"the call's deadline passed after {waited:.0f} s queued for a replica of the {technique} service"
                )
            elif waited > self.config.queue_wait:
                failure = errors.Unavailable(
                    f"no replica of the {technique} service became ready in "
                    f"{self.config.queue_wait:g} s (the queue wait); giving up"
                )
            elif not ready:
                continue
            else:
                try:
                    shards = self._shard_count(job.request)
                    self._check_upstream(route, job.request, job.owner, job.proposal, job.job_id)
                except errors.Unavailable:
                    ready = False
                    continue
                except errors.PanReduceError as exc:
                    failure = exc
                else:
                    if shards:
                        job.shards = shards
                        self.manager.store.put(job)
                    self.manager._log(
                        w.job_id,
                        "info",
                        f"a replica of the {technique} service is ready after {waited:.1f} s queued; starting",
                    )
            with self._queue_cond:
                self._waiting[technique] = [x for x in self._waiting[technique] if x.job_id != w.job_id]
                QUEUE_DEPTH.labels(technique).set(len(self._waiting[technique]))
            self.manager.release(w.job_id, failure)

    def _shard_count(self, request: pb.ReduceRequest) -> int:
        if request.split == 1 or request.merge or request.shard.count:
            return 0
        info = self._info(request.technique)
        if not info.shardable:
            if request.split > 1:
                raise errors.InvalidRequest(f"technique {request.technique!r} cannot be split into shards")
            return 0
        units = _known_units(info, request)
        if request.split > 1:
            return _capped(request.split, units)
        replicas = self.route(request.technique).replicas()
        return _capped(replicas * self.config.shard_slots_per_replica, units) if replicas > 1 else 0

    def _upstream_uri(self, uri: str) -> str:
        """Inline uploads live in the gateway's store; services get their local path."""
        if self.stores.for_uri(uri) is self.stores.uploads:
            return str(self.stores.uploads.path_of(uri)) + ("/" if uri.endswith("/") else "")
        return uri

    @rpc_method
    def Reduce(self, request: pb.ReduceRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        job = self._submit(request, context, follow=True)
        yield from reduce_stream(self.manager, job.job_id, context)

    @rpc_method
    def Submit(self, request: pb.ReduceRequest, context: grpc.ServicerContext) -> pb.Job:
        return self._submit(request, context)

    @rpc_method
    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        identity = self.access.identify(context)
        limits.check_job_id(request.job_id)
        self._job_for(identity, request.job_id)
        yield from self.manager.watch(request.job_id, request.after_seq, is_active=context.is_active)

    @rpc_method
    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.Job:
        identity = self.access.identify(context)
        limits.check_job_id(request.job_id)
        self._job_for(identity, request.job_id)
        return self.manager.cancel(request.job_id)

    @rpc_method
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        identity = self.access.identify(context)
        limits.check_job_id(request.job_id)
        return self._job_for(identity, request.job_id)

    @rpc_method
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        identity = self.access.identify(context)
        limits.check_list_request(request)
        if request.proposal and not identity.may_see(request.proposal):
            audit.decision(
                subject=identity.subject,
                proposal=request.proposal,
                resource="jobs",
                allowed=False,
                reason="not a member of the proposal (an empty list)",
            )
            return pb.ListJobsResponse()
        resp = list_jobs(self.manager, request)
        if identity.proposals is not None:
            visible = [j for j in self.manager.list(request) if identity.may_see(j.proposal)]
            size = limits.page_size(request)
            start = limits.page_start(request.page_token)
            resp = pb.ListJobsResponse(
                jobs=visible[start : start + size],
                next_page_token=str(start + size) if start + size < len(visible) else "",
            )
        return resp

    @rpc_method
    def Upload(self, request_iterator: Iterator[pb.DataChunk], context: grpc.ServicerContext) -> pb.ObjectInfo:
        identity = self.access.identify(context)
        requested = dict(context.invocation_metadata()).get("x-panreduce-proposal", "")
        limits.check_proposal(requested)
        proposal = audit.checked(
            lambda: self.access.proposal_for(identity, requested),
            subject=identity.subject,
            proposal=requested,
            resource="upload",
            what="upload proposal",
        )
        if self._s3_uploads():
            s3 = self.stores.for_uri(self._s3_uploads())
            return receive_upload_s3(request_iterator, s3, self._s3_uploads(), namespace=proposal or "shared")  # type: ignore[arg-type]
        return receive_upload(request_iterator, self.stores, namespace=proposal or "shared")

    @staticmethod
    def _s3_uploads() -> str:
        """PANREDUCE_UPLOADS_URI when it is an s3:// prefix: uploads go there, not to the disk."""
        from panreduce.settings import get_settings

        uri = get_settings().uploads_uri
        return uri if uri.startswith("s3://") else ""

    @rpc_method
    def Download(self, request: pb.DownloadRequest, context: grpc.ServicerContext) -> Iterator[pb.DataChunk]:
        identity = self.access.identify(context)
        limits.check_uri(request.uri)
        uri = audit.checked(
            lambda: self._downloadable(identity, request.uri),
            subject=identity.subject,
            proposal="",
            resource=request.uri,
            what="download",
        )
        yield from send_download(self.stores, uri, request.offset)

    @rpc_method
    def GetMetadata(self, request: pb.MetadataRequest, context: grpc.ServicerContext) -> pb.MetadataResponse:
        identity = self.access.identify(context)
        limits.check_uri(request.uri)
        loc = audit.checked(
            lambda: self._metadata_location(identity, request.uri),
            subject=identity.subject,
            proposal="",
            resource=request.uri,
            what="metadata read",
        )
        return metadata.of_uri(
            self.stores,
            loc.uri,
            roots=self._readable_roots(identity),
            cancelled=lambda: not context.is_active(),
            checked=loc.local,
        )  # read what was checked, no link since

    def _metadata_location(self, identity: Identity, uri: str) -> locations.Location:
        """A location the caller may read metadata of; in the gateway's own store only its
        uploads and the results of jobs it may see (as for Download)."""
        loc = self.access.check_readable(identity, uri, uploads=self.stores.uploads.root)
        try:
            return self._guard_store(identity, loc, uri)
        except errors.PermissionDenied:
            return locations.resolve(self._downloadable(identity, uri))

    def _readable_roots(self, identity: Identity) -> list[Path]:
        """Where the HDF5 links of a file the caller reads may lead: its proposals'
        locations and uploads (anywhere when access is not restricted)."""
        roots = self.access.readable_roots(identity)
        if roots is None:
            return [Path("/")]
        uploads = self.stores.uploads.root
        return [*roots, *(uploads / p for p in sorted(identity.proposals or ()) if uploads is not None)]

    def _downloadable(self, identity: Identity, uri: str) -> str:
        """Uploads of the caller's proposals and outputs of jobs it may see."""
        store = self.stores.for_uri(uri)
        if store is self.stores.uploads:
            loc = self.access.check_uri(identity, "", uri, uploads=self.stores.uploads.root)
            if self._s3_uploads():  # kept on S3 (the proposal was checked on the name, as for Reduce)
                return upload_key_uri(self._s3_uploads(), loc.uri)
            return loc.uri
        wanted = self.stores.local.path_of(uri) if store is self.stores.local else None  # resolved once
        answer = str(wanted) if wanted is not None else locations.resolve(uri).uri
        for job in self.manager.list(pb.ListJobsRequest(state=pb.SUCCEEDED)):
            if not identity.may_see(job.proposal):
                continue
            for o in job.result.outputs:
                if "://" in o.uri:
                    if o.uri == uri:
                        return answer
                elif wanted is not None and Path(os.path.normpath(o.uri)) == wanted:
                    # the path as published (resolved then), opened as it is: never through a
                    # link swapped in since (both resolving through it would match)
                    return str(o.uri)  # protobuf is untyped here
        if identity is ANONYMOUS and wanted is not None and self.stores.root in wanted.parents:
            return answer
        raise errors.PermissionDenied(f"{uri} is not an output of a job you may see, nor one of your uploads")

    # -- relaying a job ---------------------------------------------------------------
    def _relay(self, handle: JobHandle) -> pb.Result:
        job = self.manager.get(handle.job_id)
        running = JOBS_RUNNING.labels("gateway", job.technique)
        running.inc()
        try:
            if job.shards > 1:
                return self._relay_sharded(handle, job.shards)
            return self._relay_one(handle, handle.request, handle.progress, accept=True)
        finally:
            running.dec()

    def _relay_one(
        self,
        handle: JobHandle,
        request: pb.ReduceRequest,
        on_progress: Callable[[str, float, str], object],
        *,
        accept: bool,
    ) -> pb.Result:
        route = self.route(request.technique)
        timeout = None
        if handle.deadline is not None:
            timeout = max(handle.deadline - time.monotonic(), 0.001)
        self._wait_for_service(handle, route)
        # The gateway keeps the idempotency key; each attempt upstream is a new job (the
        # service would otherwise hand back the attempt that a lost connection cancelled).
        upstream = pb.ReduceRequest()
        upstream.CopyFrom(request)
        upstream.idempotency_key = ""
        job = self.manager.get(handle.job_id)
        call = route.stub.Reduce(
            upstream,
            timeout=timeout,
            wait_for_ready=True,
            metadata=caller_metadata(
                job.owner,
                job.proposal,
                self._scope(job.proposal, handle.job_id),
                job_id=handle.job_id,
                signer=self.config.scope_signer,
                rpc="Reduce",
                request=upstream,
                audience=route.technique,
            ),
        )
        handle.on_cancel(call.cancel)
        try:
            for event in call:
                kind = event.WhichOneof("kind")
                if kind == "accepted" and accept:
                    handle.accepted_upstream(route.target, event.job_id)
                elif kind == "progress":
                    on_progress(event.progress.stage, event.progress.fraction, event.progress.message)
                elif kind == "log":
                    handle.log(_LEVEL_NAMES.get(event.log.level, "info"), event.log.message)
                elif kind == "result":
                    return cast(pb.Result, event.result)
        except grpc.RpcError as exc:
            if handle.cancel_event.is_set():
                raise errors.JobCancelled("cancelled by the caller") from None
            raise self._upstream_error(route, exc) from None
        raise errors.Unavailable(f"the {route.technique} service ended the job without a result")

    def _wait_for_service(self, handle: JobHandle, route: Route) -> None:
        """Wait until the technique's service is reachable: at most ``service_wait`` s
        counted from the first time this job found it away (across its retries), then
        Unavailable naming the technique and address. A cancel or the deadline ends the
        wait at once."""
        ready = grpc.channel_ready_future(route.channel)
        try:
            while True:
                try:
                    ready.result(timeout=0.25)
                    self._away_since.pop(handle.job_id, None)
                    return
                except grpc.FutureTimeoutError:
                    pass
                if handle.cancel_event.is_set():
                    raise errors.JobCancelled("cancelled by the caller")
                if handle.deadline is not None and time.monotonic() > handle.deadline:
                    raise errors.DeadlineExceeded("the job ran past its deadline waiting for its service")
                since = self._away_since.setdefault(handle.job_id, time.monotonic())
                if time.monotonic() - since > self.config.service_wait:
                    raise errors.Unavailable(
                        f"the {route.technique} service at {route.target} stayed unreachable for "
                        f"{self.config.service_wait:g} s; giving up"
                    )
        finally:
            ready.cancel()

    def _relay_sharded(self, handle: JobHandle, count: int) -> pb.Result:
        """Run ``count`` shards over the replicas, then the technique's merge."""
        route = self.route(handle.request.technique)
        slots = threading.Semaphore(max(route.replicas() * self.config.shard_slots_per_replica, 1))
        scratch = self.stores.scratch_uri(handle.job_id)
        fractions = [0.0] * count
        lock = threading.Lock()
        handle.log("info", f"split into {count} shards over {route.replicas()} replica(s) of {route.target}")

        def progress(i: int) -> Callable[[str, float, str], None]:
            def report(stage: str, fraction: float, message: str) -> None:
                with lock:
                    fractions[i] = fraction
                    overall = 0.9 * sum(fractions) / count
                handle.progress(stage, overall, f"shard {i + 1}/{count}: {message}")

            return report

        def run_shard(i: int) -> pb.Result:
            req = pb.ReduceRequest()
            req.CopyFrom(handle.request)
            req.shard.index, req.shard.count = i, count
            req.split = 1
            req.idempotency_key = ""
            last: Exception | None = None
            for attempt in range(1, self.config.max_attempts + 1):
                out = f"{scratch}/shard-{i:04d}-a{attempt}"
                req.output = out
                with slots:
                    if handle.cancel_event.is_set():
                        raise errors.JobCancelled("cancelled by the caller")
                    try:
                        return self._relay_one(handle, req, progress(i), accept=False)
                    except errors.Unavailable as exc:
                        last = exc
                        handle.log("warning", f"shard {i + 1}/{count} attempt {attempt} failed ({exc}); retrying")
                        self.stores.remove_tree(out)
            raise errors.Unavailable(f"shard {i + 1}/{count} failed {self.config.max_attempts} times: {last}")

        try:
            futures = [self._shard_pool.submit(run_shard, i) for i in range(count)]
            results: list[pb.Result] = []
            for f in futures:
                try:
                    results.append(f.result())
                except BaseException:
                    for other in futures:
                        other.cancel()
                    handle._fire_cancel()  # stop the shards still running
                    raise
            merge = pb.ReduceRequest()
            merge.CopyFrom(handle.request)
            merge.inputs[:] = [scratch + "/"]
            merge.merge = True
            merge.split = 1
            merge.idempotency_key = ""
            handle.progress("merge", 0.9, f"merging {len(results)} shard results")
            result = self._relay_one(handle, merge, lambda s, f, m: handle.progress(s, 0.9 + 0.1 * f, m), accept=False)
            return result
        finally:
            self.stores.remove_tree(scratch)


def _known_units(info: pb.TechniqueInfo, request: pb.ReduceRequest) -> int | None:
    """How many shard units a request holds, when the gateway can tell without reading
    the data: a technique whose unit is a file, given single files (no prefix), has one
    unit per input. Otherwise (frames, rows, projections inside files) unknown: the kit
    turns a shard with nothing to do into an empty part that the merge skips."""
    if "file" in info.shard_unit and not any(u.endswith("/") for u in request.inputs):
        return len(request.inputs)
    return None


def _capped(shards: int, units: int | None) -> int:
    """Never more shards than units; one shard is no split at all (0)."""
    if units is not None:
        shards = min(shards, max(units, 1))
    return shards if shards > 1 else 0


def parse_routes(pairs: Iterable[str]) -> dict[str, list[str]]:
    """``TECHNIQUE=ADDRESS`` pairs; a technique named several times has several replicas."""
    routes: dict[str, list[str]] = {}
    for pair in pairs:
        technique, sep, address = pair.partition("=")
        if not sep or not technique.strip() or not address.strip():
            raise errors.InvalidRequest(f"route {pair!r} is not TECHNIQUE=HOST:PORT")
        routes.setdefault(technique.strip(), []).append(address.strip())
    return routes
