"""Helpers for the fault and load tests in tests/security (no conftest here: others add
files to this folder too)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def load_example(name: str):
    """``example(dataset, tmp_path)`` of ``tests/<name>/contract_example.py``."""
    path = TESTS / name / "contract_example.py"
    spec = importlib.util.spec_from_file_location(f"faults_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.example


def wait_for(predicate, timeout: float, every: float = 0.05):
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` s pass (None)."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def panreduce_command() -> list[str]:
    """The ``panreduce`` CLI of this environment."""
    import shutil
    import sys

    exe = Path(sys.executable).with_name("panreduce")
    return [str(exe)] if exe.exists() else [shutil.which("panreduce") or "panreduce"]


class Process:
    """A real ``panreduce ...`` process on loopback, its output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        import os
        import subprocess

        self.log = log
        self._fh = open(log, "ab")
        full_env = {**os.environ, "PANREDUCE_LOG_FORMAT": "text", **(env or {})}
        self.proc = subprocess.Popen(
            [*panreduce_command(), *args], stdout=self._fh, stderr=subprocess.STDOUT, env=full_env
        )

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        import signal
        import subprocess

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def wait_serving(address: str, timeout: float = 60.0, process: Process | None = None) -> None:
    """Until the server's health says SERVING (or fail, with the process's output)."""
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    end = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < end:
            if process is not None and process.proc.poll() is not None:
                raise AssertionError(f"{address} exited {process.proc.returncode}:\n{process.output()[-3000:]}")
            try:
                if (
                    stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise AssertionError(f"{address} never became SERVING" + (f":\n{process.output()[-3000:]}" if process else ""))


def service(technique: str, port: int, store: Path, log_dir: Path, *extra: str) -> Process:
    proc = Process(
        ["service", technique, "--port", str(port), "--store", str(store), "--insecure", *extra],
        log_dir / f"service-{port}.log",
    )
    return proc


def gateway(routes: list[str], port: int, store: Path, log_dir: Path, *extra: str) -> Process:
    args = ["gateway", "--port", str(port), "--host", "127.0.0.1", "--store", str(store)]
    for r in routes:
        args += ["--route", r]
    return Process([*args, *extra], log_dir / f"gateway-{port}.log")


def assert_cancel_stops_within(client, service, job_id: str, seconds: float = 2.0) -> None:
    """Cancel ``job_id`` at ``service`` and assert it is CANCELLED, and the service's worker
    free, within ``seconds`` of the cancel."""
    import time

    from panreduce.v1 import reduce_pb2 as pb

    t0 = time.monotonic()
    client.cancel(job_id)
    ended = wait_for(lambda: client.get_job(job_id).state == pb.CANCELLED, 10)
    stopped = time.monotonic() - t0
    assert ended, f"still {pb.JobState.Name(client.get_job(job_id).state)} 10 s after the cancel"
    assert stopped < seconds, f"the reconstruction went on for {stopped:.1f} s after the cancel"
    assert wait_for(lambda: service.manager.running == 0, 2)
