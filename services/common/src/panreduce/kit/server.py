"""A technique as a gRPC service: ``serve(Technique)``.

The kit stages inputs, validates parameters once at the edge, runs ``load`` and
``reduce`` in a worker with progress and cancellation, writes provenance into every
output, publishes the outputs atomically, and reports errors by the one table.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path

import grpc

from panreduce import __version__, catalogue, errors, limits, locations, metadata, provenance
from panreduce.convert import from_struct, message_to_dict, plain, to_struct
from panreduce.jobs import TERMINAL, JobHandle, JobManager
from panreduce.kit.scratch import ScratchArea
from panreduce.kit.technique import Context, EmptyShard, Shard, Technique, without_empty_shards
from panreduce.metrics import BYTES_STAGED, JOB_SECONDS, JOBS, JOBS_RUNNING
from panreduce.mtls import ServiceTLS
from panreduce.serving import (
    AbortWith,
    RunningServer,
    caller_of,
    rpc_method,
    run_until_signal,
    start_server,
)
from panreduce.storage import LocalStore, Stores, check_inputs_exist, sha256_file, stage_inputs
from panreduce.transfer import receive_upload, send_download
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

log = logging.getLogger("panreduce.kit")

# Fractions of a job's progress given to each kit stage (reduce gets the rest).
STAGE_SPAN = {"stage": (0.0, 0.05), "load": (0.05, 0.2), "reduce": (0.2, 0.95), "publish": (0.95, 1.0)}


def technique_info(t: type[Technique]) -> pb.TechniqueInfo:
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


def distribution_of(t: type[Technique]) -> str:
    """The installed distribution that provides technique ``t`` (for provenance)."""
    top = t.__module__.split(".")[0]
    return (importlib_metadata.packages_distributions().get(top) or [top])[0]


def validate_request(technique: type[Technique], request: pb.ReduceRequest):  # noqa: ANN201
    """Check a request at the edge: limits, technique, inputs, shard, parameters. Returns params."""
    limits.check_reduce_request(request)
    if request.technique and request.technique != technique.name:
        raise errors.UnknownTechnique(request.technique, [technique.name])
    if not request.inputs:
        raise errors.InvalidRequest("no inputs: give at least one input URI or path")
    if request.HasField("shard") and request.shard.count:
        if not technique.shardable and request.shard.count > 1:
            raise errors.InvalidRequest(f"technique {technique.name!r} cannot be sharded")
        if request.shard.index >= request.shard.count:
            raise errors.InvalidRequest(
                f"shard.index {request.shard.index} must be below shard.count {request.shard.count}")
    if request.merge and not technique.shardable:
        raise errors.InvalidRequest(f"technique {technique.name!r} is not shardable: nothing to merge")
    nonfinite = limits.nonfinite_numbers(request.parameters)
    if nonfinite:
        raise errors.InvalidParameters([errors.FieldViolation(errors.clip(p, 120), "Input should be a finite number; "
                                                              "got NaN or infinity") for p in nonfinite])
    return technique.validate_parameters(from_struct(request.parameters))


class TechniqueService(pb_grpc.ReducerServicer):
    """The Reducer service for one technique."""

    def __init__(self, technique: type[Technique] | Technique, *, stores: Stores,
                 scratch_root: Path | None = None, max_running: int = 1,
                 max_input_bytes: int | None = None) -> None:
        self.technique: Technique = technique() if isinstance(technique, type) else technique
        self.cls: type[Technique] = type(self.technique)
        self.name = self.cls.name
        self.stores = stores
        # This process's own scratch folder; what killed servers left is removed first.
        self.scratch = ScratchArea(Path(scratch_root or tempfile.gettempdir()) / f"panreduce-{self.name}")
        self.scratch_root = self.scratch.path
        env_limit = os.environ.get("PANREDUCE_MAX_INPUT_BYTES")
        self.max_input_bytes = max_input_bytes or (int(env_limit) if env_limit else self.cls.max_input_bytes)
        self.manager = JobManager(self._run, max_running=max_running, name=self.name)
        self.distribution = distribution_of(self.cls)
        self.info = technique_info(self.cls)

    # -- RPCs -----------------------------------------------------------------------
    @rpc_method
    def Describe(self, request: pb.DescribeRequest, context) -> pb.DescribeResponse:  # noqa: N802, ANN001
        limits.check_technique(request.technique)
        if request.technique and request.technique != self.name:
            raise errors.UnknownTechnique(request.technique, [self.name])
        return pb.DescribeResponse(server_kind="technique", server_version=__version__, techniques=[self.info])

    def _submit(self, request: pb.ReduceRequest, context: grpc.ServicerContext, *,
                follow: bool = False) -> pb.Job:
        """Check and queue a request; ``follow`` (Reduce): the call's deadline is the job's."""
        validate_request(self.cls, request)
        check_inputs_exist(self.stores, list(request.inputs))
        check_output_location(self.stores, request.output)
        req = pb.ReduceRequest()
        req.CopyFrom(request)
        req.technique = self.name
        if req.validate_only:
            return pb.Job(technique=self.name, request=req)
        subject, proposal = caller_of(context)  # who the gateway calls for (trusted: it holds the token)
        job, created = self.manager.submit(req, deadline=deadline_of(context) if follow else None,
                                           owner=subject, proposal=proposal)
        if created:
            log.info("job %s accepted for subject %r, proposal %r", job.job_id, subject or "-", proposal or "-",
                     extra={"job_id": job.job_id, "subject": subject, "proposal": proposal})
        return job

    @rpc_method
    def Reduce(self, request: pb.ReduceRequest, context):  # noqa: N802, ANN001, ANN201
        job = self._submit(request, context, follow=True)
        yield from reduce_stream(self.manager, job.job_id, context)

    @rpc_method
    def Submit(self, request: pb.ReduceRequest, context) -> pb.Job:  # noqa: N802, ANN001
        return self._submit(request, context)

    @rpc_method
    def Watch(self, request: pb.WatchRequest, context):  # noqa: N802, ANN001, ANN201
        limits.check_job_id(request.job_id)
        yield from self.manager.watch(request.job_id, request.after_seq, is_active=context.is_active)

    @rpc_method
    def Cancel(self, request: pb.CancelRequest, context) -> pb.Job:  # noqa: N802, ANN001, ARG002
        limits.check_job_id(request.job_id)
        return self.manager.cancel(request.job_id)

    @rpc_method
    def GetJob(self, request: pb.GetJobRequest, context) -> pb.Job:  # noqa: N802, ANN001, ARG002
        limits.check_job_id(request.job_id)
        return self.manager.get(request.job_id)

    @rpc_method
    def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:  # noqa: N802, ANN001, ARG002
        limits.check_list_request(request)
        return list_jobs(self.manager, request)

    @rpc_method
    def Upload(self, request_iterator, context) -> pb.ObjectInfo:  # noqa: N802, ANN001, ARG002
        return receive_upload(request_iterator, self.stores)

    @rpc_method
    def Download(self, request: pb.DownloadRequest, context):  # noqa: N802, ANN001, ANN201, ARG002
        limits.check_uri(request.uri)
        uri = checked_download_uri(self.stores, self.manager, request.uri)
        yield from send_download(self.stores, uri, request.offset)

    @rpc_method
    def GetMetadata(self, request: pb.MetadataRequest, context) -> pb.MetadataResponse:  # noqa: N802, ANN001, ARG002
        limits.check_uri(request.uri)
        return metadata.of_uri(self.stores, request.uri, cancelled=lambda: not context.is_active())

    # -- the job --------------------------------------------------------------------
    def _run(self, handle: JobHandle) -> pb.Result:
        request = handle.request
        started = datetime.now(UTC)
        t0 = time.monotonic()
        JOBS_RUNNING.labels(self.name, self.name).inc()
        scratch = Path(tempfile.mkdtemp(prefix=f"{handle.job_id}-", dir=self.scratch_root))
        state = "FAILED"
        try:
            params = validate_request(self.cls, request)
            shard = Shard(request.shard.index, request.shard.count) if request.shard.count else None
            ctx = Context(
                job_id=handle.job_id, scratch=scratch, progress_sink=handle.progress,
                log_sink=handle.log, cancel_event=handle.cancel_event, deadline=handle.deadline, shard=shard,
            )
            ctx._set_span(*STAGE_SPAN["stage"])
            ctx.progress(0.0, "stage", f"staging {len(request.inputs)} input(s)")
            inputs = stage_inputs(
                self.stores, list(request.inputs), scratch, max_bytes=self.max_input_bytes,
                on_file=lambda ref: BYTES_STAGED.labels(self.name, self.name).inc(ref.size),
            )
            ctx.progress(1.0, "stage", f"staged {len(inputs.files)} file(s)")
            found = catalogue.extract(inputs.files)
            try:
                if request.merge:
                    ctx._set_span(STAGE_SPAN["load"][0], STAGE_SPAN["reduce"][1])
                    summary = self.technique.merge(without_empty_shards(inputs), params, ctx)
                else:
                    ctx._set_span(*STAGE_SPAN["load"])
                    data = self.technique.load(inputs, params, ctx)
                    ctx.check_cancelled()
                    ctx._set_span(*STAGE_SPAN["reduce"])
                    summary = self.technique.reduce(data, params, ctx)
            except EmptyShard as empty:
                ctx.log(str(empty))
                summary = {"empty_shard": True}
            ctx.check_cancelled()
            if shard is not None:
                summary_path = ctx.output_path("summary.json", format="json", role="summary")
                summary_path.write_text(json.dumps(plain(summary or {}), indent=1))
            ctx._set_span(*STAGE_SPAN["publish"])
            ctx.progress(0.0, "publish", f"writing provenance and publishing {len(ctx.outputs)} output(s)")
            result = self._publish(handle, request, params, inputs, ctx, summary or {}, started)
            result.catalogue.update(found)
            handle.progress("done", 1.0, "finished")
            state = "SUCCEEDED"
            return result
        except errors.JobCancelled:
            state = "CANCELLED"
            raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            JOBS_RUNNING.labels(self.name, self.name).dec()
            JOBS.labels(self.name, self.name, state).inc()
            JOB_SECONDS.labels(self.name, self.name).observe(time.monotonic() - t0)

    def _publish(self, handle, request, params, inputs, ctx: Context, summary, started) -> pb.Result:  # noqa: ANN001
        outputs = ctx.outputs
        for out in outputs:
            if not out.path.is_file():
                raise errors.InternalError(f"technique {self.name} declared output {out.name} but did not write it")
        record = provenance.build(
            job_id=handle.job_id,
            technique=self.name,
            technique_version=self.cls.version,
            technique_distribution=self.distribution,
            request=message_to_dict(request),
            parameters=params.model_dump(mode="json"),
            inputs=inputs,
            started=started,
        )
        for out in outputs:
            provenance.embed(record, out)
        record["outputs"] = [
            {"name": o.name, "format": o.format, "role": o.role, "size": o.path.stat().st_size,
             "sha256": sha256_file(o.path)} for o in outputs
        ]
        prov_path = ctx.output_path("provenance.json", format="json", role="provenance")
        prov_path.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
        all_outputs = ctx.outputs
        ctx.check_cancelled()  # last point at which a cancel leaves nothing behind
        dest = request.output or self.stores.default_output(handle.job_id)
        store = self.stores.for_uri(dest)
        uris = store.publish([(o.path, o.name) for o in all_outputs], dest)
        result = pb.Result(summary=to_struct(summary), provenance_id=record["id"])
        for o, uri in zip(all_outputs, uris, strict=True):
            result.outputs.add(uri=uri, format=o.format, role=o.role, size=o.path.stat().st_size,
                               sha256=sha256_file(o.path))
            if o.role == "provenance":
                result.provenance_uri = uri
        return result


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a time.monotonic() value (None: no deadline)."""
    remaining = context.time_remaining()
    return time.monotonic() + remaining if remaining is not None and remaining < 1e8 else None


def reduce_stream(manager: JobManager, job_id: str, context: grpc.ServicerContext):  # noqa: ANN201
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


def list_jobs(manager: JobManager, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
    jobs = manager.list(request)
    size = limits.page_size(request)
    start = limits.page_start(request.page_token)
    page = jobs[start:start + size]
    token = str(start + size) if start + size < len(jobs) else ""
    return pb.ListJobsResponse(jobs=page, next_page_token=token)


def check_output_location(stores: Stores, output: str) -> None:
    """Refuse, before a job runs, an output that names an existing file (or lies under
    one): results go into a folder. Checked at submission by the gateway and the service."""
    if not output:
        return
    store = stores.for_uri(output)
    if not isinstance(store, LocalStore):
        return
    path = store.path_of(output.rstrip("/") or "/")
    for p in (path, *path.parents):
        try:
            if not p.exists():
                continue
            if not p.is_dir():
                raise errors.InvalidRequest(
                    f"output {errors.clip(output)}: {errors.clip(str(p))} is an existing file, not a folder; "
                    "name a folder (new or existing) for the results")
        except OSError as exc:
            raise errors.InvalidRequest(f"output {errors.clip(output)} is not a usable location "
                                        f"({exc.strerror or exc})") from None
        return


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
        if any(o.uri == uri or ("://" not in o.uri and locations.real_path(o.uri) == path)
               for o in job.result.outputs):
            return str(path)
    raise errors.PermissionDenied(f"{uri} is neither in this server's store nor an output of its jobs")


def serve(technique: type[Technique] | Technique, *, port: int = 50051, host: str = "127.0.0.1",
          store_root: Path | None = None, max_running: int = 1, metrics_port: int = 0,
          drain_seconds: float = 30.0, service_token: str | None = None,
          service_tls: ServiceTLS | None = None, health_port: int = 0) -> None:
    """Run one technique as a long-lived gRPC service until SIGTERM/SIGINT.

    ``service_token``: the secret every call must carry (None: serve anyone; the CLI
    allows that only with ``--insecure``). ``service_tls``: mutual TLS (panreduce.mtls);
    ``health_port``: plain-text health checks there (probes beside mTLS)."""
    from panreduce.logs import configure
    from panreduce.metrics import serve_metrics

    configure()
    running = start_technique(technique, address=f"{host}:{port}",
                              stores=Stores.from_env(store_root),
                              max_running=max_running, service_token=service_token, service_tls=service_tls,
                              health_address=f"{host}:{health_port}" if health_port else None)
    serve_metrics(metrics_port)
    log.info("technique %s serving on %s:%d (%s)", running.name, host, running.port,
             ", ".join([*(["service token required"] if service_token else []),
                        *(["mTLS: client certificate required"] if service_tls else [])])
             or "INSECURE: no service token, any caller is served")
    run_until_signal([running], grace=drain_seconds)


def start_technique(technique: type[Technique] | Technique, *, address: str = "127.0.0.1:0",
                    stores: Stores, max_running: int = 1, scratch_root: Path | None = None,
                    service_token: str | None = None, service_tls: ServiceTLS | None = None,
                    health_address: str | None = None) -> RunningServer:
    """Start a technique server (non-blocking); health turns SERVING after warm-up.

    ``service_token``: refuse (UNAUTHENTICATED) every Reducer call without it; the
    gateway in front must be given the same (``GatewayService(service_token=...)``)."""
    service = TechniqueService(technique, stores=stores, max_running=max_running, scratch_root=scratch_root)
    running = start_server(service, address=address, name=service.name, manager=service.manager,
                           service_token=service_token, service_tls=service_tls, health_address=health_address)
    service.technique.warm_up()
    running.set_serving(True)
    return running
