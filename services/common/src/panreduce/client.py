"""The Python client: talk to a gateway or to a technique server directly.

    from panreduce.client import Client
    with Client("localhost:50050") as c:
        done = c.reduce("scan", ["/data/794932.nxs"], {"model": "gaussian"})
        print(done.summary["center"], [o.uri for o in done.outputs])

Errors come back as the ``panreduce.errors`` exceptions the server raised.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from panreduce import errors, rpc
from panreduce.convert import from_struct, result_to_dict, to_struct
from panreduce.transfer import file_chunks, write_download
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from google.protobuf.timestamp_pb2 import Timestamp

    from panreduce.metadata import Metadata

EventCallback = Callable[[pb.JobEvent], None]


@dataclass
class Reduction:
    """A finished reduction."""

    job_id: str
    technique: str
    result: pb.Result

    @property
    def outputs(self) -> list[pb.Output]:
        return list(self.result.outputs)

    @property
    def summary(self) -> dict[str, Any]:
        return from_struct(self.result.summary)

    def to_dict(self) -> dict[str, Any]:
        return result_to_dict(pb.Job(job_id=self.job_id, technique=self.technique, result=self.result))


def make_request(
    technique: str,
    inputs: Sequence[str],
    parameters: Mapping[str, Any] | None = None,
    output: str = "",
    *,
    labels: Mapping[str, str] | None = None,
    idempotency_key: str = "",
    shard: tuple[int, int] | None = None,
    split: int = 0,
) -> pb.ReduceRequest:
    req = pb.ReduceRequest(
        technique=technique,
        inputs=[str(i) for i in inputs],
        output=str(output),
        idempotency_key=idempotency_key,
        labels=dict(labels or {}),
        split=split,
    )
    req.parameters.CopyFrom(to_struct(parameters or {}))
    if shard is not None:
        req.shard.index, req.shard.count = shard
    return req


class Client:
    """``token``: a bearer token for gateways that need one; ``root_certificates``
    (PEM bytes) or ``tls=True`` (system roots): talk TLS."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        token: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
    ) -> None:
        self.address = address
        self.timeout = timeout
        if tls or root_certificates:
            creds = grpc.ssl_channel_credentials(root_certificates=root_certificates)
            self.channel = grpc.secure_channel(address, creds, options=rpc.CHANNEL_OPTIONS)
        else:
            self.channel = grpc.insecure_channel(address, options=rpc.CHANNEL_OPTIONS)
        self._raw_channel = self.channel
        if token:
            self.channel = grpc.intercept_channel(self.channel, BearerToken(token))
        self.stub: Any = pb_grpc.ReducerStub(self.channel)  # type: ignore[no-untyped-call]

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._raw_channel.close()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None

    # -- describe -------------------------------------------------------------------
    def describe(self, technique: str = "") -> pb.DescribeResponse:
        return cast(pb.DescribeResponse, self._call(self.stub.Describe, pb.DescribeRequest(technique=technique)))

    def techniques(self) -> list[dict[str, Any]]:
        """Every technique the server offers, with its parameter schema as a dict."""
        out = []
        for t in self.describe().techniques:
            out.append(
                {
                    "name": t.name,
                    "version": t.version,
                    "title": t.title,
                    "description": t.description,
                    "parameters_schema": json.loads(t.parameters_schema or "{}"),
                    "input_kinds": list(t.input_kinds),
                    "output_formats": list(t.output_formats),
                    "wants_gpu": t.wants_gpu,
                    "shardable": t.shardable,
                    "shard_unit": t.shard_unit,
                }
            )
        return out

    def health(self, service: str = "") -> str:
        stub = health_pb2_grpc.HealthStub(self.channel)
        resp = self._call(stub.Check, health_pb2.HealthCheckRequest(service=service))
        return cast(str, health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))

    # -- reduce ---------------------------------------------------------------------
    def reduce(
        self,
        technique: str,
        inputs: Sequence[str],
        parameters: Mapping[str, Any] | None = None,
        output: str = "",
        *,
        on_event: EventCallback | None = None,
        timeout: float | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str = "",
        split: int = 0,
    ) -> Reduction:
        """Run a reduction and wait for it; ``on_event`` sees every event. ``split``
        (gateway): shards to split a shardable job into (0 automatic, 1 never)."""
        req = make_request(
            technique, inputs, parameters, output, labels=labels, idempotency_key=idempotency_key, split=split
        )
        call = self.stub.Reduce(req, timeout=timeout if timeout is not None else self.timeout)
        return self._follow(call, technique, on_event)

    def reduce_call(self, request: pb.ReduceRequest, timeout: float | None = None) -> grpc.Call:
        """The raw streaming call (cancel it with ``.cancel()``)."""
        return self.stub.Reduce(request, timeout=timeout)

    def _follow(self, call: Any, technique: str, on_event: EventCallback | None) -> Reduction:
        job_id = ""
        try:
            for event in call:
                job_id = job_id or event.job_id
                if on_event is not None:
                    on_event(event)
                if event.HasField("result"):
                    return Reduction(job_id, technique, event.result)
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None
        raise errors.InternalError(f"{self.address}: the event stream of job {job_id} ended without a result")

    def submit(
        self,
        technique: str,
        inputs: Sequence[str],
        parameters: Mapping[str, Any] | None = None,
        output: str = "",
        *,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str = "",
    ) -> pb.Job:
        req = make_request(technique, inputs, parameters, output, labels=labels, idempotency_key=idempotency_key)
        return cast(pb.Job, self._call(self.stub.Submit, req))

    def watch(self, job_id: str, after_seq: int = 0) -> Iterator[pb.JobEvent]:
        try:
            yield from self.stub.Watch(pb.WatchRequest(job_id=job_id, after_seq=after_seq))
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None

    def wait(self, job_id: str, on_event: EventCallback | None = None) -> pb.Job:
        """Watch a job to its end (resuming after disconnects) and return it."""
        seq = 0
        while True:
            try:
                for event in self.watch(job_id, seq):
                    seq = event.seq
                    if on_event is not None:
                        on_event(event)
            except errors.Unavailable:
                import time

                time.sleep(0.5)
                continue
            job = self.get_job(job_id)
            if job.state in (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED):
                return job

    def cancel(self, job_id: str) -> pb.Job:
        return cast(pb.Job, self._call(self.stub.Cancel, pb.CancelRequest(job_id=job_id)))

    def get_job(self, job_id: str) -> pb.Job:
        return cast(pb.Job, self._call(self.stub.GetJob, pb.GetJobRequest(job_id=job_id)))

    def list_jobs(
        self,
        *,
        technique: str = "",
        state: int = 0,
        labels: Mapping[str, str] | None = None,
        owner: str = "",
        proposal: str = "",
        sample: str = "",
        created_after: Timestamp | None = None,
        created_before: Timestamp | None = None,
        page_size: int = 0,
    ) -> list[pb.Job]:
        """Jobs matching every filter given (newest first); sample and owner also match
        the names read from the inputs' metadata."""
        jobs: list[pb.Job] = []
        token = ""
        while True:
            query = pb.ListJobsRequest(
                technique=technique,
                state=cast(Any, state),
                labels=dict(labels or {}),
                owner=owner,
                proposal=proposal,
                sample=sample,
                page_size=page_size,
                page_token=token,
            )
            if created_after is not None:
                query.created_after.CopyFrom(created_after)
            if created_before is not None:
                query.created_before.CopyFrom(created_before)
            resp = self._call(self.stub.ListJobs, query)
            jobs.extend(resp.jobs)
            token = resp.next_page_token
            if not token:
                return jobs

    def metadata(self, uri: str) -> Metadata:
        """Every metadata field of a NeXus/HDF5 file the server can read (a panreduce.metadata.Metadata)."""
        from panreduce.metadata import from_message

        return from_message(self._call(self.stub.GetMetadata, pb.MetadataRequest(uri=uri)))

    # -- inline data ----------------------------------------------------------------
    def upload(self, path: Path | str, name: str | None = None, proposal: str = "") -> pb.ObjectInfo:
        """Send a local file of any size; returns its upload:// URI for use as an input.
        ``proposal``: the proposal it belongs to (gateways with access control)."""
        metadata = [("x-panreduce-proposal", proposal)] if proposal else None
        return cast(pb.ObjectInfo, self._call(self.stub.Upload, file_chunks(Path(path), name), metadata=metadata))

    def download(self, uri: str, dest: Path | str) -> pb.ObjectInfo:
        try:
            return write_download(self.stub.Download(pb.DownloadRequest(uri=uri), timeout=self.timeout), Path(dest))
        except grpc.RpcError as exc:
            raise _error(exc, self.address) from None


class BearerToken(rpc.AddMetadata):
    """Add ``authorization: Bearer TOKEN`` to every call."""

    def __init__(self, token: str) -> None:
        super().__init__(("authorization", f"Bearer {token}"))


def _error(exc: grpc.RpcError, address: str) -> errors.PanReduceError:
    failure = rpc.failure_from_rpc_error(exc)
    err = rpc.error_of_failure(failure)
    if (
        isinstance(err, errors.Unavailable)
        and failure.reason in ("", "UNAVAILABLE")
        and not failure.metadata
        and "unavailable" not in failure.message
    ):
        err.message = f"cannot reach PaNReduce at {address}: {err.message}"
        err.args = (err.message,)
    return err
