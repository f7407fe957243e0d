"""charts/panreduce: the live data page (`panreduce web`, issue 20) and access control required
by default. Rendered in-process (Helm 4 engine); the built-in kinds validated strictly."""

from __future__ import annotations

import kubernetes_validate
import pytest
from deploy_support import RELEASE, container, env_of, pod_spec, render_chart, selects

KUBE = "1.30.0"
TOKENS = {"gateway": {"auth": {"tokensSecret": {"name": "toks", "key": "t.json"}}}}
OIDC = {
    "gateway": {
        "auth": {
            "jwks": "https://login.facility.org/certs",
            "jwtIssuer": "https://login.facility.org",
            "jwtAudience": "pr",
        }
    }
}


def strict(*docs):
    for d in docs:
        kubernetes_validate.validate(d, KUBE, strict=True)


def args_of(c: dict) -> dict[str, str]:
    """--flag value pairs of a container's args."""
    a = c["args"]
    return {a[i]: a[i + 1] for i in range(0, len(a) - 1) if a[i].startswith("--") and not a[i + 1].startswith("--")}


def test_web_page_deployment_and_service_by_default():
    docs = render_chart(TOKENS)
    web = docs.get("Deployment", f"{RELEASE}-web")
    svc = docs.get("Service", f"{RELEASE}-web")
    pdb = docs.get("PodDisruptionBudget", f"{RELEASE}-web")
    strict(web, svc, pdb)
    c, spec = container(web), pod_spec(web)
    assert c["command"] == ["/usr/bin/tini", "-g", "--", "panreduce", "web"]
    args = args_of(c)
    # the gateway by its Service, as the release names it; listening on every address in the pod
    assert args["--gateway"] == f"{RELEASE}-gateway:50050" == env_of(c)["PANREDUCE_GATEWAY"]
    assert (args["--host"], args["--port"]) == ("0.0.0.0", "8080")
    assert args["--auth"] == "tokens"  # static tokens on the gateway: the token form
    assert c["image"] == "localhost/panreduce/web:0.1.0"
    # probes on /healthz of the http port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
        assert c[probe]["periodSeconds"] > 0 and c[probe]["failureThreshold"] >= 1
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    # the same restricted security context as every pod
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert (
        sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"] == {"drop": ["ALL"]}
    )
    assert spec["automountServiceAccountToken"] is False
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    assert c["resources"]["requests"]["ephemeral-storage"] == "256Mi" and "memory" in c["resources"]["limits"]
    # no second path to the store or the job table: no store volume, no store/DB settings
    assert not {"store", "jobs"} & {v["name"] for v in spec["volumes"]}
    assert not {"PANREDUCE_STORE", "PANREDUCE_DB", "PANREDUCE_DB_DSN"} & set(env_of(c))
    # the Service selects exactly the page's pod
    assert selects({"matchLabels": svc["spec"]["selector"]}, web["spec"]["template"]["metadata"]["labels"])
    assert not selects(
        {"matchLabels": svc["spec"]["selector"]},
        docs.get("Deployment", f"{RELEASE}-gateway")["spec"]["template"]["metadata"]["labels"],
    )
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]
    assert "sessionAffinity" not in svc["spec"]


def test_web_page_takes_the_gateways_oidc_settings_and_tls():
    docs = render_chart(
        OIDC,
        {
            "gateway": {"tls": {"existingSecret": "gw-tls"}},
            "web": {
                "publicUrl": "https://web.facility.org",
                "oidc": {"clientSecret": {"name": "web-oidc", "key": "secret"}},
                "replicas": 2,
            },
        },
    )
    web = docs.get("Deployment", f"{RELEASE}-web")
    strict(web, docs.get("Service", f"{RELEASE}-web"))
    c = container(web)
    env, args = env_of(c), args_of(c)
    assert args["--auth"] == "oidc"  # an issuer and the audience as the client id
    assert env["PANREDUCE_JWT_ISSUER"] == "https://login.facility.org" and env["PANREDUCE_JWT_AUDIENCE"] == "pr"
    assert args["--public-url"] == "https://web.facility.org"
    assert args["--oidc-client-secret-file"] == "/etc/panreduce/oidc/secret"
    # the gateway's CA, from its TLS Secret, to verify the gateway
    assert env["PANREDUCE_TLS_CA"] == "/etc/panreduce/gateway-tls/ca.crt"
    vols = {v["name"]: v for v in pod_spec(web)["volumes"]}
    assert vols["gateway-tls"]["secret"] == {"secretName": "gw-tls", "items": [{"key": "ca.crt", "path": "ca.crt"}]}
    assert vols["oidc"]["secret"]["secretName"] == "web-oidc"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/panreduce/gateway-tls"]["readOnly"] and mounts["/etc/panreduce/oidc"]["readOnly"]
    # sessions live in each pod's memory: two replicas pin a client to one pod
    assert docs.get("Service", f"{RELEASE}-web")["spec"]["sessionAffinity"] == "ClientIP"
    assert web["spec"]["replicas"] == 2


def test_web_page_behind_an_ingress_or_an_httproute():
    docs = render_chart(
        TOKENS,
        {
            "web": {
                "ingress": {
                    "enabled": True,
                    "className": "nginx",
                    "hosts": [{"host": "web.facility.org", "paths": ["/"]}],
                    "tls": [{"secretName": "web-tls", "hosts": ["web.facility.org"]}],
                },
                "httpRoute": {
                    "enabled": True,
                    "parentRefs": [{"name": "facility", "namespace": "gateway-system", "sectionName": "https"}],
                    "hostnames": ["web.facility.org"],
                },
            }
        },
    )
    ing = docs.get("Ingress", f"{RELEASE}-web")
    strict(ing)
    assert ing["spec"]["ingressClassName"] == "nginx"
    (path,) = ing["spec"]["rules"][0]["http"]["paths"]
    assert path["backend"]["service"] == {"name": f"{RELEASE}-web", "port": {"name": "http"}}
    assert ing["spec"]["tls"] == [{"secretName": "web-tls", "hosts": ["web.facility.org"]}]
    # server-sent events: long reads, no buffering
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    route = docs.get("HTTPRoute", f"{RELEASE}-web")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "facility", "namespace": "gateway-system", "sectionName": "https"}]
    assert route["spec"]["hostnames"] == ["web.facility.org"]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": f"{RELEASE}-web", "port": 8080}]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    with pytest.raises(Exception, match="parentRefs"):
        render_chart(TOKENS, {"web": {"httpRoute": {"enabled": True}}})


def test_web_disabled_renders_nothing_of_it():
    docs = render_chart(TOKENS, {"web": {"enabled": False, "ingress": {"enabled": True}}})
    assert not [d for d in docs if d["metadata"]["name"] == f"{RELEASE}-web"]


def test_web_values_refused_by_the_schema():
    with pytest.raises(Exception, match="auth"):
        render_chart(TOKENS, {"web": {"auth": "guest"}})
    with pytest.raises(Exception, match=r"sizeLimit|quantity|pattern"):
        render_chart(TOKENS, {"web": {"scratch": {"sizeLimit": "lots"}}})
    with pytest.raises(Exception, match=r"additional|ingres"):
        render_chart(TOKENS, {"web": {"ingres": {"enabled": True}}})
    # a page without login needs a gateway without access control
    with pytest.raises(Exception, match=r"web.auth=none"):
        render_chart(TOKENS, {"web": {"auth": "none"}})


# -- access control required by default -----------------------------------------------------------
def test_chart_refuses_to_render_without_access_control():
    with pytest.raises(Exception, match=r"access control is required.*gateway.auth.disabled=true"):
        render_chart(dev_auth=False)
    with pytest.raises(Exception, match="access control is required"):
        render_chart({"gateway": {"auth": {"disabled": False}}})
    # disabled together with tokens: contradictory, refused
    with pytest.raises(Exception, match="choose one"):
        render_chart(TOKENS, {"gateway": {"auth": {"disabled": True}}})


@pytest.mark.parametrize("auth", ["tokens", "oidc", "disabled"])
def test_each_way_of_access_control_renders(auth):
    values = {"tokens": TOKENS, "oidc": OIDC, "disabled": {"gateway": {"auth": {"disabled": True}}}}[auth]
    docs = render_chart(values, dev_auth=False)
    gw_env = env_of(container(docs.get("Deployment", f"{RELEASE}-gateway")))
    web_args = args_of(container(docs.get("Deployment", f"{RELEASE}-web")))
    if auth == "tokens":
        assert gw_env["PANREDUCE_TOKENS_FILE"] == "/etc/panreduce/tokens/t.json" and web_args["--auth"] == "tokens"
    elif auth == "oidc":
        assert gw_env["PANREDUCE_JWKS"] == "https://login.facility.org/certs" and web_args["--auth"] == "oidc"
    else:
        assert not {"PANREDUCE_TOKENS_FILE", "PANREDUCE_JWKS"} & set(gw_env) and web_args["--auth"] == "none"
