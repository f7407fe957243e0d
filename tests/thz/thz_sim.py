"""Simulated TELBE runs shared by the thz tests (small: seconds to write and reduce)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from panreduce import kit
from panreduce.storage import Stores
from panreduce_thz.simulate import Instrument, Sample, Truth, write_run
from panreduce_thz.technique import Technique

RUN = "sim_0p7THz_LSCO_2mmZnTe_31K_13.06.2018_0535_02"
STAGE_MM = 50.0


@dataclass
class SimRun:
    folder: Path
    sample: Sample
    inst: Instrument
    truth: Truth


def make_run(
    root: Path,
    *,
    pulses: int = 800,
    step_ps: float = 0.1,
    span_ps: float = 4.0,
    seed: int = 3,
    inst: Instrument | None = None,
    sample: Sample | None = None,
) -> SimRun:
    inst = inst or Instrument()
    positions = STAGE_MM + np.arange(-span_ps, span_ps + 1e-9, step_ps) / inst.ps_per_mm
    sample = sample or Sample(centre_ps=STAGE_MM * inst.ps_per_mm, chi3=0.3, phi3_rad=0.6)
    folder = root / RUN
    truth = write_run(
        folder,
        positions,
        pulses=pulses,
        rows_per_image=pulses // 2,
        sample=sample,
        inst=inst,
        seed=seed,
        keep_truth=True,
    )
    return SimRun(folder, sample, inst, truth)


class Job:
    """A finished kit.run job: its summary, outputs by name and output folder."""

    def __init__(self, result: kit.Result, out_dir: Path) -> None:
        self.result = result
        self.summary = result.summary
        self.out_dir = out_dir
        self.outputs = [
            SimpleNamespace(name=o.uri.rsplit("/", 1)[1], path=Path(o.uri), format=o.format, role=o.role)
            for o in result.outputs
            if o.role != "provenance"
        ]


def reduce(folder: Path, tmp_path: Path, split: int | None = None, **raw):
    """(summary, Job) of the thz job on a run folder, in-process (kit.run; ``split``: that
    many shards and their merge)."""
    args = dict(stores=Stores(tmp_path / "store"))
    inputs = [str(folder) + "/"]
    out = tmp_path / "out"
    result = (
        kit.run_split(Technique, inputs, raw, out, split=split, **args)
        if split
        else kit.run(Technique, inputs, raw, out, **args)
    )
    return result.summary, Job(result, out)


def axis_offset_ps(run: SimRun, arrival_mean_px: float) -> float:
    """Measured delay − true delay (the same for every pulse): the mean arrival pixel
    (with the causal filter's delay) less the mean jitter."""
    jitter = np.concatenate(run.truth.jitter_ps)
    return arrival_mean_px * run.inst.pixel_to_ps - float(jitter.mean())


def bin_averaged_truth(run: SimRun, centres_ps: np.ndarray, bin_ps: float, offset_ps: float) -> np.ndarray:
    """The noise-free response averaged over each bin (16 sub-samples)."""
    sub = (np.arange(16) + 0.5) / 16 - 0.5
    t = centres_ps[:, None] + sub[None, :] * bin_ps - offset_ps
    return run.sample.response(t).mean(axis=1)
