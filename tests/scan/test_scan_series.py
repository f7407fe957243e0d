"""Choosing the series axis of a batch, and the series table."""

from __future__ import annotations

import math

import pytest

from panreduce_scan.nexus import read_scan
from panreduce_scan.series import choose_series_axis, series_table


def test_temperature_series_preferred():
    meta = [
        {"Ta": t + 0.01 * i, "Tset": t, "en": 8.3, "psi": 0.01, "sx": 1.0 + 0.1 * i}
        for i, t in enumerate([10.0, 20.0, 30.0, 40.0])
    ]
    assert choose_series_axis(meta) == "Ta"


def test_thermometer_noise_is_not_a_series_but_energy_is():
    meta = [{"Ta": 6.55 + d, "en": e, "psi": 0.0153 + d / 100} for d, e in [(0.0, 8.30), (0.01, 8.31), (-0.012, 8.32)]]
    assert choose_series_axis(meta) == "en"


def test_regular_steps_of_a_motor():
    """Nothing physical varies; a sample translation in 0.05 mm steps does (a clock and the
    ring current also change monotonically, but are never series)."""
    meta = [
        {
            "Ta": 6.5,
            "spara": 0.15 + 0.05 * i,
            "sx": 0.422 + 0.047 * i,
            "TimeSec": 100.0 + 131 * i,
            "rc": 300 - i,
            "mono_pitch": (-1) ** i * 0.01,
        }
        for i in range(5)
    ]
    assert choose_series_axis(meta) == "spara"


def test_falls_back_to_scan_number():
    assert choose_series_axis([{"Ta": 6.5}]) == "scan"
    assert choose_series_axis([{"Ta": 6.5}, {"Ta": 6.51}, {"Ta": 6.49}]) == "scan"
    assert choose_series_axis([{"Ta": 6.5}, {"en": 8.0}]) == "scan"  # nothing in common


@pytest.mark.data
def test_real_batch_is_a_sample_position_series(dataset):
    """794932-794936: the same eta rocking curve at five positions of the sample
    (spara 0.15 -> 0.35 mm in 0.05 mm steps); Ta wanders by 0.02 K only."""
    meta = [read_scan(dataset(f"i16-scans/{n}.nxs")).metadata for n in range(794932, 794937)]
    assert choose_series_axis(meta) == "spara"


def test_series_table_sorted_with_values():
    rows = [
        {"scan": 3, "center": 1.0, "center_err": 0.1},
        {"scan": 1, "center": 2.0, "center_err": 0.2},
        {"scan": 2, "center": math.nan, "center_err": math.nan},
    ]
    table = series_table([30.0, 10.0, 20.0], rows, axis="Ta")
    assert [r["scan"] for r in table.rows] == [1, 2, 3]
    assert table.column("Ta").tolist() == [10.0, 20.0, 30.0]
    c = table.column("center")
    assert c[0] == 2.0 and math.isnan(c[1]) and c[2] == 1.0
    by_scan = series_table([3, 1, 2], rows, axis="scan")
    assert [r["scan"] for r in by_scan.rows] == [1, 2, 3]
    with pytest.raises(ValueError):
        series_table([1.0], rows, axis="Ta")
