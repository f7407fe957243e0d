"""Issue 19: a scan with too few photons is reported unconverged (photon_limited), from the
shot-noise floor of the phase, which needs no ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from ptycho_helpers import small_sim

from panreduce import kit
from panreduce.storage import Stores
from panreduce_ptychography.io import write_nexus
from panreduce_ptychography.metrics import phase_noise_floor
from panreduce_ptychography.technique import Technique


def test_noise_floor_is_the_interferometer_bound():
    """One flat probe of N photons per pixel over a unit object: sqrt(1 / (4 N))."""
    probe = np.full((1, 8, 8), np.sqrt(100.0), np.complex64)
    floor = phase_noise_floor(np.ones((8, 8), np.complex64), probe, np.zeros((1, 2)))
    assert floor == pytest.approx(0.05, rel=1e-6)


def test_photon_starved_scan_is_reported_photon_limited(tmp_path):
    """1e3 photons per frame: the fit reaches the noise (reduced deviance < 1) but the phase
    is noise (measured 0.41 rad against the truth, floor 0.18 rad)."""
    sim = small_sim(photons=1e3)
    write_nexus(tmp_path / "s.nxs", sim.scan)
    r = kit.run(
        Technique,
        [str(tmp_path / "s.nxs")],
        {"device": "cpu", "plots": False},
        tmp_path / "out",
        stores=Stores(tmp_path / "store"),
    )
    (p,) = r.summary["projections"]
    assert p["converged"] is False and p["convergence"] == "photon_limited"
    assert p["phase_noise_floor_rad"] > 0.1
