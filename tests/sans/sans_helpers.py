"""Helpers for the sans tests (and benchmark): stage inputs and run the technique in-process."""

from __future__ import annotations

import hashlib
from pathlib import Path

from panreduce.kit import Context, Inputs, Shard, StagedFile, StagedInput
from panreduce_sans.technique import Technique


def _staged(path: Path, name: str) -> StagedFile:
    return StagedFile(path, str(path), name, path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())


def stage(paths: list[Path | str]) -> Inputs:
    """Inputs as the kit stages them: a folder brings every file under it."""
    items = []
    for p in map(Path, paths):
        if p.is_dir():
            files = tuple(_staged(f, f.relative_to(p).as_posix()) for f in sorted(p.rglob("*")) if f.is_file())
            items.append(StagedInput(str(p) + "/", p, True, files))
        else:
            items.append(StagedInput(str(p), p, False, (_staged(p, p.name),)))
    return Inputs(tuple(items))


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
