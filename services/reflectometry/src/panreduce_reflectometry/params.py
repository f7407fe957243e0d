"""Parameters of the ``reflectometry`` technique, with Mantid's names and meaning.

Lists may be given as JSON lists or as the comma-separated text the CLI passes
(``-p theta_deg=0.5,1.5,2.5``, ``-p roi=399-410,390-420,390-420``); per-run lists are in
run order (runs sorted by file name), one value for every run or a single value for all.
"""

from __future__ import annotations

import math
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
        lo, hi = (
            cast(float(m.group(1))) if cast is int else cast(m.group(1)),
            cast(float(m.group(2))) if cast is int else cast(m.group(2)),
        )
    else:
        raise ValueError(f"{what} must look like 'low-high' (got {value!r})")
    if not hi >= lo:
        raise ValueError(f"{what}: the end {hi} is below the start {lo}")
    return lo, hi


Range = tuple[float, float]


class ReflectometryParameters(Parameters):
    theta_deg: list[float] | None = Field(
        None,
        max_length=MAX_RUNS,
        description="incidence angle θ per run in degrees (Mantid ThetaIn), in run order; default: the "
        "file's log (INTER Theta, Platypus omega); OFFSPEC files need it (their logs are wrong)",
    )
    theta_from: Literal["request", "log", "detector"] | None = Field(
        None,
        description="where θ comes from: the request (theta_deg), the file's log, or the detector "
        "(refnx's direct-beam method: θ = ½·atan((y_R − y_D)/L) from the reflected beam's height "
        "above the direct beam's on the detector, L the sample–detector distance; ½ of the "
        "beam's recorded 2θ when no direct beam is among the inputs); "
        "default: theta_deg when given, else the detector when a direct beam is among the inputs "
        "on an instrument that records its detector height (Platypus), else the log",
    )
    gravity: bool | None = Field(
        None,
        description="correct θ per wavelength for the neutrons' parabolic fall (θ(λ) = θ − ε(λ), ε "
        "the trajectory's elevation at the sample) and find both beams' heights for an infinitely "
        "fast neutron (refnx's treatment); needs the collimation slits' distances (Platypus); "
        "default: on where the instrument's description says so (Platypus), else off",
    )
    roi: list[tuple[int, int]] | None = Field(
        None,
        max_length=MAX_RUNS,
        description="detector spectra to sum per run, spectrum numbers inclusive (Mantid "
        "ProcessingInstructions), e.g. '399-410'; Platypus: y-pixel numbers 0-220; default: "
        "found from the beam (centre ± FWHM)",
    )
    background_roi: list[tuple[int, int]] | None = Field(
        None,
        max_length=MAX_RUNS,
        description="side spectra whose per-pixel average is subtracted (Mantid "
        "BackgroundProcessingInstructions, PerDetectorAverage), e.g. '115-130'; default: none, "
        "or beside the found beam when roi is found",
    )
    transmission_roi: tuple[int, int] | None = Field(
        None,
        description="spectra of the transmission/direct-beam run(s) to sum (Mantid "
        "TransmissionProcessingInstructions); default: found from that beam for Platypus, "
        "the sample roi otherwise",
    )
    summation: Literal["lambda", "q"] = Field(
        "lambda",
        description="sum the ROI in wavelength (SumInLambda) or along lines of constant Q (SumInQ, Cubitt et al. 2015)",
    )
    reduction_type: Literal["normal", "non_flat_sample", "divergent_beam"] = Field(
        "normal",
        description="Mantid ReductionType for summation in Q: normal/non_flat_sample (θ0 = 0) or "
        "divergent_beam (θ0 = θ)",
    )
    wavelength_range: Range | None = Field(
        None, description="λ range in Å, e.g. '1.2-17' (Mantid WavelengthMin/Max); default: the instrument's"
    )
    monitor_background_range: Range | None = Field(
        None, description="λ range in Å of the I0 monitor's flat background (default: the instrument's)"
    )
    monitor_integration_range: Range | None = Field(
        None, description="λ range in Å over which the I0 monitor is integrated (default: the instrument's)"
    )
    dq_q: float | None = Field(
        None,
        gt=0.0,
        le=0.5,
        description="logarithmic Q bin width dQ/Q (Mantid MomentumTransferStep), also written as the "
        "resolution (FWHM) when slits are unknown; default: from the slits, else 0.03",
    )
    q_range: list[Range] | None = Field(
        None,
        max_length=MAX_RUNS,
        description="Q range in 1/Å per run (or one for all), e.g. '0.0085-0.055' (MomentumTransferMin/Max)",
    )
    transmission: list[str] | None = Field(
        None,
        max_length=2,
        description="file names among the inputs: one or two transmission/direct-beam runs (two are "
        "stitched in their overlap), or one table (CSV: λ [Å], T per Å, σT); default: a "
        "Platypus run at ω = 0 among the inputs, else none (monitor only, no absolute scale)",
    )
    correction_algorithm: Literal["none", "polynomial", "exponential"] | None = Field(
        None,
        description="Mantid CorrectionAlgorithm when no transmission is given: divide by a polynomial "
        "(PolynomialCorrection: C0 + C1·λ + C2·λ² …, coefficients in `polynomial`) or an "
        "exponential (ExponentialCorrection: C0·exp(−C1·λ), `c0`, `c1`), λ in Å; implied by "
        "`polynomial` or `c0`/`c1` alone; accepts Mantid's names PolynomialCorrection, "
        "ExponentialCorrection, None",
    )
    polynomial: list[float] | None = Field(
        None,
        min_length=1,
        max_length=16,
        description="Mantid Polynomial: the coefficients C0,C1,C2,… of the polynomial correction (λ in Å)",
    )
    c0: float | None = Field(None, description="Mantid C0 of the exponential correction C0·exp(−C1·λ)")
    c1: float | None = Field(None, description="Mantid C1 of the exponential correction C0·exp(−C1·λ), 1/Å")
    transmission_overlap: Range | None = Field(
        None, description="λ range in Å where two transmission runs are stitched (default: their overlap)"
    )
    scale: list[float] | None = Field(
        None,
        max_length=MAX_RUNS,
        description="manual stitch factors, one per run (the first included), instead of the automatic overlap factors",
    )
    orb: bool = Field(False, description="also write ORSO binary (.orb, NeXus) files")
    offspecular: bool = Field(
        False,
        description="also write each run's off-specular map I(Qx, Qz) over the "
        "whole detector as NXdata (<run>_offspecular.nxs) and a PNG",
    )
    offspecular_axes: Literal["qx_qz", "pi_pf"] = Field(
        "qx_qz",
        description="axes of the off-specular map: (Qx, Qz), or (pi − pf, pi + pf) with "
        "pi = k sin α_i, pf = k sin α_f (1/Å)",
    )
    plots: bool = Field(True, description="write a log R vs Q PNG")

    @field_validator("correction_algorithm", mode="before")
    @classmethod
    def _mantid_correction(cls, value: Any) -> Any:
        names = {"polynomialcorrection": "polynomial", "exponentialcorrection": "exponential"}
        return names.get(value.strip().lower(), value.strip().lower()) if isinstance(value, str) else value

    @field_validator("theta_deg", "scale", "polynomial", mode="before")
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

    @field_validator(
        "wavelength_range",
        "monitor_background_range",
        "monitor_integration_range",
        "transmission_overlap",
        mode="before",
    )
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
            if (
                not isinstance(name, str)
                or not name
                or len(name) > 255
                or "/" in name
                or "\\" in name
                or name in (".", "..")
            ):
                raise ValueError(f"give file names as they appear among the inputs (got {name!r})")
        return items

    @property
    def correction_kind(self) -> Literal["polynomial", "exponential"] | None:
        """The algorithmic correction in force: named, or implied by its coefficients."""
        kind = self.correction_algorithm
        if kind is None:
            kind = (
                "polynomial"
                if self.polynomial
                else "exponential"
                if (self.c0 is not None or self.c1 is not None)
                else None
            )
        return None if kind == "none" else kind

    @model_validator(mode="after")
    def _correction(self) -> ReflectometryParameters:
        if self.correction_algorithm is None and self.polynomial and (self.c0 is not None or self.c1 is not None):
            raise ValueError("give polynomial or c0/c1, not both (or name correction_algorithm)")
        kind = self.correction_kind
        if kind == "polynomial" and not self.polynomial:
            raise ValueError("correction_algorithm polynomial needs its coefficients: polynomial=C0,C1,…")
        if kind == "exponential":
            if self.c0 is None or self.c1 is None:
                raise ValueError("correction_algorithm exponential needs c0 and c1 (C0·exp(−C1·λ))")
            if not self.c0 > 0 or not math.isfinite(self.c1) or abs(self.c1) > 100:
                raise ValueError(
                    f"exponential correction: c0 must be > 0 and |c1| ≤ 100 1/Å (got {self.c0}, {self.c1})"
                )
        if kind == "polynomial" and not all(math.isfinite(c) for c in self.polynomial or []):
            raise ValueError("polynomial coefficients must be finite numbers")
        if kind in ("polynomial", "exponential") and self.transmission:
            raise ValueError("give transmission runs/table or a correction_algorithm, not both")
        return self

    @model_validator(mode="after")
    def _theta_source(self) -> ReflectometryParameters:
        if self.theta_from == "request" and not self.theta_deg:
            raise ValueError("theta_from request needs theta_deg")
        if self.theta_from in ("log", "detector") and self.theta_deg:
            raise ValueError(f"theta_from {self.theta_from} and theta_deg both given: give one")
        return self

    @model_validator(mode="after")
    def _lengths(self) -> ReflectometryParameters:
        lengths = {
            k: len(getattr(self, k)) for k in ("theta_deg", "roi", "background_roi", "q_range") if getattr(self, k)
        }
        multi = {k: n for k, n in lengths.items() if n > 1}
        if len(set(multi.values())) > 1:
            raise ValueError(f"per-run lists differ in length: {multi}")
        return self
