"""The chart's mTLS option (serviceTLS): the Secret mounted into the gateway and every
technique pod, the services' probes on the plain-text health port, and cert-manager's
Certificate for the shared server name and every technique Service."""

from __future__ import annotations

import pytest
from deploy_support import RELEASE, container, env_of, pod_spec, render_chart

pytest.importorskip("helm_python")

ON = {"serviceTLS": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "facility-ca"}}}}


def _techniques(rendered):
    """The technique Deployments (not the gateway, nor the web page, which talks to the gateway's public port)."""
    return {n: d for n, d in rendered.deployments().items() if n not in (f"{RELEASE}-gateway", f"{RELEASE}-web")}


def _gateway_and_services(rendered):
    deployments = rendered.deployments()
    return {f"{RELEASE}-gateway": deployments[f"{RELEASE}-gateway"], **_techniques(rendered)}


def test_service_tls_is_off_by_default_and_mounted_everywhere_when_on():
    off = render_chart()
    assert not off.of("Certificate")
    for dep in off.deployments().values():
        assert "PANREDUCE_SERVICE_TLS_DIR" not in env_of(container(dep))
        assert not [v for v in pod_spec(dep)["volumes"] if v["name"] == "service-tls"]

    on = render_chart(ON)
    (cert,) = on.of("Certificate")
    assert cert["spec"]["secretName"] == f"{RELEASE}-service-tls"
    assert set(cert["spec"]["usages"]) == {"server auth", "client auth"}
    assert cert["spec"]["issuerRef"]["name"] == "facility-ca"
    techniques = _techniques(on)
    assert techniques
    assert set(cert["spec"]["dnsNames"]) >= {"panreduce-services", *techniques}
    for name, dep in _gateway_and_services(on).items():
        c = container(dep)
        env = env_of(c)
        assert env["PANREDUCE_SERVICE_TLS_DIR"] == "/etc/panreduce/service-tls", name
        assert env["PANREDUCE_SERVICE_TLS_SERVER_NAME"] == "panreduce-services"
        assert env["PANREDUCE_SERVICE_TOKEN_FILE"]  # mTLS comes on top of the token
        assert {"name": "service-tls", "mountPath": "/etc/panreduce/service-tls", "readOnly": True} in c["volumeMounts"]
        volume = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "service-tls")
        assert volume["secret"]["secretName"] == f"{RELEASE}-service-tls"
    for name, dep in techniques.items():
        c = container(dep)
        assert env_of(c)["PANREDUCE_HEALTH_PORT"] == "50052", name
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"]["port"] == 50052, (name, probe)


def test_an_existing_secret_needs_no_cert_manager_and_an_issuer_is_required_with_it():
    mine = render_chart({"serviceTLS": {"enabled": True, "secretName": "facility-mtls"}})
    assert not mine.of("Certificate")
    for dep in _gateway_and_services(mine).values():
        volume = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "service-tls")
        assert volume["secret"]["secretName"] == "facility-mtls"
    with pytest.raises(Exception, match="issuerRef"):
        render_chart({"serviceTLS": {"enabled": True, "certManager": {"enabled": True}}})
    with pytest.raises(Exception, match="serviceTLS"):
        render_chart({"serviceTLS": {"enabled": True, "serverName": "Not A Name"}})
