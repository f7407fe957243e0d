"""A technique as a gRPC service: ``serve(Technique)``.

The servicer checks a request at the edge and queues it; a worker decodes it, runs the
job with :func:`panreduce.kit.runner.run_request` (staging, the technique, provenance,
the atomic publish: no gRPC there) and encodes the result. Errors are reported by the
one table.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

from panreduce import __version__, audit, errors, limits, locations, metadata
from panreduce.jobs import TERMINAL, JobHandle, JobManager, new_job_id
from panreduce.kit.runner import (  # noqa: F401 - re-exported: the gateway checks outputs the same way
    STAGE_SPAN,
    check_output_location,
    distribution_of,
    run_request,
    to_message,
    validate_request,
)
from panreduce.kit.scratch import ScratchArea
from panreduce.kit.technique import AnyTechnique
from panreduce.mtls import ServiceTLS
from panreduce.scope import SCOPE_HEADER, Scope, active, scope_of
from panreduce.scopekey import ScopeVerifier, Statement
from panreduce.serving import AbortWith, RunningServer, caller_of, job_id_of, rpc_method, run_until_signal, start_server
from panreduce.storage import Stores, check_inputs_exist
from panreduce.transfer import receive_upload, send_download
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

log = logging.getLogger("panreduce.kit")


def technique_info(t: type[AnyTechnique]) -> pb.TechniqueInfo:
    return pb.TechniqueInfo(
        name=t.name,
        version=t.version,
        title=t.title,
        description=t.description,
        parameters_schema=json.dumps(t.parameters_schema(), sort_keys=True),
        input_kinds=list(t.input_kinds),
        output_formats=list(t.output_formats),
        wants_gpu=t.wants_gpu,
        shardable=t.shardable,
        shard_unit=t.shard_unit if t.shardable else "",
    )


class TechniqueService(pb_grpc.ReducerServicer):
    """The Reducer service for one technique."""

    def __init__(
        self,
        technique: type[AnyTechnique] | AnyTechnique,
        *,
        stores: Stores,
        scratch_root: Path | None = None,
        max_running: int = 1,
        max_input_bytes: int | None = None,
    ) -> None:
        self.technique: AnyTechnique = technique() if isinstance(technique, type) else technique
        self.cls: type[AnyTechnique] = type(self.technique)
        self.name = self.cls.name
        self.stores = stores
        # This process's own scratch folder; what killed servers left is removed first.
        self.scratch = ScratchArea(Path(scratch_root or tempfile.gettempdir()) / f"panreduce-{self.name}")
        self.scratch_root = self.scratch.path
        from panreduce.settings import get_settings

        self.max_input_bytes = max_input_bytes or get_settings().max_input_bytes or self.cls.max_input_bytes
        self.manager = JobManager(self._run, max_running=max_running, name=self.name)
        self.distribution = distribution_of(self.cls)
        self.info = technique_info(self.cls)
        self._provenance_ids: dict[str, str] = {}  # service job id -> the gateway's (provenance)
        self._job_scopes: dict[str, Scope] = {}  # service job id -> its caller's locations (until it runs)

    # A service with a credential (service token, mTLS) serves data calls only with the
    # caller's locations from its gateway (panreduce.scope); start_technique sets it.
    require_scope = False
    # With a scope key (its public half), the scope must be a statement the gateway signed
    # for this call (panreduce.scopekey): a holder of the credential alone cannot make one.
    scope_verifier: ScopeVerifier | None = None

    def _statement(
        self, context: grpc.ServicerContext, rpc: str, request: object | None, job: str = ""
    ) -> Statement | None:
        """The call's verified statement (None: this service has no scope key); a missing,
        forged, expired, replayed or mismatched one is refused and audited."""
        if self.scope_verifier is None:
            return None
        value = ""
        for key, v in context.invocation_metadata() or ():
            if key == SCOPE_HEADER:
                value = v.decode("ascii", "replace") if isinstance(v, bytes) else v
        subject, proposal = caller_of(context)
        try:
            st = self.scope_verifier.verify(value, rpc=rpc, job=job, request=request, audience=self.name)
            if proposal and not st.sees(proposal):
                raise errors.PermissionDenied("the scope statement is not for the proposal this call names")
        except (errors.Unauthenticated, errors.PermissionDenied) as exc:
            audit.decision(
                subject=subject, proposal=proposal, allowed=False, rpc=rpc, resource="scope statement", reason=str(exc)
            )
            raise
        audit.decision(
            subject=st.subject,
            proposal=proposal,
            allowed=True,
            rpc=rpc,
            resource="scope statement",
            reason="signed by the gateway",
        )
        return st

    def _scope(
        self, context: grpc.ServicerContext, rpc: str = "", request: object | None = None, job: str = ""
    ) -> Scope:
        st = self._statement(context, rpc, request, job)
        if st is not None:
            return Scope.decode(st.scope)
        return scope_of(context.invocation_metadata(), required=self.require_scope)

    def _visible(self, context: grpc.ServicerContext, rpc: str, request: object) -> Statement | None:
        """For the job RPCs: the statement whose proposals' jobs the caller sees (None: no scope key)."""
        return self._statement(context, rpc, request)

    def _job(self, context: grpc.ServicerContext, rpc: str, request: object, job_id: str) -> None:
        """Refuse a job of a proposal the call's statement does not name (as not found: its
        existence is not told)."""
        st = self._visible(context, rpc, request)
        if st is not None:
            job = self.manager.get(job_id)
            if not st.sees(job.proposal):
                audit.decision(
                    subject=st.subject,
                    proposal=",".join(st.proposals),
                    allowed=False,
                    rpc=rpc,
                    resource=job_id,
                    reason="job of another proposal",
                )
                raise errors.JobNotFound(job_id)

    # -- RPCs -----------------------------------------------------------------------
    @rpc_method
    def Describe(self, request: pb.DescribeRequest, context: grpc.ServicerContext) -> pb.DescribeResponse:
        limits.check_technique(request.technique)
        if request.technique and request.technique != self.name:
            raise errors.UnknownTechnique(request.technique, [self.name])
        return pb.DescribeResponse(server_kind="technique", server_version=__version__, techniques=[self.info])

    def _submit(self, request: pb.ReduceRequest, context: grpc.ServicerContext, *, follow: bool = False) -> pb.Job:
        """Check and queue a request; ``follow`` (Reduce): the call's deadline is the job's."""
        validate_request(self.cls, request)
        scope = self._scope(context, "Reduce" if follow else "Submit", request, job_id_of(context))
        scope.check_request(self.stores, request)  # the gateway's check, again
        check_inputs_exist(self.stores, list(request.inputs))
        check_output_location(self.stores, request.output)
        req = pb.ReduceRequest()
        req.CopyFrom(request)
        req.technique = self.name
        if req.validate_only:
            return pb.Job(technique=self.name, request=req)
        subject, proposal = caller_of(context)  # who the gateway calls for (trusted: it holds the token)
        own_id = new_job_id()
        if scope.restricts:
            self._job_scopes[own_id] = scope  # checked again when the job stages its inputs
        self._provenance_ids[own_id] = job_id_of(context) or own_id  # the id the gateway's caller sees
        try:
            job, created = self.manager.submit(
                req, deadline=deadline_of(context) if follow else None, owner=subject, proposal=proposal, job_id=own_id
            )
        finally:
            if self.manager.handle(own_id) is None:
                self._provenance_ids.pop(own_id, None)
                self._job_scopes.pop(own_id, None)
        if created:
            log.info(
                "job %s accepted for subject %r, proposal %r",
                job.job_id,
                subject or "-",
                proposal or "-",
                extra={"job_id": job.job_id, "subject": subject, "proposal": proposal},
            )
        return job

    @rpc_method
    def Reduce(self, request: pb.ReduceRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        job = self._submit(request, context, follow=True)
        yield from reduce_stream(self.manager, job.job_id, context)

    @rpc_method
    def Submit(self, request: pb.ReduceRequest, context: grpc.ServicerContext) -> pb.Job:
        return self._submit(request, context)

    @rpc_method
    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        limits.check_job_id(request.job_id)
        self._job(context, "Watch", request, request.job_id)
        yield from self.manager.watch(request.job_id, request.after_seq, is_active=context.is_active)

    @rpc_method
    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.Job:
        limits.check_job_id(request.job_id)
        self._job(context, "Cancel", request, request.job_id)
        return self.manager.cancel(request.job_id)

    @rpc_method
    def GetJob(self, request: pb.GetJobRequest, context: grpc.ServicerContext) -> pb.Job:
        limits.check_job_id(request.job_id)
        self._job(context, "GetJob", request, request.job_id)
        return self.manager.get(request.job_id)

    @rpc_method
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        limits.check_list_request(request)
        st = self._visible(context, "ListJobs", request)
        return list_jobs(self.manager, request, visible=None if st is None else st.sees)

    @rpc_method
    def Upload(self, request_iterator: Iterator[pb.DataChunk], context: grpc.ServicerContext) -> pb.ObjectInfo:
        return receive_upload(request_iterator, self.stores)

    @rpc_method
    def Download(self, request: pb.DownloadRequest, context: grpc.ServicerContext) -> Iterator[pb.DataChunk]:
        limits.check_uri(request.uri)
        self._scope(context, "Download", request).check(self.stores, request.uri, "download")
        uri = checked_download_uri(self.stores, self.manager, request.uri)
        yield from send_download(self.stores, uri, request.offset)

    @rpc_method
    def GetMetadata(self, request: pb.MetadataRequest, context: grpc.ServicerContext) -> pb.MetadataResponse:
        limits.check_uri(request.uri)
        loc = self._scope(context, "GetMetadata", request).check(self.stores, request.uri, "metadata read")
        return metadata.of_uri(
            self.stores,
            request.uri,
            cancelled=lambda: not context.is_active(),
            checked=loc.local if loc is not None else None,
        )

    # -- the job --------------------------------------------------------------------
    def _run(self, handle: JobHandle) -> pb.Result:
        """Decode the queued request, run the job (kit.run), encode its result."""
        job_id = self._provenance_ids.pop(handle.job_id, handle.job_id)
        with active(self._job_scopes.pop(handle.job_id, None)):  # staging checks the scope again
            result = run_request(
                self.technique,
                handle.request,
                stores=self.stores,
                job_id=job_id,
                progress=handle.progress,
                log=handle.log,
                cancel=handle.cancel_event,
                deadline=handle.deadline,
                scratch_root=self.scratch_root,
                max_input_bytes=self.max_input_bytes,
                checked=True,
            )
        return to_message(result)


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value (None: no deadline)."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None and remaining < 1e8 else None


def reduce_stream(manager: JobManager, job_id: str, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
    """Events of a job for a Reduce call; cancelling the call cancels the job, and a
    failed job ends the call with its status."""

    def on_done() -> None:
        try:
            if manager.get(job_id).state not in TERMINAL:
                manager.cancel(job_id)
        except errors.JobNotFound:
            pass

    context.add_callback(on_done)
    yield from manager.watch(job_id, 0, is_active=context.is_active)
    job = manager.get(job_id)
    if job.state != pb.SUCCEEDED and job.state in TERMINAL:
        raise AbortWith(job.failure)


def list_jobs(
    manager: JobManager, request: pb.ListJobsRequest, *, visible: Callable[[str], bool] | None = None
) -> pb.ListJobsResponse:
    """A page of the jobs ``request`` asks for; ``visible``: only jobs of the proposals it admits."""
    jobs = manager.list(request)
    if visible is not None:
        jobs = [j for j in jobs if visible(j.proposal)]
    size = limits.page_size(request)
    start = limits.page_start(request.page_token)
    page = jobs[start : start + size]
    token = str(start + size) if start + size < len(jobs) else ""
    return pb.ListJobsResponse(jobs=page, next_page_token=token)


def checked_download_uri(stores: Stores, manager: JobManager, uri: str) -> str:
    """Only the server's own store area and the outputs of its jobs may be downloaded."""
    store = stores.for_uri(uri)
    if store is stores.uploads:
        return stores.uploads.location(uri).uri  # resolved once (panreduce.locations)
    if store is not stores.local:
        locations.resolve(uri)  # refuses double encoding, '..' and the like
        for job in manager.list(pb.ListJobsRequest(state=pb.SUCCEEDED)):
            if any(o.uri == uri for o in job.result.outputs):
                return uri
        raise errors.PermissionDenied(f"{locations.shown(uri)} is not an output of this server's jobs")
    path = stores.local.path_of(uri)
    if path == stores.root or stores.root in path.parents:
        return str(path)
    for job in manager.list(pb.ListJobsRequest(state=pb.SUCCEEDED)):
        for o in job.result.outputs:  # the path as published, opened as it is (never via a link since)
            if "://" not in o.uri and Path(os.path.normpath(o.uri)) == path:
                return str(o.uri)  # protobuf is untyped here
    raise errors.PermissionDenied(f"{uri} is neither in this server's store nor an output of its jobs")


def serve(
    technique: type[AnyTechnique] | AnyTechnique,
    *,
    port: int = 50051,
    host: str = "127.0.0.1",
    store_root: Path | None = None,
    max_running: int = 1,
    metrics_port: int = 0,
    drain_seconds: float = 30.0,
    service_token: str | None = None,
    service_tls: ServiceTLS | None = None,
    health_port: int = 0,
    scope_verifier: ScopeVerifier | None = None,
) -> None:
    """Run one technique as a long-lived gRPC service until SIGTERM/SIGINT.

    ``service_token``: the secret every call must carry (None: serve anyone; the CLI
    allows that only with ``--insecure``). ``service_tls``: mutual TLS (panreduce.mtls);
    ``health_port``: plain-text health checks there (probes beside mTLS)."""
    from panreduce.logs import configure
    from panreduce.metrics import serve_metrics

    configure()
    running = start_technique(
        technique,
        address=f"{host}:{port}",
        stores=Stores.from_env(store_root),
        max_running=max_running,
        service_token=service_token,
        service_tls=service_tls,
        health_address=f"{host}:{health_port}" if health_port else None,
        scope_verifier=scope_verifier,
    )
    serve_metrics(metrics_port)
    lacks = [
        *(
            []
            if service_token or service_tls
            else ["no service credential: ANY caller that reaches the port is served"]
        ),
        *([] if scope_verifier else ["no scope key: a caller names any proposal's locations"]),
    ]
    guards = [
        *(["service token required"] if service_token else []),
        *(["mTLS: client certificate required"] if service_tls else []),
        *(["signed scope required"] if scope_verifier else []),
    ]
    log.info("technique %s serving on %s:%d (%s)", running.name, host, running.port, ", ".join(guards) or "unguarded")
    if lacks:  # the CLI allows this only with --insecure
        log.warning("INSECURE, development only (--insecure): %s", "; ".join(lacks))
    run_until_signal([running], grace=drain_seconds)


def start_technique(
    technique: type[AnyTechnique] | AnyTechnique,
    *,
    address: str = "127.0.0.1:0",
    stores: Stores,
    max_running: int = 1,
    scratch_root: Path | None = None,
    service_token: str | None = None,
    service_tls: ServiceTLS | None = None,
    health_address: str | None = None,
    scope_verifier: ScopeVerifier | None = None,
) -> RunningServer:
    """Start a technique server (non-blocking); health turns SERVING after warm-up.

    ``service_token``: refuse (UNAUTHENTICATED) every Reducer call without it; the
    gateway in front must be given the same (``GatewayService(service_token=...)``).
    ``scope_verifier``: accept only scopes the gateway signed (its ``scope_signer``'s public
    key), and show each call only the jobs of its statement's proposals."""
    service = TechniqueService(technique, stores=stores, max_running=max_running, scratch_root=scratch_root)
    service.require_scope = bool(service_token or service_tls)
    service.scope_verifier = scope_verifier
    running = start_server(
        service,
        address=address,
        name=service.name,
        manager=service.manager,
        service_token=service_token,
        service_tls=service_tls,
        health_address=health_address,
    )
    service.technique.warm_up()
    running.set_serving(True)
    return running
