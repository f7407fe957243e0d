"""Spectra and harmonics: normalisation, phase convention and honest uncertainties."""

from __future__ import annotations

import numpy as np
import pytest

from panreduce_thz import spectra


def _wave(y, e, dt=0.02):
    t = np.arange(y.size) * dt
    return spectra.prepare(t, y, np.full(y.size, e))


def test_cosine_amplitude_and_phase_are_recovered():
    t = np.arange(2000) * 0.02
    y = 0.3 * np.cos(2 * np.pi * 2.1 * (t - 20.0) + 0.8)
    wave = spectra.prepare(t, y, np.full(t.size, 1e-3))
    h = spectra.harmonic(wave, 2.1, reference_ps=20.0)
    assert h.amplitude == pytest.approx(0.3, rel=2e-3)
    assert h.phase_rad == pytest.approx(0.8, abs=2e-3)
    spec = spectra.spectrum(wave)
    k = np.argmax(spec.amplitude)
    assert spec.frequency_thz[k] == pytest.approx(2.1, abs=0.01)
    assert spec.amplitude[k] == pytest.approx(0.3, rel=0.02)
    assert spec.power[k] == pytest.approx(spec.amplitude[k] ** 2 / 2)
    assert spectra.find_fundamental(spec, band_thz=(0.15, 3.0)) == pytest.approx(2.1, abs=0.003)


def test_reported_uncertainties_match_the_scatter():
    rng = np.random.default_rng(2)
    t = np.arange(500) * 0.02
    clean = 0.01 * np.exp(-0.5 * ((t - 5) / 1.0) ** 2) * np.cos(2 * np.pi * 2.1 * (t - 5) + 0.6)
    sigma = 0.002
    amps, phases, errs = [], [], []
    for _ in range(300):
        h = spectra.harmonic(
            spectra.prepare(t, clean + rng.normal(0, sigma, t.size), np.full(t.size, sigma)), 2.1, reference_ps=5.0
        )
        amps.append(h.amplitude)
        phases.append(h.phase_rad)
        errs.append((h.amplitude_err, h.phase_err_rad))
    err_a, err_p = np.mean(errs, axis=0)
    assert np.std(amps) == pytest.approx(err_a, rel=0.15)
    assert np.std(phases) == pytest.approx(err_p, rel=0.15)
    assert np.mean(phases) == pytest.approx(0.6, abs=3 * err_p / np.sqrt(300))


def test_interior_gaps_are_interpolated_and_counted():
    y = np.sin(np.arange(50) / 5.0)
    y[[10, 11, 30]] = np.nan
    e = np.full(50, 0.1)
    e[[10, 11, 30]] = np.nan
    e[20] = 0.4
    w = spectra.prepare(np.arange(50) * 0.02, y, e)
    assert w.filled == 3 and np.isfinite(w.signal).all() and np.isfinite(w.error).all()
    assert w.signal[10] == pytest.approx(np.interp(10, [9, 12], [y[9], y[12]]))


def test_too_short_a_waveform_has_no_spectrum():
    with pytest.raises(ValueError):
        spectra.prepare(np.arange(3.0), np.ones(3), np.ones(3))
