"""Compiled (numba) kernels of the per-pulse path: timing-tool rows → arrival pixel, ADC
traces → gated signal, delays → per-bin sums. Each is the same arithmetic as the numpy /
scipy reference in ``timing``, ``gating`` and ``binning`` (tests compare them), done in
one pass over the data, float32 where the reference is float32:

* timing: the raw uint16 rows are decoded, background-subtracted and put through the
  causal Butterworth cascade (``sosfilt``'s transposed direct form II, float32) for
  ``LANES`` pulses at a time, pulses in the SIMD lanes (a row's recursion is serial, a
  block of rows is not), then the maximum and the parabola vertex of each row;
* gating: the big-endian float32 samples are byte-swapped as uint32 and summed in
  float64 over the two gates;
* binning: count, Σy and Σy² per bin in one pass (no sort).

All kernels release the GIL (``nogil``): callers run blocks of pulses in threads.
Units: pixels (px), ps, ADC units.
"""

from __future__ import annotations

import numpy as np
from numba import njit

LANES = 64  # pulses filtered side by side (the SIMD loop runs over them; 64: 0.59 µs a 512-px row, 128: 0.72)
TILE_PX, TILE_LANES = 32, 8  # the rows -> lanes transpose in tiles of pixels × pulses


def _jit(**options):
    """``njit`` with ``cache=True`` (the compiled kernels kept next to this file, or in
    numba's user cache when the tree is read-only: a cold process loads instead of
    compiling them, ~1 s); without the cache when no cache folder is writable."""

    def wrap(fn):
        try:
            return njit(cache=True, **options)(fn)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return njit(cache=False, **options)(fn)

    return wrap


@_jit(nogil=True)
def _vertex(y: np.ndarray, idx: int, width: int, half: int, w1: np.ndarray, w2: np.ndarray) -> float:
    """``timing.peak_positions``'s sub-pixel rule for one filtered row ``y``."""
    if width < 2 * half + 1:
        return float(idx)
    centre = min(max(idx, half), width - 1 - half)
    if centre != idx:
        return float(idx)
    b = 0.0
    c = 0.0
    for u in range(2 * half + 1):
        v = np.float64(y[centre - half + u])
        b += w1[u] * v
        c += w2[u] * v
    if not c < 0:
        return float(idx)
    vertex = -b / (2 * c)
    if not abs(vertex) <= half:
        return float(idx)
    return centre + vertex


@_jit(nogil=True, fastmath={"contract"})  # FMA contraction only: no reassociation
def arrival_pixels(
    raw: np.ndarray,
    first: int,
    offset: float,
    background: np.ndarray,
    sos: np.ndarray,
    subpixel: bool,
    half: int,
    w1: np.ndarray,
    w2: np.ndarray,
    out: np.ndarray,
) -> None:
    """Arrival pixel (px, float64, into ``out``) of every raw row of ``raw`` (pulses ×
    pixels, uint16) in the window of pixels ``first`` .. ``first + background.size``:
    row − ``offset`` − ``background`` (counts), filtered by the float32 second-order
    sections ``sos`` (sections × 6) from the window's first pixel, then the maximum's
    index (``subpixel`` False) or the vertex of the least-squares parabola over ±``half``
    px whose b and c coefficients are the weights ``w1``, ``w2``; + ``first``."""
    n = raw.shape[0]
    width = background.size
    ns = sos.shape[0]
    off = np.float32(offset)
    blk = np.empty((width, LANES), np.float32)
    z1 = np.empty((ns, LANES), np.float32)
    z2 = np.empty((ns, LANES), np.float32)
    bg = np.empty(width, np.float32)
    for p in range(width):
        bg[p] = off + np.float32(background[p])
    row = np.zeros(width, np.float32)
    top = np.empty(LANES, np.float32)
    at = np.zeros(LANES, np.int64)
    for start in range(0, n, LANES):
        m = min(LANES, n - start)
        tiled = width - width % TILE_PX if m == LANES else 0
        for p0 in range(0, tiled, TILE_PX):  # the transpose in tiles (constant trips: 8 % faster)
            for l0 in range(0, LANES, TILE_LANES):
                for i in range(TILE_LANES):
                    src = raw[start + l0 + i, first:]
                    for j in range(TILE_PX):
                        blk[p0 + j, l0 + i] = np.float32(src[p0 + j]) - bg[p0 + j]
        for lane in range(m):
            src = raw[start + lane, first:]
            for p in range(tiled, width):
                blk[p, lane] = np.float32(src[p]) - bg[p]
        for lane in range(m, LANES):
            for p in range(width):
                blk[p, lane] = 0.0
        z1[:, :] = 0.0
        z2[:, :] = 0.0
        top[:] = -np.inf
        at[:] = 0
        for p in range(width):
            r = blk[p]
            for s in range(ns):
                b0, b1, b2 = sos[s, 0], sos[s, 1], sos[s, 2]
                a1, a2 = sos[s, 4], sos[s, 5]
                za = z1[s]
                zb = z2[s]
                for lane in range(LANES):
                    x = r[lane]
                    y = b0 * x + za[lane]
                    za[lane] = b1 * x - a1 * y + zb[lane]
                    zb[lane] = b2 * x - a2 * y
                    r[lane] = y
            for lane in range(LANES):  # the first maximum, as argmax
                if r[lane] > top[lane]:
                    top[lane] = r[lane]
                    at[lane] = p
        for lane in range(m):
            best = at[lane]
            if subpixel:
                lo = max(best - half - 1, 0)
                for p in range(lo, min(best + half + 2, width)):
                    row[p] = blk[p, lane]
            out[start + lane] = first + (_vertex(row, best, width, half, w1, w2) if subpixel else float(best))


@_jit(nogil=True)
def gated_signal(words: np.ndarray, s0: int, s1: int, g0: int, g1: int, out: np.ndarray) -> None:
    """Σ samples[s0:s1] − Σ samples[g0:g1] (float64, into ``out``) of each trace of
    ``words``: the big-endian float32 ADC traces (pulses × samples) viewed as uint32."""
    n, k = words.shape
    buf = np.empty(k, np.uint32)
    f = buf.view(np.float32)
    for i in range(n):
        for j in range(k):
            u = words[i, j]
            buf[j] = ((u >> 24) & 0xFF) | ((u >> 8) & 0xFF00) | ((u << 8) & 0xFF0000) | ((u << 24) & 0xFF000000)
        a = 0.0
        for j in range(s0, s1):
            a += f[j]
        b = 0.0
        for j in range(g0, g1):
            b += f[j]
        out[i] = a - b


@_jit(nogil=True)
def accumulate(
    delay_ps: np.ndarray,
    value: np.ndarray,
    bin_ps: float,
    first: int,
    count: np.ndarray,
    total: np.ndarray,
    total_sq: np.ndarray,
) -> int:
    """Add each pulse to bin floor(delay/bin_ps) − first (count, Σy, Σy²); returns the
    number of pulses outside the bins (dropped)."""
    nb = count.size
    dropped = 0
    for i in range(delay_ps.size):
        k = int(np.floor(delay_ps[i] / bin_ps)) - first
        if k < 0 or k >= nb:
            dropped += 1
            continue
        v = value[i]
        count[k] += 1
        total[k] += v
        total_sq[k] += v * v
    return dropped
