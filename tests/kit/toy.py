"""A toy technique for testing the kit: sums arrays from .npy files, step by step."""

from __future__ import annotations

import threading
import time
from typing import Literal

import h5py
import numpy as np
from pydantic import Field

from panreduce import errors
from panreduce.kit import Context, Inputs, Parameters, Technique


class ToyParameters(Parameters):
    scale: float = Field(1.0, gt=0, le=1000, description="factor applied to the sum (dimensionless)")
    steps: int = Field(1, ge=1, le=10_000, description="number of steps the work is split into")
    step_seconds: float = Field(0.0, ge=0, le=10, description="time each step takes (s)")
    mode: Literal["sum", "mean"] = Field("sum", description="how to combine the values")
    fail: Literal["", "internal", "bad_input"] = Field("", description="fail on purpose (tests)")


class Toy(Technique[ToyParameters, list]):
    name = "toy"
    version = "1.0.0"
    title = "Toy technique (tests)"
    description = "Sums the values of .npy arrays"
    Parameters = ToyParameters
    input_kinds = ("npy",)
    output_formats = ("nexus", "csv", "png")
    shardable = True
    shard_unit = "file"
    steps_done = 0
    started = threading.Event()

    def load(self, inputs: Inputs, params: ToyParameters, ctx: Context) -> list:
        files = ctx.shard.select(inputs.files) if ctx.shard else inputs.files
        arrays = []
        for f in files:
            try:
                arrays.append(np.load(f.path, allow_pickle=False))
            except (OSError, ValueError, EOFError) as exc:
                raise errors.InvalidInput(f.name, f"not a .npy array ({exc})") from None
        return arrays

    def reduce(self, data: list, params: ToyParameters, ctx: Context) -> dict:
        type(self).started.set()
        if params.fail == "internal":
            raise RuntimeError("boom")
        if params.fail == "bad_input":
            raise errors.InvalidInput("x.npy", "has NaNs")
        for i in range(params.steps):
            ctx.progress(i / params.steps, "work", f"step {i + 1}/{params.steps}")
            time.sleep(params.step_seconds)
            type(self).steps_done += 1
        values = np.concatenate([a.ravel() for a in data]) if data else np.zeros(0)
        total = float(values.sum() if params.mode == "sum" else values.mean()) * params.scale
        with h5py.File(ctx.output_path("toy.nxs", format="nexus"), "w") as f:
            entry = f.create_group("entry")
            entry.attrs["NX_class"] = "NXentry"
            entry.create_dataset("total", data=total)
        ctx.output_path("toy.csv", format="csv", role="table").write_text(f"total\n{total}\n")
        return {"total": total, "n": int(values.size)}
