"""Helpers for the fault and load tests in tests/security (no conftest here: others add
files to this folder too)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def load_example(name: str):
    """``example(dataset, tmp_path)`` of ``tests/<name>/contract_example.py``."""
    path = TESTS / name / "contract_example.py"
    spec = importlib.util.spec_from_file_location(f"faults_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.example


def wait_for(predicate, timeout: float, every: float = 0.05):  # noqa: ANN001, ANN201
    """Poll ``predicate`` until it returns something truthy (returned) or ``timeout`` s pass (None)."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None
