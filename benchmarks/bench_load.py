"""Load benchmark (`make bench-load`): liveness and resources under many streams.

A gateway process (``panreduce gateway``, in-memory job table) in front of a toy
technique service; ``--clients`` (default 100) concurrent clients each run short
reductions back to back (a Reduce stream each: accepted, progress, result) for
``--seconds`` (default 60), while a prober checks the gateway's gRPC health once a
second with a 1 s timeout (what a Kubernetes liveness probe does). One table:
requests, errors (by code), p50/p99 latency of a whole Reduce, failed probes, and the
gateway's resident memory and open file descriptors before, at peak and after.

`python benchmarks/bench_load.py --seconds 10` for a short run.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from panreduce.client import Client, make_request
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.storage import Stores

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe(address: str, timeout: float = 1.0) -> bool:
    try:
        with grpc.insecure_channel(address) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return resp.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def resources(pid: int) -> tuple[float, int]:
    """(resident MiB, open file descriptors) of process ``pid``."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="how long the clients run (default 60)")
    ap.add_argument("--clients", type=int, default=100, help="concurrent streaming clients (default 100)")
    ap.add_argument("--service-jobs", type=int, default=8, help="jobs the toy service runs at once (default 8)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    stores = Stores(tmp / "store")
    service = start_technique(Toy, stores=stores, max_running=args.service_jobs, scratch_root=tmp / "scratch")
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = open(tmp / "gateway.log", "wb")
    gw = subprocess.Popen(
        [
            str(BIN / "panreduce"),
            "gateway",
            "--route",
            f"toy={service.address}",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--store",
            str(tmp / "store"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        end = time.monotonic() + 60
        while not probe(address) and time.monotonic() < end:
            time.sleep(0.2)
        values = tmp / "values.npy"
        np.save(values, np.arange(16.0))
        request = make_request("toy", [str(values)], {"steps": 5, "step_seconds": 0.02})
        with Client(address, timeout=30) as c:  # warm up: one job
            c.reduce("toy", [str(values)], {"steps": 1})
        time.sleep(1.0)
        before = resources(gw.pid)
        peak = list(before)

        stop = threading.Event()
        latencies: list[float] = []
        errors: collections.Counter[str] = collections.Counter()
        lock = threading.Lock()

        def client_loop() -> None:
            with Client(address, timeout=120) as c:
                while not stop.is_set():
                    t0 = time.monotonic()
                    try:
                        for _event in c.stub.Reduce(request, timeout=120):
                            pass
                        with lock:
                            latencies.append(time.monotonic() - t0)
                    except grpc.RpcError as exc:
                        with lock:
                            errors[exc.code().name] += 1
                        time.sleep(1.0)  # the retry hint of RESOURCE_EXHAUSTED

        probes: list[bool] = []

        def prober() -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                probes.append(probe(address))
                time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

        def sampler() -> None:
            while not stop.is_set():
                rss, fds = resources(gw.pid)
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], fds)
                time.sleep(0.5)

        threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(args.clients)]
        threads += [threading.Thread(target=prober, daemon=True), threading.Thread(target=sampler, daemon=True)]
        t_start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join(180)
        elapsed = time.monotonic() - t_start
        time.sleep(2.0)
        after = resources(gw.pid)
    finally:
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(60)
        except subprocess.TimeoutExpired:
            gw.kill()
        service.drain_and_stop(2)
        log.close()

    lat = sorted(latencies)
    p = (lambda q: lat[min(int(q * len(lat)), len(lat) - 1)] * 1000) if lat else (lambda q: float("nan"))
    failed = sum(1 for ok in probes if not ok)
    err_text = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "0"
    print(
        f"\nbench-load: {args.clients} streaming clients for {args.seconds:g} s (toy Reduce, 5 steps of 20 ms; "
        f"service runs {args.service_jobs} at once), 1 s health probes with a 1 s timeout\n"
    )
    rows = [
        ("requests (Reduce streams completed)", f"{len(lat)}  ({len(lat) / elapsed:.1f}/s)"),
        ("errors", err_text),
        (
            "latency p50 / p99 (ms)",
            f"{p(0.5):.0f} / {p(0.99):.0f}" + (f"  (mean {statistics.mean(lat) * 1000:.0f})" if lat else ""),
        ),
        ("health probes failed", f"{failed} of {len(probes)}"),
        ("gateway RSS MiB before / peak / after", f"{before[0]:.0f} / {peak[0]:.0f} / {after[0]:.0f}"),
        ("gateway open fds before / peak / after", f"{before[1]} / {peak[1]} / {after[1]}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"| {'measure':<{width}} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")


if __name__ == "__main__":
    main()
