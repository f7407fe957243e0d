"""Issue 19: DM -> ML is never worse than DM alone, on scans of the held-out generator
(panreduce_ptychography.heldout) unlike the benchmark's and test_convergence_and_probe's:
a KB-like astigmatic probe on a jittered raster at 1e5 photons per frame, and a pinhole
(aperture) probe with Fresnel fringes on concentric circles at 1e8 photons, each with a
seed no other test uses. From the data's probe and the DPC object, ML taking over after
40 or after 85 DM iterations ends closer to the truth than DM run on to 100 iterations,
and at a lower Poisson deviance (the likelihood ML optimises). The hand-over is the
technique's: DM on the 1/4 px shift grid, ML with exact shifts (with the grid in ML too,
the aperture scan at 1e8 photons gave 0.0098 rad after 40 DM + 60 ML against 0.0081 for
100 DM: worse). Not yet so (strict xfail): on the aperture scan at 1e8 photons ML taking
over after 40 DM iterations is still behind DM after 60 ML iterations (0.0091 against
0.0081 rad; ML's conjugate gradients converge slowly at high counts); after 85 it is not."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import pytest
from ptycho_helpers import quality

from panreduce_ptychography import engines as eng
from panreduce_ptychography.backend import Backend
from panreduce_ptychography.heldout import CASES, generate
from panreduce_ptychography.initialisation import probe_from_data
from panreduce_ptychography.problem import prepare

BY_NAME = {c.name: c for c in CASES}


GRID = {"dm": eng.Options(subpixel_grid=4), "ml": eng.Options(subpixel_grid=0)}


@cache
def _scan(name: str):
    """The scan, its problem and the DM iterates after 40, 85 and 100 iterations, from the
    data's probe and the DPC object (DM on the 1/4 px grid, as the technique)."""
    case = replace(BY_NAME[name], seed=BY_NAME[name].seed + 200)
    sim = generate(case)
    problem = prepare(sim.scan)
    p, _ = probe_from_data(problem)
    p0 = eng.initial_probe(problem, p[None], 1)
    start = eng.State(obj=eng.initial_object(problem, p0), probe=p0, positions=problem.positions.copy())
    dm40 = _more(problem, start, "dm", 40)
    dm85 = _more(problem, dm40, "dm", 45)
    return sim, problem, {40: dm40, 85: dm85}, _more(problem, dm85, "dm", 15)


def _more(problem, state: eng.State, engine: str, iterations: int) -> eng.State:
    return eng.reconstruct(
        problem,
        state,
        engine=engine,
        iterations=iterations,
        backend=Backend(),
        options=GRID[engine],
        start_iteration=len(state.history),
    )


@pytest.mark.parametrize(
    ("name", "handover"),
    [
        ("kb-rasterjit-64", 40),
        ("kb-rasterjit-64", 85),
        pytest.param(
            "ap-concentric-64",
            40,
            marks=pytest.mark.xfail(strict=True, reason="ML converges slowly at 1e8 photons (0.0091 vs 0.0081 rad)"),
        ),
        ("ap-concentric-64", 85),
    ],
)
def test_ml_after_dm_is_not_worse_than_dm(name: str, handover: int) -> None:
    """Measured (phase error in rad, DM -> ML against DM to 100): kb-rasterjit-64 0.019 /
    0.042 after 40 DM, 0.022 / 0.042 after 85 DM."""
    sim, problem, dm, dm100 = _scan(name)
    ml = _more(problem, dm[handover], "ml", 100 - handover)
    assert len(ml.history) == 100
    e_ml, _, _ = quality(sim, problem, ml.obj)
    e_dm, _, _ = quality(sim, problem, dm100.obj)
    print(f"\n{name}: dm {handover} + ml {100 - handover} {e_ml:.4f} rad, dm 100 {e_dm:.4f} rad")
    assert ml.history[-1]["poisson_deviance"] < dm100.history[-1]["poisson_deviance"]
    assert e_ml <= e_dm, (e_ml, e_dm)
