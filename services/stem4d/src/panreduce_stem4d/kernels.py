"""Compiled (numba) single pass over unsigned-integer frames: virtual detectors, CoM sums,
totals, sum and max patterns, all in int64 (exact), one read of each pixel.

The detectors are given as runs of the flattened detector: ``(start, stop, label)`` with
every pixel of ``[start, stop)`` adding to ``label``'s sum. Non-overlapping binary masks
(BF/ADF/HAADF annuli, or any user masks that happen not to overlap) become one label image
and then runs; the CoM region is runs too, each inside one detector row. A run's sum is a
tight, vectorisable loop; nothing is converted to float. ``stream.Accumulator`` chooses this
path and keeps the dense float32 product as the reference (and for overlapping or weighted
masks, and for torch).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


def runs_of(labels: np.ndarray, row_len: int) -> np.ndarray:
    """(n, 3) int64 runs ``(start, stop, label)`` of the flat label image ``labels`` (-1 =
    none) with equal label, split at detector rows of ``row_len`` pixels."""
    lab = np.asarray(labels, np.int64).ravel()
    n = lab.size
    edge = np.zeros(n + 1, bool)
    edge[0] = edge[n] = True
    edge[1:n] = lab[1:] != lab[:-1]
    edge[np.arange(0, n + 1, row_len)] = True
    cuts = np.flatnonzero(edge)
    starts, stops = cuts[:-1], cuts[1:]
    keep = lab[starts] >= 0
    return np.ascontiguousarray(np.stack([starts[keep], stops[keep], lab[starts[keep]]], axis=1), dtype=np.int64)


def _frames(flat, f0, f1, runs, com_runs, row_len, nlab, out, pat, mx, acc0):
    # A run is summed through a view (``seg``) indexed from 0: with a start that is not 0,
    # numba's negative-index wrap-around check stays in the loop and LLVM does not vectorise
    # it (3x slower). ``acc0`` (0 of the run sums' type) is uint32 when a run of one detector
    # row cannot overflow it (uint8/uint16 frames), else int64: twice the lanes per vector.
    for f in range(f0, f1):
        row = flat[f]
        tot = np.int64(0)
        for p in range(row.shape[0]):
            v = row[p]
            tot += v
            pat[p] += v
            if v > mx[p]:
                mx[p] = v
        for r in range(runs.shape[0]):
            seg = row[runs[r, 0] : runs[r, 1]]
            s = acc0
            for q in range(seg.shape[0]):
                s += seg[q]
            out[f, runs[r, 2]] += s
        cs = np.int64(0)
        cy = np.int64(0)
        cx = np.int64(0)
        for r in range(com_runs.shape[0]):
            a = com_runs[r, 0]
            seg = row[a : com_runs[r, 1]]
            s = acc0
            sx = np.int64(0)
            for q in range(seg.shape[0]):
                v = seg[q]
                s += v
                sx += np.int64(v) * q
            y = a // row_len
            cs += s
            cy += s * y
            cx += sx + s * (a - y * row_len)
        out[f, nlab] = cs
        out[f, nlab + 1] = cy
        out[f, nlab + 2] = cx
        out[f, nlab + 3] = tot


_serial = njit(cache=True, nogil=True)(_frames)


@njit(cache=True, nogil=True)
def reduce_serial(flat, runs, com_runs, row_len, nlab, out, pat, mx, acc0):
    """One thread: ``out[f]`` (int64, nlab + 4) = label sums, Σ I, Σ I·y, Σ I·x (CoM
    region), Σ I (whole frame) of every frame; ``pat`` (uint32 where it cannot overflow,
    else int64) += frames, ``mx`` = max; ``acc0``: 0 of the per-run sums' type."""
    _serial(flat, 0, flat.shape[0], runs, com_runs, row_len, nlab, out, pat, mx, acc0)


@njit(cache=True, nogil=True, parallel=True)
def reduce_parallel(flat, runs, com_runs, row_len, nlab, out, pats, mxs, acc0):
    """As ``reduce_serial`` with frames split in ``pats.shape[0]`` chunks run in parallel,
    each with its own pattern sum ``pats[c]`` and max ``mxs[c]`` (the caller reduces them)."""
    n = flat.shape[0]
    chunks = pats.shape[0]
    for c in prange(chunks):
        f0 = n * c // chunks
        f1 = n * (c + 1) // chunks
        _serial(flat, f0, f1, runs, com_runs, row_len, nlab, out, pats[c], mxs[c], acc0)
