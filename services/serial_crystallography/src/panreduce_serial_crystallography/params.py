"""Parameters of the serial crystallography technique (CrystFEL's option names)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from panreduce.kit import Parameters

_NAME = r"^[A-Za-z0-9._-]{1,200}$"
_H5PATH = r"^/[A-Za-z0-9_./-]{0,400}$"


class SerialParameters(Parameters):
    # -- inputs
    geometry: str | None = Field(
        None,
        pattern=_NAME,
        description="file name, among the inputs, of the CrystFEL .geom (default: the one .geom given)",
    )
    data_path: str | None = Field(
        None, pattern=_H5PATH, description="HDF5 path of the frames (default: the geometry's 'data')"
    )
    # -- peakfinder8 (indexamajig --peaks=peakfinder8 options and defaults)
    threshold: float = Field(
        800.0, ge=0, le=1e9, description="ADC threshold (ADU): the lowest upper threshold a peak pixel must exceed"
    )
    min_snr: float = Field(
        5.0, gt=0, le=1e4, description="sigma-clipping factor of the radial statistics and the minimum peak SNR"
    )
    min_pix_count: int = Field(2, ge=1, le=10_000, description="fewest pixels of a peak")
    max_pix_count: int = Field(200, ge=1, le=100_000, description="most pixels of a peak")
    local_bg_radius: int = Field(
        3, ge=1, le=50, description="local background: a disc of radius 2·local_bg_radius pixels"
    )
    min_res: float = Field(0.0, ge=0, le=1e5, description="innermost radius used (pixels from the beam)")
    max_res: float = Field(1200.0, ge=0, le=1e5, description="outermost radius used (pixels from the beam)")
    max_peaks: int = Field(2048, ge=1, le=100_000, description="at most this many peaks kept per frame")
    # -- the hit decision and its outputs
    min_peaks: int = Field(10, ge=0, le=100_000, description="a frame is a hit with at least this many peaks")
    max_hit_peaks: int = Field(100_000, ge=0, le=100_000, description="... and at most this many")
    export_hits: bool = Field(True, description="write hits.cxi (hit frames and their peak lists) and hits.lst")
    block_frames: int = Field(
        16, ge=1, le=1024, description="frames read, searched and written per block (bounds memory)"
    )
    hit_rate_window: int = Field(100, ge=1, le=1_000_000, description="frames per point of the hit-rate curve")
    # -- indexing, prediction and integration (indexamajig's names)
    indexing: Literal["none", "pairs"] = Field(
        "none",
        description="'pairs': index the hits with the known cell (lattice-vector pair search, least-squares "
        "refinement), predict, integrate, write indexed.stream and merge it; 'none': hit finding only",
    )
    cell: str | None = Field(
        None,
        pattern=r"^([0-9.]+,){5}[0-9.]+$|^[A-Za-z0-9._-]{1,200}$",
        description="the known cell: 'a,b,c,al,be,ga' (Å, deg) or the name of a CrystFEL .cell file among the "
        "inputs (default: the one .cell given)",
    )
    centering: Literal["P", "A", "B", "C", "I", "F", "R", "H"] | None = Field(
        None, description="lattice centering (default: the .cell file's, else P)"
    )
    int_radius: str = Field(
        "4,5,7",
        pattern=r"^[0-9]{1,2},[0-9]{1,2},[0-9]{1,2}$",
        description="ring integration radii inner,middle,outer (pixels): peak within inner, background between "
        "middle and outer",
    )
    fix_profile_radius: float | None = Field(
        None,
        gt=0,
        le=1e9,
        description="profile radius (m⁻¹, as CrystFEL) used for prediction; default: estimated per crystal from "
        "the excitation errors of its indexed peaks",
    )
    min_indexed_fraction: float = Field(
        0.5, gt=0, le=1, description="a crystal is accepted when at least this fraction of the peaks index"
    )
    # -- merging (process_hkl / compare_hkl)
    point_group: str = Field(
        "1",
        pattern=r"^-?[0-9mH_R/a-c-]{1,12}$",
        description="CrystFEL point group symbol (1, -1, 2/m, mmm, 222, 4/mmm, 6/mmm, m-3m, -3m1_H, ...)",
    )
    space_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9 /:-]{1,30}$",
        description="space group of the MTZ (default: the chiral group of the point group with the cell's centering)",
    )
    min_measurements: int = Field(2, ge=1, le=1000, description="reflections measured fewer times are dropped")
    n_shells: int = Field(
        10, ge=1, le=100, description="resolution shells of equal reciprocal volume for the figures of merit"
    )
    d_min_angstrom: float | None = Field(None, gt=0.3, le=100, description="high-resolution limit of the merge (Å)")
    # -- per-crystal scaling (process_hkl --scale; partialator --model=unity, --iterations, --no-Bscale)
    scale: bool = Field(
        False, description="scale each crystal (a factor G and a Debye-Waller B) against the merged mean before merging"
    )
    iterations: int = Field(10, ge=1, le=100, description="scaling cycles (merge, then refit every crystal)")
    no_bscale: bool = Field(False, description="with scale: refine the factor G only, no B")
