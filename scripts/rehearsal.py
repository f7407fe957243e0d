#!/usr/bin/env python3
"""A local rehearsal of the chart with ``podman kube play`` (docs/deploy.md, "A local rehearsal").

Renders charts/panreduce with values-rehearsal.yaml (gateway + scan), runs the pods with
podman from the images of ``make images IMAGES="gateway scan"``, lists the techniques and
reduces a Diamond I16 scan through the gateway with an upload, then takes everything down
(pods, volumes, network, the secret files) unless ``--keep``.

    .venv/bin/python scripts/rehearsal.py [--scan FILE] [--keep]

podman 4.3 (Debian bookworm) cannot take the chart's Secret volumes as they are: a secret
volume without ``optional`` panics ``kube play`` (nil dereference in VolumeFromSecret), and
with it the files hold the Secret's base64 text, not the decoded value, all keys of a Secret
go to every pod (``items`` ignored: the service would see the scope's private key), and
``stringData`` leaves them empty. So each Secret volume is replaced by a read-only hostPath
folder holding exactly the decoded items that pod mounts (``podman_manifests``); on a real
cluster the Secrets are used as rendered. Needs the venv (PyYAML, the panreduce CLI).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "charts" / "panreduce" / "values-rehearsal.yaml"
NETWORK = "panreduce-rehearsal"
# the data folder as panreduce.datasets finds it: $PANREDUCE_DATA, else ../shared/data
DATA = Path(os.environ.get("PANREDUCE_DATA") or ROOT.parent / "shared" / "data")
DEFAULT_SCAN = DATA / "i16-scans" / "794932.nxs"
RUNTIME_UID = 10001
# eta centre of the I16 scan 794932 (pseudo-Voigt), as docs/scan.md records it (29.9965 +- 0.0010 deg)
REFERENCE_CENTRE = 29.9965


def say(msg: str) -> None:
    print(f"rehearsal: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
    say("$ " + " ".join(cmd))
    res = subprocess.run(cmd, check=False, text=True, capture_output=capture)
    if check and res.returncode != 0:
        raise SystemExit(f"rehearsal: failed (exit {res.returncode}): {(res.stderr or '').strip()[-2000:]}")
    return res


def podman_manifests(docs: list[dict], secret_root: Path, uid: int = RUNTIME_UID) -> list[dict]:
    """The rendered objects with every Secret volume turned into a hostPath folder under
    secret_root/<workload>/<volume> holding only the items that pod mounts (decoded, mode
    0440, owned by the runtime user when run as root); the Secret objects themselves dropped."""
    secrets = {
        d["metadata"]["name"]: {k: base64.b64decode(v) for k, v in (d.get("data") or {}).items()}
        | {k: v.encode() for k, v in (d.get("stringData") or {}).items()}
        for d in docs
        if d.get("kind") == "Secret"
    }
    out = []
    for doc in docs:
        if doc.get("kind") == "Secret":
            continue
        spec = (doc.get("spec") or {}).get("template", {}).get("spec") or {}
        for vol in spec.get("volumes") or []:
            if "secret" not in vol:
                continue
            src = vol.pop("secret")
            data = secrets.get(src["secretName"])
            if data is None:
                raise SystemExit(
                    f"rehearsal: {doc['metadata']['name']} mounts Secret {src['secretName']}, not rendered"
                )
            items = src.get("items") or [{"key": k, "path": k} for k in data]
            folder = secret_root / doc["metadata"]["name"] / vol["name"]
            folder.mkdir(parents=True, exist_ok=True)
            for item in items:
                path = folder / item["path"]
                path.write_bytes(data[item["key"]])
                if os.geteuid() == 0:
                    os.chown(path, uid, uid)
                path.chmod(0o440)
            vol["hostPath"] = {"path": str(folder), "type": "Directory"}
        out.append(doc)
    return out


def scan_centre(table: str, file_name: str) -> float | None:
    """The fitted centre from `panreduce reduce scan`'s table (file scan axis center ...)."""
    for line in table.splitlines():
        fields = line.split()
        if fields[:1] == [file_name] and len(fields) > 3:
            try:
                return float(fields[3])
            except ValueError:
                return None
    return None


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def publish_on_free_ports(docs: list[dict]) -> dict[str, int]:
    """podman 4.3 publishes every containerPort on the host, at the same number unless a
    hostPort is given: give each a free one (others may serve 50050 here), on loopback only
    (podman's default is every address, and the rehearsal gateway asks for no token). Returns
    {"<workload>/<port name>": host port}."""
    published = {}
    for doc in docs:
        spec = (doc.get("spec") or {}).get("template", {}).get("spec") or {}
        for container in spec.get("containers") or []:
            for port in container.get("ports") or []:
                port["hostPort"] = free_port()
                port["hostIP"] = "127.0.0.1"  # access control is off in the rehearsal: loopback only
                published[f"{doc['metadata']['name']}/{port.get('name', port['containerPort'])}"] = port["hostPort"]
    return published


def volumes_of(docs: list[dict]) -> list[str]:
    return [d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rehearsal", description=__doc__.splitlines()[0])
    p.add_argument("--scan", type=Path, default=DEFAULT_SCAN, help="the NeXus scan file to upload and reduce")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the gateway to list scan")
    p.add_argument("--keep", action="store_true", help="leave the pods running (take them down by hand)")
    args = p.parse_args(argv)
    if not args.scan.is_file():
        sys.exit(f"rehearsal: no scan file {args.scan} (set PANREDUCE_DATA to the data folder, or --scan)")
    tools = ROOT / ".tools" / "containers"
    os.environ.setdefault("CONTAINERS_CONF", str(tools / "containers.conf"))
    os.environ.setdefault("CONTAINERS_STORAGE_CONF", str(tools / "storage.conf"))
    if not shutil.which("podman") or not (tools / "containers.conf").is_file():
        sys.exit("rehearsal: run scripts/install-container-engine.sh and make images IMAGES='gateway scan' first")
    helm = run([str(ROOT / "scripts" / "chart-helm.sh")]).stdout.strip()
    rendered = run(
        [
            helm,
            "template",
            "panreduce",
            str(ROOT / "charts" / "panreduce"),
            "-f",
            str(VALUES),
            "--kube-version",
            "1.37.0",
        ]
    ).stdout
    work = Path(tempfile.mkdtemp(prefix="panreduce-rehearsal-"))
    work.chmod(0o755)
    docs = podman_manifests([d for d in yaml.safe_load_all(rendered) if d], work / "secrets")
    ports = publish_on_free_ports(docs)
    gateway = next(f"127.0.0.1:{port}" for name, port in ports.items() if name.startswith("panreduce-gateway/"))
    say(f"published ports: {ports}")
    manifest = work / "rehearsal.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    cli = str(Path(sys.executable).parent / "panreduce")
    t0 = time.monotonic()
    ok = False
    try:
        for vol in volumes_of(docs):  # a previous rehearsal's job table and store
            if run(["podman", "volume", "exists", vol], check=False).returncode == 0:
                say(f"removing the volume {vol} left by an earlier rehearsal")
                run(["podman", "volume", "rm", "-f", vol])
        if run(["podman", "network", "exists", NETWORK], check=False).returncode != 0:
            run(["podman", "network", "create", NETWORK])
        run(["podman", "kube", "play", "--network", NETWORK, str(manifest)])
        deadline = time.monotonic() + args.timeout
        listed = None
        while time.monotonic() < deadline:
            listed = run([cli, "techniques", "--gateway", gateway], check=False)
            if listed.returncode == 0 and listed.stdout.split()[:1] == ["scan"]:
                break
            time.sleep(3)
        else:
            say("the gateway did not list scan: " + (listed.stderr.strip()[-500:] if listed else ""))
            return 1
        say(f"gateway lists scan after {time.monotonic() - t0:.0f} s")
        reduced = run([cli, "reduce", "scan", str(args.scan), "--gateway", gateway, "--upload"], check=False)
        print(reduced.stdout[-2500:])
        if reduced.returncode != 0:
            say("reduce failed: " + reduced.stderr.strip()[-1000:])
            return 1
        centre = scan_centre(reduced.stdout, args.scan.name)
        if args.scan == DEFAULT_SCAN and (centre is None or abs(centre - REFERENCE_CENTRE) > 0.005):
            say(f"the fitted centre {centre} is not the reference {REFERENCE_CENTRE} +- 0.005 deg")
            return 1
        jobs = run([cli, "jobs", "list", "--gateway", gateway], check=False)
        print(jobs.stdout[-1000:])
        ok = True
        return 0
    finally:
        if not args.keep:
            run(["podman", "kube", "down", str(manifest)], check=False)
            for vol in volumes_of(docs):
                run(["podman", "volume", "rm", "-f", vol], check=False)
            run(["podman", "network", "rm", "-f", NETWORK], check=False)
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"left running; take down with: podman kube down {manifest}")
        say(f"{'PASS' if ok else 'FAIL'} in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
