"""Parameters of the ptychography technique (validated once, at the edge), nested by step:
``preparation`` (frames), ``probe`` (initial probe and its constraints), ``object``
(initial object), ``position`` (refinement), ``dm``/``ml``/``lsqml`` (engine settings) and
``convergence`` (stop rule). The engine options are derived from the step models by
name (:func:`engine_options`): an option ``<step>_<field>`` takes ``<step>.<field>``,
an option named like a top-level parameter takes it.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import pydantic
from pydantic import Field

from panreduce.errors import FieldViolation, InvalidParameters
from panreduce.kit import Parameters
from panreduce_ptychography.model import DM_FOURIER_EPS, Options


class Step(pydantic.BaseModel):
    """A group of parameters of one step (unknown keys refused, like the top level)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)


class Preparation(Step):
    """Cropping, binning, centring and calibration of the frames."""

    frame_size: int = Field(
        0,
        ge=0,
        le=4096,
        description="Side (pixels, after binning) of the square frames cut around the "
        "diffraction centre; 0 = the largest that fits the detector.",
    )
    binning: int = Field(1, ge=1, le=16, description="Detector pixels summed per side (1 = no binning).")
    center_row: float | None = Field(
        None,
        ge=-100_000,
        le=100_000,
        description="Detector row (pixels) of the zero frequency; null: from the file, else the "
        "middle of a square detector kept whole, else the centre of mass of the mean frame.",
    )
    center_col: float | None = Field(
        None, ge=-100_000, le=100_000, description="Detector column (pixels) of the zero frequency (see center_row)."
    )
    counts_per_photon: float = Field(
        1.0,
        gt=0,
        le=1e9,
        description="Detector counts per photon (frames are divided by it; 1 for photon-counting detectors).",
    )
    saturation: float | None = Field(
        None,
        gt=0,
        le=1e12,
        description="Counts at or above which a pixel is masked as saturated/hot (after dark "
        "subtraction); null = no limit.",
    )
    energy_ev: float | None = Field(
        None, gt=0, le=1e7, description="Photon energy (eV) overriding the file's; null = the file's."
    )
    distance_m: float | None = Field(
        None, gt=0, le=1e3, description="Sample-detector distance (m) overriding the file's."
    )
    pixel_size_m: float | None = Field(
        None, gt=0, le=1.0, description="Detector pixel size (m, square) overriding the file's."
    )


class Probe(Step):
    """The initial probe and the constraints on it."""

    init: Literal["auto", "scan", "input", "data", "circular", "rectangular", "gaussian"] = Field(
        "auto",
        description="Initial probe: scan (the scan file's own), input (a probe in the job input "
        "named by probe.input, e.g. a previous reconstruction's NeXus output or a CXI file), "
        "data (estimated from the frames: pupil from the mean diffraction pattern, defocus by a "
        "short search, power from the mean counts), circular / rectangular (a lens or zone plate "
        "/ KB aperture of size aperture_m focused at focal_length_m, propagated by defocus_m), "
        "gaussian (a Gaussian focus of FWHM diameter_m, propagated by defocus_m); auto = scan "
        "when the file has a probe, input when probe.input is given, else data.",
    )
    input: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Name of the job input (as staged: its file name, or its path under a "
        "prefix) holding the initial probe; that input is not reconstructed.",
    )
    modes: int = Field(
        1,
        ge=1,
        le=16,
        description="Number of mutually incoherent probe modes (mixed states, Thibault & "
        "Menzel 2013); 1 = a fully coherent probe.",
    )
    support: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Radius of a circular real-space probe support as a fraction of the frame "
        "side (e.g. 0.4); 0 = no support constraint.",
    )
    update_start: int = Field(
        1,
        ge=0,
        le=100_000,
        description="Iteration (0-based) from which the probe is updated; before it only the object is.",
    )
    diameter_m: float | None = Field(None, gt=0, le=1.0, description="gaussian: FWHM of the focus (m).")
    aperture_m: float | None = Field(
        None,
        gt=0,
        le=1.0,
        description="circular: diameter (m) of the focusing optic's aperture; rectangular: its width (m, along x).",
    )
    aperture_height_m: float | None = Field(
        None, gt=0, le=1.0, description="rectangular: aperture height (m, along y); null = aperture_m."
    )
    focal_length_m: float | None = Field(
        None, gt=0, le=1e3, description="circular/rectangular: focal length (m) of the optic."
    )
    defocus_m: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="circular/rectangular/gaussian: distance (m) from the focus to the sample, "
        "positive downstream of the focus.",
    )


class Object(Step):
    """The initial object."""

    init: Literal["dpc", "flat"] = Field(
        "dpc",
        description="Initial object: dpc (unit amplitude, low-frequency phase integrated from the "
        "centre-of-mass shifts of the frames, differential phase contrast) or flat (1 everywhere).",
    )


class Position(Step):
    """Refinement of the scan positions."""

    refinement: bool = Field(False, description="Refine the scan positions along the object gradient (needs subpixel).")
    start: int = Field(10, ge=0, le=100_000, description="Iteration (0-based) from which positions are refined.")
    every: int = Field(1, ge=1, le=10_000, description="Refine positions every this many iterations.")
    max_step_px: float = Field(
        0.5, gt=0, le=10, description="Largest move of one position in one refinement step (object pixels)."
    )


class DM(Step):
    """Difference Map settings."""

    alpha: float = Field(
        1.0, gt=0, le=1.0, description="Difference Map mixing parameter alpha (PtyPy's alpha; 1 = the classic map)."
    )
    fourier_eps: float = Field(
        DM_FOURIER_EPS,
        ge=0.0,
        le=1000.0,
        description="Damping of the Difference Map's modulus projection, in sqrt(photons): the "
        "measured amplitude is divided by the model amplitude plus this value, softening the "
        "projection at weak, Poisson-noisy pixels (the amplitude noise is ~0.5 sqrt(photons)); "
        "0.1 = the plain projection.",
    )


class ML(Step):
    """Poisson maximum-likelihood settings."""

    regularisation: float = Field(
        0.0,
        ge=0,
        le=100.0,
        description="Weight of the Gaussian smoothness prior mu*|grad O|^2 of the ML engine, "
        "relative to the mean photons per object pixel; 0 = none.",
    )


class LSQML(Step):
    """LSQML settings."""

    batches: int = Field(
        4, ge=1, le=4096, description="Number of random mini-batches the positions are split into per LSQML iteration."
    )


class Convergence(Step):
    """The stop rule and the convergence test (see docs/ptychography.md, Convergence)."""

    stop: bool = Field(
        True,
        description="Stop an engine when its error metric has levelled off (relative fall over "
        "window iterations below tolerance); false runs the iteration counts in full.",
    )
    tolerance: float = Field(
        5e-3,
        gt=0,
        le=1.0,
        description="Relative fall of the error metric (reduced Poisson deviance) over window "
        "iterations below which it has levelled off (dimensionless).",
    )
    window: int = Field(10, ge=2, le=10_000, description="Iterations over which the fall is measured.")
    max_deviance: float = Field(
        3.0,
        gt=1.0,
        le=1e6,
        description="Largest final reduced Poisson deviance (deviance / its expectation under "
        "Poisson noise of the model, 1 for a model that explains the data to the noise) of a "
        "converged reconstruction.",
    )
    max_phase_noise_floor_rad: float = Field(
        0.02,
        gt=0,
        le=10.0,
        description="Largest shot-noise floor of the object phase (rad, RMS over the well-lit "
        "region: sqrt(1 / (4 N)), N photons through each object pixel) of a converged "
        "reconstruction; above it too few photons crossed the specimen for its phase to be "
        "known, and a fit to the noise is reported photon_limited.",
    )
    max_raster_periodic_rad: float = Field(
        0.02,
        gt=0,
        le=10.0,
        description="On a raster scan without jitter, the largest RMS of the object phase "
        "periodic with the raster (rad, well-lit region; the raster-grid ambiguity) of a "
        "converged reconstruction; above it the job is reported raster_ambiguous.",
    )


class Pxct(Step):
    """The tomographic stage of PXCT (see docs/ptychography.md, PXCT): after every projection
    is reconstructed, their phases are unwrapped, cleared of offsets and ramps, aligned and
    reconstructed into a volume by the tomography technique's gridrec."""

    enabled: bool = Field(
        False,
        description="Reconstruct a volume from the job's projections (at least 3, each with "
        "sample/rotation_angle): pxct.nxs (NXtomoproc) with the aligned projections.",
    )
    unwrap: bool = Field(True, description="Unwrap each projection's phase (2-D, reliability sorted).")
    air_width_px: int = Field(
        4,
        ge=1,
        le=1000,
        description="Columns at each side of the common field of view taken as air: the plane "
        "(offset and linear ramp) fitted there is removed from each projection.",
    )
    vertical: bool = Field(True, description="Align the projections vertically by the vertical mass fluctuation.")
    iterations: int = Field(
        5, ge=0, le=100, description="Most rounds of reprojection alignment (reconstruct, reproject, register)."
    )


class PtychographyParameters(Parameters):
    """How to prepare the frames, which engine to run and for how long, the initial probe and
    object, the constraints and the stop rule."""

    engine: Literal["dm", "ml", "lsqml"] = Field(
        "dm",
        description="Main engine: dm (Difference Map, Thibault 2009), ml (Poisson maximum "
        "likelihood, conjugate gradients, Thibault & Guizar-Sicairos 2012) or lsqml "
        "(least-squares maximum likelihood with mini-batches, Odstrcil 2018).",
    )
    iterations: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Most iterations of the main engine (dimensionless count; fewer when the stop "
        "rule fires, see convergence).",
    )
    ml_iterations: int = Field(
        300,
        ge=0,
        le=100_000,
        description="Most Poisson maximum-likelihood iterations run after the main engine to "
        "refine its result (the usual DM -> ML sequence, each ended by the stop rule; aperture "
        "probes need 200-300); 0 = none.",
    )
    subpixel: bool = Field(
        True,
        description="Place the probe at sub-pixel positions by a Fourier shift (exact, slower); "
        "false rounds positions to whole object pixels (PtyPy's model, faster).",
    )
    subpixel_grid: int = Field(
        4,
        ge=0,
        le=64,
        description="Sub-pixel shifts rounded to 1/subpixel_grid of an object pixel, so that "
        "positions sharing a shift share one shifted probe (a few FFTs instead of two per "
        "position and iteration); 0 = exact shifts. Ignored (exact) with position refinement.",
    )
    preparation: Preparation = Field(default_factory=Preparation, description="Frame preparation.")
    probe: Probe = Field(default_factory=Probe, description="Initial probe and probe constraints.")
    object: Object = Field(default_factory=Object, description="Initial object.")
    position: Position = Field(default_factory=Position, description="Position refinement.")
    dm: DM = Field(default_factory=DM, description="Difference Map settings.")
    ml: ML = Field(default_factory=ML, description="Maximum-likelihood settings.")
    lsqml: LSQML = Field(default_factory=LSQML, description="LSQML settings.")
    convergence: Convergence = Field(default_factory=Convergence, description="Stop rule and convergence test.")
    pxct: Pxct = Field(default_factory=Pxct, description="PXCT: the volume from the projections.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="Where the engines run: cpu (numpy), gpu (torch on CUDA; refused on a server "
        "without one) or auto (a GPU when present).",
    )
    threads: int = Field(1, ge=1, le=256, description="CPU threads for the FFTs on the numpy path.")
    plots: bool = Field(True, description="Write a PNG of phase, amplitude, probe and error history.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Random seed (extra probe modes, mini-batches).")

    @pydantic.model_validator(mode="after")
    def _combinations(self) -> PtychographyParameters:
        bad: list[FieldViolation] = []
        prep, probe = self.preparation, self.probe
        if (prep.center_row is None) != (prep.center_col is None):
            bad.append(
                FieldViolation(
                    "preparation.center_col" if prep.center_col is None else "preparation.center_row",
                    "center_row and center_col must be given together",
                )
            )
        if self.position.refinement and not self.subpixel:
            bad.append(FieldViolation("subpixel", "position.refinement needs subpixel=true"))
        if probe.init == "input" and probe.input is None:
            bad.append(FieldViolation("probe.input", "probe.init=input needs probe.input (a job input)"))
        if probe.input is not None and probe.init not in ("auto", "input"):
            bad.append(FieldViolation("probe.input", f"probe.input is not used with probe.init={probe.init}"))
        if probe.init in ("circular", "rectangular"):
            for name in ("aperture_m", "focal_length_m"):
                if getattr(probe, name) is None:
                    bad.append(FieldViolation(f"probe.{name}", f"probe.init={probe.init} needs probe.{name}"))
        if probe.init == "gaussian" and probe.diameter_m is None:
            bad.append(FieldViolation("probe.diameter_m", "probe.init=gaussian needs probe.diameter_m"))
        if bad:
            raise InvalidParameters(bad)
        return self


def engine_options(params: PtychographyParameters) -> Options:
    """The engines' :class:`~panreduce_ptychography.model.Options` from the parameters, by
    name: ``<step>_<field>`` from ``params.<step>.<field>``, else the top-level parameter
    of the same name, else the option's default."""
    values = {}
    top = type(params).model_fields
    for f in dataclasses.fields(Options):
        if f.name in top:
            values[f.name] = getattr(params, f.name)
            continue
        step, _, key = f.name.partition("_")
        group = getattr(params, step, None) if step in top else None
        if isinstance(group, Step) and key in type(group).model_fields:
            values[f.name] = getattr(group, key)
    return Options(**values)
