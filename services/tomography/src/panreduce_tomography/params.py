"""The tomography technique's parameters (validated once, at the edge)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from panreduce.kit import Parameters


class TomographyParameters(Parameters):
    # -- what to reconstruct
    algorithm: Literal["gridrec", "fbp", "sirt", "cgls"] = Field(
        "gridrec", description="reconstruction method: gridrec (NUFFT Fourier method, fastest on CPU), fbp "
        "(filtered back-projection, linear interpolation), sirt or cgls (iterative, for few or noisy angles)")
    filter: Literal["ramp", "shepp-logan", "cosine", "hamming", "hann", "parzen"] = Field(
        "ramp", description="FBP/gridrec filter window on the ramp")
    filter_cutoff: float = Field(1.0, gt=0, le=1, description="filter cut-off as a fraction of the Nyquist frequency")
    iterations: int = Field(50, ge=1, le=10_000, description="iterations of sirt/cgls")
    slice_start: int = Field(0, ge=0, description="first detector row (slice) to reconstruct")
    slice_stop: int | None = Field(None, ge=1, description="one past the last detector row (default: all rows)")
    slice_step: int = Field(1, ge=1, le=10_000, description="reconstruct every n-th row")
    size: int | None = Field(None, ge=8, le=16384, description="reconstructed slice size in pixels (default: detector width)")
    circle: bool = Field(True, description="zero the pixels outside the field of view (the disc the detector sees at every angle)")
    # -- centre
    center: float | None = Field(None, description="rotation axis position on the detector in pixels (column "
                                 "index, sub-pixel); omitted: found automatically (Vo 2014) and reported")
    center_search_radius: float | None = Field(None, gt=0, description="search the centre within this many pixels "
                                               "of the detector middle (default: a quarter of the width)")
    # -- corrections
    flat_field: Literal["conventional", "dynamic", "none"] = Field(
        "conventional", description="dark/flat correction: conventional (mean dark and flat), dynamic (eigen flat "
        "fields, Van Nieuwenhove 2015) or none")
    dynamic_components: int = Field(4, ge=1, le=50, description="number of eigen flat fields for flat_field=dynamic")
    dynamic_downsample: int = Field(2, ge=1, le=16, description="block size for fitting the eigen-flat weights")
    zinger_threshold: float = Field(0.0, ge=0, le=100, description="remove zingers deviating from the local median "
                                    "by more than this fraction of it (0: off)")
    ring_removal: Literal["none", "sorting", "filtering"] = Field(
        "none", description="stripe (ring) removal on each sinogram: Vo 2018 sorting-based (algorithm 3) or "
        "filtering-based (algorithm 2)")
    ring_size: int = Field(21, ge=3, le=501, description="median window (detector pixels) of the ring removal")
    phase_retrieval: Literal["none", "paganin"] = Field("none", description="single-distance phase retrieval")
    energy_kev: float = Field(20.0, gt=0, le=1000, description="X-ray energy (keV), for Paganin")
    distance_m: float = Field(0.1, gt=0, le=100, description="sample-detector distance (m), for Paganin")
    pixel_size_um: float = Field(1.0, gt=0, le=10_000, description="detector pixel size (micrometres), for Paganin")
    delta_beta: float = Field(100.0, gt=0, le=1e6, description="delta/beta ratio of the material, for Paganin")
    log_floor: float = Field(1e-6, gt=0, le=1, description="transmission below this is clipped before -log")
    angles_unit: Literal["auto", "degrees", "radians"] = Field(
        "auto", description="unit of the angles in the input (auto: from the units attribute, else by their span)")
    # -- output
    output_dtype: Literal["float32", "uint16"] = Field(
        "float32", description="volume data type; uint16 is rescaled linearly (scale/offset recorded)")
    slab_rows: int = Field(32, ge=1, le=4096, description="detector rows processed at once (memory bound: slabs)")
    backend: Literal["auto", "numpy", "torch"] = Field(
        "auto", description="array backend: auto (torch on a GPU when present, else numpy), numpy or torch")
    previews: int = Field(3, ge=0, le=64, description="number of PNG preview slices")
    # -- segmentation and quantification
    segment: bool = Field(False, description="segment the volume and write the quantification tables")
    threshold: float | None = Field(None, description="segmentation threshold (1/pixel); omitted: Otsu")
    min_object_voxels: int = Field(8, ge=1, le=10**9, description="objects smaller than this are ignored")
    # -- neutron time of flight
    tof_band: tuple[int, int] | None = Field(
        None, description="for FITS time-of-flight stacks: time bins [start, stop) summed into the projections")
    tof_bands_angstrom: list[tuple[float, float]] | None = Field(
        None, min_length=1, max_length=64, description="for time-of-flight stacks: wavelength bands [lo, hi) in "
        "angstrom; one reconstruction per band in the same job (entry/data/data is (band, z, y, x))")
    tof_regions: list[tuple[int, int, int, int]] | None = Field(
        None, min_length=1, max_length=4096, description="for time-of-flight stacks: pixel regions "
        "[row0, row1, col0, col1] (half-open) whose transmission spectra (and Bragg edges) are reported")
    tof_region_grid: tuple[Annotated[int, Field(ge=1, le=1024)], Annotated[int, Field(ge=1, le=1024)]] | None = Field(
        None, description="for time-of-flight stacks: split the detector into N x M equal regions for the "
        "spectra (ignored when tof_regions is given)")
    flight_path_m: float = Field(56.4, gt=0, le=1000, description="neutron flight path (m) for wavelengths "
                                 "from time of flight (IMAT: about 56.4 m)")
    bragg_edge_angstrom: float | None = Field(None, gt=0, le=50, description="for time-of-flight stacks: fit the "
                                              "Bragg edge near this wavelength (angstrom) in the transmission spectrum")
