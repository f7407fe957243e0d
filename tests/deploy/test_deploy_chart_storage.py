"""charts/panreduce: extra volumes (beamline filesystems), the store on block storage (S3 +
per-pod scratch counted as ephemeral-storage), and the schema's resource names and quantities."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from deploy_support import CHART, RELEASE, container, pod_spec, render_chart

S3 = {
    "enabled": True,
    "endpoint": "https://s3.facility.org",
    "existingSecret": "facility-s3",
    "resultsUri": "s3://reduced/results",
    "scratchUri": "s3://reduced/shards",
    "uploadsUri": "s3://reduced/uploads",
}
BEAMLINE = {"name": "beamline", "nfs": {"server": "nfs.facility.org", "path": "/dls/i22/data", "readOnly": True}}
PROCESSED = {"name": "processed", "persistentVolumeClaim": {"claimName": "i22-processed"}}


def techniques(docs) -> dict[str, dict]:
    return {
        d["metadata"]["labels"]["panreduce.io/technique"]: d
        for d in docs.of("Deployment")
        if "panreduce.io/technique" in d["metadata"]["labels"]
    }


def gateway(docs) -> dict:
    return docs.get("Deployment", f"{RELEASE}-gateway")


def mounts(dep) -> dict[str, dict]:
    return {m["mountPath"]: m for m in container(dep)["volumeMounts"]}


def volumes(dep) -> dict[str, dict]:
    return {v["name"]: v for v in pod_spec(dep)["volumes"]}


# -- extra volumes ------------------------------------------------------------------------------
def test_beamline_volume_in_every_technique_pod_not_in_the_gateway(render):
    docs = render(
        {
            "extraVolumes": [BEAMLINE, PROCESSED],
            "extraVolumeMounts": [
                {"name": "beamline", "mountPath": "/dls/i22/data", "readOnly": True},
                {"name": "processed", "mountPath": "/dls/i22/processed", "readOnly": False},
            ],
            "techniques": {
                "saxs": {
                    "extraVolumes": [{"name": "calib", "configMap": {"name": "i22-calibration"}}],
                    "extraVolumeMounts": [{"name": "calib", "mountPath": "/etc/i22", "readOnly": True}],
                }
            },
        }
    )
    deps = techniques(docs)
    assert len(deps) >= 9
    for name, dep in deps.items():
        m, v = mounts(dep), volumes(dep)
        assert m["/dls/i22/data"] == {"name": "beamline", "mountPath": "/dls/i22/data", "readOnly": True}, name
        assert m["/dls/i22/processed"]["readOnly"] is False
        assert v["beamline"]["nfs"] == BEAMLINE["nfs"] and v["processed"] == PROCESSED
        # only saxs has its own calibration mount
        assert ("/etc/i22" in m) == (name == "saxs") and ("calib" in v) == (name == "saxs"), name
    # the gateway checks path inputs by name: it mounts none of the data
    gw = gateway(docs)
    assert not {"beamline", "processed", "calib"} & set(volumes(gw))
    assert not any(p.startswith("/dls") for p in mounts(gw))


def test_gateway_has_its_own_extra_volumes(render):
    docs = render(
        {
            "gateway": {
                "extraVolumes": [{"name": "ca", "secret": {"secretName": "facility-ca"}}],
                "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/facility-ca", "readOnly": True}],
            }
        }
    )
    assert volumes(gateway(docs))["ca"] == {"name": "ca", "secret": {"secretName": "facility-ca"}}
    assert mounts(gateway(docs))["/etc/facility-ca"]["readOnly"] is True
    assert all("ca" not in volumes(d) for d in techniques(docs).values())


def _mount(name="beamline", path="/dls/i22/data", **kw):
    return {"name": name, "mountPath": path, "readOnly": True, **kw}


@pytest.mark.parametrize(
    "values, complaint",
    [
        # hostPath breaks the restricted pod security level unless the operator allows it
        (
            {
                "extraVolumes": [{"name": "h", "hostPath": {"path": "/data"}}],
                "extraVolumeMounts": [_mount("h", "/data")],
            },
            "hostPath volume, refused",
        ),
        ({"extraVolumeMounts": [_mount()]}, "mounts no volume"),
        ({"extraVolumes": [{"name": "tmp", "emptyDir": {}}]}, "chart's own volume"),
        ({"extraVolumes": [BEAMLINE], "techniques": {"scan": {"extraVolumes": [BEAMLINE]}}}, "given twice"),
        # over the chart's own mounts: scratch, the store, the credentials
        (
            {"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(path="/tmp/data")]},
            "overlaps the chart's own mount /tmp",
        ),
        ({"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(path="/var/lib/panreduce")]}, "overlaps"),
        ({"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(path="/etc/panreduce/service-token")]}, "overlaps"),
        ({"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(path="/")]}, "cannot be mounted on /"),
        ({"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(), _mount(path="/dls/i22/data/")]}, "two mounts"),
        # the schema: one source per volume, readOnly said explicitly, no '..'
        ({"extraVolumes": [{**BEAMLINE, "emptyDir": {}}]}, "maxProperties"),
        ({"extraVolumes": [{"name": "x", "gitRepo": {"repository": "https://x"}}]}, "gitRepo"),
        ({"extraVolumes": [BEAMLINE], "extraVolumeMounts": [{"name": "beamline", "mountPath": "/dls"}]}, "readOnly"),
        ({"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(path="/dls/../etc")]}, "mountPath"),
        ({"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(subPath="../../etc")]}, "subPath"),
        (
            {"extraVolumes": [BEAMLINE], "extraVolumeMounts": [_mount(mountPropagation="Bidirectional")]},
            "mountPropagation",
        ),
    ],
)
def test_bad_extra_volumes_are_refused(values, complaint):
    with pytest.raises(Exception, match=complaint):
        render_chart(values)


def test_host_path_when_allowed(render):
    docs = render(
        {
            "allowHostPath": True,
            "extraVolumes": [{"name": "h", "hostPath": {"path": "/data", "type": "Directory"}}],
            "extraVolumeMounts": [_mount("h", "/data")],
        }
    )
    assert all(volumes(d)["h"]["hostPath"]["path"] == "/data" for d in techniques(docs).values())


# -- the store ----------------------------------------------------------------------------------
def test_scratch_is_requested_as_ephemeral_storage(default_render, render):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, dep in techniques(default_render).items():
        limit = values["techniques"][name]["scratch"]["sizeLimit"]
        assert volumes(dep)["tmp"]["emptyDir"]["sizeLimit"] == limit
        assert container(dep)["resources"]["requests"]["ephemeral-storage"] == limit, name
    gw = gateway(default_render)
    assert container(gw)["resources"]["requests"]["ephemeral-storage"] == volumes(gw)["tmp"]["emptyDir"]["sizeLimit"]
    for pod in default_render.of("Pod"):  # the helm test
        (c,) = pod["spec"]["containers"]
        assert c["resources"]["requests"]["ephemeral-storage"] == pod["spec"]["volumes"][0]["emptyDir"]["sizeLimit"]
    # an explicit request is kept
    docs = render({"techniques": {"scan": {"resources": {"requests": {"ephemeral-storage": "30Gi"}}}}})
    assert container(techniques(docs)["scan"])["resources"]["requests"]["ephemeral-storage"] == "30Gi"


def test_block_storage_s3_shared_store_and_local_store_in_the_scratch(render):
    docs = render({"s3": S3, "store": {"persistence": {"enabled": False}}})
    assert docs.of("PersistentVolumeClaim") == [] or all(
        p["metadata"]["name"] != f"{RELEASE}-store" for p in docs.of("PersistentVolumeClaim")
    )
    for dep in docs.deployments(web=False).values():
        v, m = volumes(dep), mounts(dep)
        assert "store" not in v
        env = {e["name"]: e.get("value") for e in container(dep).get("env", [])}
        assert env["PANREDUCE_UPLOADS_URI"] == "s3://reduced/uploads"  # uploads go to the bucket
        # one emptyDir, one sizeLimit, one request: scratch and the local store
        assert m["/tmp"] == {"name": "tmp", "mountPath": "/tmp", "subPath": "tmp"}
        assert m["/var/lib/panreduce/store"] == {
            "name": "tmp",
            "mountPath": "/var/lib/panreduce/store",
            "subPath": "store",
        }
        assert container(dep)["resources"]["requests"]["ephemeral-storage"] == v["tmp"]["emptyDir"]["sizeLimit"]


@pytest.mark.parametrize(
    "values, complaint",
    [
        ({"store": {"persistence": {"enabled": False}}}, "every pod its own store"),
        ({"store": {"persistence": {"enabled": False}}, "s3": {**S3, "scratchUri": ""}}, "every pod its own store"),
        # uploads on the gateway's own disk would be unreadable by the services
        ({"store": {"persistence": {"enabled": False}}, "s3": {**S3, "uploadsUri": ""}}, "every pod its own store"),
        (
            {"store": {"persistence": {"enabled": False}}, "s3": {**S3, "resultsUri": "/results"}},
            "every pod its own store",
        ),
        ({"store": {"persistence": {"accessModes": ["ReadWriteOnce"]}}}, "needs ReadWriteMany"),
        ({"store": {"persistence": {"accessModes": ["ReadWriteOnce"]}}, "s3": S3}, "needs ReadWriteMany"),
    ],
)
def test_inconsistent_store_is_refused(values, complaint):
    with pytest.raises(Exception, match=complaint):
        render_chart(values)


def test_one_pod_or_one_node_needs_no_shared_volume(render):
    alone = {t: {"enabled": False} for t in techniques(render_chart())}
    docs = render({"techniques": alone, "store": {"persistence": {"enabled": False}}})
    assert list(docs.deployments(web=False)) == [f"{RELEASE}-gateway"]
    docs = render({"store": {"persistence": {"accessModes": ["ReadWriteOnce"], "singleNode": True}}})
    assert docs.get("PersistentVolumeClaim", f"{RELEASE}-store")["spec"]["accessModes"] == ["ReadWriteOnce"]


# -- the schema: resource names and quantities ----------------------------------------------------
@pytest.mark.parametrize(
    "bad, complaint",
    [
        ({"techniques": {"scan": {"resources": {"limits": {"memroy": "4Gi"}}}}}, "memroy"),
        ({"techniques": {"scan": {"resources": {"requests": {"CPU": "1"}}}}}, "CPU"),
        ({"techniques": {"scan": {"scratch": {"sizeLimit": "lots"}}}}, "sizeLimit"),
        ({"techniques": {"scan": {"resources": {"requests": {"memory": "4 GiB"}}}}}, "memory"),
        ({"techniques": {"scan": {"resources": {"requests": {"cpu": -1}}}}}, "cpu"),
        ({"gateway": {"resources": {"limits": {"memory": "2gb"}}}}, "memory"),
        ({"techniques": {"scan": {"resources": {"limits": {"nvidia.com/mig-1g.10gb": "0.5"}}}}}, "mig-1g"),
        ({"techniques": {"scan": {"scratch": {"sizeLimit": None}}}}, "sizeLimit"),  # null deletes the default
        ({"store": {"persistence": {"size": "big"}}}, "size"),
    ],
)
def test_schema_refuses_resource_typos_and_bad_quantities(bad, complaint):
    with pytest.raises(Exception, match=complaint):
        render_chart(bad)


def test_schema_accepts_quantities_and_extended_resources(render):
    docs = render(
        {
            "techniques": {
                "scan": {
                    "resources": {
                        "requests": {
                            "cpu": "500m",
                            "memory": "1.5Gi",
                            "ephemeral-storage": "10G",
                            "hugepages-2Mi": "1Gi",
                        },
                        "limits": {"cpu": 2, "memory": "1e9", "nvidia.com/mig-1g.10gb": 1, "amd.com/gpu": "1"},
                    }
                }
            }
        }
    )
    res = container(techniques(docs)["scan"])["resources"]
    assert res["requests"]["cpu"] == "500m" and res["limits"]["nvidia.com/mig-1g.10gb"] == 1


def test_rendered_volumes_pass_strict_kubernetes_validation(render, tmp_path):
    docs = render(
        {
            "s3": S3,
            "store": {"persistence": {"enabled": False}},
            "extraVolumes": [BEAMLINE, PROCESSED],
            "extraVolumeMounts": [_mount(), _mount("processed", "/dls/i22/processed")],
        }
    )
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(list(docs)))
    res = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", "1.37.0", str(path)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


# -- the ingress: gRPC bodies and timeouts ----------------------------------------------------------
def _bytes(q: str) -> int:
    units = {"k": 10**3, "m": 10**6, "g": 10**9}
    return int(q[:-1]) * units[q[-1].lower()] if q[-1].lower() in units else int(q)


def test_nginx_ingress_admits_a_100_mib_upload_and_long_streams(render):
    docs = render({"gateway": {"ingress": {"enabled": True, "className": "nginx"}}})
    (ing,) = docs.of("Ingress")
    a = ing["metadata"]["annotations"]
    body = a["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body == "0" or _bytes(body) > 100 * 2**20  # nginx's 1m default refuses it with 413
    assert int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 600
    assert int(a["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 600
    assert _bytes("1m") < 100 * 2**20
