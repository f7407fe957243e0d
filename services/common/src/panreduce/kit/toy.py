"""A toy technique for testing the kit: sums arrays from .npy files, step by step.

It follows the shard contract (one unit per file): tests, the contract suite and the
benchmarks import it from here (``from panreduce.kit.toy import Toy``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import h5py
import numpy as np
from pydantic import Field

from panreduce import errors
from panreduce.kit.technique import Context, Inputs, Parameters, StagedFile, Technique


class ToyParameters(Parameters):
    scale: float = Field(1.0, gt=0, le=1000, description="factor applied to the sum (dimensionless)")
    steps: int = Field(1, ge=1, le=10_000, description="number of steps the work is split into")
    step_seconds: float = Field(0.0, ge=0, le=10, description="time each step takes (s)")
    mode: Literal["sum", "mean"] = Field("sum", description="how to combine the values")
    fail: Literal["", "internal", "bad_input"] = Field("", description="fail on purpose (tests)")


@dataclass
class ToyPart:
    values: np.ndarray  # every value of the block's files, in file order
    files: list[str]


class Toy(Technique[ToyParameters, list[ToyPart]]):
    name = "toy"
    version = "1.0.0"
    title = "Toy technique (tests)"
    description = "Sums the values of .npy arrays"
    Parameters = ToyParameters
    Part = ToyPart
    input_kinds = ("npy",)
    output_formats = ("nexus", "csv", "png")
    shardable = True
    shard_unit = "file"
    steps_done = 0
    started = threading.Event()

    def units(self, inputs: Inputs, params: ToyParameters) -> list[StagedFile]:
        return inputs.files

    def reduce_block(self, block: Sequence[StagedFile], inputs: Inputs, params: ToyParameters, ctx: Context) -> ToyPart:
        arrays = []
        for f in block:
            try:
                arrays.append(np.load(f.path, allow_pickle=False))
            except (OSError, ValueError, EOFError) as exc:
                raise errors.InvalidInput(f.name, f"not a .npy array ({exc})") from None
        type(self).started.set()
        if params.fail == "internal":
            raise RuntimeError("boom")
        if params.fail == "bad_input":
            raise errors.InvalidInput("x.npy", "has NaNs")
        for i in range(params.steps):
            ctx.progress(i / params.steps, "work", f"step {i + 1}/{params.steps}")
            time.sleep(params.step_seconds)
            type(self).steps_done += 1
        values = np.concatenate([a.ravel() for a in arrays]).astype(float) if arrays else np.zeros(0)
        return ToyPart(values=values, files=[f.name for f in block])

    def combine(self, parts: Sequence[ToyPart], params: ToyParameters) -> ToyPart:
        return ToyPart(values=np.concatenate([p.values for p in parts]), files=[n for p in parts for n in p.files])

    def write(self, result: ToyPart, params: ToyParameters, ctx: Context) -> dict[str, Any]:
        values = result.values
        total = float(values.sum() if params.mode == "sum" else values.mean()) * params.scale
        with h5py.File(ctx.output_path("toy.nxs", format="nexus"), "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.create_dataset("total", data=total)
            entry.create_dataset("values", data=values)
        ctx.output_path("toy.csv", format="csv", role="table").write_text(f"total\n{total}\n")
        return {"total": total, "n": int(values.size), "files": result.files}
