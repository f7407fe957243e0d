"""The initial probe of a reconstruction: the job's probe input, or one from the scan,
the data or a parametric model, by ``probe.init``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from panreduce import errors
from panreduce.kit import Inputs, StagedFile
from panreduce_ptychography import engines as eng
from panreduce_ptychography.backend import Backend
from panreduce_ptychography.initialisation import parametric_probe, probe_from_data
from panreduce_ptychography.io import read_probe
from panreduce_ptychography.params import PtychographyParameters
from panreduce_ptychography.problem import Problem, Scan

if TYPE_CHECKING:
    from panreduce_ptychography.technique import ProjectionRef


def probe_input(inputs: Inputs, params: PtychographyParameters) -> StagedFile | None:
    """The staged input named by ``probe.input`` (its staged name, or its file name when
    that is unique), or None; a name that is no input of the job is refused (no path
    outside the job's inputs is ever opened)."""
    name = params.probe.input
    if name is None:
        return None
    files = inputs.files
    hits = [f for f in files if f.name == name]
    if not hits:
        hits = [f for f in files if Path(f.name).name == name]
    if len(hits) != 1:
        what = "no input" if not hits else f"{len(hits)} inputs"
        raise errors.InvalidParameters(
            [
                errors.FieldViolation(
                    "probe.input", f"{what} of this job is named {name!r} (give one of the job's inputs)"
                )
            ]
        )
    return hits[0]


def initial_probe(
    scan: Scan,
    ref: ProjectionRef,
    problem: Problem,
    params: PtychographyParameters,
    probe_file: str | os.PathLike[str] | None,
    backend: Backend,
    check: Callable[[], None] | None = None,
    *,
    probe_name: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The initial probe modes by ``probe.init`` and what they came from. ``probe_file``:
    the path of the probe input, if any; ``probe_name``: the caller's name for it, in
    messages (default: the file name of the path)."""
    pp = params.probe
    kind = pp.init
    if kind == "auto":
        kind = "scan" if scan.probe is not None else ("input" if probe_file is not None else "data")
    info: dict[str, Any] = {"init": kind}
    shape = problem.frame_shape
    if kind == "scan":
        if scan.probe is None:
            raise errors.InvalidInput(ref.source, f"{ref.entry}: probe.init=scan but the scan holds no probe")
        probe, where = scan.probe, f"{ref.source}:{ref.entry}"
    elif kind == "input":
        assert probe_file is not None
        where = probe_name or Path(probe_file).name
        probe, dx = read_probe(Path(probe_file), where)
        if dx is not None and not np.isclose(dx, problem.pixel_size_m, rtol=0.01):
            raise errors.InvalidInput(
                where,
                f"its probe has {dx:.4g} m pixels, the reconstruction of "
                f"{ref.source}:{ref.entry} {problem.pixel_size_m:.4g} m",
            )
        info["file"] = where
    elif kind == "data":
        p, found = probe_from_data(problem, seed=params.seed, backend=backend, check=check)
        probe, where = p[None], "data"
        info.update({k: v for k, v in found.items() if k != "candidates"})
    else:
        try:
            p = parametric_probe(
                problem,
                kind,
                aperture_m=pp.aperture_m,
                aperture_height_m=pp.aperture_height_m,
                focal_length_m=pp.focal_length_m,
                diameter_m=pp.diameter_m,
                defocus_m=pp.defocus_m,
            )
        except ValueError as exc:
            raise errors.InvalidParameters([errors.FieldViolation("probe.init", str(exc))]) from None
        probe, where = p[None], kind
    if probe.shape[-2:] != shape:
        raise errors.InvalidInput(
            where.split(":")[0],
            f"the initial probe is {probe.shape[-2]} x {probe.shape[-1]} "
            f"but the frames of {ref.source}:{ref.entry} are {shape[0]} x {shape[1]} "
            "after cropping and binning",
        )
    info = {k: ([float(x) for x in v] if isinstance(v, list) else v) for k, v in info.items()}
    return eng.initial_probe(problem, probe, pp.modes, seed=params.seed), info
