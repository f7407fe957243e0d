"""Fixtures of the thz tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from thz_sim import make_run  # noqa: E402


@pytest.fixture(scope="session")
def sim_run(tmp_path_factory):
    """81 stage positions × 800 pulses, 250 fs rms jitter, χ3 = 0.3 at φ3 = 0.6 rad."""
    return make_run(tmp_path_factory.mktemp("thz-run"))
