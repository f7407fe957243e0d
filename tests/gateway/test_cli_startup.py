"""Start-up of the `panreduce` command (issue 14): what each command imports and starts.

Timings are `make bench-platform` rows (e); these tests check the causes instead:
heavy libraries not imported, no platform started, where that is the promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("grpc", "numpy", "pydantic", "h5py", "matplotlib", "scipy")


def modules_after(code: str, *, env: dict | None = None) -> dict:
    """Run ``code`` (which sets ``rc``) in a fresh interpreter; rc and the modules loaded."""
    script = (
        "import json, sys\n"
        "from panreduce_gateway import cli\n"
        "try:\n"
        f"    {code}\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules)}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env={**os.environ, **(env or {})}
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["reduce", "--help"],
        ["reduce"],
        ["no-such-command"],
        ["retention", "--dry-run", "--days", "0"],
    ],
)
def test_help_version_and_usage_errors_import_no_heavy_library(argv):
    out = modules_after(f"rc = cli.main({argv!r})")
    assert out["rc"] in (0, 2)
    loaded = {m.split(".")[0] for m in out["modules"]}
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_parameter_typo_is_refused_before_any_platform_starts(dataset):
    scan = str(dataset("i16-scans/794934.nxs"))
    out = modules_after(f"rc = cli.main(['reduce', 'scan', {scan!r}, '-p', 'no_such=1'])")
    assert out["rc"] == 2
    started = {"panreduce_gateway.gateway", "panreduce.kit.server", "panreduce_gateway.pgstore"}
    assert not started & set(out["modules"])
    loaded = {m.split(".")[0] for m in out["modules"]}
    assert not loaded & {"grpc", "matplotlib", "scipy"}  # no transport; plots and fits load on first use


def test_missing_input_is_refused_before_any_platform_starts(tmp_path):
    out = modules_after(f"rc = cli.main(['reduce', 'scan', {str(tmp_path / 'nope.nxs')!r}])")
    assert out["rc"] == 3
    assert "panreduce_gateway.gateway" not in out["modules"]


def test_techniques_embedded_starts_nothing_and_matches_describe(tmp_path):
    """The embedded listing is built from the classes, and says what a started
    service's Describe says."""
    from panreduce.client import Client
    from panreduce_gateway.embedded import Platform, describe_installed

    listed = {t["name"]: t for t in describe_installed(["scan"], use_cache=False)}
    with Platform(["scan"], store_root=tmp_path / "store") as platform, Client(platform.address) as client:
        described = {t["name"]: t for t in client.techniques()}
    assert listed["scan"] == described["scan"]
    out = modules_after("rc = cli.main(['techniques', '--json'])", env={"XDG_CACHE_HOME": str(tmp_path / "c")})
    assert out["rc"] == 0
    assert "panreduce_gateway.gateway" not in out["modules"] and "panreduce.kit.server" not in out["modules"]


def test_techniques_cache_is_used_and_refreshed(tmp_path):
    """A second listing reads the cache and imports no technique; a cache written for
    other code (another key) or damaged is not believed."""
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    first = modules_after("rc = cli.main(['techniques', '--json'])", env=env)
    assert first["rc"] == 0 and "panreduce_scan.technique" in first["modules"]
    cache = tmp_path / "panreduce" / "techniques.json"
    doc = json.loads(cache.read_text())
    assert "scan" in [t["name"] for t in doc["techniques"]]
    second = modules_after("rc = cli.main(['techniques', '--json'])", env=env)
    assert second["rc"] == 0
    assert "panreduce_scan.technique" not in second["modules"]
    assert not {m.split(".")[0] for m in second["modules"]} & {"numpy", "grpc", "h5py"}

    from panreduce_gateway.embedded import describe_installed

    true_scan = next(t for t in doc["techniques"] if t["name"] == "scan")
    for damage in ("stale key", "garbage"):
        if damage == "stale key":
            bogus = {"key": "0" * 64, "techniques": [{**t, "title": "WRONG"} for t in doc["techniques"]]}
            cache.write_text(json.dumps(bogus))
        else:
            cache.write_text("{not json")
        os.environ["XDG_CACHE_HOME"] = str(tmp_path)
        try:
            got = {t["name"]: t for t in describe_installed()}
        finally:
            del os.environ["XDG_CACHE_HOME"]
        assert got["scan"] == true_scan, damage
        assert json.loads(cache.read_text())["key"] == doc["key"]  # rewritten


def test_progress_display_shows_start_up_on_a_terminal(tmp_path, dataset, cli_cache):
    """On a terminal the progress line shows the start-up steps before the job's."""
    import pty
    import select

    scan = str(dataset("i16-scans/794934.nxs"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [
            str(sys.executable.rsplit("/", 1)[0] + "/panreduce"),
            "reduce",
            "scan",
            scan,
            "--output",
            str(tmp_path / "out"),
        ],
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=tmp_path,
        env={**os.environ, "XDG_CACHE_HOME": str(cli_cache)},
    )
    os.close(slave)
    seen = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the command ended and closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    proc.wait(120)
    os.close(master)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0, text
    for step in (
        "checking the request (scan)",
        "loading technique scan",
        "starting the scan service",
        "starting the gateway",
        "submitting the job",
    ):
        assert step in text, (step, text)
    assert text.index("loading technique scan") < text.index("starting the gateway") < text.index("%")
