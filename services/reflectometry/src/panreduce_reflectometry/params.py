"""Parameters of the ``reflectometry`` technique, with Mantid's names and meaning.

Lists may be given as JSON lists or as the comma-separated text the CLI passes
(``-p theta_deg=0.5,1.5,2.5``, ``-p roi=399-410,390-420,390-420``); per-run lists are in
run order (runs sorted by file name), one value for every run or a single value for all.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from panreduce.kit import Parameters

MAX_RUNS = 64
_RANGE = re.compile(r"^\s*([-+]?[0-9.eE+-]+?)\s*(?:-|:|\.\.)\s*([-+]?[0-9.eE+-]+)\s*$")


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return value


def _pair(value: Any, what: str, cast: type) -> tuple[Any, Any]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        lo, hi = cast(value[0]), cast(value[1])
    elif isinstance(value, str) and (m := _RANGE.match(value)):
        lo, hi = cast(float(m.group(1))) if cast is int else cast(m.group(1)), \
            cast(float(m.group(2))) if cast is int else cast(m.group(2))
    else:
        raise ValueError(f"{what} must look like 'low-high' (got {value!r})")
    if not hi >= lo:
        raise ValueError(f"{what}: the end {hi} is below the start {lo}")
    return lo, hi


Range = tuple[float, float]


class ReflectometryParameters(Parameters):
    theta_deg: list[float] | None = Field(
        None, max_length=MAX_RUNS,
        description="incidence angle θ per run in degrees (Mantid ThetaIn), in run order; default: the "
                    "file's log (INTER Theta, Platypus omega); OFFSPEC files need it (their logs are wrong)")
    roi: list[tuple[int, int]] | None = Field(
        None, max_length=MAX_RUNS,
        description="detector spectra to sum per run, spectrum numbers inclusive (Mantid "
                    "ProcessingInstructions), e.g. '399-410'; Platypus: y-pixel numbers 0-220; default: "
                    "found from the beam (centre ± FWHM)")
    background_roi: list[tuple[int, int]] | None = Field(
        None, max_length=MAX_RUNS,
        description="side spectra whose per-pixel average is subtracted (Mantid "
                    "BackgroundProcessingInstructions, PerDetectorAverage), e.g. '115-130'; default: none, "
                    "or beside the found beam when roi is found")
    transmission_roi: tuple[int, int] | None = Field(
        None, description="spectra of the transmission/direct-beam run(s) to sum (Mantid "
                          "TransmissionProcessingInstructions); default: found from that beam for Platypus, "
                          "the sample roi otherwise")
    summation: Literal["lambda", "q"] = Field(
        "lambda", description="sum the ROI in wavelength (SumInLambda) or along lines of constant Q "
                              "(SumInQ, Cubitt et al. 2015)")
    reduction_type: Literal["normal", "non_flat_sample", "divergent_beam"] = Field(
        "normal", description="Mantid ReductionType for summation in Q: normal/non_flat_sample (θ0 = 0) or "
                              "divergent_beam (θ0 = θ)")
    wavelength_range: Range | None = Field(
        None, description="λ range in Å, e.g. '1.2-17' (Mantid WavelengthMin/Max); default: the instrument's")
    monitor_background_range: Range | None = Field(
        None, description="λ range in Å of the I0 monitor's flat background (default: the instrument's)")
    monitor_integration_range: Range | None = Field(
        None, description="λ range in Å over which the I0 monitor is integrated (default: the instrument's)")
    dq_q: float | None = Field(
        None, gt=0.0, le=0.5,
        description="logarithmic Q bin width dQ/Q (Mantid MomentumTransferStep), also written as the "
                    "resolution (FWHM) when slits are unknown; default: from the slits, else 0.03")
    q_range: list[Range] | None = Field(
        None, max_length=MAX_RUNS,
        description="Q range in 1/Å per run (or one for all), e.g. '0.0085-0.055' (MomentumTransferMin/Max)")
    transmission: list[str] | None = Field(
        None, max_length=2,
        description="file names among the inputs: one or two transmission/direct-beam runs (two are "
                    "stitched in their overlap), or one table (CSV: λ [Å], T per Å, σT); default: a "
                    "Platypus run at ω = 0 among the inputs, else none (monitor only, no absolute scale)")
    transmission_overlap: Range | None = Field(
        None, description="λ range in Å where two transmission runs are stitched (default: their overlap)")
    scale: list[float] | None = Field(
        None, max_length=MAX_RUNS,
        description="manual stitch factors, one per run (the first included), instead of the automatic "
                    "overlap factors")
    orb: bool = Field(False, description="also write ORSO binary (.orb, NeXus) files")
    offspecular: bool = Field(False, description="also write each run's off-specular map I(Qx, Qz) over the "
                                                 "whole detector as NXdata (<run>_offspecular.nxs) and a PNG")
    plots: bool = Field(True, description="write a log R vs Q PNG")

    @field_validator("theta_deg", "scale", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("theta_deg")
    @classmethod
    def _angles(cls, value: list[float] | None) -> list[float] | None:
        for t in value or []:
            if not 0.01 <= t <= 30.0:
                raise ValueError(f"θ = {t}° is outside 0.01–30°")
        return value

    @field_validator("scale")
    @classmethod
    def _factors(cls, value: list[float] | None) -> list[float] | None:
        for f in value or []:
            if not 1e-6 <= f <= 1e6:
                raise ValueError(f"scale factor {f} is outside 1e-6–1e6")
        return value

    @field_validator("roi", "background_roi", mode="before")
    @classmethod
    def _spectrum_ranges(cls, value: Any) -> Any:
        if value is None:
            return None
        items = _split(value)
        if isinstance(items, list) and len(items) == 2 and all(isinstance(v, int) for v in items):
            items = [items]
        return [_pair(v, "spectrum range", int) for v in items]

    @field_validator("roi", "background_roi")
    @classmethod
    def _spectra_limits(cls, value: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        for lo, hi in value or []:
            if lo < 0 or hi > 100_000:
                raise ValueError(f"spectrum range {lo}-{hi} is outside 0–100000")
        return value

    @field_validator("transmission_roi", mode="before")
    @classmethod
    def _one_spectrum_range(cls, value: Any) -> Any:
        return None if value is None else _pair(value, "transmission_roi", int)

    @field_validator("wavelength_range", "monitor_background_range", "monitor_integration_range",
                     "transmission_overlap", mode="before")
    @classmethod
    def _wavelengths(cls, value: Any) -> Any:
        if value is None:
            return None
        lo, hi = _pair(value, "wavelength range", float)
        if not (0.1 <= lo < hi <= 100.0):
            raise ValueError(f"wavelength range {lo}-{hi} Å is outside 0.1–100 Å or empty")
        return lo, hi

    @field_validator("q_range", mode="before")
    @classmethod
    def _q_ranges(cls, value: Any) -> Any:
        if value is None:
            return None
        items = _split(value)
        if isinstance(items, list) and len(items) == 2 and all(isinstance(v, (int, float)) for v in items):
            items = [items]
        out = []
        for v in items:
            lo, hi = _pair(v, "q_range", float)
            if not (0.0 < lo < hi <= 10.0):
                raise ValueError(f"q_range {lo}-{hi} 1/Å is outside (0, 10] or empty")
            out.append((lo, hi))
        return out

    @field_validator("transmission", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        items = _split(value)
        for name in items or []:
            if not isinstance(name, str) or not name or len(name) > 255 or "/" in name or "\\" in name \
                    or name in (".", ".."):
                raise ValueError(f"give file names as they appear among the inputs (got {name!r})")
        return items

    @model_validator(mode="after")
    def _lengths(self) -> ReflectometryParameters:
        lengths = {k: len(getattr(self, k)) for k in ("theta_deg", "roi", "background_roi", "q_range")
                   if getattr(self, k)}
        multi = {k: n for k, n in lengths.items() if n > 1}
        if len(set(multi.values())) > 1:
            raise ValueError(f"per-run lists differ in length: {multi}")
        return self
