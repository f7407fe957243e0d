"""Supply chain: an SBOM per image from uv.lock (scripts/sbom.py, `make sbom`) that lists exactly
what `uv sync --frozen --no-dev --package MEMBER` installs, and OCI labels and a pinned base for
every image (scripts/images.py, images/*/Containerfile, images/images.toml)."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest
import yaml
from deploy_support import ROOT
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_deploy_images import load_script

UV = ROOT / ".tools" / "uv" / "bin" / "uv"
IMAGES = tomllib.loads((ROOT / "images" / "images.toml").read_text())
VARIANTS = [(n, False) for n in IMAGES["images"]] + [(n, True) for n, i in IMAGES["images"].items() if i.get("gpu")]


@pytest.fixture(scope="module")
def sbom():
    return load_script("sbom")


def uv_export(package: str, gpu: bool, python: str, sbom) -> set[tuple[str, str]]:
    """What uv itself installs from the lock for this image: `uv export` (its own walk of
    uv.lock), markers evaluated for the image's Python on Linux x86_64."""
    if not UV.is_file():
        pytest.skip("uv is not installed in .tools/uv (make setup)")
    cmd = [str(UV), "export", "--frozen", "--no-dev", "--package", package, "--format", "requirements.txt"]
    cmd += ["--no-hashes", "--no-header", "--no-annotate", *(["--extra", "gpu"] if gpu else [])]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    env = sbom.environment(python)
    got = set()
    for line in out.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e "):  # a workspace member: its name and version from its pyproject
            meta = tomllib.loads((ROOT / line[3:].strip() / "pyproject.toml").read_text())["project"]
            got.add((canonicalize_name(meta["name"]), meta["version"]))
            continue
        req = Requirement(line)
        if req.marker is None or Marker(str(req.marker)).evaluate(env):
            (spec,) = req.specifier
            got.add((canonicalize_name(req.name), spec.version))
    return got


@pytest.mark.parametrize(("name", "gpu"), VARIANTS, ids=[f"{n}{'-cuda' if g else ''}" for n, g in VARIANTS])
def test_sbom_lists_exactly_the_locked_packages_of_the_image(sbom, name, gpu):
    doc = sbom.for_image(name, gpu)
    python = IMAGES["base"]["cuda_python" if gpu else "python"]
    listed = {(canonicalize_name(c["name"]), c["version"]) for c in doc["components"]}
    assert len(listed) == len(doc["components"]), "a package is listed twice"
    assert listed == uv_export(IMAGES["images"][name]["package"], gpu, python, sbom)
    member = canonicalize_name(IMAGES["images"][name]["package"])
    assert (member, IMAGES["build"]["tag"]) in listed and ("panreduce-common", IMAGES["build"]["tag"]) in listed
    if gpu:
        assert "torch" in {n for n, _ in listed}, "the CUDA variant installs the gpu extra"
    else:
        assert "torch" not in {n for n, _ in listed}
    # every purl names the locked version; every registry package carries a hash from the lock
    lock_hashes = (ROOT / "uv.lock").read_text()
    for c in doc["components"]:
        assert c["purl"] == f"pkg:pypi/{canonicalize_name(c['name'])}@{c['version']}"
        for h in c.get("hashes", []):
            assert re.fullmatch(r"[0-9a-f]{64}", h["content"]) and f"sha256:{h['content']}" in lock_hashes
    assert doc["dependencies"][0]["ref"] == doc["metadata"]["component"]["bom-ref"]
    assert sorted(doc["dependencies"][0]["dependsOn"]) == sorted(c["bom-ref"] for c in doc["components"])


def test_the_python_of_the_base_decides_the_versions(sbom):
    """numpy and scipy lock other versions for 3.11 and 3.12: the SBOM follows the image's Python."""
    versions = {
        py: {c["name"]: c["version"] for c in sbom.for_image("tomography", python=py)["components"]}
        for py in ("3.11.2", "3.12.3")
    }
    assert versions["3.11.2"]["numpy"] != versions["3.12.3"]["numpy"]


def test_sbom_is_deterministic_and_make_sbom_writes_one_per_image(sbom, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert sbom.for_image("scan") == sbom.for_image("scan")
    assert sbom.main(["--out", str(tmp_path), "--gpu"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"{n}{'-cuda' if g else ''}.cdx.json" for n, g in VARIANTS)
    doc = json.loads((tmp_path / "scan.cdx.json").read_text())
    assert doc["metadata"]["timestamp"] == "2023-11-14T22:13:20Z"


def test_sbom_is_valid_cyclonedx_1_5(sbom):
    """Against the CycloneDX 1.5 JSON schema where one is installed (cyclonedx-python-lib ships it)."""
    jsonschema = pytest.importorskip("jsonschema")
    try:
        from importlib.resources import files

        schema_dir = files("cyclonedx") / "schema" / "_res"
    except ModuleNotFoundError:
        pytest.skip("the CycloneDX schema is not installed (pip install cyclonedx-python-lib)")
    schema = json.loads((schema_dir / "bom-1.5.SNAPSHOT.schema.json").read_text())
    registry_cls = pytest.importorskip("referencing").Registry
    resources = pytest.importorskip("referencing").Resource
    registry = registry_cls()
    for ref in ("spdx.SNAPSHOT.schema.json", "jsf-0.82.SNAPSHOT.schema.json"):
        doc = json.loads((schema_dir / ref).read_text())
        registry = registry.with_resource(ref, resources.from_contents(doc))
    validator = jsonschema.Draft7Validator(schema, registry=registry)
    doc = sbom.for_image("gateway")
    validator.validate(doc)
    doc["components"][0]["hashes"] = [{"alg": "SHA-256", "content": "not-hex"}]
    assert not validator.is_valid(doc), "the schema check would catch a broken SBOM"


# -- OCI labels and the pinned base -------------------------------------------------------
LABELS = ("title", "source", "revision", "created", "version", "licenses")


@pytest.mark.parametrize(
    "path", ["images/service/Containerfile", "images/gateway/Containerfile", "images/web/Containerfile"]
)
def test_runtime_stage_labels_every_oci_key_from_build_args(path):
    text = (ROOT / path).read_text()
    runtime = text[text.rindex("\nFROM ") :]  # the last stage: what the image is
    args = set(re.findall(r"^ARG (\w+)", runtime, flags=re.M))
    for key in LABELS:
        m = re.search(rf'org\.opencontainers\.image\.{key}="([^"]*)"', runtime)
        assert m, f"{path}: no org.opencontainers.image.{key} label"
        refs = re.findall(r"\$\{(\w+)\}", m.group(1))
        assert key == "title" or (refs and set(refs) <= args), f"{path}: {key} is not set from a build arg"
    assert 'io.panreduce.sbom.sha256="${SBOM_SHA256}"' in runtime


def test_images_py_passes_the_label_args(monkeypatch):
    images = load_script("images")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    monkeypatch.setenv("IMAGE_SOURCE", "https://git.example.org/panreduce")
    cfg = images.load_config()
    args = images.oci_args(cfg)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert args["SOURCE"] == "https://git.example.org/panreduce"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", args["REVISION"]) and args["REVISION"].startswith(head)
    assert args["CREATED"] == "2023-11-14T22:13:20Z"
    assert args["LICENSES"] == IMAGES["build"]["licenses"]
    # every build arg the script passes is declared by the runtime stage (no silent no-ops)
    for path in ("images/service/Containerfile", "images/gateway/Containerfile", "images/web/Containerfile"):
        declared = set(re.findall(r"^ARG (\w+)", (ROOT / path).read_text(), flags=re.M))
        assert set(args) | {"BASE_NAME", "BASE_DIGEST", "SBOM_SHA256"} <= declared, path


def test_base_is_pinned_to_a_debian_snapshot():
    base = IMAGES["base"]
    snapshot = base["debian_snapshot"]
    assert re.fullmatch(r"\d{8}T\d{6}Z", snapshot)
    assert base["debootstrap_mirror"] == f"http://snapshot.debian.org/archive/debian/{snapshot}"
    containerfile = (ROOT / "images" / "base" / "Containerfile").read_text()
    assert "ARG DEBIAN_SNAPSHOT" in containerfile and "snapshot.debian.org/archive/debian/%s" in containerfile
    assert "Check-Valid-Until" in containerfile


def test_a_registry_base_without_a_digest_is_named():
    images = load_script("images")
    assert images.base_pin_warning("localhost/panreduce/debian:bookworm") is None
    assert images.base_pin_warning("docker.io/library/debian:bookworm-slim@sha256:" + "0" * 64) is None
    assert "not pinned by digest" in images.base_pin_warning("docker.io/nvidia/cuda:12.6.3-runtime-ubuntu24.04")


def test_the_snapshot_apt_source_works_in_a_debian_root(tmp_path):
    """The DEBIAN_SNAPSHOT step of the base Containerfile, run as /bin/sh over a Debian os-release."""
    text = (ROOT / "images" / "base" / "Containerfile").read_text()
    m = re.search(r"RUN (if \[ -n \"\$\{DEBIAN_SNAPSHOT\}\" \].*?fi) \\\n", text, flags=re.S)
    assert m
    script = m.group(1).replace("/etc/", f"{tmp_path}/etc/")
    (tmp_path / "etc" / "apt" / "apt.conf.d").mkdir(parents=True)
    (tmp_path / "etc" / "apt" / "sources.list.d").mkdir()
    (tmp_path / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text("Types: deb\n")
    (tmp_path / "etc" / "os-release").write_text("ID=debian\nVERSION_CODENAME=bookworm\n")
    env = {"DEBIAN_SNAPSHOT": "20261115T000000Z", "PATH": "/usr/bin:/bin"}
    subprocess.run(["sh", "-ec", script.replace("${DEBIAN_SNAPSHOT}", "$DEBIAN_SNAPSHOT")], env=env, check=True)
    sources = (tmp_path / "etc" / "apt" / "sources.list").read_text().splitlines()
    assert sources == [
        "deb http://snapshot.debian.org/archive/debian/20261115T000000Z bookworm main",
        "deb http://snapshot.debian.org/archive/debian-security/20261115T000000Z bookworm-security main",
    ]
    assert not (tmp_path / "etc" / "apt" / "sources.list.d" / "debian.sources").exists()


def test_image_source_label_is_the_charts_source():
    chart = yaml.safe_load((ROOT / "charts" / "panreduce" / "Chart.yaml").read_text())
    assert IMAGES["build"]["source"] in chart["sources"]
