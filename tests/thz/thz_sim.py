"""Simulated TELBE runs shared by the thz tests (small: seconds to write and reduce)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panreduce.kit import Context, Inputs, StagedFile, StagedInput
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


def make_run(root: Path, *, pulses: int = 800, step_ps: float = 0.1, span_ps: float = 4.0,
             seed: int = 3, inst: Instrument | None = None, sample: Sample | None = None) -> SimRun:
    inst = inst or Instrument()
    positions = STAGE_MM + np.arange(-span_ps, span_ps + 1e-9, step_ps) / inst.ps_per_mm
    sample = sample or Sample(centre_ps=STAGE_MM * inst.ps_per_mm, chi3=0.3, phi3_rad=0.6)
    folder = root / RUN
    truth = write_run(folder, positions, pulses=pulses, rows_per_image=pulses // 2, sample=sample,
                      inst=inst, seed=seed, keep_truth=True)
    return SimRun(folder, sample, inst, truth)


def staged(folder: Path) -> Inputs:
    files = tuple(
        StagedFile(path=p, uri=f"file://{p}", name=p.relative_to(folder).as_posix(), size=p.stat().st_size, sha256="")
        for p in sorted(folder.rglob("*")) if p.is_file()
    )
    return Inputs((StagedInput(uri=f"file://{folder}/", root=folder, is_prefix=True, files=files),))


def reduce(folder: Path, tmp_path: Path, shard=None, **raw):
    technique = Technique()
    params = Technique.validate_parameters(raw)
    ctx = Context(job_id="t", scratch=tmp_path / "job", shard=shard)
    data = technique.load(staged(folder), params, ctx)
    return technique.reduce(data, params, ctx), ctx


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
