"""max_connection_age on real processes: a service started with
PANREDUCE_MAX_CONNECTION_AGE_S=1 closes an idle client's connection after about a second
(the client goes READY -> IDLE and would resolve its DNS name again); without it the
connection stays READY; a job through a gateway with the same setting, longer than the
age, is not cut (no grace: running calls keep their connection)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from panreduce import errors
from panreduce.client import Client

PANREDUCE = str(Path(sys.executable).parent / "panreduce")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def spawn(tmp_path):
    procs: list[subprocess.Popen] = []

    def start(args: list[str], port: int, **env: str) -> subprocess.Popen:
        full = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "xdg"), **env}
        full.pop("PANREDUCE_GATEWAY", None)
        log = open(tmp_path / f"p{len(procs)}.log", "w")
        proc = subprocess.Popen([PANREDUCE, *args], cwd=tmp_path, stderr=log, stdout=log, env=full)
        procs.append(proc)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert proc.poll() is None, (tmp_path / f"p{len(procs) - 1}.log").read_text()
            try:
                with Client(f"127.0.0.1:{port}", timeout=2) as c:
                    if c.health() == "SERVING":
                        return proc
            except errors.PanReduceError:
                pass
            time.sleep(0.2)
        pytest.fail("server did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _states_after_connecting(port: int, seconds: float) -> list[grpc.ChannelConnectivity]:
    seen: list[grpc.ChannelConnectivity] = []
    lock = threading.Lock()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")

    def record(state: grpc.ChannelConnectivity) -> None:
        with lock:
            seen.append(state)

    channel.subscribe(record, try_to_connect=True)
    grpc.channel_ready_future(channel).result(timeout=10)
    time.sleep(seconds)
    channel.unsubscribe(record)
    channel.close()
    with lock:
        return list(seen)


def test_a_service_closes_connections_at_their_max_age(spawn, tmp_path):
    aged, plain = free_port(), free_port()
    spawn(
        ["service", "scan", "--insecure", "--port", str(aged), "--store", str(tmp_path / "s")],
        aged,
        PANREDUCE_MAX_CONNECTION_AGE_S="1",
    )
    spawn(
        ["service", "scan", "--insecure", "--port", str(plain), "--store", str(tmp_path / "s")],
        plain,
        PANREDUCE_MAX_CONNECTION_AGE_S="0",
    )
    states = _states_after_connecting(aged, 3.0)
    ready_at = states.index(grpc.ChannelConnectivity.READY)
    assert grpc.ChannelConnectivity.IDLE in states[ready_at:], states  # GOAWAY at the age
    states = _states_after_connecting(plain, 3.0)
    assert states[-1] == grpc.ChannelConnectivity.READY, states  # never closed without an age


def test_a_job_longer_than_the_age_is_not_cut(spawn, tmp_path, dataset):
    files = [str(dataset(f"i16-scans/{n}.nxs")) for n in (794932, 794933, 794934, 794935, 794936)]
    sp, gp = free_port(), free_port()
    age = {"PANREDUCE_MAX_CONNECTION_AGE_S": "0.5"}
    spawn(["service", "scan", "--insecure", "--port", str(sp), "--store", str(tmp_path / "s")], sp, **age)
    spawn(
        [
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(gp),
            "--store",
            str(tmp_path / "s"),
            "--route",
            f"scan=127.0.0.1:{sp}",
        ],
        gp,
        **age,
    )
    with Client(f"127.0.0.1:{gp}", timeout=120) as c:
        for _ in range(3):  # over connections closed at their age in between
            t0 = time.monotonic()
            result = c.reduce("scan", files, {"plots": True})
            took = time.monotonic() - t0
            assert result.summary["n_scans"] == 5
            time.sleep(0.7)
    assert took > 0.5, f"the job took {took:.2f} s, not longer than the age: the test shows nothing"
