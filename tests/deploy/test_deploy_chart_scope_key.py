"""charts/panreduce: the scope key. The gateway mounts the private key and signs each
call's scope; every technique service mounts only the certificate, and a statement signed
with the chart's key verifies there (a service-token holder without the key cannot sign)."""

from __future__ import annotations

import base64

import pytest
from deploy_support import RELEASE, pod_spec, render_chart

from panreduce import errors
from panreduce.scopekey import ScopeSigner, ScopeVerifier, generate_pem


def _env(pod: dict) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["containers"][0].get("env", [])}


def _volume(pod: dict, name: str) -> dict:
    return next(v for v in pod["volumes"] if v["name"] == name)


def test_gateway_signs_and_services_hold_only_the_certificate(tmp_path):
    docs = render_chart()
    secret = docs.get("Secret", f"{RELEASE}-scope-key")
    key = base64.b64decode(secret["data"]["tls.key"])
    crt = base64.b64decode(secret["data"]["tls.crt"])
    gateway = pod_spec(docs.get("Deployment", f"{RELEASE}-gateway"))
    assert _env(gateway)["PANREDUCE_SCOPE_KEY_FILE"] == "/etc/panreduce/scope-key/tls.key"
    assert "items" not in _volume(gateway, "scope-key")["secret"]
    services = [d for name, d in docs.deployments().items() if not name.endswith(("-gateway", "-web"))]
    assert services
    for dep in services:
        pod = pod_spec(dep)
        assert _env(pod)["PANREDUCE_SCOPE_KEY_FILE"] == "/etc/panreduce/scope-key/tls.crt"
        assert _volume(pod, "scope-key")["secret"]["items"] == [{"key": "tls.crt", "path": "tls.crt"}]
    # the chart's pair works with the code: signed by the gateway's key, verified by the certificate
    (tmp_path / "tls.key").write_bytes(key)
    (tmp_path / "tls.crt").write_bytes(crt)
    signer = ScopeSigner.from_file(tmp_path / "tls.key")
    verifier = ScopeVerifier.from_file(tmp_path / "tls.crt")
    kw = dict(rpc="Reduce", job="job-1", request=None)
    value = signer.sign(subject="alice", proposals=["pA"], admin=False, scope="pA", **kw)
    statement = verifier.verify(value, **kw)
    assert statement.sees("pA") and not statement.sees("pB")
    other, _ = generate_pem()
    forged = ScopeSigner(other).sign(subject="mallory", proposals=["pA"], admin=True, scope="pA", **kw)
    with pytest.raises(errors.Unauthenticated):
        verifier.verify(forged, **kw)
    with pytest.raises(errors.InvalidRequest, match="private key"):
        ScopeVerifier.from_file(tmp_path / "tls.key")  # a private key is refused where a service needs the certificate


def test_an_existing_scope_key_secret_is_used_and_none_is_made():
    docs = render_chart({"scopeKey": {"existingSecret": "facility-scope-key"}})
    assert not [s for s in docs.of("Secret") if s["metadata"]["name"].endswith("-scope-key")]
    gateway = pod_spec(docs.get("Deployment", f"{RELEASE}-gateway"))
    assert _volume(gateway, "scope-key")["secret"]["secretName"] == "facility-scope-key"
