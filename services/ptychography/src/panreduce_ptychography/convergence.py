"""The convergence verdict of a reconstruction: did the last engine level off, and how
well do the data fit (the summary's ``convergence``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from panreduce_ptychography import engines as eng


def convergence_verdict(
    state: eng.State,
    final: Mapping[str, float],
    reason: str,
    rule: eng.StopRule,
    max_deviance: float,
    *,
    noise_floor_rad: float = 0.0,
    max_noise_floor_rad: float = float("inf"),
    raster_periodic_rad: float | None = None,
    max_raster_periodic_rad: float = float("inf"),
) -> dict[str, Any]:
    """Converged: the last engine's metric levelled off (by the stop rule, or, with the rule
    off, by the same test on its last iterations), the final metrics are finite, the
    reduced Poisson deviance is at most ``max_deviance`` and the shot-noise floor of the
    phase (:func:`phase_noise_floor`) at most ``max_noise_floor_rad``. ``reason``:
    ``converged``, ``diverged``, ``iteration_cap`` (still falling at the cap),
    ``poor_fit`` (levelled off far above the noise: positions, probe or geometry
    inconsistent with the data) or ``photon_limited`` (the data fit to the noise, but
    too few photons crossed the object to determine its phase: the fit is noise) or
    ``raster_ambiguous`` (a raster without jitter, and more than ``max_raster_periodic_rad``
    of the phase is periodic with it: the raster-grid ambiguity, see raster_grid.py;
    ``raster_periodic_rad`` None for other scans and where the periodic part is within the
    specimen's own scatter)."""
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
    if raster_periodic_rad is not None and raster_periodic_rad > max_raster_periodic_rad:
        return {"converged": False, "reason": "raster_ambiguous"}
    return {"converged": True, "reason": "converged"}
