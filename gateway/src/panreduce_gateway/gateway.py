"""The gateway: one Reducer endpoint in front of every technique service.

It routes Reduce/Submit by technique to the service addresses in its configuration,
checks each request with the service before queuing it (``validate_only``), relays
the service's events into its own job log, and keeps the job table. Cancelling a
gateway job cancels the upstream call, and so the running algorithm.

Seams for the gateway issue: the job table is a ``JobStore``; the stores (local
folder here) are a ``Stores``; routes are a mapping that may list several replicas.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import grpc

from panreduce import __version__, errors, rpc
from panreduce.jobs import JobHandle, JobManager, JobStore, new_job_id
from panreduce.kit.server import checked_download_uri, deadline_of, list_jobs, reduce_stream
from panreduce.serving import rpc_method
from panreduce.storage import Stores, check_inputs_exist
from panreduce.transfer import receive_upload, send_download
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

log = logging.getLogger("panreduce.gateway")

_LEVEL_NAMES = {v: k.lower() for k, v in pb.LogLine.Level.items()}


@dataclass
class Route:
    technique: str
    address: str
    channel: grpc.Channel = field(init=False, repr=False)
    stub: pb_grpc.ReducerStub = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.address, options=rpc.CHANNEL_OPTIONS)
        self.stub = pb_grpc.ReducerStub(self.channel)


class GatewayService(pb_grpc.ReducerServicer):
    name = "gateway"

    def __init__(self, routes: Mapping[str, str], *, stores: Stores, store: JobStore | None = None,
                 max_running: int = 64, describe_timeout: float = 10.0) -> None:
        self.routes = {t: Route(t, addr) for t, addr in routes.items()}
        self.stores = stores
        self.describe_timeout = describe_timeout
        self.manager = JobManager(self._relay, store=store, max_running=max_running, name="gateway")
        self._described: dict[str, pb.TechniqueInfo] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
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
        err = rpc.from_rpc_error(exc)
        if isinstance(err, errors.Unavailable):
            return errors.Unavailable(
                f"the {route.technique} service at {route.address} is unavailable ({err.message}); try again later")
        return err

    def _info(self, technique: str) -> pb.TechniqueInfo:
        route = self.route(technique)
        with self._lock:
            cached = self._described.get(technique)
        if cached is not None:
            return cached
        try:
            resp = route.stub.Describe(pb.DescribeRequest(technique=technique), timeout=self.describe_timeout)
        except grpc.RpcError as exc:
            raise self._upstream_error(route, exc) from None
        info = resp.techniques[0]
        with self._lock:
            self._described[technique] = info
        return info

    # -- RPCs -----------------------------------------------------------------------
    @rpc_method
    def Describe(self, request: pb.DescribeRequest, context) -> pb.DescribeResponse:  # noqa: N802, ANN001, ARG002
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

    def _submit(self, request: pb.ReduceRequest, context: grpc.ServicerContext, *,
                follow: bool = False) -> pb.Job:
        """Check and queue a request; ``follow`` (Reduce): the call's deadline is the job's."""
        route = self.route(request.technique)
        if request.idempotency_key:
            existing = self.manager.store.by_idempotency_key(request.idempotency_key)
            if existing is not None:
                return existing
        check_inputs_exist(self.stores, list(request.inputs))
        job_id = new_job_id()
        req = pb.ReduceRequest()
        req.CopyFrom(request)
        req.inputs[:] = [self._upstream_uri(u) for u in request.inputs]
        if not req.output:
            req.output = self.stores.default_output(job_id)
        # Let the service check parameters and inputs now, so a bad request fails the
        # call instead of becoming a failed job.
        check = pb.ReduceRequest()
        check.CopyFrom(req)
        check.validate_only = True
        try:
            route.stub.Submit(check, timeout=self.describe_timeout)
        except grpc.RpcError as exc:
            raise self._upstream_error(route, exc) from None
        if req.validate_only:
            return pb.Job(technique=req.technique, request=req)
        job, _ = self.manager.submit(req, deadline=deadline_of(context) if follow else None, job_id=job_id)
        return job

    def _upstream_uri(self, uri: str) -> str:
        """Inline uploads live in the gateway's store; services get their local path."""
        if self.stores.for_uri(uri) is self.stores.uploads:
            return str(self.stores.uploads.path_of(uri)) + ("/" if uri.endswith("/") else "")
        return uri

    @rpc_method
    def Reduce(self, request: pb.ReduceRequest, context):  # noqa: N802, ANN001, ANN201
        job = self._submit(request, context, follow=True)
        yield from reduce_stream(self.manager, job.job_id, context)

    @rpc_method
    def Submit(self, request: pb.ReduceRequest, context) -> pb.Job:  # noqa: N802, ANN001
        return self._submit(request, context)

    @rpc_method
    def Watch(self, request: pb.WatchRequest, context):  # noqa: N802, ANN001, ANN201
        yield from self.manager.watch(request.job_id, request.after_seq, is_active=context.is_active)

    @rpc_method
    def Cancel(self, request: pb.CancelRequest, context) -> pb.Job:  # noqa: N802, ANN001, ARG002
        return self.manager.cancel(request.job_id)

    @rpc_method
    def GetJob(self, request: pb.GetJobRequest, context) -> pb.Job:  # noqa: N802, ANN001, ARG002
        return self.manager.get(request.job_id)

    @rpc_method
    def ListJobs(self, request: pb.ListJobsRequest, context) -> pb.ListJobsResponse:  # noqa: N802, ANN001, ARG002
        return list_jobs(self.manager, request)

    @rpc_method
    def Upload(self, request_iterator, context) -> pb.ObjectInfo:  # noqa: N802, ANN001, ARG002
        return receive_upload(request_iterator, self.stores)

    @rpc_method
    def Download(self, request: pb.DownloadRequest, context):  # noqa: N802, ANN001, ANN201, ARG002
        uri = checked_download_uri(self.stores, self.manager, request.uri)
        yield from send_download(self.stores, uri, request.offset)

    # -- relaying a job ---------------------------------------------------------------
    def _relay(self, handle: JobHandle) -> pb.Result:
        route = self.route(handle.request.technique)
        timeout = None
        if handle.deadline is not None:
            timeout = max(handle.deadline - time.monotonic(), 0.001)
        call = route.stub.Reduce(handle.request, timeout=timeout)
        handle.on_cancel(call.cancel)
        try:
            for event in call:
                kind = event.WhichOneof("kind")
                if kind == "accepted":
                    handle.accepted_upstream(route.address, event.job_id)
                elif kind == "progress":
                    handle.progress(event.progress.stage, event.progress.fraction, event.progress.message)
                elif kind == "log":
                    handle.log(_LEVEL_NAMES.get(event.log.level, "info"), event.log.message)
                elif kind == "result":
                    return event.result
        except grpc.RpcError as exc:
            if handle.cancel_event.is_set():
                raise errors.JobCancelled("cancelled by the caller") from None
            raise self._upstream_error(route, exc) from None
        raise errors.InternalError(f"the {route.technique} service ended the job without a result")
