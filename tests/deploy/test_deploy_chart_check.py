"""`make chart-check` (scripts/chart-check.py): Helm 3 CLI lint/template, Helm 4 engine,
kubernetes-validate --strict; and proof that each of its checks can fail."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys

import pytest
import yaml
from deploy_support import CHART, GPU_VALUES, RELEASE, ROOT, registered


def load_chart_check():
    spec = importlib.util.spec_from_file_location("chart_check", ROOT / "scripts" / "chart-check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_check"] = module
    spec.loader.exec_module(module)
    return module


def test_make_chart_check_passes(helm_cli):
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chart-check.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "chart-check: all checks passed" in out
    for values in ("default", "gpu", "all-features"):
        for kv in ("1.27.0", "1.37.0"):
            assert re.search(rf"^{values} .*kubernetes-validate --strict -k {kv}\s+ok \d+ objects", out, re.M), (
                values,
                kv,
            )
        assert re.search(rf"^{values} .*render \(Helm 4 engine\) == helm template\s+ok", out, re.M)
    assert "tomography:0.1.0-cuda" in out and "scan:0.1.0" in out


@pytest.fixture(scope="module")
def gpu_manifest(helm_cli, tmp_path_factory):
    out = subprocess.run(
        [
            helm_cli,
            "template",
            RELEASE,
            str(CHART),
            "-n",
            "panreduce",
            "--kube-version",
            "1.37.0",
            "-f",
            str(GPU_VALUES),
            # a development render, like the gpu_render fixture (render_chart's dev_auth)
            "--set",
            "gateway.auth.disabled=true",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_helm3_cli_and_helm4_engine_render_the_same(gpu_manifest, gpu_render):
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731

    def masked(d: dict) -> dict:  # the service token and the scope key are random in every render
        if d["metadata"]["name"].endswith(("-service-token", "-scope-key")):
            return {**d, "data": dict.fromkeys(d.get("data", {}), "<random>")}
        return d

    assert sorted(map(masked, gpu_manifest), key=key) == sorted(map(masked, gpu_render), key=key)


def _validate(docs, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", "1.37.0", str(path)],
        capture_output=True,
        text=True,
    )


def test_strict_validation_accepts_the_render_and_rejects_unknown_fields(gpu_manifest, tmp_path):
    assert _validate(gpu_manifest, tmp_path).returncode == 0
    broken = copy.deepcopy(gpu_manifest)
    dep = next(d for d in broken if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1  # not a Kubernetes field
    res = _validate(broken, tmp_path)
    assert res.returncode != 0 and "gpus" in res.stdout + res.stderr


def test_scheduling_check_catches_gpu_mistakes(gpu_manifest):
    cc = load_chart_check()
    values = yaml.safe_load(GPU_VALUES.read_text())
    rows = cc.check_scheduling(gpu_manifest, values)
    assert sum(" 1  " in r for r in rows) == sum(registered().values())  # tomography, ptychography, stem4d

    def tampered(fn):
        docs = copy.deepcopy(gpu_manifest)
        fn({d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"})
        return docs

    def pod(deps, name):
        return deps[f"{RELEASE}-{name}"]["spec"]["template"]["spec"]

    mistakes = {
        "GPU pod without its toleration": lambda deps: pod(deps, "tomography").pop("tolerations"),
        "GPU pod without node selector": lambda deps: pod(deps, "ptychography").pop("nodeSelector"),
        "CPU pod with the GPU toleration": lambda deps: pod(deps, "scan").update(
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        ),
        "CPU pod on the CUDA image": lambda deps: pod(deps, "saxs")["containers"][0].update(
            image="localhost/panreduce/saxs:0.1.0-cuda"
        ),
        "HTTP probe": lambda deps: pod(deps, "sans")["containers"][0].update(
            livenessProbe={"httpGet": {"port": 8080, "path": "/"}}
        ),
        "root filesystem writable": lambda deps: pod(deps, "scan")["containers"][0]["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
    }
    for what, fn in mistakes.items():
        with pytest.raises(cc.Failed):
            cc.check_scheduling(tampered(fn), values)
            pytest.fail(f"not caught: {what}")
    docs = copy.deepcopy(gpu_manifest)
    policy = next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-services"))
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})
    with pytest.raises(cc.Failed, match="more than the gateway"):
        cc.check_scheduling(docs, values)
