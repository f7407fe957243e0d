#!/usr/bin/env python3
"""Register every technique folder: the one list of techniques is the set of workspace
folders services/<dir>/ whose pyproject.toml declares a ``panreduce.techniques`` entry
point. From it this script writes everything else that names a technique:

- the root pyproject.toml: [project] dependencies, [tool.uv.workspace] members,
  [tool.uv.sources] and ruff's isort known-first-party;
- images/images.toml: an [images.<name>] entry (gpu = true when the member has a `gpu` extra);
- both Containerfiles: one `COPY <member>/pyproject.toml` per member;
- charts/panreduce: values.yaml (a technique block), values-gpu.yaml (GPU techniques),
  values-rehearsal.yaml (disabled there) and the schema's list of techniques.

Existing entries are kept as they are (their resources, replicas, ... are hand-tuned);
only missing ones are added, and the generated lists are rewritten in a fixed order.

    .venv/bin/python scripts/sync-techniques.py          # write (`make register` runs this, then uv lock/sync)
    .venv/bin/python scripts/sync-techniques.py --check  # list what is missing; exit 1 if anything is
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXED_FIRST = ("services/common",)
FIXED_LAST = ("gateway", "web")  # the web page: a member without a technique
CONTAINERFILES = ("images/service/Containerfile", "images/gateway/Containerfile", "images/web/Containerfile")
VALUES = "charts/panreduce/values.yaml"
GPU_VALUES = "charts/panreduce/values-gpu.yaml"
REHEARSAL = "charts/panreduce/values-rehearsal.yaml"
SCHEMA = "charts/panreduce/values.schema.json"


@dataclass(frozen=True)
class Member:
    path: str  # relative folder, e.g. services/scan
    package: str  # distribution name, e.g. panreduce-scan
    module: str  # import name, e.g. panreduce_scan
    technique: str | None  # the technique it registers (None: the kit, the gateway)
    gpu: bool


def _member(root: Path, path: str) -> Member:
    meta = tomllib.loads((root / path / "pyproject.toml").read_text())["project"]
    entry = meta.get("entry-points", {}).get("panreduce.techniques", {})
    if len(entry) > 1:
        raise SystemExit(f"{path}/pyproject.toml registers {len(entry)} techniques: one folder is one technique")
    technique = next(iter(entry), None)
    if technique is not None:
        module = entry[technique].split(":")[0].split(".")[0]
    else:
        src = root / path / "src"
        module = sorted(p.name for p in src.iterdir() if (p / "__init__.py").is_file())[0]
    return Member(path, meta["name"], module, technique, "gpu" in meta.get("optional-dependencies", {}))


def discover(root: Path) -> list[Member]:
    """The kit, every technique folder (sorted by folder), the gateway."""
    techniques = sorted(
        str(p.parent.relative_to(root))
        for p in (root / "services").glob("*/pyproject.toml")
        if str(p.parent.relative_to(root)) not in FIXED_FIRST
    )
    members = [_member(root, p) for p in (*FIXED_FIRST, *techniques, *FIXED_LAST)]
    return [m for m in members if m.technique is not None or m.path in FIXED_FIRST + FIXED_LAST]


# -- generated text -------------------------------------------------------------------------
def _items(block: str) -> set[str]:
    return {item.strip().rstrip(",") for item in re.split(r"\n|, ", block) if item.strip()}


def _replace_block(text: str, pattern: str, body: str, what: str) -> str:
    """``body`` in place of the first group of ``pattern``, unless the block already holds
    the same items in another order (no churn for order alone)."""
    match = re.search(pattern, text, flags=re.M | re.S)
    if not match:
        raise SystemExit(f"cannot find {what}")
    if _items(match.group(1)) == _items(body):
        return text
    return text[: match.start(1)] + body + text[match.end(1) :]


def root_pyproject(text: str, members: list[Member]) -> str:
    deps = "".join(f'    "{m.package}",\n' for m in members)
    text = _replace_block(text, r"^\[project\]\n.*?^dependencies = \[\n(.*?)^\]", deps, "[project] dependencies")
    paths = "".join(f'    "{m.path}",\n' for m in members)
    text = _replace_block(
        text, r"^\[tool\.uv\.workspace\]\nmembers = \[\n(.*?)^\]", paths, "[tool.uv.workspace] members"
    )
    sources = "".join(f"{m.package} = {{ workspace = true }}\n" for m in members)
    text = _replace_block(text, r"^\[tool\.uv\.sources\]\n(.*?)(?=^\n|^\[|\Z)", sources, "[tool.uv.sources]")
    first_party = ", ".join(f'"{m.module}"' for m in members)
    return _replace_block(text, r"^known-first-party = \[(.*?)\]$", first_party, "known-first-party")


def images_toml(text: str, members: list[Member]) -> str:
    have = set(re.findall(r"^\[images\.([A-Za-z0-9_-]+)\]", text, flags=re.M))
    for m in members:
        if m.technique and m.technique not in have:
            text = text.rstrip("\n") + (
                f'\n\n[images.{m.technique}]\npackage = "{m.package}"\nmember = "{m.path}"\n'
                f'technique = "{m.technique}"\ncontainerfile = "images/service/Containerfile"\n'
                + ("gpu = true\n" if m.gpu else "")
            )
    return text if text.endswith("\n") else text + "\n"


def containerfile(text: str, members: list[Member]) -> str:
    lines = "".join(f"COPY {m.path}/pyproject.toml {m.path}/\n" for m in members)
    return _replace_block(
        text,
        r"^(COPY services/common/pyproject\.toml services/common/\n.*?"
        r"COPY gateway/pyproject\.toml gateway/\n(?:COPY web/pyproject\.toml web/\n)?)",
        lines,
        "the COPY lines of the pyproject files",
    )


def _technique_keys(text: str) -> list[str]:
    """The keys of the top-level `techniques:` mapping of a values file."""
    match = re.search(r"^techniques:\n((?:[ \t].*\n|\n)*)", text, flags=re.M)
    return re.findall(r"^  ([A-Za-z0-9_-]+):", match.group(1), flags=re.M) if match else []


def _append_to_techniques(text: str, block: str) -> str:
    match = re.search(r"^techniques:\n((?:[ \t].*\n|\n)*)", text, flags=re.M)
    if not match:
        return text.rstrip("\n") + "\ntechniques:\n" + block
    body = match.group(1)
    trailing = len(body) - len(body.rstrip("\n")) - 1  # keep blank lines before the next key
    end = match.end(1) - max(trailing, 0)
    return text[:end] + block + text[end:]


def _sharded(root: Path, m: Member) -> bool:
    """``shardable = True`` in the technique's class (read from the source: the member is
    not installed before `uv sync`; tests/deploy checks the chart against the class)."""
    source = root / m.path / "src" / m.module / "technique.py"
    text = source.read_text() if source.is_file() else ""
    return re.search(r"^\s+shardable(?:\s*:\s*[\w\[\]]+)?\s*=\s*True\b", text, flags=re.M) is not None


def values_yaml(text: str, members: list[Member], root: Path) -> str:
    have = set(_technique_keys(text))
    for m in members:
        if m.technique and m.technique not in have:
            text = _append_to_techniques(
                text,
                f"""  {m.technique}:
    enabled: true
    replicas: 1
    image: {{repository: {m.technique}, tag: ""}}
    sharded: {str(_sharded(root, m)).lower()}
    maxRunning: 1
    drainSeconds: 30
    terminationGracePeriodSeconds: 60
    resources:
      requests: {{cpu: "1", memory: 2Gi}}
      limits: {{memory: 4Gi}}
    scratch: {{sizeLimit: 10Gi}}
    autoscaling: {{enabled: false, minReplicas: 1, maxReplicas: 4, targetCPUUtilizationPercentage: 80}}
    pdb: {{enabled: true, maxUnavailable: 1}}
    probes: {{}}
    nodeSelector: {{}}
    tolerations: []
    affinity: {{}}
    runtimeClassName: ""
    priorityClassName: ""
    podAnnotations: {{}}
    env: []
""",
            )
    return text


def gpu_values_yaml(text: str, members: list[Member]) -> str:
    have = set(_technique_keys(text))
    for m in members:
        if m.technique and m.gpu and m.technique not in have:
            text = _append_to_techniques(
                text,
                f"""  {m.technique}:
    replicas: 1
    resources:
      requests: {{cpu: "4", memory: 16Gi}}
      limits: {{memory: 32Gi, nvidia.com/gpu: 1}}
""",
            )
    gpu = ", ".join(m.technique for m in members if m.gpu and m.technique)
    return _replace_block(text, r"^# GPU nodes: the GPU-capable techniques \((.*?)\)", gpu, "the GPU comment")


def rehearsal_yaml(text: str, members: list[Member]) -> str:
    have = set(_technique_keys(text))
    for m in members:
        if m.technique and m.technique not in have:
            text = _append_to_techniques(text, f"  {m.technique}: {{enabled: false}}\n")
    return text


def schema_json(text: str, members: list[Member]) -> str:
    names = ", ".join(m.technique for m in members if m.technique)
    return _replace_block(text, r'"one entry per technique service \(([^)]*)\)"', names, "the schema's technique list")


FILES = {
    "pyproject.toml": root_pyproject,
    "images/images.toml": images_toml,
    **dict.fromkeys(CONTAINERFILES, containerfile),
    VALUES: values_yaml,  # (and the root, for Technique.shardable)
    GPU_VALUES: gpu_values_yaml,
    REHEARSAL: rehearsal_yaml,
    SCHEMA: schema_json,
}


def sync(root: Path) -> dict[str, tuple[str, str]]:
    """{file: (current, wanted)} for every file that names the techniques."""
    members = discover(root)
    out = {}
    for name, render in FILES.items():
        current = (root / name).read_text()
        out[name] = (current, values_yaml(current, members, root) if name == VALUES else render(current, members))
    return out


def missing(current: str, wanted: str) -> list[str]:
    have = set(current.splitlines())
    return [line.strip() for line in wanted.splitlines() if line not in have and line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report what is not registered; exit 1 if anything")
    p.add_argument("--root", type=Path, default=REPO, help="repository root (default: this checkout)")
    args = p.parse_args(argv)
    results = sync(args.root)
    stale = {name: pair for name, pair in results.items() if pair[0] != pair[1]}
    if args.check:
        for name, (current, wanted) in stale.items():
            lines = missing(current, wanted)
            print(
                f"{name}: not in sync with the technique folders"
                + (f"; missing: {'; '.join(lines[:12])}" if lines else " (order)"),
                file=sys.stderr,
            )
        if stale:
            print("run `make register` (scripts/sync-techniques.py, then uv lock and uv sync)", file=sys.stderr)
        return 1 if stale else 0
    for name, (_, wanted) in stale.items():
        (args.root / name).write_text(wanted)
        print(f"updated {name}")
    if not stale:
        print("every technique is registered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
