"""charts/panreduce, issue 21's chart options: KEDA scaling on the gateway's queue (to zero),
ServiceMonitor, GRPCRoute, cert-manager Certificate for the gateway, NetworkPolicy sources,
arbitrary UIDs, the retention CronJob and the `panreduce validate` helm test. Built-in kinds
are validated strictly (kubernetes-validate); CRD objects are checked field by field."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from deploy_support import RELEASE, container, env_of, pod_spec, render_chart, selects

KUBE = "1.30.0"
PROM = "http://prometheus-operated.monitoring:9090"
KEDA = {"keda": {"enabled": True, "prometheus": {"serverAddress": PROM}}}


def strict(*docs):
    for d in docs:
        kubernetes_validate.validate(d, KUBE, strict=True)


def labels_of(dep):
    return dep["spec"]["template"]["metadata"]["labels"]


# -- KEDA ---------------------------------------------------------------------------------------
def test_keda_scales_each_technique_on_queue_depth_and_running_jobs_to_zero():
    docs = render_chart(
        KEDA,
        {
            "keda": {"techniques": ["tomography", "saxs"], "prometheus": {"labelMatchers": 'namespace="panreduce"'}},
            "techniques": {
                "tomography": {"maxRunning": 2, "autoscaling": {"minReplicas": 0, "maxReplicas": 6}},
                "saxs": {"autoscaling": {"enabled": True}},
                "sans": {"autoscaling": {"enabled": True}},
            },
        },
    )
    scaled = {d["spec"]["scaleTargetRef"]["name"]: d for d in docs.of("ScaledObject")}
    assert set(scaled) == {f"{RELEASE}-tomography", f"{RELEASE}-saxs"}
    so = scaled[f"{RELEASE}-tomography"]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-tomography"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 6)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    md = trigger["metadata"]
    assert md["serverAddress"] == PROM
    # the gateway's metric names (panreduce.metrics: QUEUE_DEPTH, JOBS_RUNNING{server="gateway"})
    q = md["query"]
    assert 'panreduce_queue_depth{technique="tomography",namespace="panreduce"}' in q
    assert 'panreduce_jobs_running{server="gateway",technique="tomography",namespace="panreduce"}' in q
    assert q.count("or vector(0)") == 2  # no series yet (nothing queued): 0, not "no data"
    assert md["threshold"] == "2"  # jobs per replica = maxRunning
    assert md["activationThreshold"] == "0"  # the first queued job wakes it from zero
    # KEDA owns the replica count: no replicas in the Deployment, no CPU HPA for it
    dep = docs.get("Deployment", f"{RELEASE}-tomography")
    assert "replicas" not in dep["spec"]
    strict(dep)
    hpas = {h["spec"]["scaleTargetRef"]["name"] for h in docs.of("HorizontalPodAutoscaler")}
    assert hpas == {f"{RELEASE}-sans"}  # saxs is KEDA's; sans keeps its CPU HPA
    assert docs.get("Deployment", f"{RELEASE}-scan")["spec"]["replicas"] == 1
    # the metrics KEDA reads are served by the gateway
    assert env_of(container(docs.get("Deployment", f"{RELEASE}-gateway")))["PANREDUCE_METRICS_PORT"] == "9090"


def test_keda_settings_that_cannot_work_are_refused():
    with pytest.raises(Exception, match="serverAddress"):
        render_chart({"keda": {"enabled": True}})
    with pytest.raises(Exception, match=r"metrics.enabled"):
        render_chart(KEDA, {"metrics": {"enabled": False}})
    with pytest.raises(Exception, match="not an enabled technique"):
        render_chart(KEDA, {"keda": {"techniques": ["xrd"]}})
    # an HPA cannot scale to zero: only KEDA may
    with pytest.raises(Exception, match="only KEDA scales to zero"):
        render_chart({"techniques": {"tomography": {"autoscaling": {"enabled": True, "minReplicas": 0}}}})
    with pytest.raises(Exception, match=r"labelMatchers|pattern"):
        render_chart(KEDA, {"keda": {"prometheus": {"labelMatchers": "namespace=panreduce"}}})
    with pytest.raises(Exception, match=r"gateway.autoscaling.minReplicas|minimum"):
        render_chart({"gateway": {"autoscaling": {"minReplicas": 0}}})


# -- ServiceMonitor -----------------------------------------------------------------------------
def test_service_monitor_scrapes_the_gateway_and_the_services():
    docs = render_chart({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    svc = docs.get("Service", f"{RELEASE}-metrics")
    strict(svc)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    sel = {"matchLabels": svc["spec"]["selector"]}
    deps = docs.deployments()
    for name, dep in deps.items():
        # every pod with a metrics port, and no other
        has_port = any(p["name"] == "metrics" for p in container(dep)["ports"])
        assert selects(sel, labels_of(dep)) == has_port, name
    assert not selects(sel, labels_of(deps[f"{RELEASE}-web"]))
    sm = docs.get("ServiceMonitor", f"{RELEASE}-metrics")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert selects(sm["spec"]["selector"], svc["metadata"]["labels"])
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["panreduce"]}
    (ep,) = sm["spec"]["endpoints"]
    assert ep["port"] == "metrics" and ep["path"] == "/metrics" and ep["interval"] == "15s"
    assert not render_chart().of("ServiceMonitor")
    assert not render_chart({"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}).of("ServiceMonitor")


# -- Gateway API and cert-manager for the gateway -------------------------------------------------
def test_grpc_route_to_the_gateway():
    refs = [{"name": "facility", "namespace": "gateway-system", "sectionName": "grpcs"}]
    docs = render_chart({"gateway": {"grpcRoute": {"enabled": True, "parentRefs": refs, "hostnames": ["pr.org"]}}})
    route = docs.get("GRPCRoute", f"{RELEASE}-gateway")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == refs and route["spec"]["hostnames"] == ["pr.org"]
    (rule,) = route["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": f"{RELEASE}-gateway", "port": 50050}]
    with pytest.raises(Exception, match="parentRefs"):
        render_chart({"gateway": {"grpcRoute": {"enabled": True}}})
    with pytest.raises(Exception, match="name"):
        render_chart({"gateway": {"grpcRoute": {"enabled": True, "parentRefs": [{"sectionName": "x"}]}}})


def test_cert_manager_certificate_for_the_gateway_tls():
    docs = render_chart(
        {
            "gateway": {
                "tls": {
                    "certManager": {
                        "enabled": True,
                        "issuerRef": {"name": "facility-ca", "kind": "ClusterIssuer"},
                        "dnsNames": ["panreduce.facility.org"],
                    }
                }
            }
        }
    )
    secret = f"{RELEASE}-gateway-tls"
    cert = docs.get("Certificate", secret)
    assert cert["apiVersion"] == "cert-manager.io/v1"
    spec = cert["spec"]
    assert spec["secretName"] == secret
    assert spec["issuerRef"] == {"name": "facility-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert {f"{RELEASE}-gateway", f"{RELEASE}-gateway.panreduce.svc", "panreduce.facility.org"} <= set(spec["dnsNames"])
    assert spec["usages"] == ["server auth"]
    # the gateway serves TLS from it (TCP probes), the web page and the helm test trust its CA
    gw = docs.get("Deployment", f"{RELEASE}-gateway")
    env = env_of(container(gw))
    assert env["PANREDUCE_TLS_CERT"] == "/etc/panreduce/tls/tls.crt"
    vols = {v["name"]: v for v in pod_spec(gw)["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == secret
    assert "tcpSocket" in container(gw)["readinessProbe"]
    web = docs.get("Deployment", f"{RELEASE}-web")
    assert env_of(container(web))["PANREDUCE_TLS_CA"] == "/etc/panreduce/gateway-tls/ca.crt"
    assert {v["name"]: v for v in pod_spec(web)["volumes"]}["gateway-tls"]["secret"]["secretName"] == secret
    test = docs.get("Pod", f"{RELEASE}-test-describe")
    assert env_of(test["spec"]["containers"][0])["PANREDUCE_TLS_CA"] == "/etc/panreduce/tls/ca.crt"
    # an existing Secret wins: no Certificate
    docs = render_chart({"gateway": {"tls": {"existingSecret": "own", "certManager": {"enabled": True}}}})
    assert not docs.of("Certificate")
    with pytest.raises(Exception, match=r"issuerRef.name"):
        render_chart({"gateway": {"tls": {"certManager": {"enabled": True}}}})


# -- NetworkPolicy --------------------------------------------------------------------------------
def test_gateway_admits_only_named_sources():
    peers = [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "beamline"}}},
        {"podSelector": {"matchLabels": {"app": "workflow"}}},
        {"ipBlock": {"cidr": "10.20.0.0/16", "except": ["10.20.5.0/24"]}},
    ]
    docs = render_chart({"networkPolicy": {"gatewayFrom": peers, "webFrom": []}})
    gw = docs.get("NetworkPolicy", f"{RELEASE}-gateway")
    strict(gw, docs.get("NetworkPolicy", f"{RELEASE}-web"))
    (rule,) = [r for r in gw["spec"]["ingress"] if r["ports"][0]["port"] == "grpc"]
    for p in peers:
        assert p in rule["from"]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} not in rule["from"]
    web_labels = labels_of(docs.get("Deployment", f"{RELEASE}-web"))
    assert any(selects(p["podSelector"], web_labels) for p in rule["from"] if "podSelector" in p)
    # no sources at all: only the chart's own web and test pods
    docs = render_chart({"networkPolicy": {"gatewayFrom": []}, "web": {"enabled": False}})
    (rule,) = [
        r for r in docs.get("NetworkPolicy", f"{RELEASE}-gateway")["spec"]["ingress"] if r["ports"][0]["port"] == "grpc"
    ]
    assert len(rule["from"]) == 1 and rule["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "test"
    )
    # the web page's own policy: from the ingress controller by default
    web_np = render_chart().get("NetworkPolicy", f"{RELEASE}-web")["spec"]
    assert web_np["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    with pytest.raises(Exception, match=r"additional|namespaceSelectr"):
        render_chart({"networkPolicy": {"gatewayFrom": [{"namespaceSelectr": {}}]}})


# -- arbitrary UIDs ---------------------------------------------------------------------------------
def test_arbitrary_uid_leaves_the_uid_to_the_platform():
    docs = render_chart({"podSecurity": {"arbitraryUid": True}, "retention": {"enabled": True}})
    specs = [pod_spec(d) for d in docs.of("Deployment")] + [d["spec"] for d in docs.of("Pod")]
    specs += [c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in docs.of("CronJob")]
    assert len(specs) >= 14
    for spec in specs:
        psc = spec["securityContext"]
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(psc)
        assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    strict(*docs.of("Deployment"))
    default = pod_spec(render_chart().get("Deployment", f"{RELEASE}-scan"))["securityContext"]
    assert (default["runAsUser"], default["fsGroup"]) == (10001, 10001)


# -- retention ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("job_store", ["sqlite", "postgresql"])
def test_retention_cronjob(job_store):
    values = {"retention": {"enabled": True, "schedule": "5 2 * * 0", "days": 120}}
    if job_store == "postgresql":
        values["jobStore"] = {"type": "postgresql", "postgresql": {"existingSecret": "db", "secretKey": "dsn"}}
    docs = render_chart(values)
    cron = docs.get("CronJob", f"{RELEASE}-retention")
    strict(cron)
    assert cron["spec"]["schedule"] == "5 2 * * 0" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["command"][-2:] == ["panreduce", "retention"]
    assert c["args"] == ["--apply", "--days", "120", "--store", "/var/lib/panreduce/store", "--json"]
    env = env_of(c)
    assert env["PANREDUCE_STORE"] == "/var/lib/panreduce/store"
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/var/lib/panreduce/store" in mounts
    if job_store == "sqlite":
        assert env["PANREDUCE_DB"] == "/var/lib/panreduce/jobs/jobs.sqlite" and "/var/lib/panreduce/jobs" in mounts
        # the ReadWriteOnce job table: beside the gateway
        term = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
        assert selects(term["labelSelector"], labels_of(docs.get("Deployment", f"{RELEASE}-gateway")))
    else:
        assert env["PANREDUCE_DB_DSN"] == {"secretKeyRef": {"name": "db", "key": "dsn"}} and "affinity" not in spec
    assert c["image"] == container(docs.get("Deployment", f"{RELEASE}-gateway"))["image"]
    assert not render_chart().of("CronJob")
    with pytest.raises(Exception, match=r"schedule|pattern"):
        render_chart({"retention": {"enabled": True, "schedule": "daily"}})
    with pytest.raises(Exception, match=r"days|minimum"):
        render_chart({"retention": {"enabled": True, "days": 0}})


# -- helm test: panreduce validate ------------------------------------------------------------------
def test_helm_test_runs_panreduce_validate_through_the_gateway():
    mount = {"name": "expands", "mountPath": "/data/expands", "readOnly": True}
    docs = render_chart(
        {
            "tests": {
                "tokenSecret": {"name": "tt", "key": "token"},
                "validate": {
                    "dataPath": "/data/expands",
                    "extraVolumes": [{"name": "expands", "nfs": {"server": "nfs", "path": "/e", "readOnly": True}}],
                    "extraVolumeMounts": [mount],
                },
            }
        }
    )
    pod = docs.get("Pod", f"{RELEASE}-test-validate")
    strict(pod)
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    assert c["command"][-2:] == ["panreduce", "validate"]
    a = c["args"]
    assert a[a.index("--gateway") + 1] == f"{RELEASE}-gateway:50050"
    assert "--json" in a and "--markdown" in a
    env = env_of(c)
    assert env["PANREDUCE_DATA"] == "/data/expands"
    assert env["PANREDUCE_TOKEN"] == {"secretKeyRef": {"name": "tt", "key": "token"}}
    assert mount in c["volumeMounts"]
    # the Describe check stays
    describe = docs.get("Pod", f"{RELEASE}-test-describe")
    assert "client.techniques()" in describe["spec"]["containers"][0]["args"][0]
    assert not [
        p
        for p in render_chart({"tests": {"validate": {"enabled": False}}}).of("Pod")
        if "validate" in p["metadata"]["name"]
    ]
    assert re.match(r"^\d+Gi$", c["resources"]["requests"]["ephemeral-storage"])
