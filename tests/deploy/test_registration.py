"""A new technique is one folder plus `make register`: scripts/sync-techniques.py writes every
place that names the techniques (root pyproject, images.toml, Containerfiles, chart values)
from the technique folders, and fails naming what is missing when one was forgotten."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from deploy_support import ROOT, render_chart

SCRIPT = ROOT / "scripts" / "sync-techniques.py"
FILES = (
    "pyproject.toml",
    "images/images.toml",
    "images/service/Containerfile",
    "images/gateway/Containerfile",
    "images/web/Containerfile",
    "charts/panreduce/values.yaml",
    "charts/panreduce/values-gpu.yaml",
    "charts/panreduce/values-rehearsal.yaml",
    "charts/panreduce/values.schema.json",
)
NEW = """[project]
name = "panreduce-newtech"
version = "0.1.0"
dependencies = ["panreduce-common"]

[project.optional-dependencies]
gpu = ["torch>=2.4"]

[project.entry-points."panreduce.techniques"]
newtech = "panreduce_newtech.technique:Technique"
"""


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(root), *args], capture_output=True, text=True, timeout=120
    )


def test_the_checkout_is_registered():
    done = run(ROOT, "--check")
    assert done.returncode == 0, done.stderr


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    """The files that name techniques and every member's pyproject.toml, in a scratch root."""
    for name in FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    for member in [
        *ROOT.glob("services/*/pyproject.toml"),
        ROOT / "gateway" / "pyproject.toml",
        ROOT / "web" / "pyproject.toml",
    ]:
        rel = member.relative_to(ROOT)
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(member, tmp_path / rel)
        src = member.parent / "src"
        for pkg in src.iterdir() if src.is_dir() else ():
            if (pkg / "__init__.py").is_file():
                (tmp_path / rel.parent / "src" / pkg.name).mkdir(parents=True, exist_ok=True)
                (tmp_path / rel.parent / "src" / pkg.name / "__init__.py").touch()
    return tmp_path


def test_a_new_folder_is_named_missing_everywhere_then_registered(copy: Path):
    (copy / "services" / "newtech").mkdir()
    (copy / "services" / "newtech" / "pyproject.toml").write_text(NEW)

    before = run(copy, "--check")
    assert before.returncode == 1
    for name in FILES:
        assert f"{name}: not in sync" in before.stderr, name
    assert "make register" in before.stderr and "panreduce-newtech" in before.stderr

    assert run(copy).returncode == 0
    root = tomllib.loads((copy / "pyproject.toml").read_text())
    assert "panreduce-newtech" in root["project"]["dependencies"]
    assert "services/newtech" in root["tool"]["uv"]["workspace"]["members"]
    assert root["tool"]["uv"]["sources"]["panreduce-newtech"] == {"workspace": True}
    assert "panreduce_newtech" in root["tool"]["ruff"]["lint"]["isort"]["known-first-party"]
    # what was there stays: every member before, and the other root settings
    old = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(old["tool"]["uv"]["workspace"]["members"]) < set(root["tool"]["uv"]["workspace"]["members"])
    assert (
        root["dependency-groups"] == old["dependency-groups"]
        and root["tool"]["ruff"]["lint"]["select"] == old["tool"]["ruff"]["lint"]["select"]
    )

    image = tomllib.loads((copy / "images/images.toml").read_text())["images"]["newtech"]
    assert image == {
        "package": "panreduce-newtech",
        "member": "services/newtech",
        "technique": "newtech",
        "containerfile": "images/service/Containerfile",
        "gpu": True,
    }
    for cf in ("images/service/Containerfile", "images/gateway/Containerfile", "images/web/Containerfile"):
        assert "COPY services/newtech/pyproject.toml services/newtech/\n" in (copy / cf).read_text()

    values = yaml.safe_load((copy / "charts/panreduce/values.yaml").read_text())["techniques"]
    old_values = yaml.safe_load((ROOT / "charts/panreduce/values.yaml").read_text())["techniques"]
    assert {k: v for k, v in values.items() if k != "newtech"} == old_values
    assert values["newtech"]["image"]["repository"] == "newtech" and values["newtech"]["enabled"] is True
    assert set(values["newtech"]) == set(old_values["scan"]), "the same keys as every technique block"
    gpu = yaml.safe_load((copy / "charts/panreduce/values-gpu.yaml").read_text())["techniques"]
    assert gpu["newtech"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert yaml.safe_load((copy / "charts/panreduce/values-rehearsal.yaml").read_text())["techniques"]["newtech"] == {
        "enabled": False
    }
    schema = json.loads((copy / "charts/panreduce/values.schema.json").read_text())
    assert "newtech" in json.dumps(schema["properties"]["techniques"]["description"])

    # idempotent, and then the check passes
    again = run(copy)
    assert again.returncode == 0 and "every technique is registered" in again.stdout
    assert run(copy, "--check").returncode == 0

    # the chart deploys it with the generated block: a Deployment, and a gateway route
    rendered = render_chart({"techniques": {"newtech": values["newtech"]}})
    names = {d["metadata"]["name"] for d in rendered if d["kind"] == "Deployment"}
    assert "panreduce-newtech" in names
    assert "newtech=" in json.dumps(
        [d for d in rendered if d["kind"] == "Deployment" and d["metadata"]["name"] == "panreduce-gateway"]
    )


def test_a_folder_registering_two_techniques_is_refused(copy: Path):
    (copy / "services" / "two").mkdir()
    (copy / "services" / "two" / "pyproject.toml").write_text(
        NEW.replace("newtech = ", "a = ").replace(
            '[project.entry-points."panreduce.techniques"]\n',
            '[project.entry-points."panreduce.techniques"]\nb = "x.y:T"\n',
        )
    )
    done = run(copy, "--check")
    assert done.returncode != 0 and "one folder is one technique" in done.stderr
