"""images/: one image per workspace member, names and tags from images/images.toml only, and
the chart, the Containerfiles and the techniques' own declarations agreeing with it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib

import pytest
import yaml
from deploy_support import CHART, ROOT, render_chart

CONTAINERFILES = {
    p: (ROOT / p).read_text()
    for p in ("images/service/Containerfile", "images/gateway/Containerfile", "images/web/Containerfile")
}


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cfg():
    return load_script("images").load_config()


def workspace_members() -> dict[str, dict]:
    root = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return {
        m: tomllib.loads((ROOT / m / "pyproject.toml").read_text()) for m in root["tool"]["uv"]["workspace"]["members"]
    }


def techniques_of(member: dict) -> list[str]:
    return list(member["project"].get("entry-points", {}).get("panreduce.techniques", {}))


def test_one_image_per_member_and_technique(cfg):
    members = workspace_members()
    by_member = {img.member: img for img in cfg.images.values()}
    assert set(by_member) == set(members) - {"services/common"}, "every member but the kit has its own image"
    for path, img in by_member.items():
        meta = members[path]
        assert img.package == meta["project"]["name"]
        assert (ROOT / img.containerfile).is_file()
        if path == "gateway":
            assert img.technique is None and "panreduce" in meta["project"]["scripts"]
        elif path == "web":
            # the page runs as `panreduce web`, a command of the gateway's CLI: its dependency
            assert img.technique is None and "panreduce-gateway" in meta["project"]["dependencies"]
        else:
            # the technique the image serves is the one its member registers
            assert techniques_of(meta) == [img.technique] == [img.name], path
            # GPU variant <=> the member has the `gpu` extra (torch)
            assert img.gpu == ("gpu" in meta["project"].get("optional-dependencies", {})), path


def test_image_settings_agree_with_the_technique_classes(cfg):
    """wants_gpu and shardable as the services themselves declare them (Describe)."""
    from panreduce import registry

    values = yaml.safe_load((CHART / "values.yaml").read_text())["techniques"]
    gpu_values = yaml.safe_load((CHART / "values-gpu.yaml").read_text())["techniques"]
    for img in cfg.images.values():
        if img.technique is None:
            continue
        cls = registry.load(img.technique)
        assert img.gpu == bool(cls.wants_gpu), img.name
        assert values[img.name]["sharded"] == bool(cls.shardable), (
            f"{img.name}: sharded must follow Technique.shardable"
        )
        requests_gpu = gpu_values.get(img.name, {}).get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0) > 0
        assert requests_gpu == bool(cls.wants_gpu), f"values-gpu.yaml and {img.name}.wants_gpu disagree"


def test_chart_takes_names_and_tags_from_images_toml(cfg):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    doc = tomllib.loads((ROOT / "images" / "images.toml").read_text())
    assert chart["appVersion"] == doc["build"]["tag"]
    assert values["image"]["registry"] == doc["build"]["registry"]
    assert values["image"]["gpuTagSuffix"] == doc["build"]["gpu_tag_suffix"]
    assert values["image"]["tag"] == ""  # i.e. appVersion: one place
    assert values["gateway"]["image"]["repository"] == "gateway"
    techniques = {n for n, img in cfg.images.items() if img.technique}
    assert set(values["techniques"]) == techniques
    for name in techniques:
        assert values["techniques"][name]["image"] == {"repository": name, "tag": ""}
    # every member's version is the image tag
    for member in workspace_members().values():
        assert member["project"]["version"] == doc["build"]["tag"]


def test_uv_in_images_is_the_projects_pinned_uv():
    pinned = re.search(r'UV_VERSION="\$\{UV_VERSION:-([0-9.]+)\}"', (ROOT / "scripts" / "ensure-uv.sh").read_text())
    doc = tomllib.loads((ROOT / "images" / "images.toml").read_text())
    assert pinned and doc["build"]["uv_version"] == pinned.group(1)


@pytest.mark.parametrize("path", sorted(CONTAINERFILES))
def test_containerfile_builds_from_the_lock_deps_before_source(path):
    text = CONTAINERFILES[path]
    lines = [ln.strip() for ln in text.replace("\\\n", " ").splitlines() if ln.strip() and not ln.startswith("#")]
    # every workspace member's pyproject.toml is copied for the dependency layer
    for member in workspace_members():
        assert f"COPY {member}/pyproject.toml {member}/" in lines, f"{path}: add {member}/pyproject.toml"
    deps = next(i for i, ln in enumerate(lines) if "--no-install-workspace" in ln)
    assert "uv sync --frozen --no-dev" in lines[deps]
    source = lines.index("COPY proto/ proto/")
    assert deps < source, "dependencies must be installed before the source is copied"
    final = next(i for i, ln in enumerate(lines) if "uv sync" in ln and "--no-editable" in ln)
    assert final > source and "--frozen" in lines[final] and "--no-dev" in lines[final]
    runtime = max(i for i, ln in enumerate(lines) if ln.startswith("FROM "))
    tail = lines[runtime:]
    user = tail.index("USER 10001:10001")
    smoke = next(i for i, ln in enumerate(tail) if ln.startswith("RUN ") and "smoke test" in ln)
    assert user < smoke, "the smoke test runs as the runtime user"
    assert "STOPSIGNAL SIGTERM" in tail
    health = "/healthz" if path == "images/web/Containerfile" else "panreduce-health"  # the page speaks HTTP
    assert any(ln.startswith("HEALTHCHECK") for ln in tail) and any(health in ln for ln in tail)
    assert any(ln.startswith('ENTRYPOINT ["/usr/bin/tini"') for ln in tail)
    assert not any(ln.startswith("COPY") and "--from=build" not in ln for ln in tail), "runtime copies only the venv"


def test_service_and_gateway_share_one_build_stage():
    stages = [t.split("# --- runtime")[0].split("# --- build")[1] for t in CONTAINERFILES.values()]
    assert stages[0] == stages[1]
    # the page's image builds the same way and adds the gateway member's source (its CLI)
    assert stages[2] == stages[1].replace("COPY ${MEMBER}/", "COPY gateway/ gateway/\nCOPY ${MEMBER}/", 1)


def test_store_and_home_writable_by_an_arbitrary_uid():
    """OpenShift runs a pod as a random UID in group 0: the image's store and home are group 0, g+rwx."""
    base = (ROOT / "images" / "base" / "Containerfile").read_text()
    assert "install -d -o 10001 -g 0 -m 0770 /var/lib/panreduce /var/lib/panreduce/store" in base
    assert "chgrp 0 /home/panreduce && chmod 0770 /home/panreduce" in base


def test_cuda_base_matches_the_locked_torch_cuda(cfg):
    """The GPU variants' base and the lock's torch wheels agree on the CUDA major version, and
    the base is the minimal flavour (the wheels bring the CUDA libraries)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    toolkit = {p["name"]: p["version"] for p in lock["package"]}["cuda-toolkit"]
    tag = cfg.cuda_image.split("@")[0].rsplit(":", 1)[1]  # e.g. 13.0.0-base-ubuntu24.04
    assert tag.split(".")[0] == toolkit.split(".")[0], f"{cfg.cuda_image} vs cuda-toolkit {toolkit} in uv.lock"
    assert "-base-" in tag, "the runtime/devel flavours would add the CUDA libraries torch already carries"


def test_build_context_is_limited():
    ignore = [
        ln.strip()
        for ln in (ROOT / "images" / "containerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert ignore[0] == "*"  # nothing (.venv, .git, .tools, data) unless named below
    assert {"!pyproject.toml", "!uv.lock", "!proto/", "!services/", "!gateway/", "!web/"} <= set(ignore)
    assert "services/common/src/panreduce/v1/" in ignore  # generated in the build, never copied


def test_images_list_prints_every_ref(cfg):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "images.py"), "list"], capture_output=True, text=True, check=True
    ).stdout
    refs = {line.split()[-1] for line in out.splitlines()}
    expected = {cfg.ref(n) for n in cfg.images} | {cfg.ref(n, gpu=True) for n, i in cfg.images.items() if i.gpu}
    assert refs == expected
    assert "localhost/panreduce/tomography:0.1.0-cuda" in refs


def test_make_help_lists_the_deploy_targets():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("images", "images-check", "chart-check"):
        assert re.search(rf"^\s+make {re.escape(target)}\s+\S", out, re.M), target


@pytest.mark.skipif(
    os.environ.get("PANREDUCE_IMAGES_CHECK") != "1",
    reason="builds and runs container images (minutes): opt in with PANREDUCE_IMAGES_CHECK=1 "
    "or run `make images-check`",
)
def test_images_check_builds_and_runs_the_gateway_and_scan():
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "images.py"), "check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "images-check: 9 passed, 0 failed" in res.stdout


@pytest.mark.skipif(
    os.environ.get("PANREDUCE_IMAGES_CHECK") != "1",
    reason="runs the chart's gateway and scan pods with podman kube play (a minute, after the images "
    "are built): opt in with PANREDUCE_IMAGES_CHECK=1",
)
def test_rehearsal_reduces_a_scan_through_the_chart_pods():
    """After the check above: the rendered chart under podman kube play, an I16 scan uploaded and
    reduced through the gateway (centre within 0.005 deg of docs/scan.md), all taken down."""
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rehearsal.py")], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in res.stdout and "rehearsal: PASS" in res.stderr


def test_unreachable_snapshot_falls_back_to_an_unpinned_mirror(cfg, monkeypatch):
    """Where snapshot.debian.org cannot be reached (this machine: only deb.debian.org), the base
    comes from deb.debian.org with the snapshot dropped (and the build says it is not pinned);
    a mirror or snapshot given by hand is taken as it is."""
    images = load_script("images")
    monkeypatch.delenv("DEBIAN_MIRROR", raising=False)
    monkeypatch.delenv("DEBIAN_SNAPSHOT", raising=False)
    dead = images.replace(cfg, mirror="http://snapshot.debian.org.invalid/archive/debian/20261115T000000Z")
    fell = images.resolve_debian(dead)
    assert (fell.mirror, fell.debian_snapshot) == (images.UNPINNED_MIRROR, "")
    monkeypatch.setenv("DEBIAN_SNAPSHOT", "20261115T000000Z")
    assert images.resolve_debian(dead) == dead
    monkeypatch.setenv("DEBIAN_MIRROR", "http://mirror.example.org/debian")
    assert images.load_config().mirror == "http://mirror.example.org/debian"


def test_rehearsal_gives_each_pod_only_the_secret_items_it_mounts(tmp_path):
    """podman 4.3 gives every pod all keys of a Secret volume: the rehearsal's hostPath folders
    hold only the decoded items of the rendered pod spec, so the scan pod gets the scope's
    certificate and never its private key; no Secret volume or object is left for podman."""
    rehearsal = load_script("rehearsal")
    values = yaml.safe_load((CHART / "values-rehearsal.yaml").read_text())
    docs = [dict(d) for d in render_chart(values, with_tests=False)]
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    out = rehearsal.podman_manifests(docs, tmp_path)
    assert not [d for d in out if d["kind"] == "Secret"]
    for d in out:
        for vol in (d.get("spec") or {}).get("template", {}).get("spec", {}).get("volumes", []):
            assert "secret" not in vol, (d["metadata"]["name"], vol)
    scan_key = tmp_path / "panreduce-scan" / "scope-key"
    assert sorted(p.name for p in scan_key.iterdir()) == ["tls.crt"]
    assert (scan_key / "tls.crt").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    gateway_key = tmp_path / "panreduce-gateway" / "scope-key"
    assert sorted(p.name for p in gateway_key.iterdir()) == ["tls.crt", "tls.key"]
    assert (gateway_key / "tls.key").read_bytes().startswith(b"-----BEGIN")
    token = secrets["panreduce-service-token"]["data"]["token"]
    import base64

    assert (tmp_path / "panreduce-scan" / "service-token" / "token").read_bytes() == base64.b64decode(token)
    assert oct((scan_key / "tls.crt").stat().st_mode & 0o777) == "0o440"
    # podman publishes every containerPort on the host: each gets a free port, not 50050/50051
    ports = rehearsal.publish_on_free_ports(out)
    assert set(ports) >= {"panreduce-gateway/grpc", "panreduce-scan/grpc"}
    assert len(set(ports.values())) == len(ports)
    for d in out:
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert all(port["hostIP"] == "127.0.0.1" for port in c.get("ports", [])), d["metadata"]["name"]


def test_rehearsal_reads_the_centre_from_the_reduce_table():
    rehearsal = load_script("rehearsal")
    table = (
        "scans (1; all columns with --json):\n"
        "  file        scan    axis  center   center_err  fwhm\n"
        "  794932.nxs  794932  eta   29.9965  0.00103185  0.112193\n"
    )
    assert rehearsal.scan_centre(table, "794932.nxs") == pytest.approx(29.9965)
    assert rehearsal.scan_centre(table, "794933.nxs") is None


def test_helm_cli_is_the_pinned_release(helm_cli):
    script = (ROOT / "scripts" / "chart-helm.sh").read_text()
    pinned = re.search(r'HELM_NPM_VERSION="\$\{HELM_NPM_VERSION:-([0-9.]+)-\d+\}"', script).group(1)
    assert helm_cli.startswith(str(ROOT / ".tools" / "helm"))  # git-ignored, installed by the script
    version = subprocess.run([helm_cli, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"v{pinned}+"), version
    # a second call reuses the installed CLI
    again = subprocess.run([str(ROOT / "scripts" / "chart-helm.sh")], capture_output=True, text=True, check=True)
    assert again.stdout.strip() == helm_cli and again.stderr == ""


def test_rehearsal_mounts_the_data_in_the_scan_pod_and_the_validate_pod_only(tmp_path):
    """The rehearsal's beamline mount (data_values): the data folder read-only in the scan pod
    and the helm-test validate pod at tests.validate.dataPath, never in the gateway; the hook
    Pods are split off (played after the deployment, as `helm test`) and routed to the gateway's
    pod name, since podman has no Services."""
    rehearsal = load_script("rehearsal")
    values = yaml.safe_load((CHART / "values-rehearsal.yaml").read_text())
    data = tmp_path / "data"
    docs = [dict(d) for d in render_chart(values, rehearsal.data_values(data), with_tests=True)]
    docs, tests = rehearsal.split_tests(rehearsal.podman_manifests(docs, tmp_path / "secrets"))
    assert sorted(d["metadata"]["name"] for d in tests) == ["panreduce-test-describe", "panreduce-test-validate"]
    assert all(d["kind"] == "Pod" for d in tests) and not [d for d in docs if d["kind"] == "Pod"]

    def mounts(doc):
        spec = rehearsal.pod_spec(doc)
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        return {
            m["mountPath"]: (vols[m["name"]], m.get("readOnly"))
            for c in spec["containers"]
            for m in c.get("volumeMounts", [])
        }

    by_name = {d["metadata"]["name"]: d for d in docs + tests if rehearsal.pod_spec(d).get("containers")}
    for name in ("panreduce-scan", "panreduce-test-validate"):
        vol, read_only = mounts(by_name[name])[rehearsal.DATA_MOUNT]
        assert vol["hostPath"]["path"] == str(data) and read_only is True, name
    assert rehearsal.DATA_MOUNT not in mounts(by_name["panreduce-gateway"])
    assert not [
        v
        for v in rehearsal.pod_spec(by_name["panreduce-gateway"])["volumes"]
        if "hostPath" in v and v["hostPath"]["path"] == str(data)
    ]
    env = {
        e["name"]: e.get("value")
        for e in rehearsal.pod_spec(by_name["panreduce-test-validate"])["containers"][0]["env"]
    }
    assert env["PANREDUCE_DATA"] == rehearsal.DATA_MOUNT
    rehearsal.route_to_pods(tests, {"panreduce-gateway": "panreduce-gateway-pod-0"})
    for d in tests:
        args = rehearsal.pod_spec(d)["containers"][0]["args"]
        assert "panreduce-gateway-pod-0:50050" in args and "panreduce-gateway:50050" not in args, d["metadata"]["name"]


def test_rehearsal_reads_the_validate_table():
    rehearsal = load_script("rehearsal")
    table = (
        "technique  case        figure       expected  got       tolerance  pass\n"
        "scan       i16-794934  peak centre  30.0106   30.0105   ± 0.002    PASS\n"
        "scan       i16-794934  peak FWHM    0.096933  0.2       ± 5%       FAIL\n"
        "sans       sans-1      I(Q)         1         -          ± 5%       SKIP (technique 'sans' is not installed)\n"
    )
    rows = rehearsal.validate_rows(table, "scan")
    assert [r[2] for r in rows] == ["peak centre", "peak FWHM"]
    assert [r[-1] for r in rows] == ["PASS", "FAIL"]
    assert rehearsal.validate_rows(table, "tomography") == []


def test_rehearsal_also_runs_other_techniques_with_the_mount(tmp_path):
    """--also saxs stem4d: their pods are enabled, mount the data read-only like scan, and the
    gateway routes them by pod name (podman has no Services); the gateway still mounts nothing."""
    rehearsal = load_script("rehearsal")
    values = yaml.safe_load((CHART / "values-rehearsal.yaml").read_text())
    docs = [dict(d) for d in render_chart(values, rehearsal.data_values(tmp_path, also=["saxs", "stem4d"]))]
    pods = {d["metadata"]["name"]: rehearsal.pod_spec(d) for d in docs if d["kind"] == "Deployment"}
    assert set(pods) == {"panreduce-gateway", "panreduce-scan", "panreduce-saxs", "panreduce-stem4d"}
    for name in ("panreduce-scan", "panreduce-saxs", "panreduce-stem4d"):
        (mount,) = [m for m in pods[name]["containers"][0]["volumeMounts"] if m["mountPath"] == rehearsal.DATA_MOUNT]
        assert mount["readOnly"] is True, name
    gateway = pods["panreduce-gateway"]["containers"][0]
    assert not [m for m in gateway["volumeMounts"] if m["mountPath"] == rehearsal.DATA_MOUNT]
    routes = {e["name"]: e.get("value") for e in gateway["env"]}["PANREDUCE_ROUTES"]
    for route in (
        "scan=panreduce-scan-pod-0:50051",
        "saxs=panreduce-saxs-pod-0:50051",
        "stem4d=panreduce-stem4d-pod-0:50051",
    ):
        assert route in routes, routes
