"""I16 normalisation arithmetic, checked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from panreduce_scan.normalise import counting_sigma, normalise


def test_counting_sigma_has_a_floor_of_one_count():
    assert counting_sigma(np.array([0.0, 1.0, 4.0, 100.0, -3.0])).tolist() == [1, 1, 2, 10, 1]


def test_transmission_time_and_ring_current():
    counts = np.array([0.0, 100.0, 400.0])
    nm = normalise(
        counts,
        count_time=np.array([2.0, 2.0, 0.5]),
        transmission=0.01,
        ring_current=np.array([300.0, 150.0, 300.0]),
        ring_current_reference=300.0,
    )
    # 100 counts, 2 s, 1 % transmission, half the ring current: 100 / 2 / 0.01 * 2 = 10000
    assert nm.intensity.tolist() == pytest.approx([0.0, 10000.0, 80000.0])
    # sigma: sqrt(max(counts, 1)) through the same factors: 1/2/0.01, 10/2/0.01*2, 20/0.5/0.01
    assert nm.sigma.tolist() == pytest.approx([50.0, 1000.0, 4000.0])
    assert "300 mA" in nm.units


def test_without_ring_current_and_disabled():
    counts = np.array([9.0, 16.0])
    nm = normalise(counts, count_time=1.0, transmission=6.167e-5)
    assert nm.intensity == pytest.approx(counts / 6.167e-5)
    assert nm.sigma == pytest.approx(np.array([3.0, 4.0]) / 6.167e-5)
    raw = normalise(counts, count_time=5.0, transmission=0.1, enabled=False)
    assert raw.intensity.tolist() == [9.0, 16.0] and raw.sigma.tolist() == [3.0, 4.0]
    assert raw.units == "counts"
