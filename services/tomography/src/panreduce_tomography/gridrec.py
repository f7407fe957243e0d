"""Gridrec-class Fourier reconstruction: the FBP integral evaluated in Fourier space,
by a type-1 NUFFT (finufft, numpy) or by classic gridding (torch, CPU or GPU).

References:
- B. A. Dowd et al., "Developments in synchrotron x-ray computed microtomography at
  the NSLS", Proc. SPIE 3772 (1999): gridrec (Fourier gridding reconstruction).
- A. H. Barnett, J. Magland, L. af Klinteberg, "A parallel nonuniform fast Fourier
  transform library based on an exponential of semicircle kernel", SIAM J. Sci.
  Comput. 41 (2019) C479 (finufft, and the kernel of the torch gridding).
- J. D. O'Sullivan, IEEE TMI 4 (1985) 200; P. J. Beatty et al., IEEE TMI 24 (2005) 799
  (gridding with oversampling and de-apodisation).

The geometry is :mod:`panreduce_tomography.recon`'s.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy
from panreduce.backend import Array, Backend, cuda_available, get_backend
from panreduce_tomography.recon import _as_batch, _npad, angle_weights, circle_mask, ramp_filter

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    import scipy.fft
else:
    scipy = lazy.module("scipy", "fft")


# -- gridrec-class Fourier reconstruction (NUFFT) -----------------------------------------
class GridrecPlan:
    """A reusable NUFFT plan for one geometry (angles, centre, detector and image size).

    Reconstruction is the FBP integral evaluated in Fourier space: each padded
    projection's DFT, times the ramp filter and the phase that puts the rotation axis
    at ``center``, gives samples of the slice's 2-D Fourier transform on polar lines
    (Fourier slice theorem); one type-1 (non-uniform to uniform) NUFFT sums them onto
    the image grid. Sub-pixel centres are exact (a phase, no interpolation) and the
    interpolation error is the NUFFT's ``eps`` instead of linear interpolation's.
    """

    def __init__(
        self,
        angles: np.ndarray,
        center: float,
        n_det: int,
        *,
        n: int | None = None,
        filter: str = "ramp",
        cutoff: float = 1.0,
        pad: bool = True,
        eps: float = 1e-3,
        nthreads: int | None = None,
        upsampfac: float | None = None,
    ) -> None:
        import finufft

        self.finufft = finufft
        self.angles = np.asarray(angles, dtype=np.float64)
        self.n_det = n_det
        self.n = n or n_det
        self.pad = pad
        self.npad = _npad(n_det)
        self.left = (self.npad - n_det) // 2
        self.keep, om, self.coef = _gridrec_coefficients(self.angles, center, self.npad, self.left, filter, cutoff)
        th = self.angles[:, None]
        self.px = (2 * np.pi * om[None, :] * np.sin(th)).astype(np.float32).ravel()
        self.py = (2 * np.pi * om[None, :] * np.cos(th)).astype(np.float32).ravel()
        self.eps = eps
        self.opts: dict = {}
        if nthreads:
            self.opts["nthreads"] = nthreads
        if upsampfac:
            self.opts["upsampfac"] = upsampfac
        self._plans: dict[int, object] = {}

    def _plan(self, nb: int):
        if nb not in self._plans:
            p = self.finufft.Plan(
                1, (self.n, self.n), n_trans=nb, eps=self.eps, isign=1, dtype="complex64", **self.opts
            )
            p.setpts(self.px, self.py)
            self._plans[nb] = p
        return self._plans[nb]

    def __call__(self, sino: np.ndarray) -> np.ndarray:
        batch, single = _as_batch(sino)
        nb, na, n_det = batch.shape
        if na != len(self.angles) or n_det != self.n_det:
            raise ValueError(f"sinogram {batch.shape[1:]} does not match the plan ({len(self.angles)}, {self.n_det})")
        x = np.asarray(batch, dtype=np.float32)
        right = self.npad - n_det - self.left
        if self.pad:
            x = np.pad(x, [(0, 0), (0, 0), (self.left, right)], mode="edge")
        else:
            x = np.pad(x, [(0, 0), (0, 0), (self.left, right)])
        spec = scipy.fft.rfft(x, axis=-1, workers=-1)[..., self.keep]
        strengths = (spec * self.coef[None]).reshape(nb, -1).astype(np.complex64)
        out = self._plan(nb).execute(strengths if nb > 1 else strengths[0])
        res = np.real(out).astype(np.float32).reshape(nb, self.n, self.n)
        return res[0] if single else res


# -- gridrec on torch: Kaiser-Bessel-class gridding + FFT (CPU or GPU) ----------------------
def _gridrec_coefficients(
    angles: np.ndarray, center: float, npad: int, left: int, filter: str, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The kept non-negative DFT bins of a padded projection, their frequencies (cycles
    per pixel) and the per-(angle, bin) coefficients: filter x phase of the axis x
    Hermitian factor / npad x angular weight (shared by both gridrec implementations)."""
    omega = np.arange(npad // 2 + 1) / npad
    h = ramp_filter(npad, filter, cutoff)
    keep = h != 0
    keep[0] = True
    keep = np.nonzero(keep)[0]
    om = omega[keep]
    sym = np.where((keep == 0) | (keep == npad // 2), 1.0, 2.0)
    phase = np.exp(2j * np.pi * om * (left + center))
    wa = angle_weights(angles)
    coef = ((phase * h[keep] * sym / npad)[None, :] * wa[:, None]).astype(np.complex64)
    return keep, om, coef


def _es_kernel(z: np.ndarray, beta: float) -> np.ndarray:
    """The "exponential of semicircle" kernel exp(beta (sqrt(1 - z^2) - 1)) on |z| <= 1
    (Barnett et al. 2019; a close, cheaper relative of the Kaiser-Bessel kernel)."""
    z = np.asarray(z, dtype=np.float64)
    return np.where(np.abs(z) <= 1, np.exp(beta * (np.sqrt(np.clip(1 - z * z, 0, None)) - 1)), 0.0)


_TORCH_GRID_CACHE: dict[tuple, tuple] = {}
_TORCH_GRID_CACHE_SIZE = 4


class TorchGridrecPlan:
    """Gridrec on torch (CPU or CUDA): the same Fourier-domain integral as
    :class:`GridrecPlan`, with the type-1 NUFFT done by classic gridding.

    Each padded projection is Fourier transformed (``torch.fft.rfft``), multiplied by
    the filter, the axis phase and the angular weight; the polar samples are spread
    onto a 2x oversampled Cartesian frequency grid with a ``width``-point separable
    exponential-of-semicircle kernel (Kaiser-Bessel class) by one sparse matrix product
    (the interpolation matrix depends only on the angles, the detector and image sizes
    and the filter cut-off, not on the centre, and is cached per geometry and device);
    a 2-D inverse FFT, the division by the kernel's Fourier transform
    (de-apodisation) and the crop to ``n`` x ``n`` give the slice. ``width`` 4 is the
    accuracy of finufft at eps 1e-3 (10^-(width-1)); 6 gives ~1e-5.
    """

    def __init__(
        self,
        angles: np.ndarray,
        center: float,
        n_det: int,
        *,
        n: int | None = None,
        filter: str = "ramp",
        cutoff: float = 1.0,
        pad: bool = True,
        width: int = 4,
        backend: Backend | None = None,
        max_batch_elems: int = 1 << 28,
    ) -> None:
        bk = (
            backend
            if backend is not None and backend.name == "torch"
            else get_backend("gpu" if cuda_available() else "torch-cpu")
        )
        self.bk = bk
        torch = bk.torch
        self.torch = torch
        self.angles = np.asarray(angles, dtype=np.float64)
        self.n_det = n_det
        self.n = n or n_det
        self.pad = pad
        self.npad = _npad(n_det)
        self.left = (self.npad - n_det) // 2
        self.width = int(width)
        self.m = 2 * self.n  # oversampled grid (sigma = 2)
        keep, om, coef = _gridrec_coefficients(self.angles, center, self.npad, self.left, filter, cutoff)
        self.keep = torch.as_tensor(keep, device=bk.device)
        self.coef = torch.as_tensor(coef, device=bk.device)
        self.matrix, deapod = self._interpolation(om)
        self.deapod = deapod  # (n,) real, on the device: 1 / Phi(k h)
        self.max_batch = max(1, max_batch_elems // (self.m * self.m * 2))

    def _interpolation(self, om: np.ndarray):
        torch, bk = self.torch, self.bk
        key = (
            hashlib.sha1(self.angles.tobytes()).hexdigest(),
            self.n,
            self.npad,
            om.size,
            float(om[-1]),
            self.width,
            str(bk.device),
        )
        hit = _TORCH_GRID_CACHE.get(key)
        if hit is not None:
            return hit
        m, w = self.m, self.width
        beta = 2.30 * w
        # polar sample positions in fine-grid units: 2 pi omega (sin, cos) / (2 pi / m)
        th = self.angles[:, None]
        u1 = (m * om[None, :] * np.sin(th)).ravel()  # rows (y)
        u2 = (m * om[None, :] * np.cos(th)).ravel()  # columns (x)
        npts = u1.size
        l1_0 = np.ceil(u1 - w / 2).astype(np.int64)
        l2_0 = np.ceil(u2 - w / 2).astype(np.int64)
        w1 = [_es_kernel((l1_0 + a - u1) / (w / 2), beta).astype(np.float32) for a in range(w)]
        w2 = [_es_kernel((l2_0 + b - u2) / (w / 2), beta).astype(np.float32) for b in range(w)]
        r_parts, v_parts = [], []
        for a in range(w):
            r1 = np.mod(l1_0 + a, m) * m
            for b in range(w):
                r_parts.append(r1 + np.mod(l2_0 + b, m))
                v_parts.append(w1[a] * w2[b])
        rows = torch.as_tensor(np.concatenate(r_parts))
        vals = torch.as_tensor(np.concatenate(v_parts))
        cols = torch.arange(npts, dtype=torch.int64).repeat(w * w)
        # CSR over grid cells: sort the (cell, point) pairs by cell (no duplicates: one
        # point never hits a cell twice as w < m)
        order = torch.argsort(rows * npts + cols)
        rows, cols, vals = rows[order], cols[order], vals[order]
        crow = torch.zeros(m * m + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=m * m), 0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            matrix = torch.sparse_csr_tensor(crow, cols, vals, size=(m * m, npts), check_invariants=False).to(bk.device)
        # the kernel's Fourier transform at the kept modes k = -n//2 .. n-n//2-1
        # (Gauss-Legendre quadrature over the support, grid units)
        x, gw = np.polynomial.legendre.leggauss(4 * w + 40)
        s = x * (w / 2)
        k = np.arange(self.n) - self.n // 2
        phi = (
            gw[None, :] * (w / 2) * _es_kernel(x, beta)[None, :] * np.cos(2 * np.pi * k[:, None] / m * s[None, :])
        ).sum(1)
        deapod = torch.as_tensor((1.0 / phi).astype(np.float32), device=bk.device)
        if len(_TORCH_GRID_CACHE) >= _TORCH_GRID_CACHE_SIZE:
            _TORCH_GRID_CACHE.pop(next(iter(_TORCH_GRID_CACHE)))
        _TORCH_GRID_CACHE[key] = (matrix, deapod)
        return matrix, deapod

    def run(self, sino: Array) -> Array:
        """(B, A, n_det) sinograms (numpy or torch) -> (B, n, n) slices on the device."""
        torch, bk = self.torch, self.bk
        x = bk.asarray(sino)
        if x.ndim == 2:
            x = x[None]
        nb, na, n_det = x.shape
        if na != len(self.angles) or n_det != self.n_det:
            raise ValueError(
                f"sinogram {tuple(x.shape[1:])} does not match the plan ({len(self.angles)}, {self.n_det})"
            )
        outs = [self._run(x[b0 : b0 + self.max_batch]) for b0 in range(0, nb, self.max_batch)]
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _run(self, x: Array) -> Array:
        torch = self.torch
        nb = x.shape[0]
        m, n = self.m, self.n
        right = self.npad - self.n_det - self.left
        if self.pad:
            x = self.bk.pad_edge(x, self.left, right)
        else:
            x = torch.nn.functional.pad(x, (self.left, right))
        spec = torch.fft.rfft(x, dim=-1)[..., self.keep] * self.coef[None]  # (B, A, K)
        dense = torch.view_as_real(spec.reshape(nb, -1)).permute(1, 0, 2).reshape(-1, 2 * nb)
        grid = (self.matrix @ dense).reshape(m, m, nb, 2).permute(2, 0, 1, 3).contiguous()
        fine = torch.fft.ifft2(torch.view_as_complex(grid)) * float(m * m)
        idx = (torch.arange(n, device=x.device) - n // 2) % m
        img = fine[:, idx][:, :, idx].real
        return img * self.deapod[None, :, None] * self.deapod[None, None, :]

    def __call__(self, sino: np.ndarray | Array) -> np.ndarray:
        single = getattr(sino, "ndim", 3) == 2
        res = self.bk.to_numpy(self.run(sino)).astype(np.float32, copy=False)
        return res[0] if single else res


def gridrec_plan(
    angles: np.ndarray,
    center: float,
    n_det: int,
    *,
    n: int | None = None,
    filter: str = "ramp",
    cutoff: float = 1.0,
    pad: bool = True,
    eps: float = 1e-3,
    backend: Backend | None = None,
) -> GridrecPlan | TorchGridrecPlan:
    """The gridrec plan for a backend: finufft on numpy, gridding on torch (kernel width
    from ``eps`` as finufft chooses it: ceil(log10(1/eps)) + 1, at least 4)."""
    bk = backend or get_backend("numpy")
    if bk.name == "numpy":
        return GridrecPlan(angles, center, n_det, n=n, filter=filter, cutoff=cutoff, pad=pad, eps=eps)
    width = max(4, int(np.ceil(np.log10(1 / eps))) + 1)
    return TorchGridrecPlan(angles, center, n_det, n=n, filter=filter, cutoff=cutoff, pad=pad, width=width, backend=bk)


def gridrec(
    sino: np.ndarray,
    angles: np.ndarray,
    center: float,
    *,
    n: int | None = None,
    filter: str = "ramp",
    cutoff: float = 1.0,
    pad: bool = True,
    circle: bool = False,
    eps: float = 1e-3,
    backend: Backend | None = None,
) -> np.ndarray:
    """Gridrec-class reconstruction through a NUFFT (see :class:`GridrecPlan`).

    On the numpy backend it uses finufft; on torch the same integral by gridding
    (:class:`TorchGridrecPlan`) on the backend's device (CPU or GPU)."""
    bk = backend or get_backend("numpy")
    plan = gridrec_plan(angles, center, sino.shape[-1], n=n, filter=filter, cutoff=cutoff, pad=pad, eps=eps, backend=bk)
    res = plan(sino if bk.name != "numpy" else np.asarray(sino))
    if circle:
        res = res * circle_mask(plan.n)
    return res
