"""A simulator of TELBE runs in the facility's layout (for tests, demos and benchmarks).

Physics: the pump field E(τ) = E0·env(τ)·cos(2πf0τ′), env = exp(−τ′²/2σ²), τ′ = τ − τc;
the sample's response y(τ) = E0·[χ1·env·cos(2πf0τ′) + χ3·env³·cos(2π·3f0τ′ + φ3)]
(dimensionless χ, y in the units of E0). Each pulse arrives with a Gaussian jitter j
(ps): its true delay is stage delay + j, and the timing tool sees its electro-optic
modulation at pixel ``arrival_px + j / pixel_to_ps``: a Gaussian bump of relative depth
``tool_modulation`` on a flat probe level, with the camera's dark row and read noise,
stored +32768 offset-encoded. The ADC trace adds y/n_gate to each sample of the signal
gate, a random per-pulse baseline and white noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

from panreduce_thz.timing import OFFSET_CODE


@dataclass(frozen=True)
class Sample:
    """The response model (see module docstring); times in ps, f0 in THz."""

    field: float = 0.04
    f0_thz: float = 0.7
    envelope_ps: float = 1.0
    centre_ps: float = 0.0
    chi1: float = 1.0
    chi3: float = 0.3
    phi3_rad: float = 0.6

    def response(self, delay_ps: np.ndarray) -> np.ndarray:
        t = np.asarray(delay_ps, dtype=np.float64) - self.centre_ps
        env = np.exp(-0.5 * (t / self.envelope_ps) ** 2)
        w = 2 * np.pi * self.f0_thz
        return self.field * (self.chi1 * env * np.cos(w * t) + self.chi3 * env**3 * np.cos(3 * w * t + self.phi3_rad))


@dataclass(frozen=True)
class Instrument:
    pixels: int = 512
    pixel_to_ps: float = 0.0115
    ps_per_mm: float = 6.6713
    stage_zero_mm: float = 0.0
    jitter_fs: float = 250.0
    arrival_px: float = 300.0  # mean arrival pixel
    tool_width_px: float = 8.0  # rms width of the electro-optic bump
    tool_level: float = 2000.0  # probe counts
    tool_modulation: float = 0.3
    dark_level: float = 100.0
    read_noise: float = 20.0  # counts rms
    samples_per_pulse: int = 96
    gate: int = 48  # signal gate = samples [0, gate)
    adc_noise: float = 0.002  # per sample
    offset_encoded: bool = True


@dataclass
class Truth:
    """Per-pulse truth (kept only when asked: ``keep_truth``)."""

    stage_ps: list[float] = field(default_factory=list)
    jitter_ps: list[np.ndarray] = field(default_factory=list)
    arrival_px: list[np.ndarray] = field(default_factory=list)
    signal: list[np.ndarray] = field(default_factory=list)


def timing_rows(
    jitter_ps: np.ndarray, inst: Instrument, rng: np.random.Generator, dark: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Raw timing-tool rows (uint16) for pulses with the given jitter, and their true
    arrival pixels."""
    px = inst.arrival_px + np.asarray(jitter_ps) / inst.pixel_to_ps
    x = np.arange(inst.pixels, dtype=np.float32)
    bump = np.exp(-0.5 * ((x[None, :] - px[:, None].astype(np.float32)) / inst.tool_width_px) ** 2)
    rows = inst.tool_level * (1 + inst.tool_modulation * bump) + dark[None, :]
    rows += rng.standard_normal((px.size, inst.pixels), dtype=np.float32) * inst.read_noise
    if inst.offset_encoded:
        rows += OFFSET_CODE
    return np.clip(np.rint(rows), 0, 65535).astype(np.uint16), px


def adc_traces(signal: np.ndarray, inst: Instrument, rng: np.random.Generator) -> np.ndarray:
    n = signal.size
    traces = rng.standard_normal((n, inst.samples_per_pulse), dtype=np.float32) * inst.adc_noise
    traces += rng.normal(0.0, 0.01, (n, 1)).astype(np.float32)  # baseline, cancels in the gates
    traces[:, : inst.gate] += (signal / inst.gate).astype(np.float32)[:, None]
    return traces


def write_run(
    folder: Path,
    positions_mm: np.ndarray,
    *,
    pulses: int = 1000,
    rows_per_image: int = 1000,
    sample: Sample | None = None,
    inst: Instrument | None = None,
    seed: int = 0,
    keep_truth: bool = False,
    prefix: str = "sim_0p7THz",
    stamp: str = "13.06.2018_0535_02",
) -> Truth:
    """Write a run folder in the TELBE layout; ``positions_mm`` the stage positions."""
    sample = sample or Sample()
    inst = inst or Instrument()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    dark = (inst.dark_level + 20 * rng.standard_normal(inst.pixels)).astype(np.float32)
    with open(folder / f"{prefix}_BG_{stamp}.txt", "w") as fh:
        fh.write(" ".join(f"{v:.3f}" for v in dark) + "\n")
        fh.write(" ".join(f"{v + 1:.3f}" for v in dark) + "\n")  # only row 0 counts
    truth = Truth()
    for pos in positions_mm:
        token = f"{pos:.3f}"
        stage = (pos - inst.stage_zero_mm) * inst.ps_per_mm
        jitter = rng.normal(0.0, inst.jitter_fs / 1000.0, pulses)
        signal = sample.response(stage + jitter)
        sub = folder / f"{prefix}_SD_100000Hz_{token}mm{stamp}"
        sub.mkdir(exist_ok=True)
        arrivals = []
        for i, start in enumerate(range(0, pulses, rows_per_image)):
            rows, px = timing_rows(jitter[start : start + rows_per_image], inst, rng, dark)
            tifffile.imwrite(sub / f"img_{i:04d}.tif", rows)
            arrivals.append(px)
        adc_traces(signal, inst, rng).astype(">f4").tofile(folder / f"{prefix}_Experiment_{token}mm_{stamp}.bin")
        if keep_truth:
            truth.stage_ps.append(stage)
            truth.jitter_ps.append(jitter)
            truth.arrival_px.append(np.concatenate(arrivals))
            truth.signal.append(signal)
    return truth
