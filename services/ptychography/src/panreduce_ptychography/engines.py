"""Ptychographic reconstruction engines: Difference Map, Maximum Likelihood and LSQML.

All three are written once against :class:`~panreduce_ptychography.backend.Backend`, so
the same code runs with numpy on the CPU and with torch on a GPU.

The driver: :func:`reconstruct` runs one engine from a state. The forward model is in
:mod:`~panreduce_ptychography.model`, the engines in :mod:`~panreduce_ptychography.dm`,
:mod:`~panreduce_ptychography.ml` and :mod:`~panreduce_ptychography.lsqml`, the initial
guesses in :mod:`~panreduce_ptychography.initialisation` (re-exported here).

References
- Difference Map: P. Thibault et al., Science 321, 379 (2008); Ultramicroscopy 109,
  338 (2009).
- Maximum likelihood with conjugate gradients: P. Thibault & M. Guizar-Sicairos,
  New J. Phys. 14, 063004 (2012).
- LSQML: M. Odstrcil, A. Menzel & M. Guizar-Sicairos, Opt. Express 26, 3108 (2018).
- Position refinement: the same paper (gradient of the exit wave along the object's
  spatial derivative), cf. A. Tripathi et al., Opt. Express 22, 1452 (2014).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from panreduce_ptychography.backend import Backend
from panreduce_ptychography.dm import DM
from panreduce_ptychography.initialisation import initial_object, initial_probe
from panreduce_ptychography.lsqml import LSQML
from panreduce_ptychography.ml import ML
from panreduce_ptychography.model import Model, Options, State, support_mask
from panreduce_ptychography.problem import Problem

__all__ = [
    "ENGINES",
    "Options",
    "State",
    "StopRule",
    "final_metrics",
    "initial_object",
    "initial_probe",
    "reconstruct",
    "support_mask",
]

ENGINES = ("dm", "ml", "lsqml")

Callback = Callable[[int, int, dict[str, Any]], None]


@dataclass(frozen=True)
class StopRule:
    """Stop an engine when the error metric of its current estimate has levelled off: its
    relative fall over the last ``window`` iterations, (D[i - window] - D[i]) / D[i], is
    below ``tolerance`` (a rise counts as levelled off), after at least ``min_iterations``
    (default 2 x ``window``) iterations of the engine. The iteration count given to
    :func:`reconstruct` stays the cap."""

    tolerance: float = 5e-3
    window: int = 10
    min_iterations: int | None = None
    metric: str = "poisson_deviance"

    def levelled_off(self, values: list[float]) -> bool:
        least = self.min_iterations if self.min_iterations is not None else 2 * self.window
        if len(values) < max(least, self.window + 1):
            return False
        old, new = values[-1 - self.window], values[-1]
        return (old - new) <= self.tolerance * abs(new)


def reconstruct(
    problem: Problem,
    state: State,
    *,
    engine: str,
    iterations: int,
    backend: Backend,
    options: Options | None = None,
    callback: Callback | None = None,
    start_iteration: int = 0,
    stop: StopRule | None = None,
) -> State:
    """Run at most ``iterations`` of ``engine`` ("dm", "ml" or "lsqml") from ``state``.

    After each iteration the error metric of the current estimate is recorded, the same
    for every engine (:meth:`Model.estimate_metrics`: ``fourier_error`` and
    ``poisson_deviance`` of the object and probe exit waves, on up to METRIC_FRAMES
    frames), with the engine's own figures (``<engine>_fourier_error``, DM's
    ``exit_wave_change``, ``position_step_px`` when positions were refined).
    ``callback(i, iterations, record)`` is called after each iteration; it may raise to
    stop. With ``stop``, the engine ends early once the metric has levelled off. Returns
    the new state, its history extended by one record per iteration and its
    ``stop_reason`` one of ``levelled_off``, ``iteration_cap`` or ``diverged``.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    opts = options or Options()
    m = Model(backend, problem, state, opts)
    eng = {"dm": DM, "ml": ML, "lsqml": LSQML}[engine](m)
    history = list(state.history)
    frames = m.metric_frames()
    values: list[float] = []
    reason = "iteration_cap"
    t0 = time.perf_counter()
    for i in range(iterations):
        it = start_iteration + i
        own = eng.step(it)
        metrics = m.estimate_metrics(frames)
        for k, v in own.items():
            metrics[f"{engine}_{k}" if k in ("fourier_error", "poisson_deviance") else k] = v
        record = {
            "iteration": len(history) + 1,
            "engine": engine,
            "time_s": time.perf_counter() - t0,
            **{k: float(v) for k, v in metrics.items()},
        }
        history.append(record)
        if callback is not None:
            callback(i + 1, iterations, record)
        value = record[stop.metric if stop else "poisson_deviance"]
        if not math.isfinite(value):
            reason = "diverged"
            break
        values.append(value)
        # (no stop at the noise floor: with a few free parameters per frame pixel the
        # deviance falls below its noise expectation while the object still improves,
        # 0.063 -> 0.027 rad over 90 further ML iterations on a KB raster)
        if stop is not None and stop.levelled_off(values):
            reason = "levelled_off"
            break
    out = m.to_state(history)
    out.stop_reason = reason
    return out


def final_metrics(problem: Problem, state: State, backend: Backend, options: Options | None = None) -> dict[str, float]:
    """The error metrics of ``state`` on every frame, with the expected Poisson deviance and
    the reduced deviance (see :meth:`Model.estimate_metrics`)."""
    m = Model(backend, problem, state, options or Options())
    return m.estimate_metrics(np.arange(m.n), expected=True)
