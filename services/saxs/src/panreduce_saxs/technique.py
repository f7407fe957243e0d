"""The saxs technique: glue between the kit's shard contract and the science modules
(job, inputs, geometry, masks, integrate, normalisation, series, outputs)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from panreduce import errors
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce_saxs import inputs as saxs_inputs
from panreduce_saxs import outputs, series
from panreduce_saxs.geometry import Geometry
from panreduce_saxs.inputs import Frame, pixels_in_order
from panreduce_saxs.integrate import Cake, Curve
from panreduce_saxs.job import Job, prepare_job, sorted_inputs, violation
from panreduce_saxs.normalisation import check_counters, frame_norm, subtract
from panreduce_saxs.params import SaxsParameters

VERSION = "0.1.0"


@dataclass
class SaxsPart:
    """What a block of frames reduces to: every frame's label, counters and curve; the job's
    scale, geometry and first-frame mask counts; per-frame peak fits (with ``map.peak_q_range``,
    on ``fit_q``); the first frame's cake and the 2-D images when asked."""

    labels: list[str]
    counters: list[dict[str, float]]
    curves: list[Curve]
    geometry: dict[str, Any]
    scale: float
    scale_error: float | None
    source: str
    mask_info: dict[str, Any]
    fit_q: np.ndarray | None = None
    fits: dict[str, np.ndarray] | None = None
    cake: Cake | None = None
    qxy: list[np.ndarray] | None = None  # Qx, Qy of every pixel (image_2d)
    images: list[list[np.ndarray]] = field(default_factory=list)  # (I, σ, mask) per frame (image_2d)


class Technique(_Technique[SaxsParameters, Any]):
    name = "saxs"
    version = VERSION
    title = "SAXS/WAXS azimuthal integration, scanning maps and kinetics"
    description = (
        "Integrates 2-D detector frames with pyFAI (geometry from a PONI file, explicit parameters "
        "or NeXus metadata; masks from files, thresholds, module gaps and the beamstop shadow; dark, "
        "flat, solid-angle and polarisation corrections; normalisation by monitor, transmission, "
        "exposure and thickness; absolute scale from a factor or a standard; background subtraction "
        "with errors) into I(q) with Poisson or azimuthal errors, sectors and 2-D cakes; fits a "
        "Gaussian peak per frame of a scan and maps it on the motor grid; follows kinetic series "
        "with Guinier Rg, I(0) and the invariant. Writes NXcanSAS 1.1, NeXus maps, ASCII images, "
        "CSV and PNG plots."
    )
    Parameters = SaxsParameters
    Part = SaxsPart
    input_kinds = ("image/tiff", "image/edf", "image/cbf", "nexus/nxdetector", "spec/counters", "pyfai/poni")
    output_formats = ("nxcansas", "nexus", "csv", "png", "text-image")
    shardable = True
    shard_unit = "frame"

    def warm_up(self) -> None:
        import pyFAI.integrator.azimuthal  # noqa: F401  (a few seconds: before SERVING)

    # -- inputs ----------------------------------------------------------------------------
    def units(self, inputs: Inputs, params: SaxsParameters) -> Sequence[Frame]:
        """Every frame of the job, in input order (image files up to PRELOAD_IMAGES are read now)."""
        found = sorted_inputs(inputs, params=params)
        frames, _, _ = saxs_inputs.read_frames(found.frame_files, found.spec_scans, frames_path=params.frames_path)
        return frames

    def _job(self, inputs: Inputs, params: SaxsParameters, ctx: Context) -> Job:
        found = sorted_inputs(inputs, params=params)
        ctx.progress(0.0, "setup", f"{len(found.frame_files)} frame file(s)")
        return prepare_job(found, inputs, params=params)

    # -- the science of a block of frames ----------------------------------------------------
    def reduce_block(self, block: Sequence[Frame], inputs: Inputs, params: SaxsParameters, ctx: Context) -> SaxsPart:
        if params.mode == "map" and params.map.peak_q_range is None:
            raise violation("map.peak_q_range", "a map needs the q window of the peak fit")
        check_counters(block, params.normalisation.counter, "normalisation.counter")
        if params.mode == "map":  # before the integration
            series.check_motors(
                [fr.counters for fr in block],
                motor_x=params.map.motor_x,
                motor_y=params.map.motor_y,
                field_prefix="map.",
            )
        job = self._job(inputs, params, ctx)
        integ, masks, scale = job.integrator, job.masks, job.scale
        part = SaxsPart(
            labels=[],
            counters=[],
            curves=[],
            geometry=asdict(job.geometry),
            scale=scale,
            scale_error=job.scale_error,
            source=block[0].source,
            mask_info={"masked_pixels": int(masks.mask.sum()), **masks.info},
        )
        image_2d = params.outputs.image_2d
        if image_2d:
            part.qxy = list(integ.q_xy())
        n = len(block)
        with pixels_in_order(block) as frames:
            for k, (fr, pixels) in enumerate(frames):
                if k % max(1, n // 100) == 0:
                    ctx.progress(0.05 + 0.9 * k / n, "integrate", f"frame {k + 1}/{n}")
                else:
                    ctx.check_cancelled()  # every frame: a cancelled job stops within one frame
                if pixels.shape != integ.shape:
                    raise errors.InvalidInput(
                        fr.source, f"frames of shape {pixels.shape} differ from the first input's {integ.shape}"
                    )
                own = masks.own(pixels)
                norm = frame_norm(fr.counters, scale, **params.normalisation.model_dump())
                curve = integ.integrate1d(pixels, norm, extra_mask=own)
                if job.background is not None:
                    curve = subtract(curve, job.background, params.background.scale)
                if image_2d:
                    part.images.append(list(integ.corrected_image(pixels, norm, extra_mask=own)))
                if params.outputs.cake and fr.number == 0:  # the job's first frame's
                    part.cake = integ.integrate2d(pixels, norm, extra_mask=own)
                part.labels.append(fr.label)
                part.counters.append(fr.counters)
                part.curves.append(curve)
        if params.map.peak_q_range is not None and params.mode in ("auto", "map"):
            part.fit_q, fits = series.peak_fits(part.curves, params.map.peak_q_range, part.source)
            part.fits = fits.as_dict()
        return part

    def combine(self, parts: Sequence[SaxsPart], params: SaxsParameters) -> SaxsPart:
        first = parts[0]
        out = SaxsPart(
            labels=[x for p in parts for x in p.labels],
            counters=[x for p in parts for x in p.counters],
            curves=[x for p in parts for x in p.curves],
            geometry=first.geometry,
            scale=first.scale,
            scale_error=first.scale_error,
            source=first.source,
            mask_info=first.mask_info,
            cake=next((p.cake for p in parts if p.cake is not None), None),
            qxy=first.qxy,
            images=[x for p in parts for x in p.images],
        )
        fits = [p.fits for p in parts if p.fits is not None and p.fit_q is not None]
        common = series.common_q(out.curves) if len(fits) == len(parts) else None
        if common is not None and all(np.array_equal(p.fit_q, common[0]) for p in parts):
            out.fit_q = common[0]
            out.fits = {key: np.concatenate([f[key] for f in fits]) for key in fits[0]}
        return out  # fits fitted on another grid than the job's are fitted again by write

    # -- the outputs ---------------------------------------------------------------------------
    def write(self, result: SaxsPart, params: SaxsParameters, ctx: Context) -> Mapping[str, Any]:
        from panreduce_saxs.analysis import PeakFits, fit_gaussian_peaks

        out = ctx.output_path
        curves, n = result.curves, len(result.curves)
        mode = params.mode
        if mode == "auto":  # on the frames written, never a block's
            mode = "map" if params.map.peak_q_range else ("kinetics" if n > 1 else "azimuthal")
        ctx.progress(0.0, "write", f"{n} frame(s), {mode}")
        units = "1/cm" if (params.absolute.factor or params.absolute.standard_file) else "a.u."
        summary: dict[str, Any] = {
            "mode": mode,
            "frames": n,
            "q_min": float(curves[0].q.min()),
            "q_max": float(curves[0].q.max()),
            "q_points": len(curves[0]),
            **result.mask_info,
            "absolute_scale": result.scale,
            "intensity_units": units,
        }
        if result.scale_error is not None:
            summary["absolute_scale_error"] = result.scale_error
        geometry = Geometry(**result.geometry)
        dump = params.model_dump()
        meta = outputs.sas_metadata(
            geometry,
            dump,
            result.scale,
            VERSION,
            detector=params.masks.detector,
            thickness_mm=params.normalisation.thickness_mm,
            transmission=params.normalisation.transmission,
        )
        if mode == "map":
            assert params.map.peak_q_range is not None
            q, stack, sig = series.stacked(curves, result.source)
            if result.fits is not None and result.fit_q is not None and np.array_equal(result.fit_q, q):
                fits = PeakFits(**result.fits)  # the blocks' fits, on the job's grid
            else:
                fits = fit_gaussian_peaks(q, stack, sig, params.map.peak_q_range)
            m = params.map
            motors = series.motors(result.counters, motor_x=m.motor_x, motor_y=m.motor_y, field_prefix="map.")
            summary.update(
                outputs.write_map(
                    out, motors, q, stack, sig, fits, meta, units, dump, VERSION, step_x=m.step_x, step_y=m.step_y
                )
            )
        else:
            summary.update(outputs.write_curves(out, result.labels, curves, meta, units))
            if mode == "kinetics":
                k = params.kinetics
                times = series.frame_times(result.counters, k.frame_time_s)
                table = series.kinetic_table(curves, **k.model_dump(exclude={"frame_time_s"}))
                summary.update(outputs.write_kinetics(out, curves, times, table, units, dump, VERSION))
        if result.cake is not None:
            outputs.write_cake(out, result.cake, units, dump, VERSION)
        if result.images and result.qxy is not None:
            with outputs.Image2D(out, result.qxy[0], result.qxy[1], meta, units) as image:
                for number, (label, (img, err, mask)) in enumerate(zip(result.labels, result.images, strict=True)):
                    image.add(number, label, img, err, mask)
        ctx.progress(1.0, "write", "done")
        return summary
