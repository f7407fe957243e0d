"""One streaming pass over the frames: virtual images, centre of mass, sum/max patterns.

Every block of scan rows is reduced by one matrix product of the frames (n, pixels) with a
weight matrix (pixels, k): the virtual detector masks, then the CoM mask and its y- and
x-weighted copies. Exact integer sums (total counts per position, the summed pattern) and
the max pattern are accumulated alongside. Memory is one block plus the outputs.
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


def weight_matrix(masks: list[np.ndarray], com_mask: np.ndarray) -> np.ndarray:
    """(pixels, len(masks) + 3) float32: masks, then com_mask, com_mask*y, com_mask*x."""
    dy, dx = com_mask.shape
    yy, xx = np.mgrid[0:dy, 0:dx].astype(np.float32)
    cols = [m.ravel() for m in masks] + [com_mask.ravel(), (com_mask * yy).ravel(), (com_mask * xx).ravel()]
    return np.ascontiguousarray(np.stack(cols, axis=1), dtype=np.float32)


class Accumulator:
    """Feed blocks of rows with ``add(block, row0)``; read ``result()`` at the end.

    ``backend``: "numpy" (default) or "torch" (``device`` e.g. "cuda" or "cpu"); the
    torch path computes the same products on the device, the exact sums stay in numpy.
    """

    def __init__(self, scan_shape: tuple[int, int], detector_shape: tuple[int, int],
                 masks: dict[str, np.ndarray], com_mask: np.ndarray, *, backend: str = "numpy",
                 device: str = "cpu", want_patterns: bool = True) -> None:
        self.names = list(masks)
        self.ny, self.nx = scan_shape
        self.det = detector_shape
        self.weights = weight_matrix([masks[n] for n in self.names], com_mask)
        self.out = np.zeros((self.ny, self.nx, self.weights.shape[1]), np.float64)
        self.total = np.zeros((self.ny, self.nx), np.int64)
        self.sum_pattern = np.zeros(detector_shape, np.uint64)
        self.max_pattern = np.zeros(detector_shape, np.float64)
        self.want_patterns = want_patterns
        self.frames = 0
        self.backend = backend
        self._torch = None
        if backend == "torch":
            import torch

            self._torch = torch
            self._device = torch.device(device)
            self._w = torch.from_numpy(self.weights).to(self._device)

    def _products(self, flat: np.ndarray) -> np.ndarray:
        if self._torch is not None:
            torch = self._torch
            src = flat if flat.dtype != np.uint16 else flat.astype(np.int32)
            t = torch.from_numpy(src).to(self._device, non_blocking=True).to(torch.float32)
            return (t @ self._w).double().cpu().numpy()
        return (flat.astype(np.float32) @ self.weights).astype(np.float64)

    def add(self, block: np.ndarray, row0: int) -> None:
        """Accumulate frames of rows [row0, row0 + block.shape[0]) (shape (rows, nx, dy, dx))."""
        rows = block.shape[0]
        flat = block.reshape(rows * self.nx, -1)
        self.out[row0:row0 + rows] = self._products(flat).reshape(rows, self.nx, -1)
        if block.dtype.kind in "ui":
            self.total[row0:row0 + rows] = flat.sum(axis=1, dtype=np.int64).reshape(rows, self.nx)
            if self.want_patterns:
                self.sum_pattern += flat.sum(axis=0, dtype=np.uint64).reshape(self.det)
        else:
            self.total[row0:row0 + rows] = np.rint(flat.sum(axis=1, dtype=np.float64)).reshape(rows, self.nx)
            if self.want_patterns:
                self.sum_pattern += np.rint(np.clip(flat.sum(axis=0, dtype=np.float64), 0, None)).astype(
                    np.uint64).reshape(self.det)
        if self.want_patterns:
            np.maximum(self.max_pattern, flat.max(axis=0).reshape(self.det), out=self.max_pattern)
        self.frames += rows * self.nx

    def result(self) -> PassResult:
        k = len(self.names)
        virtual = {n: self.out[..., i].copy() for i, n in enumerate(self.names)}
        norm = self.out[..., k]
        with np.errstate(invalid="ignore", divide="ignore"):
            cy = np.where(norm > 0, self.out[..., k + 1] / norm, np.nan)
            cx = np.where(norm > 0, self.out[..., k + 2] / norm, np.nan)
        return PassResult(virtual=virtual, com_raw_yx_px=np.stack([cy, cx]), total_counts=self.total,
                          sum_pattern=self.sum_pattern, max_pattern=self.max_pattern, frames=self.frames)
