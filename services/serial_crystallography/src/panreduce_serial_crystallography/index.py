"""Indexing still diffraction patterns with a known unit cell.

Peaks (fs, ss on the panels of a CrystFEL geometry) become scattering vectors
``q = (û − ẑ)/λ`` (Å⁻¹; û the unit vector from the sample to the pixel, the beam along +z).
A crystal's orientation is the rotation ``U`` with ``q ≈ U·B·h`` for integer, allowed ``h``
(``B``: the reciprocal basis of the known cell, a* b* c* as columns, a along x, b in the xy
plane as in CrystFEL/gemmi).

The search matches *pairs* of observed vectors against the cell's reciprocal lattice (the
idea of TakeTwo, Ginn et al. 2016, reduced to pairs): for two low-resolution peaks, every
lattice vector pair whose lengths and difference length agree with the observed triangle
within a tolerance gives one candidate rotation (two vectors align a frame). All
candidates are scored at once (numpy, vectorised) by the number of peaks whose fractional
Miller indices lie within ``fraction`` of integers; the best is refined by least squares
(Kabsch on the indexed peaks, the whole 3-D misfit: its component normal to the Ewald
sphere is the excitation error, so the refinement also pulls the observed reflections'
lattice points onto the sphere — the only handle a still gives on rotations about axes
normal to the beam; a tangential-only fit was 4x worse in orientation on simulated stills)
and accepted when enough peaks index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from panreduce_serial_crystallography.geometry import Detector

__all__ = [
    "CENTERINGS",
    "IndexResult",
    "allowed_by_centering",
    "index_peaks",
    "lattice_vectors",
    "peak_lab_positions",
    "real_basis",
    "reciprocal_basis",
    "scattering_vectors",
]

CENTERINGS = ("P", "A", "B", "C", "I", "F", "R", "H")


def real_basis(cell: tuple[float, ...]) -> np.ndarray:
    """Rows a, b, c (Å) of a cell (a, b, c Å; al, be, ga deg): a along x, b in the xy plane."""
    a, b, c, al, be, ga = cell
    al, be, ga = (math.radians(v) for v in (al, be, ga))
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    cz2 = c * c - cx * cx - cy * cy
    if not (a > 0 and b > 0 and c > 0) or cz2 <= 0:
        raise ValueError(f"not a unit cell: {cell}")
    return np.array(
        [[a, 0.0, 0.0], [b * math.cos(ga), b * math.sin(ga), 0.0], [cx, cy, math.sqrt(cz2)]], dtype=np.float64
    )


def reciprocal_basis(cell: tuple[float, ...]) -> np.ndarray:
    """B: columns a*, b*, c* (Å⁻¹) in the frame of :func:`real_basis` (q = B·h)."""
    return np.linalg.inv(real_basis(cell))


def allowed_by_centering(hkl: np.ndarray, centering: str) -> np.ndarray:
    """Reflections the lattice centering allows (R: obverse hexagonal setting, −h+k+l = 3n)."""
    h, k, l = (hkl[..., i] for i in range(3))  # noqa: E741
    if centering == "P" or centering == "H":
        return np.ones(h.shape, bool)
    if centering == "A":
        return (k + l) % 2 == 0
    if centering == "B":
        return (h + l) % 2 == 0
    if centering == "C":
        return (h + k) % 2 == 0
    if centering == "I":
        return (h + k + l) % 2 == 0
    if centering == "F":
        return ((h + k) % 2 == 0) & ((h + l) % 2 == 0) & ((k + l) % 2 == 0)
    if centering == "R":
        return (-h + k + l) % 3 == 0
    raise ValueError(f"unknown centering {centering!r} (one of {', '.join(CENTERINGS)})")


def lattice_vectors(cell: tuple[float, ...], centering: str, q_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Every allowed h ≠ 0 with |B·h| ≤ q_max: (hkl (n, 3) int, B·h (n, 3))."""
    B = reciprocal_basis(cell)
    A = real_basis(cell)
    lim = [math.floor(q_max * float(np.linalg.norm(A[i]))) for i in range(3)]
    axes = [np.arange(-m, m + 1) for m in lim]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1) & allowed_by_centering(hkl, centering)]
    v = hkl @ B.T
    keep = np.einsum("ij,ij->i", v, v) <= q_max * q_max
    return hkl[keep], v[keep]


def peak_lab_positions(
    detector: Detector, fs: np.ndarray, ss: np.ndarray, panel: np.ndarray, *, clen_m: float
) -> np.ndarray:
    """Lab positions (m) of peaks at array coordinates (fs, ss) (integer = pixel centre) on
    panel indices ``panel``; the detector plane at z = ``clen_m`` (coffset included)."""
    out = np.empty((len(fs), 3), np.float64)
    for i, p in enumerate(detector.panels):
        sel = panel == i
        if not np.any(sel):
            continue
        a = fs[sel] - p.min_fs + 0.5
        b = ss[sel] - p.min_ss + 0.5
        res = p.res_px_per_m
        out[sel, 0] = (p.corner_x + a * p.fs[0] + b * p.ss[0]) / res
        out[sel, 1] = (p.corner_y + a * p.fs[1] + b * p.ss[1]) / res
        out[sel, 2] = clen_m + (a * p.fs[2] + b * p.ss[2]) / res
    return out


def scattering_vectors(xyz_m: np.ndarray, wavelength_angstrom: float) -> np.ndarray:
    """q = (û − ẑ)/λ (Å⁻¹) of lab positions (n, 3)."""
    u = xyz_m / np.linalg.norm(xyz_m, axis=1, keepdims=True)
    u[:, 2] -= 1.0
    return u / wavelength_angstrom


@dataclass(frozen=True)
class IndexResult:
    rotation: np.ndarray  # U (3, 3): q_lab = U·B·h
    basis: np.ndarray  # U·B: columns a*, b*, c* in the lab (Å⁻¹)
    hkl: np.ndarray  # (n_peaks, 3) int: nearest indices of every peak
    indexed: np.ndarray  # (n_peaks,) bool: within tolerance
    n_indexed: int
    rms_residual: float  # Å⁻¹, |q − U·B·h| of the indexed peaks

    @property
    def astar(self) -> np.ndarray:
        return self.basis[:, 0]

    @property
    def bstar(self) -> np.ndarray:
        return self.basis[:, 1]

    @property
    def cstar(self) -> np.ndarray:
        return self.basis[:, 2]


def _frame(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Orthonormal frames (..., 3, 3) (columns) built from pairs of vectors."""
    e1 = u / np.linalg.norm(u, axis=-1, keepdims=True)
    w = np.cross(u, v)
    e3 = w / np.linalg.norm(w, axis=-1, keepdims=True)
    e2 = np.cross(e3, e1)
    return np.stack([e1, e2, e3], axis=-1)


def _kabsch(model: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """The rotation R minimising Σ|R·model − obs|² (rows are vectors)."""
    h = model.T @ obs
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def _skew(p: np.ndarray) -> np.ndarray:
    """[p]× for rows p: (n, 3, 3) with [p]×·v = p × v."""
    z = np.zeros(len(p))
    return np.stack(
        [
            np.stack([z, -p[:, 2], p[:, 1]], -1),
            np.stack([p[:, 2], z, -p[:, 0]], -1),
            np.stack([-p[:, 1], p[:, 0], z], -1),
        ],
        axis=1,
    )


def _refine_weighted(U: np.ndarray, model: np.ndarray, q: np.ndarray, k: float, iterations: int = 5) -> np.ndarray:
    """Gauss-Newton on the rotation with each residual split into its component normal to
    the Ewald sphere (the excitation error, spread ~ the profile radius) and the tangential
    one (the position error), each weighted by the inverse of its own mean square."""
    n = q.copy()
    n[:, 2] += k
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    nn = np.einsum("ni,nj->nij", n, n)
    tt = np.eye(3)[None] - nn
    for _ in range(iterations):
        p = model @ U.T
        d = p - q
        dn = np.einsum("ni,ni->n", d, n)
        var_n = max(float(np.mean(dn**2)), 1e-12)
        var_t = max(float(np.mean(np.einsum("ni,ni->n", d, d) - dn**2)) / 2, 1e-12)
        var_n = max(var_n, var_t)
        W = nn / var_n + tt / var_t
        J = -_skew(p)  # d(p + ω × p)/dω
        JtW = np.einsum("nji,njk->nik", J, W)
        H = np.einsum("nij,njk->ik", JtW, J)
        g = np.einsum("nij,nj->i", JtW, d)
        w = -np.linalg.solve(H, g)
        angle = float(np.linalg.norm(w))
        if angle < 1e-12:
            break
        K = _skew((w / angle)[None])[0]
        R = np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K
        U = R @ U
    return U


def _score(rotations: np.ndarray, Binv: np.ndarray, q: np.ndarray, fraction: float, centering: str):
    """(n_indexed, hkl) for each candidate rotation (m, 3, 3)."""
    # h = B⁻¹ Uᵀ q for every rotation and peak: (m, n, 3)
    hf = np.einsum("ij,mkj,nk->mni", Binv, rotations, q, optimize=True)
    hi = np.rint(hf)
    ok = np.all(np.abs(hf - hi) < fraction, axis=-1) & allowed_by_centering(hi.astype(np.int64), centering)
    return ok.sum(axis=1), hi.astype(np.int64), ok


def index_peaks(
    q: np.ndarray,
    cell: tuple[float, ...],
    *,
    centering: str = "P",
    wavelength_angstrom: float,
    fraction: float = 0.15,
    pair_tolerance: float = 0.08,
    n_seeds: int = 12,
    min_indexed: int = 8,
    min_fraction: float = 0.5,
    max_candidates: int = 200_000,
    n_refine: int = 4,
) -> IndexResult | None:
    """The orientation of a crystal of known ``cell`` from the scattering vectors ``q``
    (n, 3) of one still's peaks, or None when no orientation indexes at least
    ``max(min_indexed, min_fraction·n)`` peaks.

    ``fraction``: a peak is indexed when each fractional index lies within this of an
    integer; ``pair_tolerance``: the matching tolerance of lengths (fraction of the
    shortest reciprocal axis, absolute) for the seed pairs; ``n_seeds``: the
    lowest-resolution peaks paired."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
    n = len(q)
    need = max(min_indexed, math.ceil(min_fraction * n))
    if n < max(need, 3):
        return None
    B = reciprocal_basis(cell)
    Binv = np.linalg.inv(B)
    astar_min = float(np.min(np.linalg.norm(B, axis=0)))
    tol = pair_tolerance * astar_min
    lengths = np.linalg.norm(q, axis=1)
    order = np.argsort(lengths)
    seeds = [int(i) for i in order if lengths[i] > 0.5 * astar_min][:n_seeds]
    if len(seeds) < 2:
        return None
    _, vec_all = lattice_vectors(cell, centering, float(lengths[seeds].max()) + tol)
    len_all = np.linalg.norm(vec_all, axis=1)
    cands: list[np.ndarray] = []
    total = 0
    for i, j in combinations(seeds, 2):
        qi, qj = q[i], q[j]
        s = np.linalg.norm(np.cross(qi, qj)) / (lengths[i] * lengths[j])
        if s < 0.2:  # nearly collinear: a poor frame
            continue
        ci = np.nonzero(np.abs(len_all - lengths[i]) < tol)[0]
        cj = np.nonzero(np.abs(len_all - lengths[j]) < tol)[0]
        if not len(ci) or not len(cj):
            continue
        vi, vj = vec_all[ci], vec_all[cj]
        d = np.linalg.norm(vi[:, None, :] - vj[None, :, :], axis=-1)
        a, b = np.nonzero(np.abs(d - np.linalg.norm(qi - qj)) < tol)
        if not len(a):
            continue
        mi, mj = vi[a], vj[b]
        good = np.linalg.norm(np.cross(mi, mj), axis=1) > 1e-9
        mi, mj = mi[good], mj[good]
        # U maps the model frame onto the observed frame: U = F_obs · F_modelᵀ
        f_obs = _frame(qi[None], qj[None])[0]
        f_mod = _frame(mi, mj)
        cands.append(np.einsum("ij,mkj->mik", f_obs, f_mod))
        total += len(mi)
        if total >= max_candidates:
            break
    if not cands:
        return None
    rots = np.concatenate(cands)
    counts = np.concatenate(
        [_score(rots[c0 : c0 + 4096], Binv, q, fraction, centering)[0] for c0 in range(0, len(rots), 4096)]
    )
    # refine the best few: a coarse seed rotation may index too few peaks until refined
    best: tuple[int, float, np.ndarray, np.ndarray, np.ndarray] | None = None
    for m in np.argsort(-counts, kind="stable")[:n_refine]:
        if counts[m] < 3:
            break
        got = _refine(rots[m], B, Binv, q, fraction, centering, 1.0 / wavelength_angstrom)
        if got is None:
            continue
        U, hi, sel = got
        pred = hi[sel] @ (U @ B).T
        rms = float(np.sqrt(np.mean(np.sum((q[sel] - pred) ** 2, axis=1))))
        if best is None or (int(sel.sum()), -rms) > (best[0], -best[1]):
            best = (int(sel.sum()), rms, U, hi, sel)
    if best is None or best[0] < need:
        return None
    n_ok, rms, U, hi, sel = best
    return IndexResult(rotation=U, basis=U @ B, hkl=hi, indexed=sel, n_indexed=n_ok, rms_residual=rms)


def _refine(U, B, Binv, q, fraction, centering, k):
    """Reassign indices and refit (Kabsch, then the weighted fit); None with < 3 indexed."""
    for _ in range(4):
        _, hi, ok = _score(U[None], Binv, q, fraction, centering)
        sel = ok[0]
        if sel.sum() < 3:
            return None
        U = _kabsch(hi[0][sel].astype(np.float64) @ B.T, q[sel])
    U = _refine_weighted(U, hi[0][sel].astype(np.float64) @ B.T, q[sel], k)
    _, hi, ok = _score(U[None], Binv, q, fraction, centering)
    if ok[0].sum() < 3:
        return None
    return U, hi[0], ok[0]
