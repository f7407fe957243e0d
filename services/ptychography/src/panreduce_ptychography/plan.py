"""The engine plan of one projection: the stages (the chosen engine, then the ML refinement
when ``ml_iterations`` asks for it), each run to the stop rule or its cap, then the final
metrics, the phase noise floor and the convergence verdict. No kit, no files: the technique
passes the prepared problem and the initial probe and reports the outcome."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from panreduce_ptychography import engines as eng
from panreduce_ptychography.backend import Backend
from panreduce_ptychography.convergence import convergence_verdict
from panreduce_ptychography.metrics import phase_noise_floor
from panreduce_ptychography.params import PtychographyParameters, engine_options
from panreduce_ptychography.problem import Problem
from panreduce_ptychography.raster_grid import RASTER_SIGNIFICANCE, raster_periodic_phase, raster_steps

# progress(fraction of this projection's iterations done, engine, message)
Progress = Callable[[float, str, str], None]


@dataclass
class Outcome:
    """What the stages did: the final state, the engines run and why each stopped, the
    iterations per stage, the cap, the time, the final metrics, the phase noise floor (rad)
    and the verdict (``converged``, ``reason``)."""

    state: eng.State
    engines: list[str]
    stop_reasons: list[str]
    iterations_by_engine: list[int]
    iterations: int
    iterations_cap: int
    elapsed_s: float
    final: dict[str, Any]
    noise_floor_rad: float
    verdict: dict[str, Any]
    #: RMS phase periodic with the raster (rad) on a raster without jitter, else None
    raster_periodic_rad: float | None = None
    #: its significance (raster_grid.raster_periodic_phase); flagged at >= RASTER_SIGNIFICANCE
    raster_periodic_significance: float | None = None


def stages(params: PtychographyParameters) -> list[tuple[str, int, eng.Options]]:
    """(engine, iteration cap, options) of each stage."""
    opts = engine_options(params)
    plan = [(params.engine, params.iterations, opts)]
    if params.ml_iterations:
        # the ML refinement places the probe at the exact sub-pixel shifts: at 1e8
        # photons per frame the 1/4 px grid's model error is above the noise (an aperture
        # on concentric circles, ML levelled off: grid 0.0061 rad, reduced deviance 6.7;
        # exact ML 0.0047, 4.7; exact DM and ML 0.0008, 1.4), and ML on the grid after 40
        # DM iterations ended worse than DM (tests/ptychography/test_ptycho_dm_ml_handover.py);
        # DM keeps the quantised shifts (its speed)
        plan.append(("ml", params.ml_iterations, ml_stage_options(opts)))
    return plan


def ml_stage_options(opts: eng.Options) -> eng.Options:
    """The ML refinement's options: exact shifts, one step length each for the object and
    the probe, the probe's preconditioner sum |O|^2 divided by 4. ML's conjugate gradients
    taking over from DM at high counts were slow to correct the probe (its fringes stay in
    the object as high-frequency error): a pinhole on concentric circles at 1e8 photons,
    40 DM + 60 ML against 100 DM, 0.0091 against 0.0081 rad with the common step; with
    both 0.0072 (seeds +300 / +400 and a raster at 1e8: 0.0051 / 0.0097 / 0.0202 against
    DM's 0.0063 / 0.0102 / 0.0240; tests/ptychography/test_ptycho_dm_ml_handover.py). The
    factor is measured, not derived: 2, 3 and 6 each lost to DM on one of those scans."""
    return dataclasses.replace(opts, subpixel_grid=0, ml_separate_steps=True, ml_probe_scale=ML_PROBE_SCALE)


#: the ML stage's probe step scale (see ml_stage_options)
ML_PROBE_SCALE = 4.0


def run(
    problem: Problem,
    probe: np.ndarray,
    params: PtychographyParameters,
    backend: Backend,
    *,
    progress: Progress | None = None,
) -> Outcome:
    """Run the stages of ``params`` on ``problem`` from ``probe`` (and the object start that
    ``params.object.init`` names) and judge the result."""
    obj0 = (
        eng.initial_object(problem, probe)
        if params.object.init == "dpc"
        else np.ones(problem.object_shape, np.complex64)
    )
    state = eng.State(obj=obj0, probe=probe, positions=problem.positions.copy())
    plan = stages(params)
    conv = params.convergence
    rule = eng.StopRule(tolerance=conv.tolerance, window=conv.window)
    total = sum(k for _, k, _ in plan)
    done = 0
    reasons: list[str] = []
    ran: list[int] = []
    t0 = time.perf_counter()
    for engine, iters, stage_opts in plan:

        def callback(it: int, _n: int, rec: dict[str, Any], _done: int = done, _engine: str = engine) -> None:
            if progress is None:
                return
            metrics = ", ".join(f"{k} {v:.4g}" for k, v in rec.items() if k not in ("iteration", "engine", "time_s"))
            progress((_done + it) / total, _engine, f"{_engine} iteration {rec['iteration']}/{total}: {metrics}")

        state = eng.reconstruct(
            problem,
            state,
            engine=engine,
            iterations=iters,
            backend=backend,
            options=stage_opts,
            callback=callback,
            start_iteration=done,
            stop=rule if conv.stop else None,
        )
        reasons.append(state.stop_reason)
        ran.append(len(state.history) - done)
        done = len(state.history)
        if state.stop_reason == "diverged":
            break
    elapsed = time.perf_counter() - t0
    final = eng.final_metrics(problem, state, backend, plan[len(reasons) - 1][2])  # the last stage's model
    floor = phase_noise_floor(state.obj, state.probe, state.positions)
    steps = raster_steps(state.positions)
    periodic, significance = (
        (None, 0.0) if steps is None else raster_periodic_phase(state.obj, state.probe, state.positions, steps)
    )
    if periodic is not None and significance < RASTER_SIGNIFICANCE:
        periodic_flag = None  # within the specimen's own scatter at the lattice
    else:
        periodic_flag = periodic
    verdict = convergence_verdict(
        state,
        final,
        reasons[-1],
        rule,
        conv.max_deviance,
        noise_floor_rad=floor,
        max_noise_floor_rad=conv.max_phase_noise_floor_rad,
        raster_periodic_rad=periodic_flag,
        max_raster_periodic_rad=conv.max_raster_periodic_rad,
    )
    return Outcome(
        state=state,
        engines=[e for e, _, _ in plan][: len(reasons)],
        stop_reasons=reasons,
        iterations_by_engine=ran,
        iterations=done,
        iterations_cap=total,
        elapsed_s=elapsed,
        final=final,
        noise_floor_rad=float(floor),
        verdict=verdict,
        raster_periodic_rad=periodic,
        raster_periodic_significance=significance if steps is not None else None,
    )
