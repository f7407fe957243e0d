"""Fourier analysis of a binned THz waveform: windowed amplitude/power spectra and the
complex amplitudes of the harmonics of the pump with propagated uncertainties.

Units: delay t in ps, frequency in THz (1/ps), signal in the units of the waveform.
Normalisation: amplitude A(f) = 2·|Σ w_k y_k e^{-2πi f t_k}| / Σ w_k, so a steady cosine
of amplitude a shows a peak of height a whatever the window; power P = A²/2, which with
the boxcar window is the facility's 2·(|FFT|/n)².
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Window = Literal["hann", "blackman", "boxcar"]


@dataclass(frozen=True)
class PreparedWaveform:
    """A waveform on a uniform grid ready for the FFT: interior empty bins linearly
    interpolated (``filled`` of them), errors of single-pulse or interpolated bins set
    from the neighbours (the larger one)."""

    delay_ps: np.ndarray
    signal: np.ndarray
    error: np.ndarray
    filled: int


def prepare(delay_ps: np.ndarray, signal: np.ndarray, error: np.ndarray) -> PreparedWaveform:
    t = np.asarray(delay_ps, dtype=np.float64)
    y = np.asarray(signal, dtype=np.float64).copy()
    e = np.asarray(error, dtype=np.float64).copy()
    good = np.isfinite(y)
    if good.sum() < 4:
        raise ValueError("fewer than 4 filled bins: no spectrum")
    first, last = np.flatnonzero(good)[[0, -1]]
    t, y, e, good = t[first : last + 1], y[first : last + 1], e[first : last + 1], good[first : last + 1]
    filled = int((~good).sum())
    if filled:
        y[~good] = np.interp(t[~good], t[good], y[good])
    bad_e = ~np.isfinite(e)
    if bad_e.all():
        e[:] = np.nanstd(y) if np.isfinite(np.nanstd(y)) else 0.0
    elif bad_e.any():
        ok = np.flatnonzero(~bad_e)
        idx = np.flatnonzero(bad_e)
        right = np.clip(np.searchsorted(ok, idx), 0, ok.size - 1)
        left = np.clip(right - 1, 0, ok.size - 1)
        e[idx] = np.maximum(e[ok[left]], e[ok[right]])
    return PreparedWaveform(t, y, e, filled)


def window_weights(n: int, window: Window) -> np.ndarray:
    if window == "hann":
        return np.hanning(n)
    if window == "blackman":
        return np.blackman(n)
    return np.ones(n)


@dataclass(frozen=True)
class Spectrum:
    frequency_thz: np.ndarray
    amplitude: np.ndarray
    power: np.ndarray


def spectrum(wave: PreparedWaveform, *, window: Window = "hann", zero_pad: int = 4) -> Spectrum:
    """One-sided amplitude and power spectra (see module docstring), zero-padded to
    ``zero_pad`` × the waveform length (interpolates, adds no resolution)."""
    n = wave.signal.size
    dt = float(np.median(np.diff(wave.delay_ps)))
    w = window_weights(n, window)
    nfft = int(2 ** np.ceil(np.log2(max(n * zero_pad, 8))))
    x = np.fft.rfft((wave.signal - 0.0) * w, nfft)
    amp = 2.0 * np.abs(x) / w.sum()
    amp[0] /= 2.0
    freq = np.fft.rfftfreq(nfft, dt)
    return Spectrum(freq, amp, amp * amp / 2.0)


def find_fundamental(spec: Spectrum, *, band_thz: tuple[float, float] = (0.15, 3.0)) -> float:
    """Frequency (THz) of the largest amplitude within ``band_thz``, refined by a parabola
    through the three samples around it."""
    f, a = spec.frequency_thz, spec.amplitude
    inside = np.flatnonzero((f >= band_thz[0]) & (f <= band_thz[1]))
    if inside.size < 3:
        raise ValueError(f"the spectrum has fewer than 3 samples in {band_thz} THz")
    i = int(inside[np.argmax(a[inside])])
    if 0 < i < f.size - 1:
        y0, y1, y2 = a[i - 1], a[i], a[i + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            return float(f[i] + 0.5 * (y0 - y2) / denom * (f[1] - f[0]))
    return float(f[i])


@dataclass(frozen=True)
class Harmonic:
    """Complex amplitude of order ``order`` at ``frequency_thz``: ``amplitude`` (signal
    units) and ``phase_rad`` of cos(2πf(t − t_ref) + φ), with 1σ errors propagated from
    the per-bin standard errors (the fundamental frequency taken as exact)."""

    order: int
    frequency_thz: float
    amplitude: float
    amplitude_err: float
    phase_rad: float
    phase_err_rad: float

    @property
    def significance(self) -> float:
        return self.amplitude / self.amplitude_err if self.amplitude_err > 0 else float("inf")


def harmonic(
    wave: PreparedWaveform,
    frequency_thz: float,
    *,
    order: int = 1,
    window: Window = "hann",
    reference_ps: float | None = None,
) -> Harmonic:
    """Window-normalised Fourier coefficient of the waveform at ``frequency_thz``
    (c = 2 Σ w y e^{-iθ} / Σ w, θ = 2πf(t − t_ref)); ``reference_ps`` defaults to the
    centre of the waveform."""
    t, y, e = wave.delay_ps, wave.signal, wave.error
    w = window_weights(t.size, window)
    t_ref = 0.5 * (t[0] + t[-1]) if reference_ps is None else reference_ps
    theta = 2 * np.pi * frequency_thz * (t - t_ref)
    scale = 2.0 / w.sum()
    cos, sin = np.cos(theta), np.sin(theta)
    re = scale * np.sum(w * y * cos)
    im = -scale * np.sum(w * y * sin)
    v = (scale * w * e) ** 2
    var_re, var_im, cov = np.sum(v * cos * cos), np.sum(v * sin * sin), -np.sum(v * cos * sin)
    amp = float(np.hypot(re, im))
    if amp > 0:
        var_a = (re * re * var_re + im * im * var_im + 2 * re * im * cov) / amp**2
        var_p = (im * im * var_re + re * re * var_im - 2 * re * im * cov) / amp**4
    else:
        var_a, var_p = (var_re + var_im) / 2, np.pi**2
    return Harmonic(
        order,
        float(frequency_thz),
        amp,
        float(np.sqrt(max(var_a, 0.0))),
        float(np.arctan2(im, re)),
        float(np.sqrt(max(var_p, 0.0))),
    )


def harmonics(
    wave: PreparedWaveform,
    fundamental_thz: float,
    *,
    orders: int = 3,
    window: Window = "hann",
    reference_ps: float | None = None,
) -> list[Harmonic]:
    """Harmonics 1..orders of ``fundamental_thz`` below the Nyquist frequency."""
    nyquist = 0.5 / float(np.median(np.diff(wave.delay_ps)))
    return [
        harmonic(wave, n * fundamental_thz, order=n, window=window, reference_ps=reference_ps)
        for n in range(1, orders + 1)
        if n * fundamental_thz < nyquist
    ]
