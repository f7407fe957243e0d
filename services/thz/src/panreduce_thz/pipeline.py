"""Streaming reduction: pulses are processed one image page at a time and summarised by
mergeable statistics (no per-pulse array outlives its page), so memory stays bounded
by one page however long the run.

Pure computation on arrays; reading files is the technique's (``telbe``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from panreduce_thz.binning import BinnedWaveform, DelayAccumulator, waveform
from panreduce_thz.gating import gated_signal
from panreduce_thz.timing import arrival_pixels, decode_offset, pulse_delays_ps

HIST_PX = 0.25  # arrival-pixel histogram bin, px


@dataclass(frozen=True)
class Settings:
    pixel_to_ps: float
    bin_ps: float
    sos: np.ndarray
    method: str
    half_width: int
    signal_gate: tuple[int, int]
    background_gate: tuple[int, int]


@dataclass(frozen=True)
class Pulses:
    """One page of pulses: arrival pixel (px), absolute delay (ps), signal."""

    arrival_px: np.ndarray
    delay_ps: np.ndarray
    signal: np.ndarray


def process_page(raw_rows: np.ndarray, traces: np.ndarray, background: np.ndarray,
                 stage_ps: float, s: Settings) -> Pulses:
    """Timing, delay and gated signal of the pulses of one image page and their traces."""
    px = arrival_pixels(decode_offset(raw_rows), background, s.sos, method=s.method, half_width=s.half_width)
    return Pulses(px, pulse_delays_ps(px, stage_ps, pixel_to_ps=s.pixel_to_ps),
                  gated_signal(traces, signal_gate=s.signal_gate, background_gate=s.background_gate))


@dataclass
class PositionStats:
    position_mm: float
    stage_ps: float
    pulses: int = 0
    signal_sum: float = 0.0
    signal_sq: float = 0.0
    arrival_sum: float = 0.0
    arrival_sq: float = 0.0

    def add(self, p: Pulses) -> None:
        self.pulses += p.signal.size
        self.signal_sum += float(p.signal.sum())
        self.signal_sq += float(np.dot(p.signal, p.signal))
        self.arrival_sum += float(p.arrival_px.sum())
        self.arrival_sq += float(np.dot(p.arrival_px, p.arrival_px))


@dataclass
class RunStats:
    """Sufficient statistics of a (part of a) run: merge shards with ``merge``."""

    corrected: DelayAccumulator
    width_px: int
    positions: list[PositionStats] = field(default_factory=list)
    histogram: np.ndarray | None = None  # arrival pixel counts in HIST_PX bins over [0, width)
    dropped: int = 0  # pulses whose delay fell outside the grid

    def __post_init__(self) -> None:
        if self.histogram is None:
            self.histogram = np.zeros(int(np.ceil(self.width_px / HIST_PX)), np.int64)

    def add(self, pos: PositionStats, p: Pulses) -> None:
        pos.add(p)
        self.dropped += self.corrected.add(p.delay_ps, p.signal)
        k = np.clip((p.arrival_px / HIST_PX).astype(np.int64), 0, self.histogram.size - 1)
        self.histogram += np.bincount(k, minlength=self.histogram.size)

    def merge(self, other: RunStats) -> RunStats:
        if other.width_px != self.width_px:
            raise ValueError(f"parts with timing-tool rows of {self.width_px} and {other.width_px} px")
        return RunStats(self.corrected.merge(other.corrected), self.width_px,
                        sorted([*self.positions, *other.positions], key=lambda q: q.position_mm),
                        self.histogram + other.histogram, self.dropped + other.dropped)

    @property
    def pulses(self) -> int:
        return sum(q.pulses for q in self.positions)

    def arrival_mean_rms_px(self) -> tuple[float, float]:
        n = self.pulses
        s = sum(q.arrival_sum for q in self.positions)
        ss = sum(q.arrival_sq for q in self.positions)
        mean = s / n
        return mean, float(np.sqrt(max(ss / n - mean * mean, 0.0) * n / max(n - 1, 1)))

    def corrected_waveform(self) -> BinnedWaveform:
        return waveform(self.corrected)

    def uncorrected_waveform(self, pixel_to_ps: float) -> BinnedWaveform:
        """Stage-only waveform: each position's mean signal at its stage delay plus the
        run's mean arrival time (so both waveforms share one delay axis), on the same bins."""
        mean_px, _ = self.arrival_mean_rms_px()
        acc = DelayAccumulator(self.corrected.bin_ps, self.corrected.first, np.zeros_like(self.corrected.count),
                               np.zeros(self.corrected.n_bins), np.zeros(self.corrected.n_bins))
        for q in self.positions:
            if q.pulses:
                t = np.array([q.stage_ps + mean_px * pixel_to_ps])
                k = int(np.floor(t[0] / acc.bin_ps)) - acc.first
                if 0 <= k < acc.n_bins:
                    acc.count[k] += q.pulses
                    acc.total[k] += q.signal_sum
                    acc.total_sq[k] += q.signal_sq
        return waveform(acc)
