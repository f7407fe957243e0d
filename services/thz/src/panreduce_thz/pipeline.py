"""Streaming reduction: pulses are processed one image page at a time and summarised by
mergeable statistics (no per-pulse array outlives its page), so memory stays bounded
by one page however long the run.

Pure computation on arrays; reading files is the technique's (``telbe``)."""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy
from panreduce_thz.binning import BinnedWaveform, DelayAccumulator, waveform
from panreduce_thz.gating import gated_signal
from panreduce_thz.timing import OFFSET_CODE, _quadratic_vertex_weights, arrival_pixels, decode_offset, pulse_delays_ps

if TYPE_CHECKING:  # compiled on first use (numba is heavy to import)
    from panreduce_thz import kernels
else:
    kernels = lazy.module("panreduce_thz.kernels")

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
    threads: int = 1  # threads over blocks of pulses (the compiled kernels release the GIL)
    compiled: bool = True  # the numba kernels; False: the numpy/scipy reference path
    timing_window: tuple[int, int] | None = None  # pixels [start, stop) timed (filtered from start); None: the row

    def window_of(self, width: int) -> tuple[int, int]:
        return self.timing_window if self.timing_window is not None else (0, width)

    @property
    def vertex_weights(self) -> tuple[np.ndarray, np.ndarray]:
        return _vertex_weights(self.half_width)


@functools.lru_cache(maxsize=8)
def _vertex_weights(half_width: int) -> tuple[np.ndarray, np.ndarray]:
    """The b and c rows of the parabola fit (shared by every page: not to be written)."""
    w = _quadratic_vertex_weights(half_width)
    b, c = np.ascontiguousarray(w[1]), np.ascontiguousarray(w[2])
    return b, c


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Pulses:
    """One page of pulses: arrival pixel (px), absolute delay (ps), signal."""

    arrival_px: np.ndarray
    delay_ps: np.ndarray
    signal: np.ndarray


def process_page(
    raw_rows: np.ndarray, traces: np.ndarray, background: np.ndarray, stage_ps: float, s: Settings
) -> Pulses:
    """Timing, delay and gated signal of the pulses of one image page and their traces
    (the numpy/scipy reference, or the compiled kernels: the same numbers to float32
    rounding)."""
    if not s.compiled:
        a, b = s.window_of(raw_rows.shape[1])
        rows = decode_offset(raw_rows)[:, a:b]
        px = a + arrival_pixels(rows, background[a:b], s.sos, method=s.method, half_width=s.half_width)
        return Pulses(
            px,
            pulse_delays_ps(px, stage_ps, pixel_to_ps=s.pixel_to_ps),
            gated_signal(traces, signal_gate=s.signal_gate, background_gate=s.background_gate),
        )
    px = compiled_arrival_pixels(raw_rows, background, s)
    return Pulses(px, pulse_delays_ps(px, stage_ps, pixel_to_ps=s.pixel_to_ps), compiled_gated_signal(traces, s))


def compiled_arrival_pixels(raw_rows: np.ndarray, background: np.ndarray, s: Settings) -> np.ndarray:
    """Arrival pixels (px) of raw uint16 rows by the compiled kernel (offset decoded per
    page as ``decode_offset`` does)."""
    raw = np.ascontiguousarray(raw_rows)
    if raw.dtype not in (np.uint16, np.uint8):
        raw = raw.astype(np.uint16)
    offset = float(OFFSET_CODE) if raw.size and raw.flat[0] > OFFSET_CODE - 1 else 0.0
    out = np.empty(raw.shape[0], np.float64)
    w1, w2 = s.vertex_weights
    a, b = s.window_of(raw.shape[1])
    kernels.arrival_pixels(
        raw,
        a,
        offset,
        np.ascontiguousarray(background[a:b], dtype=np.float32),
        np.ascontiguousarray(s.sos, dtype=np.float32),
        s.method == "subpixel",
        s.half_width,
        w1,
        w2,
        out,
    )
    return out


def compiled_gated_signal(traces: np.ndarray, s: Settings) -> np.ndarray:
    """Gated signal of big-endian float32 traces by the compiled kernel (other dtypes: the
    numpy reference)."""
    if traces.dtype != np.dtype(">f4") or not traces.flags.c_contiguous:
        return gated_signal(traces, signal_gate=s.signal_gate, background_gate=s.background_gate)
    out = np.empty(traces.shape[0], np.float64)
    kernels.gated_signal(traces.view(np.uint32), *s.signal_gate, *s.background_gate, out)
    return out


def process_pages(
    pages: Iterable[tuple[np.ndarray, np.ndarray]],
    background: np.ndarray,
    stage_ps: float,
    s: Settings,
    pool: ThreadPoolExecutor | None,
) -> Iterator[Pulses]:
    """``process_page`` over (rows, traces) pages, in order. With a pool, each page is
    split into ``s.threads`` blocks timed in parallel while the next page is read (at most
    two pages in flight: memory stays bounded by the page size); their results come one
    block at a time, in order (not concatenated)."""
    if pool is None or s.threads < 2:
        for rows, traces in pages:
            yield process_page(rows, traces, background, stage_ps, s)
        return
    pending: list[Future] | None = None
    for rows, traces in pages:
        n = rows.shape[0]
        cuts = np.linspace(0, n, s.threads + 1).astype(int)
        if n == 0:
            continue
        futures = [
            pool.submit(process_page, rows[a:b], traces[a:b], background, stage_ps, s)
            for a, b in itertools.pairwise(cuts)
            if b > a
        ]
        if pending is not None:
            yield from [f.result() for f in pending]
        pending = futures
    if pending:
        yield from [f.result() for f in pending]


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

    def add(self, pos: PositionStats, p: Pulses, *, compiled: bool = True) -> None:
        """Add a page of pulses (``compiled``: the one-pass kernel for the per-bin sums,
        else ``DelayAccumulator.add``'s bincounts)."""
        pos.add(p)
        c = self.corrected
        if compiled:
            self.dropped += int(
                kernels.accumulate(
                    np.ascontiguousarray(p.delay_ps, dtype=np.float64),
                    np.ascontiguousarray(p.signal, dtype=np.float64),
                    float(c.bin_ps),
                    int(c.first),
                    c.count,
                    c.total,
                    c.total_sq,
                )
            )
        else:
            self.dropped += c.add(p.delay_ps, p.signal)
        k = np.clip((p.arrival_px / HIST_PX).astype(np.int64), 0, self.histogram.size - 1)
        self.histogram += np.bincount(k, minlength=self.histogram.size)

    def merge(self, other: RunStats) -> RunStats:
        if other.width_px != self.width_px:
            raise ValueError(f"parts with timing-tool rows of {self.width_px} and {other.width_px} px")
        return RunStats(
            self.corrected.merge(other.corrected),
            self.width_px,
            sorted([*self.positions, *other.positions], key=lambda q: q.position_mm),
            self.histogram + other.histogram,
            self.dropped + other.dropped,
        )

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
        acc = DelayAccumulator(
            self.corrected.bin_ps,
            self.corrected.first,
            np.zeros_like(self.corrected.count),
            np.zeros(self.corrected.n_bins),
            np.zeros(self.corrected.n_bins),
        )
        for q in self.positions:
            if q.pulses:
                t = np.array([q.stage_ps + mean_px * pixel_to_ps])
                k = int(np.floor(t[0] / acc.bin_ps)) - acc.first
                if 0 <= k < acc.n_bins:
                    acc.count[k] += q.pulses
                    acc.total[k] += q.signal_sum
                    acc.total_sq[k] += q.signal_sq
        return waveform(acc)
