"""The tomography technique's parameters (validated once, at the edge), nested by step.

Each step's model holds the keywords of the science function that runs it
(``kwargs()`` returns them under that function's names):

========================  ==============================================================
``corrections``           :func:`panreduce_tomography.pipeline.sinograms` (zingers, dark/flat, -log, rings)
``phase``                 :func:`panreduce_tomography.corrections.paganin`
``axis``                  :func:`panreduce_tomography.pipeline.find_centre` (when ``center`` is omitted)
``reconstruction``        :func:`panreduce_tomography.recon.reconstruct`
``segmentation``          :func:`panreduce_tomography.segment.quantify`
``tof``                   :func:`panreduce_tomography.tof.read_fits_tof` (and the Bragg-edge fit)
``output``                :mod:`panreduce_tomography.outputs`
========================  ==============================================================

A request gives a step's parameters nested (``{"reconstruction": {"algorithm":
"sirt"}}``), dotted (``{"reconstruction.algorithm": "sirt"}``) or by their own name
(``{"algorithm": "sirt"}``, as ``-p algorithm=sirt`` on the command line): every field
name is unique across the steps, so each of the three means one field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from panreduce.kit import Parameters


class Corrections(Parameters):
    """Zingers -> dark/flat -> (phase) -> -log -> rings: :func:`pipeline.sinograms`."""

    flat_field: Literal["conventional", "dynamic", "none"] = Field(
        "conventional",
        description="dark/flat correction: conventional (mean dark and flat), dynamic (eigen flat "
        "fields, Van Nieuwenhove 2015) or none",
    )
    dynamic_components: int = Field(4, ge=1, le=50, description="number of eigen flat fields for flat_field=dynamic")
    dynamic_downsample: int = Field(2, ge=1, le=16, description="block size for fitting the eigen-flat weights")
    zinger_threshold: float = Field(
        0.0,
        ge=0,
        le=100,
        description="remove zingers deviating from the local median by more than this fraction of it (0: off)",
    )
    ring_removal: Literal["none", "sorting", "filtering"] = Field(
        "none",
        description="stripe (ring) removal on each sinogram: Vo 2018 sorting-based (algorithm 3) or "
        "filtering-based (algorithm 2)",
    )
    ring_size: int = Field(21, ge=3, le=501, description="median window (detector pixels) of the ring removal")
    log_floor: float = Field(1e-6, gt=0, le=1, description="transmission below this is clipped before -log")

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class PhaseRetrieval(Parameters):
    """Single-distance phase retrieval: :func:`corrections.paganin`."""

    phase_retrieval: Literal["none", "paganin"] = Field("none", description="single-distance phase retrieval")
    energy_kev: float = Field(20.0, gt=0, le=1000, description="X-ray energy (keV), for Paganin")
    distance_m: float = Field(0.1, gt=0, le=100, description="sample-detector distance (m), for Paganin")
    pixel_size_um: float = Field(1.0, gt=0, le=10_000, description="detector pixel size (micrometres), for Paganin")
    delta_beta: float = Field(100.0, gt=0, le=1e6, description="delta/beta ratio of the material, for Paganin")

    def kwargs(self) -> dict[str, Any] | None:
        """The keywords of :func:`corrections.paganin` (None: no phase retrieval)."""
        if self.phase_retrieval == "none":
            return None
        return {
            "pixel_size_m": self.pixel_size_um * 1e-6,
            "distance_m": self.distance_m,
            "energy_kev": self.energy_kev,
            "delta_beta": self.delta_beta,
        }


class RotationAxis(Parameters):
    """The rotation axis: given, or found by :func:`pipeline.find_centre` (Vo 2014)."""

    center: float | None = Field(
        None,
        description="rotation axis position on the detector in pixels (column "
        "index, sub-pixel); omitted: found automatically (Vo 2014) and reported",
    )
    center_search_radius: float | None = Field(
        None,
        gt=0,
        description="search the centre within this many pixels "
        "of the detector middle (default: a quarter of the width)",
    )
    trial_centres: tuple[Annotated[float, Field(gt=0, le=4096)], Annotated[float, Field(gt=0, le=1024)]] | None = Field(
        None,
        description="trial-centre mode [range, step] (pixels): reconstruct the middle slice at every "
        "centre from (found or given) - range to + range in steps of step (at most 101), as one PNG strip "
        "and an NXdata stack (entry/trial_centres), instead of the volume",
    )

    def kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`pipeline.find_centre`."""
        return {"search_radius": self.center_search_radius}


class Reconstruction(Parameters):
    """The keywords of :func:`recon.reconstruct` (the same names)."""

    algorithm: Literal["gridrec", "fbp", "sirt", "cgls"] = Field(
        "gridrec",
        description="reconstruction method: gridrec (NUFFT Fourier method, fastest on CPU), fbp "
        "(filtered back-projection, linear interpolation), sirt or cgls (iterative, for few or noisy angles)",
    )
    filter: Literal["ramp", "shepp-logan", "cosine", "hamming", "hann", "parzen"] = Field(
        "ramp", description="FBP/gridrec filter window on the ramp"
    )
    filter_cutoff: float = Field(1.0, gt=0, le=1, description="filter cut-off as a fraction of the Nyquist frequency")
    iterations: int = Field(50, ge=1, le=10_000, description="iterations of sirt/cgls")
    size: int | None = Field(
        None, ge=8, le=16384, description="reconstructed slice size in pixels (default: detector width)"
    )
    circle: bool = Field(
        True, description="zero the pixels outside the field of view (the disc the detector sees at every angle)"
    )
    device: Literal["auto", "cpu", "gpu", "torch-cpu"] = Field(
        "auto",
        description="where it runs (panreduce.backend): auto (torch on a CUDA GPU when present, else "
        "numpy), cpu (numpy), gpu (torch on CUDA; refused without one) or torch-cpu (torch on the CPU)",
    )

    def kwargs(self) -> dict[str, Any]:
        return self.model_dump()


class Segmentation(Parameters):
    """Segmentation and quantification: :func:`segment.quantify`."""

    segment: bool = Field(False, description="segment the volume and write the quantification tables")
    threshold: float | None = Field(None, description="segmentation threshold (1/pixel); omitted: Otsu")
    min_object_voxels: int = Field(8, ge=1, le=10**9, description="objects smaller than this are ignored")

    def kwargs(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "min_voxels": self.min_object_voxels}


class TimeOfFlight(Parameters):
    """Neutron time-of-flight stacks: :func:`tof.read_fits_tof` and the Bragg-edge fit."""

    tof_band: tuple[int, int] | None = Field(
        None, description="for FITS time-of-flight stacks: time bins [start, stop) summed into the projections"
    )
    tof_bands_angstrom: list[tuple[float, float]] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="for time-of-flight stacks: wavelength bands [lo, hi) in "
        "angstrom; one reconstruction per band in the same job (entry/data/data is (band, z, y, x))",
    )
    tof_regions: list[tuple[int, int, int, int]] | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="for time-of-flight stacks: pixel regions "
        "[row0, row1, col0, col1] (half-open) whose transmission spectra (and Bragg edges) are reported",
    )
    tof_region_grid: tuple[Annotated[int, Field(ge=1, le=1024)], Annotated[int, Field(ge=1, le=1024)]] | None = Field(
        None,
        description="for time-of-flight stacks: split the detector into N x M equal regions for the "
        "spectra (ignored when tof_regions is given)",
    )
    flight_path_m: float = Field(
        56.4,
        gt=0,
        le=1000,
        description="neutron flight path (m) for wavelengths from time of flight (IMAT: about 56.4 m)",
    )
    bragg_edge_angstrom: float | None = Field(
        None,
        gt=0,
        le=50,
        description="for time-of-flight stacks: fit the "
        "Bragg edge near this wavelength (angstrom) in the transmission spectrum",
    )

    def kwargs(self) -> dict[str, Any]:
        """The keywords of :func:`tof.read_fits_tof`."""
        return {
            "band": self.tof_band,
            "bands_angstrom": self.tof_bands_angstrom,
            "flight_path_m": self.flight_path_m,
            "regions": self.tof_regions,
            "grid": self.tof_region_grid,
        }

    def given(self) -> list[str]:
        """The ToF-only fields set (they need a FITS time-of-flight input)."""
        return [
            k
            for k in ("tof_band", "bragg_edge_angstrom", "tof_bands_angstrom", "tof_regions", "tof_region_grid")
            if getattr(self, k) is not None
        ]


class Output(Parameters):
    """What is written: :mod:`outputs`."""

    output_dtype: Literal["float32", "uint16"] = Field(
        "float32", description="volume data type; uint16 is rescaled linearly (scale/offset recorded)"
    )
    previews: int = Field(3, ge=0, le=64, description="number of PNG preview slices")
    preview_pixels: int = Field(
        512,
        ge=64,
        le=4096,
        description="the slice image of a PNG preview is upscaled "
        "(nearest neighbour) to at least this many pixels across",
    )
    tiff_stack: bool = Field(
        False,
        description="also write the volume as a float32 TIFF stack (one page per "
        "slice, tomography.tiff, for Fiji/ImageJ; needs tifffile)",
    )


STEPS: dict[str, type[Parameters]] = {
    "corrections": Corrections,
    "phase": PhaseRetrieval,
    "axis": RotationAxis,
    "reconstruction": Reconstruction,
    "segmentation": Segmentation,
    "tof": TimeOfFlight,
    "output": Output,
}
#: every step field's own name -> its step
STEP_OF: dict[str, str] = {field: step for step, model in STEPS.items() for field in model.model_fields}


class TomographyParameters(Parameters):
    # -- which slices, read how
    slice_start: int = Field(0, ge=0, description="first detector row (slice) to reconstruct")
    slice_stop: int | None = Field(None, ge=1, description="one past the last detector row (default: all rows)")
    slice_step: int = Field(1, ge=1, le=10_000, description="reconstruct every n-th row")
    angles_unit: Literal["auto", "degrees", "radians"] = Field(
        "auto", description="unit of the angles in the input (auto: from the units attribute, else by their span)"
    )
    slab_rows: int = Field(32, ge=1, le=4096, description="detector rows processed at once (memory bound: slabs)")
    # -- the steps
    corrections: Corrections = Field(default_factory=Corrections, description="zingers, dark/flat, -log, rings")
    phase: PhaseRetrieval = Field(default_factory=PhaseRetrieval, description="Paganin phase retrieval")
    axis: RotationAxis = Field(default_factory=RotationAxis, description="the rotation axis (centre)")
    reconstruction: Reconstruction = Field(default_factory=Reconstruction, description="the reconstruction")
    segmentation: Segmentation = Field(default_factory=Segmentation, description="segmentation and quantification")
    tof: TimeOfFlight = Field(default_factory=TimeOfFlight, description="neutron time-of-flight stacks")
    output: Output = Field(default_factory=Output, description="what is written")

    @model_validator(mode="before")
    @classmethod
    def _route_step_fields(cls, data: Any) -> Any:
        """A step's field by its own name (``algorithm``) into its step, as the flat model of
        earlier versions took it; dotted keys are the kit's (``Parameters``). Unknown keys
        stay, to be refused."""
        return cls.route_bare_fields(data, {field: (step, field) for field, step in STEP_OF.items()})
