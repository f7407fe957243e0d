"""The stem4d parameter model, nested by step as the other techniques are: ``calibration``,
``virtual``, ``com`` (centre of mass / DPC), ``strain``, ``output``; the input and execution
fields (``dataset``, ``scan_shape``, ``chunk_mb``, ``device``) stay at the top.

A step's field is set as ``-p step.field=value`` (the kit's dotted keys) or by its bare name
(``-p mrad_per_px=0.0827``: routed into its step, as the acceptance command and the flat model of
earlier versions name them). The strain step's fields also take their former flat names
(``strain=true`` is ``strain.enabled=true``, ``strain_reference`` is ``strain.reference``, ...)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from panreduce.kit import Parameters

Mrad = Annotated[float, Field(ge=0, le=10_000)]


def _split(value: object) -> object:
    """'1.7,8.3' (as the CLI passes it) -> [1.7, 8.3]; lists pass through."""
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
        return parts
    return value


Pair = tuple[float, float]


class Calibration(Parameters):
    """Detector and scan calibration (:func:`pipeline.calibrate`)."""

    mrad_per_px: float = Field(
        gt=0, le=100, description="detector calibration: mrad per pixel (from the camera length)"
    )
    center_px: tuple[float, float] | None = Field(
        None, description="beam centre (row, column) in px; default: fitted to the bright disc of the mean pattern"
    )
    ellipse_ring_mrad: tuple[Mrad, Mrad] | None = Field(
        None,
        description="fit the elliptical distortion to a ring (amorphous or polycrystalline) of the "
        "mean pattern lying between these angles (mrad, before correction); the affine correction is then "
        "applied to every detector and to the CoM",
    )
    energy_kev: float | None = Field(
        None, gt=1, le=3000, description="beam energy in keV (default: from the file); needed for the DPC phase"
    )
    scan_step_nm: float | None = Field(
        None, gt=0, le=1e6, description="scan step in nm (default: from the file's axes)"
    )

    _pairs = field_validator("center_px", "ellipse_ring_mrad", mode="before")(lambda cls, v: _split(v))

    @model_validator(mode="after")
    def _ordered(self) -> Calibration:
        _inner_outer(self, "ellipse_ring_mrad")
        return self


class Virtual(Parameters):
    """Virtual detectors (one streaming pass)."""

    bf_mrad: float | None = Field(
        None, gt=0, le=10_000, description="bright-field disc radius in mrad (default: 1.2 × the fitted disc)"
    )
    adf_mrad: tuple[Mrad, Mrad] | None = Field(
        None, description="ADF annulus inner,outer in mrad (default: 1.5 × and 4 × the BF radius)"
    )
    haadf_mrad: tuple[Mrad, Mrad] | None = Field(
        None, description="HAADF annulus inner,outer in mrad (only when given)"
    )
    masks: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,30}$")], Annotated[str, Field(max_length=100)]] = (
        Field(
            default_factory=dict,
            max_length=16,
            description="user detectors: name -> 'disc:R', 'annulus:RI,RO' or 'sector:RI,RO,A0,A1' (mrad, degrees "
            "from +x towards +y); at most 16",
        )
    )

    _pairs = field_validator("adf_mrad", "haadf_mrad", mode="before")(lambda cls, v: _split(v))

    @model_validator(mode="after")
    def _ordered(self) -> Virtual:
        _inner_outer(self, "adf_mrad")
        _inner_outer(self, "haadf_mrad")
        return self


class CentreOfMass(Parameters):
    """Centre of mass and DPC (:func:`pipeline.finish`)."""

    com_mrad: float | None = Field(
        None, gt=0, le=10_000, description="CoM inside this radius (mrad) (default: the bright-field disc, bf_mrad)"
    )
    descan: Literal["none", "mean", "plane", "quadratic"] = Field(
        "plane", description="descan removal: the CoM's fitted surface subtracted per component"
    )
    scan_rotation_deg: float | None = Field(
        None,
        ge=-360,
        le=360,
        description="scan–detector rotation "
        "(deg, +x towards +y); default: the one minimising the curl, in "
        "[-90, 90) (θ + 180° is the other branch: give it explicitly)",
    )
    flip: bool = Field(False, description="negate detector y before the rotation")
    dpc_phase: bool = Field(True, description="integrate the CoM into the DPC phase (needs energy and step)")


class Strain(Parameters):
    """Bragg discs and strain maps."""

    enabled: bool = Field(False, description="find Bragg discs and map strain (bare name: strain=true)")
    reference: tuple[int, int, int, int] | None = Field(
        None,
        description="reference region rows r0,r1, columns c0,c1 (scan indices, end exclusive); default: the "
        "whole scan (bare name: strain_reference)",
    )
    frame: Literal["scan", "detector"] = Field(
        "scan",
        description="strain maps in the scan (x, y) frame (the lattice turned by the scan–detector "
        "rotation and flip of the CoM step) or in the corrected detector frame (bare name: strain_frame)",
    )
    vacuum_position: tuple[int, int] | None = Field(
        None,
        description="scan (row, column) of a vacuum pattern for the probe template (default: the "
        "bright disc of the mean pattern)",
    )
    disc_threshold: float = Field(
        0.1, gt=0, lt=1, description="Bragg disc: correlation peak above this fraction of the strongest"
    )

    _pairs = field_validator("reference", "vacuum_position", mode="before")(lambda cls, v: _split(v))

    @model_validator(mode="after")
    def _region(self) -> Strain:
        r = self.reference
        if r is not None and not (0 <= r[0] < r[1] and 0 <= r[2] < r[3]):
            raise ValueError("reference: need 0 ≤ r0 < r1 and 0 ≤ c0 < c1")
        return self


class Output(Parameters):
    """What is written besides stem4d.nxs."""

    plots: bool = Field(True, description="write PNG overviews")


def _inner_outer(model: Parameters, name: str) -> None:
    v = getattr(model, name)
    if v is not None and not v[0] < v[1]:
        raise ValueError(f"{name}: inner must be smaller than outer, got {v[0]}, {v[1]}")


STEPS: dict[str, type[Parameters]] = {
    "calibration": Calibration,
    "virtual": Virtual,
    "com": CentreOfMass,
    "strain": Strain,
    "output": Output,
}
#: a step field's bare name -> (its step, its name in the step); the strain step's former flat names too
BARE: dict[str, tuple[str, str]] = {
    field: (step, field) for step, model in STEPS.items() for field in model.model_fields
}
BARE.update({"strain_reference": ("strain", "reference"), "strain_frame": ("strain", "frame")})


class Stem4dParameters(Parameters):
    # -- input and execution ------------------------------------------------------------
    scan_shape: tuple[Annotated[int, Field(ge=1, le=8192)], Annotated[int, Field(ge=1, le=8192)]] | None = Field(
        None,
        description="scan (rows, columns) of a .mib file (default: the .hdr's frames per trigger, "
        "else square, else one row)",
    )
    dataset: str | None = Field(
        None,
        max_length=256,
        pattern=r"^/?[A-Za-z0-9_.\-/ ]+$",
        description="HDF5 path of the 4-D dataset (default: the NeXus default "
        "NXdata signal, else an fpd/EMD group, else the first 4-D dataset)",
    )
    chunk_mb: int = Field(
        256,
        ge=8,
        le=16_384,
        description="memory for one block of scan rows (MB; the compiled pass over .mib or contiguous "
        "HDF5 frames reads 4 MB chunks instead)",
    )
    device: Literal["cpu", "gpu", "auto"] = Field(
        "cpu", description="virtual images and CoM with numpy (cpu) or torch on a CUDA GPU (gpu; auto: gpu if present)"
    )
    # -- the steps ------------------------------------------------------------------------
    calibration: Calibration = Field(description="mrad per pixel (required), beam centre, ellipse, energy, scan step")
    virtual: Virtual = Field(default_factory=Virtual, description="virtual detectors: BF, ADF, HAADF, user masks")
    com: CentreOfMass = Field(default_factory=CentreOfMass, description="centre of mass, descan, rotation, DPC")
    strain: Strain = Field(default_factory=Strain, description="Bragg discs and strain maps")
    output: Output = Field(default_factory=Output, description="what is written besides stem4d.nxs")

    @model_validator(mode="before")
    @classmethod
    def _route_step_fields(cls, data: Any) -> Any:
        """A step's field by its bare name into its step (``mrad_per_px`` -> ``calibration``); a
        bare ``strain`` that is not a mapping is ``strain.enabled``. Dotted keys are the kit's
        (``Parameters``). A field given both ways is refused; unknown keys stay, to be refused.
        ``calibration`` is always present so that a missing ``mrad_per_px`` is named as such."""
        if not isinstance(data, dict):
            return data
        if "strain" in data and not isinstance(data["strain"], (dict, Parameters)):
            data = {**data, "strain.enabled": data["strain"]}
            del data["strain"]
        out = cls.route_bare_fields(data, BARE)
        out.setdefault("calibration", {})
        return out

    @field_validator("scan_shape", mode="before")
    @classmethod
    def _pairs(cls, value: object) -> object:
        return _split(value)

    @field_validator("dataset")
    @classmethod
    def _inside_the_file(cls, value: str | None) -> str | None:
        if value is not None and any(part in ("..", ".") for part in value.split("/")):
            raise ValueError("an HDF5 path inside the input file: no '.' or '..' parts")
        return value
