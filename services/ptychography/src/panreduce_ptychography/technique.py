"""The ptychography technique: glue between the kit and the engines."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from panreduce import errors
from panreduce.kit import Context, Inputs, StagedFile
from panreduce.kit import Technique as _Technique
from panreduce_ptychography import engines as eng
from panreduce_ptychography.backend import Backend, cuda_available, get_backend
from panreduce_ptychography.initialisation import parametric_probe, probe_from_data
from panreduce_ptychography.io import list_scans, read_probe, read_scan
from panreduce_ptychography.metrics import phase_noise_floor
from panreduce_ptychography.params import PtychographyParameters, engine_options
from panreduce_ptychography.problem import Problem, Scan, prepare
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
        "sharded by projection."
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
        probe_file = _probe_input(inputs, params)
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
                    self._reconstruct(scan, ref, params, backend, ctx, i, n, probe_file=_probe_input(inputs, params))
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
        return {"projections": [r.summary for r in result.reconstructions], "n_projections": n, "device": result.device}

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
        p0, probe_info = _initial_probe(scan, ref, problem, params, probe_file, backend, ctx.check_cancelled)
        ctx.log(f"{ref.key}: initial probe from {probe_info['init']}")
        obj0 = (
            eng.initial_object(problem, p0)
            if params.object.init == "dpc"
            else np.ones(problem.object_shape, np.complex64)
        )
        state = eng.State(obj=obj0, probe=p0, positions=problem.positions.copy())
        opts = engine_options(params)
        stages = [(params.engine, params.iterations)]
        if params.ml_iterations:
            stages.append(("ml", params.ml_iterations))
        conv = params.convergence
        rule = eng.StopRule(tolerance=conv.tolerance, window=conv.window)
        total = sum(k for _, k in stages)
        done = 0
        reasons: list[str] = []
        ran: list[int] = []
        t0 = time.perf_counter()
        for engine, iters in stages:

            def progress(it: int, _n: int, rec: dict[str, Any], _done: int = done, _engine: str = engine) -> None:
                metrics = ", ".join(
                    f"{k} {v:.4g}" for k, v in rec.items() if k not in ("iteration", "engine", "time_s")
                )
                ctx.progress(
                    (i + 0.02 + 0.96 * (_done + it) / total) / n,
                    _engine,
                    f"projection {i + 1}/{n} {_engine} iteration {rec['iteration']}/{total}: {metrics}",
                )

            state = eng.reconstruct(
                problem,
                state,
                engine=engine,
                iterations=iters,
                backend=backend,
                options=opts,
                callback=progress,
                start_iteration=done,
                stop=rule if conv.stop else None,
            )
            reasons.append(state.stop_reason)
            ran.append(len(state.history) - done)
            done = len(state.history)
            if state.stop_reason == "diverged":
                break
        elapsed = time.perf_counter() - t0
        final = eng.final_metrics(problem, state, backend, opts)
        floor = phase_noise_floor(state.obj, state.probe, state.positions)
        verdict = convergence_verdict(
            state,
            final,
            reasons[-1],
            rule,
            conv.max_deviance,
            noise_floor_rad=floor,
            max_noise_floor_rad=conv.max_phase_noise_floor_rad,
        )
        if not verdict["converged"]:
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
            "engines": [e for e, _ in stages][: len(reasons)],
            "iterations": done,
            "iterations_by_engine": ran,
            "iterations_cap": total,
            "stop_reasons": reasons,
            "iterations_per_s": round(done / max(elapsed, 1e-9), 3),
            "converged": verdict["converged"],
            "convergence": verdict["reason"],
            "fourier_error": float(final["fourier_error"]),
            "poisson_deviance": float(final["poisson_deviance"]),
            "reduced_deviance": float(final["reduced_deviance"]),
            "phase_noise_floor_rad": float(floor),
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
            engines=[e for e, _ in stages][: len(reasons)],
            device=f"{backend.name}:{backend.device}",
            parameters=params.model_dump(),
            summary=summary,
        )


def convergence_verdict(
    state: eng.State,
    final: Mapping[str, float],
    reason: str,
    rule: eng.StopRule,
    max_deviance: float,
    *,
    noise_floor_rad: float = 0.0,
    max_noise_floor_rad: float = float("inf"),
) -> dict[str, Any]:
    """Converged: the last engine's metric levelled off (by the stop rule, or, with the rule
    off, by the same test on its last iterations), the final metrics are finite, the
    reduced Poisson deviance is at most ``max_deviance`` and the shot-noise floor of the
    phase (:func:`phase_noise_floor`) at most ``max_noise_floor_rad``. ``reason``:
    ``converged``, ``diverged``, ``iteration_cap`` (still falling at the cap),
    ``poor_fit`` (levelled off far above the noise: positions, probe or geometry
    inconsistent with the data) or ``photon_limited`` (the data fit to the noise, but
    too few photons crossed the object to determine its phase: the fit is noise)."""
    if reason == "diverged" or not all(np.isfinite(v) for v in final.values()):
        return {"converged": False, "reason": "diverged"}
    last = state.history[-1]["engine"]
    values = [r[rule.metric] for r in state.history if r["engine"] == last]
    levelled = reason == "levelled_off" or rule.levelled_off(values)
    if not levelled:
        return {"converged": False, "reason": "iteration_cap"}
    if final["reduced_deviance"] > max_deviance:
        return {"converged": False, "reason": "poor_fit"}
    if noise_floor_rad > max_noise_floor_rad:
        return {"converged": False, "reason": "photon_limited"}
    return {"converged": True, "reason": "converged"}


def _probe_input(inputs: Inputs, params: PtychographyParameters) -> StagedFile | None:
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


def _initial_probe(
    scan: Scan,
    ref: ProjectionRef,
    problem: Problem,
    params: PtychographyParameters,
    probe_file: StagedFile | None,
    backend: Backend,
    check: Callable[[], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The initial probe modes by ``probe.init`` and what they came from."""
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
        probe, dx = read_probe(probe_file.path, probe_file.name)
        where = probe_file.name
        if dx is not None and not np.isclose(dx, problem.pixel_size_m, rtol=0.01):
            raise errors.InvalidInput(
                probe_file.name,
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
