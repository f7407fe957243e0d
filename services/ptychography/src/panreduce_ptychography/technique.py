"""The ptychography technique: glue between the kit and the engines."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panreduce import errors
from panreduce.kit import Context, Inputs, StagedFile
from panreduce.kit import Technique as _Technique
from panreduce_ptychography import plan
from panreduce_ptychography.backend import Backend, cuda_available, get_backend
from panreduce_ptychography.io import list_scans, read_scan
from panreduce_ptychography.params import PtychographyParameters
from panreduce_ptychography.probes import initial_probe, probe_input
from panreduce_ptychography.problem import Scan, prepare
from panreduce_ptychography.report import Reconstruction, write_nexus, write_png

VERSION = "0.1.0"


@dataclass(frozen=True)
class ProjectionRef:
    """One scan to reconstruct: an entry of a staged file."""

    path: Path
    source: str  # the file's name, for messages
    entry: str
    key: str  # output name stem


@dataclass
class PtychoPart:
    """Reconstructed projections of a block (what the writers need; no raw frames)."""

    reconstructions: list[Reconstruction]
    device: str


def _without_frames(rec: Reconstruction) -> Reconstruction:
    """``rec`` without the measured frames and counts (the writers read only their shape)."""
    scan = dataclasses.replace(rec.scan, frames=rec.scan.frames[:0], dark=None)
    problem = dataclasses.replace(rec.problem, counts=rec.problem.counts[:0])
    return dataclasses.replace(rec, scan=scan, problem=problem)


def _key(name: str, entry: str, multi: bool) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem) or "scan"
    return f"{stem}_{entry}" if multi else stem


class Technique(_Technique[PtychographyParameters, PtychoPart]):
    name = "ptychography"
    version = VERSION
    title = "Ptychography: DM, ML and LSQML reconstructions on CPU and GPU"
    description = (
        "Reconstructs the complex transmission of a specimen and the probe from far-field "
        "ptychographic scans (NeXus/HDF5 or CXI): dark subtraction, bad-pixel masking, "
        "cropping/binning around the diffraction centre; Difference Map, Poisson maximum "
        "likelihood (conjugate gradients, optional smoothness prior) and LSQML engines with "
        "mixed-state probes, probe support and position refinement, running with numpy on "
        "the CPU or torch on a GPU. One reconstruction per projection: a PXCT scan is "
        "sharded by projection, and with pxct.enabled the projections are unwrapped, aligned "
        "and reconstructed by gridrec into a volume (NXtomoproc)."
    )
    Parameters = PtychographyParameters
    input_kinds = ("nexus/ptycho", "cxi/ptycho")
    output_formats = ("nexus", "png")
    wants_gpu = True
    shardable = True
    shard_unit = "projection"

    Part = PtychoPart

    # -- the shard contract: one unit per projection ------------------------------------
    def units(self, inputs: Inputs, params: PtychographyParameters) -> list[ProjectionRef]:
        if params.device == "gpu" and not cuda_available():
            raise errors.FailedPrecondition(
                "device=gpu was asked for but this server has no CUDA GPU (or no torch); use device=auto or cpu"
            )
        files = inputs.files
        if not files:
            raise errors.InvalidRequest("no input files")
        probe_file = probe_input(inputs, params)
        refs: list[ProjectionRef] = []
        for f in files:
            if probe_file is not None and f.path == probe_file.path:
                continue  # the initial probe, not a scan
            entries = list_scans(f.path, f.name)
            refs += [ProjectionRef(f.path, f.name, e, _key(f.name, e, len(entries) > 1)) for e in entries]
        seen: dict[str, int] = {}
        for j, r in enumerate(refs):  # unique output names
            n = seen.get(r.key, 0)
            seen[r.key] = n + 1
            if n:
                refs[j] = dataclasses.replace(r, key=f"{r.key}_{n}")
        if params.pxct.enabled and len(refs) < 3:
            raise errors.InvalidParameters(
                [errors.FieldViolation("pxct.enabled", f"PXCT needs at least 3 projections, the job has {len(refs)}")]
            )
        return refs

    def reduce_block(
        self, block: Sequence[ProjectionRef], inputs: Inputs, params: PtychographyParameters, ctx: Context
    ) -> PtychoPart:
        # fail fast: the first projection is read completely before any engine starts
        read_scan(block[0].path, block[0].source, block[0].entry)
        backend = get_backend(params.device, workers=params.threads)
        ctx.log(f"engines run on {backend.name} ({backend.device})")
        recs = []
        n = len(block)
        for i, ref in enumerate(block):
            ctx.progress(i / n, "prepare", f"projection {i + 1}/{n}: {ref.source}:{ref.entry}")
            scan = read_scan(ref.path, ref.source, ref.entry)
            recs.append(
                _without_frames(
                    self._reconstruct(scan, ref, params, backend, ctx, i, n, probe_file=probe_input(inputs, params))
                )
            )
        return PtychoPart(reconstructions=recs, device=f"{backend.name}:{backend.device}")

    def combine(self, parts: Sequence[PtychoPart], params: PtychographyParameters) -> PtychoPart:
        return PtychoPart(reconstructions=[r for p in parts for r in p.reconstructions], device=parts[0].device)

    def write(self, result: PtychoPart, params: PtychographyParameters, ctx: Context) -> Mapping[str, Any]:
        n = len(result.reconstructions)
        for i, rec in enumerate(result.reconstructions):
            ctx.progress(i / n, "write", f"writing {rec.key}")
            write_nexus(
                ctx.output_path(f"{rec.key}.nxs", format="nexus", role="result"),
                rec,
                program="panreduce-ptychography",
                version=VERSION,
            )
            if params.plots:
                write_png(ctx.output_path(f"{rec.key}.png", format="png", role="preview"), rec)
        summary = {
            "projections": [r.summary for r in result.reconstructions],
            "n_projections": n,
            "device": result.device,
        }
        if params.pxct.enabled:  # the tomographic stage (pxct.py): all projections are here
            from panreduce_ptychography import pxct  # scipy, skimage, tomography: loaded only when used

            summary["pxct"] = pxct.tomography_stage(
                result.reconstructions,
                params.pxct,
                out=ctx.output_path,
                version=VERSION,
                check=ctx.check_cancelled,
                progress=lambda f, msg: ctx.progress(f, "pxct", msg),
                plots=params.plots,
            )
        return summary

    # -------------------------------------------------------------------------------------
    def _reconstruct(
        self,
        scan: Scan,
        ref: ProjectionRef,
        params: PtychographyParameters,
        backend: Backend,
        ctx: Context,
        i: int,
        n: int,
        *,
        probe_file: StagedFile | None = None,
    ) -> Reconstruction:
        prep = params.preparation
        if prep.energy_ev:
            scan.energy_ev = prep.energy_ev
        if prep.distance_m:
            scan.distance_m = prep.distance_m
        if prep.pixel_size_m:
            scan.pixel_size_m = (prep.pixel_size_m, prep.pixel_size_m)
        center = (prep.center_row, prep.center_col) if prep.center_row is not None else None
        h0, w0 = scan.frames.shape[1:]
        if prep.frame_size * prep.binning > 4 * max(h0, w0):
            raise errors.InvalidParameters(
                [
                    errors.FieldViolation(
                        "preparation.frame_size",
                        f"{prep.frame_size} x binning {prep.binning} is far larger than the "
                        f"{h0} x {w0} detector of {ref.source}",
                    )
                ]
            )
        try:
            problem = prepare(
                scan,
                frame_size=prep.frame_size,
                binning=prep.binning,
                center=center,
                counts_per_photon=prep.counts_per_photon,
                saturation=prep.saturation,
            )
        except ValueError as exc:
            raise errors.InvalidInput(ref.source, f"{ref.entry}: {exc}") from None
        if not np.any(problem.counts * problem.mask > 0):
            raise errors.InvalidInput(ref.source, f"{ref.entry}: the frames hold no photons in the good pixels")
        p0, probe_info = initial_probe(
            scan,
            ref,
            problem,
            params,
            None if probe_file is None else probe_file.path,
            backend,
            ctx.check_cancelled,
            probe_name=None if probe_file is None else probe_file.name,
        )
        ctx.log(f"{ref.key}: initial probe from {probe_info['init']}")

        def progress(f: float, engine: str, msg: str) -> None:
            ctx.progress((i + 0.02 + 0.96 * f) / n, engine, f"projection {i + 1}/{n} {msg}")

        out = plan.run(problem, p0, params, backend, progress=progress)
        state, final, floor, verdict, reasons = out.state, out.final, out.noise_floor_rad, out.verdict, out.stop_reasons
        if not verdict["converged"]:
            conv = params.convergence
            msg = (
                f"{ref.key}: the reconstruction did not converge ({verdict['reason']}): reduced Poisson "
                f"deviance {final['reduced_deviance']:.3g} (converged <= {conv.max_deviance:g}), phase "
                f"noise floor {floor:.3g} rad (converged <= {conv.max_phase_noise_floor_rad:g}), stop: "
                f"{', '.join(reasons)}"
            )
            ctx.log(msg, "warning")
            ctx.progress((i + 0.99) / n, "unconverged", msg)
        moved = np.sqrt(((state.positions - problem.positions) ** 2).sum(axis=1))
        power = (np.abs(state.probe) ** 2).sum(axis=(1, 2))
        summary: dict[str, Any] = {
            "projection": ref.key,
            "file": ref.source,
            "entry": ref.entry,
            "engines": out.engines,
            "iterations": out.iterations,
            "iterations_by_engine": out.iterations_by_engine,
            "iterations_cap": out.iterations_cap,
            "stop_reasons": reasons,
            "iterations_per_s": round(out.iterations / max(out.elapsed_s, 1e-9), 3),
            "converged": verdict["converged"],
            "convergence": verdict["reason"],
            "fourier_error": float(final["fourier_error"]),
            "poisson_deviance": float(final["poisson_deviance"]),
            "reduced_deviance": float(final["reduced_deviance"]),
            "phase_noise_floor_rad": float(floor),
            "raster_periodic_phase_rad": out.raster_periodic_rad,
            "raster_periodic_significance": out.raster_periodic_significance,
            "initial_probe": probe_info,
            "object_pixel_size_m": problem.pixel_size_m,
            "object_shape": list(problem.object_shape),
            "frames": int(problem.counts.shape[0]),
            "frame_shape": list(problem.frame_shape),
            "probe_mode_power": [float(x) for x in power / max(power.sum(), 1e-30)],
            "position_shift_rms_px": float(np.sqrt(np.mean(moved**2))),
        }
        if "rotation_angle_deg" in scan.metadata:
            summary["rotation_angle_deg"] = scan.metadata["rotation_angle_deg"]
        return Reconstruction(
            key=ref.key,
            scan=scan,
            problem=problem,
            state=state,
            initial_positions_px=problem.positions.copy(),
            engines=out.engines,
            device=f"{backend.name}:{backend.device}",
            parameters=params.model_dump(),
            summary=summary,
        )
