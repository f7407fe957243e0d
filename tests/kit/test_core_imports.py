"""The core is importable without grpc (issue 13 item 3): errors, the NeXus layer,
constants, NXcanSAS, provenance, the array backend and every technique's science
modules load no transport. The error -> gRPC status table is the transport's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from panreduce import errors, rpc

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "panreduce.errors",
    "panreduce.nexus",
    "panreduce.constants",
    "panreduce.nxcansas",
    "panreduce.provenance",
    "panreduce.backend",
]


def _no_grpc(modules: list[str]) -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "    assert 'grpc' not in sys.modules, f'{m} loads grpc'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]


def test_import_errors_loads_no_grpc():
    subprocess.run(
        [sys.executable, "-c", "import panreduce.errors, sys; assert 'grpc' not in sys.modules"], check=True, timeout=60
    )


def test_core_modules_load_no_grpc():
    _no_grpc(CORE)


def _science_modules(package_dir: Path) -> list[str]:
    package = package_dir.name
    return [f"{package}.{p.stem}" for p in sorted(package_dir.glob("*.py")) if p.stem not in ("__init__", "__main__")]


PACKAGES = sorted(p for p in ROOT.glob("services/*/src/panreduce_*") if p.is_dir())


@pytest.mark.parametrize("package_dir", PACKAGES, ids=[p.name for p in PACKAGES])
def test_every_science_module_loads_no_grpc(package_dir):
    """Readers and writers that raise depend on panreduce.errors only, never the transport."""
    modules = _science_modules(package_dir)
    assert modules
    _no_grpc(modules)


def test_the_status_table_is_the_transports():
    assert not hasattr(errors, "STATUS_CODES") and not hasattr(errors, "status_code_of")
    assert rpc.status_code_of(errors.LimitExceeded([])) is grpc.StatusCode.INVALID_ARGUMENT
    assert rpc.status_code_of(errors.InputTooLarge("x", 2, 1)) is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert rpc.status_code_of(ValueError("bug")) is grpc.StatusCode.INTERNAL
    # every class has an entry along its MRO that is not the catch-all, except the base itself
    for cls in errors.PanReduceError.__subclasses__():
        assert cls in rpc.STATUS_CODES or any(b in rpc.STATUS_CODES for b in cls.__mro__[1:-3])
    # the error's own .code reads the same table
    assert errors.JobNotFound("j").code is grpc.StatusCode.NOT_FOUND


def test_rebuild_without_transport():
    err = errors.rebuild("bad", "CORRUPT_INPUT", metadata={"source": "a.nxs"})
    assert type(err) is errors.InvalidInput and err.source == "a.nxs" and err.message == "bad"
    v = [errors.FieldViolation("q_min", "must be > 0")]
    err = errors.rebuild("invalid", "", v, default=errors.InvalidRequest)
    assert type(err) is errors.InvalidParameters and err.violations == v
    assert type(errors.rebuild("?", "NO_SUCH_REASON")) is errors.InternalError
    assert type(errors.rebuild("?", "", default=errors.Unavailable)) is errors.Unavailable
    # through the wire: an unknown reason falls back on the status code's class
    failure = rpc.failure_of(errors.Unavailable("down"))
    failure.reason = "SOMETHING_NEW"
    assert type(rpc.error_of_failure(failure)) is errors.Unavailable
