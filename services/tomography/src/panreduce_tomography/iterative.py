"""Iterative reconstruction on numpy or torch: SIRT and CGLS with the pixel-driven
projector pair of :mod:`panreduce_tomography.recon` (``project``/``back_project``).

References:
- P. Gilbert, "Iterative methods for the three-dimensional reconstruction of an
  object from projections", J. Theor. Biol. 36 (1972) 105 (SIRT).
- A. Bjorck, *Numerical Methods for Least Squares Problems* (SIAM 1996) (CGLS).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from panreduce.backend import Array, Backend, get_backend
from panreduce_tomography.recon import _as_batch, back_project, circle_mask, project


def _operators(
    angles: np.ndarray, center: float, n: int, n_det: int, bk: Backend, check: Callable[[], None] | None = None
):
    def fwd(x: Array) -> Array:
        return project(x, angles, center, n_det, backend=bk, check=check)

    def adj(y: Array) -> Array:
        return back_project(y, angles, center, n, backend=bk, check=check)

    return fwd, adj


def sirt(
    sino: np.ndarray,
    angles: np.ndarray,
    center: float,
    *,
    n: int | None = None,
    iterations: int = 100,
    nonnegative: bool = True,
    backend: Backend | None = None,
    callback: Callable[[int], None] | None = None,
    circle: bool = False,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """SIRT: x <- x + C A^T R (b - A x) with R, C the inverse row and column sums of the
    pixel-driven projector A. Converges to a weighted least-squares solution.
    ``callback(iteration)`` runs after every iteration and ``check()`` within each
    (after every chunk of angles of the projector); an exception raised by either (a
    cancelled job) stops the reconstruction there."""
    bk = backend or get_backend("numpy")
    batch, single = _as_batch(sino)
    nb, na, n_det = batch.shape
    n = n or n_det
    fwd, adj = _operators(np.asarray(angles, dtype=np.float64), center, n, n_det, bk, check)
    b = bk.asarray(batch)
    rows = fwd(bk.ones((1, n, n)))
    cols = adj(bk.ones((1, na, n_det)))
    r = bk.where(rows > 1e-6, 1.0 / bk.maximum(rows, 1e-6), 0.0)
    c = bk.where(cols > 1e-6, 1.0 / bk.maximum(cols, 1e-6), 0.0)
    x = bk.zeros((nb, n, n))
    for it in range(iterations):
        x = x + c * adj(r * (b - fwd(x)))
        if nonnegative:
            x = bk.maximum(x, 0.0)
        if callback:
            callback(it)
    res = bk.to_numpy(x)
    if circle:
        res = res * circle_mask(n)
    return res[0] if single else res


def cgls(
    sino: np.ndarray,
    angles: np.ndarray,
    center: float,
    *,
    n: int | None = None,
    iterations: int = 30,
    backend: Backend | None = None,
    callback: Callable[[int], None] | None = None,
    circle: bool = False,
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """CGLS (conjugate gradients on the normal equations A^T A x = A^T b) with the
    pixel-driven projector pair; each slice of the batch is solved independently.
    ``callback`` and ``check`` as for :func:`sirt`."""
    bk = backend or get_backend("numpy")
    batch, single = _as_batch(sino)
    nb, _na, n_det = batch.shape
    n = n or n_det
    fwd, adj = _operators(np.asarray(angles, dtype=np.float64), center, n, n_det, bk, check)
    results = []
    for k in range(nb):
        b = bk.asarray(batch[k : k + 1])
        x = bk.zeros((1, n, n))
        r = b
        s = adj(r)
        p = s
        gamma = bk.vdot(s, s)
        for it in range(iterations):
            q = fwd(p)
            qq = bk.vdot(q, q)
            if qq <= 0 or gamma <= 0:
                break
            alpha = gamma / qq
            x = x + alpha * p
            r = r - alpha * q
            s = adj(r)
            gamma_new = bk.vdot(s, s)
            p = s + (gamma_new / gamma) * p
            gamma = gamma_new
            if callback:
                callback(it)
        results.append(bk.to_numpy(x)[0])
    res = np.stack(results)
    if circle:
        res = res * circle_mask(n)
    return res[0] if single else res
