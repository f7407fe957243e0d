#!/usr/bin/env python3
"""An SBOM (CycloneDX 1.5 JSON) per container image, from uv.lock (``make sbom``).

Each image installs exactly one workspace member and its locked dependencies
(``uv sync --frozen --no-dev --package MEMBER [--extra gpu]``, images/*/Containerfile). This
script walks the same set in uv.lock: the member's dependencies (and its ``gpu`` extra for the
CUDA variants), their extras, markers evaluated for the image's interpreter and platform
(Linux x86_64, the Python of the base: images/images.toml [base] python / cuda_python), and
writes one component per package with its locked version, a purl and the lock's hashes.

    .venv/bin/python scripts/sbom.py [NAME...] [--gpu] [--out dist/sbom]
    .venv/bin/python scripts/sbom.py --print scan      # the SBOM of one image on stdout

scripts/images.py writes them at build time as well and labels each image with the SBOM's
sha256 (io.panreduce.sbom.sha256). Needs ``packaging`` (in the workspace environment).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "uv.lock"
CONFIG = ROOT / "images" / "images.toml"


def environment(python: str, machine: str = "x86_64") -> dict[str, str]:
    """PEP 508 marker environment of an image (CPython on Linux glibc)."""
    full = python if python.count(".") >= 2 else f"{python}.0"
    return {
        "implementation_name": "cpython",
        "implementation_version": full,
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": full,
        "python_version": ".".join(full.split(".")[:2]),
        "sys_platform": "linux",
        "extra": "",
    }


def _applies(entry: dict, env: dict[str, str]) -> bool:
    marker = entry.get("marker")
    return marker is None or Marker(marker).evaluate(env)


def resolve(lock: dict, package: str, extras: tuple[str, ...], env: dict[str, str]) -> list[dict]:
    """The locked packages an image with ``package`` (and ``extras``) installs, as lock entries."""
    by_name: dict[str, list[dict]] = {}
    for pkg in lock["package"]:
        by_name.setdefault(canonicalize_name(pkg["name"]), []).append(pkg)

    def pick(dep: dict) -> dict:
        candidates = by_name[canonicalize_name(dep["name"])]
        if len(candidates) > 1 and "version" in dep:
            candidates = [c for c in candidates if c["version"] == dep["version"]]
        if len(candidates) != 1:
            raise SystemExit(f"sbom: {dep['name']} is ambiguous in uv.lock ({len(candidates)} entries)")
        return candidates[0]

    root = pick({"name": package})
    seen: dict[tuple[str, str], dict] = {}
    todo: list[tuple[dict, tuple[str, ...]]] = [(root, extras)]
    done: set[tuple[str, str, str]] = set()
    while todo:
        pkg, pkg_extras = todo.pop()
        seen[(pkg["name"], pkg["version"])] = pkg
        deps = [d for d in pkg.get("dependencies", []) if _applies(d, env)]
        for extra in pkg_extras:
            deps += [d for d in pkg.get("optional-dependencies", {}).get(extra, []) if _applies(d, env)]
        for dep in deps:
            target = pick(dep)
            for extra in ("", *dep.get("extra", [])):
                key = (target["name"], target["version"], extra)
                if key in done:
                    continue
                done.add(key)
                todo.append((target, (extra,) if extra else ()))
    return sorted(seen.values(), key=lambda p: (canonicalize_name(p["name"]), p["version"]))


def _hashes(pkg: dict) -> list[dict]:
    out = []
    for art in [pkg.get("sdist", {}), *pkg.get("wheels", [])]:
        h = art.get("hash", "")
        if h.startswith("sha256:"):
            out.append({"alg": "SHA-256", "content": h.split(":", 1)[1]})
    return out[:1]  # the lock lists every wheel; one hash identifies the release (all are in uv.lock)


def component(pkg: dict) -> dict:
    name, version = pkg["name"], pkg["version"]
    source = pkg.get("source", {})
    comp = {
        "type": "library",
        "bom-ref": f"{canonicalize_name(name)}@{version}",
        "name": name,
        "version": version,
        "purl": f"pkg:pypi/{canonicalize_name(name)}@{version}",
    }
    if "registry" not in source:
        comp["properties"] = [{"name": "panreduce:workspace-member", "value": str(next(iter(source.values()), ""))}]
    hashes = _hashes(pkg)
    if hashes:
        comp["hashes"] = hashes
    return comp


def sbom(image: str, package: str, version: str, extras: tuple[str, ...], python: str, lock_bytes: bytes) -> dict:
    lock = tomllib.loads(lock_bytes.decode())
    env = environment(python)
    packages = resolve(lock, package, extras, env)
    lock_sha = hashlib.sha256(lock_bytes).hexdigest()
    # deterministic: the same lock and image give the same document (serial from their digest)
    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"panreduce:{image}:{version}:{','.join(extras)}:{python}:{lock_sha}")
    # SOURCE_DATE_EPOCH (reproducible builds) when set, else now
    created = datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH") or time.time()), tz=UTC)
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{serial}",
        "version": 1,
        "metadata": {
            "timestamp": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {"components": [{"type": "application", "name": "panreduce scripts/sbom.py"}]},
            "component": {
                "type": "container",
                "bom-ref": f"image:{image}",
                "name": image,
                "version": version + ("-cuda" if extras else ""),
            },
            "properties": [
                {"name": "panreduce:uv.lock:sha256", "value": lock_sha},
                {"name": "panreduce:python", "value": python},
                {"name": "panreduce:package", "value": package},
                {"name": "panreduce:extras", "value": ",".join(extras)},
            ],
        },
        "components": [component(p) for p in packages],
        "dependencies": [
            {"ref": f"image:{image}", "dependsOn": [f"{canonicalize_name(p['name'])}@{p['version']}" for p in packages]}
        ],
    }


def for_image(name: str, gpu: bool = False, python: str | None = None) -> dict:
    cfg = tomllib.loads(CONFIG.read_text())
    img = cfg["images"][name]
    python = python or cfg["base"]["cuda_python" if gpu else "python"]
    extras = ("gpu",) if gpu else ()
    return sbom(name, img["package"], cfg["build"]["tag"], extras, python, LOCK.read_bytes())


def write(name: str, gpu: bool, out: Path, python: str | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}{'-cuda' if gpu else ''}.cdx.json"
    path.write_text(json.dumps(for_image(name, gpu, python), indent=1, sort_keys=True) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="image names (default: all, images/images.toml)")
    p.add_argument("--gpu", action="store_true", help="also the CUDA variants (the gpu extra)")
    p.add_argument("--out", type=Path, default=ROOT / "dist" / "sbom")
    p.add_argument("--print", action="store_true", help="print the SBOM of the one named image")
    p.add_argument("--python", help="the image's Python (default: images.toml [base] python / cuda_python)")
    args = p.parse_args(argv)
    images = tomllib.loads(CONFIG.read_text())["images"]
    names = args.names or list(images)
    unknown = [n for n in names if n not in images]
    if unknown:
        sys.exit(f"sbom: unknown image(s) {', '.join(unknown)}; known: {', '.join(images)}")
    if args.print:
        if len(names) != 1:
            sys.exit("sbom: --print takes one image")
        print(json.dumps(for_image(names[0], args.gpu, args.python), indent=1, sort_keys=True))
        return 0
    for n in names:
        for gpu in (
            (True,) if args.gpu and args.python else (False, True) if args.gpu and images[n].get("gpu") else (False,)
        ):
            print(f"sbom: {write(n, gpu, args.out, args.python)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
