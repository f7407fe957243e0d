"""One array backend for numpy (CPU) and torch (CPU or GPU).

The reconstruction functions in :mod:`panreduce_tomography.recon` are written once
against this small interface, so the same code runs on numpy arrays on the CPU and
on torch tensors on a GPU (or torch's CPU device in tests). Only the operations
those functions need are here: creation/conversion, FFTs along the last axis,
elementwise maths and the two gather/scatter kernels of linear interpolation
(:meth:`Backend.interp` and its exact adjoint :meth:`Backend.splat`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # numpy.ndarray or torch.Tensor


class Backend:
    """Array operations on one library and device."""

    name = "numpy"
    device = "cpu"

    # -- creation and conversion ----------------------------------------------------
    def asarray(self, x: Any, dtype: str = "float32") -> Array:
        return np.asarray(x, dtype=dtype)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return np.zeros(shape, dtype=dtype)

    def ones(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return np.ones(shape, dtype=dtype)

    def arange(self, n: int, dtype: str = "float32") -> Array:
        return np.arange(n, dtype=dtype)

    # -- maths ----------------------------------------------------------------------
    def cos(self, x: Array) -> Array:
        return np.cos(x)

    def sin(self, x: Array) -> Array:
        return np.sin(x)

    def floor(self, x: Array) -> Array:
        return np.floor(x)

    def sqrt(self, x: Array) -> Array:
        return np.sqrt(x)

    def maximum(self, x: Array, value: float) -> Array:
        return np.maximum(x, value)

    def where(self, cond: Array, a: Array, b: Array | float) -> Array:
        return np.where(cond, a, b)

    def sum(self, x: Array) -> float:
        return float(np.sum(x, dtype=np.float64))

    def vdot(self, a: Array, b: Array) -> float:
        return float(np.vdot(a.ravel().astype(np.float64), b.ravel().astype(np.float64)))

    def rfft(self, x: Array, n: int) -> Array:
        return np.fft.rfft(x, n=n, axis=-1)

    def irfft(self, x: Array, n: int) -> Array:
        return np.fft.irfft(x, n=n, axis=-1).astype(np.float32, copy=False)

    def pad_edge(self, x: Array, left: int, right: int) -> Array:
        """Pad the last axis by repeating the edge values."""
        width = [(0, 0)] * (x.ndim - 1) + [(left, right)]
        return np.pad(x, width, mode="edge")

    # -- interpolation kernels ------------------------------------------------------
    def interp(self, rows: Array, t: Array) -> Array:
        """Linear interpolation of ``rows`` (B, A, n) at positions ``t`` (A, M), in units
        of samples, row ``a`` of every batch item at ``t[a]``; zero outside [0, n-1].
        Returns (B, A, M)."""
        nb, na, n = rows.shape
        # zero samples at -1 and n: values ramp to zero over the last half interval, as
        # the adjoint (splat) spreads onto the guard cells
        grid = np.arange(-1, n + 1, dtype=np.float64)
        padded = np.zeros((n + 2,), dtype=np.float64)
        out = np.empty((nb, na, t.shape[-1]), dtype=np.float32)
        for a in range(na):
            ta = np.asarray(t[a], dtype=np.float64)
            for b in range(nb):
                padded[1:-1] = rows[b, a]
                out[b, a] = np.interp(ta, grid, padded, left=0.0, right=0.0)
        return out

    def splat(self, values: Array, t: Array, n: int) -> Array:
        """The exact adjoint of :meth:`interp`: spread ``values`` (B, A, M) at positions
        ``t`` (A, M) onto ``n`` samples per row. Returns (B, A, n)."""
        nb, na, _ = values.shape
        i0 = np.floor(t)
        w = (t - i0).astype(np.float32, copy=False)
        i0 = i0.astype(np.int64)
        base = (np.arange(na, dtype=np.int64) * (n + 2))[:, None]
        out = np.zeros((nb, na * (n + 2)), dtype=np.float64)
        for idx, weight in ((i0, 1 - w), (i0 + 1, w)):
            j = (base + np.clip(idx + 1, 0, n + 1)).ravel()
            for b in range(nb):
                out[b] += np.bincount(j, weights=(values[b] * weight).ravel(), minlength=na * (n + 2))
        return out.reshape(nb, na, n + 2)[:, :, 1 : n + 1].astype(np.float32)


class TorchBackend(Backend):
    """The same operations on torch tensors (``device`` "cpu" or "cuda")."""

    name = "torch"

    def __init__(self, device: str | None = None) -> None:
        import torch

        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def _dtype(self, dtype: str):  # noqa: ANN202
        return {"float32": self.torch.float32, "float64": self.torch.float64,
                "int64": self.torch.int64, "complex64": self.torch.complex64}[dtype]

    def asarray(self, x: Any, dtype: str = "float32") -> Array:
        if isinstance(x, self.torch.Tensor):
            return x.to(device=self.device, dtype=self._dtype(dtype))
        return self.torch.as_tensor(np.asarray(x), dtype=self._dtype(dtype), device=self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        return x.detach().cpu().numpy()

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def ones(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return self.torch.ones(shape, dtype=self._dtype(dtype), device=self.device)

    def arange(self, n: int, dtype: str = "float32") -> Array:
        return self.torch.arange(n, dtype=self._dtype(dtype), device=self.device)

    def cos(self, x: Array) -> Array:
        return self.torch.cos(x)

    def sin(self, x: Array) -> Array:
        return self.torch.sin(x)

    def floor(self, x: Array) -> Array:
        return self.torch.floor(x)

    def sqrt(self, x: Array) -> Array:
        return self.torch.sqrt(x)

    def maximum(self, x: Array, value: float) -> Array:
        return self.torch.clamp(x, min=value)

    def where(self, cond: Array, a: Array, b: Array | float) -> Array:
        if not isinstance(b, self.torch.Tensor):
            b = self.torch.as_tensor(b, dtype=a.dtype, device=a.device)
        return self.torch.where(cond, a, b)

    def sum(self, x: Array) -> float:
        return float(x.double().sum())

    def vdot(self, a: Array, b: Array) -> float:
        return float((a.double() * b.double()).sum())

    def rfft(self, x: Array, n: int) -> Array:
        return self.torch.fft.rfft(x, n=n, dim=-1)

    def irfft(self, x: Array, n: int) -> Array:
        return self.torch.fft.irfft(x, n=n, dim=-1).to(self.torch.float32)

    def pad_edge(self, x: Array, left: int, right: int) -> Array:
        parts = [x[..., :1].expand(*x.shape[:-1], left), x, x[..., -1:].expand(*x.shape[:-1], right)]
        return self.torch.cat(parts, dim=-1)

    def interp(self, rows: Array, t: Array) -> Array:
        torch = self.torch
        nb, na, n = rows.shape
        i0f = torch.floor(t)
        w = t - i0f
        i0 = i0f.to(torch.int64)
        base = (torch.arange(na, device=rows.device) * n)[:, None]
        ok0 = ((i0 >= 0) & (i0 < n)).to(rows.dtype)
        ok1 = ((i0 >= -1) & (i0 < n - 1)).to(rows.dtype)
        flat = rows.reshape(nb, na * n)
        a = flat[:, base + i0.clamp(0, n - 1)]
        b = flat[:, base + (i0 + 1).clamp(0, n - 1)]
        return a * ((1 - w) * ok0) + b * (w * ok1)

    def splat(self, values: Array, t: Array, n: int) -> Array:
        torch = self.torch
        nb, na, _ = values.shape
        i0f = torch.floor(t)
        w = t - i0f
        i0 = i0f.to(torch.int64)
        base = (torch.arange(na, device=values.device) * (n + 2))[:, None]
        out = torch.zeros((nb, na * (n + 2)), dtype=values.dtype, device=values.device)
        # indices shifted by one so that -1 and n land in guard cells that are dropped
        for idx, weight in ((i0, 1 - w), (i0 + 1, w)):
            j = (base + (idx + 1).clamp(0, n + 1)).reshape(-1)
            out.index_add_(1, j, (values * weight).reshape(nb, -1))
        return out.reshape(nb, na, n + 2)[:, :, 1 : n + 1]


def get_backend(name: str = "numpy", device: str | None = None) -> Backend:
    """``"numpy"``, ``"torch"`` (GPU when available, else CPU) or ``"auto"`` (torch on a
    GPU when torch and CUDA are present, numpy otherwise)."""
    if name == "numpy":
        return Backend()
    if name in ("torch", "auto"):
        try:
            import torch
        except ImportError:
            if name == "auto":
                return Backend()
            raise
        if name == "auto" and not torch.cuda.is_available():
            return Backend()
        return TorchBackend(device)
    raise ValueError(f"unknown backend {name!r}")


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
