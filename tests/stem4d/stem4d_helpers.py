"""Helpers of the stem4d tests: in-process runs the kit's way, arrays as row readers."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from panreduce import kit
from panreduce.storage import Stores
from panreduce_stem4d.technique import Technique


def run_stem4d(inputs: list[Path | str], params: dict, scratch: Path, split: int | None = None):
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


def rows_of(frames: np.ndarray):
    """``read_rows`` over an in-memory (ny, nx, dy, dx) array."""
    return lambda r0, r1: frames[r0:r1]


def unzip(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    return dest


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])
