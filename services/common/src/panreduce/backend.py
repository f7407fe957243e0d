"""One array backend for numpy (CPU) and torch (CPU or GPU), shared by the techniques
that run the same science on both (tomography, ptychography).

Science code is written once against :class:`Backend`: it uses the arithmetic
operators both libraries share (``+ - * /``, slicing, ``.real``, ``.conj()``) and calls
the backend for everything else (creation, FFTs, reductions, the gather/scatter and
interpolation kernels). torch stays optional: it is imported only when a torch backend
is asked for, never by importing this module.

One signature convention:

- ``get_backend(device, *, workers=None)``: ``device`` is ``"cpu"`` (numpy),
  ``"gpu"`` (torch on CUDA; FailedPrecondition without one), ``"torch-cpu"`` (torch on
  the CPU: the tests of the torch path), ``"auto"`` (torch on CUDA when torch sees one,
  else numpy); ``"numpy"`` and ``"cuda"`` are the same as ``"cpu"`` and ``"gpu"``.
  ``workers``: FFT threads of the numpy backend (the caller decides; nothing here
  reads the environment).
- dtypes are named by strings: ``"float32"`` (the default everywhere), ``"float64"``,
  ``"complex64"``, ``"complex128"``, ``"int64"``.
- arrays in, arrays out on the backend's device; methods that return Python ``float``
  say so (``total``, ``vdot``, ``norm2``, ``max``, ``scalar``) and accumulate in
  float64.
- FFTs: ``fft2``/``ifft2`` are unitary (``norm="ortho"``) over the last two axes;
  ``rfft``/``irfft`` are numpy's (unnormalised forward) along the last axis.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from panreduce import errors

Array = Any  # numpy.ndarray or torch.Tensor

__all__ = ["DEVICES", "Array", "Backend", "TorchBackend", "cuda_available", "get_backend", "torch_available"]

DEVICES = ("cpu", "gpu", "torch-cpu", "auto")
_ALIASES = {"numpy": "cpu", "cuda": "gpu"}
_DTYPES = ("float32", "float64", "complex64", "complex128", "int64")


def _torch() -> Any:
    return importlib.import_module("torch")


def torch_available() -> bool:
    """Whether torch can be imported (imports it)."""
    try:
        _torch()
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device."""
    if not torch_available():
        return False
    return bool(_torch().cuda.is_available())


def _dtype_name(dtype: str) -> str:
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (one of {', '.join(_DTYPES)})")
    return dtype


class Backend:
    """numpy on the CPU (FFTs by scipy's pocketfft with ``workers`` threads)."""

    name = "numpy"
    device = "cpu"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(int(workers or 1), 1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r})"

    # -- creation and conversion ------------------------------------------------------
    def asarray(self, x: Any, dtype: str = "float32") -> Array:
        """``x`` as a contiguous array of ``dtype`` on this backend (no copy when it
        already is one)."""
        return np.ascontiguousarray(x, dtype=_dtype_name(dtype))

    def index(self, idx: Any) -> Array:
        """An int64 index array on this backend (for fancy indexing)."""
        return np.asarray(idx, dtype=np.int64)

    def to_numpy(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return np.zeros(shape, dtype=_dtype_name(dtype))

    def ones(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return np.ones(shape, dtype=_dtype_name(dtype))

    def arange(self, n: int, dtype: str = "float32") -> Array:
        return np.arange(n, dtype=_dtype_name(dtype))

    def copy(self, x: Array) -> Array:
        return x.copy()

    def scalar(self, x: Array) -> float:
        return float(x)

    # -- FFTs ---------------------------------------------------------------------------
    def fft2(self, x: Array, *, overwrite: bool = False) -> Array:
        """Unitary 2-D FFT over the last two axes."""
        import scipy.fft as sfft

        return sfft.fft2(x, norm="ortho", workers=self.workers, overwrite_x=overwrite)

    def ifft2(self, x: Array, *, overwrite: bool = False) -> Array:
        import scipy.fft as sfft

        return sfft.ifft2(x, norm="ortho", workers=self.workers, overwrite_x=overwrite)

    def rfft(self, x: Array, n: int) -> Array:
        """Real FFT along the last axis, zero-padded (or cut) to ``n`` samples."""
        return np.fft.rfft(x, n=n, axis=-1)

    def irfft(self, x: Array, n: int, dtype: str = "float32") -> Array:
        return np.fft.irfft(x, n=n, axis=-1).astype(_dtype_name(dtype), copy=False)

    # -- element-wise -------------------------------------------------------------------
    def cos(self, x: Array) -> Array:
        return np.cos(x)

    def sin(self, x: Array) -> Array:
        return np.sin(x)

    def floor(self, x: Array) -> Array:
        return np.floor(x)

    def sqrt(self, x: Array) -> Array:
        return np.sqrt(x)

    def abs(self, x: Array) -> Array:
        """|x| as a real array."""
        return np.abs(x)

    def abs2(self, x: Array) -> Array:
        """|x|^2 as a real array."""
        out = np.abs(x)
        np.square(out, out=out)
        return out

    def angle(self, x: Array) -> Array:
        return np.angle(x)

    def exp_i(self, phase: Array) -> Array:
        """exp(i * phase) of a real array, complex64."""
        return np.exp(1j * phase).astype(np.complex64, copy=False)

    def conj_inplace(self, x: Array) -> Array:
        """conj(x), overwriting ``x`` (which must not be used afterwards)."""
        return np.conjugate(x, out=x)

    def maximum(self, x: Array, value: float) -> Array:
        return np.maximum(x, value)

    def where(self, cond: Array, a: Array, b: Array | float) -> Array:
        return np.where(cond, a, b)

    def roll(self, x: Array, shift: int, axis: int) -> Array:
        return np.roll(x, shift, axis=axis)

    def matmul(self, a: Array, b: Array) -> Array:
        return a @ b

    def pad_edge(self, x: Array, left: int, right: int) -> Array:
        """Pad the last axis by repeating its edge values."""
        width = [(0, 0)] * (x.ndim - 1) + [(left, right)]
        return np.pad(x, width, mode="edge")

    # -- reductions ---------------------------------------------------------------------
    def sum(self, x: Array, axis: int | tuple[int, ...] | None = None) -> Array:
        """Sum (an array on the backend; a 0-d one for ``axis=None``)."""
        return x.sum(axis=axis)

    def total(self, x: Array) -> float:
        """Sum of every element, accumulated in float64."""
        return float(np.sum(x, dtype=np.complex128 if np.iscomplexobj(x) else np.float64).real)

    def max(self, x: Array) -> float:
        return float(x.max())

    def vdot(self, a: Array, b: Array) -> float:
        """Re(sum(conj(a) * b)), accumulated in double precision."""
        kind = np.complex128 if np.iscomplexobj(a) or np.iscomplexobj(b) else np.float64
        return float(np.vdot(a.ravel().astype(kind, copy=False), b.ravel().astype(kind, copy=False)).real)

    def norm2(self, x: Array) -> float:
        """sum |x|^2."""
        return self.vdot(x, x)

    def real_dot_per_frame(self, a: Array, b: Array) -> Array:
        """Re(sum over all but the first axis of conj(a) * b): one value per frame."""
        n = a.shape[0]
        return np.einsum("ij,ij->i", a.reshape(n, -1).conj(), b.reshape(n, -1)).real

    # -- patches (ptychography) -------------------------------------------------------------
    def gather(self, obj: Array, iy: np.ndarray, ix: np.ndarray, h: int, w: int) -> Array:
        """Stack of patches ``obj[iy_j:iy_j+h, ix_j:ix_j+w]``: (N, h, w)."""
        out = np.empty((len(iy), h, w), obj.dtype)
        for j, (y, x) in enumerate(zip(np.asarray(iy).tolist(), np.asarray(ix).tolist(), strict=True)):
            out[j] = obj[y : y + h, x : x + w]
        return out

    def scatter(self, shape: tuple[int, int], stack: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        """Sum of the patches of ``stack`` (N, h, w) placed at (iy, ix) in zeros of ``shape``."""
        out = np.zeros(shape, stack.dtype)
        h, w = stack.shape[-2:]
        for j, (y, x) in enumerate(zip(np.asarray(iy).tolist(), np.asarray(ix).tolist(), strict=True)):
            out[y : y + h, x : x + w] += stack[j]
        return out

    def scatter_same(self, shape: tuple[int, int], patch: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        """Sum of one patch (h, w) placed at every (iy, ix)."""
        out = np.zeros(shape, patch.dtype)
        h, w = patch.shape[-2:]
        for y, x in zip(np.asarray(iy).tolist(), np.asarray(ix).tolist(), strict=True):
            out[y : y + h, x : x + w] += patch
        return out

    # -- linear interpolation and its adjoint (tomography) -----------------------------------
    def interp(self, rows: Array, t: Array) -> Array:
        """Linear interpolation of ``rows`` (B, A, n) at positions ``t`` (A, M) in units
        of samples, row ``a`` of every batch item at ``t[a]``; the values ramp to zero
        over the half interval outside [0, n-1] (guard samples at -1 and n, which the
        adjoint ``splat`` spreads onto). Returns (B, A, M) float32."""
        nb, na, n = rows.shape
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
        ``t`` (A, M) onto ``n`` samples per row. Returns (B, A, n) float32."""
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

    # -- device ---------------------------------------------------------------------------
    def synchronize(self) -> None:
        """Wait for queued work (a no-op on the CPU)."""

    def peak_memory(self) -> int | None:
        """Peak device memory in bytes (None on the CPU)."""
        return None


class TorchBackend(Backend):
    """The same operations on torch tensors (``device`` "cpu" or "cuda")."""

    name = "torch"

    def __init__(self, device: str = "cuda", workers: int | None = None) -> None:
        self.torch = _torch()
        self.device = device
        self.workers = 1
        self._index_cache: dict[tuple[Any, ...], Any] = {}

    def _dtype(self, dtype: str) -> Any:
        return getattr(self.torch, _dtype_name(dtype))

    def asarray(self, x: Any, dtype: str = "float32") -> Array:
        t = self.torch
        if isinstance(x, t.Tensor):
            return x.to(device=self.device, dtype=self._dtype(dtype))
        arr = np.ascontiguousarray(x, dtype=_dtype_name(dtype))
        return t.from_numpy(arr).to(self.device)

    def index(self, idx: Any) -> Array:
        return self.torch.as_tensor(np.asarray(idx, np.int64), device=self.device)

    def to_numpy(self, x: Array) -> np.ndarray:
        if isinstance(x, self.torch.Tensor):
            return np.asarray(x.detach().cpu().numpy())
        return np.asarray(x)

    def zeros(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return self.torch.zeros(shape, dtype=self._dtype(dtype), device=self.device)

    def ones(self, shape: tuple[int, ...], dtype: str = "float32") -> Array:
        return self.torch.ones(shape, dtype=self._dtype(dtype), device=self.device)

    def arange(self, n: int, dtype: str = "float32") -> Array:
        return self.torch.arange(n, dtype=self._dtype(dtype), device=self.device)

    def copy(self, x: Array) -> Array:
        return x.clone()

    def scalar(self, x: Array) -> float:
        return float(x.item()) if hasattr(x, "item") else float(x)

    def fft2(self, x: Array, *, overwrite: bool = False) -> Array:
        return self.torch.fft.fft2(x, norm="ortho")

    def ifft2(self, x: Array, *, overwrite: bool = False) -> Array:
        return self.torch.fft.ifft2(x, norm="ortho")

    def rfft(self, x: Array, n: int) -> Array:
        return self.torch.fft.rfft(x, n=n, dim=-1)

    def irfft(self, x: Array, n: int, dtype: str = "float32") -> Array:
        return self.torch.fft.irfft(x, n=n, dim=-1).to(self._dtype(dtype))

    def cos(self, x: Array) -> Array:
        return self.torch.cos(x)

    def sin(self, x: Array) -> Array:
        return self.torch.sin(x)

    def floor(self, x: Array) -> Array:
        return self.torch.floor(x)

    def sqrt(self, x: Array) -> Array:
        return self.torch.sqrt(x)

    def abs(self, x: Array) -> Array:
        return x.abs()

    def abs2(self, x: Array) -> Array:
        return self.torch.view_as_real(x).square().sum(-1) if x.is_complex() else x.square()

    def angle(self, x: Array) -> Array:
        return self.torch.angle(x)

    def exp_i(self, phase: Array) -> Array:
        return self.torch.polar(self.torch.ones_like(phase), phase)

    def conj_inplace(self, x: Array) -> Array:
        return x.conj()

    def maximum(self, x: Array, value: float) -> Array:
        return self.torch.clamp(x, min=value)

    def where(self, cond: Array, a: Array, b: Array | float) -> Array:
        t = self.torch
        if not isinstance(b, t.Tensor):
            b = t.as_tensor(b, dtype=a.dtype, device=a.device)
        return t.where(cond, a, b)

    def roll(self, x: Array, shift: int, axis: int) -> Array:
        return self.torch.roll(x, shift, dims=axis)

    def pad_edge(self, x: Array, left: int, right: int) -> Array:
        parts = [x[..., :1].expand(*x.shape[:-1], left), x, x[..., -1:].expand(*x.shape[:-1], right)]
        return self.torch.cat(parts, dim=-1)

    def sum(self, x: Array, axis: int | tuple[int, ...] | None = None) -> Array:
        return x.sum() if axis is None else x.sum(dim=axis)

    def total(self, x: Array) -> float:
        return float((x.to(self.torch.complex128) if x.is_complex() else x.double()).sum().real.item())

    def max(self, x: Array) -> float:
        return float(x.max().item())

    def vdot(self, a: Array, b: Array) -> float:
        t = self.torch
        if a.is_complex() or b.is_complex():
            a, b = a.to(t.complex128), b.to(t.complex128)
            return float(t.vdot(a.reshape(-1), b.reshape(-1)).real.item())
        return float((a.double() * b.double()).sum().item())

    def real_dot_per_frame(self, a: Array, b: Array) -> Array:
        n = a.shape[0]
        return (a.reshape(n, -1).conj() * b.reshape(n, -1)).sum(dim=1).real

    def _flat_index(self, shape: tuple[int, int], iy: np.ndarray, ix: np.ndarray, h: int, w: int) -> Any:
        iy, ix = np.asarray(iy, np.int64), np.asarray(ix, np.int64)
        key = (shape, h, w, iy.tobytes(), ix.tobytes())
        idx = self._index_cache.get(key)
        if idx is None:
            rows = iy[:, None, None] + np.arange(h)[None, :, None]
            cols = ix[:, None, None] + np.arange(w)[None, None, :]
            idx = self.torch.from_numpy((rows * shape[1] + cols).astype(np.int64)).to(self.device)
            if len(self._index_cache) > 8:
                self._index_cache.clear()
            self._index_cache[key] = idx
        return idx

    def gather(self, obj: Array, iy: np.ndarray, ix: np.ndarray, h: int, w: int) -> Array:
        return obj.reshape(-1)[self._flat_index((obj.shape[0], obj.shape[1]), iy, ix, h, w)]

    def scatter(self, shape: tuple[int, int], stack: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        h, w = stack.shape[-2:]
        idx = self._flat_index((int(shape[0]), int(shape[1])), iy, ix, h, w)
        out = self.torch.zeros(shape[0] * shape[1], dtype=stack.dtype, device=self.device)
        out.index_add_(0, idx.reshape(-1), stack.reshape(-1))
        return out.reshape(shape)

    def scatter_same(self, shape: tuple[int, int], patch: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        stack = patch.reshape(1, *patch.shape[-2:]).expand(len(iy), *patch.shape[-2:])
        return self.scatter(shape, stack.contiguous(), iy, ix)

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

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def peak_memory(self) -> int | None:
        if self.device.startswith("cuda"):
            return int(self.torch.cuda.max_memory_allocated())
        return None


def get_backend(device: str = "cpu", *, workers: int | None = None) -> Backend:
    """The backend for ``device`` (see the module's docstring): ``"cpu"``, ``"gpu"``,
    ``"torch-cpu"`` or ``"auto"``. A GPU or torch that is asked for but absent is
    FailedPrecondition (the request asks for what this server lacks); an unknown name is
    ValueError."""
    device = _ALIASES.get(device, device)
    if device == "cpu":
        return Backend(workers)
    if device == "torch-cpu":
        if not torch_available():
            raise errors.FailedPrecondition(
                "device 'torch-cpu' needs torch, which is not installed (install the 'gpu' extra)"
            )
        return TorchBackend("cpu")
    if device == "gpu":
        if not cuda_available():
            raise errors.FailedPrecondition(
                "device 'gpu' needs torch and a CUDA GPU, and this server has "
                + ("no CUDA GPU visible to torch" if torch_available() else "no torch installed")
            )
        return TorchBackend("cuda")
    if device == "auto":
        return TorchBackend("cuda") if cuda_available() else Backend(workers)
    raise ValueError(f"unknown device {device!r} (one of {', '.join(DEVICES)})")
