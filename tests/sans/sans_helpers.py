"""Helpers for the sans tests (and benchmark): stage inputs and run the technique in-process."""

from __future__ import annotations

from pathlib import Path

from panreduce.kit import Context, Inputs, Shard
from panreduce.storage import stage_paths
from panreduce_sans.technique import Technique


def stage(paths: list[Path | str]) -> Inputs:
    """Inputs as the kit stages them: a folder brings every file under it."""
    return stage_paths(paths)


def run_sans(inputs: list[Path | str], params: dict, scratch: Path, shard: tuple[int, int] | None = None):
    """(summary, {output name: path}, log lines) of one in-process run."""
    technique = Technique()
    p = technique.validate_parameters(params)
    logs: list[str] = []
    ctx = Context(job_id="test", scratch=scratch, shard=Shard(*shard) if shard else None,
                  log_sink=lambda level, msg: logs.append(f"{level}: {msg}"))
    data = technique.load(stage(inputs), p, ctx)
    summary = technique.reduce(data, p, ctx)
    return summary, {o.name: o.path for o in ctx.outputs}, logs
