"""Array backends: the engines run the same code on numpy (CPU) and torch (CPU or GPU).

An engine never calls numpy or torch directly for anything but arithmetic operators
(``+ - * /``, slicing, ``.real``, ``.conj()``) that both libraries share; everything else
(FFTs, reductions, gathering object patches, scattering them back) goes through a
:class:`Backend`. Arrays are single precision (``complex64``/``float32``), as in PtyPy
and pty-chi.

FFTs are unitary (``norm="ortho"``) over the last two axes, with the zero frequency at
index ``[0, 0]`` (diffraction patterns are stored ``ifftshift``-ed inside the engines).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.fft as sfft

Array = Any  # numpy.ndarray or torch.Tensor


def torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    if not torch_available():
        return False
    import torch

    return bool(torch.cuda.is_available())


class Backend:
    """Numpy on the CPU (scipy's pocketfft, ``workers`` threads)."""

    name = "numpy"
    device = "cpu"

    def __init__(self, workers: int | None = None) -> None:
        # the caller (the technique, from its ``threads`` parameter) chooses: a science
        # module reads no environment variable
        self.workers = max(int(workers or 1), 1)

    # -- conversions ---------------------------------------------------------------
    def asarray(self, a: Any, *, complex_: bool = False) -> Array:
        return np.ascontiguousarray(a, dtype=np.complex64 if complex_ else np.float32)

    def to_numpy(self, a: Array) -> np.ndarray:
        return np.asarray(a)

    def asarray_index(self, idx: np.ndarray) -> Any:
        return np.asarray(idx)

    def zeros(self, shape: tuple[int, ...], *, complex_: bool = False) -> Array:
        return np.zeros(shape, np.complex64 if complex_ else np.float32)

    def ones(self, shape: tuple[int, ...], *, complex_: bool = False) -> Array:
        return np.ones(shape, np.complex64 if complex_ else np.float32)

    def copy(self, a: Array) -> Array:
        return a.copy()

    def scalar(self, a: Array) -> float:
        return float(a)

    # -- FFTs (unitary, last two axes, zero frequency at [0, 0]) ----------------------
    def fft2(self, a: Array, *, overwrite: bool = False) -> Array:
        return sfft.fft2(a, norm="ortho", workers=self.workers, overwrite_x=overwrite)

    def ifft2(self, a: Array, *, overwrite: bool = False) -> Array:
        return sfft.ifft2(a, norm="ortho", workers=self.workers, overwrite_x=overwrite)

    # -- element-wise and reductions ----------------------------------------------------
    def abs2(self, a: Array) -> Array:
        """|a|^2 as a real array."""
        out = np.abs(a)
        np.square(out, out=out)
        return out

    def sqrt(self, a: Array) -> Array:
        return np.sqrt(a)

    def abs(self, a: Array) -> Array:
        """|a| as a real array."""
        return np.abs(a)

    def conj_inplace(self, a: Array) -> Array:
        """conj(a), overwriting ``a`` (which must not be used afterwards)."""
        return np.conjugate(a, out=a)

    def exp_i(self, phase: Array) -> Array:
        """exp(i * phase) for a real array."""
        return np.exp(1j * phase).astype(np.complex64, copy=False)

    def angle(self, a: Array) -> Array:
        return np.angle(a)

    def sum(self, a: Array, axis: int | tuple[int, ...] | None = None) -> Array:
        return a.sum(axis=axis)

    def maximum(self, a: Array, value: float) -> Array:
        return np.maximum(a, value)

    def where(self, cond: Array, a: Array, b: Array | float) -> Array:
        return np.where(cond, a, b)

    def max(self, a: Array) -> float:
        return float(a.max())

    def vdot_real(self, a: Array, b: Array) -> float:
        """Re(sum(conj(a) * b))."""
        return float(np.vdot(a.ravel(), b.ravel()).real)

    def norm2(self, a: Array) -> float:
        """sum |a|^2."""
        return float(np.vdot(a.ravel(), a.ravel()).real)

    def real_dot_per_frame(self, a: Array, b: Array) -> Array:
        """Re(sum over all but the first axis of conj(a) * b), one value per frame."""
        n = a.shape[0]
        return np.einsum("ij,ij->i", a.reshape(n, -1).conj(), b.reshape(n, -1)).real

    def matmul(self, a: Array, b: Array) -> Array:
        return a @ b

    def roll(self, a: Array, shift: int, axis: int) -> Array:
        return np.roll(a, shift, axis=axis)

    def to_backend_small(self, a: np.ndarray, *, complex_: bool = False) -> Array:
        return self.asarray(a, complex_=complex_)

    # -- patches of the object ---------------------------------------------------------
    def gather(self, obj: Array, iy: np.ndarray, ix: np.ndarray, h: int, w: int) -> Array:
        """Stack of object patches ``obj[iy_j:iy_j+h, ix_j:ix_j+w]`` -> (N, h, w)."""
        out = np.empty((len(iy), h, w), obj.dtype)
        for j, (y, x) in enumerate(zip(iy.tolist(), ix.tolist(), strict=True)):
            out[j] = obj[y:y + h, x:x + w]
        return out

    def scatter(self, shape: tuple[int, int], stack: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        """Sum of the patches of ``stack`` (N, h, w) placed at (iy, ix) in a zero array."""
        out = np.zeros(shape, stack.dtype)
        h, w = stack.shape[-2:]
        for j, (y, x) in enumerate(zip(iy.tolist(), ix.tolist(), strict=True)):
            out[y:y + h, x:x + w] += stack[j]
        return out

    def scatter_same(self, shape: tuple[int, int], patch: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        """Sum of one patch (h, w) placed at every (iy, ix)."""
        out = np.zeros(shape, patch.dtype)
        h, w = patch.shape[-2:]
        for y, x in zip(iy.tolist(), ix.tolist(), strict=True):
            out[y:y + h, x:x + w] += patch
        return out

    def synchronize(self) -> None:
        pass

    def peak_memory(self) -> int | None:
        return None


class TorchBackend(Backend):
    """torch on a CUDA GPU (or on the CPU, for tests where no GPU is present)."""

    name = "torch"

    def __init__(self, device: str = "cuda") -> None:
        import torch

        self.torch = torch
        self.device = device
        self.workers = 1
        self._index_cache: dict[tuple, Any] = {}

    def asarray(self, a: Any, *, complex_: bool = False) -> Array:
        t = self.torch
        dtype = t.complex64 if complex_ else t.float32
        if isinstance(a, t.Tensor):
            return a.to(device=self.device, dtype=dtype)
        arr = np.ascontiguousarray(a, dtype=np.complex64 if complex_ else np.float32)
        return t.from_numpy(arr).to(self.device)

    def asarray_index(self, idx: np.ndarray) -> Any:
        return self.torch.as_tensor(np.asarray(idx, np.int64), device=self.device)

    def to_numpy(self, a: Array) -> np.ndarray:
        if isinstance(a, self.torch.Tensor):
            return a.detach().cpu().numpy()
        return np.asarray(a)

    def zeros(self, shape: tuple[int, ...], *, complex_: bool = False) -> Array:
        t = self.torch
        return t.zeros(shape, dtype=t.complex64 if complex_ else t.float32, device=self.device)

    def ones(self, shape: tuple[int, ...], *, complex_: bool = False) -> Array:
        t = self.torch
        return t.ones(shape, dtype=t.complex64 if complex_ else t.float32, device=self.device)

    def copy(self, a: Array) -> Array:
        return a.clone()

    def scalar(self, a: Array) -> float:
        return float(a.item()) if hasattr(a, "item") else float(a)

    def fft2(self, a: Array, *, overwrite: bool = False) -> Array:
        return self.torch.fft.fft2(a, norm="ortho")

    def ifft2(self, a: Array, *, overwrite: bool = False) -> Array:
        return self.torch.fft.ifft2(a, norm="ortho")

    def abs2(self, a: Array) -> Array:
        return self.torch.view_as_real(a).square().sum(-1) if a.is_complex() else a.square()

    def sqrt(self, a: Array) -> Array:
        return self.torch.sqrt(a)

    def abs(self, a: Array) -> Array:
        return a.abs()

    def conj_inplace(self, a: Array) -> Array:
        return a.conj()

    def exp_i(self, phase: Array) -> Array:
        return self.torch.polar(self.torch.ones_like(phase), phase)

    def angle(self, a: Array) -> Array:
        return self.torch.angle(a)

    def sum(self, a: Array, axis: int | tuple[int, ...] | None = None) -> Array:
        return a.sum() if axis is None else a.sum(dim=axis)

    def maximum(self, a: Array, value: float) -> Array:
        return self.torch.clamp(a, min=value)

    def where(self, cond: Array, a: Array, b: Array | float) -> Array:
        t = self.torch
        if not isinstance(b, t.Tensor):
            b = t.tensor(b, dtype=a.dtype, device=a.device)
        return t.where(cond, a, b)

    def max(self, a: Array) -> float:
        return float(a.max().item())

    def vdot_real(self, a: Array, b: Array) -> float:
        return float(self.torch.vdot(a.reshape(-1), b.reshape(-1)).real.item())

    def norm2(self, a: Array) -> float:
        return float(self.abs2(a).sum().item())

    def real_dot_per_frame(self, a: Array, b: Array) -> Array:
        n = a.shape[0]
        return (a.reshape(n, -1).conj() * b.reshape(n, -1)).sum(dim=1).real

    def roll(self, a: Array, shift: int, axis: int) -> Array:
        return self.torch.roll(a, shift, dims=axis)

    def _flat_index(self, shape: tuple[int, int], iy: np.ndarray, ix: np.ndarray, h: int, w: int) -> Any:
        key = (shape, h, w, iy.tobytes(), ix.tobytes())
        idx = self._index_cache.get(key)
        if idx is None:
            rows = iy[:, None, None] + np.arange(h)[None, :, None]
            cols = ix[:, None, None] + np.arange(w)[None, None, :]
            flat = (rows * shape[1] + cols).astype(np.int64)
            idx = self.torch.from_numpy(flat).to(self.device)
            if len(self._index_cache) > 8:
                self._index_cache.clear()
            self._index_cache[key] = idx
        return idx

    def gather(self, obj: Array, iy: np.ndarray, ix: np.ndarray, h: int, w: int) -> Array:
        idx = self._flat_index(tuple(obj.shape), iy, ix, h, w)
        return obj.reshape(-1)[idx]

    def scatter(self, shape: tuple[int, int], stack: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        h, w = stack.shape[-2:]
        idx = self._flat_index(tuple(shape), iy, ix, h, w)
        out = self.torch.zeros(shape[0] * shape[1], dtype=stack.dtype, device=self.device)
        out.index_add_(0, idx.reshape(-1), stack.reshape(-1))
        return out.reshape(shape)

    def scatter_same(self, shape: tuple[int, int], patch: Array, iy: np.ndarray, ix: np.ndarray) -> Array:
        stack = patch.reshape(1, *patch.shape[-2:]).expand(len(iy), *patch.shape[-2:])
        return self.scatter(shape, stack.contiguous(), iy, ix)

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def peak_memory(self) -> int | None:
        if self.device.startswith("cuda"):
            return int(self.torch.cuda.max_memory_allocated())
        return None


def get_backend(device: str = "auto", *, workers: int | None = None) -> Backend:
    """``cpu``: numpy; ``gpu``: torch on CUDA (raises RuntimeError without one);
    ``torch-cpu``: torch on the CPU (tests of the torch path); ``auto``: a GPU when
    torch sees one, else numpy."""
    if device == "cpu":
        return Backend(workers)
    if device == "torch-cpu":
        if not torch_available():
            raise RuntimeError("torch is not installed (install the 'gpu' extra)")
        return TorchBackend("cpu")
    if device == "gpu":
        if not cuda_available():
            raise RuntimeError("no CUDA GPU is visible to torch (or torch is not installed)")
        return TorchBackend("cuda")
    if device == "auto":
        return TorchBackend("cuda") if cuda_available() else Backend(workers)
    raise ValueError(f"unknown device {device!r}")
