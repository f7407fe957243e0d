"""One run in time of flight, and its pixel geometry: plain data, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from panreduce_reflectometry.instruments import Instrument


@dataclass(frozen=True)
class TofRun:
    """One run: detector spectra in time of flight and what reducing them needs.

    ``counts``/``variances`` (n_spec, n_tof) for the position-sensitive detector,
    ``spectra`` their spectrum numbers; ``pixel_y_m``/``pixel_z_m`` each pixel's position
    (y up, z along the beam, sample at 0) as the file records it; for an instrument whose
    detector is moved to 2θ (``vertical_shift``) ``pixel_y_m`` is relative to the detector
    reference point. ``tof_edges_us`` are shared by all spectra; ``tof_offset_us`` is
    subtracted before conversion (a chopper's time origin)."""

    source: str
    instrument: Instrument
    run_number: str
    title: str
    start_time: str
    sample_name: str
    counts: np.ndarray
    variances: np.ndarray
    spectra: np.ndarray
    tof_edges_us: np.ndarray
    pixel_y_m: np.ndarray
    pixel_z_m: np.ndarray
    pixel_height_m: float
    source_to_sample_m: float
    tof_offset_us: float = 0.0
    monitor_counts: np.ndarray | None = None  # I0 monitor spectrum in TOF (same edges)
    monitor_flight_path_m: float | None = None
    monitor_total: float | None = None  # a scalar monitor count (Platypus bm1)
    theta_log_deg: float | None = None  # the sample angle a log holds (may be wrong: see docs)
    slit_gaps_mm: tuple[float, float] | None = None
    slit_distance_mm: float | None = None  # between the two collimation slits
    first_slit_to_sample_m: float | None = None  # first collimation slit -> sample, along the beam (gravity)
    proton_charge_uah: float | None = None
    counting_time_s: float | None = None
    is_direct_beam: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)


def with_counts(run: TofRun, counts: np.ndarray, variances: np.ndarray) -> TofRun:
    return replace(run, counts=counts, variances=variances)


def pixel_two_theta(run: TofRun, *, theta_deg: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pixel's 2θ [rad], angular height [rad] and sample–pixel distance L2 [m].

    ``vertical_shift``: the detector keeps its z and is moved to y = z·tan(2θ_in)
    (Mantid SpecularReflectionPositionCorrect, VerticalShift); ``recorded``: as the file
    says. Angular height = atan((y + h/2)/z) − atan((y − h/2)/z)."""
    y = run.pixel_y_m
    z = run.pixel_z_m
    if run.instrument.placement == "vertical_shift":
        if theta_deg is None:
            raise ValueError("the detector position needs θ")
        y = y + run.instrument.detector_distance_m * math.tan(math.radians(2.0 * theta_deg))
    h = run.pixel_height_m
    tt = np.arctan2(y, z)
    width = np.arctan((y + 0.5 * h) / z) - np.arctan((y - 0.5 * h) / z)
    return tt, width, np.hypot(y, z)
