"""A holder of the service token cannot forge the scope: with a scope key, services accept
only statements the gateway signed for this call (panreduce.scopekey), and show and
cancel only the jobs of the statement's proposals. Real servers on loopback; the
gateway's job table in SQLite (the PostgreSQL run is in test_service_scope's store matrix
of the same platform)."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from pathlib import Path

import grpc
import pytest
from service_support import SERVICE_TOKEN, access_for, proposal_data, toy_platform

from panreduce import errors
from panreduce.client import Client, make_request
from panreduce.scope import SCOPE_HEADER, Scope
from panreduce.scopekey import ScopeSigner, ScopeVerifier, generate_pem, signer_setting, verifier_setting
from panreduce.serving import JOB_ID_HEADER, PROPOSAL_HEADER, SERVICE_TOKEN_HEADER
from panreduce.v1 import reduce_pb2 as pb
from panreduce.v1 import reduce_pb2_grpc as pb_grpc
from panreduce_gateway.gateway import GatewayConfig

TOKEN = (SERVICE_TOKEN_HEADER, SERVICE_TOKEN)


def signed_platform(root: Path, signer: ScopeSigner, verifier: ScopeVerifier):
    return toy_platform(root, access=access_for(root), scope_signer=signer, scope_verifier=verifier)


@pytest.fixture
def keys():
    private, public = generate_pem()
    return ScopeSigner(private), ScopeVerifier(public)


def _code(call) -> tuple[grpc.StatusCode, str]:
    try:
        out = call()
        if hasattr(out, "__iter__") and not isinstance(out, pb.Job | pb.ListJobsResponse):
            out = list(out)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, repr(out)[:300]


def _tamper(value: str, **fields) -> str:
    """The statement with payload fields changed, its signature kept."""
    v, payload, sig = value.split(".")
    doc = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    doc.update(fields)
    new = base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
    return f"{v}.{new}.{sig}"


REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def test_a_token_holder_cannot_forge_replay_move_or_alter_a_scope(tmp_path, keys, caplog):
    signer, verifier = keys
    files = proposal_data(tmp_path)
    anywhere = Scope.anywhere().encode()
    with (
        signed_platform(tmp_path, signer, verifier) as (service, gw, _),
        grpc.insecure_channel(service.address) as channel,
        caplog.at_level(logging.INFO, "panreduce.audit"),
    ):
        stub = pb_grpc.ReducerStub(channel)
        req_b = pb.ReduceRequest(technique="toy", inputs=[str(files["pB"])])
        req_a = pb.ReduceRequest(technique="toy", inputs=[str(files["pA"])])

        def reduce(req, scope_value, job="j-x", proposal="pA"):
            md = [TOKEN, (PROPOSAL_HEADER, proposal), (JOB_ID_HEADER, job)]
            if scope_value is not None:
                md.append((SCOPE_HEADER, scope_value))
            return _code(lambda: stub.Reduce(req, metadata=md, timeout=20))

        def good(req, job="j-x", **kw):
            return signer.sign(
                audience="toy",
                subject="alice",
                proposals=["pA"],
                admin=False,
                rpc="Reduce",
                scope=anywhere,
                job=job,
                request=req,
                **kw,
            )

        other_private, _ = generate_pem()
        intruder = ScopeSigner(other_private)
        cases = {
            "no scope": reduce(req_b, None),
            "unsigned scope (the old JSON)": reduce(req_b, anywhere),
            "made up": reduce(req_b, "v1.e30.AAAA"),
            "signed by another key": reduce(
                req_b,
                intruder.sign(
                    audience="toy",
                    subject="alice",
                    proposals=["pA"],
                    admin=True,
                    rpc="Reduce",
                    scope=anywhere,
                    job="j-x",
                    request=req_b,
                ),
            ),
            "expired (replayed later)": reduce(req_b, good(req_b, now=time.time() - 3600)),
            "job X's statement on job Y": reduce(req_b, good(req_b, job="j-x"), job="j-y"),
            "job X's request, another request": reduce(req_b, good(req_a)),
            "for Submit, used on Reduce": reduce(
                req_b,
                signer.sign(
                    audience="toy",
                    subject="alice",
                    proposals=["pA"],
                    admin=False,
                    rpc="Submit",
                    scope=anywhere,
                    job="j-x",
                    request=req_b,
                ),
            ),
            "for pA, call names pB": reduce(req_b, good(req_b), proposal="pB"),
            "for another technique's service": reduce(
                req_b,
                signer.sign(
                    audience="scan",
                    subject="alice",
                    proposals=["pA"],
                    admin=False,
                    rpc="Reduce",
                    scope=anywhere,
                    job="j-x",
                    request=req_b,
                ),
            ),
            "scope widened in the payload": reduce(req_b, _tamper(good(req_b), scope="*")),
            "expiry pushed out in the payload": reduce(
                req_b, _tamper(good(req_b, now=time.time() - 3600), exp=time.time() + 3600)
            ),
            "admin set in the payload": reduce(req_b, _tamper(good(req_b), admin=True)),
        }
        for what, (code, details) in cases.items():
            assert code in REFUSED, (what, code, details)
            assert "Traceback" not in details
        assert cases["signed by another key"][0] == grpc.StatusCode.UNAUTHENTICATED
        assert cases["scope widened in the payload"][0] == grpc.StatusCode.UNAUTHENTICATED
        assert cases["expired (replayed later)"][0] == grpc.StatusCode.PERMISSION_DENIED
        assert "expired" in cases["expired (replayed later)"][1]
        assert "another job" in cases["job X's statement on job Y"][1]
        assert "another request" in cases["job X's request, another request"][1]
        assert cases["for another technique's service"][0] == grpc.StatusCode.PERMISSION_DENIED
        assert "'scan' service, not 'toy'" in cases["for another technique's service"][1]
        # a good statement works once; the same again is a replay
        value = good(req_a)
        assert reduce(req_a, value)[0] == grpc.StatusCode.OK
        code, details = reduce(req_a, value)
        assert code == grpc.StatusCode.PERMISSION_DENIED and "replayed" in details
        denied = [
            r
            for r in caplog.records
            if r.name == "panreduce.audit"
            and '"allowed": false' in r.getMessage()
            and "scope statement" in r.getMessage()
        ]
        assert len(denied) >= len(cases) + 1  # every refusal audited
        # and the honest path, through the gateway, signs and is served
        with Client(gw.address, token="alice-token") as alice:
            job = alice.submit("toy", [str(files["pA"])])
            assert alice.wait(job.job_id).state == pb.SUCCEEDED
            with pytest.raises(errors.PermissionDenied):
                alice.submit("toy", [str(files["pB"])])


def test_services_show_and_cancel_only_the_statements_proposals_jobs(tmp_path, keys):
    signer, verifier = keys
    files = proposal_data(tmp_path)
    with (
        signed_platform(tmp_path, signer, verifier) as (service, _, _),
        grpc.insecure_channel(service.address) as channel,
    ):
        stub = pb_grpc.ReducerStub(channel)
        ids = {}
        for proposal in ("pA", "pB"):
            req = make_request("toy", [str(files[proposal])], {"steps": 300, "step_seconds": 0.1})
            st = signer.sign(
                audience="toy",
                subject=proposal,
                proposals=[proposal],
                admin=False,
                rpc="Submit",
                scope="*",
                job=f"j-{proposal}",
                request=req,
            )
            job = stub.Submit(
                req,
                metadata=[TOKEN, (PROPOSAL_HEADER, proposal), (JOB_ID_HEADER, f"j-{proposal}"), (SCOPE_HEADER, st)],
                timeout=20,
            )
            ids[proposal] = job.job_id

        def call(rpc, request, proposals=("pA",), admin=False):
            st = signer.sign(
                audience="toy", subject="x", proposals=list(proposals), admin=admin, rpc=rpc, scope="*", request=request
            )
            method = getattr(stub, rpc)
            return _code(lambda: method(request, metadata=[TOKEN, (SCOPE_HEADER, st)], timeout=5))

        # the token alone sees nothing
        for rpc, request in [
            ("ListJobs", pb.ListJobsRequest()),
            ("GetJob", pb.GetJobRequest(job_id=ids["pA"])),
            ("Cancel", pb.CancelRequest(job_id=ids["pA"])),
        ]:
            code, _ = _code(lambda r=rpc, q=request: getattr(stub, r)(q, metadata=[TOKEN], timeout=5))
            assert code == grpc.StatusCode.UNAUTHENTICATED, rpc
        listing = stub.ListJobs(
            pb.ListJobsRequest(),
            metadata=[
                TOKEN,
                (
                    SCOPE_HEADER,
                    signer.sign(
                        audience="toy",
                        subject="x",
                        proposals=["pA"],
                        admin=False,
                        rpc="ListJobs",
                        scope="*",
                        request=pb.ListJobsRequest(),
                    ),
                ),
            ],
        )
        assert [j.job_id for j in listing.jobs] == [ids["pA"]]
        for rpc, request in [
            ("GetJob", pb.GetJobRequest(job_id=ids["pB"])),
            ("Cancel", pb.CancelRequest(job_id=ids["pB"])),
            ("Watch", pb.WatchRequest(job_id=ids["pB"])),
        ]:
            code, details = call(rpc, request)
            assert code == grpc.StatusCode.NOT_FOUND, (rpc, code, details)
        assert call("GetJob", pb.GetJobRequest(job_id=ids["pA"]))[0] == grpc.StatusCode.OK
        # a statement for GetJob does not list
        st = signer.sign(
            audience="toy",
            subject="x",
            proposals=["pA"],
            admin=False,
            rpc="GetJob",
            scope="*",
            request=pb.GetJobRequest(job_id=ids["pA"]),
        )
        code, _ = _code(lambda: stub.ListJobs(pb.ListJobsRequest(), metadata=[TOKEN, (SCOPE_HEADER, st)]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        # the admin's statement sees and cancels every proposal's job
        admin_list = stub.ListJobs(
            pb.ListJobsRequest(),
            metadata=[
                TOKEN,
                (
                    SCOPE_HEADER,
                    signer.sign(
                        audience="toy",
                        subject="root",
                        proposals=[],
                        admin=True,
                        rpc="ListJobs",
                        scope="*",
                        request=pb.ListJobsRequest(),
                    ),
                ),
            ],
        )
        assert sorted(j.job_id for j in admin_list.jobs) == sorted(ids.values())
        for proposal in ("pA", "pB"):
            code, _ = call("Cancel", pb.CancelRequest(job_id=ids[proposal]), proposals=(), admin=True)
            assert code == grpc.StatusCode.OK


def test_scope_key_files_and_settings(tmp_path):
    private, public = generate_pem()
    (tmp_path / "scope.key").write_bytes(private)
    (tmp_path / "scope.pub").write_bytes(public)
    signer = signer_setting(tmp_path / "scope.key")
    assert signer is not None and signer.public_pem == public
    verifier = verifier_setting(None, env={"PANREDUCE_SCOPE_KEY_FILE": str(tmp_path / "scope.pub")})
    st = signer.sign(audience="toy", subject="a", proposals=["p"], admin=False, rpc="GetJob", scope="*")
    assert verifier.verify(st, rpc="GetJob").proposals == ("p",)
    assert verifier_setting(None, env={}) is None
    with pytest.raises(errors.InvalidRequest, match="never the gateway's private key"):
        verifier_setting(tmp_path / "scope.key")
    with pytest.raises(errors.InvalidRequest):
        signer_setting(tmp_path / "scope.pub")
    (tmp_path / "empty").write_text("")
    with pytest.raises(errors.InvalidRequest, match="empty"):
        verifier_setting(tmp_path / "empty")


def test_an_rsa_key_and_its_certificate_as_a_chart_makes_them(tmp_path):
    """Helm's genCA makes an RSA key and a certificate: the gateway signs with the key, the
    services verify with the certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "panreduce-scope")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    signer = ScopeSigner(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    verifier = ScopeVerifier(cert.public_bytes(serialization.Encoding.PEM))
    st = signer.sign(audience="toy", subject="a", proposals=["p"], admin=False, rpc="Cancel", scope="*")
    assert verifier.verify(st, rpc="Cancel").subject == "a"
    with pytest.raises(errors.Unauthenticated):
        verifier.verify(_tamper(st, sub="b"), rpc="Cancel")


def test_the_embedded_platform_signs_with_a_key_of_its_own(tmp_path):
    from panreduce_gateway.embedded import Platform

    with (
        Platform(techniques=[], store_root=tmp_path / "s") as one,
        Platform(techniques=[], store_root=tmp_path / "t") as other,
    ):
        assert one.scope_signer.public_pem != other.scope_signer.public_pem
    assert dataclasses.is_dataclass(GatewayConfig)
