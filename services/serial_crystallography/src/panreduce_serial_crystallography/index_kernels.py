"""The compiled candidate count of the known-cell indexer (numba), kept apart from
:mod:`.index` so that importing the technique's declaration loads no numba (it is imported
on the first indexed frame)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def candidate_counts(rotations, Binv, G, q, tol2, centering_code):  # pragma: no cover - compiled
    """The number of indexed peaks of every candidate (the count of :func:`.index._score`)."""
    out = np.zeros(rotations.shape[0], np.int64)
    M = np.empty((3, 3))
    for m in range(rotations.shape[0]):
        R = rotations[m]
        for i in range(3):
            for j in range(3):
                M[i, j] = Binv[i, 0] * R[j, 0] + Binv[i, 1] * R[j, 1] + Binv[i, 2] * R[j, 2]  # B⁻¹·Uᵀ
        c = 0
        for p in range(q.shape[0]):
            h0 = M[0, 0] * q[p, 0] + M[0, 1] * q[p, 1] + M[0, 2] * q[p, 2]
            h1 = M[1, 0] * q[p, 0] + M[1, 1] * q[p, 1] + M[1, 2] * q[p, 2]
            h2 = M[2, 0] * q[p, 0] + M[2, 1] * q[p, 1] + M[2, 2] * q[p, 2]
            r0, r1, r2 = np.rint(h0), np.rint(h1), np.rint(h2)
            d0, d1, d2 = h0 - r0, h1 - r1, h2 - r2
            e = (
                G[0, 0] * d0 * d0
                + G[1, 1] * d1 * d1
                + G[2, 2] * d2 * d2
                + 2.0 * (G[0, 1] * d0 * d1 + G[0, 2] * d0 * d2 + G[1, 2] * d1 * d2)
            )
            if e >= tol2:
                continue
            a, b, k = int(r0), int(r1), int(r2)
            if centering_code == 1 and (b + k) % 2 != 0:  # A
                continue
            if centering_code == 2 and (a + k) % 2 != 0:  # B
                continue
            if centering_code == 3 and (a + b) % 2 != 0:  # C
                continue
            if centering_code == 4 and (a + b + k) % 2 != 0:  # I
                continue
            if centering_code == 5 and ((a + b) % 2 != 0 or (a + k) % 2 != 0):  # F
                continue
            if centering_code == 6 and (-a + b + k) % 3 != 0:  # R (obverse)
                continue
            c += 1
        out[m] = c
    return out
