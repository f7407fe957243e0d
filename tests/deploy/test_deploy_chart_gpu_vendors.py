"""charts/panreduce: any accelerator resource (MIG profiles, AMD) makes a GPU pod; image.digest."""

from __future__ import annotations

import pytest
from deploy_support import RELEASE, pod_spec, render_chart


def _pod(docs, name):
    return pod_spec(docs.get("Deployment", f"{RELEASE}-{name}"))


def test_mig_and_amd_resources_get_gpu_placement_and_image():
    docs = render_chart(
        {
            "techniques": {
                "saxs": {"resources": {"limits": {"nvidia.com/mig-1g.10gb": 1}}},
                "scan": {"resources": {"limits": {"amd.com/gpu": 1}}},
            }
        },
        gpu=True,
    )
    saxs, scan, sans = _pod(docs, "saxs"), _pod(docs, "scan"), _pod(docs, "sans")
    assert saxs["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and saxs["runtimeClassName"] == "nvidia"
    assert {t["key"] for t in saxs["tolerations"]} == {"nvidia.com/gpu", "nvidia.com/mig-1g.10gb"}
    assert saxs["containers"][0]["image"].endswith("saxs:0.1.0-cuda")
    assert scan["nodeSelector"] == {"feature.node.kubernetes.io/amd-gpu": "true"}
    assert [t["key"] for t in scan["tolerations"]] == ["amd.com/gpu"] and "runtimeClassName" not in scan
    assert scan["containers"][0]["image"].endswith("scan:0.1.0-cuda")
    assert "nodeSelector" not in sans and "tolerations" not in sans  # CPU pods untouched
    assert sans["containers"][0]["image"].endswith("sans:0.1.0")


def test_image_digest_is_rendered_and_checked():
    digest = "sha256:" + "ab" * 32
    docs = render_chart({"techniques": {"scan": {"image": {"repository": "scan", "digest": digest}}}})
    assert _pod(docs, "scan")["containers"][0]["image"] == f"localhost/panreduce/scan@{digest}"
    with pytest.raises(Exception, match="digest"):
        render_chart({"techniques": {"scan": {"image": {"repository": "scan", "digest": "latest"}}}})
