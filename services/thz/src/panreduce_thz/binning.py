"""Sorting and binning pulses by their delay.

Bins are anchored at whole multiples of the bin width (bin k spans [k·w, (k+1)·w) ps,
centre (k + ½)·w), so binning is a sum of sufficient statistics (count, Σy, Σy²) per bin:
positions, chunks and shards can be accumulated in any order and the result equals one
binning of all pulses. The facility's notebook writes each bin's mean next to its *upper*
edge (and its row 0 is always empty); here the centre is reported, half a bin earlier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class DelayAccumulator:
    """Per-bin count, Σsignal and Σsignal² for bins ``first .. first + n - 1`` of width
    ``bin_ps`` (ps)."""

    bin_ps: float
    first: int
    count: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def covering(cls, t_min_ps: float, t_max_ps: float, *, bin_ps: float) -> DelayAccumulator:
        first = math.floor(t_min_ps / bin_ps)
        n = math.floor(t_max_ps / bin_ps) - first + 1
        return cls(bin_ps, first, np.zeros(n, np.int64), np.zeros(n), np.zeros(n))

    @property
    def n_bins(self) -> int:
        return int(self.count.size)

    def add(self, delay_ps: np.ndarray, value: np.ndarray) -> int:
        """Accumulate pulses; returns how many fell outside the grid (dropped)."""
        k = np.floor(np.asarray(delay_ps) / self.bin_ps).astype(np.int64) - self.first
        inside = (k >= 0) & (k < self.n_bins)
        if not inside.all():
            k, value = k[inside], np.asarray(value)[inside]
        v = np.asarray(value, dtype=np.float64)
        self.count += np.bincount(k, minlength=self.n_bins)
        self.total += np.bincount(k, weights=v, minlength=self.n_bins)
        self.total_sq += np.bincount(k, weights=v * v, minlength=self.n_bins)
        return int((~inside).sum())

    def merge(self, other: DelayAccumulator) -> DelayAccumulator:
        """The accumulator of both (same bin width), on the union of their grids."""
        if not math.isclose(other.bin_ps, self.bin_ps, rel_tol=1e-12):
            raise ValueError("accumulators with different bin widths")
        first = min(self.first, other.first)
        last = max(self.first + self.n_bins, other.first + other.n_bins)
        out = DelayAccumulator(
            self.bin_ps, first, np.zeros(last - first, np.int64), np.zeros(last - first), np.zeros(last - first)
        )
        for acc in (self, other):
            sl = slice(acc.first - first, acc.first - first + acc.n_bins)
            out.count[sl] += acc.count
            out.total[sl] += acc.total
            out.total_sq[sl] += acc.total_sq
        return out


@dataclass(frozen=True)
class BinnedWaveform:
    """Mean signal per delay bin: ``delay_ps`` bin centres, ``signal`` mean (NaN where
    empty), ``error`` standard error of the mean (NaN with fewer than 2 pulses),
    ``count`` pulses per bin."""

    delay_ps: np.ndarray
    signal: np.ndarray
    error: np.ndarray
    count: np.ndarray

    @property
    def empty(self) -> np.ndarray:
        return self.count == 0


def waveform(acc: DelayAccumulator, *, trim: bool = True) -> BinnedWaveform:
    """Means and standard errors from an accumulator; ``trim`` drops the empty bins at
    both ends (interior empty bins stay, marked by count 0 and NaN)."""
    n = acc.count.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(n > 0, acc.total / n, np.nan)
        var = np.where(n > 1, (acc.total_sq - n * mean * mean) / (n - 1), np.nan)
        sem = np.sqrt(np.clip(var, 0, None) / n)
    centres = (acc.first + np.arange(acc.n_bins) + 0.5) * acc.bin_ps
    sl = slice(None)
    if trim:
        filled = np.flatnonzero(acc.count)
        sl = slice(filled[0], filled[-1] + 1) if filled.size else slice(0, 0)
    return BinnedWaveform(centres[sl], mean[sl], sem[sl], acc.count[sl].copy())


def common_grid(waveforms: list[BinnedWaveform], *, bin_ps: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Several binned runs of the same bin width on one grid: the bin index of each centre
    is round(t/w − ½), so runs binned separately line up exactly (no float drift); bins a
    run lacks are NaN. Returns (centres ps, one signal array per run)."""
    index = [np.rint(w.delay_ps / bin_ps - 0.5).astype(np.int64) for w in waveforms]
    lo = min(int(i.min()) for i in index if i.size)
    hi = max(int(i.max()) for i in index if i.size)
    centres = (np.arange(lo, hi + 1) + 0.5) * bin_ps
    out = []
    for w, i in zip(waveforms, index, strict=True):
        row = np.full(centres.size, np.nan)
        row[i - lo] = w.signal
        out.append(row)
    return centres, out
