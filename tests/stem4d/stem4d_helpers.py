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


def write_mib(path: Path, frames: np.ndarray, depth: int = 12) -> None:
    """Frames (n, h, w) as a 1x1 Merlin .mib file of counter depth ``depth`` (6, 12, 24)."""
    kind = {6: ("U08", ">u1"), 12: ("U16", ">u2"), 24: ("U32", ">u4")}[depth]
    n, h, w = frames.shape
    with open(path, "wb") as fh:
        for i in range(n):
            head = (
                f"MQ1,{i + 1:06d},00384,01,{w:04d},{h:04d},{kind[0]},   1x1,01,2024-01-01 00:00:00.0,"
                f"0.001000,0,0,0,1.0E+1,5.11E+2,0,0,0,0,0,0,3RX,MQ1A,2024-01-01T00:00:00Z,1000000ns,{depth},"
            )
            fh.write(head.encode().ljust(384, b" "))
            fh.write(frames[i].astype(kind[1]).tobytes())


def unzip(archive: Path, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as z:
        z.extractall(dest)
    return dest


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])
