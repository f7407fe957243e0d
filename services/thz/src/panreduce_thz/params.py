"""Parameters of the thz technique (validated once, at the edge). Defaults: those of the
facility's published run (TELBE run 038, 0.7 THz pump)."""

from __future__ import annotations

from typing import Literal

import pydantic

from panreduce.errors import FieldViolation, InvalidParameters
from panreduce.kit import Parameters

Gate = tuple[int, int]


class ThzParameters(Parameters):
    """Timing, gating, binning and spectral analysis of a TELBE pulse-resolved run."""

    # -- timing tool --------------------------------------------------------------------
    pixel_to_ps: float = pydantic.Field(
        0.0115, gt=0.0, le=10.0, description="Timing-tool calibration, ps per camera pixel (0 < x <= 10)."
    )
    stage_zero_mm: float = pydantic.Field(0.0, ge=-10000.0, le=10000.0, description="Stage position of zero delay, mm.")
    ps_per_mm: float = pydantic.Field(
        6.6713,
        ge=-1000.0,
        le=1000.0,
        description="Delay per mm of stage travel, ps/mm (2/c = 6.6713 for a double pass; "
        "negative for a reversed stage; not 0).",
    )
    bandpass: tuple[float, float] = pydantic.Field(
        (1e-5, 0.04),
        description="Band-pass of each timing-tool row [low, high] as fractions of Nyquist "
        "(0 < low < high < 1); Butterworth, causal as at the facility.",
    )
    bandpass_order: int = pydantic.Field(3, ge=1, le=8, description="Butterworth order (1..8).")
    timing_method: Literal["subpixel", "integer"] = pydantic.Field(
        "subpixel",
        description="'subpixel': vertex of a least-squares parabola around the filtered "
        "row's maximum; 'integer': the maximum's index (the facility's notebook).",
    )
    subpixel_half_width_px: int = pydantic.Field(
        3, ge=1, le=50, description="Half width of the sub-pixel parabola fit, px (1..50)."
    )
    timing_window_px: tuple[int, int] | None = pydantic.Field(
        None,
        description="Pixels [start, stop) of each timing-tool row timed: the row cropped to where the "
        "edge lies, filtered from start (fewer pixels, proportionally faster; the band-pass's start-up "
        "differs from the whole row's); default the whole row.",
    )
    # -- signal -------------------------------------------------------------------------
    samples_per_pulse: int = pydantic.Field(96, ge=2, le=100_000, description="ADC samples per pulse (2..100000).")
    signal_gate: tuple[int, int] = pydantic.Field(
        (0, 48), description="ADC samples [start, stop) summed as the signal."
    )
    background_gate: tuple[int, int] = pydantic.Field(
        (48, 96), description="ADC samples [start, stop) summed and subtracted as background."
    )
    offset: int = pydantic.Field(
        0,
        ge=-100_000,
        le=100_000,
        description="Pulse shift between camera and ADC: camera pulse i pairs with ADC pulse "
        "i - offset (the facility's roll direction); unpaired pulses are dropped, not wrapped.",
    )
    # -- binning and spectra ------------------------------------------------------------
    bin_ps: float = pydantic.Field(0.02, ge=1e-4, le=100.0, description="Delay bin width, ps (1e-4..100).")
    window: Literal["hann", "blackman", "boxcar"] = pydantic.Field(
        "hann", description="FFT window over the binned waveform (boxcar = the facility's)."
    )
    fundamental_thz: float = pydantic.Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Pump frequency, THz; 0 finds it as the largest spectral peak in fundamental_search_thz.",
    )
    fundamental_search_thz: tuple[float, float] = pydantic.Field(
        (0.15, 3.0), description="Band searched for the fundamental, THz [low, high]."
    )
    harmonics: int = pydantic.Field(3, ge=1, le=20, description="Harmonic orders analysed: 1..harmonics (1..20).")
    phase_reference_ps: float | None = pydantic.Field(
        None, ge=-1e6, le=1e6, description="Delay (ps) the harmonic phases refer to; default the waveform's centre."
    )
    threads: int = pydantic.Field(
        0,
        ge=0,
        le=256,
        description="Threads timing the pulses of a page in parallel (0 = the cores this process may use; 0..256).",
    )
    plots: bool = pydantic.Field(True, description="Write PNG figures.")
    pulse_table: bool = pydantic.Field(
        False,
        description="Also store the per-pulse table (delay, signal, arrival pixel, "
        "position) in thz.nxs (HDF5, compressed; 20 bytes a pulse).",
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> ThzParameters:
        bad: list[FieldViolation] = []
        lo, hi = self.bandpass
        if not 0 < lo < hi < 1:
            bad.append(
                FieldViolation("bandpass", f"need 0 < low < high < 1 (fractions of Nyquist); got {list(self.bandpass)}")
            )
        if self.ps_per_mm == 0:
            bad.append(FieldViolation("ps_per_mm", "must not be 0"))
        for name, (a, b) in (("signal_gate", self.signal_gate), ("background_gate", self.background_gate)):
            if not 0 <= a < b <= self.samples_per_pulse:
                bad.append(
                    FieldViolation(
                        name, f"need 0 <= start < stop <= samples_per_pulse ({self.samples_per_pulse}); got [{a}, {b}]"
                    )
                )
        if self.timing_window_px is not None:
            a, b = self.timing_window_px
            if not 0 <= a < b or b - a < 2 * self.subpixel_half_width_px + 1:
                bad.append(
                    FieldViolation(
                        "timing_window_px",
                        f"need 0 <= start < stop with at least 2·subpixel_half_width_px + 1 "
                        f"({2 * self.subpixel_half_width_px + 1}) pixels; got [{a}, {b}]",
                    )
                )
        f0, f1 = self.fundamental_search_thz
        if not 0 <= f0 < f1 <= 100:
            bad.append(FieldViolation("fundamental_search_thz", f"need 0 <= low < high <= 100 THz; got [{f0}, {f1}]"))
        if bad:
            raise InvalidParameters(bad)
        return self
