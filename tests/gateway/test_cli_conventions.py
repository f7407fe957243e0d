"""CLI conventions and folder inputs (issue 14): --version, --json errors, the demo's
printed command, a technique taking only its own files of a folder."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from panreduce.kit.technique import HDF5_SIGNATURE, is_hdf5
from panreduce.storage import Stores, stage_inputs

REPO = Path(__file__).resolve().parents[2]


def test_version(cli):
    from importlib.metadata import version

    res = cli("--version")
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.startswith(f"panreduce {version('panreduce-gateway')} ")
    assert f"panreduce-common {version('panreduce-common')}" in res.stdout


def one_json_object(res: subprocess.CompletedProcess) -> dict:
    lines = [line for line in res.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, res.stdout
    doc = json.loads(lines[0])
    assert set(doc) == {"error"} and {"code", "message", "field", "exit_code"} <= set(doc["error"])
    assert doc["error"]["exit_code"] == res.returncode
    return doc["error"]


def test_json_errors_are_one_object_on_stdout_with_the_same_exit_codes(cli, tmp_path, dataset):
    scan = str(dataset("i16-scans/794934.nxs"))
    cases = [
        (["reduce", "scan", str(tmp_path / "nope.nxs")], 3, "INPUT_NOT_FOUND", None),
        (["reduce", "scan", scan, "-p", "no_such=1"], 2, "BAD_PARAMETERS", "no_such"),
        (["reduce", "scan", scan, "-p", "model=cubic"], 2, "BAD_PARAMETERS", "model"),
        (["reduce", "no-such-technique", scan], 3, "UNKNOWN_TECHNIQUE", None),
        (["reduce", "scan"], 2, "USAGE", None),
        (["jobs", "list"], 2, "BAD_REQUEST", None),  # no gateway given
        (["jobs", "list", "--gateway", "127.0.0.1:9"], 4, "UNAVAILABLE", None),
    ]
    for argv, code, reason, field in cases:
        plain = cli(*argv)
        assert plain.returncode == code, (argv, plain.stderr)
        assert plain.stdout == "" and len(plain.stderr.strip().splitlines()) == 1, (argv, plain.stderr)
        res = cli(*argv, "--json")
        assert res.returncode == code, (argv, res.stdout, res.stderr)
        err = one_json_object(res)
        assert err["code"] == reason, (argv, err)
        assert err["field"] == field, (argv, err)
        assert err["message"] and "Traceback" not in res.stderr
    bad = one_json_object(cli("reduce", "scan", scan, "-p", "no_such=1", "-p", "model=cubic", "--json"))
    assert {v["field"] for v in bad["violations"]} == {"no_such", "model"}


def test_demo_prints_a_command_that_pastes(tmp_path):
    """`make demo` prints the command it runs; pasted into a shell it runs as printed."""
    out = tmp_path / "demo out"  # a space: the printed command must quote it
    env = {**os.environ, "PANREDUCE_STORE": str(tmp_path / "store")}  # not the working tree's store
    res = subprocess.run(
        ["make", "-s", "-o", "setup", "demo", f"DEMO_OUT={out}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    printed = res.stdout.splitlines()[0]
    argv = shlex.split(printed)
    files = subprocess.run(
        [sys.executable, "-m", "panreduce.datasets", "paths", "i16-scans/7949"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert argv == [".venv/bin/panreduce", "reduce", "scan", *files, "--output", str(out)]
    assert "<" not in printed and (out / "scans.nxs").is_file()
    out.rename(tmp_path / "first run")  # the same folder is never overwritten: paste into a fresh one
    pasted = subprocess.run(["bash", "-c", printed], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert pasted.returncode == 0, pasted.stderr
    assert (out / "scans.nxs").is_file()


# -- inputs: a technique takes its own files of a folder ----------------------------------
def test_is_hdf5_by_signature(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.arange(3)
    blocked = tmp_path / "blocked.nxs"
    with h5py.File(blocked, "w", userblock_size=1024) as f:
        f["x"] = np.arange(3)
    text = tmp_path / "README.md"
    text.write_text("# scans\n")
    lying = tmp_path / "text.nxs"  # the name says NeXus; the content does not
    lying.write_text("#S 1 ascan eta 29.7 30.3 60 1\n")
    short = tmp_path / "short.h5"
    short.write_bytes(HDF5_SIGNATURE[:5])
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    shifted = tmp_path / "shifted.bin"  # the signature, but not where HDF5 puts it
    shifted.write_bytes(b"x" * 100 + HDF5_SIGNATURE + b"\0" * 600)
    assert is_hdf5(plain) and is_hdf5(blocked)
    assert not any(is_hdf5(p) for p in (text, lying, short, empty, shifted, tmp_path / "missing.h5"))


def test_stage_inputs_judges_only_files_of_a_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.dat").write_text("1\n")
    (folder / "README.md").write_text("notes\n")
    (folder / "empty.dat").write_bytes(b"")
    skipped: list[tuple[str, str]] = []
    inputs = stage_inputs(
        Stores(tmp_path / "store"),
        [str(folder) + "/", str(folder / "README.md")],
        tmp_path / "scratch",
        accept=lambda p: p.suffix == ".dat",
        on_skip=lambda uri, why: skipped.append((Path(uri).name, why)),
    )
    assert [f.name for f in inputs.items[0].files] == ["a.dat"]
    assert [f.name for f in inputs.items[1].files] == ["README.md"]  # named: given to the technique
    assert sorted(name for name, _ in skipped) == ["README.md", "empty.dat"]
    with pytest.raises(Exception) as info:
        stage_inputs(Stores(tmp_path / "store"), [str(folder) + "/"], tmp_path / "scratch", accept=lambda p: False)
    assert type(info.value).__name__ == "InvalidInput" and "README.md" in str(info.value)


def test_reduce_scan_of_a_folder_skips_what_is_not_a_scan(cli, tmp_path, dataset):
    """The README's command, `reduce scan i16-scans/ --json`, on a folder holding a
    README, notes and a text file named .nxs: they are skipped, each named on stderr."""
    folder = tmp_path / "scans"
    folder.mkdir()
    for n in (794932, 794935):
        (folder / f"{n}.nxs").symlink_to(dataset(f"i16-scans/{n}.nxs"))
    (folder / "README.md").write_text("# two scans\n")
    (folder / "notes.txt").write_text("beam dropped at 11:02\n")
    (folder / "fake.nxs").write_text("not HDF5\n")
    res = cli("reduce", "scan", f"{folder}/", "--json", "--output", "out")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["summary"]["n_scans"] == 2
    assert sorted(r["file"] for r in doc["summary"]["scans"]) == ["794932.nxs", "794935.nxs"]
    for name in ("README.md", "notes.txt", "fake.nxs"):
        assert any(name in line and "skipped" in line for line in res.stderr.splitlines()), (name, res.stderr)
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "README.md").write_text("nothing here\n")
    res = cli("reduce", "scan", f"{only_text}/", "--json", "--output", "out2")
    assert res.returncode == 2, res.stderr
    err = one_json_object(res)
    assert err["code"] == "CORRUPT_INPUT" and "README.md" in err["message"] and str(only_text) in err["message"]


def test_the_data_folder_with_its_readme(cli, dataset):
    """README.md's `reduce scan ../shared/data/i16-scans/ --json`: that folder holds a
    README.md next to its scans."""
    folder = dataset("i16-scans/794932.nxs").parent
    assert (folder / "README.md").is_file()
    res = cli("reduce", "scan", f"{folder}/", "--json", "-p", "plots=false")
    assert res.returncode == 0, res.stderr
    assert any("README.md" in line and "skipped" in line for line in res.stderr.splitlines())
    assert json.loads(res.stdout)["summary"]["n_scans"] == len([p for p in folder.iterdir() if p.suffix == ".nxs"])
