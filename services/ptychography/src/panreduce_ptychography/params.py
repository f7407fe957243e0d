"""Parameters of the ptychography technique (validated once, at the edge)."""

from __future__ import annotations

from typing import Literal

import pydantic
from pydantic import Field

from panreduce.errors import FieldViolation, InvalidParameters
from panreduce.kit import Parameters


class PtychographyParameters(Parameters):
    """How to prepare the frames, which engine to run and for how long, and the
    constraints on probe and positions."""

    iterations: int = Field(
        100, ge=1, le=100_000,
        description="Iterations of the main engine (dimensionless count).")
    engine: Literal["dm", "ml", "lsqml"] = Field(
        "dm",
        description="Main engine: dm (Difference Map, Thibault 2009), ml (Poisson maximum "
        "likelihood, conjugate gradients, Thibault & Guizar-Sicairos 2012) or lsqml "
        "(least-squares maximum likelihood with mini-batches, Odstrcil 2018).")
    ml_iterations: int = Field(
        0, ge=0, le=100_000,
        description="Poisson maximum-likelihood iterations run after the main engine to "
        "refine its result (the usual DM -> ML sequence); 0 = none.")
    probe_modes: int = Field(
        1, ge=1, le=16,
        description="Number of mutually incoherent probe modes (mixed states, Thibault & "
        "Menzel 2013); 1 = a fully coherent probe.")
    probe_support: float = Field(
        0.0, ge=0.0, le=1.0,
        description="Radius of a circular real-space probe support as a fraction of the "
        "frame side (e.g. 0.4); 0 = no support constraint.")
    probe_update_start: int = Field(
        1, ge=0, le=100_000,
        description="Iteration (0-based) from which the probe is updated; before it only the "
        "object is.")
    probe_diameter_m: float | None = Field(
        None, gt=0, le=1.0,
        description="When the input holds no initial probe: FWHM (m) of a Gaussian initial "
        "probe; null takes the inverse Fourier transform of the mean diffraction amplitude.")
    subpixel: bool = Field(
        True,
        description="Place the probe at sub-pixel positions by a Fourier shift (exact, slower); "
        "false rounds positions to whole object pixels (PtyPy's model, faster).")
    subpixel_grid: int = Field(
        4, ge=0, le=64,
        description="Sub-pixel shifts rounded to 1/subpixel_grid of an object pixel, so that "
        "positions sharing a shift share one shifted probe (a few FFTs instead of two per "
        "position and iteration); 0 = exact shifts. Ignored (exact) with position_refinement.")
    object_init: Literal["dpc", "flat"] = Field(
        "dpc",
        description="Initial object: dpc (unit amplitude, low-frequency phase integrated from the "
        "centre-of-mass shifts of the frames, differential phase contrast) or flat (1 everywhere).")
    position_refinement: bool = Field(
        False, description="Refine the scan positions along the object gradient (needs subpixel).")
    position_refinement_start: int = Field(
        10, ge=0, le=100_000, description="Iteration (0-based) from which positions are refined.")
    position_refinement_every: int = Field(
        1, ge=1, le=10_000, description="Refine positions every this many iterations.")
    position_max_step_px: float = Field(
        0.5, gt=0, le=10,
        description="Largest move of one position in one refinement step (object pixels).")
    dm_alpha: float = Field(
        1.0, gt=0, le=1.0,
        description="Difference Map mixing parameter alpha (PtyPy's alpha; 1 = the classic map).")
    dm_fourier_eps: float = Field(
        3.0, ge=0.0, le=1000.0,
        description="Damping of the Difference Map's modulus projection, in sqrt(photons): the "
        "measured amplitude is divided by the model amplitude plus this value, softening the "
        "projection at weak, Poisson-noisy pixels (the amplitude noise is ~0.5 sqrt(photons)); "
        "0.1 = the plain projection.")
    ml_regularisation: float = Field(
        0.0, ge=0, le=100.0,
        description="Weight of the Gaussian smoothness prior mu*|grad O|^2 of the ML engine, "
        "relative to the mean photons per object pixel; 0 = none.")
    lsqml_batches: int = Field(
        4, ge=1, le=4096,
        description="Number of random mini-batches the positions are split into per LSQML "
        "iteration.")
    frame_size: int = Field(
        0, ge=0, le=4096,
        description="Side (pixels, after binning) of the square frames cut around the "
        "diffraction centre; 0 = the largest that fits the detector.")
    binning: int = Field(
        1, ge=1, le=16, description="Detector pixels summed per side (1 = no binning).")
    center_row: float | None = Field(
        None, ge=-100_000, le=100_000,
        description="Detector row (pixels) of the zero frequency; null: from the file, else the "
        "middle of a square detector kept whole, else the centre of mass of the mean frame.")
    center_col: float | None = Field(
        None, ge=-100_000, le=100_000,
        description="Detector column (pixels) of the zero frequency (see center_row).")
    counts_per_photon: float = Field(
        1.0, gt=0, le=1e9,
        description="Detector counts per photon (frames are divided by it; 1 for photon-counting "
        "detectors).")
    saturation: float | None = Field(
        None, gt=0,
        description="Counts at or above which a pixel is masked as saturated/hot (after dark "
        "subtraction); null = no limit.")
    energy_ev: float | None = Field(
        None, gt=0, le=1e7, description="Photon energy (eV) overriding the file's; null = the file's.")
    distance_m: float | None = Field(
        None, gt=0, le=1e3, description="Sample-detector distance (m) overriding the file's.")
    pixel_size_m: float | None = Field(
        None, gt=0, le=1.0, description="Detector pixel size (m, square) overriding the file's.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="Where the engines run: cpu (numpy), gpu (torch on CUDA; refused on a server "
        "without one) or auto (a GPU when present).")
    threads: int = Field(
        1, ge=1, le=256, description="CPU threads for the FFTs on the numpy path.")
    plots: bool = Field(True, description="Write a PNG of phase, amplitude, probe and error history.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed (extra probe modes, mini-batches).")

    @pydantic.model_validator(mode="after")
    def _combinations(self) -> PtychographyParameters:
        bad: list[FieldViolation] = []
        if (self.center_row is None) != (self.center_col is None):
            bad.append(FieldViolation("center_col" if self.center_col is None else "center_row",
                                      "center_row and center_col must be given together"))
        if self.position_refinement and not self.subpixel:
            bad.append(FieldViolation("subpixel", "position_refinement needs subpixel=true"))
        if bad:
            raise InvalidParameters(bad)
        return self
