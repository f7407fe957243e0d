"""The gateway for real use: persistence across restarts, bounded retries, the
catalogue, retention, proposal-scoped access (static tokens and OIDC JWTs), TLS, and
sharding over several real service processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from panreduce import errors
from panreduce.client import Client
from panreduce.jobs import now_ts
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.serving import start_server
from panreduce.sqlstore import SqliteJobStore
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb
from panreduce_gateway import retention
from panreduce_gateway.auth import Access, JwtVerifier, StaticTokens
from panreduce_gateway.gateway import GatewayConfig, GatewayService
from panreduce_gateway.pgstore import PostgresJobStore

BIN = Path(sys.executable).parent
I16 = [f"i16-scans/79493{i}.nxs" for i in range(2, 7)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(address: str, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with Client(address, timeout=1) as c:
                if c.health() == "SERVING":
                    return
        except errors.PanReduceError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{address} did not become SERVING")


@contextmanager
def gateway_over(routes: dict, root: Path, config: GatewayConfig | None = None):
    """An in-process gateway over the given routes (real gRPC on loopback); yields its address."""
    gateway = GatewayService(routes, stores=Stores(root), config=config)
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    try:
        yield gw.address
    finally:
        gw.drain_and_stop(1)
        gateway.close()


def batch_of(tmp_path: Path, dataset, n: int) -> Path:
    """n scan files (symlinks to the five I16 rocking scans)."""
    folder = tmp_path / f"batch{n}"
    folder.mkdir()
    src = [dataset(name) for name in I16]
    for i in range(n):
        (folder / f"{i:04d}_{src[i % 5].name}").symlink_to(src[i % 5])
    return folder


# -- persistence ------------------------------------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def job_store_factory(request, tmp_path):
    """Opens the same job table again (as after a restart): SQLite file or PostgreSQL."""
    if request.param == "sqlite":
        yield lambda: SqliteJobStore(tmp_path / "jobs.sqlite")
    else:
        dsn = request.getfixturevalue("pg_database")
        yield lambda: PostgresJobStore(dsn)


def test_job_store_round_trip_and_catalogue_queries(job_store_factory):
    store = job_store_factory()
    for i, (sample, user, proposal) in enumerate(
        [("GFP 5mg/ml", "King Dr SM", "p1"), ("buffer", "I16 User", "p2"), ("Tooth", "", "p1")]
    ):
        job = pb.Job(
            job_id=f"j{i}",
            technique="scan" if i < 2 else "tomography",
            state=pb.QUEUED,
            created=now_ts(),
            owner=f"user{i}",
            proposal=proposal,
        )
        job.request.labels["run"] = str(i)
        job.request.idempotency_key = f"k{i}"
        store.add(job)
        job.state = pb.SUCCEEDED
        job.result.catalogue.update({"sample": sample, "user": user} if user else {"sample": sample})
        store.put(job)
        store.append_event(pb.JobEvent(job_id=job.job_id, seq=1, accepted=pb.Accepted(technique="scan")))
    store.close()
    store = job_store_factory()  # as after a restart

    def ids(**q) -> list[str]:
        labels = q.pop("labels", {})
        req = pb.ListJobsRequest(**q)
        req.labels.update(labels)
        return sorted(j.job_id for j in store.list(req))

    assert ids() == ["j0", "j1", "j2"]
    assert ids(sample="gfp") == ["j0"]  # case-insensitive substring of the inputs' sample name
    assert ids(owner="king") == ["j0"]  # a user named in the inputs
    assert ids(owner="user1") == ["j1"]  # or who submitted it
    assert ids(proposal="p1") == ["j0", "j2"]
    assert ids(technique="scan", proposal="p1") == ["j0"]
    assert ids(labels={"run": "2"}) == ["j2"]
    future = now_ts()
    future.seconds += 3600
    assert ids(created_after=future) == []
    assert ids(created_before=future) == ["j0", "j1", "j2"]
    assert store.by_idempotency_key("k1", proposal="p2", owner="user1").job_id == "j1"
    assert store.by_idempotency_key("k1") is None  # a key is its (proposal, owner)'s own
    assert [e.seq for e in store.events_after("j0", 0)] == [1]
    assert store.unfinished() == []


@pytest.fixture
def served_persistent(tmp_path):
    port = free_port()
    store = tmp_path / "store"
    cmd = [str(BIN / "panreduce"), "serve", "--port", str(port), "--store", str(store), "--techniques", "scan"]
    procs = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.DEVNULL)
        procs.append(proc)
        wait_serving(f"127.0.0.1:{port}", proc)
        return proc

    yield start, f"127.0.0.1:{port}", store
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def test_gateway_killed_mid_job_resumes_without_duplicates(served_persistent, tmp_path, dataset):
    start, address, _store = served_persistent
    batch = batch_of(tmp_path, dataset, 60)
    out = tmp_path / "out"
    proc = start()
    with Client(address, timeout=30) as c:
        job = c.submit(
            "scan",
            [str(batch) + "/"],
            {"plots": False},
            str(out),
            idempotency_key="run-42",
            labels={"sample": "rocking"},
        )
        for event in c.watch(job.job_id):
            if event.HasField("progress") and event.progress.stage == "fit":
                break
    proc.kill()  # no drain: the gateway and its services die mid-job
    proc.wait(10)
    start()
    with Client(address, timeout=60) as c:
        listed = c.list_jobs(sample="rocking")
        assert [j.job_id for j in listed] == [job.job_id]
        again = c.submit(
            "scan",
            [str(batch) + "/"],
            {"plots": False},
            str(out),
            idempotency_key="run-42",
            labels={"sample": "rocking"},
        )  # the same request again
        assert again.job_id == job.job_id
        with pytest.raises(errors.AlreadyExists, match="run-42"):  # the key with another request
            c.submit("scan", [str(batch) + "/"], {"plots": False}, str(tmp_path / "other"), idempotency_key="run-42")
        final = c.wait(job.job_id)
    assert final.state == pb.SUCCEEDED, final.failure.message
    assert final.attempts == 2
    assert final.result.summary["n_scans"] == 60
    assert sorted(p.name for p in out.iterdir()) == ["provenance.json", "scans.csv", "scans.nxs"]
    assert not (tmp_path / "other").exists()


# -- retention --------------------------------------------------------------------------
def test_retention_lists_exactly_what_is_older(tmp_path):
    root = tmp_path / "store"
    store = SqliteJobStore(root / "jobs.sqlite")
    now = dt.datetime.now(dt.UTC)
    ages = {
        "old-done": (120, pb.SUCCEEDED),
        "old-failed": (91, pb.FAILED),
        "young": (89, pb.SUCCEEDED),
        "edge-young": (89.99, pb.SUCCEEDED),
        "old-running": (200, pb.RUNNING),
    }
    for job_id, (days, state) in ages.items():
        when = now - dt.timedelta(days=days)
        job = pb.Job(job_id=job_id, technique="scan", state=pb.QUEUED)
        job.created.FromDatetime(when - dt.timedelta(hours=1))
        store.add(job)
        job.state = state
        if state != pb.RUNNING:
            job.finished.FromDatetime(when)
        folder = root / "results" / job_id
        folder.mkdir(parents=True)
        (folder / "r.nxs").write_bytes(b"x" * 10)
        job.result.outputs.add(uri=str(folder / "r.nxs"), format="nexus", size=10)
        store.put(job)
    items = retention.expired(store, days=90, now=now)
    assert [e.job_id for e in items] == ["old-done", "old-failed"]
    res = subprocess.run(
        [str(BIN / "panreduce"), "retention", "--dry-run", "--json", "--store", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert sorted(j["job_id"] for j in json.loads(res.stdout)["jobs"]) == ["old-done", "old-failed"]
    assert (root / "results" / "old-done" / "r.nxs").exists()  # a dry run deletes nothing
    res = subprocess.run(
        [str(BIN / "panreduce"), "retention", "--apply", "--store", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (root / "results").iterdir()) == ["edge-young", "old-running", "young"]
    assert sorted(j.job_id for j in store.list(pb.ListJobsRequest())) == ["edge-young", "old-running", "young"]


# -- access -----------------------------------------------------------------------------
@pytest.fixture
def secured(tmp_path):
    """A toy service behind a gateway with static tokens for proposals A and B."""
    data = tmp_path / "data"
    for p in ("pA", "pB"):
        (data / p).mkdir(parents=True)
        np.save(data / p / "v.npy", np.arange(5.0))
    tokens = StaticTokens(
        [
            {"token": "token-a", "subject": "alice", "proposals": ["pA"]},
            {"token": "token-b", "subject": "bob", "proposals": ["pB"]},
            {
                "token": "sha256:" + __import__("hashlib").sha256(b"token-ab").hexdigest(),
                "subject": "carol",
                "proposals": ["pA", "pB"],
            },
        ]
    )
    access = Access([tokens], prefixes=[str(data) + "/{proposal}/"])
    stores = Stores(tmp_path / "store")
    service = start_technique(Toy, stores=stores)
    gateway = GatewayService({"toy": service.address}, stores=stores, config=GatewayConfig(access=access))
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    yield {"address": gw.address, "data": data, "tmp": tmp_path}
    gw.drain_and_stop(2)
    gateway.close()
    service.drain_and_stop(2)


def test_cross_proposal_access_is_denied_on_every_rpc(secured):
    data, tmp = secured["data"], secured["tmp"]
    a = Client(secured["address"], token="token-a", timeout=30)
    b = Client(secured["address"], token="token-b", timeout=30)
    ab = Client(secured["address"], token="token-ab", timeout=30)
    job = a.reduce("toy", [str(data / "pA" / "v.npy")], {}, str(data / "pA" / "out"))
    job_id = job.job_id
    assert a.get_job(job_id).proposal == "pA" and a.get_job(job_id).owner == "alice"
    upload = a.upload(data / "pA" / "v.npy")
    assert upload.uri.startswith("upload://pA/")

    with pytest.raises(errors.JobNotFound):
        b.get_job(job_id)
    with pytest.raises(errors.JobNotFound):
        list(b.watch(job_id))
    with pytest.raises(errors.JobNotFound):
        b.cancel(job_id)
    assert b.list_jobs() == []
    assert b.list_jobs(proposal="pA") == []
    with pytest.raises(errors.PermissionDenied):
        b.download(job.outputs[0].uri, tmp / "stolen.nxs")
    with pytest.raises(errors.PermissionDenied):
        b.download(upload.uri, tmp / "stolen.npy")
    with pytest.raises(errors.PermissionDenied):  # A's data as input
        b.reduce("toy", [str(data / "pA" / "v.npy")], {}, str(data / "pB" / "out"))
    with pytest.raises(errors.PermissionDenied):  # A's upload as input
        b.reduce("toy", [upload.uri], {}, str(data / "pB" / "out2"))
    with pytest.raises(errors.PermissionDenied):  # writing into A's area
        b.reduce("toy", [str(data / "pB" / "v.npy")], {}, str(data / "pA" / "planted"))
    with pytest.raises(errors.PermissionDenied):  # claiming A's proposal
        b.submit("toy", [str(data / "pB" / "v.npy")], labels={"proposal": "pA"})
    with pytest.raises(errors.PermissionDenied):  # reading A's files' metadata
        b.metadata(str(data / "pA" / "v.npy"))
    with pytest.raises(errors.PermissionDenied):  # path traversal
        b.reduce("toy", [str(data / "pB" / ".." / "pA" / "v.npy")], {})
    with pytest.raises(errors.PermissionDenied):  # outside every prefix
        b.reduce("toy", ["/etc/hostname"], {})
    assert not (data / "pA" / "planted").exists()
    # the owner and a member of both proposals do see it
    assert a.download(job.outputs[0].uri, tmp / "mine.nxs").size == job.outputs[0].size
    assert [j.job_id for j in a.list_jobs()] == [job_id]
    assert job_id in [j.job_id for j in ab.list_jobs(proposal="pA")]
    with pytest.raises(errors.InvalidRequest, match="name the proposal"):
        ab.submit("toy", [str(data / "pA" / "v.npy")])
    # no token, or a wrong one
    with pytest.raises(errors.Unauthenticated):
        Client(secured["address"], timeout=10).describe()
    with pytest.raises(errors.Unauthenticated):
        Client(secured["address"], token="forged", timeout=10).get_job(job_id)
    for c in (a, b, ab):
        c.close()


def _rsa_jwks(tmp_path: Path):
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return key, path


def test_oidc_jwt_tokens(tmp_path):
    import jwt

    key, jwks = _rsa_jwks(tmp_path)
    verifier = JwtVerifier(str(jwks), issuer="https://sso.example.org", audience="panreduce")
    now = int(time.time())
    claims = {
        "sub": "alice",
        "proposals": ["cm33911-1"],
        "iss": "https://sso.example.org",
        "aud": "panreduce",
        "exp": now + 600,
        "iat": now,
    }
    good = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
    identity = verifier.identify(good)
    assert identity.subject == "alice" and identity.proposals == frozenset({"cm33911-1"})
    for bad in ({**claims, "exp": now - 10}, {**claims, "iss": "https://evil.example.org"}, {**claims, "aud": "x"}):
        with pytest.raises(errors.Unauthenticated):
            verifier.identify(jwt.encode(bad, key, algorithm="RS256", headers={"kid": "k1"}))
    (tmp_path / "other").mkdir()
    other, _ = _rsa_jwks(tmp_path / "other")  # a key the JWKS does not hold
    with pytest.raises(errors.Unauthenticated):
        verifier.identify(jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"}))


def test_tls_on_the_gateway_port(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    stores = Stores(tmp_path / "store")
    service = start_technique(Toy, stores=stores)
    gateway = GatewayService({"toy": service.address}, stores=stores)
    gw = start_server(gateway, address="localhost:0", name="gateway", manager=gateway.manager, tls=(cert_pem, key_pem))
    gw.set_serving(True)
    try:
        with Client(f"localhost:{gw.port}", root_certificates=cert_pem, timeout=10) as c:
            assert c.techniques()[0]["name"] == "toy"
        with Client(f"localhost:{gw.port}", timeout=3) as plain, pytest.raises(errors.PanReduceError):
            plain.describe()
    finally:
        gw.drain_and_stop(1)
        gateway.close()
        service.drain_and_stop(1)


# -- sharding over several service processes -------------------------------------------------
@pytest.fixture
def scan_replicas(tmp_path):
    procs, addresses = [], []
    for _ in range(3):
        port = free_port()
        proc = subprocess.Popen(
            [
                str(BIN / "panreduce-service"),
                "scan",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--store",
                str(tmp_path / "svc-store"),
                "--insecure",
            ],  # sharding, not auth
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        addresses.append(f"127.0.0.1:{port}")
    for proc, address in zip(procs, addresses, strict=True):
        wait_serving(address, proc)
    yield procs, addresses
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def test_sharded_job_spreads_over_replicas_and_merges(scan_replicas, tmp_path, dataset):
    _procs, addresses = scan_replicas
    batch = batch_of(tmp_path, dataset, 12)
    with gateway_over({"scan": addresses}, tmp_path / "store") as address:
        with Client(address, timeout=120) as c:
            # split=0 with 3 replicas: automatic
            unsplit = c.reduce(
                "scan", [str(batch) + "/"], {"series_axis": "scan", "plots": False}, str(tmp_path / "whole")
            ).summary
            job = c.get_job(c.list_jobs()[0].job_id)
            assert job.shards == 6  # 3 replicas x 2 slots
            # a request that asks for no split runs on one replica
            whole = c.reduce(
                "scan", [str(batch) + "/"], {"series_axis": "scan", "plots": False}, str(tmp_path / "nosplit"), split=1
            ).summary
        assert unsplit["n_scans"] == whole["n_scans"] == 12
        key = [(s["file"], round(s["center"], 9)) for s in unsplit["scans"]]
        assert key == [(s["file"], round(s["center"], 9)) for s in whole["scans"]]
        with h5py.File(tmp_path / "whole" / "scans.nxs") as f:
            assert len([k for k in f if k != "series"]) == 12
            assert "series" in f
        rows = [r for r in (tmp_path / "whole" / "scans.csv").read_text().splitlines() if not r.startswith("#")]
        assert len(rows) == 13
        shards = tmp_path / "store" / "shards"
        assert not shards.exists() or not any(shards.iterdir())


def test_a_dead_replica_is_retried_elsewhere(scan_replicas, tmp_path, dataset):
    procs, addresses = scan_replicas
    procs[0].kill()
    procs[0].wait(10)
    batch = batch_of(tmp_path, dataset, 6)
    with gateway_over({"scan": addresses}, tmp_path / "store") as address:
        with Client(address, timeout=120) as c:
            done = c.reduce("scan", [str(batch) + "/"], {"series_axis": "scan", "plots": False}, str(tmp_path / "out"))
        assert done.summary["n_scans"] == 6


def test_service_gone_for_good_fails_with_the_cause(tmp_path):
    port = free_port()
    stores = Stores(tmp_path / "store")
    np.save(tmp_path / "v.npy", np.ones(3))
    gateway = GatewayService(
        {"toy": f"127.0.0.1:{port}"},
        stores=stores,
        config=GatewayConfig(max_attempts=2, describe_timeout=2, queue_max=0),
    )  # no queue
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    try:
        with Client(gw.address, timeout=20) as c:
            with pytest.raises(errors.Unavailable, match="unavailable"):
                c.reduce("toy", [str(tmp_path / "v.npy")], {})
    finally:
        gw.drain_and_stop(1)
        gateway.close()


def test_env_configures_access(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [{"token": "t", "subject": "s", "proposals": ["p"]}]}))
    access = Access.from_env({"PANREDUCE_TOKENS_FILE": str(tokens), "PANREDUCE_ALLOWED_PREFIXES": "s3://b/{proposal}/"})
    assert access.enabled and access.prefixes == ["s3://b/{proposal}/"]
    assert not Access.from_env({}).enabled


def test_replicated_gateways_take_over_a_vanished_replicas_jobs(pg_database, scan_replicas, tmp_path, dataset):
    """Two gateway processes share a PostgreSQL job table; the one that ran a job is
    killed; the other claims the job once the dead one's heartbeat lease lapses and runs
    it to the end; the idempotency key still maps to the one job."""
    _, addresses = scan_replicas
    batch = batch_of(tmp_path, dataset, 40)
    env = {**os.environ, "PANREDUCE_DB_LEASE": "3", "PANREDUCE_DB_HEARTBEAT": "0.5", "PANREDUCE_CLAIM_SECONDS": "1"}
    gateways = []
    for name in ("a", "b"):
        port = free_port()
        proc = subprocess.Popen(
            [
                str(BIN / "panreduce"),
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--db",
                pg_database,
                "--store",
                str(tmp_path / f"gw-{name}"),
                "--route",
                f"scan={addresses[0]}",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        wait_serving(f"127.0.0.1:{port}", proc)
        gateways.append((proc, f"127.0.0.1:{port}"))
    (a, a_address), (_b, b_address) = gateways
    try:
        with Client(a_address, timeout=30) as c:
            job = c.submit(
                "scan", [str(batch) + "/"], {"plots": False}, str(tmp_path / "out"), idempotency_key="shared-1"
            )
            for event in c.watch(job.job_id):
                if event.HasField("progress") and event.progress.stage in ("load", "fit"):
                    break
        a.kill()
        a.wait(10)
        with Client(b_address, timeout=120) as c:
            assert c.get_job(job.job_id).job_id == job.job_id  # the shared table knows it
            final = c.wait(job.job_id)
            again = c.submit(
                "scan", [str(batch) + "/"], {"plots": False}, str(tmp_path / "out"), idempotency_key="shared-1"
            )
            with pytest.raises(errors.AlreadyExists):
                c.submit("scan", [str(batch) + "/"], {}, str(tmp_path / "other"), idempotency_key="shared-1")
        assert final.state == pb.SUCCEEDED, final.failure.message
        assert final.attempts == 2 and final.result.summary["n_scans"] == 40
        assert again.job_id == job.job_id and not (tmp_path / "other").exists()
    finally:
        for proc, _ in gateways:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
