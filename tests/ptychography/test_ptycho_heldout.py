"""The default command on scans of the held-out generator (panreduce_ptychography.heldout),
unlike the benchmark's and the other tests' scans: a zone-plate probe on a Fermat spiral of
48-px frames, and a KB-like probe on a raster WITHOUT jitter (the raster-grid pathology).
The defaults must reach ≤ 0.04 rad in the well-lit region and say `converged`."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from ptycho_helpers import object_quality

from panreduce import kit
from panreduce.storage import Stores
from panreduce_ptychography.heldout import CASES, generate
from panreduce_ptychography.io import write_nexus
from panreduce_ptychography.technique import Technique

BY_NAME = {c.name: c for c in CASES}


@pytest.mark.parametrize("name", ["zp-fermat-48", "kb-raster-64"])
def test_default_command_on_a_held_out_geometry(tmp_path: Path, name: str) -> None:
    case = BY_NAME[name]
    if name == "kb-raster-64":
        case = replace(case, seed=case.seed + 100)  # not the very scan the defaults were looked at on
    sim = generate(case)
    write_nexus(tmp_path / "scan.nxs", sim.scan)
    result = kit.run(
        Technique,
        [str(tmp_path / "scan.nxs")],
        {"device": "cpu", "plots": False},
        tmp_path / "out",
        stores=Stores(tmp_path / "store"),
    )
    p = result.summary["projections"][0]
    nxs = next(Path(o.uri) for o in result.outputs if o.uri.endswith(".nxs"))
    err, _ = object_quality(nxs, sim, case.frame)
    assert err <= 0.04, f"{name}: phase error {err:.4f} rad ({p['convergence']})"
    assert p["convergence"] == "converged", p
