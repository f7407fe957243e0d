"""The saxs technique's parameters (validated once, at the edge)."""

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


class SaxsParameters(Parameters):
    mode: Literal["auto", "azimuthal", "kinetics", "map"] = Field(
        "auto", description="what to make: 'azimuthal' one I(q) per frame; 'kinetics' I(q, t) with "
        "Guinier Rg, I(0) and the invariant versus time; 'map' a per-frame Gaussian peak fit mapped "
        "on the scan motors; 'auto': map when peak_q_range is set, kinetics for several frames, "
        "else azimuthal")
    # -- geometry ------------------------------------------------------------------------
    poni_file: str = Field("", description="name of a pyFAI PONI input giving the geometry (default: "
                           "the .poni among the inputs, if any); explicit parameters below override it")
    distance_mm: float | None = Field(None, gt=0, le=100_000, description="sample-detector distance (mm)")
    wavelength_A: float | None = Field(None, gt=0, le=100, description="X-ray wavelength (Å)")
    energy_keV: float | None = Field(None, gt=0, le=1000, description="X-ray energy (keV), instead of wavelength_A")
    beam_center_px: Pair | None = Field(
        None, description="direct beam position 'x,y' in pixels: x = column, y = row of the image as "
        "stored (row 0 first, as fabio/tifffile read it), pyFAI/Fit2D convention (the corner of pixel "
        "(0,0) at 0,0); may lie off the detector")
    pixel_um: float | None = Field(None, gt=0, le=10_000, description="pixel size (µm), square pixels")
    pixel_y_um: float | None = Field(None, gt=0, le=10_000, description="pixel height (µm) when not square")
    tilt_deg: float = Field(0.0, ge=-90, le=90, description="detector tilt (degrees, Fit2D convention)")
    tilt_plane_deg: float = Field(0.0, ge=-360, le=360, description="tilt plane rotation (degrees, Fit2D)")
    detector: str = Field("", description="pyFAI detector name (e.g. 'Eiger4M', 'Pilatus1M') whose "
                          "module gaps are masked; '' = none")
    frames_path: str = Field("", description="HDF5 path of the frames in NeXus inputs (default: the "
                             "NXdetector data, else the first 2-D/3-D NXdata signal)")
    # -- masks ---------------------------------------------------------------------------
    mask_file: str = Field("", description="name of a mask image input (non-zero = masked)")
    mask_below: float | None = Field(0.0, ge=-1e12, le=1e12, description="mask pixels whose raw value is "
                                     "below this (detectors mark dead pixels and gaps with negative "
                                     "values; zero counts are kept); null = no lower threshold")
    mask_above: float | None = Field(None, ge=-1e12, le=1e12, description="mask pixels whose raw value is "
                                     "above this (saturation/overflow, counts); null = none")
    mask_rectangles: str = Field("", description="pixel rectangles to mask, "
                                 "'row_min:row_max:col_min:col_max' (inclusive) separated by ';'")
    beamstop: Literal["auto", "none"] = Field(
        "auto", description="'auto' masks the beamstop shadow found on the first frame (regions near "
        "the beam far below the isotropic level at their radius); 'none' does not")
    hot_pixel_sigma: float = Field(0.0, ge=0, le=1000, description="mask isolated pixels this many "
                                   "Poisson deviations above their 5x5 median on the first frame "
                                   "(0 = off)")
    mask_per_frame: bool = Field(False, description="recompute the threshold (mask_below, mask_above, "
                                 "non-finite values) and hot-pixel masks on every frame instead of taking "
                                 "them from the first frame; the beamstop shadow, mask file, detector gaps "
                                 "and rectangles stay as found for the first frame")
    # -- corrections ---------------------------------------------------------------------
    dark_file: str = Field("", description="name of a dark-current image input (same exposure)")
    flat_file: str = Field("", description="name of a flat-field image input (detector efficiency)")
    solid_angle: bool = Field(True, description="correct each pixel for its solid angle (relative to "
                              "normal incidence)")
    polarization: float | None = Field(None, ge=-1, le=1, description="polarisation factor for the "
                                       "correction (pyFAI: 1 = horizontal linear, ~0.99 at synchrotrons);"
                                       " null = no correction")
    # -- normalisation and absolute scale -----------------------------------------------
    normalise_by: str = Field("", description="divide each frame by a counter of its SPEC/NeXus record: "
                              "'COUNTER', 'COUNTER/NUMBER' (e.g. 'diode/259139') or 'COUNTER*NUMBER'")
    monitor: float | None = Field(None, gt=0, le=1e18, description="a fixed monitor value to divide by "
                                  "(when no counter is given)")
    transmission: float = Field(1.0, gt=0, le=1, description="sample transmission (divide by it)")
    exposure_s: float | None = Field(None, gt=0, le=1e6, description="exposure time to divide by (s); "
                                     "null = none")
    thickness_mm: float | None = Field(None, gt=0, le=1000, description="sample thickness (mm); the "
                                       "intensity is divided by it in cm to give 1/cm; null = none")
    absolute_scale: float | None = Field(None, gt=0, le=1e18, description="factor to absolute units "
                                         "(multiply), e.g. from water or glassy carbon measured on the "
                                         "same setup; null = 1, or from standard_file")
    standard_file: str = Field("", description="name of an input frame of a standard (water, glassy "
                               "carbon) reduced like the sample to derive absolute_scale")
    standard_reference: str = Field("water", description="the standard's known curve: 'water' (0.01632 "
                                    "1/cm at 20 °C), a number in 1/cm (flat), or the name of an input "
                                    "text file with columns q (1/Å) and I (1/cm)")
    standard_background_file: str = Field("", description="name of an input frame (empty cell) "
                                          "subtracted from the standard")
    standard_thickness_mm: float | None = Field(None, gt=0, le=1000, description="standard thickness (mm)")
    standard_transmission: float = Field(1.0, gt=0, le=1, description="standard transmission")
    standard_q_range: Pair | None = Field(None, description="q range 'min,max' (1/Å) where the standard "
                                          "is matched to its reference")
    # -- background ----------------------------------------------------------------------
    background_file: str = Field("", description="name of an input frame (empty cell or solvent) "
                                 "normalised like the sample and subtracted, errors propagated")
    background_transmission: float = Field(1.0, gt=0, le=1, description="background's transmission")
    background_scale: float = Field(1.0, ge=0, le=1000, description="factor on the background before "
                                    "subtraction (e.g. solvent volume fraction)")
    # -- binning -------------------------------------------------------------------------
    q_bins: int = Field(0, ge=0, le=100_000, description="number of q bins (0 = one bin per pixel of "
                        "radius, centred on whole-pixel radii, as beamline software does)")
    q_range: Pair | None = Field(None, description="q range 'min,max' (1/Å) to integrate")
    pixel_splitting: Literal["no", "bbox", "full"] = Field("no", description="pyFAI pixel splitting")
    error_model: Literal["poisson", "azimuthal"] = Field(
        "poisson", description="errors from counting statistics or from the azimuthal scatter")
    chi_range: Pair | None = Field(None, description="sector: azimuth range 'min,max' (degrees, pyFAI "
                                   "χ) to integrate; null = full circle")
    cake: bool = Field(False, description="also write the 2-D regrouping I(q, χ) (caking)")
    chi_bins: int = Field(360, ge=4, le=36_000, description="χ bins of the cake")
    image_2d: bool = Field(False, description="also write every frame's corrected, normalised 2-D image "
                           "with Qx, Qy per pixel as NXcanSAS 2-D data (one SASentry per frame; "
                           "4M pixels are ~70 MB per frame)")
    # -- kinetics ------------------------------------------------------------------------
    frame_time_s: float | None = Field(None, gt=0, le=1e6, description="time between frames (s) when "
                                       "no time counter is recorded")
    guinier_qrg_max: float = Field(1.3, gt=0.3, le=3, description="upper limit of q·Rg in the Guinier fit")
    guinier_q_min: float = Field(0.0, ge=0, le=10, description="lowest q (1/Å) of the Guinier fit")
    guinier_q_max: float | None = Field(None, gt=0, le=10, description="highest q (1/Å) of the Guinier fit")
    # -- maps ----------------------------------------------------------------------------
    peak_q_range: Pair | None = Field(None, description="q window 'min,max' (1/Å) of the per-frame "
                                      "Gaussian + linear background fit (maps)")
    motor_x: str = Field("", description="positioner giving map x (default: the fast axis found)")
    motor_y: str = Field("", description="positioner giving map y (default: the slow axis found)")
    map_step_x: float | None = Field(None, gt=0, le=1e9, description="grid step along x (motor units); "
                                     "default: estimated from the positions")
    map_step_y: float | None = Field(None, gt=0, le=1e9, description="grid step along y (motor units)")

    # cross-field checks are field validators (so that the error names its field)
    @field_validator("q_range", "standard_q_range", "peak_q_range", "chi_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("min must be below max")
        return value

    @field_validator("energy_keV")
    @classmethod
    def _one_energy(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("wavelength_A") is not None:
            raise ValueError("give wavelength_A or energy_keV, not both")
        return value

    @field_validator("standard_file")
    @classmethod
    def _one_scale(cls, value: str, info: ValidationInfo) -> str:
        if value and info.data.get("absolute_scale") is not None:
            raise ValueError("give absolute_scale or standard_file, not both")
        return value
