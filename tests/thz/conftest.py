"""Fixtures of the thz tests."""

from __future__ import annotations

import pytest
from thz_sim import make_run  # this folder is on sys.path (pytest's prepend import mode)


@pytest.fixture(scope="session")
def sim_run(tmp_path_factory):
    """81 stage positions × 800 pulses, 250 fs rms jitter, χ3 = 0.3 at φ3 = 0.6 rad."""
    return make_run(tmp_path_factory.mktemp("thz-run"))
