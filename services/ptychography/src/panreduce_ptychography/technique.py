"""The ptychography technique: glue between the kit and the engines."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panreduce import errors
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce_ptychography import engines as eng
from panreduce_ptychography.backend import Backend, cuda_available, get_backend
from panreduce_ptychography.io import list_scans, read_scan
from panreduce_ptychography.params import PtychographyParameters
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


def _key(name: str, entry: str, multi: bool) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem) or "scan"
    return f"{stem}_{entry}" if multi else stem


class Technique(_Technique[PtychographyParameters, list[ProjectionRef]]):
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
        "sharded by projection."
    )
    Parameters = PtychographyParameters
    input_kinds = ("nexus/ptycho", "cxi/ptycho")
    output_formats = ("nexus", "png")
    wants_gpu = True
    shardable = True
    shard_unit = "projection"

    def load(self, inputs: Inputs, params: PtychographyParameters, ctx: Context) -> list[ProjectionRef]:
        if params.device == "gpu" and not cuda_available():
            raise errors.FailedPrecondition("device=gpu was asked for but this server has no CUDA GPU "
                                            "(or no torch); use device=auto or cpu")
        files = inputs.files
        if not files:
            raise errors.InvalidRequest("no input files")
        refs: list[ProjectionRef] = []
        for i, f in enumerate(files):
            ctx.progress(i / len(files), "load", f"listing scans in {f.name}")
            entries = list_scans(f.path, f.name)
            refs += [ProjectionRef(f.path, f.name, e, _key(f.name, e, len(entries) > 1)) for e in entries]
        seen: dict[str, int] = {}
        for j, r in enumerate(refs):  # unique output names
            n = seen.get(r.key, 0)
            seen[r.key] = n + 1
            if n:
                refs[j] = dataclasses.replace(r, key=f"{r.key}_{n}")
        if ctx.shard is not None:
            refs = ctx.shard.select(refs)
        if not refs:
            raise errors.InvalidRequest("this shard has no projection to reconstruct")
        # fail fast: the first projection is read completely here
        read_scan(refs[0].path, refs[0].source, refs[0].entry)
        ctx.progress(1.0, "load", f"{len(refs)} projection(s) to reconstruct")
        return refs

    def reduce(self, data: list[ProjectionRef], params: PtychographyParameters, ctx: Context) -> Mapping[str, Any]:
        backend = get_backend(params.device, workers=params.threads)
        ctx.log(f"engines run on {backend.name} ({backend.device})")
        results = []
        n = len(data)
        for i, ref in enumerate(data):
            ctx.progress(i / n, "prepare", f"projection {i + 1}/{n}: {ref.source}:{ref.entry}")
            scan = read_scan(ref.path, ref.source, ref.entry)
            rec = self._reconstruct(scan, ref, params, backend, ctx, i, n)
            ctx.progress((i + 1) / n, "write", f"writing {ref.key}")
            write_nexus(ctx.output_path(f"{ref.key}.nxs", format="nexus", role="result"), rec,
                        program="panreduce-ptychography", version=VERSION)
            if params.plots:
                write_png(ctx.output_path(f"{ref.key}.png", format="png", role="preview"), rec)
            results.append(rec.summary)
        return {"projections": results, "n_projections": n, "device": f"{backend.name}:{backend.device}"}

    # -------------------------------------------------------------------------------------
    def _reconstruct(self, scan: Scan, ref: ProjectionRef, params: PtychographyParameters, backend: Backend,
                     ctx: Context, i: int, n: int) -> Reconstruction:
        if params.energy_ev:
            scan.energy_ev = params.energy_ev
        if params.distance_m:
            scan.distance_m = params.distance_m
        if params.pixel_size_m:
            scan.pixel_size_m = (params.pixel_size_m, params.pixel_size_m)
        center = (params.center_row, params.center_col) if params.center_row is not None else None
        h0, w0 = scan.frames.shape[1:]
        if params.frame_size * params.binning > 4 * max(h0, w0):
            raise errors.InvalidParameters([errors.FieldViolation(
                "frame_size", f"{params.frame_size} x binning {params.binning} is far larger than the "
                f"{h0} x {w0} detector of {ref.source}")])
        try:
            problem = prepare(scan, frame_size=params.frame_size, binning=params.binning, center=center,
                              counts_per_photon=params.counts_per_photon, saturation=params.saturation)
        except ValueError as exc:
            raise errors.InvalidInput(ref.source, f"{ref.entry}: {exc}") from None
        if not np.any(problem.counts * problem.mask > 0):
            raise errors.InvalidInput(ref.source, f"{ref.entry}: the frames hold no photons in the good pixels")
        probe = scan.probe
        if probe is not None and probe.shape[-2:] != problem.frame_shape:
            raise errors.InvalidInput(ref.source, f"{ref.entry}: the initial probe is {probe.shape[-2]} x "
                                      f"{probe.shape[-1]} but the frames are {problem.frame_shape[0]} x "
                                      f"{problem.frame_shape[1]} after cropping and binning")
        diameter = params.probe_diameter_m / problem.pixel_size_m if params.probe_diameter_m else None
        p0 = eng.initial_probe(problem, probe, params.probe_modes, seed=params.seed, diameter_px=diameter)
        obj0 = (eng.initial_object(problem, p0) if params.object_init == "dpc"
                else np.ones(problem.object_shape, np.complex64))
        state = eng.State(obj=obj0, probe=p0,
                          positions=problem.positions.copy())
        opts = eng.Options(
            probe_update_start=params.probe_update_start, probe_support=params.probe_support,
            subpixel=params.subpixel, subpixel_grid=params.subpixel_grid, dm_alpha=params.dm_alpha,
            dm_fourier_eps=params.dm_fourier_eps, ml_regularisation=params.ml_regularisation,
            lsqml_batches=params.lsqml_batches, position_refinement=params.position_refinement,
            position_start=params.position_refinement_start, position_every=params.position_refinement_every,
            position_max_step=params.position_max_step_px, seed=params.seed)
        stages = [(params.engine, params.iterations)]
        if params.ml_iterations:
            stages.append(("ml", params.ml_iterations))
        total = sum(k for _, k in stages)
        done = 0
        t0 = time.perf_counter()
        for engine, iters in stages:
            def progress(it: int, _n: int, rec: dict[str, Any], _done: int = done, _engine: str = engine) -> None:
                metrics = ", ".join(f"{k} {v:.4g}" for k, v in rec.items()
                                    if k not in ("iteration", "engine", "time_s"))
                ctx.progress((i + 0.02 + 0.96 * (_done + it) / total) / n, _engine,
                             f"projection {i + 1}/{n} {_engine} iteration {rec['iteration']}/{total}: {metrics}")

            state = eng.reconstruct(problem, state, engine=engine, iterations=iters, backend=backend,
                                    options=opts, callback=progress, start_iteration=done)
            done += iters
        elapsed = time.perf_counter() - t0
        last = state.history[-1]
        moved = np.sqrt(((state.positions - problem.positions) ** 2).sum(axis=1))
        power = (np.abs(state.probe) ** 2).sum(axis=(1, 2))
        summary: dict[str, Any] = {
            "projection": ref.key, "file": ref.source, "entry": ref.entry,
            "engines": [e for e, _ in stages], "iterations": total,
            "iterations_per_s": round(total / max(elapsed, 1e-9), 3),
            "fourier_error": float(last["fourier_error"]),
            "object_pixel_size_m": problem.pixel_size_m,
            "object_shape": list(problem.object_shape), "frames": int(problem.counts.shape[0]),
            "frame_shape": list(problem.frame_shape),
            "probe_mode_power": [float(x) for x in power / max(power.sum(), 1e-30)],
            "position_shift_rms_px": float(np.sqrt(np.mean(moved**2))),
        }
        if "poisson_deviance" in last:
            summary["poisson_deviance"] = float(last["poisson_deviance"])
        if "rotation_angle_deg" in scan.metadata:
            summary["rotation_angle_deg"] = scan.metadata["rotation_angle_deg"]
        return Reconstruction(key=ref.key, scan=scan, problem=problem, state=state,
                              initial_positions_px=problem.positions.copy(), engines=[e for e, _ in stages],
                              device=f"{backend.name}:{backend.device}",
                              parameters=params.model_dump(), summary=summary)
