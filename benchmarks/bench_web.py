"""Web benchmark (`make bench-web`): the live data page under a full job table and many
live viewers.

A gateway with static tokens (in this process; in-memory job table holding ``--jobs``
finished jobs of one proposal, default 1000) in front of a toy technique service, and
``panreduce web`` as its own process. Two parts:

1. page load: GET of the job list (50 and 200 rows a page), the JSON list and a job page,
   ``--requests`` times each (after a warm-up); latency over loopback, which bounds the
   server time from above (goal: p95 of the list page <= 300 ms);
2. live viewers: ``--viewers`` (default 50) concurrent event streams for ``--seconds``
   (default 60): half on the live job list, half on the job page of running toy jobs,
   while the jobs run; counts events and errors, and the web process's resident memory
   before, at peak and after.

`python benchmarks/bench_web.py --seconds 10 --viewers 20` for a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from panreduce.client import Client
from panreduce.jobs import MemoryJobStore
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb
from panreduce_gateway.auth import Access, StaticTokens
from panreduce_gateway.gateway import GatewayConfig, GatewayService

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fill(store: MemoryJobStore, n: int) -> list[str]:
    now = time.time()
    ids = []
    for i in range(n):
        job = pb.Job(job_id=f"bench{i:011d}", technique="scan", state=pb.SUCCEEDED, owner="alice", proposal="propA")
        job.request.technique = "scan"
        job.request.labels.update({"proposal": "propA", "sample": f"sample-{i % 37}"})
        job.created.FromSeconds(int(now - 60 * (n - i)))
        job.started.FromSeconds(int(now - 60 * (n - i) + 1))
        job.finished.FromSeconds(int(now - 60 * (n - i) + 20))
        job.progress.stage, job.progress.fraction = "done", 1.0
        job.result.catalogue.update({"title": f"scan {i} of the bench", "sample": f"sample-{i % 37}"})
        out = job.result.outputs.add()
        out.uri, out.format, out.size = f"/nowhere/bench{i}.nxs", "nexus", 1000
        store.add(job)
        ids.append(job.job_id)
    return ids


def timed(client: httpx.Client, path: str, n: int) -> list[float]:
    for _ in range(3):
        client.get(path)
    out = []
    for _ in range(n):
        t = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return out


async def viewer(url: str, cookie: str, path: str, until: float, stats: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=url, cookies={"panreduce_session": cookie}, timeout=None) as c:
        while time.monotonic() < until:
            try:
                async with c.stream("GET", path) as r:
                    if r.status_code != 200:
                        stats[f"HTTP {r.status_code}"] = stats.get(f"HTTP {r.status_code}", 0) + 1
                        await asyncio.sleep(1)
                        continue
                    async for line in r.aiter_lines():
                        if line.startswith("event: error"):
                            stats["stream errors"] = stats.get("stream errors", 0) + 1
                        elif line.startswith("event:"):
                            stats["events"] = stats.get("events", 0) + 1
                        if time.monotonic() >= until:
                            return
                stats["reconnects"] = stats.get("reconnects", 0) + 1
            except httpx.HTTPError as exc:
                stats[type(exc).__name__] = stats.get(type(exc).__name__, 0) + 1
                await asyncio.sleep(0.5)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--viewers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60.0)
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-web-"))
    stores = Stores(tmp / "store")
    store = MemoryJobStore()
    ids = fill(store, args.jobs)
    access = Access([StaticTokens([{"token": "token-a", "subject": "alice", "proposals": ["propA"]}])])
    toy = start_technique(Toy, stores=stores, max_running=64)
    service = GatewayService({"toy": toy.address}, stores=stores, store=store, config=GatewayConfig(access=access))
    gw = start_server(service, name="gateway", manager=service.manager)
    gw.set_serving(True)
    port = free_port()
    web = subprocess.Popen(
        [str(BIN / "panreduce"), "web", "--gateway", gw.address, "--port", str(port), "--auth", "tokens"],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    rows: list[tuple[str, str]] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        c = httpx.Client(base_url=url, timeout=60)
        import re

        csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
        c.post("/login", data={"csrf": csrf, "token": "token-a", "next": "/"})
        cookies = []  # one browser session per 4 viewers (a session may hold 8 streams)
        for _ in range((args.viewers + 3) // 4):
            with httpx.Client(base_url=url, timeout=60) as b:
                token = re.search(r'name="csrf" value="([^"]+)"', b.get("/login").text).group(1)
                b.post("/login", data={"csrf": token, "token": "token-a", "next": "/"})
                cookies.append(b.cookies["panreduce_session"])
        rss0 = rss_mib(web.pid)
        for label, path in (
            (f"job list, 50 of {args.jobs} rows", "/"),
            (f"job list, 200 of {args.jobs} rows", "/?size=200"),
            ("job list, filtered (sample)", "/?sample=sample-3"),
            ("JSON list, 50 rows", "/api/jobs"),
            ("job page", f"/jobs/{ids[-1]}"),
        ):
            ms = timed(c, path, args.requests)
            q = statistics.quantiles(ms, n=20)
            rows.append((label, f"p50 {statistics.median(ms):6.1f} ms  p95 {q[18]:6.1f} ms  max {max(ms):6.1f} ms"))

        # live viewers of running jobs
        with Client(gw.address, token="token-a", timeout=30) as gc:
            import numpy as np

            np.save(tmp / "v.npy", np.arange(5.0))
            running = [
                gc.submit("toy", [str(tmp / "v.npy")], {"steps": 10_000, "step_seconds": 0.01}).job_id
                for _ in range(max(args.viewers // 2, 1))
            ]
            stats: dict[str, int] = {}
            peak = [rss0]

            async def run() -> None:
                until = time.monotonic() + args.seconds
                tasks = [
                    asyncio.create_task(
                        viewer(
                            url,
                            cookies[i // 4],
                            "/events/jobs" if i % 2 == 0 else f"/jobs/{running[(i // 2) % len(running)]}/events",
                            until,
                            stats,
                        )
                    )
                    for i in range(args.viewers)
                ]
                while time.monotonic() < until:
                    await asyncio.sleep(1)
                    peak[0] = max(peak[0], rss_mib(web.pid))
                await asyncio.gather(*tasks)

            t0 = time.monotonic()
            asyncio.run(run())
            took = time.monotonic() - t0
            for jid in running:
                gc.cancel(jid)
        time.sleep(2)
        errors = {k: v for k, v in stats.items() if k not in ("events", "reconnects")}
        rows.append(
            (
                f"{args.viewers} live viewers, {took:.0f} s",
                f"{stats.get('events', 0)} events, "
                f"{sum(errors.values())} errors {errors or ''}, {stats.get('reconnects', 0)} streams ended",
            )
        )
        rows.append(
            (
                "web process memory (RSS)",
                f"before {rss0:.0f} MiB, peak {peak[0]:.0f} MiB, after {rss_mib(web.pid):.0f} MiB",
            )
        )
        c.close()
    finally:
        web.terminate()
        try:
            web.wait(20)
        except subprocess.TimeoutExpired:
            web.kill()
            web.wait(5)
        gw.drain_and_stop(1)
        service.close()
        toy.drain_and_stop(1)

    width = max(len(r[0]) for r in rows)
    print(
        f"\nbench-web: {args.jobs} jobs in the table, goal: list page p95 <= 300 ms (loopback, {os.cpu_count()} CPUs)"
    )
    print(f"{'what':<{width}}  result")
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
