"""The compiled CBF_PACKED / CBF_PACKED_V2 decompressor (numba), kept apart from
:mod:`.cbf` so that importing the technique's declaration loads no numba (it is imported on
the first decode). ``unpack_stream`` returns 0, or 1 when the stream ends before all its
elements, 2 when a block header names an undefined bit width."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _bits(buf, pos, width):  # pragma: no cover - compiled
    """``width`` (<= 32) bits from bit ``pos``, least significant first (the caller has
    checked that they lie in ``buf``)."""
    i = pos >> 3
    v = np.int64(0)
    for k in range(min(5, buf.size - i)):
        v |= np.int64(buf[i + k]) << (8 * k)
    return (v >> (pos & 7)) & ((np.int64(1) << width) - 1)


@njit(cache=True, nogil=True)
def unpack_stream(buf, n, nfast, nplane, widths, header_bits, out):  # pragma: no cover - compiled
    nbits = buf.size * 8
    pos = 0
    p = 0
    count_mask = (1 << (header_bits // 2)) - 1
    while p < n:
        if pos + header_bits > nbits:
            return 1
        h = _bits(buf, pos, header_bits)
        pos += header_bits
        count = 1 << (h & count_mask)
        width = widths[h >> (header_bits // 2)]
        if width < 0:
            return 2
        for _ in range(count):
            if p >= n:
                break
            v = np.int64(0)
            if width > 0:
                if pos + width > nbits:
                    return 1
                v = _bits(buf, pos, width)
                pos += width
                if (v >> (width - 1)) & 1:
                    v -= np.int64(1) << width
            q = p % nplane
            col = q % nfast
            if q < nfast:  # the first row of a plane
                if col > 0:
                    pred = out[p - 1]
                elif p >= nplane:
                    pred = out[p - nplane]
                else:
                    pred = 0
            elif nfast == 1:
                pred = out[p - 1]
            elif p < nplane:  # later rows of the first plane
                if col == 0:
                    pred = (out[p - nfast] + out[p - nfast + 1] + 1) >> 1
                elif col == nfast - 1:
                    pred = (out[p - 1] + out[p - nfast] + 1) >> 1
                else:
                    pred = (out[p - 1] + out[p - nfast - 1] + out[p - nfast] + out[p - nfast + 1] + 2) >> 2
            else:  # later rows of later planes: the same neighbours, and those of the previous plane
                u = p - nfast
                b = p - nplane  # "left" becomes the same pixel there
                if col == 0:
                    pred = (out[u] + out[u + 1] + out[b - nfast] + out[b - nfast + 1] + 2) >> 2
                elif col == nfast - 1:
                    pred = (out[p - 1] + out[u] + out[b] + out[b - nfast] + 2) >> 2
                else:
                    s = out[p - 1] + out[u - 1] + out[u] + out[u + 1]
                    s += out[b] + out[b - nfast - 1] + out[b - nfast] + out[b - nfast + 1]
                    pred = (s + 4) >> 3
            out[p] = pred + v
            p += 1
    return 0
