"""The stem4d technique: glue between the kit and the 4D-STEM science modules."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    rows: tuple[int, int]  # [first, stop) of the block


@dataclass
class Stem4dPart:
    """The streamed rows of a block, the scan's calibration (the same in every block:
    from rows sampled over the whole scan) and its metadata."""

    partial: pipeline.Partial
    calibration: pipeline.Calibration
    meta: dict[str, Any]


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
        raise errors.FailedPrecondition(
            "device=gpu was asked for but this server has no CUDA GPU (or no torch); use device=auto or cpu"
        )
    return "numpy", "cpu"


class Technique(_Technique[Stem4dParameters, Stem4dPart]):
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
        "scan rows; torch path on a GPU."
    )
    Parameters = Stem4dParameters
    input_kinds = ("mib/merlin", "nexus/4d-stem", "hdf5/fpd")
    output_formats = ("nexus", "hdf5", "png")
    wants_gpu = True
    shardable = True
    shard_unit = "scan row"

    Part = Stem4dPart

    # -- the shard contract: one unit per scan row --------------------------------------
    def units(self, inputs: Inputs, params: Stem4dParameters) -> list[int]:
        _backend(params.device)
        scan, _ = self._open(inputs, params)
        try:
            return list(range(scan.shape[0]))
        finally:
            scan.close()

    def reduce_block(self, block: Sequence[int], inputs: Inputs, params: Stem4dParameters, ctx: Context) -> Stem4dPart:
        scan, f = self._open(inputs, params)
        ctx.progress(0.0, "load", f"{f.name}: {scan.layout}, shape {list(scan.shape)}, rows {block[0]}-{block[-1] + 1}")
        try:
            return self._stream(Job(scan, f, (block[0], block[-1] + 1)), params, ctx)
        finally:
            scan.close()

    def combine(self, parts: Sequence[Stem4dPart], params: Stem4dParameters) -> Stem4dPart:
        if len(parts) == 1:
            return parts[0]
        try:
            whole = pipeline.Partial.concatenate([p.partial for p in parts])
        except ValueError as exc:
            raise errors.InternalError(str(exc)) from None
        return Stem4dPart(whole, parts[0].calibration, parts[0].meta)

    def write(self, result: Stem4dPart, params: Stem4dParameters, ctx: Context) -> Mapping[str, Any]:
        ny = result.meta["shape"][0]
        if result.partial.row0 != 0 or result.partial.row1 != ny:
            raise errors.InternalError(f"the parts cover rows {result.partial.row0}-{result.partial.row1} of {ny}")
        return self._finish(result.partial, result.calibration, result.meta, params, ctx)

    @staticmethod
    def _open(inputs: Inputs, params: Stem4dParameters) -> tuple[Scan4D, StagedFile]:
        files = [f for f in inputs.files if not f.name.lower().endswith(_SKIP)]
        if not files:
            raise errors.InvalidRequest("no 4D-STEM data file among the inputs (.mib, .h5/.hdf5/.nxs/.emd)")
        if len(files) > 1:
            raise errors.InvalidRequest(
                f"one scan per request: got {len(files)} data files ({', '.join(f.name for f in files[:4])})"
            )
        f = files[0]
        hdr = next(
            (h.path for h in inputs.files if h.name.lower().endswith(".hdr") and h.path.stem == f.path.stem), None
        )
        return open_scan(f.path, f.name, dataset=params.dataset, scan_shape=params.scan_shape, hdr_path=hdr), f

    def _stream(self, data: Job, params: Stem4dParameters, ctx: Context) -> Stem4dPart:
        scan, src = data.scan, data.file.name
        backend, device = _backend(params.device)
        ctx.progress(0.0, "calibrate", "mean pattern of sampled rows, beam centre")
        vacuum = None
        if params.strain.vacuum_position is not None:
            r, c = params.strain.vacuum_position
            if r >= scan.shape[0] or c >= scan.shape[1]:
                raise errors.InvalidParameters(
                    [
                        errors.FieldViolation(
                            "strain.vacuum_position",
                            f"({r}, {c}) is outside the {scan.shape[0]} x {scan.shape[1]} scan",
                        )
                    ]
                )
            vacuum = scan.read_rows(r, r + 1)[0, c].astype(np.float64)
        if params.calibration.center_px is not None:
            cy, cx = params.calibration.center_px
            if not (0 <= cy < scan.shape[2] and 0 <= cx < scan.shape[3]):
                raise errors.InvalidParameters(
                    [
                        errors.FieldViolation(
                            "calibration.center_px",
                            f"({cy}, {cx}) is off the {scan.shape[2]} x {scan.shape[3]} detector",
                        )
                    ]
                )
        try:
            calib = pipeline.calibrate(
                scan.read_rows,
                scan.shape,
                mrad_per_px=params.calibration.mrad_per_px,
                center_px=params.calibration.center_px,
                ellipse_ring_mrad=params.calibration.ellipse_ring_mrad,
                bf_mrad=params.virtual.bf_mrad,
                adf_mrad=params.virtual.adf_mrad,
                haadf_mrad=params.virtual.haadf_mrad,
                masks=params.virtual.masks,
                com_mrad=params.com.com_mrad,
                strain=params.strain.enabled,
                vacuum_frame=vacuum,
                disc_threshold=params.strain.disc_threshold,
            )
        except ValueError as exc:
            if str(exc).startswith("mask "):
                raise errors.InvalidParameters([errors.FieldViolation("virtual.masks", str(exc))]) from None
            raise errors.InvalidInput(src, f"calibration: {exc}") from None
        if calib.ellipse is not None:
            ctx.log(
                f"ellipse: axis ratio {calib.ellipse.axis_ratio:.4f} at {calib.ellipse.theta_deg:.1f}°, "
                f"residual ellipticity {calib.residual_ellipticity:.2e}"
            )
        ctx.progress(0.05, "stream", f"virtual detectors and CoM on {backend}:{device}")
        r0, r1 = data.rows
        part = pipeline.stream(
            scan.read_rows,
            scan.shape,
            calib,
            row0=r0,
            row1=r1,
            itemsize=scan.dtype.itemsize,
            budget_mb=params.chunk_mb,
            backend=backend,
            device=device,
            strain=params.strain.enabled,
            progress=lambda fr, msg: ctx.progress(0.05 + 0.95 * fr, "stream", msg),
            read_frames=scan.read_frames,
            dtype=scan.dtype,
        )
        step = (
            (params.calibration.scan_step_nm, params.calibration.scan_step_nm)
            if params.calibration.scan_step_nm
            else scan.step_nm
        )
        energy = params.calibration.energy_kev or scan.energy_kev
        meta = {
            "source": src,
            "layout": scan.layout,
            "shape": list(scan.shape),
            "step_nm": step,
            "energy_kev": energy,
            "images": {k: v.tolist() for k, v in scan.images.items()},
        }
        return Stem4dPart(part, calib, meta)

    def _finish(
        self,
        part: pipeline.Partial,
        calib: pipeline.Calibration,
        meta: dict[str, Any],
        params: Stem4dParameters,
        ctx: Context,
    ) -> Mapping[str, Any]:
        ctx.progress(0.0, "finish", "descan, DPC, strain")
        step = tuple(meta["step_nm"]) if meta.get("step_nm") else None
        try:
            maps = pipeline.finish(
                part,
                calib,
                descan=params.com.descan,
                rotation_deg=params.com.scan_rotation_deg,
                flip=params.com.flip,
                step_nm=step,
                energy_kev=meta.get("energy_kev"),
                want_phase=params.com.dpc_phase,
                strain_reference=params.strain.reference,
                strain_frame=params.strain.frame,
            )
        except ValueError as exc:
            raise errors.InvalidInput(meta["source"], str(exc)) from None
        if params.com.dpc_phase and "dpc_phase" not in maps.images:
            ctx.log(
                "no DPC phase: the beam energy or the scan step is unknown (give energy_kev / scan_step_nm)", "warning"
            )
        for name, img in meta.get("images", {}).items():
            maps.images[name], maps.units[name] = np.asarray(img, float), "counts"
        nxs = ctx.output_path("stem4d.nxs", format="nexus", role="result")
        report.write_nexus(
            nxs,
            maps,
            calib,
            part,
            source=meta["source"],
            layout=meta["layout"],
            step_nm=step,
            energy_kev=meta.get("energy_kev"),
            shape=meta["shape"],
            parameters=params.model_dump(),
            program=PROGRAM,
            version=VERSION,
        )
        if params.output.plots:
            report.write_png(
                ctx.output_path("stem4d_overview.png", format="png", role="preview"),
                maps,
                calib,
                part,
                title=f"{meta['source']} {meta['shape']}",
            )
        geo = calib.geometry
        summary: dict[str, Any] = {
            "file": meta["source"],
            "layout": meta["layout"],
            "shape": meta["shape"],
            "frames": int(part.total_counts.size),
            "beam_center_px": list(geo.center_yx_px),
            "disc_radius_px": calib.disc_radius_px,
            "mrad_per_px": geo.mrad_per_px,
            "detectors": {d.name: [d.inner_mrad, d.outer_mrad] for d in calib.detectors},
            "scan_step_nm": list(step) if step else None,
            "images": sorted(maps.images),
            **{k: v for k, v in maps.fitted.items() if isinstance(v, bool | int | float | str)},
        }
        if calib.ellipse is not None:
            summary.update(
                ellipse_axis_ratio=calib.ellipse.axis_ratio,
                ellipse_theta_deg=calib.ellipse.theta_deg,
                residual_ellipticity=calib.residual_ellipticity,
            )
        if "haadf_recorded" in maps.images and "adf" in maps.images:
            summary["corr_adf_recorded_haadf"] = float(
                np.corrcoef(maps.images["adf"].ravel(), maps.images["haadf_recorded"].ravel())[0, 1]
            )
        return summary
