"""Parallel-beam reconstruction: the geometry, the FBP filters, filtered back-projection
and the pixel-driven projector pair; :func:`reconstruct` dispatches to FBP, gridrec
(:mod:`panreduce_tomography.gridrec`) or SIRT/CGLS (:mod:`panreduce_tomography.iterative`).

Geometry (used everywhere in this package): a slice is an ``n`` x ``n`` image whose
pixel (row ``i``, column ``j``) sits at ``x = j - n//2``, ``y = i - n//2`` (pixels),
the rotation axis at ``(0, 0)``. At angle ``theta`` (radians) the point ``(x, y)``
projects onto detector column ``t = x cos(theta) + y sin(theta) + center``, where
``center`` is the rotation axis position on the detector in pixels (column index
units, sub-pixel). Sinograms are ``(n_angles, n_det)`` or batches
``(n_slices, n_angles, n_det)`` of line integrals in units of (attenuation per pixel)
x pixels, so a reconstruction gives attenuation per pixel.

Reference: A. C. Kak, M. Slaney, *Principles of Computerized Tomographic Imaging*
(IEEE 1988), ch. 3: FBP and the band-limited ramp filter used here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy
from panreduce.backend import Array, Backend, get_backend

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    import scipy.fft
else:
    scipy = lazy.module("scipy", "fft")

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann", "parzen")


# -- filters ------------------------------------------------------------------------------
def ramp_filter(npad: int, name: str = "ramp", cutoff: float = 1.0) -> np.ndarray:
    """The FBP filter on the ``npad // 2 + 1`` non-negative DFT frequencies of a padded
    projection: the band-limited ramp (Kak & Slaney eq. 61, the DFT of the sampled
    spatial kernel, which keeps the DC term right) times a window.

    ``cutoff`` (0, 1] is the fraction of the Nyquist frequency kept; the window is
    stretched to end there.
    """
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r} (known: {', '.join(FILTERS)})")
    n = np.concatenate([np.arange(0, npad // 2 + 1), np.arange(-(npad - npad // 2 - 1), 0)])
    h = np.zeros(npad)
    h[0] = 0.25
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    ramp = np.real(np.fft.rfft(h))  # ~ |f| in cycles per pixel
    f = np.arange(npad // 2 + 1) / npad
    fc = 0.5 * cutoff
    x = np.clip(f / fc, 0, None)  # 0..1 inside the pass band
    window = {
        "ramp": np.ones_like(f),
        "shepp-logan": np.sinc(x / 2),
        "cosine": np.cos(np.pi * x / 2),
        "hamming": 0.54 + 0.46 * np.cos(np.pi * x),
        "hann": 0.5 + 0.5 * np.cos(np.pi * x),
        "parzen": np.where(x <= 0.5, 1 - 6 * x**2 + 6 * x**3, 2 * (1 - x) ** 3),
    }[name]
    return np.where(f <= fc + 1e-12, ramp * window, 0.0)


def angle_weights(angles: np.ndarray) -> np.ndarray:
    """The angular integration weight (radians) of each projection: half the distance to
    its neighbours once the angles are folded into [0, pi). Uniform angles over 180 or
    360 degrees get pi/n_angles; repeated angles share their weight."""
    a = np.mod(np.asarray(angles, dtype=np.float64), np.pi)
    order = np.argsort(a, kind="stable")
    s = a[order]
    prev = np.roll(s, 1)
    prev[0] -= np.pi
    nxt = np.roll(s, -1)
    nxt[-1] += np.pi
    w = np.empty_like(s)
    w[order] = 0.5 * (nxt - prev)
    if len(a) == 1:
        w[:] = np.pi
    return w


def _npad(n_det: int) -> int:
    return int(scipy.fft.next_fast_len(2 * n_det, real=True) + 1) // 2 * 2


def _as_batch(sino: np.ndarray) -> tuple[np.ndarray, bool]:
    sino = np.asarray(sino)
    if sino.ndim == 2:
        return sino[None], True
    if sino.ndim != 3:
        raise ValueError(f"sinogram must be (angles, det) or (slices, angles, det), got {sino.shape}")
    return sino, False


def circle_mask(n: int, radius: float | None = None) -> np.ndarray:
    """True inside the disc of ``radius`` (default n/2) around the axis pixel n//2."""
    r = n / 2 if radius is None else radius
    c = np.arange(n) - n // 2
    return (c[:, None] ** 2 + c[None, :] ** 2) <= r * r


# -- filtered back-projection (numpy or torch) -------------------------------------------
def filter_sinograms(
    sino: Array, *, filter: str = "ramp", cutoff: float = 1.0, pad: bool = True, backend: Backend | None = None
) -> tuple[Array, int]:
    """Pad each projection (edge values, or zeros) to twice its length and apply the
    FBP filter along the detector. Returns the filtered (B, A, npad) array and the
    offset of detector column 0 in it."""
    bk = backend or get_backend("numpy")
    n_det = sino.shape[-1]
    npad = _npad(n_det)
    left = (npad - n_det) // 2
    x = bk.asarray(sino)
    if pad:
        x = bk.pad_edge(x, left, npad - n_det - left)
    else:
        z = bk.zeros((*x.shape[:-1], npad))
        z[..., left : left + n_det] = x
        x = z
    h = bk.asarray(ramp_filter(npad, filter, cutoff))
    return bk.irfft(bk.rfft(x, npad) * h, npad), left


def fbp(
    sino: np.ndarray | Array,
    angles: np.ndarray,
    center: float,
    *,
    n: int | None = None,
    filter: str = "ramp",
    cutoff: float = 1.0,
    pad: bool = True,
    circle: bool = False,
    backend: Backend | None = None,
    chunk_elems: int = 1 << 21,
) -> np.ndarray:
    """Filtered back-projection with linear interpolation.

    ``sino``: (n_angles, n_det) or (n_slices, n_angles, n_det) line integrals;
    ``angles`` in radians; ``center`` the rotation axis on the detector (pixels);
    ``n`` the output size (default n_det). Returns (n, n) or (n_slices, n, n) float32.
    Runs on numpy or torch (``backend``); the result is returned as numpy.
    """
    bk = backend or get_backend("numpy")
    batch, single = _as_batch(sino) if isinstance(sino, np.ndarray) else (sino, False)
    _nb, _na, n_det = batch.shape
    n = n or n_det
    filt, left = filter_sinograms(batch, filter=filter, cutoff=cutoff, pad=pad, backend=bk)
    w = angle_weights(angles)
    out = back_project(filt, angles, center + left, n, backend=bk, weights=w, chunk_elems=chunk_elems)
    res = bk.to_numpy(out)
    if circle:
        res = res * circle_mask(n)
    return res[0] if single else res


def _grid(n: int, bk: Backend) -> tuple[Array, Array]:
    c = bk.arange(n) - float(n // 2)
    xs = (c[None, :] + 0 * c[:, None]).reshape(-1)
    ys = (c[:, None] + 0 * c[None, :]).reshape(-1)
    return xs, ys


def back_project(
    sino: Array,
    angles: np.ndarray,
    center: float,
    n: int,
    *,
    backend: Backend,
    weights: np.ndarray | None = None,
    chunk_elems: int = 1 << 21,
    check: Callable[[], None] | None = None,
) -> Array:
    """Pixel-driven back-projection with linear interpolation: the exact adjoint of
    :func:`project` (with unit weights). ``sino`` (B, A, n_det) on the backend; returns
    (B, n, n) on the backend. ``check()`` runs after every chunk of angles (raise from
    it to stop)."""
    bk = backend
    nb, na, _n_det = sino.shape
    xs, ys = _grid(n, bk)
    w = np.ones(na) if weights is None else np.asarray(weights, dtype=np.float64)
    out = bk.zeros((nb, n * n))
    step = max(1, chunk_elems // max(1, nb * n * n))
    for a0 in range(0, na, step):
        a1 = min(na, a0 + step)
        th = bk.asarray(angles[a0:a1])
        t = xs[None, :] * bk.cos(th)[:, None] + ys[None, :] * bk.sin(th)[:, None] + float(center)
        vals = bk.interp(sino[:, a0:a1], t)  # (B, a, n*n)
        wa = bk.asarray(w[a0:a1])
        out = out + (vals * wa[None, :, None]).sum(1)
        if check is not None:
            check()
    return out.reshape(nb, n, n)


def project(
    image: Array,
    angles: np.ndarray,
    center: float,
    n_det: int,
    *,
    backend: Backend,
    chunk_elems: int = 1 << 21,
    check: Callable[[], None] | None = None,
) -> Array:
    """Pixel-driven forward projection (line integrals, pixel units): each pixel's value
    is spread onto the two detector bins around its projected centre. (B, n, n) ->
    (B, A, n_det) on the backend. ``check()`` runs after every chunk of angles (raise
    from it to stop)."""
    bk = backend
    nb, n, _ = image.shape
    xs, ys = _grid(n, bk)
    flat = image.reshape(nb, n * n)
    na = len(angles)
    parts = []
    step = max(1, chunk_elems // max(1, nb * n * n))
    for a0 in range(0, na, step):
        a1 = min(na, a0 + step)
        th = bk.asarray(angles[a0:a1])
        t = xs[None, :] * bk.cos(th)[:, None] + ys[None, :] * bk.sin(th)[:, None] + float(center)
        vals = flat[:, None, :] + 0 * t[None]  # (B, a, n*n)
        parts.append(bk.splat(vals, t, n_det))
        if check is not None:
            check()
    if bk.name == "torch":
        return bk.torch.cat(parts, dim=1)
    return np.concatenate(parts, axis=1)


def reconstruct(
    sino: np.ndarray,
    angles: np.ndarray,
    center: float,
    *,
    algorithm: str = "gridrec",
    size: int | None = None,
    filter: str = "ramp",
    filter_cutoff: float = 1.0,
    pad: bool = True,
    iterations: int = 50,
    circle: bool = False,
    device: str = "cpu",
    backend: Backend | None = None,
    callback: Callable[[int], None] | None = None,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """Reconstruct slices of size ``size`` (default: the detector width) from sinograms
    by ``algorithm`` (``gridrec``, ``fbp``, ``sirt``, ``cgls``); the keywords are those of
    the technique's ``reconstruction`` parameters. It runs on ``backend`` (a
    :class:`panreduce.backend.Backend`), else on ``device`` (its name, as for
    :func:`panreduce.backend.get_backend`). ``callback(iteration)`` runs after every
    iteration of ``sirt``/``cgls`` and ``check()`` within each; an exception either
    raises (a cancelled job) stops the reconstruction there."""
    bk = backend or get_backend(device)
    if algorithm == "gridrec":
        from panreduce_tomography.gridrec import gridrec

        return gridrec(
            sino, angles, center, n=size, filter=filter, cutoff=filter_cutoff, pad=pad, circle=circle, backend=bk
        )
    if algorithm == "fbp":
        return fbp(
            sino, angles, center, n=size, filter=filter, cutoff=filter_cutoff, pad=pad, circle=circle, backend=bk
        )
    if algorithm in ("sirt", "cgls"):
        from panreduce_tomography import iterative

        method = iterative.sirt if algorithm == "sirt" else iterative.cgls
        return method(
            sino,
            angles,
            center,
            n=size,
            iterations=iterations,
            backend=bk,
            circle=circle,
            callback=callback,
            check=check,
        )
    raise ValueError(f"unknown algorithm {algorithm!r}")
