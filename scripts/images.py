#!/usr/bin/env python3
"""Build and check the PaNReduce container images (``make images``, ``make images-check``).

Image names, tags and build inputs come from images/images.toml (the one place). Builds use
podman (buildah inside) with vfs storage, chroot isolation and runc, configured through a
containers.conf/storage.conf written into .tools/containers/ (git-ignored); the Debian base is
made locally with debootstrap and ``podman import`` when it is not already present, since no
container registry is reachable on the build machines.

    python scripts/images.py list                     # names and tags, one per line
    python scripts/images.py setup                    # install podman & co. (apt), write the settings
    python scripts/images.py build [NAME...] [--gpu]  # base + the named images (default: all)
    python scripts/images.py check                    # build gateway + scan, run them, health check

Standard library only (runs with any Python >= 3.11).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "images" / "images.toml"
TOOLS = ROOT / ".tools" / "containers"
IGNOREFILE = ROOT / "images" / "containerignore"
BASE_FILE = ROOT / "images" / "base" / "Containerfile"
APT_PACKAGES = [
    "podman",
    "buildah",
    "runc",
    "uidmap",
    "debootstrap",
    "containernetworking-plugins",
    "iptables",
    "catatonit",
    "conmon",
    "slirp4netns",
    "fuse-overlayfs",
]

# Required here (see docs/deploy.md): root cannot raise limits to podman's defaults, and crun
# refuses this machine's hybrid cgroup layout.
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
"""
STORAGE_CONF = """\
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""


@dataclass(frozen=True)
class Image:
    name: str
    package: str
    member: str
    containerfile: str
    technique: str | None = None
    gpu: bool = False


@dataclass(frozen=True)
class Config:
    registry: str
    tag: str
    gpu_tag_suffix: str
    uv_version: str
    base_image: str
    cuda_image: str
    suite: str
    mirror: str
    images: dict[str, Image]
    source: str = ""
    licenses: str = "NOASSERTION"
    debian_snapshot: str = ""
    python: str = "3.11"

    def ref(self, name: str, gpu: bool = False) -> str:
        return f"{self.registry}/{name}:{self.tag}{self.gpu_tag_suffix if gpu else ''}"


def load_config(path: Path = CONFIG) -> Config:
    doc = tomllib.loads(path.read_text())
    build, base = doc["build"], doc["base"]
    images = {name: Image(name=name, **entry) for name, entry in doc["images"].items()}
    return Config(
        registry=os.environ.get("IMAGE_REGISTRY", build["registry"]).rstrip("/"),
        tag=os.environ.get("IMAGE_TAG", build["tag"]),
        gpu_tag_suffix=build["gpu_tag_suffix"],
        uv_version=build["uv_version"],
        base_image=os.environ.get("BASE_IMAGE", base["image"]),
        cuda_image=os.environ.get("CUDA_BASE_IMAGE", base["cuda_image"]),
        suite=base["debootstrap_suite"],
        mirror=os.environ.get("DEBIAN_MIRROR", base["debootstrap_mirror"]),
        images=images,
        source=os.environ.get("IMAGE_SOURCE", build.get("source", "")),
        licenses=build.get("licenses", "NOASSERTION"),
        debian_snapshot=os.environ.get("DEBIAN_SNAPSHOT", base.get("debian_snapshot", "")),
        python=base.get("python", "3.11"),
    )


def git(*args: str) -> str:
    res = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else ""


def oci_args(cfg: Config) -> dict[str, str]:
    """The build args behind the org.opencontainers.image.* labels: source, revision (the
    commit, "-dirty" when the tree has changes), created (SOURCE_DATE_EPOCH, else the commit
    time: the same commit gives the same label), licenses."""
    revision = git("rev-parse", "HEAD")
    if revision and git("status", "--porcelain", "--untracked-files=no"):
        revision += "-dirty"
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct") or str(int(time.time()))
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))
    source = cfg.source or git("remote", "get-url", "origin")
    return {"SOURCE": source, "REVISION": revision, "CREATED": created, "LICENSES": cfg.licenses}


UNPINNED_MIRROR = "http://deb.debian.org/debian"


def reachable(url: str, timeout: float = 15.0) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_debian(cfg: Config) -> Config:
    """The snapshot mirror when it can be reached; otherwise (a machine whose network lets only
    deb.debian.org through, as here) the current bookworm from deb.debian.org, with a warning:
    the Debian packages are then not pinned (DEBIAN_MIRROR/DEBIAN_SNAPSHOT set by hand win)."""
    if "DEBIAN_MIRROR" in os.environ or "DEBIAN_SNAPSHOT" in os.environ or "snapshot.debian.org" not in cfg.mirror:
        return cfg
    if reachable(f"{cfg.mirror}/dists/{cfg.suite}/Release"):
        return cfg
    say(
        f"warning: {cfg.mirror} cannot be reached: the Debian base and its packages come from "
        f"{UNPINNED_MIRROR} ({cfg.suite} of today, NOT pinned to {cfg.debian_snapshot})"
    )
    return replace(cfg, mirror=UNPINNED_MIRROR, debian_snapshot="")


def base_pin_warning(ref: str) -> str | None:
    """A registry base must be pinned by digest (a localhost/ base is made here from the snapshot)."""
    if ref.startswith("localhost/") or "@sha256:" in ref:
        return None
    return f"{ref} is not pinned by digest (NAME:TAG@sha256:...): the build is not reproducible"


# -- the container tools --------------------------------------------------------------
def say(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], *, check: bool = True, capture: bool = False, **kw) -> subprocess.CompletedProcess:
    say("$ " + " ".join(cmd))
    return subprocess.run(cmd, check=check, text=True, capture_output=capture, **kw)


def setup_tools() -> None:
    """Install podman & co. (root + apt only) and point them at this repo's settings."""
    if not all(shutil.which(t) for t in ("podman", "buildah", "runc", "debootstrap")):
        if os.geteuid() == 0 and shutil.which("apt-get"):
            say("installing podman, buildah, runc, debootstrap with apt-get (once)")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            # apt's output to stderr: stdout carries only what `setup` prints (for eval)
            run(["apt-get", "update", "-qq"], env=env, stdout=sys.stderr)
            run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], env=env, stdout=sys.stderr)
        else:
            sys.exit(
                "images: podman and debootstrap are needed (Debian: apt-get install " + " ".join(APT_PACKAGES) + ")"
            )
    TOOLS.mkdir(parents=True, exist_ok=True)
    for name, text in (("containers.conf", CONTAINERS_CONF), ("storage.conf", STORAGE_CONF)):
        path = TOOLS / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    os.environ.setdefault("CONTAINERS_CONF", str(TOOLS / "containers.conf"))
    os.environ.setdefault("CONTAINERS_STORAGE_CONF", str(TOOLS / "storage.conf"))
    os.environ.setdefault("BUILDAH_ISOLATION", "chroot")
    # docker format keeps HEALTHCHECK (OCI image config has no health check)
    os.environ.setdefault("BUILDAH_FORMAT", "docker")


def image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref]).returncode == 0


def ensure_debian_base(cfg: Config) -> None:
    """The Debian base: present, pulled, or (for a localhost/ name) debootstrapped and imported."""
    if image_exists(cfg.base_image):
        return
    if not cfg.base_image.startswith("localhost/"):
        run(["podman", "pull", cfg.base_image])
        return
    say(f"making {cfg.base_image} with debootstrap (about 2 minutes, once)")
    with tempfile.TemporaryDirectory(prefix="panreduce-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        run(["debootstrap", "--variant=minbase", cfg.suite, str(rootfs), cfg.mirror])
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / junk).glob("*"):
                if p.is_file():
                    p.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        run(["podman", "import", "--change", "CMD=/bin/bash", "-", cfg.base_image], stdin=tar.stdout)
        tar.stdout.close()  # type: ignore[union-attr]
        if tar.wait() != 0:
            sys.exit("images: tar of the debootstrap root failed")


def podman_build(
    ref: str, containerfile: Path, args: dict[str, str], target: str | None = None, labels: dict[str, str] | None = None
) -> None:
    # vfs storage copies the whole root file system for every intermediate layer, so here each
    # stage is committed once (--layers=false; IMAGES_LAYERS=1 caches every instruction, as on
    # overlay storage). Downloads are cached across builds by uv's cache mount either way.
    layers = os.environ.get("IMAGES_LAYERS", "0") == "1"
    cmd = [
        "podman",
        "build",
        "--format",
        "docker",
        "--isolation",
        "chroot",
        f"--layers={str(layers).lower()}",
        "--ignorefile",
        str(IGNOREFILE),
        "-f",
        str(containerfile),
        "-t",
        ref,
    ]
    for k, v in (labels or {}).items():
        cmd += ["--label", f"{k}={v}"]
    if target:
        cmd += ["--target", target]
    for k, v in args.items():
        cmd += ["--build-arg", f"{k}={v}"]
    # The host's CA bundle, read-only at /run/host-ca/ during the build only (never in an
    # image): pip and uv inside use it when present (builds behind a TLS-intercepting proxy,
    # as here). IMAGES_HOST_CA=0 turns it off.
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if os.environ.get("IMAGES_HOST_CA", "1") != "0" and ca.is_file():
        cmd += ["-v", f"{ca}:/run/host-ca/ca-certificates.crt:ro"]
    cmd.append(str(ROOT))
    t0 = time.monotonic()
    run(cmd)
    say(f"built {ref} in {time.monotonic() - t0:.0f} s")


def build_bases(cfg: Config, gpu: bool) -> None:
    cfg = resolve_debian(cfg)
    ensure_debian_base(cfg)
    from_image = cfg.base_image
    if gpu:
        if image_exists(cfg.cuda_image) or try_pull(cfg.cuda_image):
            from_image = cfg.cuda_image
        else:
            say(
                f"{cfg.cuda_image} cannot be had here: the GPU variants are built from "
                f"{cfg.base_image} (torch then runs on the CPU)"
            )
    warning = base_pin_warning(from_image)
    if warning:
        say("warning: " + warning)
    args = {"BASE_IMAGE": from_image, "UV_VERSION": cfg.uv_version, "DEBIAN_SNAPSHOT": cfg.debian_snapshot}
    # rebuilt only when their inputs change (the Containerfile, the build args, the base image)
    base_id = run(["podman", "image", "inspect", "-f", "{{.Id}}", from_image], capture=True).stdout.strip()
    digest = hashlib.sha256(BASE_FILE.read_bytes() + json.dumps([args, base_id]).encode()).hexdigest()[:16]
    for target, name in (("runtime", "base"), ("builder", "builder")):
        ref = cfg.ref(name, gpu)
        have = run(
            ["podman", "image", "inspect", "-f", '{{index .Labels "io.panreduce.inputs"}}', ref],
            check=False,
            capture=True,
        ).stdout.strip()
        if have == f"{target}-{digest}" and not os.environ.get("IMAGES_REBUILD_BASE"):
            say(f"{ref} is up to date")
            continue
        # every image inherits this label: whether its Debian packages are pinned to a snapshot
        snapshot = cfg.debian_snapshot or f"none ({cfg.mirror}, not pinned)"
        if from_image != cfg.base_image:
            snapshot = f"n/a ({from_image} is not the Debian base)"
        labels = {"io.panreduce.inputs": f"{target}-{digest}", "io.panreduce.debian.snapshot": snapshot}
        podman_build(ref, BASE_FILE, args, target=target, labels=labels)


def try_pull(ref: str) -> bool:
    if ref.startswith("localhost/"):
        return False
    return run(["podman", "pull", "-q", ref], check=False, capture=True).returncode == 0


def sbom_for(image: Image, gpu: bool, python: str | None = None) -> str:
    """Write dist/sbom/<name>[-cuda].cdx.json (scripts/sbom.py, from uv.lock); its sha256."""
    extra = (["--gpu"] if gpu else []) + (["--python", python] if python else [])
    res = run([sys.executable, str(ROOT / "scripts" / "sbom.py"), image.name, *extra], capture=True)
    say(res.stdout.strip())
    path = ROOT / "dist" / "sbom" / f"{image.name}{'-cuda' if gpu else ''}.cdx.json"
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_image(cfg: Config, image: Image, gpu: bool = False) -> str:
    from_image = cfg.cuda_image if gpu and image_exists(cfg.cuda_image) else cfg.base_image
    base_digest = run(["podman", "image", "inspect", "-f", "{{.Digest}}", from_image], capture=True, check=False)
    args = {
        "BUILDER_IMAGE": cfg.ref("builder", gpu),
        "RUNTIME_IMAGE": cfg.ref("base", gpu),
        "PACKAGE": image.package,
        "MEMBER": image.member,
        "VERSION": cfg.tag,
        **oci_args(cfg),
        "BASE_NAME": from_image,
        "BASE_DIGEST": base_digest.stdout.strip(),
        # a GPU variant built on the Debian base (no CUDA base here) has the Debian Python
        "SBOM_SHA256": sbom_for(image, gpu, None if from_image == cfg.cuda_image or not gpu else cfg.python),
    }
    if image.technique:
        args["TECHNIQUE"] = image.technique
    if gpu:
        args["UV_EXTRAS"] = "--extra gpu"
        args["SMOKE_TORCH"] = "1"
    ref = cfg.ref(image.name, gpu)
    podman_build(ref, ROOT / image.containerfile, args)
    return ref


def cmd_setup(_cfg: Config, _args: argparse.Namespace) -> int:
    """Install the engine (apt, once) and write the settings; print the exports for a shell."""
    setup_tools()
    for var in ("CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF", "BUILDAH_ISOLATION", "BUILDAH_FORMAT"):
        print(f"export {var}={os.environ[var]}")
    say(run(["podman", "--version"], capture=True).stdout.strip())
    return 0


def cmd_list(cfg: Config, _args: argparse.Namespace) -> int:
    for img in cfg.images.values():
        print(f"{img.name:<14} {cfg.ref(img.name)}")
        if img.gpu:
            print(f"{img.name + ' (gpu)':<14} {cfg.ref(img.name, gpu=True)}")
    return 0


def cmd_build(cfg: Config, args: argparse.Namespace) -> int:
    names = args.names or list(cfg.images)
    unknown = [n for n in names if n not in cfg.images]
    if unknown:
        sys.exit(f"images: unknown image(s) {', '.join(unknown)}; known: {', '.join(cfg.images)}")
    setup_tools()
    build_bases(cfg, gpu=False)
    built = [build_image(cfg, cfg.images[n]) for n in names]
    gpu_images = [cfg.images[n] for n in names if cfg.images[n].gpu] if args.gpu else []
    if gpu_images:
        build_bases(cfg, gpu=True)
        built += [build_image(cfg, img, gpu=True) for img in gpu_images]
    print("built:")
    for ref in built:
        print(f"  {ref}")
    return 0


# -- the check: run the gateway and one technique, as the chart would --------------------
def wait_healthy(container: str, timeout: float) -> tuple[bool, str]:
    """Run the image's own HEALTHCHECK until it passes (or the container exits)."""
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        state = run(["podman", "inspect", "-f", "{{.State.Status}}", container], capture=True, check=False)
        if state.stdout.strip() not in ("running", "created", "configured"):
            return False, f"container is {state.stdout.strip()}"
        res = run(["podman", "healthcheck", "run", container], check=False, capture=True)
        out = (res.stdout + res.stderr).strip()
        if res.returncode == 0:
            return True, out or "healthy"
        time.sleep(2)
    return False, out


OCI_LABELS = ("title", "version", "source", "revision", "created", "licenses", "base.name")


def label_check(cfg: Config, name: str) -> tuple[str, bool, str]:
    """The image's org.opencontainers.image.* labels are set, and its SBOM lies beside it
    (dist/sbom/<name>.cdx.json) with the sha256 its io.panreduce.sbom.sha256 label names."""
    what = f"{name}: OCI labels set, SBOM dist/sbom/{name}.cdx.json matches its sha256 label"
    res = run(["podman", "image", "inspect", "-f", "{{json .Labels}}", cfg.ref(name)], check=False, capture=True)
    if res.returncode != 0:
        return what, False, res.stderr.strip()[-200:]
    labels = json.loads(res.stdout or "{}") or {}
    missing = [k for k in OCI_LABELS if not labels.get(f"org.opencontainers.image.{k}")]
    sbom = ROOT / "dist" / "sbom" / f"{name}.cdx.json"
    have = hashlib.sha256(sbom.read_bytes()).hexdigest() if sbom.is_file() else "no file"
    same = have == labels.get("io.panreduce.sbom.sha256")
    detail = f"revision {labels.get('org.opencontainers.image.revision', '?')[:12]}, sbom {have[:12]}"
    if missing:
        detail = "missing " + ", ".join(missing)
    elif not same:
        detail = f"sbom {have[:12]} but label {str(labels.get('io.panreduce.sbom.sha256'))[:12]}"
    return what, not missing and same, detail


def cmd_check(cfg: Config, args: argparse.Namespace) -> int:
    """Build the gateway and one technique image, run both (read-only root, non-root, no
    capabilities, like the chart), and check: the image health check, Describe through the
    gateway, and a graceful SIGTERM stop."""
    technique = args.technique
    setup_tools()
    if not args.no_build:
        build_bases(cfg, gpu=False)
        for name in ("gateway", technique):
            build_image(cfg, cfg.images[name])
    svc, gw = f"panreduce-check-{technique}", "panreduce-check-gateway"
    results: list[tuple[str, bool, str]] = []
    for c in (gw, svc):
        run(["podman", "rm", "-f", "-t", "0", c], check=False, capture=True)
    # as the chart runs them: read-only root, /tmp and the store as volumes owned by the user
    # (U: like the pod's fsGroup), no capabilities, no privilege escalation
    hardening = [
        "--read-only",
        "--tmpfs",
        "/tmp:rw,mode=1777",
        "--tmpfs",
        "/var/lib/panreduce/store:rw,U",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    # the throwaway token and scope keys, removed with the containers (kept with --keep)
    token_dir = Path(tempfile.mkdtemp(prefix="panreduce-check-"))
    try:
        # The service alone in a network namespace with only loopback; the gateway joins it
        # (as containers of one Kubernetes pod would), so the check uses no host ports.
        # (without systemd, podman complains that it cannot add health-check timers: the
        # check below runs the image's HEALTHCHECK itself with `podman healthcheck run`)
        # the service credential, as the chart's Secret gives it: one file read by both
        import secrets

        (token_dir / "token").write_text(secrets.token_hex(32))
        (token_dir / "token").chmod(0o644)  # a throwaway token, readable by the containers' user
        token = [
            "-v",
            f"{token_dir / 'token'}:/etc/panreduce/service-token/token:ro",
            "-e",
            "PANREDUCE_SERVICE_TOKEN_FILE=/etc/panreduce/service-token/token",
        ]
        # and the scope key, as the chart's: the gateway signs with the private key, the
        # service holds only the public one (without it the service would not start)
        from panreduce.scopekey import generate_pem

        private, public = generate_pem()
        for name, pem in (("scope.key", private), ("scope.pub", public)):
            (token_dir / name).write_bytes(pem)
            (token_dir / name).chmod(0o644)
        scope = {
            role: [
                "-v",
                f"{token_dir / name}:/etc/panreduce/scope-key/{name}:ro",
                "-e",
                f"PANREDUCE_SCOPE_KEY_FILE=/etc/panreduce/scope-key/{name}",
            ]
            for role, name in (("gateway", "scope.key"), ("service", "scope.pub"))
        }
        run(
            [
                "podman",
                "run",
                "-d",
                "--name",
                svc,
                "--network",
                "none",
                *hardening,
                *token,
                *scope["service"],
                "-e",
                "PANREDUCE_METRICS_PORT=9090",
                cfg.ref(technique),
            ],
            capture=True,
        )
        run(
            [
                "podman",
                "run",
                "-d",
                "--name",
                gw,
                "--network",
                f"container:{svc}",
                *hardening,
                *token,
                *scope["gateway"],
                "-e",
                f"PANREDUCE_ROUTES={technique}=127.0.0.1:50051",
                cfg.ref("gateway"),
            ],
            capture=True,
        )
        ok, msg = wait_healthy(svc, args.timeout)
        results.append((f"{technique} image health check (panreduce-health 127.0.0.1:50051)", ok, msg))
        ok, msg = wait_healthy(gw, args.timeout)
        results.append(("gateway image health check (panreduce-health 127.0.0.1:50050)", ok, msg))
        res = run(
            ["podman", "exec", gw, "panreduce", "techniques", "--gateway", "127.0.0.1:50050"], check=False, capture=True
        )
        described = res.returncode == 0 and res.stdout.split()[:1] == [technique]
        results.append(
            (
                f"Describe through the gateway lists {technique}",
                described,
                (res.stdout.splitlines() or [res.stderr.strip()])[0],
            )
        )
        user = run(["podman", "exec", svc, "id", "-u"], check=False, capture=True).stdout.strip()
        results.append(("service runs as non-root uid 10001", user == "10001", f"uid {user}"))
        metrics = run(
            [
                "podman",
                "exec",
                svc,
                "python",
                "-c",
                "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9090/metrics').read().decode()[:4000])",
            ],
            check=False,
            capture=True,
        )
        results.append(
            (
                "service /metrics on port 9090",
                metrics.returncode == 0 and "# TYPE" in metrics.stdout,
                f"{len(metrics.stdout.splitlines())} lines"
                if metrics.returncode == 0
                else metrics.stderr.strip()[-200:],
            )
        )
        for name in ("gateway", technique):
            results.append(label_check(cfg, name))
        for c, name in ((gw, "gateway"), (svc, technique)):
            t0 = time.monotonic()
            run(["podman", "stop", "-t", "40", c], check=False, capture=True)
            took = time.monotonic() - t0
            code = run(["podman", "inspect", "-f", "{{.State.ExitCode}}", c], capture=True, check=False).stdout.strip()
            results.append(
                (
                    f"{name}: SIGTERM stops it gracefully (exit 0, before the 40 s kill)",
                    code == "0" and took < 39,
                    f"exit {code} after {took:.1f} s",
                )
            )
        logs = run(["podman", "logs", svc], check=False, capture=True)
        tail = (logs.stdout + logs.stderr).strip().splitlines()[-3:]
        say(f"last log lines of {svc}:\n    " + "\n    ".join(tail))
    finally:
        if not args.keep:
            for c in (gw, svc):
                run(["podman", "rm", "-f", "-t", "0", c], check=False, capture=True)
            shutil.rmtree(token_dir, ignore_errors=True)
    print(f"\n{'check':<78} result")
    for what, ok, detail in results:
        print(f"{what:<78} {'PASS' if ok else 'FAIL'}  {detail}")
    failed = [r for r in results if not r[1]]
    print(f"\nimages-check: {len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="images", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="image names and tags")
    sub.add_parser("setup", help="install podman & co. with apt (root) and write .tools/containers/*.conf")
    b = sub.add_parser("build", help="build the base and the named images (default: all)")
    b.add_argument("names", nargs="*")
    b.add_argument("--gpu", action="store_true", help="also build the CUDA variants of GPU-capable techniques")
    c = sub.add_parser("check", help="build gateway + one technique, run them, check health")
    c.add_argument("--technique", default="scan")
    c.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for SERVING")
    c.add_argument("--no-build", action="store_true", help="use the images already built")
    c.add_argument("--keep", action="store_true", help="leave the containers for inspection")
    args = p.parse_args(argv)
    cfg = load_config()
    try:
        return {"list": cmd_list, "setup": cmd_setup, "build": cmd_build, "check": cmd_check}[args.cmd](cfg, args)
    except subprocess.CalledProcessError as exc:
        say(f"failed (exit {exc.returncode}): {' '.join(map(str, exc.cmd))}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
