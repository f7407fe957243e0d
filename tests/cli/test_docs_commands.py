"""The README's and every docs page's commands run as printed (issue 14).

Every ``panreduce ...`` and ``make ...`` line of a fenced code block in README.md and
docs/*.md (continuation lines joined, ``$ `` and ``.venv/bin/`` dropped, ``# comments``
and ``[optional]`` synopsis groups removed) is checked:

* ``make TARGET``: make knows the target (``make -n``, nothing run);
* ``panreduce ...``: the command line parses it; for ``reduce``, the technique is installed
  and every ``-p name=value`` is a valid parameter of it (the technique's own validation,
  as ``reduce --dry-run`` makes it); inputs under ``../shared/data/`` exist in the dataset
  registry's data root (or are registered there); when they all exist, ``reduce --dry-run``
  accepts the command as printed;
* the cheap ones run for real (``techniques``, ``--version``, the README's scan reductions
  of one file and of a folder, into a temporary folder instead of ``out/``).

Words in capitals (FILE.nxs, DIR, HOST:PORT) are placeholders: parsed, not looked up."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from panreduce import datasets, registry
from panreduce_gateway import cli

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PANREDUCE = Path(sys.executable).parent / "panreduce"
SHARED = "../shared/data/"


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        in_block, i = False, 0
        while i < len(lines):
            line, start = lines[i], i + 1
            i += 1
            if line.strip().startswith("```"):
                in_block = not in_block
                continue
            if not in_block:
                continue
            while line.rstrip().endswith("\\") and i < len(lines):
                line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
            text = line.strip().removeprefix("$ ").removeprefix(".venv/bin/")
            if not re.match(r"(panreduce|make)(\s|$)", text):
                continue
            text = re.sub(r"\s\[[^\]]*\]", "", text)  # synopsis: [--token-file FILE]
            found.append((f"{doc.relative_to(ROOT)}:{start}", shlex.split(text, comments=True)))
    return found


COMMANDS = _commands()
IDS = [where for where, _ in COMMANDS]


def test_the_docs_have_commands():
    """The extraction finds the README's commands (an empty list would pass every check)."""
    readme = [argv for where, argv in COMMANDS if where.startswith("README.md")]
    assert ["panreduce", "techniques"] in readme
    assert any(argv[:3] == ["panreduce", "reduce", "scan"] for argv in readme)
    assert any(argv[0] == "make" for argv in readme)
    assert len(COMMANDS) >= 20


def _shared(path: str) -> Path | None:
    """Where a ``../shared/data/...`` input lies (the registry's data roots), else None."""
    name = path.removeprefix(SHARED)
    for root in datasets.search_roots():
        if (root / name).exists():
            return root / name
    return None


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=IDS)
def test_docs_command_is_valid(where, argv):
    if argv[0] == "make":
        targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        for target in targets:
            r = subprocess.run(
                ["make", "-n", "UV=:", target], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
            )
            assert r.returncode == 0, f"{where}: make has no target {target!r}: {r.stderr.strip()}"
        return
    try:
        args = cli.build_parser().parse_args(argv[1:])
    except cli.UsageError as exc:
        pytest.fail(f"{where}: `{shlex.join(argv)}` does not parse: {exc.message}")
    except SystemExit:  # --help / --version print and exit 0
        return
    if getattr(args, "func", None) is not cli.cmd_reduce:
        return
    assert args.technique in registry.names(), f"{where}: no technique {args.technique!r}"
    params = cli.load_params(args)
    registry.load(args.technique).validate_parameters(params)  # raises InvalidParameters naming the field
    shared = [i for i in args.inputs if i.startswith(SHARED)]
    missing = [i for i in shared if _shared(i) is None]
    for i in missing:
        name = i.removeprefix(SHARED).rstrip("/")
        assert datasets.names(name), f"{where}: {i} is neither in the data root nor in the dataset registry"
    if shared and not missing and len(shared) == len(args.inputs) and "--gateway" not in argv:
        dry = [_local(a) for a in argv[1:]] + ["--dry-run"]
        assert cli.main(dry) == 0, f"{where}: --dry-run refused `{shlex.join(argv)}`"


def _local(arg: str) -> str:
    """A ``../shared/data/...`` argument as the data root's path (a folder keeps its "/")."""
    if not arg.startswith(SHARED):
        return arg
    return str(_shared(arg)) + ("/" if arg.endswith("/") else "")


def _readme(match) -> list[str]:
    hits = [argv for where, argv in COMMANDS if where.startswith("README.md") and match(argv)]
    assert hits, "the README lost the command this test runs"
    return hits[0]


def _run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PANREDUCE), *argv[1:]], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


def test_readme_cheap_commands_run():
    r = _run(_readme(lambda a: a == ["panreduce", "techniques"]), ROOT)
    assert r.returncode == 0, r.stderr
    assert set(registry.names()) <= {line.split()[0] for line in r.stdout.splitlines() if line[:1].strip()}
    r = _run(_readme(lambda a: a == ["panreduce", "--version"]), ROOT)
    assert r.returncode == 0 and r.stdout.startswith("panreduce "), r.stderr


@pytest.mark.data
def test_readme_scan_reductions_run(dataset, tmp_path):
    dataset("i16-scans/794932.nxs")
    one = _readme(lambda a: a[:3] == ["panreduce", "reduce", "scan"] and "--output" in a and "--gateway" not in a)
    argv = [*one[: one.index("--output") + 1], str(tmp_path / "one"), *one[one.index("--output") + 2 :], "--json"]
    argv = [_local(a) for a in argv]
    r = _run(argv, ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads(r.stdout)["summary"]
    assert summary["model"] == "gaussian" and summary["n_scans"] == 1
    folder = _readme(
        lambda a: a[:3] == ["panreduce", "reduce", "scan"] and a[3].startswith(SHARED) and a[3].endswith("/")
    )
    argv = [_local(a) for a in folder] + ["--output", str(tmp_path / "dir")]
    r = _run(argv, ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["summary"]["n_scans"] >= 5  # the folder's scans; its README.md skipped
