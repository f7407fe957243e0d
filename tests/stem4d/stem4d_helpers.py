"""Helpers of the stem4d tests: in-process runs the kit's way, arrays as row readers."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from panreduce.kit import Context, Shard
from panreduce.storage import stage_paths
from panreduce_stem4d.technique import Technique


def run_stem4d(inputs: list[Path | str], params: dict, scratch: Path, shard: tuple[int, int] | None = None):
    """(summary, {output name: path}, log lines) of one in-process run."""
    technique = Technique()
    p = technique.validate_parameters(params)
    logs: list[str] = []
    ctx = Context(job_id="test", scratch=scratch, shard=Shard(*shard) if shard else None,
                  log_sink=lambda level, msg: logs.append(f"{level}: {msg}"))
    data = technique.load(stage_paths([str(x) for x in inputs]), p, ctx)
    summary = technique.reduce(data, p, ctx)
    return summary, {o.name: o.path for o in ctx.outputs}, logs


def rows_of(frames: np.ndarray):
    """``read_rows`` over an in-memory (ny, nx, dy, dx) array."""
    return lambda r0, r1: frames[r0:r1]


def unzip(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    return dest


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])
