"""Sorting and binning by delay: centres, standard errors, empty bins, mergeability."""

from __future__ import annotations

import numpy as np
import pytest

from panreduce_thz.binning import DelayAccumulator, common_grid, waveform
from panreduce_thz.gating import gated_signal, pair_indices


def test_bins_report_centres_means_and_standard_errors():
    acc = DelayAccumulator.covering(1.0, 1.1, bin_ps=0.02)
    rng = np.random.default_rng(0)
    t = rng.uniform(1.0, 1.04, 40_000)  # two bins: [1.00, 1.02) and [1.02, 1.04)
    y = np.where(t < 1.02, 1.0, -1.0) + rng.normal(0, 0.5, t.size)
    assert acc.add(t, y) == 0
    w = waveform(acc)
    np.testing.assert_allclose(w.delay_ps, [1.01, 1.03])  # centres, not the upper edges 1.02, 1.04
    np.testing.assert_allclose(w.signal, [1.0, -1.0], atol=4 * 0.5 / np.sqrt(20_000))
    np.testing.assert_allclose(w.error, 0.5 / np.sqrt(w.count), rtol=0.03)
    assert w.count.sum() == 40_000


def test_empty_bins_are_marked_and_outside_pulses_counted():
    acc = DelayAccumulator.covering(0.0, 1.0, bin_ps=0.1)
    dropped = acc.add(np.array([0.05, 0.05, 0.55, 5.0]), np.array([1.0, 3.0, 2.0, 9.0]))
    assert dropped == 1
    w = waveform(acc)
    assert w.count.tolist() == [2, 0, 0, 0, 0, 1]
    assert np.isnan(w.signal[1:5]).all() and w.signal[0] == 2.0
    assert w.error[0] == pytest.approx(np.sqrt(2.0 / 2)) and np.isnan(w.error[5])


def test_parts_merge_to_one_binning():
    rng = np.random.default_rng(1)
    t, y = rng.uniform(10, 20, 10_000), rng.normal(size=10_000)
    whole = DelayAccumulator.covering(10, 20, bin_ps=0.05)
    whole.add(t, y)
    a = DelayAccumulator.covering(10, 14, bin_ps=0.05)
    b = DelayAccumulator.covering(13, 20, bin_ps=0.05)
    a.add(t[t < 14], y[t < 14])
    b.add(t[t >= 14], y[t >= 14])
    merged = waveform(a.merge(b))
    ref = waveform(whole)
    np.testing.assert_array_equal(merged.count, ref.count)
    np.testing.assert_allclose(merged.signal, ref.signal, rtol=1e-12)


def test_runs_binned_apart_share_one_grid():
    a, b = DelayAccumulator.covering(0.3, 0.5, bin_ps=0.02), DelayAccumulator.covering(0.41, 0.7, bin_ps=0.02)
    a.add(np.array([0.31, 0.45]), np.array([1.0, 2.0]))
    b.add(np.array([0.45, 0.69]), np.array([3.0, 4.0]))
    centres, (ya, yb) = common_grid([waveform(a), waveform(b)], bin_ps=0.02)
    k = int(np.argmin(np.abs(centres - 0.45)))
    assert ya[k] == 2.0 and yb[k] == 3.0
    assert centres[0] == pytest.approx(0.31) and centres[-1] == pytest.approx(0.69)


def test_gates_and_pairing():
    traces = np.zeros((2, 96), np.float32)
    traces[:, :48] = 1.0
    traces[:, 48:] = 0.25
    np.testing.assert_allclose(gated_signal(traces), [36.0, 36.0])
    cam, adc = pair_indices(5, 5, 2)
    assert cam.tolist() == [2, 3, 4] and adc.tolist() == [0, 1, 2]  # nothing wrapped around
    cam, adc = pair_indices(5, 5, -1)
    assert cam.tolist() == [0, 1, 2, 3] and adc.tolist() == [1, 2, 3, 4]
