"""Each technique's contract example (``tests/<technique>/contract_example.py``) and the
techniques the contract covers: the kit's toy and every registered technique."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from panreduce import registry
from panreduce.kit.toy import Toy

TESTS = Path(__file__).resolve().parents[1]
TECHNIQUES = ["toy", *registry.names()]


def technique_class(name: str):
    return Toy if name == "toy" else registry.load(name)


def load_example(name: str):
    """``example(dataset, tmp_path) -> {"inputs": [...], "params": {...}}`` of technique
    ``name``. An example imports only installed packages (no helpers beside it: nothing is put on
    ``sys.path``)."""
    folder = TESTS / ("kit" if name == "toy" else name)
    path = folder / "contract_example.py"
    if not path.is_file():
        pytest.fail(
            f"technique {name!r} has no {path.relative_to(TESTS.parent)}: every technique must "
            "provide a small valid example for the contract suite"
        )
    key = f"contract_example_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[key] = module
    return sys.modules[key].example
