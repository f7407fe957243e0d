"""Timing tool: sub-pixel arrival times against the simulator's truth, and against the
facility's integer maximum."""

from __future__ import annotations

import numpy as np
import pytest

from panreduce_thz import simulate, timing


@pytest.fixture(scope="module")
def rows():
    inst = simulate.Instrument()
    rng = np.random.default_rng(7)
    dark = (100 + 20 * rng.standard_normal(inst.pixels)).astype(np.float32)
    jitter = rng.normal(0.0, 0.25, 20_000)
    raw, truth_px = simulate.timing_rows(jitter, inst, rng, dark)
    return raw, dark, truth_px


def _errors(raw, dark, truth_px, method):
    px = timing.arrival_pixels(timing.decode_offset(raw), dark, timing.bandpass_sos(), method=method)
    err = px - truth_px
    return err - err.mean(), err.mean()  # the causal filter delays every pulse alike


def test_subpixel_beats_the_integer_maximum(rows):
    sub, lag_sub = _errors(*rows, "subpixel")
    integer, lag_int = _errors(*rows, "integer")
    rms_sub, rms_int = float(np.sqrt(np.mean(sub**2))), float(np.sqrt(np.mean(integer**2)))
    # the integer maximum cannot beat its quantisation, 1/sqrt(12) = 0.29 px
    assert 0.28 < rms_int < 0.40
    # the parabola vertex: ~0.1 px = 1.2 fs at 0.0115 ps/px, three times better
    assert rms_sub < 0.13 and rms_sub < 0.4 * rms_int
    assert np.abs(sub).max() < 0.6
    # the constant lag is the causal band-pass's group delay, the same for both methods
    assert abs(lag_sub - lag_int) < 0.1 and 5 < lag_sub < 40


def test_offset_encoding_is_undone_per_image():
    raw = np.full((2, 8), 32768 + 100, np.uint16)
    assert timing.decode_offset(raw).max() == 100
    plain = np.full((2, 8), 100, np.uint16)
    assert timing.decode_offset(plain).max() == 100


def test_peak_at_the_row_edge_keeps_the_integer_index():
    filtered = np.zeros((2, 32), np.float32)
    filtered[0, 0] = 5.0
    filtered[1, 31] = 5.0
    assert list(timing.peak_positions(filtered, half_width=3)) == [0.0, 31.0]


def test_delay_is_stage_plus_calibrated_pixel():
    stage = timing.stage_delay_ps(51.10, stage_zero_mm=1.10, ps_per_mm=6.6713)
    assert stage == pytest.approx(333.565)
    # not truncated to a whole pixel as in the facility's notebook
    assert timing.pulse_delays_ps(np.array([100.5]), stage, pixel_to_ps=0.0115)[0] == pytest.approx(333.565 + 1.15575)


def test_tabulated_default_band_is_scipys_design():
    """The default band's sections are tabulated (no scipy.signal import per job): they
    must be exactly what scipy designs, and other bands are still designed."""
    order, low, high = timing.DEFAULT_BANDPASS
    tabulated = timing.bandpass_sos(order=order, low=low, high=high)
    designed = timing.bandpass_sos(order=order, low=low, high=high, design=True)
    assert tabulated.shape == designed.shape == (3, 6)
    np.testing.assert_array_equal(tabulated, designed)
    other = timing.bandpass_sos(order=2, low=1e-4, high=0.08)
    assert other.shape == (2, 6) and not np.allclose(other[-1], tabulated[-1])


def test_a_default_job_does_not_import_scipy_signal(tmp_path):
    """Timing a page with the default band by the compiled kernels leaves scipy.signal
    unimported (its import is ~1-2.5 CPU-s of a cold job)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from panreduce_thz import pipeline, timing\n"
        "s = pipeline.Settings(0.0115, 0.02, timing.bandpass_sos(), 'subpixel', 3, (0, 48), (48, 96))\n"
        "rows = np.full((70, 64), 1000, np.uint16); rows[:, 30] = 2000\n"
        "traces = np.ones((70, 96), '>f4')\n"
        "p = pipeline.process_page(rows, traces, np.zeros(64), 1.0, s)\n"
        "assert p.arrival_px.shape == (70,) and np.isfinite(p.arrival_px).all()\n"
        "print(sorted(m for m in sys.modules if m.startswith('scipy.signal')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]", out.stdout
