"""Fixtures of the deployment tests (helpers in deploy_support.py)."""

from __future__ import annotations

import subprocess

import pytest
from deploy_support import IN_CI, ROOT, Rendered, render_chart


@pytest.fixture(scope="session")
def render():
    return render_chart


@pytest.fixture(scope="session")
def default_render() -> Rendered:
    return render_chart()


@pytest.fixture(scope="session")
def gpu_render() -> Rendered:
    return render_chart(gpu=True)


@pytest.fixture(scope="session")
def helm_cli() -> str:
    """The pinned Helm 3 CLI, installed by the same script as `make chart-check` uses.
    Skipped only where npm cannot be had, and never under CI (CI=true)."""
    res = subprocess.run([str(ROOT / "scripts" / "chart-helm.sh")], capture_output=True, text=True, timeout=300)
    if res.returncode == 3 and not IN_CI:
        pytest.skip(f"no Helm CLI: npm is unavailable ({res.stderr.strip()})")
    assert res.returncode == 0, f"scripts/chart-helm.sh failed: {res.stderr}"
    return res.stdout.strip()
