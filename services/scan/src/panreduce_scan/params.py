"""Parameters of the scan technique (validated once, at the edge)."""

from __future__ import annotations

from typing import Literal

import pydantic

from panreduce.errors import FieldViolation, InvalidParameters
from panreduce.kit import Parameters

_NAME = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"

#: free parameters of each model (peak + linear background)
MODEL_PARAMETERS = {"gaussian": 5, "lorentzian": 5, "pseudo_voigt": 6}


class ScanParameters(Parameters):
    """How to find, normalise and fit the peak of each scan, and how to tabulate a batch."""

    model: Literal["gaussian", "lorentzian", "pseudo_voigt"] = pydantic.Field(
        "pseudo_voigt",
        description="Peak shape, on a linear background: gaussian, lorentzian, or "
        "pseudo_voigt (Lorentzian fraction fitted, 0..1). Dimensionless choice.",
    )
    signal: str = pydantic.Field(
        "auto",
        max_length=128,
        pattern=_NAME,
        description="Detector column to fit (e.g. roi2_sum, roi1.total, sum), or 'auto': "
        "the declared detector signal, else the ROI sums (roi2, roi1, ...), else the "
        "detector sum/total; monitors such as ring current are never used. Counts.",
    )
    axis: str = pydantic.Field(
        "auto",
        max_length=128,
        pattern=_NAME,
        description="Scan axis column (e.g. eta, k), or 'auto': the commanded scannable "
        "that actually varies (from the scan command, scan roles, @axes), else the most "
        "evenly stepped varying positioner. Units as in the file (deg, r.l.u., ...).",
    )
    normalise: bool = pydantic.Field(
        True,
        description="Divide counts by attenuator transmission (0..1] and count time (s), "
        "giving counts/s at full beam. False fits raw counts.",
    )
    normalise_ring_current: bool = pydantic.Field(
        True,
        description="Also scale by ring_current_reference / ring current (mA) where the file "
        "records the ring current. Only used when normalise is true.",
    )
    ring_current_reference: float = pydantic.Field(
        300.0,
        ge=1.0,
        le=1000.0,
        description="Ring current the intensities are normalised to, in mA (1..1000; Diamond runs at 300 mA).",
    )
    series_axis: str = pydantic.Field(
        "auto",
        max_length=128,
        pattern=_NAME,
        description="Metadata scalar to tabulate the fitted parameters against across a "
        "batch (e.g. Ta in K, en in keV, psi in deg, spara in mm), 'scan' for the scan "
        "number, or 'auto': the temperature/energy/azimuth that varies across the batch, "
        "else a quantity stepped regularly, else the scan number.",
    )
    min_points: int = pydantic.Field(
        7,
        ge=6,
        le=100000,
        description="Fewest scan points a file may have (6..100000); fewer is an input "
        "error. Must exceed the model's free parameters (5, pseudo_voigt 6).",
    )
    edge_margin_fwhm: float = pydantic.Field(
        1.0,
        ge=0.0,
        le=10.0,
        description="A peak whose centre lies closer than this many FWHM to either end of "
        "the scan is flagged 'edge' (0..10, in units of the fitted FWHM).",
    )
    min_significance: float = pydantic.Field(
        5.0,
        ge=0.0,
        le=1000.0,
        description="A peak less significant than this, in standard deviations (likelihood "
        "ratio against a background-only fit), is flagged 'flat' (0..1000 sigma).",
    )
    scale_errors: bool = pydantic.Field(
        True,
        description="Inflate counting-statistics errors by sqrt(reduced chi^2) when the "
        "fit is worse than counting statistics allow (reduced chi^2 > 1).",
    )
    plots: bool = pydantic.Field(
        True, description="Write PNG report figures (one per scan, and series.png for a batch)."
    )

    @pydantic.model_validator(mode="after")
    def _check_combinations(self) -> ScanParameters:
        needed = MODEL_PARAMETERS[self.model] + 1
        if self.min_points < needed:
            raise InvalidParameters(
                [
                    FieldViolation(
                        "min_points",
                        f"must be at least {needed} for model {self.model!r} "
                        f"({needed - 1} free parameters); got {self.min_points}",
                    )
                ]
            )
        return self
