"""Hit finding over blocks of frames: peakfinder8 per frame, the hit decision, each
frame's resolution estimate and the powder (sum and maximum of the hits)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panreduce import constants
from panreduce_serial_crystallography.geometry import PixelMaps
from panreduce_serial_crystallography.peakfinder8 import PeakfinderLayout, Peaks, peakfinder8

__all__ = ["FrameResult", "Powder", "find_hits", "peak_resolution", "rolling_hit_rate"]


@dataclass(frozen=True)
class FrameResult:
    index: int  # frame index in the whole job
    peaks: Peaks
    hit: bool
    resolution_angstrom: float  # d of the highest-resolution peak (nan: no peaks)
    photon_energy_ev: float


def peak_resolution(peaks: Peaks, maps: PixelMaps, *, clen_m: float, photon_energy_ev: float) -> float:
    """d (Å) of the peak farthest from the beam: CrystFEL's ``peak_resolution``."""
    if len(peaks) == 0 or not np.isfinite(clen_m):
        return float("nan")
    ss = np.clip(np.rint(peaks.ss).astype(np.int64), 0, maps.x_px.shape[0] - 1)
    fs = np.clip(np.rint(peaks.fs).astype(np.int64), 0, maps.x_px.shape[1] - 1)
    r_m = maps.r_px[ss, fs] / maps.res_px_per_m[ss, fs]
    two_theta = np.arctan2(r_m.max(), clen_m)
    wavelength = constants.H_C_EV_ANGSTROM / photon_energy_ev
    return float(wavelength / (2.0 * np.sin(two_theta / 2.0))) if two_theta > 0 else float("inf")


@dataclass
class Powder:
    """Sum and maximum of the hit frames (ADU), and how many were added."""

    total: np.ndarray
    maximum: np.ndarray
    n: int = 0

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Powder:
        return cls(np.zeros(shape, np.float64), np.full(shape, -np.inf, np.float32), 0)

    def add(self, frame: np.ndarray) -> None:
        self.total += frame
        np.maximum(self.maximum, frame, out=self.maximum)
        self.n += 1

    def combine(self, other: Powder) -> None:
        self.total += other.total
        np.maximum(self.maximum, other.maximum, out=self.maximum)
        self.n += other.n


def find_hits(
    frames: np.ndarray,
    lay: PeakfinderLayout,
    maps: PixelMaps,
    *,
    first_index: int,
    photon_energy_ev: np.ndarray,
    clen_m: np.ndarray,
    threshold: float,
    min_snr: float,
    min_pix_count: int,
    max_pix_count: int,
    local_bg_radius: int,
    min_peaks: int,
    max_peaks: int,
    max_n_peaks: int,
    powder: Powder | None = None,
) -> list[FrameResult]:
    """peakfinder8 on each frame of a block (n, ss, fs); a frame is a hit when
    ``min_peaks ≤ n_peaks ≤ max_peaks``. Hits are added to ``powder``."""
    out = []
    for i, frame in enumerate(frames):
        peaks = peakfinder8(
            frame,
            lay,
            threshold=threshold,
            min_snr=min_snr,
            min_pix_count=min_pix_count,
            max_pix_count=max_pix_count,
            local_bg_radius=local_bg_radius,
            max_n_peaks=max_n_peaks,
        )
        hit = min_peaks <= len(peaks) <= max_peaks
        if hit and powder is not None:
            powder.add(np.where(lay.valid, frame, 0))
        out.append(
            FrameResult(
                first_index + i,
                peaks,
                hit,
                peak_resolution(peaks, maps, clen_m=float(clen_m[i]), photon_energy_ev=float(photon_energy_ev[i])),
                float(photon_energy_ev[i]),
            )
        )
    return out


def rolling_hit_rate(hits: np.ndarray, window: int) -> np.ndarray:
    """Fraction of hits in a centred window of ``window`` frames (shorter at the ends)."""
    h = np.asarray(hits, dtype=np.float64)
    if h.size == 0:
        return h
    w = max(1, min(window, h.size))
    kernel = np.ones(w)
    num = np.convolve(h, kernel, mode="same")
    den = np.convolve(np.ones_like(h), kernel, mode="same")
    return num / den
