"""Queue-driven scaling, with real processes: `panreduce gateway` in front of a scan
service that is not running yet (scaled to zero). A job submitted then is QUEUED and
counted in panreduce_queue_depth{technique="scan"}; starting the service runs it; the
queue is bounded (RESOURCE_EXHAUSTED with a retry hint) and has a deadline (the job
FAILS naming the technique and the wait)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from panreduce import errors
from panreduce.client import Client
from panreduce.v1 import reduce_pb2 as pb

PANREDUCE = str(Path(sys.executable).parent / "panreduce")

TERMINAL = (pb.SUCCEEDED, pb.FAILED, pb.CANCELLED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _metric(port: int, name: str, technique: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and f'technique="{technique}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait(pred, timeout: float, what: str, poll: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(poll)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


class Deployment:
    """A gateway routing scan to a port where nothing listens until start_service()."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = {**os.environ, "XDG_CACHE_HOME": str(tmp / "xdg"), **env}
        self.env.pop("PANREDUCE_GATEWAY", None)
        self.service_port, self.port, self.metrics_port = free_port(), free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.gateway = self._spawn(
            "gateway",
            [
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--store",
                str(tmp / "store"),
                "--metrics-port",
                str(self.metrics_port),
                "--route",
                f"scan=127.0.0.1:{self.service_port}",
            ],
        )
        _wait(self._serving, 60, "the gateway")

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.tmp / f"{name}.log", "w")
        proc = subprocess.Popen([PANREDUCE, *args], cwd=self.tmp, stderr=log, stdout=log, env=self.env)
        self.procs.append(proc)
        return proc

    def _serving(self) -> bool:
        assert self.gateway.poll() is None, (self.tmp / "gateway.log").read_text()
        try:
            with Client(self.address, timeout=2) as c:
                return c.health() == "SERVING"
        except errors.PanReduceError:
            return False

    def start_service(self) -> subprocess.Popen:
        return self._spawn(
            "service",
            ["service", "scan", "--insecure", "--port", str(self.service_port), "--store", str(self.tmp / "store")],
        )

    def depth(self) -> float | None:
        return _metric(self.metrics_port, "panreduce_queue_depth", "scan")

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


@pytest.fixture
def deployment(tmp_path):
    made: list[Deployment] = []

    def make(**env: str) -> Deployment:
        d = Deployment(tmp_path, env)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def _submit(c: Client, dataset, n: int = 794934) -> pb.Job:
    return c.submit("scan", [str(dataset(f"i16-scans/{n}.nxs"))])


def test_a_job_for_a_technique_with_no_replica_waits_queued_then_runs(deployment, dataset, tmp_path):
    d = deployment()
    assert d.depth() == 0  # the series exists before the first job (KEDA reads it)
    with Client(d.address, timeout=30) as c:
        job = _submit(c, dataset)
        assert job.state == pb.QUEUED
        time.sleep(2.0)  # it stays queued while no replica is ready
        assert c.get_job(job.job_id).state == pb.QUEUED
        assert d.depth() == 1
        assert _metric(d.metrics_port, "panreduce_jobs_running", "scan") == 0
        started = time.monotonic()
        d.start_service()
        done = _wait(lambda: (j := c.get_job(job.job_id)).state in TERMINAL and j, 120, "the queued job")
        assert done.state == pb.SUCCEEDED, done.failure
        assert time.monotonic() - started < 60
        assert d.depth() == 0
        assert len(done.result.outputs) >= 1
        logs = [e.log.message for e in c.watch(job.job_id) if e.HasField("log")]
        assert any("queued: no ready replica of the scan service" in m for m in logs), logs
        assert any("is ready after" in m for m in logs), logs
        # with the replica up, a job is checked and started at once (no queue)
        with pytest.raises(errors.PanReduceError) as refused:
            c.submit("scan", [str(dataset("i16-scans/794934.nxs"))], {"no_such_parameter": 1})
        assert "no_such_parameter" in str(refused.value)


def test_the_queue_is_bounded_with_a_retry_hint(deployment, dataset):
    d = deployment(PANREDUCE_QUEUE_MAX="2")
    with Client(d.address, timeout=30) as c:
        first = [_submit(c, dataset, n) for n in (794932, 794933)]
        assert [j.state for j in first] == [pb.QUEUED, pb.QUEUED]
        assert d.depth() == 2
        with pytest.raises(errors.ResourceExhausted) as full:
            _submit(c, dataset, 794934)
        message = str(full.value)
        assert "scan" in message and "queue is full" in message and "2 of 2" in message
        assert re.search(r"retry in \d+ s", message), message
        assert full.value.metadata["technique"] == "scan" and full.value.metadata["limit"] == "2"
        assert float(full.value.metadata["retry_after_s"]) >= 5
        # a cancelled job leaves the queue, making room
        c.cancel(first[0].job_id)
        assert c.get_job(first[0].job_id).state == pb.CANCELLED
        _wait(lambda: d.depth() == 1, 10, "the cancelled job to leave the queue")
        again = _submit(c, dataset, 794934)
        assert again.state == pb.QUEUED
        assert d.depth() == 2


def test_a_queued_job_fails_after_the_queue_wait_naming_technique_and_wait(deployment, dataset):
    d = deployment(PANREDUCE_QUEUE_WAIT_S="3")
    with Client(d.address, timeout=30) as c:
        job = _submit(c, dataset)
        assert job.state == pb.QUEUED
        started = time.monotonic()
        done = _wait(lambda: (j := c.get_job(job.job_id)).state in TERMINAL and j, 30, "the queue wait")
        waited = time.monotonic() - started
        assert done.state == pb.FAILED
        assert done.failure.code == "UNAVAILABLE"
        assert "scan service" in done.failure.message and "3 s" in done.failure.message, done.failure.message
        assert 2.5 < waited < 10, waited
        assert d.depth() == 0


def test_no_queue_refuses_as_before(deployment, dataset):
    d = deployment(PANREDUCE_QUEUE_MAX="0")
    with Client(d.address, timeout=30) as c, pytest.raises(errors.Unavailable) as refused:
        _submit(c, dataset)
    assert "scan" in str(refused.value)
    assert d.depth() == 0
