"""Parameters of the ``sans`` technique (validated once, at the edge)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from panreduce.kit import Parameters

_ADD_KEY = re.compile(r"^\d+-add$")


class SansParameters(Parameters):
    user_file: str = Field(
        ...,
        min_length=1,
        max_length=255,
        description="file name of the ISIS SANS user file among the inputs (e.g. USER_LOQ_125B.txt); "
        "the direct-beam and flat-cell files it names must be among the inputs too",
    )
    batch_file: str = Field(
        ...,
        min_length=1,
        max_length=255,
        description="file name of the Mantid batch CSV among the inputs (e.g. reduce-gfp.csv): one output "
        "per row, named by its output_as column",
    )
    instrument: Literal["LOQ"] = Field("LOQ", description="instrument description to use (ISIS LOQ)")
    add_runs: dict[str, list[int]] = Field(
        default_factory=dict,
        description="runs to sum for each 'NNNNN-add' name of the batch file, e.g. "
        '{"75965-add": [75884, 75892, 75965]}; a name not given here is read from a file '
        "LOQNNNNN-add.nxs among the inputs, or else sums every scattering run among the inputs "
        "with the title of run NNNNN and a run number up to NNNNN",
    )
    unknown_commands: Literal["error", "warn"] = Field(
        "error",
        description="what unknown, malformed or unimplemented user-file commands do: 'error' "
        "refuses the request naming each line, 'warn' logs them and goes on",
    )
    normalisation_errors: bool = Field(
        True,
        description="propagate the errors of the wavelength adjustment (monitor, transmission fit, "
        "direct-beam efficiency) and of the flat cell into sigma_I (Mantid Q1D v2); false "
        "keeps counting statistics only",
    )
    q_assignment: Literal["centre", "split"] = Field(
        "centre",
        description="'centre': each wavelength bin goes to the Q bin of its centre (Mantid Q1D v2); "
        "'split': it is shared among the Q bins its Q range overlaps",
    )
    radius_cut: float = Field(
        0.0,
        ge=0,
        le=2000,
        description="Q1D RadiusCut in mm (0: the user file's L/Q/RCUT, else none); "
        "with wave_cut drops short wavelengths near the beam",
    )
    wave_cut: float = Field(
        0.0,
        ge=0,
        le=50,
        description="Q1D WaveCut in Å (0: the user file's L/Q/WCUT, else none): for pixels "
        "at R < radius_cut, wavelength bins below wave_cut*(radius_cut-R)/radius_cut "
        "are dropped",
    )
    period: int = Field(
        0,
        ge=0,
        le=10000,
        description="period of multi-period runs to reduce (1-based; single-period runs, e.g. "
        "transmissions, ignore it); 0 refuses multi-period runs, naming their period count",
    )
    qxy: bool = Field(False, description="also write I(Qx,Qy) on the L/QXY grid as <output>_2d.h5 (NXcanSAS 2-D)")
    cansas_xml: bool = Field(False, description="also write canSAS 1-D XML (<output>.xml)")
    plots: bool = Field(True, description="write a log-log PNG of I(Q) with error bars per output")

    @field_validator("add_runs")
    @classmethod
    def _check_add_runs(cls, value: dict[str, list[int]]) -> dict[str, list[int]]:
        for key, runs in value.items():
            if not _ADD_KEY.match(key):
                raise ValueError(f"key {key!r} must look like '75965-add'")
            if not runs:
                raise ValueError(f"{key}: needs at least one run")
            if any(r <= 0 for r in runs):
                raise ValueError(f"{key}: run numbers must be positive")
        return value

    @field_validator("user_file", "batch_file")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError("give the file name only, as it appears among the inputs")
        return value
