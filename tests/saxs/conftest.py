"""Helpers for the saxs tests: run the technique in-process on staged files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from panreduce import kit
from panreduce.kit import Inputs
from panreduce.storage import Stores, stage_paths
from panreduce_saxs.technique import Technique


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def stage(paths: list[Path | str]) -> Inputs:
    """Inputs as the kit stages them: a folder brings every file under it."""
    return stage_paths(paths)


def run_saxs(inputs: list[Path | str], params: dict, scratch: Path, split: int | None = None):
    """(summary, {output name: path}) of one job through ``panreduce.kit.run`` (with
    ``split``, ``kit.run_split``: the shard jobs and their merge, as the gateway runs
    them); the summary must be strict JSON."""
    stores = Stores(Path(scratch) / "store")
    paths = [str(p) for p in inputs]
    if split:
        result = kit.run_split(Technique, paths, params, Path(scratch) / "out", split=split, stores=stores)
    else:
        result = kit.run(Technique, paths, params, Path(scratch) / "out", stores=stores)
    json.dumps(result.summary, allow_nan=False)
    outputs = {o.uri.rsplit("/", 1)[1]: Path(o.uri) for o in result.outputs}
    outputs.pop("provenance.json", None)
    return dict(result.summary), outputs


def read_table(path: Path) -> np.ndarray:
    """A published CSV (provenance lines, a header line) as numbers."""
    lines = [line for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    return np.loadtxt(lines[1:], delimiter=",", ndmin=2)


@pytest.fixture(scope="session")
def biocat(dataset):
    return dataset("saxs-biocat/GI2_A9_19_001_0000.tiff"), dataset("saxs-biocat/GI2_A9_19.spec")
