"""The saxs technique's parameters (validated once, at the edge), nested by step.

Each step's model holds the keywords of the function that does the step (httomo's way):
``resolve_geometry(..., **params.geometry.model_dump(exclude={"poni_file"}))``,
``job_masks(..., **params.masks.model_dump(exclude={"file"}))``,
``IntegrationSetup(..., **params.integration.model_dump())``,
``frame_norm(counters, scale, **params.normalisation.model_dump())``, and so on; errors
name the nested field (``integration.q_bins``).

Units are in the name, lower case: ``_kev``, ``_ev``, ``_m``, ``_mm``, ``_um``, ``_deg``,
``_s``, ``_angstrom``, ``_px``; q values (``q_range``, ``peak_q_range``, ...) are always
in 1/Å and carry no suffix. Nested fields may be given as dotted keys
(``{"geometry.distance_mm": 1502.7}``, ``-p geometry.distance_mm=1502.7`` on the CLI).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from panreduce.kit import Parameters


def _pair(value: object) -> object:
    """Accept "a,b" (the CLI passes text that is not JSON as a string) or [a, b]."""
    if isinstance(value, str):
        parts = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
        if len(parts) != 2:
            raise ValueError("expected two numbers 'a,b'")
        return tuple(parts)
    return value


Pair = Annotated[tuple[float, float], BeforeValidator(_pair)]


def _ordered(value: tuple[float, float] | None) -> tuple[float, float] | None:
    if value is not None and not value[0] < value[1]:
        raise ValueError("min must be below max")
    return value


class GeometryParameters(Parameters):
    """Keywords of ``geometry.resolve_geometry`` (``poni_file`` is resolved to a path first)."""

    poni_file: str = Field(
        "",
        max_length=1024,
        description="name of a pyFAI PONI input giving the geometry "
        "(default: the .poni among the inputs, if any); explicit terms below override it",
    )
    distance_mm: float | None = Field(None, gt=0, le=100_000, description="sample-detector distance (mm)")
    wavelength_angstrom: float | None = Field(None, gt=0, le=100, description="X-ray wavelength (Å)")
    energy_kev: float | None = Field(
        None, gt=0, le=1000, description="X-ray energy (keV), instead of wavelength_angstrom"
    )
    beam_center_px: Pair | None = Field(
        None,
        description="direct beam position 'x,y' in pixels: x = column, y = row of the image as "
        "stored (row 0 first, as fabio/tifffile read it), pyFAI/Fit2D convention (the corner of pixel "
        "(0,0) at 0,0); may lie off the detector",
    )
    pixel_um: float | None = Field(None, gt=0, le=10_000, description="pixel size (µm), square pixels")
    pixel_y_um: float | None = Field(None, gt=0, le=10_000, description="pixel height (µm) when not square")
    tilt_deg: float = Field(0.0, ge=-90, le=90, description="detector tilt (degrees, Fit2D convention)")
    tilt_plane_deg: float = Field(0.0, ge=-360, le=360, description="tilt plane rotation (degrees, Fit2D)")

    @field_validator("energy_kev")
    @classmethod
    def _one_energy(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("wavelength_angstrom") is not None:
            raise ValueError("give wavelength_angstrom or energy_kev, not both")
        return value


class MaskParameters(Parameters):
    """Keywords of ``masks.job_masks`` (``file`` is read first)."""

    file: str = Field("", max_length=1024, description="name of a mask image input (non-zero = masked)")
    below: float | None = Field(
        0.0,
        ge=-1e12,
        le=1e12,
        description="mask pixels whose raw value is below "
        "this (detectors mark dead pixels and gaps with negative values; zero counts "
        "are kept); null = no lower threshold",
    )
    above: float | None = Field(
        None,
        ge=-1e12,
        le=1e12,
        description="mask pixels whose raw value is above this (saturation/overflow, counts); null = none",
    )
    rectangles: str = Field(
        "",
        max_length=10_000,
        description="pixel rectangles to mask, 'row_min:row_max:col_min:col_max' (inclusive) separated by ';'",
    )
    detector: str = Field(
        "",
        max_length=100,
        description="pyFAI detector name (e.g. 'Eiger4M', 'Pilatus1M') whose module gaps are masked; '' = none",
    )
    beamstop: Literal["auto", "none"] = Field(
        "auto",
        description="'auto' masks the beamstop shadow found on the first frame (regions near "
        "the beam far below the isotropic level at their radius); 'none' does not",
    )
    hot_pixel_sigma: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="mask isolated pixels this many Poisson "
        "deviations above their 5x5 median on the first frame (0 = off)",
    )
    per_frame: bool = Field(
        False,
        description="recompute the threshold (below, above, non-finite values) and "
        "hot-pixel masks on every frame instead of taking them from the first frame; the "
        "beamstop shadow, mask file, detector gaps and rectangles stay as found for the "
        "first frame",
    )


class CorrectionParameters(Parameters):
    """The pyFAI corrections (``IntegrationSetup`` keywords; the files are read first)."""

    dark_file: str = Field("", max_length=1024, description="name of a dark-current image input (same exposure)")
    flat_file: str = Field("", max_length=1024, description="name of a flat-field image input (detector efficiency)")
    solid_angle: bool = Field(True, description="correct each pixel for its solid angle (relative to normal incidence)")
    polarization: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="polarisation factor for the correction "
        "(pyFAI: 1 = horizontal linear, ~0.99 at synchrotrons); null = none",
    )


class IntegrationParameters(Parameters):
    """Keywords of ``integrate.IntegrationSetup`` (binning, splitting, errors, sectors)."""

    q_bins: int = Field(
        0,
        ge=0,
        le=100_000,
        description="number of q bins (0 = one bin per pixel of radius, "
        "centred on whole-pixel radii, as beamline software does)",
    )
    q_range: Pair | None = Field(None, description="q range 'min,max' (1/Å) to integrate")
    pixel_splitting: Literal["no", "bbox", "full"] = Field("no", description="pyFAI pixel splitting")
    error_model: Literal["poisson", "azimuthal"] = Field(
        "poisson", description="errors from counting statistics or from the azimuthal scatter"
    )
    chi_range_deg: Pair | None = Field(
        None, description="sector: azimuth range 'min,max' (degrees, pyFAI χ) to integrate; null = full circle"
    )
    chi_bins: int = Field(360, ge=4, le=36_000, description="χ bins of the cake (outputs.cake)")

    @field_validator("q_range", "chi_range_deg")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _ordered(value)


class NormalisationParameters(Parameters):
    """Keywords of ``normalisation.frame_norm`` (the sample's)."""

    counter: str = Field(
        "",
        max_length=200,
        description="divide each frame by a counter of its SPEC/NeXus "
        "record: 'COUNTER', 'COUNTER/NUMBER' (e.g. 'diode/259139') or 'COUNTER*NUMBER'",
    )
    monitor: float | None = Field(
        None, gt=0, le=1e18, description="a fixed monitor value to divide by (when no counter is given)"
    )
    transmission: float = Field(1.0, gt=0, le=1, description="sample transmission (divide by it)")
    exposure_s: float | None = Field(None, gt=0, le=1e6, description="exposure time to divide by (s); null = none")
    thickness_mm: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="sample thickness (mm); the intensity is divided by it in cm to give 1/cm; null = none",
    )


class AbsoluteScaleParameters(Parameters):
    """The absolute scale: a factor, or a standard reduced like the sample."""

    factor: float | None = Field(
        None,
        gt=0,
        le=1e18,
        description="factor to absolute units (multiply), e.g. "
        "from water or glassy carbon measured on the same setup; null = 1, or from "
        "standard_file",
    )
    standard_file: str = Field(
        "",
        max_length=1024,
        description="name of an input frame of a standard (water, "
        "glassy carbon) reduced like the sample to derive the factor",
    )
    standard_reference: str = Field(
        "water",
        max_length=1024,
        description="the standard's known curve: 'water' "
        "(0.01632 1/cm at 20 °C), a number in 1/cm (flat), or the name of an input "
        "text file with columns q (1/Å) and I (1/cm)",
    )
    standard_background_file: str = Field(
        "", max_length=1024, description="name of an input frame (empty cell) subtracted from the standard"
    )
    standard_thickness_mm: float | None = Field(None, gt=0, le=1000, description="standard thickness (mm)")
    standard_transmission: float = Field(1.0, gt=0, le=1, description="standard transmission")
    standard_q_range: Pair | None = Field(
        None, description="q range 'min,max' (1/Å) where the standard is matched to its reference"
    )

    @field_validator("standard_q_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _ordered(value)

    @field_validator("standard_file")
    @classmethod
    def _one_scale(cls, value: str, info: ValidationInfo) -> str:
        if value and info.data.get("factor") is not None:
            raise ValueError("give factor or standard_file, not both")
        return value


class BackgroundParameters(Parameters):
    """A background frame normalised like the sample (its own transmission), subtracted."""

    file: str = Field(
        "",
        max_length=1024,
        description="name of an input frame (empty cell or solvent) "
        "normalised like the sample and subtracted, errors propagated",
    )
    transmission: float = Field(1.0, gt=0, le=1, description="background's transmission")
    scale: float = Field(
        1.0, ge=0, le=1000, description="factor on the background before subtraction (e.g. solvent volume fraction)"
    )


class KineticsParameters(Parameters):
    """Keywords of ``series.frame_times`` (frame_time_s) and ``series.kinetic_table``."""

    frame_time_s: float | None = Field(
        None, gt=0, le=1e6, description="time between frames (s) when no time counter is recorded"
    )
    guinier_qrg_max: float = Field(1.3, gt=0.3, le=3, description="upper limit of q·Rg in the Guinier fit")
    guinier_q_min: float = Field(0.0, ge=0, le=10, description="lowest q (1/Å) of the Guinier fit")
    guinier_q_max: float | None = Field(None, gt=0, le=10, description="highest q (1/Å) of the Guinier fit")


class MapParameters(Parameters):
    """The scanning map: the peak window (``series.peak_fits``), motors (``series.motors``)
    and grid steps (``analysis.map_grid``)."""

    peak_q_range: Pair | None = Field(
        None, description="q window 'min,max' (1/Å) of the per-frame Gaussian + linear background fit"
    )
    motor_x: str = Field("", max_length=200, description="positioner giving map x (default: the fast axis found)")
    motor_y: str = Field("", max_length=200, description="positioner giving map y (default: the slow axis found)")
    step_x: float | None = Field(
        None, gt=0, le=1e9, description="grid step along x (motor units); default: estimated from the positions"
    )
    step_y: float | None = Field(None, gt=0, le=1e9, description="grid step along y (motor units)")

    @field_validator("peak_q_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        return _ordered(value)


class OutputParameters(Parameters):
    """Optional outputs."""

    cake: bool = Field(False, description="also write the 2-D regrouping I(q, χ) of the first frame (caking)")
    image_2d: bool = Field(
        False,
        description="also write every frame's corrected, normalised 2-D image with "
        "Qx, Qy per pixel as NXcanSAS 2-D data (one SASentry per frame; 4M pixels are ~70 MB "
        "per frame)",
    )


class SaxsParameters(Parameters):
    mode: Literal["auto", "azimuthal", "kinetics", "map"] = Field(
        "auto",
        description="what to make: 'azimuthal' one I(q) per frame; 'kinetics' I(q, t) with Guinier Rg, "
        "I(0) and the invariant versus time; 'map' a per-frame Gaussian peak fit mapped on the scan motors; "
        "'auto': map when map.peak_q_range is set, kinetics for several frames, else azimuthal",
    )
    frames_path: str = Field(
        "",
        max_length=1024,
        description="HDF5 path of the frames in NeXus inputs "
        "(default: the NXdetector data, else the first 2-D/3-D NXdata signal)",
    )
    geometry: GeometryParameters = Field(default_factory=GeometryParameters, description="detector geometry")
    masks: MaskParameters = Field(default_factory=MaskParameters, description="masks")
    corrections: CorrectionParameters = Field(
        default_factory=CorrectionParameters, description="dark, flat, solid angle, polarisation"
    )
    integration: IntegrationParameters = Field(
        default_factory=IntegrationParameters, description="binning, pixel splitting, errors, sectors"
    )
    normalisation: NormalisationParameters = Field(
        default_factory=NormalisationParameters, description="monitor, transmission, exposure, thickness"
    )
    absolute: AbsoluteScaleParameters = Field(
        default_factory=AbsoluteScaleParameters, description="absolute scale: a factor or a standard"
    )
    background: BackgroundParameters = Field(default_factory=BackgroundParameters, description="background subtraction")
    kinetics: KineticsParameters = Field(default_factory=KineticsParameters, description="kinetic series")
    map: MapParameters = Field(default_factory=MapParameters, description="scanning maps")
    outputs: OutputParameters = Field(default_factory=OutputParameters, description="optional outputs")

    def file_fields(self) -> dict[str, str]:
        """``{field: input name}`` of every auxiliary input a parameter names."""
        named = {
            "geometry.poni_file": self.geometry.poni_file,
            "masks.file": self.masks.file,
            "corrections.dark_file": self.corrections.dark_file,
            "corrections.flat_file": self.corrections.flat_file,
            "background.file": self.background.file,
            "absolute.standard_file": self.absolute.standard_file,
            "absolute.standard_background_file": self.absolute.standard_background_file,
        }
        return {k: v for k, v in named.items() if v}
