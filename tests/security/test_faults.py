"""Faults and load (issue 12): no job lost, cancellation reaches every iteration,
liveness under load. Real servers on loopback; real processes where a process dies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from faults_support import assert_cancel_stops_within, free_port, gateway, service, wait_for, wait_serving

from panreduce import registry
from panreduce.client import Client, make_request
from panreduce.kit.server import start_technique
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb


# A SIRT job of a real tooth slice, reconstructed at 128 x 128: ~0.1 s an iteration, so
# 60 iterations run for several seconds, long enough to be hit mid-job.
def long_job(tooth: Path, iterations: int = 60) -> dict:
    return {
        "slice_start": 0,
        "slice_stop": 1,
        "previews": 0,
        "algorithm": "sirt",
        "iterations": iterations,
        "size": 128,
        "center": 296.0,
    }


def submit_one(client: Client, inputs: list[str], params: dict, output: str) -> pb.Job:
    """Submit a tomography job that is not split into shards."""
    request = make_request("tomography", inputs, params, output, split=1)
    return client._call(client.stub.Submit, request)


def _reconstructing(client: Client, job_id: str) -> bool:
    return client.get_job(job_id).progress.stage == "reconstruct"


@pytest.fixture
def platform_dir(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    procs = []
    yield {"store": store, "logs": logs, "db": str(tmp_path / "jobs.sqlite"), "procs": procs, "tmp": tmp_path}
    for p in procs:
        p.stop()


# -- cancellation reaches every iteration ------------------------------------------------
@pytest.mark.parametrize("algorithm", ["sirt", "cgls"])
def test_cancel_of_a_long_iterative_reconstruction_stops_within_2s(algorithm, dataset, tmp_path):
    """10 000 iterations of SIRT/CGLS on a real tooth slice would run for minutes; a
    cancel must end the computation (the service's job CANCELLED, its worker free)
    within 2 s."""
    tooth = dataset("tomo/tooth/tooth.h5")
    service = start_technique(registry.load("tomography"), stores=Stores(tmp_path / "store"))
    try:
        with Client(service.address, timeout=60) as client:
            job = client.submit(
                "tomography",
                [str(tooth)],
                {
                    "slice_start": 0,
                    "slice_stop": 1,
                    "previews": 0,
                    "algorithm": algorithm,
                    "iterations": 10_000,
                    "center": 296.0,
                },
                str(tmp_path / "out"),
            )
            seen = wait_for(lambda: client.get_job(job.job_id).progress.stage == "reconstruct", 60)
            assert seen, f"the job never reached its reconstruction: {client.get_job(job.job_id)}"
            time.sleep(0.5)  # well inside the iterations
            assert_cancel_stops_within(client, service, job.job_id)
        assert not (tmp_path / "out").exists()
    finally:
        service.drain_and_stop(2)


# -- no job lost ------------------------------------------------------------------------
def _start(platform_dir, proc, port):
    platform_dir["procs"].append(proc)
    wait_serving(f"127.0.0.1:{port}", 90, proc)
    return proc


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGKILL"])
def test_gateway_stopped_mid_job_resumes_after_restart(signame, platform_dir, dataset):
    """SIGTERM (after a 1 s drain) or SIGKILL of a gateway with a SQLite job table while
    its job runs: the job is not cancelled; the restarted gateway runs it to success."""
    import signal

    tooth = dataset("tomo/tooth/tooth.h5")
    sp, gp = free_port(), free_port()
    d = platform_dir
    _start(d, service("tomography", sp, d["store"], d["logs"]), sp)
    gw_args = ([f"tomography=127.0.0.1:{sp}"], gp, d["store"], d["logs"], "--db", d["db"], "--drain-seconds", "1")
    gw = _start(d, gateway(*gw_args), gp)
    out = d["tmp"] / "out"
    with Client(f"127.0.0.1:{gp}", timeout=30) as client:
        job = submit_one(client, [str(tooth)], long_job(tooth), str(out))
        assert wait_for(lambda: _reconstructing(client, job.job_id), 60), client.get_job(job.job_id)
    t0 = time.monotonic()
    gw.signal(getattr(signal, signame))
    code = gw.wait(20)
    if signame == "SIGTERM":
        assert code == 0, gw.output()[-2000:]
        assert time.monotonic() - t0 < 10, "the gateway did not exit within its drain"
    gw2 = _start(d, gateway(*gw_args), gp)
    assert gw2 is not gw
    with Client(f"127.0.0.1:{gp}", timeout=120) as client:
        final = client.wait(job.job_id)
        assert final.state == pb.SUCCEEDED, final.failure.message
        logs = [e.log.message for e in client.watch(job.job_id) if e.HasField("log")]
    assert not any("cancelled" in m for m in logs), logs
    if signame == "SIGTERM":
        assert any("gateway shut down while the job ran; it will resume" in m for m in logs), logs
        assert final.attempts == 1  # an operator's shutdown does not use up an attempt
    assert any("restarted; the job runs again" in m for m in logs), logs
    assert (out / "provenance.json").is_file()


def test_service_killed_mid_job_retries_on_the_other_replica(platform_dir, dataset):
    """SIGKILL of the replica running a job: the gateway runs it again on the other."""
    import signal

    tooth = dataset("tomo/tooth/tooth.h5")
    d = platform_dir
    ports = [free_port(), free_port()]
    services = {p: _start(d, service("tomography", p, d["store"], d["logs"]), p) for p in ports}
    gp = free_port()
    _start(d, gateway([f"tomography=127.0.0.1:{p}" for p in ports], gp, d["store"], d["logs"]), gp)
    with Client(f"127.0.0.1:{gp}", timeout=120) as client:
        job = submit_one(client, [str(tooth)], long_job(tooth), str(d["tmp"] / "out"))
        assert wait_for(lambda: _reconstructing(client, job.job_id), 60)

        def runner():
            for p in ports:
                with Client(f"127.0.0.1:{p}", timeout=5) as c:
                    if c.list_jobs(state=pb.RUNNING):
                        return p
            return None

        victim = wait_for(runner, 10)
        assert victim, "no replica reports the job running"
        services[victim].signal(signal.SIGKILL)
        final = client.wait(job.job_id)
    assert final.state == pb.SUCCEEDED, final.failure.message
    assert final.attempts == 2


def test_a_service_that_stays_away_fails_the_job_naming_it(platform_dir, dataset):
    """The only replica is killed mid-job and never comes back: with --service-wait 2
    the job fails UNAVAILABLE naming the technique, instead of waiting forever."""
    import signal

    tooth = dataset("tomo/tooth/tooth.h5")
    d = platform_dir
    sp, gp = free_port(), free_port()
    svc = _start(d, service("tomography", sp, d["store"], d["logs"]), sp)
    _start(d, gateway([f"tomography=127.0.0.1:{sp}"], gp, d["store"], d["logs"], "--service-wait", "2"), gp)
    with Client(f"127.0.0.1:{gp}", timeout=120) as client:
        job = submit_one(client, [str(tooth)], long_job(tooth), str(d["tmp"] / "out"))
        assert wait_for(lambda: _reconstructing(client, job.job_id), 60)
        svc.signal(signal.SIGKILL)
        t0 = time.monotonic()
        final = client.wait(job.job_id)
        waited = time.monotonic() - t0
    assert final.state == pb.FAILED
    assert final.failure.code == "UNAVAILABLE"
    assert "tomography" in final.failure.message and "unreachable" in final.failure.message, final.failure.message
    assert 2.0 <= waited < 15, f"failed after {waited:.1f} s (service wait 2 s)"


# -- bounded history ----------------------------------------------------------------------
def test_a_service_keeps_a_bounded_history_of_finished_jobs():
    from panreduce.jobs import JobManager, MemoryJobStore

    store = MemoryJobStore(max_finished=5, max_age_s=3600)
    manager = JobManager(lambda handle: pb.Result(), store=store, max_running=2, name="bounded")
    ids = [manager.submit(pb.ReduceRequest(technique="toy", inputs=["x"]))[0].job_id for _ in range(12)]
    assert wait_for(lambda: manager.running == 0 and len(store.list(pb.ListJobsRequest())) <= 5, 10)
    kept = {j.job_id for j in store.list(pb.ListJobsRequest())}
    assert kept == set(ids[-5:]) or len(kept) == 5  # the newest finished stay
    assert all(store.events_after(i, 0) == [] for i in ids if i not in kept)  # their events left too
    aged = MemoryJobStore(max_finished=1000, max_age_s=0.2)
    m2 = JobManager(lambda handle: pb.Result(), store=aged, name="aged")
    first = m2.submit(pb.ReduceRequest(technique="toy", inputs=["x"]))[0].job_id
    assert wait_for(lambda: aged.get(first) is not None and aged.get(first).state == pb.SUCCEEDED, 5)
    time.sleep(0.3)
    m2.submit(pb.ReduceRequest(technique="toy", inputs=["x"]))
    assert wait_for(lambda: aged.get(first) is None, 5), "a job older than the history age stayed"
    manager.shutdown()
    m2.shutdown()


# -- orphaned scratch -----------------------------------------------------------------------
def test_orphaned_scratch_is_cleaned_at_service_start(tmp_path):
    """A killed server's scratch (its lock no longer held) is removed when a service
    starts; a live server's scratch (lock held) is kept."""
    import fcntl

    from panreduce.kit.scratch import ScratchArea

    root = tmp_path / "scratch" / "panreduce-tomography"
    orphan = root / "server-dead" / "job1-abc"
    orphan.mkdir(parents=True)
    (orphan / "staged.h5").write_bytes(b"x" * 4096)
    (root / "server-dead" / ".lock").touch()
    live = root / "server-live"
    live.mkdir()
    with open(live / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        other = ScratchArea(root)  # a replica already running in this process
        service = start_technique(
            registry.load("tomography"), stores=Stores(tmp_path / "store"), scratch_root=tmp_path / "scratch"
        )
        try:
            assert not (root / "server-dead").exists(), "the orphaned scratch was left behind"
            assert live.is_dir() and other.path.is_dir(), "a live server's scratch was removed"
            assert service.manager is not None
        finally:
            service.drain_and_stop(1)
            other.close()
    assert not other.path.exists()


# -- liveness under load ---------------------------------------------------------------------
@pytest.fixture
def toy_gateway(tmp_path, monkeypatch):
    """A toy service and a gateway in front of it, in this process; a slow toy job."""
    from panreduce.kit.toy import Toy
    from panreduce.serving import start_server
    from panreduce_gateway.gateway import GatewayService

    def start(max_streams: int | None = None):
        if max_streams is not None:
            monkeypatch.setenv("PANREDUCE_MAX_STREAMS", str(max_streams))
        stores = Stores(tmp_path / "store")
        svc = start_technique(Toy, stores=stores)
        gateway = GatewayService({"toy": svc.address}, stores=stores)
        gw = start_server(gateway, name="gateway", manager=gateway.manager)
        gw.set_serving(True)
        started.append((svc, gw, gateway))
        values = tmp_path / "values.npy"
        import numpy as np

        np.save(values, np.arange(4.0))
        with Client(gw.address, timeout=30) as c:
            job = c.submit("toy", [str(values)], {"steps": 40, "step_seconds": 0.25}, str(tmp_path / "out"))
        return gw, job.job_id

    started: list = []
    yield start
    for svc, gw, servicer in started:
        gw.drain_and_stop(1)
        servicer.close()
        svc.drain_and_stop(1)


def _probe(address: str) -> tuple[bool, float]:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    t0 = time.monotonic()
    try:
        with grpc.insecure_channel(address) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        return resp.status == health_pb2.HealthCheckResponse.SERVING, time.monotonic() - t0
    except grpc.RpcError:
        return False, time.monotonic() - t0


def test_health_answers_while_100_streams_are_open(toy_gateway):
    """100 clients watching a long job hold 100 streams (one server thread each); health
    checks with a 1 s timeout and a short GetJob all succeed meanwhile."""
    import threading

    gw, job_id = toy_gateway()
    opened = threading.Semaphore(0)
    errors_seen: list[str] = []

    def watcher() -> None:
        try:
            with Client(gw.address, timeout=60) as c:
                for i, _event in enumerate(c.watch(job_id)):
                    if i == 0:
                        opened.release()
        except Exception as exc:
            errors_seen.append(repr(exc))
            opened.release()

    threads = [threading.Thread(target=watcher, daemon=True) for _ in range(100)]
    for t in threads:
        t.start()
    for _ in threads:
        assert opened.acquire(timeout=30)
    probes = []
    end = time.monotonic() + 4
    while time.monotonic() < end:
        probes.append(_probe(gw.address))
        time.sleep(0.2)
    with Client(gw.address, timeout=1) as c:
        t0 = time.monotonic()
        assert c.get_job(job_id).state == pb.RUNNING
        assert time.monotonic() - t0 < 1
        c.cancel(job_id)
    for t in threads:
        t.join(15)
    failed = [p for p in probes if not p[0]]
    assert len(probes) >= 10 and not failed, f"{len(failed)} of {len(probes)} health probes failed"
    assert not errors_seen, errors_seen[:3]


def test_streams_past_the_limit_are_refused_with_a_retry_hint(toy_gateway):
    """With PANREDUCE_MAX_STREAMS=5 a sixth stream is RESOURCE_EXHAUSTED at once, with
    reason TOO_MANY_STREAMS and retry_after_s; health and short calls still answer."""
    import grpc

    from panreduce import rpc

    gw, job_id = toy_gateway(max_streams=5)
    clients = [Client(gw.address, timeout=60) for _ in range(5)]
    streams = [c.stub.Watch(pb.WatchRequest(job_id=job_id), timeout=60) for c in clients]
    for s in streams:
        next(s)  # each stream is open and holds its slot
    with Client(gw.address, timeout=5) as c:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            next(c.stub.Watch(pb.WatchRequest(job_id=job_id), timeout=5))
        assert time.monotonic() - t0 < 1, "the refused stream waited instead of being refused"
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        failure = rpc.failure_from_rpc_error(err.value)
        assert failure.reason == "TOO_MANY_STREAMS"
        assert failure.metadata["retry_after_s"] == "1"
        assert _probe(gw.address)[0]
        assert c.get_job(job_id).state == pb.RUNNING
        for s in streams:
            s.cancel()
        # the slots come back: a new stream is admitted
        assert wait_for(lambda: _admitted(c, job_id), 5)
        c.cancel(job_id)
    for cl in clients:
        cl.close()


def _admitted(client: Client, job_id: str) -> bool:
    import grpc

    try:
        next(client.stub.Watch(pb.WatchRequest(job_id=job_id), timeout=2))
        return True
    except grpc.RpcError:
        return False


# -- Ctrl-C and SIGTERM of the embedded platform ------------------------------------------------
def _job_scratch(tmpdir: Path) -> list[Path]:
    return [p for p in tmpdir.glob("panreduce-tomography/server-*/*") if p.is_dir()]


def test_ctrl_c_in_the_embedded_cli_cancels_and_exits_130_within_2s(tmp_path, dataset):
    """``panreduce reduce`` (embedded) running a 10 000-iteration SIRT: SIGINT cancels the
    job and the command exits 130 within 2 s, leaving no output and no job scratch."""
    import signal

    from faults_support import Process

    tooth = dataset("tomo/tooth/tooth.h5")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    params = {**long_job(tooth, iterations=10_000)}
    args = ["reduce", "tomography", str(tooth), "-o", str(tmp_path / "out")]
    for k, v in params.items():
        args += ["-p", f"{k}={v}"]
    proc = Process(args, tmp_path / "cli.log", env={"TMPDIR": str(tmpdir), "PANREDUCE_STORE": str(tmp_path / "s")})
    try:
        assert wait_for(lambda: _job_scratch(tmpdir) or proc.proc.poll() is not None, 90), proc.output()
        assert proc.proc.poll() is None, proc.output()[-2000:]
        time.sleep(2.0)  # into the iterations
        t0 = time.monotonic()
        proc.signal(signal.SIGINT)
        code = proc.wait(30)
        took = time.monotonic() - t0
    finally:
        proc.stop()
    assert code == 130, proc.output()[-2000:]
    assert took < 2.0, f"exited {took:.1f} s after Ctrl-C"
    assert "cancel" in proc.output()
    assert not (tmp_path / "out").exists()
    assert not _job_scratch(tmpdir), "the job's scratch was left behind"


def test_serve_exits_within_its_drain_on_sigterm_while_a_long_job_runs(tmp_path, dataset):
    """``panreduce serve --drain-seconds 1`` with a 10 000-iteration SIRT running: SIGTERM
    ends the process within a few seconds, and the job is left to resume, not cancelled."""
    import signal

    from faults_support import Process

    tooth = dataset("tomo/tooth/tooth.h5")
    port = free_port()
    store = tmp_path / "store"
    proc = Process(
        ["serve", "--techniques", "tomography", "--port", str(port), "--store", str(store), "--drain-seconds", "1"],
        tmp_path / "serve.log",
        env={"TMPDIR": str(tmp_path)},
    )
    try:
        wait_serving(f"127.0.0.1:{port}", 90, proc)
        with Client(f"127.0.0.1:{port}", timeout=30) as client:
            job = submit_one(client, [str(tooth)], long_job(tooth, iterations=10_000), str(tmp_path / "out"))
            assert wait_for(lambda: _reconstructing(client, job.job_id), 60)
        t0 = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - t0
    finally:
        proc.stop()
    assert code == 0, proc.output()[-2000:]
    assert took < 6.0, f"serve took {took:.1f} s to stop (drain 1 s)"
    from panreduce.sqlstore import SqliteJobStore

    left = SqliteJobStore(store / "jobs.sqlite").get(job.job_id)
    assert left.state == pb.QUEUED, pb.JobState.Name(left.state)  # unfinished: the next serve resumes it


def test_a_replica_resumes_the_jobs_of_a_sigtermd_gateway(pg_database, platform_dir, dataset):
    """Two gateway processes share a PostgreSQL job table. The one running a job gets
    SIGTERM (drain 1 s): the job is left unfinished, not cancelled, and the other replica
    claims it once the lease lapses and runs it to success."""
    import os
    import signal

    tooth = dataset("tomo/tooth/tooth.h5")
    d = platform_dir
    sp = free_port()
    _start(d, service("tomography", sp, d["store"], d["logs"]), sp)
    env = {"PANREDUCE_DB_LEASE": "3", "PANREDUCE_DB_HEARTBEAT": "0.5", "PANREDUCE_CLAIM_SECONDS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the gateway processes inherit it
    try:
        ports = [free_port(), free_port()]
        gws = [
            _start(
                d,
                gateway(
                    [f"tomography=127.0.0.1:{sp}"],
                    p,
                    d["store"],
                    d["logs"],
                    "--db",
                    pg_database,
                    "--drain-seconds",
                    "1",
                ),
                p,
            )
            for p in ports
        ]
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    with Client(f"127.0.0.1:{ports[0]}", timeout=30) as client:
        job = submit_one(client, [str(tooth)], long_job(tooth), str(d["tmp"] / "out"))
        assert wait_for(lambda: _reconstructing(client, job.job_id), 60)
    gws[0].signal(signal.SIGTERM)
    assert gws[0].wait(20) == 0
    with Client(f"127.0.0.1:{ports[1]}", timeout=120) as client:
        final = client.wait(job.job_id)
        logs = [e.log.message for e in client.watch(job.job_id) if e.HasField("log")]
    assert final.state == pb.SUCCEEDED, final.failure.message
    assert any("gateway shut down while the job ran; it will resume" in m for m in logs), logs
    assert (d["tmp"] / "out" / "provenance.json").is_file()
