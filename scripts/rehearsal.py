#!/usr/bin/env python3
"""A local rehearsal of the chart with ``podman kube play`` (docs/deploy.md, "A local rehearsal").

Renders charts/panreduce with values-rehearsal.yaml (gateway + scan), runs the pods with
podman from the images of ``make images IMAGES="gateway scan"``, lists the techniques,
reduces a Diamond I16 scan through the gateway with an upload and then by its path on a
beamline mount (the data folder, hostPath read-only, at /data/expands in the scan pod only:
the gateway has no such folder), runs the chart's two ``helm test`` pods (Describe and
``panreduce validate``, the latter with the data mount) and requires their exit 0 and PASS
rows for scan, then takes everything down (pods, volumes, network, the secret files) unless
``--keep``.

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
from collections.abc import Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "charts" / "panreduce" / "values-rehearsal.yaml"
NETWORK = "panreduce-rehearsal"
# the data folder as panreduce.datasets finds it: $PANREDUCE_DATA, else ../shared/data
DATA = Path(os.environ.get("PANREDUCE_DATA") or ROOT.parent / "shared" / "data")
DEFAULT_SCAN = DATA / "i16-scans" / "794932.nxs"
RUNTIME_UID = 10001
# where the scan pod and the helm-test validate pod see the data folder (a "beamline mount")
DATA_MOUNT = "/data/expands"
GATEWAY = "panreduce-gateway"
# eta centre of the I16 scan 794932 (pseudo-Voigt), as docs/scan.md records it (29.9965 +- 0.0010 deg)
REFERENCE_CENTRE = 29.9965


def say(msg: str) -> None:
    print(f"rehearsal: {msg}", file=sys.stderr, flush=True)


def run(
    cmd: list[str], check: bool = True, capture: bool = True, timeout: float | None = None
) -> subprocess.CompletedProcess:
    say("$ " + " ".join(cmd))
    res = subprocess.run(cmd, check=False, text=True, capture_output=capture, timeout=timeout)
    if check and res.returncode != 0:
        raise SystemExit(f"rehearsal: failed (exit {res.returncode}): {(res.stderr or '').strip()[-2000:]}")
    return res


def pod_spec(doc: dict) -> dict:
    """The pod spec of a workload (Deployment, StatefulSet, Job: spec.template.spec) or a Pod (spec)."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return spec
    return (spec.get("template") or {}).get("spec") or {}


def data_values(data: Path, mount: str = DATA_MOUNT, also: Sequence[str] = ()) -> dict:
    """Values that mount the data folder read-only (hostPath) into the scan pod only (and the
    pods of the techniques ``also`` enabled, routed by their pod names), and into the helm-test
    validate pod at the same path (tests.validate.dataPath): the chart's extraVolumes for a
    beamline filesystem; the gateway gets no mount."""
    volume = [{"name": "beamline", "hostPath": {"path": str(data), "type": "Directory"}}]
    mounts = [{"name": "beamline", "mountPath": mount, "readOnly": True}]
    techniques: dict[str, dict] = {"scan": {"extraVolumes": volume, "extraVolumeMounts": mounts}}
    for name in also:
        techniques[name] = {"enabled": True, "extraVolumes": volume, "extraVolumeMounts": mounts}
    return {
        "allowHostPath": True,
        "techniques": techniques,
        "gateway": {"routes": {name: f"panreduce-{name.replace('_', '-')}-pod-0:50051" for name in also}},
        "tests": {
            "enabled": True,
            "validate": {"enabled": True, "dataPath": mount, "extraVolumes": volume, "extraVolumeMounts": mounts},
        },
    }


def split_tests(docs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the deployment's objects, the helm-test hook Pods), as `helm install` and `helm test` split them."""

    def is_test(d: dict) -> bool:
        return "test" in str(((d.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "")).split(",")

    return [d for d in docs if not is_test(d)], [d for d in docs if is_test(d)]


def route_to_pods(docs: list[dict], pods: dict[str, str]) -> None:
    """podman has no Services: in every container's args and env values, an address
    `<service>:PORT` becomes `<pod name>:PORT` (aardvark-dns resolves pod names)."""
    for doc in docs:
        for container in pod_spec(doc).get("containers") or []:
            for i, arg in enumerate(container.get("args") or []):
                for service, pod in pods.items():
                    if isinstance(arg, str) and arg.startswith(service + ":"):
                        container["args"][i] = pod + arg[len(service) :]
            for env in container.get("env") or []:
                for service, pod in pods.items():
                    if isinstance(env.get("value"), str) and env["value"].startswith(service + ":"):
                        env["value"] = pod + env["value"][len(service) :]


def validate_rows(table: str, technique: str) -> list[list[str]]:
    """The rows of `panreduce validate`'s table for one technique (fields split on 2+ blanks or |)."""
    import re

    rows = []
    for line in table.splitlines():
        fields = [f.strip() for f in re.split(r"\s{2,}|\|", line.strip()) if f.strip()]
        if fields[:1] == [technique]:
            rows.append(fields)
    return rows


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
        spec = pod_spec(doc)
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
        for container in pod_spec(doc).get("containers") or []:
            for port in container.get("ports") or []:
                port["hostPort"] = free_port()
                port["hostIP"] = "127.0.0.1"  # access control is off in the rehearsal: loopback only
                published[f"{doc['metadata']['name']}/{port.get('name', port['containerPort'])}"] = port["hostPort"]
    return published


def volumes_of(docs: list[dict]) -> list[str]:
    return [d["metadata"]["name"] for d in docs if d.get("kind") == "PersistentVolumeClaim"]


def container_of(pod: str) -> str:
    """The name of a pod's (first) application container, not its infra container."""
    names = run(["podman", "ps", "-a", "--filter", f"pod={pod}", "--format", "{{.Names}}"]).stdout.split()
    apps = [n for n in names if not n.endswith("-infra")]
    if not apps:
        raise SystemExit(f"rehearsal: pod {pod} has no container")
    return apps[0]


def reduce_checked(cli: str, gateway: str, inputs: list[str], file_name: str, check_centre: bool) -> bool:
    reduced = run([cli, "reduce", "scan", *inputs, "--gateway", gateway], check=False)
    print(reduced.stdout[-2500:])
    if reduced.returncode != 0:
        say("reduce failed: " + reduced.stderr.strip()[-1000:])
        return False
    centre = scan_centre(reduced.stdout, file_name)
    if check_centre and (centre is None or abs(centre - REFERENCE_CENTRE) > 0.005):
        say(f"the fitted centre {centre} is not the reference {REFERENCE_CENTRE} +- 0.005 deg")
        return False
    return True


def run_tests(manifest: Path, tests: list[dict], timeout: float, techniques: Sequence[str] = ("scan",)) -> bool:
    """`helm test` without a cluster: play the hook Pods, wait for each container, print its
    log; every one must exit 0, and validate must have PASS rows for scan and no FAIL/ERROR
    row for any installed technique."""
    run(["podman", "kube", "play", "--network", NETWORK, str(manifest)])
    ok = True
    for doc in tests:
        pod = doc["metadata"]["name"]
        for container in pod_spec(doc)["containers"]:
            name = f"{pod}-{container['name']}"
            t0 = time.monotonic()
            try:
                code = run(["podman", "wait", name], timeout=timeout).stdout.strip()
            except subprocess.TimeoutExpired:
                say(f"{name} did not finish in {timeout:.0f} s")
                return False
            logs = run(["podman", "logs", name], check=False)
            out = logs.stdout + logs.stderr
            print(f"--- {name}: exit {code} after {time.monotonic() - t0:.0f} s")
            print(out[-6000:])
            if code != "0":
                ok = False
            if container["name"] == "validate":
                for technique in techniques:
                    rows = validate_rows(out, technique)
                    passed = [r for r in rows if r[-1].startswith("PASS")]
                    bad = [r for r in rows if not r[-1].startswith("PASS")]
                    say(f"validate: {len(passed)} PASS row(s) for {technique}, {len(bad)} other")
                    if bad or (technique == "scan" and not passed):
                        ok = False
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rehearsal", description=__doc__.splitlines()[0])
    p.add_argument("--scan", type=Path, default=DEFAULT_SCAN, help="the NeXus scan file to upload and reduce")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the gateway to list scan")
    p.add_argument("--test-timeout", type=float, default=300.0, help="seconds for each helm-test pod")
    p.add_argument(
        "--also",
        nargs="*",
        default=[],
        metavar="TECHNIQUE",
        help="techniques to run beside scan (their images built), with the data mount; validate runs their cases",
    )
    p.add_argument("--keep", action="store_true", help="leave the pods running (take them down by hand)")
    args = p.parse_args(argv)
    if not args.scan.is_file():
        sys.exit(f"rehearsal: no scan file {args.scan} (set PANREDUCE_DATA to the data folder, or --scan)")
    tools = ROOT / ".tools" / "containers"
    os.environ.setdefault("CONTAINERS_CONF", str(tools / "containers.conf"))
    os.environ.setdefault("CONTAINERS_STORAGE_CONF", str(tools / "storage.conf"))
    if not shutil.which("podman") or not (tools / "containers.conf").is_file():
        sys.exit("rehearsal: run scripts/install-container-engine.sh and make images IMAGES='gateway scan' first")
    work = Path(tempfile.mkdtemp(prefix="panreduce-rehearsal-"))
    work.chmod(0o755)
    data = DATA.resolve()
    (work / "data-values.yaml").write_text(yaml.safe_dump(data_values(data, also=args.also)))
    installed = ["scan", *args.also]
    helm = run([str(ROOT / "scripts" / "chart-helm.sh")]).stdout.strip()
    rendered = run(
        [
            helm,
            "template",
            "panreduce",
            str(ROOT / "charts" / "panreduce"),
            "-f",
            str(VALUES),
            "-f",
            str(work / "data-values.yaml"),
            "--kube-version",
            "1.37.0",
        ]
    ).stdout
    docs, tests = split_tests(podman_manifests([d for d in yaml.safe_load_all(rendered) if d], work / "secrets"))
    route_to_pods(tests, {GATEWAY: f"{GATEWAY}-pod-0"})
    ports = publish_on_free_ports(docs)
    gateway = next(f"127.0.0.1:{port}" for name, port in ports.items() if name.startswith(f"{GATEWAY}/"))
    say(f"published ports: {ports}")
    manifest = work / "rehearsal.yaml"
    manifest.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    test_manifest = work / "rehearsal-tests.yaml"
    test_manifest.write_text(yaml.safe_dump_all(tests, sort_keys=False))
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
            names = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
            if listed.returncode == 0 and names >= set(installed):
                break
            time.sleep(3)
        else:
            say(f"the gateway did not list {installed}: " + (listed.stderr.strip()[-500:] if listed else ""))
            return 1
        say(f"gateway lists {installed} after {time.monotonic() - t0:.0f} s")
        default = args.scan == DEFAULT_SCAN
        if not reduce_checked(cli, gateway, [str(args.scan), "--upload"], args.scan.name, default):
            return 1
        say(f"upload reduced after {time.monotonic() - t0:.0f} s")
        # the beamline mount: the scan pod has the data folder, the gateway has not
        in_gateway = run(["podman", "exec", container_of(f"{GATEWAY}-pod-0"), "test", "-e", DATA_MOUNT], check=False)
        in_scan = run(["podman", "exec", container_of("panreduce-scan-pod-0"), "test", "-d", DATA_MOUNT], check=False)
        if in_gateway.returncode == 0 or in_scan.returncode != 0:
            say(
                f"expected {DATA_MOUNT} in the scan pod only (gateway {in_gateway.returncode}, scan {in_scan.returncode})"
            )
            return 1
        say(f"{DATA_MOUNT} is mounted in the scan pod and absent from the gateway pod")
        scan = DEFAULT_SCAN if not args.scan.resolve().is_relative_to(data) else args.scan.resolve()
        by_path = f"file://{DATA_MOUNT}/{scan.relative_to(data)}"
        if not reduce_checked(cli, gateway, [by_path], scan.name, scan == DEFAULT_SCAN.resolve()):
            return 1
        say(f"{by_path} reduced by path through the gateway after {time.monotonic() - t0:.0f} s")
        jobs = run([cli, "jobs", "list", "--gateway", gateway], check=False)
        print(jobs.stdout[-1000:])
        t1 = time.monotonic()
        if not run_tests(test_manifest, tests, args.test_timeout, installed):
            say("the helm-test pods failed")
            return 1
        say(f"helm-test pods passed in {time.monotonic() - t1:.0f} s")
        ok = True
        return 0
    finally:
        if not args.keep:
            run(["podman", "kube", "down", str(test_manifest)], check=False)
            run(["podman", "kube", "down", str(manifest)], check=False)
            for vol in volumes_of(docs):
                run(["podman", "volume", "rm", "-f", vol], check=False)
            run(["podman", "network", "rm", "-f", NETWORK], check=False)
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"left running; take down with: podman kube down {test_manifest}; podman kube down {manifest}")
        say(f"{'PASS' if ok else 'FAIL'} in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
