"""The compiled (numba) per-pulse kernels against the numpy/scipy reference path on
simulated rows and traces: arrival pixel, gated signal, per-bin sums."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from panreduce_thz import simulate, timing
from panreduce_thz.binning import DelayAccumulator
from panreduce_thz.gating import gated_signal
from panreduce_thz.pipeline import (
    PositionStats,
    Pulses,
    RunStats,
    Settings,
    compiled_arrival_pixels,
    compiled_gated_signal,
    process_page,
)


def _settings(method: str) -> Settings:
    return Settings(0.0115, 0.02, timing.bandpass_sos(), method, 3, (0, 48), (48, 96))


@pytest.fixture(scope="module")
def rows():
    inst = simulate.Instrument()
    rng = np.random.default_rng(11)
    dark = (100 + 20 * rng.standard_normal(inst.pixels)).astype(np.float32)
    raw, truth_px = simulate.timing_rows(rng.normal(0.0, 0.25, 5000), inst, rng, dark)
    return raw, dark, truth_px


@pytest.mark.parametrize("method", ["subpixel", "integer"])
def test_arrival_pixels_match_the_reference(rows, method):
    raw, dark, truth = rows
    ref = timing.arrival_pixels(timing.decode_offset(raw), dark, timing.bandpass_sos(), method=method)
    got = compiled_arrival_pixels(raw, dark, _settings(method))
    assert got.shape == ref.shape
    if method == "subpixel":  # float32 cascade vs scipy's float64 sosfilt: within 0.01 px (0.1 fs)
        assert np.abs(got - ref).max() < 0.01
    else:  # the maximum's index itself: equal but for near-ties, which move by one pixel
        assert np.mean(got == ref) > 0.999 and np.abs(got - ref).max() <= 1
    # the compiled path keeps the reference's accuracy against the truth (0.1 px rms, lag removed)
    err = got - truth
    assert float(np.std(err)) < (0.13 if method == "subpixel" else 0.40)


def test_a_cropped_row_times_like_the_whole_row(rows):
    """The row cropped to pixels [150, 400) around the edge (arrivals 229..381 px, plus the
    band-pass's ~18 px lag): filtered from pixel 150, the same arrival pixels to 0.02 px rms
    and the same accuracy; compiled and reference paths agree on the window too."""
    raw, dark, truth = rows
    whole = compiled_arrival_pixels(raw, dark, _settings("subpixel"))
    window = Settings(0.0115, 0.02, timing.bandpass_sos(), "subpixel", 3, (0, 48), (48, 96), timing_window=(150, 400))
    got = compiled_arrival_pixels(raw, dark, window)
    traces = np.zeros((raw.shape[0], 96), ">f4")
    ref = process_page(raw, traces, dark, 0.0, dataclasses.replace(window, compiled=False)).arrival_px
    assert np.abs(got - ref).max() < 0.01
    shift = got - whole  # the filter's start-up: a few thousandths of a pixel, rarely a few tenths
    assert float(np.sqrt(np.mean(shift**2))) < 0.02 and float(np.abs(shift).max()) < 0.3
    err = got - truth
    assert float(np.std(err)) < 0.13 and 5 < float(np.mean(err)) < 40  # the lag is the filter's, as for the row
    # a window that cuts off late pulses' peaks loses them (they take the window's last pixels)
    narrow = dataclasses.replace(window, timing_window=(150, 380))
    assert float(np.abs(compiled_arrival_pixels(raw, dark, narrow) - whole).max()) > 5


def test_offset_encoding_and_plain_rows_agree(rows):
    raw, dark, _ = rows
    plain = (raw.astype(np.int32) - timing.OFFSET_CODE).astype(np.uint16)  # the same rows, not offset-encoded
    s = _settings("subpixel")
    a, b = compiled_arrival_pixels(plain, dark, s), compiled_arrival_pixels(raw, dark, s)
    assert np.abs(a - b).max() < 0.01  # float32 rounding of the 32768 offset only


def test_gated_signal_matches_the_reference():
    inst = simulate.Instrument()
    rng = np.random.default_rng(3)
    signal = rng.normal(0.0, 0.05, 4000)
    traces = simulate.adc_traces(signal, inst, rng).astype(">f4")
    for gates in [((0, 48), (48, 96)), ((5, 40), (60, 90))]:
        s = Settings(0.0115, 0.02, timing.bandpass_sos(), "subpixel", 3, *gates)
        ref = gated_signal(traces, signal_gate=gates[0], background_gate=gates[1])
        got = compiled_gated_signal(np.ascontiguousarray(traces), s)
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    # the default gates recover the simulated signal to the ADC noise (0.002 × sqrt(96) = 0.02 per pulse)
    got = compiled_gated_signal(np.ascontiguousarray(traces), _settings("subpixel"))
    assert float(np.std(got - signal)) < 0.03


def test_binned_sums_match_the_reference():
    rng = np.random.default_rng(5)
    delay = rng.uniform(-1.0, 4.0, 50_000)
    value = rng.normal(1.0, 0.3, delay.size)
    px = rng.uniform(0, 512, delay.size)
    grid = dict(t_min_ps=0.0, t_max_ps=3.0, bin_ps=0.02)  # pulses outside [0, 3] ps are dropped
    ref, ours = (RunStats(DelayAccumulator.covering(**grid), 512) for _ in range(2))
    for stats, compiled in ((ref, False), (ours, True)):
        q = PositionStats(0.0, 0.0)
        for a in range(0, delay.size, 7000):  # several pages
            stats.add(q, Pulses(px[a : a + 7000], delay[a : a + 7000], value[a : a + 7000]), compiled=compiled)
        stats.positions.append(q)
    np.testing.assert_array_equal(ours.corrected.count, ref.corrected.count)
    np.testing.assert_allclose(ours.corrected.total, ref.corrected.total, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.corrected.total_sq, ref.corrected.total_sq, rtol=1e-12, atol=1e-12)
    assert ours.dropped == ref.dropped == int(((delay < 0) | (delay >= 3.02)).sum())
    a, b = ours.corrected_waveform(), ref.corrected_waveform()
    np.testing.assert_array_equal(a.count, b.count)
    np.testing.assert_allclose(a.signal, b.signal, rtol=1e-12, equal_nan=True)
    assert a.count.sum() + ours.dropped == delay.size
