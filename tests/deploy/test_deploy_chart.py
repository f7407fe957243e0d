"""charts/panreduce, rendered in-process: scheduling, probes, network policy, storage, secrets."""

from __future__ import annotations

import json

import pytest
from deploy_support import CHART, RELEASE, container, env_of, gpu_limit, pod_spec, registered, render_chart, selects

# the technique folders are the one list (docs/techniques.md "Register it")
TECHNIQUES = set(registered())
GPU_CAPABLE = {t for t, gpu in registered().items() if gpu}


def technique_deployments(docs) -> dict[str, dict]:
    return {
        d["metadata"]["labels"]["panreduce.io/technique"]: d
        for d in docs.of("Deployment")
        if "panreduce.io/technique" in d["metadata"]["labels"]
    }


def has_gpu_scheduling(dep: dict) -> bool:
    spec = pod_spec(dep)
    return (
        any(k.startswith("nvidia.com/") for k in (spec.get("nodeSelector") or {}))
        or any(str(t.get("key", "")).startswith("nvidia.com/") for t in spec.get("tolerations") or [])
        or container(dep)["image"].endswith("-cuda")
    )


# -- GPU scheduling ---------------------------------------------------------------------------
def test_default_values_deploy_every_technique_on_cpu(default_render):
    deps = technique_deployments(default_render)
    assert set(deps) == TECHNIQUES
    for name, dep in deps.items():
        assert gpu_limit(container(dep)) == 0, name
        assert not has_gpu_scheduling(dep), name
        assert "runtimeClassName" not in pod_spec(dep), name
        assert container(dep)["image"] == f"localhost/panreduce/{name}:0.1.0"


def test_gpu_values_put_only_gpu_capable_services_on_gpu_nodes(gpu_render):
    deps = technique_deployments(gpu_render)
    requesting = {n for n, d in deps.items() if gpu_limit(container(d)) > 0}
    assert requesting == GPU_CAPABLE
    for name, dep in deps.items():
        spec, c = pod_spec(dep), container(dep)
        if name in GPU_CAPABLE:
            assert gpu_limit(c) == 1
            assert spec["nodeSelector"]["nvidia.com/gpu.present"] == "true"
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
            assert spec["runtimeClassName"] == "nvidia"
            assert c["image"] == f"localhost/panreduce/{name}:0.1.0-cuda"
            # the GPU warm-up: at least 10 minutes before the kubelet gives up on startup
            sp = c["startupProbe"]
            assert sp["periodSeconds"] * sp["failureThreshold"] >= 600
        else:
            assert gpu_limit(c) == 0 and not has_gpu_scheduling(dep), name
            assert "runtimeClassName" not in spec
            sp = c["startupProbe"]
            assert sp["periodSeconds"] * sp["failureThreshold"] < 600
    gateway = gpu_render.get("Deployment", f"{RELEASE}-gateway")
    assert gpu_limit(container(gateway)) == 0 and not has_gpu_scheduling(gateway)


def test_gpu_scheduling_follows_the_request_not_the_name(render):
    """A CPU technique given a GPU gets GPU scheduling; a GPU-capable one without does not."""
    docs = render({"techniques": {"saxs": {"resources": {"limits": {"nvidia.com/gpu": 2}}}}})
    deps = technique_deployments(docs)
    assert gpu_limit(container(deps["saxs"])) == 2 and has_gpu_scheduling(deps["saxs"])
    assert not has_gpu_scheduling(deps["tomography"])


def test_own_node_selector_and_tolerations_are_kept_with_gpu_ones(render):
    docs = render(
        {
            "techniques": {
                "tomography": {
                    "nodeSelector": {"facility.org/zone": "beamline"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "tomo", "effect": "NoSchedule"}],
                    "priorityClassName": "panreduce-high",
                    "affinity": {"podAntiAffinity": {}},
                }
            }
        },
        gpu=True,
    )
    spec = pod_spec(technique_deployments(docs)["tomography"])
    assert spec["nodeSelector"] == {"facility.org/zone": "beamline", "nvidia.com/gpu.present": "true"}
    assert [t["key"] for t in spec["tolerations"]] == ["dedicated", "nvidia.com/gpu"]
    assert spec["priorityClassName"] == "panreduce-high"
    assert spec["affinity"] == {"podAntiAffinity": {}}


# -- probes, signals, security ------------------------------------------------------------------
@pytest.mark.parametrize("values", ["default", "gpu"])
def test_every_probe_is_native_grpc_on_the_serving_port(values, default_render, gpu_render):
    docs = default_render if values == "default" else gpu_render
    for name, dep in docs.deployments(web=False).items():
        c = container(dep)
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert c[probe]["grpc"] == {"port": grpc_port}, (name, probe)
            assert not {"httpGet", "exec", "tcpSocket"} & set(c[probe]), (name, probe)
        assert int(env_of(c)["PANREDUCE_PORT"]) == grpc_port


def test_drain_fits_in_the_grace_period(default_render):
    deps = default_render.deployments(web=False)
    gateway = deps.pop(f"{RELEASE}-gateway")
    assert len(deps) == len(TECHNIQUES)
    for name, dep in deps.items():
        drain = float(env_of(container(dep))["PANREDUCE_DRAIN_SECONDS"])
        assert 0 < drain < pod_spec(dep)["terminationGracePeriodSeconds"], name
    assert pod_spec(gateway)["terminationGracePeriodSeconds"] > 30  # the gateway drains for 30 s
    with pytest.raises(Exception, match="drainSeconds must be below"):
        render_chart({"techniques": {"scan": {"drainSeconds": 90, "terminationGracePeriodSeconds": 60}}})
    with pytest.raises(Exception, match="terminationGracePeriodSeconds"):
        render_chart({"gateway": {"terminationGracePeriodSeconds": 20}})


def test_secure_pod_defaults(default_render):
    pods = [pod_spec(d) for d in default_render.of("Deployment")] + [d["spec"] for d in default_render.of("Pod")]
    # the techniques, the gateway, the web page, the helm test pods (Describe, validate)
    assert len(pods) == len(TECHNIQUES) + 4
    for spec in pods:
        assert spec["automountServiceAccountToken"] is False
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert "memory" in c["resources"]["limits"]
            # read-only root: /tmp is a volume
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


# -- services, routes, network policy -------------------------------------------------------------
def test_gateway_routes_to_the_service_names(default_render):
    routes = dict(
        r.split("=", 1)
        for r in env_of(container(default_render.get("Deployment", f"{RELEASE}-gateway")))["PANREDUCE_ROUTES"].split(
            ","
        )
    )
    assert set(routes) == TECHNIQUES
    services = {s["metadata"]["name"]: s for s in default_render.of("Service")}
    for name, address in routes.items():
        deployment = technique_deployments(default_render)[name]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        host, port = address.removeprefix("dns:///").rsplit(":", 1)
        svc = services[host]
        assert selects({"matchLabels": svc["spec"]["selector"]}, pod_labels)
        assert int(port) == svc["spec"]["ports"][0]["port"] == 50051
        sharded = address.startswith("dns:///")
        # sharded techniques: through the headless Service (every replica's address)
        assert (svc["spec"].get("clusterIP") == "None") == sharded
        assert host.endswith("-headless") == sharded
    assert routes["tomography"] == f"dns:///{RELEASE}-tomography-headless:50051"


def test_unsharded_technique_is_routed_through_its_cluster_ip_service(render):
    docs = render({"techniques": {"scan": {"sharded": False}}})
    routes = env_of(container(docs.get("Deployment", f"{RELEASE}-gateway")))["PANREDUCE_ROUTES"].split(",")
    assert f"scan={RELEASE}-scan:50051" in routes
    assert [s["metadata"]["name"] for s in docs.of("Service") if "scan" in s["metadata"]["name"]] == [f"{RELEASE}-scan"]
    assert docs.get("Service", f"{RELEASE}-scan")["spec"]["type"] == "ClusterIP"


def test_disabled_technique_is_gone_everywhere(render):
    docs = render({"techniques": {"sans": {"enabled": False}}})
    assert "sans" not in technique_deployments(docs)
    assert not [s for s in docs.of("Service") if "sans" in s["metadata"]["name"]]
    routes = env_of(container(docs.get("Deployment", f"{RELEASE}-gateway")))["PANREDUCE_ROUTES"]
    assert "sans=" not in routes and "scan=" in routes
    test_pod = docs.of("Pod")[0]
    assert "sans" not in test_pod["spec"]["containers"][0]["args"][-1].split(",")


def test_network_policy_lets_only_the_gateway_reach_services(default_render):
    policies = {p["metadata"]["name"]: p["spec"] for p in default_render.of("NetworkPolicy")}
    services = policies[f"{RELEASE}-services"]
    deps = default_render.deployments(web=False)
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deps.items()}
    gateway_labels = labels.pop(f"{RELEASE}-gateway")
    # the policy covers every technique pod, not the gateway
    assert all(selects(services["podSelector"], lab) for lab in labels.values())
    assert not selects(services["podSelector"], gateway_labels)
    assert services["policyTypes"] == ["Ingress"]
    grpc_rules = [r for r in services["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"]]
    assert len(grpc_rules) == 1
    (peer,) = grpc_rules[0]["from"]
    assert set(peer) == {"podSelector"}  # pods of this namespace only
    assert selects(peer["podSelector"], gateway_labels)
    assert not any(selects(peer["podSelector"], lab) for lab in labels.values())
    test_pod_labels = default_render.of("Pod")[0]["metadata"]["labels"]
    assert not selects(peer["podSelector"], test_pod_labels)
    # every other rule is for metrics only
    for rule in services["ingress"]:
        if rule is not grpc_rules[0]:
            assert [p["port"] for p in rule["ports"]] == ["metrics"]
    # the gateway itself: its gRPC port only from named sources (the ingress controller's
    # namespace, the web page, the helm test pods), never from everyone
    gw = policies[f"{RELEASE}-gateway"]
    assert selects(gw["podSelector"], gateway_labels)
    assert all("from" in r for r in gw["ingress"])
    (rule,) = [r for r in gw["ingress"] if r["ports"] == [{"port": "grpc", "protocol": "TCP"}]]
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}} in rule["from"]
    web_labels = default_render.get("Deployment", f"{RELEASE}-web")["spec"]["template"]["metadata"]["labels"]
    admitted = [p["podSelector"] for p in rule["from"] if "podSelector" in p]
    assert any(selects(s, web_labels) for s in admitted)
    assert any(selects(s, test_pod_labels) for s in admitted)
    assert not any(selects(s, labels[f"{RELEASE}-scan"]) for s in admitted)


def test_restricted_gateway_still_admits_the_helm_test(render):
    docs = render({"networkPolicy": {"gatewayFrom": [{"namespaceSelector": {"matchLabels": {"team": "beamline"}}}]}})
    gw = next(p for p in docs.of("NetworkPolicy") if p["metadata"]["name"].endswith("-gateway"))
    (rule,) = [r for r in gw["spec"]["ingress"] if r["ports"][0]["port"] == "grpc"]
    test_labels = docs.of("Pod")[0]["metadata"]["labels"]
    assert {"namespaceSelector": {"matchLabels": {"team": "beamline"}}} in rule["from"]
    assert any("podSelector" in p and selects(p["podSelector"], test_labels) for p in rule["from"])


def test_helm_test_hook_calls_describe_through_the_gateway(default_render):
    pod = default_render.get("Pod", f"{RELEASE}-test-describe")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (c,) = pod["spec"]["containers"]
    gateway_svc = default_render.get("Service", f"{RELEASE}-gateway")
    script, address, expected = c["args"]
    assert address == f"{gateway_svc['metadata']['name']}:{gateway_svc['spec']['ports'][0]['port']}"
    assert set(expected.split(",")) == TECHNIQUES
    assert "client.techniques()" in script  # Describe
    assert c["image"] == container(default_render.get("Deployment", f"{RELEASE}-gateway"))["image"]
    compile(script, "helm-test", "exec")


def test_pdb_and_hpa(render, gpu_render):
    deps = gpu_render.deployments()
    for pdb in gpu_render.of("PodDisruptionBudget"):
        dep = deps[pdb["metadata"]["name"]]
        assert selects(pdb["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
        assert pdb["spec"]["maxUnavailable"] == 1
    assert {p["metadata"]["name"] for p in gpu_render.of("PodDisruptionBudget")} == set(deps)
    (hpa,) = gpu_render.of("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"{RELEASE}-ptychography"}
    assert "replicas" not in deps[target["name"]]["spec"]  # the HPA owns the replica count
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 50
    assert deps[f"{RELEASE}-tomography"]["spec"]["replicas"] == 2


# -- storage and secrets ----------------------------------------------------------------------------
def test_sqlite_job_store_on_a_volume_with_one_gateway(default_render):
    gw = default_render.get("Deployment", f"{RELEASE}-gateway")
    c = container(gw)
    assert env_of(c)["PANREDUCE_DB"] == "/var/lib/panreduce/jobs/jobs.sqlite"
    assert {"name": "jobs", "mountPath": "/var/lib/panreduce/jobs"} in c["volumeMounts"]
    claim = next(v for v in pod_spec(gw)["volumes"] if v["name"] == "jobs")["persistentVolumeClaim"]["claimName"]
    pvc = default_render.get("PersistentVolumeClaim", claim)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert gw["spec"]["strategy"] == {"type": "Recreate"} and gw["spec"]["replicas"] == 1
    with pytest.raises(Exception, match="one gateway replica"):
        render_chart({"gateway": {"replicas": 2}})


def test_service_token_secret_is_mounted_into_the_gateway_and_every_service(default_render, render):
    import base64

    (secret,) = [s for s in default_render.of("Secret") if s["metadata"]["name"] == f"{RELEASE}-service-token"]
    token = base64.b64decode(secret["data"]["token"]).decode()
    assert len(token) >= 32 and token.isalnum()  # random, long
    pods = [default_render.get("Deployment", f"{RELEASE}-gateway"), *technique_deployments(default_render).values()]
    for dep in pods:
        c = container(dep)
        assert env_of(c)["PANREDUCE_SERVICE_TOKEN_FILE"] == "/etc/panreduce/service-token/token"
        assert {"name": "service-token", "mountPath": "/etc/panreduce/service-token", "readOnly": True} in c[
            "volumeMounts"
        ]
        volume = next(v for v in pod_spec(dep)["volumes"] if v["name"] == "service-token")
        assert volume["secret"]["secretName"] == f"{RELEASE}-service-token"
    for dep in technique_deployments(default_render).values():
        assert env_of(container(dep))["PANREDUCE_HOST"] == "0.0.0.0"  # pods listen beyond loopback
    given = render({"serviceToken": {"value": "a-given-token-0123456789"}})
    (secret,) = [s for s in given.of("Secret") if s["metadata"]["name"] == f"{RELEASE}-service-token"]
    assert base64.b64decode(secret["data"]["token"]).decode() == "a-given-token-0123456789"
    existing = render({"serviceToken": {"existingSecret": "facility-token", "secretKey": "t"}})
    assert not [s for s in existing.of("Secret") if "service-token" in s["metadata"]["name"]]
    gw = existing.get("Deployment", f"{RELEASE}-gateway")
    assert (
        next(v for v in pod_spec(gw)["volumes"] if v["name"] == "service-token")["secret"]["secretName"]
        == "facility-token"
    )
    assert env_of(container(gw))["PANREDUCE_SERVICE_TOKEN_FILE"] == "/etc/panreduce/service-token/t"
    with pytest.raises(Exception, match="serviceToken"):
        render_chart({"serviceToken": {"value": "short"}})


def test_postgresql_job_store_from_a_secret(render):
    docs = render(
        {
            "jobStore": {"type": "postgresql", "postgresql": {"existingSecret": "pg", "secretKey": "uri"}},
            "gateway": {"autoscaling": {"enabled": True}},
        }
    )
    gw = docs.get("Deployment", f"{RELEASE}-gateway")
    assert env_of(container(gw))["PANREDUCE_DB_DSN"] == {"secretKeyRef": {"name": "pg", "key": "uri"}}
    assert "PANREDUCE_DB" not in env_of(container(gw))
    assert not [p for p in docs.of("PersistentVolumeClaim") if p["metadata"]["name"].endswith("-jobs")]
    assert gw["spec"]["strategy"]["type"] == "RollingUpdate"
    assert [h["spec"]["scaleTargetRef"]["name"] for h in docs.of("HorizontalPodAutoscaler")] == [f"{RELEASE}-gateway"]
    with pytest.raises(Exception, match="existingSecret"):
        render_chart({"jobStore": {"type": "postgresql"}})


def test_shared_store_is_mounted_at_the_same_path_everywhere(default_render):
    claims = set()
    for name, dep in default_render.deployments(web=False).items():
        c = container(dep)
        assert env_of(c)["PANREDUCE_STORE"] == "/var/lib/panreduce/store"
        assert {"name": "store", "mountPath": "/var/lib/panreduce/store"} in c["volumeMounts"], name
        claims.add(
            next(v for v in pod_spec(dep)["volumes"] if v["name"] == "store")["persistentVolumeClaim"]["claimName"]
        )
    (claim,) = claims
    assert default_render.get("PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("how", ["existing", "created"])
def test_s3_settings_and_credentials_from_a_secret(render, how):
    s3 = {
        "enabled": True,
        "endpoint": "https://s3.facility.org",
        "region": "eu-1",
        "buckets": ["raw", "reduced"],
        "resultsUri": "s3://reduced/results",
    }
    s3 |= {"existingSecret": "facility-s3"} if how == "existing" else {"accessKeyId": "AK", "secretAccessKey": "SK"}
    docs = render({"s3": s3})
    secrets = [
        s
        for s in docs.of("Secret")
        if s["metadata"]["name"] not in (f"{RELEASE}-service-token", f"{RELEASE}-scope-key")
    ]
    name = "facility-s3" if how == "existing" else f"{RELEASE}-s3"
    if how == "existing":
        assert secrets == []
    else:
        (secret,) = secrets
        assert secret["metadata"]["name"] == name
        assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}
    for dep in docs.deployments(web=False).values():
        env = env_of(container(dep))
        # the names panreduce.s3.S3Config.from_env and Stores read
        assert env["PANREDUCE_S3_ENDPOINT"] == "https://s3.facility.org"
        assert env["PANREDUCE_S3_REGION"] == "eu-1"
        assert env["PANREDUCE_S3_BUCKETS"] == "raw,reduced"
        assert env["PANREDUCE_S3_ALLOW_HTTP"] == "false"
        assert env["PANREDUCE_RESULTS_URI"] == "s3://reduced/results"
        assert env["PANREDUCE_S3_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": name, "key": "AWS_ACCESS_KEY_ID"}}
        assert env["PANREDUCE_S3_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": name, "key": "AWS_SECRET_ACCESS_KEY"}}
        # credentials never as plain values in a pod spec
        assert "SK" not in json.dumps(dep)
    with pytest.raises(Exception, match="s3"):
        render_chart({"s3": {"enabled": True, "endpoint": "https://x"}})


def test_s3_environment_configures_the_real_s3_store(default_render, render):
    """The pods' S3 environment, given to the platform's own configuration reader."""
    from panreduce.s3 import S3Config

    docs = render(
        {
            "s3": {
                "enabled": True,
                "endpoint": "http://rgw.facility.org:7480",
                "allowHttp": True,
                "buckets": ["raw"],
                "existingSecret": "s3",
            }
        }
    )
    env = {k: v for k, v in env_of(container(docs.get("Deployment", f"{RELEASE}-scan"))).items() if isinstance(v, str)}
    env |= {"PANREDUCE_S3_ACCESS_KEY_ID": "AK", "PANREDUCE_S3_SECRET_ACCESS_KEY": "SK"}  # from the Secret
    config = S3Config.from_env(env)
    assert config is not None and config.endpoint == "http://rgw.facility.org:7480"
    assert config.allow_http is True and config.buckets == ("raw",) and config.access_key_id == "AK"
    # without s3.enabled the pods carry no S3 settings: S3 stays off
    plain = {
        k: v
        for k, v in env_of(container(default_render.get("Deployment", f"{RELEASE}-scan"))).items()
        if isinstance(v, str)
    }
    assert S3Config.from_env(plain) is None


def test_gateway_access_control_and_tls(render):
    docs = render(
        {
            "gateway": {
                "auth": {
                    "tokensSecret": {"name": "toks", "key": "t.json"},
                    "jwks": "https://idp/certs",
                    "allowedPrefixes": ["s3://raw/{proposal}/"],
                },
                "tls": {"existingSecret": "gw-tls"},
            },
            "tests": {"tokenSecret": {"name": "test-token", "key": "token"}},
        }
    )
    gw = docs.get("Deployment", f"{RELEASE}-gateway")
    c, env = container(gw), env_of(container(gw))
    assert env["PANREDUCE_TOKENS_FILE"] == "/etc/panreduce/tokens/t.json"
    assert env["PANREDUCE_JWKS"] == "https://idp/certs"
    assert env["PANREDUCE_ALLOWED_PREFIXES"] == "s3://raw/{proposal}/"
    assert (env["PANREDUCE_TLS_CERT"], env["PANREDUCE_TLS_KEY"]) == (
        "/etc/panreduce/tls/tls.crt",
        "/etc/panreduce/tls/tls.key",
    )
    volumes = {v["name"]: v for v in pod_spec(gw)["volumes"]}
    assert volumes["tokens"]["secret"]["secretName"] == "toks" and volumes["tls"]["secret"]["secretName"] == "gw-tls"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/panreduce/tokens"]["readOnly"] and mounts["/etc/panreduce/tls"]["readOnly"]
    # the kubelet's gRPC probe speaks no TLS: TCP probes on the gateway, gRPC ones elsewhere
    assert all(c[p].get("tcpSocket") == {"port": 50050} for p in ("startupProbe", "livenessProbe", "readinessProbe"))
    assert "grpc" in container(docs.get("Deployment", f"{RELEASE}-scan"))["livenessProbe"]
    test_pod = docs.get("Pod", f"{RELEASE}-test-describe")
    tenv = env_of(test_pod["spec"]["containers"][0])
    assert tenv["PANREDUCE_TOKEN"] == {"secretKeyRef": {"name": "test-token", "key": "token"}}
    assert tenv["PANREDUCE_TLS_CA"] == "/etc/panreduce/tls/ca.crt"


def test_ingress_for_grpc_with_tls(render):
    docs = render(
        {
            "gateway": {
                "ingress": {
                    "enabled": True,
                    "className": "nginx",
                    "tls": [{"secretName": "pr-tls", "hosts": ["panreduce.example.org"]}],
                }
            }
        }
    )
    (ing,) = docs.of("Ingress")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPC"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{RELEASE}-gateway", "port": {"name": "grpc"}}
    assert ing["spec"]["tls"][0]["secretName"] == "pr-tls"


def test_metrics_endpoints_are_declared_and_annotated(default_render, render):
    for dep in default_render.deployments(web=False).values():
        c = container(dep)
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
        assert env_of(c)["PANREDUCE_METRICS_PORT"] == "9090"
        ann = dep["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9090"
    off = render({"metrics": {"enabled": False}})
    for dep in off.deployments(web=False).values():
        assert env_of(container(dep))["PANREDUCE_METRICS_PORT"] == "0"
        assert "annotations" not in dep["spec"]["template"]["metadata"]


# -- the values schema ----------------------------------------------------------------------------
def test_values_schema_documents_every_property():
    schema = json.loads((CHART / "values.schema.json").read_text())
    undocumented = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and "description" not in sub and "$ref" not in sub:
                undocumented.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
        for defname, sub in (node.get("definitions") or {}).items():
            if "description" not in sub:
                undocumented.append(f"definitions.{defname}")
            walk(sub, f"definitions.{defname}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], path + ".*")

    walk(schema, "")
    assert undocumented == []


@pytest.mark.parametrize(
    "bad, complaint",
    [
        ({"techniques": {"scan": {"replicass": 2}}}, "replicass"),
        ({"techniques": {"tomography": {"resources": {"limits": {"nvidia.com/gpu": "one"}}}}}, "nvidia.com~1gpu"),
        ({"jobStore": {"type": "mysql"}}, "jobStore"),
        ({"logFormat": "xml"}, "logFormat"),
        ({"gateway": {"port": 70000}}, "port"),
    ],
)
def test_schema_refuses_bad_values(bad, complaint):
    with pytest.raises(Exception, match=complaint.replace(".", r"\.")):
        render_chart(bad)


def test_values_yaml_and_gpu_values_validate_against_the_schema():
    import helm_python
    import yaml

    with helm_python.Chart.load(str(CHART)) as chart:
        chart.validate_schema(yaml.safe_load((CHART / "values.yaml").read_text()))
        chart.validate_schema(chart.merge_values(yaml.safe_load((CHART / "values-gpu.yaml").read_text())))


def test_routes_can_be_added_or_replaced(render):
    docs = render({"gateway": {"routes": {"scan": "scan.other-cluster.org:443", "xrd": "xrd-svc:50051"}}})
    routes = env_of(container(docs.get("Deployment", f"{RELEASE}-gateway")))["PANREDUCE_ROUTES"].split(",")
    assert "scan=scan.other-cluster.org:443" in routes and "xrd=xrd-svc:50051" in routes
    assert len(routes) == len(TECHNIQUES) + 1
    with pytest.raises(Exception, match="routes"):
        render_chart({"gateway": {"routes": {"scan": "no-port"}}})


def test_podman_rehearsal_values_give_the_gateway_and_scan_sharing_one_store(render):
    import yaml

    docs = render(yaml.safe_load((CHART / "values-rehearsal.yaml").read_text()))
    deps = docs.deployments()
    assert set(deps) == {f"{RELEASE}-gateway", f"{RELEASE}-scan"}
    gw_env = env_of(container(deps[f"{RELEASE}-gateway"]))
    # podman kube play names the first pod of a Deployment <name>-pod-0
    assert gw_env["PANREDUCE_ROUTES"] == f"scan={RELEASE}-scan-pod-0:50051"
    claims = {
        next(v for v in pod_spec(d)["volumes"] if v["name"] == "store")["persistentVolumeClaim"]["claimName"]
        for d in deps.values()
    }
    assert len(claims) == 1  # one podman volume: uploads to the gateway reach the service
    # podman 4.3 publishes containerPorts on the host: one port per pod
    assert all(len(container(d)["ports"]) == 1 for d in deps.values())
    assert docs.of("Pod") == [] and docs.of("NetworkPolicy") == []
