"""The stem4d technique: glue between the kit and the 4D-STEM science modules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from panreduce import errors
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce.kit.technique import StagedFile
from panreduce_stem4d import pipeline, report
from panreduce_stem4d.io import Scan4D, open_scan
from panreduce_stem4d.params import Stem4dParameters

VERSION = "0.1.0"
PROGRAM = "panreduce-stem4d"
_SKIP = (".hdr", ".json", ".txt", ".md")


@dataclass
class Job:
    scan: Scan4D
    file: StagedFile
    rows: tuple[int, int]
    sharded: bool


def _backend(device: str) -> tuple[str, str]:
    if device == "cpu":
        return "numpy", "cpu"
    try:
        import torch

        cuda = bool(torch.cuda.is_available())
    except ImportError:
        cuda = False
    if cuda:
        return "torch", "cuda"
    if device == "gpu":
        raise errors.FailedPrecondition("device=gpu was asked for but this server has no CUDA GPU (or no "
                                        "torch); use device=auto or cpu")
    return "numpy", "cpu"


class Technique(_Technique[Stem4dParameters, Job]):
    name = "stem4d"
    version = VERSION
    title = "4D-STEM: virtual detectors, centre of mass / DPC, ellipse calibration and strain maps"
    description = (
        "Reduces scanning electron diffraction (4D-STEM) scans — Merlin .mib (+ .hdr; every counter "
        "depth, 1x1 and 2x2 quad, ROI mode) or HDF5 4-D stacks (NeXus NXdata, fpd/EMD) — read in blocks of "
        "scan rows: mean/max/sum patterns, beam centre and descan removal, elliptical distortion from a "
        "ring, virtual BF/ADF/HAADF and user masks in mrad, centre of mass and DPC (rotation by minimum "
        "curl or given, flip explicit, divergence, curl, integrated phase), strain from Bragg discs. One "
        "NeXus file of calibrated maps (scan axes in nm, detector in mrad) and PNG overviews; sharded by "
        "scan rows; torch path on a GPU.")
    Parameters = Stem4dParameters
    input_kinds = ("mib/merlin", "nexus/4d-stem", "hdf5/fpd")
    output_formats = ("nexus", "hdf5", "png")
    wants_gpu = True
    shardable = True
    shard_unit = "scan row"

    def load(self, inputs: Inputs, params: Stem4dParameters, ctx: Context) -> Job:
        _backend(params.device)
        files = [f for f in inputs.files if not f.name.lower().endswith(_SKIP)]
        if not files:
            raise errors.InvalidRequest("no 4D-STEM data file among the inputs (.mib, .h5/.hdf5/.nxs/.emd)")
        if len(files) > 1:
            raise errors.InvalidRequest(f"one scan per request: got {len(files)} data files "
                                        f"({', '.join(f.name for f in files[:4])})")
        f = files[0]
        hdr = next((h.path for h in inputs.files if h.name.lower().endswith(".hdr")
                    and h.path.stem == f.path.stem), None)
        ctx.progress(0.2, "load", f"opening {f.name}")
        scan = open_scan(f.path, f.name, dataset=params.dataset, scan_shape=params.scan_shape, hdr_path=hdr)
        ny = scan.shape[0]
        rows, sharded = (0, ny), False
        if ctx.shard is not None and ctx.shard.count > 1:
            picked = ctx.shard.select(list(range(ny)))
            rows, sharded = (picked[0], picked[-1] + 1), True
        ctx.progress(1.0, "load", f"{f.name}: {scan.layout}, shape {list(scan.shape)}, rows {rows[0]}-{rows[1]}")
        return Job(scan, f, rows, sharded)

    def reduce(self, data: Job, params: Stem4dParameters, ctx: Context) -> Mapping[str, Any]:
        scan = data.scan
        try:
            return self._reduce(data, params, ctx)
        finally:
            scan.close()

    def _reduce(self, data: Job, params: Stem4dParameters, ctx: Context) -> Mapping[str, Any]:
        scan, src = data.scan, data.file.name
        backend, device = _backend(params.device)
        ctx.progress(0.0, "calibrate", "mean pattern of sampled rows, beam centre")
        vacuum = None
        if params.vacuum_position is not None:
            r, c = params.vacuum_position
            if r >= scan.shape[0] or c >= scan.shape[1]:
                raise errors.InvalidParameters([errors.FieldViolation(
                    "vacuum_position", f"({r}, {c}) is outside the {scan.shape[0]} x {scan.shape[1]} scan")])
            vacuum = scan.read_rows(r, r + 1)[0, c].astype(np.float64)
        if params.center_px is not None:
            cy, cx = params.center_px
            if not (0 <= cy < scan.shape[2] and 0 <= cx < scan.shape[3]):
                raise errors.InvalidParameters([errors.FieldViolation(
                    "center_px", f"({cy}, {cx}) is off the {scan.shape[2]} x {scan.shape[3]} detector")])
        try:
            calib = pipeline.calibrate(
                scan.read_rows, scan.shape, mrad_per_px=params.mrad_per_px, center_px=params.center_px,
                ellipse_ring_mrad=params.ellipse_ring_mrad, bf_mrad=params.bf_mrad, adf_mrad=params.adf_mrad,
                haadf_mrad=params.haadf_mrad, masks=params.masks, com_mrad=params.com_mrad, strain=params.strain,
                vacuum_frame=vacuum, disc_threshold=params.disc_threshold)
        except ValueError as exc:
            if str(exc).startswith("mask "):
                raise errors.InvalidParameters([errors.FieldViolation("masks", str(exc))]) from None
            raise errors.InvalidInput(src, f"calibration: {exc}") from None
        if calib.ellipse is not None:
            ctx.log(f"ellipse: axis ratio {calib.ellipse.axis_ratio:.4f} at {calib.ellipse.theta_deg:.1f}°, "
                    f"residual ellipticity {calib.residual_ellipticity:.2e}")
        ctx.progress(0.05, "stream", f"virtual detectors and CoM on {backend}:{device}")
        r0, r1 = data.rows
        part = pipeline.stream(scan.read_rows, scan.shape, calib, row0=r0, row1=r1, itemsize=scan.dtype.itemsize,
                               budget_mb=params.chunk_mb, backend=backend, device=device, strain=params.strain,
                               progress=lambda fr, msg: ctx.progress(0.05 + 0.85 * fr, "stream", msg))
        step = (params.scan_step_nm, params.scan_step_nm) if params.scan_step_nm else scan.step_nm
        energy = params.energy_kev or scan.energy_kev
        meta = {"source": src, "layout": scan.layout, "shape": list(scan.shape), "step_nm": step,
                "energy_kev": energy, "images": {k: v.tolist() for k, v in scan.images.items()}}
        if data.sharded:
            path = ctx.output_path(f"stem4d_rows_{r0:05d}_{r1:05d}.h5", format="hdf5", role="result")
            report.write_partial(path, part, calib, meta)
            return {"rows": [r0, r1], "frames": int((r1 - r0) * scan.shape[1]), "partial": True}
        return self._finish(part, calib, meta, params, ctx)

    def merge(self, inputs: Inputs, params: Stem4dParameters, ctx: Context) -> Mapping[str, Any]:
        parts = [f for f in inputs.files if f.path.name.startswith("stem4d_rows_") and f.path.name.endswith(".h5")]
        if not parts:
            raise errors.InternalError("no shard partials (stem4d_rows_*.h5) to merge")
        read = [report.read_partial(f.path) for f in parts]
        try:
            whole = pipeline.Partial.concatenate([p for p, _, _ in read])
        except ValueError as exc:
            raise errors.InternalError(str(exc)) from None
        _, calib, meta = read[0]
        if whole.row0 != 0 or whole.row1 != meta["shape"][0]:
            raise errors.InternalError(f"shards cover rows {whole.row0}-{whole.row1} of {meta['shape'][0]}")
        summary = dict(self._finish(whole, calib, meta, params, ctx))
        summary["shards"] = len(parts)
        return summary

    def _finish(self, part: pipeline.Partial, calib: pipeline.Calibration, meta: dict[str, Any],
                params: Stem4dParameters, ctx: Context) -> Mapping[str, Any]:
        ctx.progress(0.9, "finish", "descan, DPC, strain")
        step = tuple(meta["step_nm"]) if meta.get("step_nm") else None
        try:
            maps = pipeline.finish(part, calib, descan=params.descan, rotation_deg=params.scan_rotation_deg,
                                   flip=params.flip, step_nm=step, energy_kev=meta.get("energy_kev"),
                                   want_phase=params.dpc_phase, strain_reference=params.strain_reference)
        except ValueError as exc:
            raise errors.InvalidInput(meta["source"], str(exc)) from None
        if params.dpc_phase and "dpc_phase" not in maps.images:
            ctx.log("no DPC phase: the beam energy or the scan step is unknown (give energy_kev / scan_step_nm)",
                    "warning")
        for name, img in meta.get("images", {}).items():
            maps.images[name], maps.units[name] = np.asarray(img, float), "counts"
        nxs = ctx.output_path("stem4d.nxs", format="nexus", role="result")
        report.write_nexus(nxs, maps, calib, part, source=meta["source"], layout=meta["layout"], step_nm=step,
                           energy_kev=meta.get("energy_kev"), shape=meta["shape"],
                           parameters=params.model_dump(), program=PROGRAM, version=VERSION)
        if params.plots:
            report.write_png(ctx.output_path("stem4d_overview.png", format="png", role="preview"), maps, calib,
                             part, title=f"{meta['source']} {meta['shape']}")
        geo = calib.geometry
        summary: dict[str, Any] = {
            "file": meta["source"], "layout": meta["layout"], "shape": meta["shape"],
            "frames": int(part.total_counts.size), "beam_center_px": list(geo.center_yx_px),
            "disc_radius_px": calib.disc_radius_px, "mrad_per_px": geo.mrad_per_px,
            "detectors": {d.name: [d.inner_mrad, d.outer_mrad] for d in calib.detectors},
            "scan_step_nm": list(step) if step else None, "images": sorted(maps.images),
            **{k: v for k, v in maps.fitted.items() if isinstance(v, bool | int | float | str)},
        }
        if calib.ellipse is not None:
            summary.update(ellipse_axis_ratio=calib.ellipse.axis_ratio, ellipse_theta_deg=calib.ellipse.theta_deg,
                           residual_ellipticity=calib.residual_ellipticity)
        if "haadf_recorded" in maps.images and "adf" in maps.images:
            summary["corr_adf_recorded_haadf"] = float(np.corrcoef(maps.images["adf"].ravel(),
                                                                   maps.images["haadf_recorded"].ravel())[0, 1])
        return summary
