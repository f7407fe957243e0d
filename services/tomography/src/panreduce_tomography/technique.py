"""The tomography technique: glue between the kit and :func:`pipeline.reconstruct_volume`
(the science) and :mod:`outputs` (the writers)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py

from panreduce import errors
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as Base
from panreduce_tomography import __version__, outputs, pipeline, recon
from panreduce_tomography.io import Scan, read_scans
from panreduce_tomography.params import TomographyParameters


@dataclass
class TomoInputs:
    scans: list[Scan]
    rows: list[int]  # detector rows to reconstruct (this shard's)
    all_rows: list[int]  # every row of the request (the centre is found on these)
    files: list[str]


def _invalid(field: str, message: str) -> errors.InvalidParameters:
    return errors.InvalidParameters([errors.FieldViolation(field, message)])


class Technique(Base[TomographyParameters, TomoInputs]):
    name = "tomography"
    version = __version__
    title = "Full-field tomography: corrections, rotation centre, reconstruction (CPU/GPU), quantification"
    description = (
        "Reads Data Exchange HDF5, NXtomo (image_key), TIFF stacks, sinograms (.mat/HDF5) and FITS "
        "time-of-flight stacks; dark/flat (conventional or dynamic eigen flats), zinger and ring removal, "
        "Paganin phase retrieval, automatic rotation centre (Vo 2014) or trial centres; gridrec-class NUFFT, "
        "FBP, SIRT or CGLS reconstruction on numpy or torch; slab-wise NXtomoproc output, PNG previews, TIFF "
        "stacks, segmentation tables. A series of scans gives one volume per time point."
    )
    Parameters = TomographyParameters
    input_kinds = ("hdf5/dataexchange", "nexus/nxtomo", "tiff/stack", "mat/sinogram", "hdf5/sinogram", "fits/tof")
    output_formats = ("nexus", "png", "csv", "tiff")
    wants_gpu = True
    shardable = True
    shard_unit = "slice range (detector rows)"

    def warm_up(self) -> None:
        import finufft  # noqa: F401 - import the heavy libraries before SERVING
        import scipy.fft  # noqa: F401

    # -- load -----------------------------------------------------------------------------
    def load(self, inputs: Inputs, params: TomographyParameters, ctx: Context) -> TomoInputs:
        p = params
        groups = [list(item.files) for item in inputs.items]
        if p.tof.tof_band is not None and p.tof.tof_bands_angstrom is not None:
            raise _invalid("tof.tof_bands_angstrom", "give either tof_band (time bins) or tof_bands_angstrom, not both")
        if p.tof.tof_bands_angstrom is not None and len(groups) > 1:
            raise _invalid("tof.tof_bands_angstrom", "wavelength bands need a single time-of-flight scan (one input)")
        kw = p.tof.kwargs()
        scans = read_scans(groups, angles_unit=p.angles_unit, band=kw.pop("band"), tof_options=kw)
        if not any(s.layout == "fits-tof" for s in scans):
            for name in p.tof.given():
                raise _invalid(f"tof.{name}", "only applies to FITS time-of-flight inputs")
        first = scans[0]
        for s in scans[1:]:
            if s.shape[1:] != first.shape[1:]:
                raise errors.InvalidInput(s.source, f"detector {s.shape[1:]} differs from {first.source}'s "
                                          f"{first.shape[1:]}: a series needs one detector size")
        stop = first.n_rows if p.slice_stop is None else min(p.slice_stop, first.n_rows)
        if p.slice_start >= stop:
            raise _invalid("slice_start", f"must be below slice_stop/the number of detector rows ({stop})")
        all_rows = list(range(p.slice_start, stop, p.slice_step))
        rows = ctx.shard.select(all_rows) if ctx.shard else all_rows
        if p.axis.trial_centres is not None:
            span, step = p.axis.trial_centres
            if 2 * int(span / step + 1e-9) + 1 > 101:
                raise _invalid("axis.trial_centres", f"range {span} in steps of {step} makes more than 101 centres")
            if ctx.shard is not None and ctx.shard.count > 1:
                raise _invalid("axis.trial_centres", "a trial-centre job is one slice: run it unsplit (split 1)")
        center = p.axis.center
        if center is not None and not (-first.n_cols <= center <= 2 * first.n_cols):
            raise _invalid("axis.center", f"{center} is far outside the detector (0..{first.n_cols - 1} pixels)")
        for s in scans:
            ctx.log(f"{s.source}: {s.layout}, {s.shape[0]} projections of {s.shape[1]} x {s.shape[2]}, "
                    f"{0 if s.darks is None else len(s.darks)} darks, {0 if s.flats is None else len(s.flats)} flats")
        return TomoInputs(scans, rows, all_rows, [f.name for f in inputs.files])

    # -- reduce ---------------------------------------------------------------------------
    def reduce(self, data: TomoInputs, params: TomographyParameters, ctx: Context) -> dict:
        p, scans, rows = params, data.scans, data.rows
        if not rows:
            return {"slices": 0, "note": "this shard holds no slices"}
        if p.axis.trial_centres is not None:
            return self._trial_centres(data, p, ctx)
        shape = pipeline.volume_shape(scans, len(rows), p.reconstruction.size)
        work = ctx.work_dir / "volume_float32.h5"
        with h5py.File(work, "w") as fw:
            vol = fw.create_dataset("data", shape=shape, dtype="float32", chunks=(1,) * (len(shape) - 2) + shape[-2:])
            try:
                info = pipeline.reconstruct_volume(
                    scans, rows, out=vol, centre_rows=data.all_rows, corrections=p.corrections, phase=p.phase,
                    axis=p.axis, reconstruction=p.reconstruction, slab_rows=p.slab_rows, progress=ctx.progress,
                    check=ctx.check_cancelled, log=ctx.log)
            except pipeline.NotFinite as exc:
                raise errors.InternalError(str(exc)) from None
            ctx.progress(1.0, "write", "NeXus output")
            name = "tomography.nxs" if not ctx.shard else f"tomography_rows{rows[0]:05d}-{rows[-1]:05d}.nxs"
            out_path = ctx.output_path(name, format="nexus")
            described = outputs.Described.of(scans, data.files)
            outputs.write_volume(out_path, vol, rows=rows, described=described, centres=info.centres,
                                 found=info.found, value_range=info.value_range, backend=info.backend, params=p,
                                 check=ctx.check_cancelled)
        work.unlink()
        nt = len(scans)
        summary: dict = {
            "scans": described.sources, "layout": described.layout, "slices": len(rows), "rows": [rows[0], rows[-1]],
            "size": shape[-1], "algorithm": p.reconstruction.algorithm, "backend": info.backend,
            "center": info.centres[0] if nt == 1 else info.centres,
            "center_found": info.found[0] if nt == 1 else info.found,
            "value_range": list(info.value_range), "seconds": round(info.seconds, 3),
            "seconds_per_slice": round(info.seconds / (len(rows) * nt), 4),
        }
        outputs.write_previews(out_path, ctx.output_path, rows=rows, nt=nt, output=p.output,
                               pixel_um=self._pixel_um(p))
        if p.output.tiff_stack and outputs.write_tiff_stack(out_path, ctx.output_path, nt=nt) is None:
            ctx.log("tiff_stack: tifffile is not installed, no TIFF stack written", "warning")
        tof_scans = [s for s in scans if s.layout == "fits-tof"]
        if tof_scans:
            tof, tables, arrays = outputs.tof_results(tof_scans[0].meta, p.tof, lambda m, lv: ctx.log(m, lv))
            if not ctx.shard or ctx.shard.index == 0:
                outputs.write_tables(ctx.output_path, tables)
            if arrays is not None:
                outputs.write_tof_nexus(out_path, arrays)
            if described.bands is not None:
                tof.update(bands_angstrom=described.bands, band_bins=described.band_bins)
            summary["tof"] = tof
        if p.segmentation.segment:
            n = shape[-1]
            if len(rows) * n * n * 4 > 2 * 1024**3:
                ctx.log("volume too large to segment in memory: quantification skipped", "warning")
                summary["quantification"] = []
            else:
                mask = recon.circle_mask(n, n / 2) if p.reconstruction.circle else None
                summaries, tables = outputs.quantify(out_path, described=described, mask=mask,
                                                     segmentation=p.segmentation,
                                                     progress=lambda m: ctx.progress(1.0, "quantify", m))
                outputs.write_tables(ctx.output_path, tables)
                summary["quantification"] = summaries
        return summary

    @staticmethod
    def _pixel_um(p: TomographyParameters) -> float | None:
        """The detector pixel size when the request gave it (previews' axes in micrometres)."""
        return p.phase.pixel_size_um if "pixel_size_um" in p.phase.model_fields_set else None

    def _trial_centres(self, data: TomoInputs, p: TomographyParameters, ctx: Context) -> dict:
        """The middle requested row of the first scan at every trial centre around the
        given (or found) one: ``trial_centres.nxs`` and ``trial_centres.png``, no volume."""
        scan, steps = data.scans[0], dict(corrections=p.corrections, phase=p.phase)
        span, step = p.axis.trial_centres
        base, found = p.axis.center, False
        if base is None:
            ctx.progress(0.0, "centre", f"{scan.source}: finding the rotation axis")
            base, found = pipeline.find_centre(scan, pipeline.prepare(scan, **steps), data.all_rows,
                                               **steps, **p.axis.kwargs()), True
        centres = [round(base + k * step, 6) for k in range(-int(span / step + 1e-9), int(span / step + 1e-9) + 1)]
        row = data.all_rows[len(data.all_rows) // 2]
        ctx.progress(0.1, "reconstruct", f"row {row} at {len(centres)} centres")
        stack = pipeline.trial_centres(scan, row, centres, **steps, reconstruction=p.reconstruction,
                                       check=ctx.check_cancelled)
        outputs.write_trial_centres(ctx.output_path("trial_centres.nxs", format="nexus"),
                                    ctx.output_path("trial_centres.png", format="png", role="preview"), stack,
                                    centres, row=row, described=outputs.Described.of([scan], data.files), params=p)
        return {"scans": [scan.source], "mode": "trial_centres", "row": row, "centres": centres,
                "center": base, "center_found": found, "size": int(stack.shape[-1]),
                "algorithm": p.reconstruction.algorithm}

    def merge(self, inputs: Inputs, params: TomographyParameters, ctx: Context) -> dict:
        """Stack the shards' slice ranges into one volume (see merge.py)."""
        from panreduce_tomography.merge import merge_shards

        return merge_shards(sorted({Path(f.path).parent for f in inputs.files}), ctx)

