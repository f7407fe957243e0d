"""Helpers for the saxs tests: run the technique in-process on staged files."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from panreduce.kit import Context, Inputs, Shard
from panreduce.storage import stage_paths
from panreduce_saxs.technique import Technique

sys.path.insert(0, str(Path(__file__).parent))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def stage(paths: list[Path | str]) -> Inputs:
    """Inputs as the kit stages them: a folder brings every file under it."""
    return stage_paths(paths)


def run_saxs(inputs: list[Path | str], params: dict, scratch: Path, shard: tuple[int, int] | None = None):
    """(summary, {output name: path}) of one in-process run through the shard contract
    (``write(combine([reduce_block(units)]))``; with ``shard``, the summary of the shard's
    block written alone); the summary must be strict JSON."""
    technique = Technique()
    p = technique.validate_parameters(params)
    ctx = Context(job_id="test", scratch=scratch)
    staged = stage(inputs)
    units = list(technique.units(staged, p))
    if shard is not None:
        start, stop = Shard(*shard).bounds(len(units))
        units = units[start:stop]
    summary = technique.write(technique.combine([technique.reduce_block(units, staged, p, ctx)], p), p, ctx)
    json.dumps(summary, allow_nan=False)
    return summary, {o.name: o.path for o in ctx.outputs}


@pytest.fixture(scope="session")
def biocat(dataset):
    return dataset("saxs-biocat/GI2_A9_19_001_0000.tiff"), dataset("saxs-biocat/GI2_A9_19.spec")
