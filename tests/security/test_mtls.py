"""Mutual TLS between the gateway and its services (panreduce.mtls), on loopback with
certificates made here: a call without a client certificate, or with one from another
CA, never reaches the service; the gateway's certificate is served; plain-text health
answers on its own port (for the kubelet's probes) and serves nothing else."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from service_support import SERVICE_TOKEN, access_for, proposal_data

from panreduce import errors
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.kit.toy import Toy
from panreduce.mtls import ServiceTLS, service_tls_setting
from panreduce.serving import SERVICE_TOKEN_HEADER, start_server
from panreduce.storage import Stores
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc
from panreduce_gateway.gateway import GatewayConfig, GatewayService

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: E402

SERVER_NAME = "panreduce-services"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(ca, cn: str, folder: Path) -> Path:
    """A certificate for ``cn`` (server and client use, SANs for the shared service name
    and loopback) signed by ``ca``, written as tls.crt/tls.key/ca.crt into ``folder``."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(SERVER_NAME),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tls.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "tls.key").write_bytes(_pem_key(key))
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return folder


@pytest.fixture
def pki(tmp_path):
    ca, rogue = make_ca("panreduce test CA"), make_ca("someone else's CA")
    return {
        "service": issue(ca, SERVER_NAME, tmp_path / "pki" / "service"),
        "gateway": issue(ca, "panreduce-gateway", tmp_path / "pki" / "gateway"),
        "rogue": issue(rogue, "panreduce-gateway", tmp_path / "pki" / "rogue"),
    }


def _describe(channel: grpc.Channel, token: str | None = SERVICE_TOKEN) -> pb.DescribeResponse:
    stub = pb_grpc.ReducerStub(channel)
    return stub.Describe(pb.DescribeRequest(), timeout=5, metadata=[(SERVICE_TOKEN_HEADER, token)] if token else None)


def test_only_clients_with_a_certificate_of_the_ca_are_served(tmp_path, pki):
    tls = ServiceTLS.from_dir(pki["service"])
    service = start_technique(
        Toy,
        stores=Stores(tmp_path / "store"),
        service_token=SERVICE_TOKEN,
        service_tls=tls,
        health_address="127.0.0.1:0",
    )
    target = f"127.0.0.1:{service.port}"
    override = [("grpc.ssl_target_name_override", SERVER_NAME)]
    try:
        # plain text: the handshake never happens, nothing is served
        with grpc.insecure_channel(target) as ch, pytest.raises(grpc.RpcError) as caught:
            _describe(ch)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # TLS that trusts the server but presents no client certificate
        anonymous = grpc.ssl_channel_credentials(root_certificates=tls.ca)
        with grpc.secure_channel(target, anonymous, options=override) as ch, pytest.raises(grpc.RpcError) as caught:
            _describe(ch)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        # a client certificate signed by another CA
        rogue = ServiceTLS.from_dir(pki["rogue"])
        rogue_creds = grpc.ssl_channel_credentials(
            root_certificates=tls.ca, private_key=rogue.key, certificate_chain=rogue.cert
        )
        with grpc.secure_channel(target, rogue_creds, options=override) as ch, pytest.raises(grpc.RpcError) as caught:
            _describe(ch)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert service.manager.list(pb.ListJobsRequest()) == []
        # the gateway's certificate: served, and the service token is still required on top
        gw = ServiceTLS.from_dir(pki["gateway"], server_name=SERVER_NAME)
        with grpc.secure_channel(target, gw.channel_credentials(), options=gw.channel_options()) as ch:
            assert _describe(ch).techniques[0].name == "toy"
            with pytest.raises(grpc.RpcError) as caught:
                _describe(ch, token=None)
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # the plain-text health port answers the probes, and serves no Reducer call
        with grpc.insecure_channel(f"127.0.0.1:{service.health_port}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.RpcError) as caught:
                _describe(ch)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        service.drain_and_stop(1)


def test_gateway_reaches_its_services_over_mtls_and_a_rogue_gateway_does_not(tmp_path, pki):
    files = proposal_data(tmp_path)
    stores = Stores(tmp_path / "store")
    service = start_technique(
        Toy, stores=stores, service_token=SERVICE_TOKEN, service_tls=ServiceTLS.from_dir(pki["service"])
    )
    servers, gateways = [], []
    try:
        for which in ("gateway", "rogue"):
            config = GatewayConfig(
                access=access_for(tmp_path),
                service_token=SERVICE_TOKEN,
                service_wait=2,
                queue_max=0,
                service_tls=ServiceTLS.from_dir(pki[which], server_name=SERVER_NAME),
            )
            gateway = GatewayService({"toy": f"127.0.0.1:{service.port}"}, stores=stores, config=config)
            gw = start_server(gateway, name="gateway", manager=gateway.manager)
            gw.set_serving(True)
            servers.append(gw)
            gateways.append(gateway)
        good = Client(servers[0].address, token="alice-token")
        result = good.reduce("toy", [str(files["pA"])], {})
        assert result.summary["total"] == pytest.approx(10.0)
        bad = Client(servers[1].address, token="alice-token", timeout=15)
        t0 = time.monotonic()
        with pytest.raises(errors.PanReduceError) as caught:  # the handshake fails: never served
            bad.reduce("toy", [str(files["pA"])], {})
        assert caught.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        assert time.monotonic() - t0 < 30
        assert len(service.manager.list(pb.ListJobsRequest())) == 1  # only the good gateway's job ran
    finally:
        for gw, gateway in zip(servers, gateways, strict=True):
            gw.drain_and_stop(1)
            gateway.close()
        service.drain_and_stop(1)


def test_service_tls_folder_problems_are_one_clear_error(tmp_path, pki):
    assert service_tls_setting(None, env={}) is None
    assert (
        service_tls_setting(
            None,
            env={"PANREDUCE_SERVICE_TLS_DIR": str(pki["service"]), "PANREDUCE_SERVICE_TLS_SERVER_NAME": SERVER_NAME},
        ).server_name
        == SERVER_NAME
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.InvalidRequest, match=r"tls\.crt"):
        ServiceTLS.from_dir(empty)
    (empty / "tls.crt").write_text("not a certificate")
    (empty / "tls.key").write_text("x")
    (empty / "ca.crt").write_text("x")
    with pytest.raises(errors.InvalidRequest, match="not PEM"):
        ServiceTLS.from_dir(empty)


def test_service_cli_with_mtls_starts_without_a_token(tmp_path, pki):
    """``panreduce-service`` given a TLS folder (and the scope key) needs no token and no
    --insecure, and answers health in plain text on --health-port while its main port speaks
    only mTLS."""
    import socket

    from panreduce.scopekey import generate_pem

    scope_key = tmp_path / "scope.pub"
    scope_key.write_bytes(generate_pem()[1])

    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "panreduce.kit",
            "scan",
            "--port",
            str(ports[0]),
            "--health-port",
            str(ports[1]),
            "--store",
            str(tmp_path / "store"),
            "--service-tls-dir",
            str(pki["service"]),
            "--scope-key-file",
            str(scope_key),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports[1]}") as ch:
            grpc.channel_ready_future(ch).result(timeout=60)
            resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        gw = ServiceTLS.from_dir(pki["gateway"], server_name=SERVER_NAME)
        with grpc.secure_channel(f"127.0.0.1:{ports[0]}", gw.channel_credentials(), options=gw.channel_options()) as ch:
            assert _describe(ch, token=None).techniques[0].name == "scan"
        with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as ch, pytest.raises(grpc.RpcError):
            _describe(ch, token=None)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
