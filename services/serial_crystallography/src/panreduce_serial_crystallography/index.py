"""Indexing still diffraction patterns with a known unit cell.

Peaks (fs, ss on the panels of a CrystFEL geometry) become scattering vectors
``q = (û − ẑ)/λ`` (Å⁻¹; û the unit vector from the sample to the pixel, the beam along +z).
A crystal's orientation is the rotation ``U`` with ``q ≈ U·B·h`` for integer, allowed ``h``
(``B``: the reciprocal basis of the known cell, a* b* c* as columns, a along x, b in the xy
plane as in CrystFEL/gemmi).

The search matches *pairs* of observed vectors against the cell's reciprocal lattice (the
idea of TakeTwo, Ginn et al. 2016, reduced to pairs): for two low-resolution peaks, every
lattice vector pair whose lengths and difference length agree with the observed triangle
within a tolerance (absolute, plus ``cell_tolerance`` of the length) gives one candidate
rotation (two vectors align a frame). All candidates are scored (compiled, numba) by the
number of peaks within a reciprocal-space distance of an allowed lattice point — a fixed
fraction of the lattice's mean spacing (V*)^(1/3), so that the chance that a random
vector indexes is the same for every cell shape; the best are refined: the rotation by
least squares (Kabsch on the indexed peaks), the cell lengths (angles kept) by linear least
squares within ``cell_tolerance`` of the target's, kept only when they index more peaks,
then the rotation again (the Ewald-weighted fit; the whole 3-D misfit: its component normal to the Ewald
sphere is the excitation error, so the refinement also pulls the observed reflections'
lattice points onto the sphere — the only handle a still gives on rotations about axes
normal to the beam; a tangential-only fit was 4x worse in orientation on simulated stills)
and accepted when enough peaks index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations

import numpy as np

from panreduce_serial_crystallography.geometry import Detector

__all__ = [
    "CENTERINGS",
    "IndexResult",
    "allowed_by_centering",
    "index_peaks",
    "lattice_vectors",
    "mean_spacing",
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


@lru_cache(maxsize=16)
def _lattice_cached(cell: tuple[float, ...], centering: str, q_max: float) -> tuple[np.ndarray, np.ndarray]:
    hkl, v = lattice_vectors(cell, centering, q_max)
    hkl.setflags(write=False)
    v.setflags(write=False)
    return hkl, v


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


def mean_spacing(cell: tuple[float, ...], centering: str) -> float:
    """(V*)^(1/3) (Å⁻¹): the cube root of the reciprocal volume per allowed lattice point."""
    per_cell = {"P": 1, "H": 1, "A": 2, "B": 2, "C": 2, "I": 2, "F": 4, "R": 3}[centering]
    v = abs(float(np.linalg.det(reciprocal_basis(cell))))
    return (per_cell * v) ** (1 / 3)


def _score(rotations: np.ndarray, B: np.ndarray, q: np.ndarray, tol: float, centering: str):
    """(n_indexed, hkl, indexed) for each candidate basis ``rotations @ B`` (m, 3, 3): a
    peak is indexed when its distance from the nearest (by rounding its fractional
    indices) allowed lattice point is below ``tol`` (Å⁻¹)."""
    Binv = np.linalg.inv(B)
    hf = np.einsum("ij,mkj,nk->mni", Binv, rotations, q, optimize=True)  # h = B⁻¹ Uᵀ q, (m, n, 3)
    hi = np.rint(hf)
    df = hf - hi
    d2 = np.einsum("mni,ij,mnj->mn", df, B.T @ B, df, optimize=True)  # |B·Δh|² (rotation-free)
    ok = (d2 < tol * tol) & allowed_by_centering(hi.astype(np.int64), centering)
    return ok.sum(axis=1), hi.astype(np.int64), ok


_CENTERING_CODE = {"P": 0, "H": 0, "A": 1, "B": 2, "C": 3, "I": 4, "F": 5, "R": 6}


def index_peaks(
    q: np.ndarray,
    cell: tuple[float, ...],
    *,
    centering: str = "P",
    wavelength_angstrom: float,
    tolerance: float = 0.2,
    pair_tolerance: float = 0.08,
    cell_tolerance: float = 0.01,
    n_seeds: int = 12,
    min_indexed: int = 8,
    min_fraction: float = 0.5,
    max_candidates: int = 300_000,
    n_refine: int = 6,
) -> IndexResult | None:
    """The orientation (and, within ``cell_tolerance``, the cell) of a crystal of known
    ``cell`` from the scattering vectors ``q`` (n, 3) of one still's peaks, or None when
    no orientation indexes at least ``max(min_indexed, min_fraction·n)`` peaks.

    ``tolerance``: a peak is indexed when it lies within ``tolerance · (V*)^(1/3)`` of an
    allowed lattice point (V*: the reciprocal volume per lattice point), so that a
    random vector indexes with the same chance, (4/3)π·tolerance³ (3.4 % at 0.2),
    whatever the cell's shape; ``pair_tolerance``: the seed pairs' length matching
    tolerance, a fraction of the shortest reciprocal axis, plus ``cell_tolerance`` of the
    length; ``cell_tolerance``: the refined cell's lengths may differ from the target's
    by this fraction (angles by 100·this degrees; 0: the cell is not refined);
    ``n_seeds``: the lowest-resolution peaks paired."""
    q = np.asarray(q, dtype=np.float64).reshape(-1, 3)
    n = len(q)
    need = max(min_indexed, math.ceil(min_fraction * n))
    if n < max(need, 3):
        return None
    B = reciprocal_basis(cell)
    tol_q = tolerance * mean_spacing(cell, centering)
    astar_min = float(np.min(np.linalg.norm(B, axis=0)))
    tol = pair_tolerance * astar_min
    lengths = np.linalg.norm(q, axis=1)
    order = np.argsort(lengths)
    seeds = [int(i) for i in order if lengths[i] > 0.5 * astar_min][:n_seeds]
    if len(seeds) < 2:
        return None
    q_seed = float(lengths[seeds].max())
    # the lattice to a radius rounded up (shared by the frames of a job)
    _, vec_all = _lattice_cached(tuple(cell), centering, math.ceil((q_seed * (1 + cell_tolerance) + tol) * 200) / 200)
    sq_all = np.einsum("ij,ij->i", vec_all, vec_all)
    len_all = np.sqrt(sq_all)
    cands: list[np.ndarray] = []
    total = 0
    for i, j in combinations(seeds, 2):
        qi, qj = q[i], q[j]
        s = np.linalg.norm(np.cross(qi, qj)) / (lengths[i] * lengths[j])
        if s < 0.2:  # nearly collinear: a poor frame
            continue
        ti, tj = tol + cell_tolerance * lengths[i], tol + cell_tolerance * lengths[j]
        dij = float(np.linalg.norm(qi - qj))
        ci = np.nonzero(np.abs(len_all - lengths[i]) < ti)[0]
        cj = np.nonzero(np.abs(len_all - lengths[j]) < tj)[0]
        if not len(ci) or not len(cj):
            continue
        vi, vj = vec_all[ci], vec_all[cj]
        t = tol + cell_tolerance * dij
        d2 = sq_all[ci][:, None] + sq_all[cj][None, :] - 2.0 * (vi @ vj.T)  # |vi − vj|²
        a, b = np.nonzero((d2 > (max(dij - t, 0.0)) ** 2) & (d2 < (dij + t) ** 2))
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
    from panreduce_serial_crystallography.index_kernels import candidate_counts  # numba: loaded on first use

    counts = candidate_counts(
        np.ascontiguousarray(rots), np.linalg.inv(B), B.T @ B, q, tol_q * tol_q, _CENTERING_CODE[centering]
    )
    # refine the best few: a coarse seed rotation may index too few peaks until refined
    best: tuple[int, float, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    for m in np.argsort(-counts, kind="stable")[:n_refine]:
        if counts[m] < 3:
            break
        got = _refine(rots[m], cell, centering, q, tol_q, 1.0 / wavelength_angstrom, cell_tolerance)
        if got is None:
            continue
        U, Bc, hi, sel = got
        pred = hi[sel] @ (U @ Bc).T
        rms = float(np.sqrt(np.mean(np.sum((q[sel] - pred) ** 2, axis=1))))
        if best is None or (int(sel.sum()), -rms) > (best[0], -best[1]):
            best = (int(sel.sum()), rms, U, Bc, hi, sel)
    if best is None or best[0] < need:
        return None
    n_ok, rms, U, Bc, hi, sel = best
    return IndexResult(rotation=U, basis=U @ Bc, hkl=hi, indexed=sel, n_indexed=n_ok, rms_residual=rms)


def _refine(U, cell, centering, q, tol_q, k, cell_tolerance):
    """Reassign indices and refit: the rotation (Kabsch), then — when ``cell_tolerance`` —
    the whole basis by linear least squares (kept while the cell stays within the
    tolerance of the target), then the rotation by the Ewald-weighted fit in the refined
    cell. (U, B of the refined cell, hkl, indexed) or None with < 3 indexed."""
    B = reciprocal_basis(cell)
    for _ in range(4):
        _, hi, ok = _score(U[None], B, q, tol_q, centering)
        sel = ok[0]
        if sel.sum() < 3:
            return None
        U = _kabsch(hi[0][sel].astype(np.float64) @ B.T, q[sel])
    h = hi[0][sel].astype(np.float64)
    if cell_tolerance > 0:
        B0 = B
        for _ in range(4):
            if len(h) < 12:  # refine only when well over-determined
                break
            # the lengths only (angles kept): B' = B0·diag(t), q ≈ U·B0·diag(t)·h, linear in t
            X = (U @ B0)[None, :, :] * h[:, None, :]  # (n, 3 components, 3 parameters)
            A = np.einsum("nci,ncj->ij", X, X)
            t = np.linalg.solve(A, np.einsum("nci,nc->i", X, q[sel]))
            if not np.all(np.abs(t - 1) <= cell_tolerance):
                break
            Bn = B0 * t[None, :]
            Un = _kabsch(h @ Bn.T, q[sel])
            _, hn, okn = _score(Un[None], Bn, q, tol_q, centering)
            if okn[0].sum() <= sel.sum():  # kept only when it indexes more peaks
                break
            U, B, sel, h = Un, Bn, okn[0], hn[0][okn[0]].astype(np.float64)
    U = _refine_weighted(U, h @ B.T, q[sel], k)
    _, hi, ok = _score(U[None], B, q, tol_q, centering)
    if ok[0].sum() < 3:
        return None
    return U, B, hi[0], ok[0]
