"""Timing-tool analysis: per-pulse arrival pixel of the electro-optic (spectral decoding)
signal, and the absolute pump-probe delay of every pulse.

Pure functions on arrays (no I/O). Units: pixels (px) along the timing-tool camera row,
picoseconds (ps), millimetres (mm) of the delay stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from scipy import signal as _signal
else:
    _signal = lazy.module("scipy.signal")

#: offset encoding of the TELBE timing-tool camera: values above 32767 carry +32768
OFFSET_CODE = 32768


#: ``scipy.signal.butter(3, [1e-5, 0.04], btype="band", output="sos")`` (scipy 1.17), the
#: facility's (and the default) band: a job with it need not import scipy.signal (~1 CPU-s
#: a process with bytecode caches, ~2.5 s without). tests/thz/test_thz_timing.py checks
#: that scipy still gives exactly these numbers.
DEFAULT_BANDPASS = (3, 1e-5, 0.04)
_DEFAULT_SOS = (
    (
        0.00021944802157476323,
        0.00043889604314952647,
        0.00021944802157476323,
        1.0,
        -1.8672757747970083,
        0.882113110833196,
    ),
    (1.0, 0.0, -1.0, 1.0, -1.881642790635498, 0.8816465097486077),
    (1.0, -2.0, 1.0, 1.0, -1.9999685914290206, 0.9999685924162118),
)


def bandpass_sos(*, order: int = 3, low: float = 1e-5, high: float = 0.04, design: bool = False) -> np.ndarray:
    """Second-order sections of the Butterworth band-pass the facility applies to each
    timing-tool row; ``low``/``high`` are the band edges as fractions of Nyquist
    (dimensionless, 0 < low < high < 1). SOS form: the same filter as the facility's
    transfer-function form, numerically sound for band edges this close to 0. The
    default band's sections are tabulated (``design`` True: always from scipy)."""
    if not design and (order, low, high) == DEFAULT_BANDPASS:
        return np.array(_DEFAULT_SOS)
    return _signal.butter(order, [low, high], btype="band", output="sos")


def decode_offset(image: np.ndarray) -> np.ndarray:
    """Undo the camera's offset encoding as the facility does: if pixel [0, 0] exceeds
    32767 the whole image carries +32768 (counts, uint16 in -> float32 out)."""
    out = image.astype(np.float32)
    if image.size and image.flat[0] > OFFSET_CODE - 1:
        out -= OFFSET_CODE
    return out


def filtered_rows(rows: np.ndarray, background: np.ndarray, sos: np.ndarray) -> np.ndarray:
    """Background-subtracted rows (pulses × pixels, counts) filtered causally along each
    row (like the facility's ``lfilter``, not zero-phase). float32 out."""
    x = np.asarray(rows, dtype=np.float32) - np.asarray(background, dtype=np.float32)[None, :]
    return _signal.sosfilt(sos.astype(np.float32), x, axis=1).astype(np.float32, copy=False)


def _quadratic_vertex_weights(half_width: int) -> np.ndarray:
    """Rows of the least-squares quadratic fit y ≈ a + b·u + c·u² over u = -h..h."""
    u = np.arange(-half_width, half_width + 1, dtype=np.float64)
    design = np.stack([np.ones_like(u), u, u * u], axis=1)
    return np.linalg.pinv(design)  # 3 × (2h+1)


def peak_positions(
    filtered: np.ndarray, *, method: Literal["subpixel", "integer"] = "subpixel", half_width: int = 3
) -> np.ndarray:
    """Arrival pixel of every row of ``filtered`` (pulses × pixels).

    ``integer``: the index of the maximum (the facility's notebook). ``subpixel``: the
    vertex of a least-squares parabola through the ``2·half_width + 1`` pixels around that
    maximum (clipped to ±half_width; rows whose maximum lies at the row's edge keep the
    integer value). float64 px out.
    """
    _n, width = filtered.shape
    idx = np.argmax(filtered, axis=1)
    if method == "integer" or width < 2 * half_width + 1:
        return idx.astype(np.float64)
    centre = np.clip(idx, half_width, width - 1 - half_width)
    offsets = np.arange(-half_width, half_width + 1)
    window = np.take_along_axis(filtered, centre[:, None] + offsets[None, :], axis=1).astype(np.float64)
    coef = window @ _quadratic_vertex_weights(half_width).T  # n × 3: a, b, c
    b, c = coef[:, 1], coef[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(c < 0, -b / (2 * c), np.nan)
    shift = centre - idx
    ok = np.isfinite(vertex) & (np.abs(vertex + shift) <= half_width) & (idx == centre)
    return np.where(ok, centre + np.nan_to_num(vertex), idx).astype(np.float64)


def arrival_pixels(
    rows: np.ndarray,
    background: np.ndarray,
    sos: np.ndarray,
    *,
    method: Literal["subpixel", "integer"] = "subpixel",
    half_width: int = 3,
) -> np.ndarray:
    """Arrival pixel (px) of each pulse from its decoded timing-tool row (counts)."""
    return peak_positions(filtered_rows(rows, background, sos), method=method, half_width=half_width)


def stage_delay_ps(position_mm: float, *, stage_zero_mm: float = 0.0, ps_per_mm: float = 6.6713) -> float:
    """Delay (ps) set by the stage: (position − zero) × ps per mm (2/c for a double pass)."""
    return (position_mm - stage_zero_mm) * ps_per_mm


def pulse_delays_ps(arrival_px: np.ndarray, stage_ps: float, *, pixel_to_ps: float) -> np.ndarray:
    """Absolute delay of each pulse (ps): arrival pixel × ps per pixel + stage delay.
    Unlike the facility's notebook the delay is not truncated to whole pixels."""
    return np.asarray(arrival_px, dtype=np.float64) * pixel_to_ps + stage_ps
