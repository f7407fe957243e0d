"""The web component's only way to the data: the gateway's gRPC API, called with the
caller's own bearer token (so the caller sees exactly what the gateway lets it see).

One channel (grpc.aio) serves every session; the token travels as call metadata.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from panreduce import rpc
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc

STATES = {name: value for name, value in pb.JobState.items() if value}  # QUEUED, RUNNING, ...
FINISHED = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


class GatewayError(Exception):
    """A gRPC error of the gateway, with its status code name (``NOT_FOUND``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """Another proposal's job, output or file is 'not found', as over gRPC: a refused
        location (PERMISSION_DENIED) is reported the same way, never as 'forbidden'."""
        return {
            "NOT_FOUND": 404,
            "PERMISSION_DENIED": 404,
            "INVALID_ARGUMENT": 400,
            "OUT_OF_RANGE": 400,
            "UNAUTHENTICATED": 401,
            "FAILED_PRECONDITION": 409,
            "RESOURCE_EXHAUSTED": 429,
            "UNAVAILABLE": 503,
            "DEADLINE_EXCEEDED": 504,
        }.get(self.code, 502)


def _error(exc: grpc.aio.AioRpcError) -> GatewayError:
    code = exc.code()
    return GatewayError(code.name if code is not None else "UNKNOWN", (exc.details() or "")[:300])


@dataclass
class Download:
    name: str
    size: int
    sha256: str


class Gateway:
    """``address``: HOST:PORT; ``root_certificates``: talk TLS trusting these (PEM)."""

    def __init__(self, address: str, *, root_certificates: bytes | None = None, timeout: float = 30.0) -> None:
        self.address = address
        self.timeout = timeout
        self._root_certificates = root_certificates
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None

    def _stub_for(self) -> Any:
        # made on first use, inside the server's event loop
        if self._stub is None:
            if self._root_certificates:
                creds = grpc.ssl_channel_credentials(root_certificates=self._root_certificates)
                self._channel = grpc.aio.secure_channel(self.address, creds, options=rpc.CHANNEL_OPTIONS)
            else:
                self._channel = grpc.aio.insecure_channel(self.address, options=rpc.CHANNEL_OPTIONS)
            self._stub = pb_grpc.ReducerStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel, self._stub = None, None

    @staticmethod
    def _md(token: str | None) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")] if token else []

    async def _unary(self, method: str, request: Any, token: str | None) -> Any:
        try:
            return await getattr(self._stub_for(), method)(request, metadata=self._md(token), timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None

    async def list_jobs(self, token: str | None, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
        return await self._unary("ListJobs", request, token)

    async def get_job(self, token: str | None, job_id: str) -> pb.Job:
        return await self._unary("GetJob", pb.GetJobRequest(job_id=job_id), token)

    async def cancel(self, token: str | None, job_id: str) -> pb.Job:
        return await self._unary("Cancel", pb.CancelRequest(job_id=job_id), token)

    async def metadata(self, token: str | None, uri: str) -> pb.MetadataResponse:
        return await self._unary("GetMetadata", pb.MetadataRequest(uri=uri), token)

    async def watch(
        self, token: str | None, job_id: str, after_seq: int = 0, *, timeout: float | None = None
    ) -> AsyncIterator[pb.JobEvent]:
        """The job's events; ``timeout``: end quietly after this long (a finished job's log)."""
        call = self._stub_for().Watch(
            pb.WatchRequest(job_id=job_id, after_seq=after_seq), metadata=self._md(token), timeout=timeout
        )
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            if timeout is not None and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return
            raise _error(exc) from None
        finally:
            call.cancel()

    async def download(self, token: str | None, uri: str, *, max_bytes: int) -> tuple[Download, AsyncIterator[bytes]]:
        """The header of ``uri`` and an iterator over its bytes; the iterator checks the
        size and SHA-256 at the end (a mismatch raises, so a truncated or altered file is
        never delivered as complete). Errors of the first message raise here."""
        call = self._stub_for().Download(pb.DownloadRequest(uri=uri), metadata=self._md(token))
        it = call.__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            call.cancel()
            raise GatewayError("INTERNAL", "the download stream was empty") from None
        except grpc.aio.AioRpcError as exc:
            raise _error(exc) from None
        if not first.HasField("header"):
            call.cancel()
            raise GatewayError("INTERNAL", "the download stream did not start with a header")
        head = Download(first.header.name, first.header.size, first.header.sha256)
        if head.size > max_bytes:
            call.cancel()
            raise GatewayError("RESOURCE_EXHAUSTED", f"the file is larger than {max_bytes} bytes")

        async def body() -> AsyncIterator[bytes]:
            digest, seen, expected = hashlib.sha256(), 0, head.sha256
            try:
                async for chunk in it:
                    if chunk.HasField("trailer"):
                        expected = chunk.trailer.sha256
                        continue
                    data = chunk.data
                    if chunk.offset != seen or zlib.crc32(data) != chunk.crc32:
                        raise GatewayError("DATA_LOSS", f"corrupt or out-of-order chunk at offset {chunk.offset}")
                    seen += len(data)
                    if seen > head.size:
                        raise GatewayError("DATA_LOSS", "the download is longer than announced")
                    digest.update(data)
                    yield data
            except grpc.aio.AioRpcError as exc:
                raise _error(exc) from None
            finally:
                call.cancel()
            if seen != head.size or not expected or digest.hexdigest() != expected:
                raise GatewayError("DATA_LOSS", "the download does not match its size or checksum")

        return head, body()
