"""The tomography technique: glue between the kit's shard contract, the science
(:func:`pipeline.reconstruct_volume`) and the writers (:mod:`outputs`).

Units are the requested detector rows (slices); a block of them is reconstructed into
a :class:`TomoPart`; parts combine along z; one writer renders a whole job and a merged
one. A trial-centre job has one unit (its slice).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from panreduce import errors
from panreduce.kit import Context, Inputs, StagedFile
from panreduce.kit import Technique as Base
from panreduce_tomography import __version__, outputs, pipeline, recon
from panreduce_tomography.io import NamedPath, Scan, read_scans
from panreduce_tomography.params import TomographyParameters


@dataclass
class TomoPart:
    """The reconstruction of a block of rows (or, for a trial-centre job, of its slice
    at every trial centre), with what the writers need from the inputs."""

    volume: np.ndarray  # float32 (z, y, x), or (t, z, y, x) for a series; trial: (centre, y, x)
    rows: list[int]
    centres: list[float]  # per scan; trial: the trial centres
    found: list[bool]  # centre found (True) or given, per scan
    value_range: list[float]  # [lo, hi] inside the field of view
    seconds: float
    backend: str
    described: outputs.Described
    tof: dict | None = None  # the time-of-flight summary (the same in every part)
    tof_tables: dict | None = None  # {csv name: rows}
    tof_arrays: dict[str, np.ndarray] | None = None  # entry/tof
    trial_base: float | None = None  # a trial-centre job: the centre the trials are around


def _invalid(field: str, message: str) -> errors.InvalidParameters:
    return errors.InvalidParameters([errors.FieldViolation(field, message)])


@functools.lru_cache(maxsize=1)
def _read(groups: tuple[tuple[StagedFile, ...], ...], angles_unit: str, tof_json: str) -> tuple[Scan, ...]:
    """The scans of a job's inputs, read once for ``units`` and ``reduce_block`` (headers,
    darks and flats; for FITS time-of-flight stacks the spectra pass). Keyed on the staged
    files (their checksums too); the readers get each file's local path and the caller's name."""
    kw = json.loads(tof_json)
    band = kw.pop("band")
    named = [[NamedPath(f.path, f.name) for f in g] for g in groups]
    return tuple(read_scans(named, angles_unit=angles_unit, band=tuple(band) if band else None, tof_options=kw))


def _scans(inputs: Inputs, p: TomographyParameters) -> tuple[Scan, ...]:
    groups = tuple(tuple(item.files) for item in inputs.items)
    if p.tof.tof_band is not None and p.tof.tof_bands_angstrom is not None:
        raise _invalid("tof.tof_bands_angstrom", "give either tof_band (time bins) or tof_bands_angstrom, not both")
    if p.tof.tof_bands_angstrom is not None and len(groups) > 1:
        raise _invalid("tof.tof_bands_angstrom", "wavelength bands need a single time-of-flight scan (one input)")
    scans = _read(groups, p.angles_unit, json.dumps(p.tof.kwargs()))
    if not any(s.layout == "fits-tof" for s in scans):
        for name in p.tof.given():
            raise _invalid(f"tof.{name}", "only applies to FITS time-of-flight inputs")
    first = scans[0]
    for s in scans[1:]:
        if s.shape[1:] != first.shape[1:]:
            raise errors.InvalidInput(
                s.source,
                f"detector {s.shape[1:]} differs from {first.source}'s "
                f"{first.shape[1:]}: a series needs one detector size",
            )
    center = p.axis.center
    if center is not None and not (-first.n_cols <= center <= 2 * first.n_cols):
        raise _invalid("axis.center", f"{center} is far outside the detector (0..{first.n_cols - 1} pixels)")
    return scans


def _rows(scans: Sequence[Scan], p: TomographyParameters) -> list[int]:
    stop = scans[0].n_rows if p.slice_stop is None else min(p.slice_stop, scans[0].n_rows)
    if p.slice_start >= stop:
        raise _invalid("slice_start", f"must be below slice_stop/the number of detector rows ({stop})")
    return list(range(p.slice_start, stop, p.slice_step))


class Technique(Base[TomographyParameters, TomoPart]):
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
    Part = TomoPart
    input_kinds = ("hdf5/dataexchange", "nexus/nxtomo", "tiff/stack", "mat/sinogram", "hdf5/sinogram", "fits/tof")
    output_formats = ("nexus", "png", "csv", "tiff")
    wants_gpu = True
    shardable = True
    shard_unit = "slice (detector row)"

    def warm_up(self) -> None:
        import finufft  # noqa: F401 - import the heavy libraries before SERVING
        import scipy.fft  # noqa: F401

    # -- the shard contract ---------------------------------------------------------------
    def units(self, inputs: Inputs, params: TomographyParameters) -> list[int]:
        """The detector rows to reconstruct (a trial-centre job: the middle one)."""
        p = params
        rows = _rows(_scans(inputs, p), p)
        if p.axis.trial_centres is not None:
            span, step = p.axis.trial_centres
            if 2 * int(span / step + 1e-9) + 1 > 101:
                raise _invalid("axis.trial_centres", f"range {span} in steps of {step} makes more than 101 centres")
            return [rows[len(rows) // 2]]
        return rows

    def reduce_block(
        self, block: Sequence[int], inputs: Inputs, params: TomographyParameters, ctx: Context
    ) -> TomoPart:
        p, rows = params, list(block)
        scans = _scans(inputs, p)
        all_rows = _rows(scans, p)  # the whole job's: every block finds the same centre on them
        for s in scans:
            ctx.log(
                f"{s.source}: {s.layout}, {s.shape[0]} projections of {s.shape[1]} x {s.shape[2]}, "
                f"{0 if s.darks is None else len(s.darks)} darks, {0 if s.flats is None else len(s.flats)} flats"
            )
        described = outputs.Described.of(scans, [f.name for f in inputs.files])
        try:
            if p.axis.trial_centres is not None:
                return self._trial(scans[0], rows[0], all_rows, described, p, ctx)
            shape = pipeline.volume_shape(scans, len(rows), p.reconstruction.size)
            # the volume on disk (scratch), written slab by slab: a job larger than memory stays so
            volume = np.lib.format.open_memmap(ctx.work_dir / "volume_float32.npy", "w+", np.float32, shape)
            info = pipeline.reconstruct_volume(
                scans,
                rows,
                out=volume,
                centre_rows=all_rows,
                corrections=p.corrections,
                phase=p.phase,
                axis=p.axis,
                reconstruction=p.reconstruction,
                slab_rows=p.slab_rows,
                progress=ctx.progress,
                check=ctx.check_cancelled,
                log=ctx.log,
            )
        except pipeline.NotFinite as exc:
            raise errors.InternalError(str(exc)) from None
        finally:
            _read.cache_clear()
        part = TomoPart(
            volume, rows, info.centres, info.found, list(info.value_range), info.seconds, info.backend, described
        )
        tof_scans = [s for s in scans if s.layout == "fits-tof"]
        if tof_scans:
            part.tof, part.tof_tables, part.tof_arrays = outputs.tof_results(tof_scans[0].meta, p.tof, ctx.log)
        return part

    def combine(self, parts: Sequence[TomoPart], params: TomographyParameters) -> TomoPart:
        """The blocks stacked along z in unit order (one part: itself, not copied)."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        if any(not np.allclose(q.centres, first.centres, rtol=0, atol=1e-6) for q in parts):
            raise errors.InternalError(f"the shards found different rotation centres: {[q.centres for q in parts]}")
        z_axis = 0 if len(first.described.sources) == 1 else 1
        return replace(
            first,
            volume=np.concatenate([q.volume for q in parts], axis=z_axis),
            rows=[r for q in parts for r in q.rows],
            value_range=[min(q.value_range[0] for q in parts), max(q.value_range[1] for q in parts)],
            seconds=sum(q.seconds for q in parts),
        )

    def write(self, result: TomoPart, params: TomographyParameters, ctx: Context) -> dict:
        p, r = params, result
        if p.axis.trial_centres is not None:
            return self._write_trial(r, p, ctx)
        ctx.progress(0.0, "write", "NeXus output")
        nt, n = len(r.described.sources), r.volume.shape[-1]
        out_path = ctx.output_path("tomography.nxs", format="nexus")
        outputs.write_volume(
            out_path,
            r.volume,
            rows=r.rows,
            described=r.described,
            centres=r.centres,
            found=r.found,
            value_range=r.value_range,
            backend=r.backend,
            params=p,
            check=ctx.check_cancelled,
        )
        summary: dict = {
            "scans": r.described.sources,
            "layout": r.described.layout,
            "slices": len(r.rows),
            "rows": [r.rows[0], r.rows[-1]],
            "size": n,
            "algorithm": p.reconstruction.algorithm,
            "backend": r.backend,
            "center": r.centres[0] if nt == 1 else r.centres,
            "center_found": r.found[0] if nt == 1 else r.found,
            "value_range": r.value_range,
            "seconds": round(r.seconds, 3),
            "seconds_per_slice": round(r.seconds / (len(r.rows) * nt), 4),
        }
        ctx.progress(0.3, "write", "previews")
        pixel_um = p.phase.pixel_size_um if "pixel_size_um" in p.phase.model_fields_set else None
        outputs.write_previews(out_path, ctx.output_path, rows=r.rows, nt=nt, output=p.output, pixel_um=pixel_um)
        if p.output.tiff_stack and outputs.write_tiff_stack(out_path, ctx.output_path, nt=nt) is None:
            ctx.log("tiff_stack: tifffile is not installed, no TIFF stack written", "warning")
        if r.tof is not None:
            outputs.write_tables(ctx.output_path, r.tof_tables or {})
            if r.tof_arrays is not None:
                outputs.write_tof_nexus(out_path, r.tof_arrays)
            summary["tof"] = dict(r.tof)
            if r.described.bands is not None:
                summary["tof"].update(bands_angstrom=r.described.bands, band_bins=r.described.band_bins)
        if p.segmentation.segment:
            summary["quantification"] = self._quantify(out_path, r, p, ctx)
        return summary

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _quantify(out_path: Path, r: TomoPart, p: TomographyParameters, ctx: Context) -> list[dict]:
        n = r.volume.shape[-1]
        if len(r.rows) * n * n * 4 > 2 * 1024**3:
            ctx.log("volume too large to segment in memory: quantification skipped", "warning")
            return []
        mask = recon.circle_mask(n, n / 2) if p.reconstruction.circle else None
        summaries, tables = outputs.quantify(
            out_path,
            described=r.described,
            mask=mask,
            segmentation=p.segmentation,
            progress=lambda m: ctx.progress(0.8, "quantify", m),
        )
        outputs.write_tables(ctx.output_path, tables)
        return summaries

    def _trial(
        self,
        scan: Scan,
        row: int,
        all_rows: list[int],
        described: outputs.Described,
        p: TomographyParameters,
        ctx: Context,
    ) -> TomoPart:
        """Detector ``row`` at every trial centre around the given (or found) one."""
        steps = dict(corrections=p.corrections, phase=p.phase)
        span, step = p.axis.trial_centres
        base, found = p.axis.center, False
        if base is None:
            ctx.progress(0.0, "centre", f"{scan.source}: finding the rotation axis")
            base, found = (
                pipeline.find_centre(scan, pipeline.prepare(scan, **steps), all_rows, **steps, **p.axis.kwargs()),
                True,
            )
        k = int(span / step + 1e-9)
        centres = [round(base + i * step, 6) for i in range(-k, k + 1)]
        ctx.progress(0.1, "reconstruct", f"row {row} at {len(centres)} centres")
        stack = pipeline.trial_centres(
            scan, row, centres, **steps, reconstruction=p.reconstruction, check=ctx.check_cancelled
        )
        return TomoPart(
            stack,
            [row],
            centres,
            [found],
            [float(stack.min()), float(stack.max())],
            0.0,
            p.reconstruction.device,
            replace(described, sources=described.sources[:1]),
            trial_base=base,
        )

    @staticmethod
    def _write_trial(r: TomoPart, p: TomographyParameters, ctx: Context) -> dict:
        outputs.write_trial_centres(
            ctx.output_path("trial_centres.nxs", format="nexus"),
            ctx.output_path("trial_centres.png", format="png", role="preview"),
            r.volume,
            r.centres,
            row=r.rows[0],
            described=r.described,
            params=p,
        )
        return {
            "scans": r.described.sources,
            "mode": "trial_centres",
            "row": r.rows[0],
            "centres": r.centres,
            "center": r.trial_base,
            "center_found": r.found[0],
            "size": int(r.volume.shape[-1]),
            "algorithm": p.reconstruction.algorithm,
        }
