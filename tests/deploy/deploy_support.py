"""Helpers of the deployment tests: the chart rendered in-process (Helm 4 engine, PyPI
helm-python-sdk) and the pinned Helm 3 CLI (npm, through scripts/chart-helm.sh).
(A module with a unique name, not conftest.py, so that test modules can import it.)"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "panreduce"
GPU_VALUES = CHART / "values-gpu.yaml"
RELEASE = "panreduce"
IN_CI = os.environ.get("CI", "").lower() == "true"


def registered() -> dict[str, bool]:
    """{technique: gpu} of the technique folders (scripts/sync-techniques.py: the one list)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("sync_techniques", ROOT / "scripts" / "sync-techniques.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return {m.technique: m.gpu for m in module.discover(ROOT) if m.technique}


def deep_merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for k, v in other.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = copy.deepcopy(v)
    return into


class Rendered(list):
    """The rendered objects, with look-ups by kind and name."""

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [d for d in self.of(kind) if d["metadata"]["name"] == name]
        assert len(found) == 1, (
            f"{kind}/{name}: {len(found)} objects (have {[d['metadata']['name'] for d in self.of(kind)]})"
        )
        return found[0]

    def deployments(self, web: bool = True) -> dict[str, dict[str, Any]]:
        """By name; ``web=False``: the gateway and the technique services only (the platform
        pods that share the store; the live data page reaches them through the gateway only)."""
        return {
            d["metadata"]["name"]: d
            for d in self.of("Deployment")
            if web or d["metadata"]["labels"].get("app.kubernetes.io/component") != "web"
        }


def render_chart(
    *overrides: dict[str, Any], gpu: bool = False, with_tests: bool = True, dev_auth: bool = True
) -> Rendered:
    """Render charts/panreduce like `helm template panreduce charts/panreduce [-f values-gpu.yaml]`.

    The chart refuses to render without access control (tokens or JWKS). Unless the overrides
    configure it (or set gateway.auth.disabled themselves) or ``dev_auth`` is False, the render
    is a development one: gateway.auth.disabled=true, as a developer would give it."""
    import helm_python

    values: dict[str, Any] = {}
    if gpu:
        deep_merge(values, yaml.safe_load(GPU_VALUES.read_text()))
    for o in overrides:
        deep_merge(values, o)
    auth = values.get("gateway", {}).get("auth", {})
    if dev_auth and "disabled" not in auth and not (auth.get("tokensSecret", {}).get("name") or auth.get("jwks")):
        deep_merge(values, {"gateway": {"auth": {"disabled": True}}})
    with helm_python.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values or None, name=RELEASE, namespace="panreduce", is_install=True)
    docs = Rendered()
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt") or (not with_tests and "/tests/" in path):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod_spec(deployment)["containers"]
    return c


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def gpu_limit(c: dict[str, Any]) -> int:
    return int((c.get("resources", {}).get("limits") or {}).get("nvidia.com/gpu", 0))


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + matchExpressions)."""
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        k, op, vals = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": k in labels and labels[k] in vals,
            "NotIn": labels.get(k) not in vals,
            "Exists": k in labels,
            "DoesNotExist": k not in labels,
        }[op]
        if not ok:
            return False
    return True
