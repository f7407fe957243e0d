"""Helpers for the sans tests (and benchmark): stage inputs and run the technique in-process (kit.run)."""

from __future__ import annotations

from pathlib import Path

from panreduce import kit
from panreduce.kit import Inputs
from panreduce.storage import Stores, stage_paths
from panreduce_sans.technique import Technique


def stage(paths: list[Path | str]) -> Inputs:
    """Inputs as the kit stages them: a folder brings every file under it."""
    return stage_paths(paths)


def run_sans(inputs: list[Path | str], params: dict, scratch: Path, split: int | None = None):
    """(summary, {output name: path}, log lines) of one in-process job (kit.run; ``split``:
    that many shards and their merge, as the gateway runs them)."""
    logs: list[str] = []
    args = dict(stores=Stores(scratch / "store"), log=lambda level, msg: logs.append(f"{level}: {msg}"))
    paths = [str(x) for x in inputs]
    result = (
        kit.run_split(Technique, paths, params, scratch / "out", split=split, **args)
        if split
        else kit.run(Technique, paths, params, scratch / "out", **args)
    )
    files = {o.uri.rsplit("/", 1)[1]: Path(o.uri) for o in result.outputs if o.role != "provenance"}
    return result.summary, files, logs
