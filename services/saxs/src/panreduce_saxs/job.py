"""What every block of a saxs job shares: the sorted inputs, geometry, masks, integrator, absolute
scale and background, found from the job's inputs and its first frame (so every block integrates alike)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panreduce import errors
from panreduce.errors import FieldViolation, InvalidParameters
from panreduce.kit import Inputs
from panreduce_saxs import inputs as saxs_inputs
from panreduce_saxs.geometry import Geometry, resolve_geometry
from panreduce_saxs.inputs import Frame, frame_pixels
from panreduce_saxs.integrate import Curve, IntegrationSetup, Integrator, integrator_for
from panreduce_saxs.io import HDF5_SUFFIXES
from panreduce_saxs.masks import JobMasks, job_masks, read_mask_file
from panreduce_saxs.normalisation import absolute_scale_factor, check_counters, frame_norm, reference_of, subtract
from panreduce_saxs.params import SaxsParameters


@dataclass
class Job:
    """What every block of a job shares: found from the job's inputs and its first frame."""

    geometry: Geometry
    integrator: Integrator
    masks: JobMasks
    scale: float
    scale_error: float | None
    background: Curve | None
    aux: dict[str, Frame]


def violation(name: str, why: str) -> InvalidParameters:
    return InvalidParameters([FieldViolation(name, why)])


def find_input(inputs: Inputs, name: str, param: str) -> tuple[Path, str]:
    """The staged input called ``name`` (or its basename), as (path, name); a caller's mistake names ``param``."""
    staged = inputs.find(name) or inputs.find(Path(name).name)
    if staged is None:
        raise violation(param, f"no input named {name!r} (inputs: {', '.join(f.name for f in inputs.files)})")
    return staged.path, staged.name


def sorted_inputs(inputs: Inputs, *, params: SaxsParameters) -> saxs_inputs.Sorted:
    """The job's inputs sorted into frame files, SPEC scans and the PONI file; auxiliary files are not frames."""
    named = params.file_fields()
    ref = reference_of(params.absolute.standard_reference)
    if isinstance(ref, str) and params.absolute.standard_file:
        named["absolute.standard_reference"] = ref
    aux = {find_input(inputs, name, key)[0] for key, name in named.items()}  # not frames
    found = saxs_inputs.sort_inputs([(f.path, f.name) for f in inputs.files], aux)
    if params.geometry.poni_file:
        found.poni = find_input(inputs, params.geometry.poni_file, "geometry.poni_file")
    return found


def prepare_job(found: saxs_inputs.Sorted, inputs: Inputs, *, params: SaxsParameters) -> Job:
    """Geometry, masks, integrator, scale and background: from the job's sorted inputs and its
    first frame, whichever block is reduced (so every block integrates alike)."""
    first_file = found.frame_files[0]
    (first, *_), shape, nexus_geometry = saxs_inputs.read_frames(
        [first_file], found.spec_scans, frames_path=params.frames_path
    )
    nexus_file = next((f for f in found.frame_files if f[0].suffix.lower() in HDF5_SUFFIXES), None)
    if nexus_file is not None and nexus_file != first_file:
        nexus_geometry = saxs_inputs.read_frames([nexus_file], {}, frames_path=params.frames_path)[2]
    g = params.geometry
    geometry = resolve_geometry(
        shape,
        poni=found.poni[0] if found.poni else None,
        poni_name=found.poni[1] if found.poni else "",
        nexus=nexus_geometry,
        field_prefix="geometry.",
        **g.model_dump(exclude={"poni_file"}),
    )
    aux: dict[str, Frame] = {}
    for key, name in params.file_fields().items():
        if key not in ("geometry.poni_file", "masks.file"):
            path, name = find_input(inputs, name, key)
            aux[key] = saxs_inputs.read_auxiliary(
                path, name, shape, frames_path=params.frames_path, spec_scans=found.spec_scans
            )
    check_counters(
        [aux.get("background.file"), aux.get("absolute.standard_file"), aux.get("absolute.standard_background_file")],
        params.normalisation.counter,
        "normalisation.counter",
    )
    file_mask = (
        read_mask_file(*find_input(inputs, params.masks.file, "masks.file"), shape) if params.masks.file else None
    )
    pixels = frame_pixels(first)
    masks = job_masks(
        pixels,
        geometry.center_x_px,
        geometry.center_y_px,
        file_mask=file_mask,
        source=first.source,
        field_prefix="masks.",
        **params.masks.model_dump(exclude={"file"}),
    )
    flat = aux["corrections.flat_file"].data if "corrections.flat_file" in aux else None
    dark = aux["corrections.dark_file"].data if "corrections.dark_file" in aux else None
    c = params.corrections
    setup = IntegrationSetup(
        mask=masks.integrator_mask,
        dark=dark,
        flat=None if flat is None else np.where(flat > 0, flat, np.nan).astype(np.float32),
        solid_angle=c.solid_angle,
        polarization=c.polarization,
        **params.integration.model_dump(),
    )
    integ = Integrator(integrator_for(geometry, shape, masks.integrator_mask), shape, setup)
    scale, scale_error = absolute_scale(integ, masks=masks, aux=aux, inputs=inputs, params=params)
    background = None
    if "background.file" in aux:
        bg = aux["background.file"]
        b = params.background
        pixels = frame_pixels(bg)
        background = integ.integrate1d(
            pixels,
            frame_norm(bg.counters, scale, **{**params.normalisation.model_dump(), "transmission": b.transmission}),
            extra_mask=masks.own(pixels),
        )
    return Job(geometry, integ, masks, scale, scale_error, background, aux)


def absolute_scale(
    integ: Integrator, *, masks: JobMasks, aux: dict[str, Frame], inputs: Inputs, params: SaxsParameters
) -> tuple[float, float | None]:
    """The absolute scale (and its error): ``absolute.factor``, or a standard's curve matched to its reference."""
    a = params.absolute
    if "absolute.standard_file" not in aux:
        return (a.factor or 1.0), None
    norm = {
        **params.normalisation.model_dump(),
        "transmission": a.standard_transmission,
        "thickness_mm": a.standard_thickness_mm,
    }

    def curve(fr: Frame) -> Curve:
        pixels = frame_pixels(fr)
        return integ.integrate1d(pixels, frame_norm(fr.counters, 1.0, **norm), extra_mask=masks.own(pixels))

    std = curve(aux["absolute.standard_file"])
    if "absolute.standard_background_file" in aux:
        std = subtract(std, curve(aux["absolute.standard_background_file"]))
    ref = reference_of(a.standard_reference)
    if isinstance(ref, str):
        ref = saxs_inputs.read_reference(*find_input(inputs, ref, "absolute.standard_reference"))
    try:
        return absolute_scale_factor(std, ref[0], ref[1], a.standard_q_range)
    except ValueError as exc:
        raise errors.InvalidInput(a.standard_file, f"cannot be matched to its reference: {exc}") from None
