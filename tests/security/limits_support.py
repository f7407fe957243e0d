"""Fixtures for the request-limit, fuzz and tokens-file tests: a real scan service and a
real gateway on loopback, raw gRPC stubs (so the tests see the status codes a caller
sees), and small NeXus files written on the spot."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import h5py
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from panreduce import registry, rpc
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc
from panreduce_gateway.auth import Access, StaticTokens
from panreduce_gateway.gateway import GatewayConfig, GatewayService


def write_scan(path: Path, *, n: int = 31, huge_1d: bool = False, huge_3d: bool = False) -> Path:
    """A small I16-style rocking scan (eta vs roi1 counts; a Gaussian on a background),
    optionally with a dataset declaring an enormous shape but holding no data (chunked,
    nothing written: the file stays a few KB)."""
    x = np.linspace(-1.0, 1.0, n)
    counts = 100.0 + 900.0 * np.exp(-0.5 * (x / 0.15) ** 2)
    with h5py.File(path, "w") as f:
        e = f.create_group("entry1")
        e.attrs["NX_class"] = "NXentry"
        e["scan_command"] = "scan eta -1 1 0.0667 pil 1"
        m = e.create_group("measurement")
        m.attrs["NX_class"] = "NXdata"
        m["eta"] = x
        m["roi1_sum"] = counts
        m["count_time"] = np.ones(n)
        m.attrs["axes"] = np.array([b"eta"])
        m.attrs["signal"] = "roi1_sum"
        if huge_1d:
            m.create_dataset("huge", shape=(10**15,), dtype="f8", chunks=(4096,))
        if huge_3d:
            det = e.create_group("instrument/pil")
            det.attrs["NX_class"] = "NXdetector"
            det.create_dataset("data", shape=(10**6, 10**6, 10**3), dtype="f8", chunks=(1, 64, 64))
    return path


@dataclass
class Platform:
    gateway: str  # address
    service: str
    stores: Stores
    data: Path  # a folder of inputs the callers may name
    scan: Path  # a valid scan file in it
    gateway_service: GatewayService

    def stub(self, address: str | None = None) -> pb_grpc.ReducerStub:
        channel = grpc.insecure_channel(address or self.gateway, options=rpc.CHANNEL_OPTIONS)
        return pb_grpc.ReducerStub(channel)

    def healthy(self, address: str | None = None, timeout: float = 2.0) -> bool:
        with grpc.insecure_channel(address or self.gateway) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return resp.status == health_pb2.HealthCheckResponse.SERVING


@contextmanager
def platform(
    tmp_path: Path,
    *,
    tokens: list[dict] | None = None,
    prefixes: list[str] | None = None,
    job_store: object | None = None,
) -> Iterator[Platform]:
    """A scan service and a gateway in front of it, both real gRPC servers on loopback;
    ``job_store``: the gateway's job table (default in memory)."""
    data = tmp_path / "data"
    data.mkdir()
    scan = write_scan(data / "scan.nxs")
    stores = Stores(tmp_path / "store")
    service = start_technique(registry.load("scan"), stores=stores)
    access = Access([StaticTokens(tokens)] if tokens else [], prefixes=prefixes or [])
    gateway = GatewayService(
        {"scan": service.address}, stores=stores, config=GatewayConfig(access=access), store=job_store
    )
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    try:
        yield Platform(gw.address, service.address, stores, data, scan, gateway)
    finally:
        gw.drain_and_stop(1)
        gateway.close()
        service.drain_and_stop(1)


def upload_chunks(name: str, payload: bytes = b"hello") -> list[pb.DataChunk]:
    return [
        pb.DataChunk(header=pb.ObjectHeader(name=name, size=len(payload))),
        pb.DataChunk(data=payload, offset=0, crc32=zlib.crc32(payload)),
        pb.DataChunk(trailer=pb.ObjectTrailer(sha256=hashlib.sha256(payload).hexdigest())),
    ]


def status_of(fn, *args, **kwargs) -> tuple[grpc.StatusCode, str, grpc.RpcError | None]:
    """Call a unary or streaming stub method; (code, details, error) of how it ended."""
    try:
        result = fn(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            for _ in result:
                pass
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", exc
    return grpc.StatusCode.OK, "", None


def violations_of(err: grpc.RpcError) -> dict[str, str]:
    """field -> description of the google.rpc.BadRequest in a status."""
    failure = rpc.failure_from_rpc_error(err)
    return {v.field: v.description for v in failure.violations}
