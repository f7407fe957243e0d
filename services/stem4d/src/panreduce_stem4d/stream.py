"""One streaming pass over the frames: virtual images, centre of mass, sum/max patterns.

Every block of scan rows is reduced by one matrix product of the frames (n, pixels) with a
weight matrix (pixels, k): the virtual detector masks, then the CoM mask and its y- and
x-weighted copies. Exact integer sums (total counts per position, the summed pattern) and
the max pattern are accumulated alongside. Memory is one block plus the outputs.
Unsigned-integer frames with binary, non-overlapping masks (the BF/ADF/HAADF annuli) take the
compiled one-pass kernel instead (``kernels``: int64 sums, no float conversion); the dense
product stays the reference and serves overlapping or weighted masks, float frames and torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PassResult:
    """Accumulated per-position images (scan y, scan x) and detector patterns."""

    virtual: dict[str, np.ndarray]  # name -> (ny, nx) counts inside the mask
    com_raw_yx_px: np.ndarray  # (2, ny, nx) intensity-weighted mean detector (y, x), raw pixels
    total_counts: np.ndarray  # (ny, nx) int64: every pixel summed, exact
    sum_pattern: np.ndarray  # (dy, dx) uint64: every frame summed, exact
    max_pattern: np.ndarray  # (dy, dx)
    frames: int


EXACT = 2**24  # float32 holds every integer below this exactly
SUB_FRAMES = 16  # frames converted to float32 at a time: the copy stays in cache for the product


def weight_matrix(masks: list[np.ndarray], com_mask: np.ndarray) -> np.ndarray:
    """(pixels, len(masks) + 4) float32: masks, then com_mask, com_mask*y, com_mask*x, ones."""
    dy, dx = com_mask.shape
    yy, xx = np.mgrid[0:dy, 0:dx].astype(np.float32)
    cols = [m.ravel() for m in masks] + [
        com_mask.ravel(),
        (com_mask * yy).ravel(),
        (com_mask * xx).ravel(),
        np.ones(dy * dx, np.float32),
    ]
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)


def _label_runs(masks: list[np.ndarray], com_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | tuple[None, None]:
    """The kernel's runs of the masks (one label image) and of the CoM mask, or (None, None)
    when a mask is not binary or two masks overlap (the dense product handles those)."""
    binary = [np.asarray(m) for m in masks] + [np.asarray(com_mask)]
    if any(not np.isin(m, (0, 1)).all() for m in binary) or len(masks) > 127:
        return None, None
    if masks and np.sum([m != 0 for m in masks], axis=0).max() > 1:
        return None, None
    from panreduce_stem4d.kernels import runs_of  # numba loads here, once

    labels = np.full(com_mask.shape, -1, np.int64)
    for i, m in enumerate(masks):
        labels[np.asarray(m) != 0] = i
    row_len = com_mask.shape[1]
    com = np.where(np.asarray(com_mask) != 0, 0, -1)
    return runs_of(labels, row_len), runs_of(com, row_len)


class Accumulator:
    """Feed blocks of rows with ``add(block, row0)``; read ``result()`` at the end.

    ``backend``: "numpy" (default) or "torch" (``device`` e.g. "cuda" or "cpu"); the
    torch path computes the same products on the device, the exact sums stay in numpy.
    With the numpy backend, binary non-overlapping masks (BF/ADF/HAADF annuli) and a binary
    CoM mask, unsigned-integer blocks go through the compiled one-pass kernel
    (``kernels``; exact int64 sums; frames in ``threads`` parallel chunks when > 1) unless
    ``compiled`` is False; anything else takes the dense float32 product.
    """

    def __init__(
        self,
        scan_shape: tuple[int, int],
        detector_shape: tuple[int, int],
        masks: dict[str, np.ndarray],
        com_mask: np.ndarray,
        *,
        backend: str = "numpy",
        device: str = "cpu",
        want_patterns: bool = True,
        threads: int = 1,
        compiled: bool = True,
    ) -> None:
        self.names = list(masks)
        self.ny, self.nx = scan_shape
        self.det = detector_shape
        self.weights = weight_matrix([masks[n] for n in self.names], com_mask)
        self.out = np.zeros((self.ny, self.nx, self.weights.shape[1] - 1), np.float64)
        self.total = np.zeros((self.ny, self.nx), np.int64)
        self.sum_pattern = np.zeros(detector_shape, np.uint64)
        self.max_pattern = np.zeros(detector_shape, np.float64)
        self.want_patterns = want_patterns
        self.frames = 0
        self.backend = backend
        self._torch = None
        self.threads = max(1, int(threads))
        self._runs = self._com_runs = None
        self._pat: np.ndarray | None = None  # the kernel's pattern sum and max since the last flush
        self._mx: np.ndarray | None = None
        self._pat_frames = self._pat_cap = 0
        if backend == "numpy" and compiled:
            self._runs, self._com_runs = _label_runs([masks[n] for n in self.names], com_mask)
        if backend == "torch":
            import torch

            self._torch = torch
            self._device = torch.device(device)
            self._w = torch.from_numpy(self.weights).to(self._device)

    def _products_torch(self, flat: np.ndarray) -> np.ndarray:
        torch = self._torch
        src = flat if flat.dtype != np.uint16 else flat.astype(np.int32)
        t = torch.from_numpy(src).to(self._device, non_blocking=True).to(torch.float32)
        return (t @ self._w).double().cpu().numpy()

    def _products_numpy(self, flat: np.ndarray, colsum: np.ndarray | None) -> np.ndarray:
        """flat @ weights, converting SUB_FRAMES frames at a time; adds the float32 column
        sums of the frames to ``colsum``."""
        n = flat.shape[0]
        out = np.empty((n, self.weights.shape[1]), np.float32)
        buf = np.empty((SUB_FRAMES, flat.shape[1]), np.float32)
        for i in range(0, n, SUB_FRAMES):
            m = min(SUB_FRAMES, n - i)
            b = buf[:m]
            np.copyto(b, flat[i : i + m], casting="unsafe")
            np.matmul(b, self.weights, out=out[i : i + m])
            if colsum is not None:
                colsum += b.sum(axis=0)
        return out

    def _add_compiled(self, flat: np.ndarray, f0: int) -> None:
        """Frames ``flat`` (n, pixels) at flat scan positions [f0, f0 + n) through the kernel.
        The pattern sum (uint32 while it cannot overflow: half the traffic of int64) and max
        persist across calls and are flushed into ``sum_pattern``/``max_pattern`` when the
        next frames could overflow the sum, and by ``result()``."""
        from panreduce_stem4d import kernels  # compiled on first use (numba is heavy to import)

        flat = np.ascontiguousarray(flat)
        n, npx = flat.shape
        k = len(self.names)
        out = np.zeros((n, k + 4), np.int64)
        row_len = self.det[1]
        vmax = int(np.iinfo(flat.dtype).max)
        # a run lies inside one detector row: its sum fits uint32 for 8- and 16-bit frames
        acc0 = np.uint32(0) if row_len * vmax < 2**32 else np.int64(0)
        chunks = min(self.threads, n)
        if self._mx is not None and (self._mx.dtype != flat.dtype or self._pat_frames + n > self._pat_cap):
            self._flush_patterns()
        if self._pat is None:
            cap = (2**32 - 1) // max(vmax, 1)  # frames a uint32 pattern sum holds
            pdt = np.uint32 if n <= cap else np.int64
            self._pat_cap = cap if pdt == np.uint32 else 2**62 // max(vmax, 1)
            self._pat = np.zeros((self.threads, npx), pdt)
            self._mx = np.zeros((self.threads, npx), flat.dtype)
        assert self._mx is not None
        if chunks > 1:
            pats, mxs = self._pat[:chunks], self._mx[:chunks]
            kernels.reduce_parallel(flat, self._runs, self._com_runs, row_len, k, out, pats, mxs, acc0)
        else:
            kernels.reduce_serial(flat, self._runs, self._com_runs, row_len, k, out, self._pat[0], self._mx[0], acc0)
        self._pat_frames += n
        flat_out = self.out.reshape(self.ny * self.nx, -1)
        flat_out[f0 : f0 + n] = out[:, :-1]
        self.total.reshape(-1)[f0 : f0 + n] = out[:, -1]
        self.frames += n

    def _flush_patterns(self) -> None:
        if self._pat is None:
            return
        if self.want_patterns:
            self.sum_pattern += self._pat.sum(axis=0, dtype=np.uint64).reshape(self.det)
            np.maximum(self.max_pattern, self._mx.max(axis=0).reshape(self.det), out=self.max_pattern)
        self._pat = self._mx = None
        self._pat_frames = 0

    def add_frames(self, flat: np.ndarray, f0: int) -> None:
        """Accumulate frames ``flat`` (n, dy * dx) at flat scan positions [f0, f0 + n) (row-major
        over the scan): the compiled path only (``compiled_for(dtype)``), any n, not whole rows."""
        self._add_compiled(flat, f0)

    def compiled_for(self, dtype: np.dtype) -> bool:
        """Whether frames of ``dtype`` take the compiled kernel (and so ``add_frames``)."""
        dtype = np.dtype(dtype)
        return self._runs is not None and dtype.kind == "u" and dtype.itemsize <= 4

    def add(self, block: np.ndarray, row0: int) -> None:
        """Accumulate frames of rows [row0, row0 + block.shape[0]) (shape (rows, nx, dy, dx))."""
        rows = block.shape[0]
        flat = block.reshape(rows * self.nx, -1)
        if self.compiled_for(block.dtype):
            self._add_compiled(flat, row0 * self.nx)
            return
        integer = block.dtype.kind in "ui" and (block.dtype.kind == "u" or flat.min() >= 0)
        colsum = (
            np.zeros(flat.shape[1], np.float32) if (integer and self.want_patterns and self._torch is None) else None
        )
        if self._torch is not None:
            prod = self._products_torch(flat)
        else:
            prod = self._products_numpy(flat, colsum).astype(np.float64)
        self.out[row0 : row0 + rows] = prod[:, :-1].reshape(rows, self.nx, -1)
        sl = slice(row0, row0 + rows)
        if integer:
            totals = prod[:, -1]
            if self._torch is None and totals.max(initial=0) < EXACT:
                self.total[sl] = np.rint(totals).astype(np.int64).reshape(rows, self.nx)  # exact
            else:
                self.total[sl] = flat.sum(axis=1, dtype=np.int64).reshape(rows, self.nx)
            if self.want_patterns:
                if colsum is not None and colsum.max(initial=0) < EXACT:
                    self.sum_pattern += colsum.astype(np.uint64).reshape(self.det)  # exact
                else:
                    self.sum_pattern += flat.sum(axis=0, dtype=np.uint64).reshape(self.det)
        else:
            self.total[sl] = np.rint(flat.sum(axis=1, dtype=np.float64)).reshape(rows, self.nx)
            if self.want_patterns:
                self.sum_pattern += (
                    np.rint(np.clip(flat.sum(axis=0, dtype=np.float64), 0, None)).astype(np.uint64).reshape(self.det)
                )
        if self.want_patterns:
            np.maximum(self.max_pattern, flat.max(axis=0).reshape(self.det), out=self.max_pattern)
        self.frames += rows * self.nx

    def result(self) -> PassResult:
        self._flush_patterns()
        k = len(self.names)
        virtual = {n: self.out[..., i].copy() for i, n in enumerate(self.names)}
        norm = self.out[..., k]
        with np.errstate(invalid="ignore", divide="ignore"):
            cy = np.where(norm > 0, self.out[..., k + 1] / norm, np.nan)
            cx = np.where(norm > 0, self.out[..., k + 2] / norm, np.nan)
        return PassResult(
            virtual=virtual,
            com_raw_yx_px=np.stack([cy, cx]),
            total_counts=self.total,
            sum_pattern=self.sum_pattern,
            max_pattern=self.max_pattern,
            frames=self.frames,
        )
