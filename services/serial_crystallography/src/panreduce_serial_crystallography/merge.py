"""Merging of still-image intensities as CrystFEL's process_hkl does, and the figures of
merit of compare_hkl, with the point group's symmetry and asymmetric unit from gemmi.

- every observation is mapped into the asymmetric unit of the point group (Friedel mates
  kept apart in an acentric point group, unless the reflection is centric there);
- the merged intensity is the unweighted mean, σ(I) = population standard deviation /
  √n; reflections with fewer than ``min_measurements`` observations are dropped;
- figures of merit over reflections common to two half data sets (even/odd crystals):
  CC½ (Pearson), CC* = √(2·CC½/(1+CC½)), Rsplit = (2/√2)·Σ|I₁−I₂| / Σ(I₁+I₂), per shell of
  equal reciprocal volume and overall, with completeness, multiplicity and ⟨I/σ⟩;
- optional per-crystal scaling (process_hkl ``--scale``, partialator ``--model=unity``):
  each crystal's observations are I = G·exp(−2B s²)·I_true with s = 1/(2d); G (and B unless
  ``no_bscale``) refined by least squares against the merged mean, ``iterations`` cycles of
  merge → refit, normalised to a geometric mean G of 1 and a mean B of 0 (partialator's
  regression cases: two crystals differing by a factor 2 merge to their geometric mean
  with σ = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np

__all__ = [
    "MergeError",
    "Merged",
    "Scaling",
    "figures_of_merit",
    "merge_intensities",
    "point_group_ops",
    "scale_crystals",
    "space_group_for",
    "write_mtz",
]


class MergeError(ValueError):
    """A point group or space group that cannot be understood."""


# CrystFEL point-group symbols → a symmorphic space group with exactly those operations
_TRIGONAL = {
    "3_H": "P3",
    "-3_H": "P-3",
    "321_H": "P321",
    "312_H": "P312",
    "3m1_H": "P3m1",
    "31m_H": "P31m",
    "-3m1_H": "P-3m1",
    "-31m_H": "P-31m",
    "3_R": "R3:R",
    "-3_R": "R-3:R",
    "32_R": "R32:R",
    "3m_R": "R3m:R",
    "-3m_R": "R-3m:R",
}
_UNIQUE_AXIS = {"_uaa": "a", "_uab": "b", "_uac": "c"}


def point_group_ops(point_group: str) -> tuple[gemmi.SpaceGroup, gemmi.GroupOps]:
    """The symmorphic P (or R:R) space group whose operations are the point group's."""
    pg = point_group.strip()
    name = _TRIGONAL.get(pg)
    if name is None:
        base, axis = pg, "b"
        for suffix, ax in _UNIQUE_AXIS.items():
            if pg.endswith(suffix):
                base, axis = pg[: -len(suffix)], ax
        name = "P" + base
        if base in ("2", "m", "2/m") and axis != "b":
            sym = {"2": "2", "m": "m", "2/m": "2/m"}[base]
            name = {"a": f"P {sym} 1 1", "c": f"P 1 1 {sym}"}[axis]
    sg = gemmi.find_spacegroup_by_name(name) if pg else None
    if sg is None or sg.number > 230 or sg.point_group_hm() != gemmi.find_spacegroup_by_name(name).point_group_hm():
        raise MergeError(
            f"unknown point group {point_group!r} (CrystFEL symbols: 1, -1, 2/m, mmm, 4/mmm, 6/mmm, m-3m, 321_H, ...)"
        )
    return sg, sg.operations()


def space_group_for(point_group: str, centering: str = "P") -> gemmi.SpaceGroup:
    """The chiral (Sohncke) space group of the point group's rotations with ``centering``:
    the usual space group of a merged macromolecular data set (e.g. mmm, C → C 2 2 2)."""
    _sg, ops = point_group_ops(point_group)
    proper = gemmi.GroupOps([op for op in ops if op.det_rot() > 0])
    base = gemmi.find_spacegroup_by_ops(proper)
    if base is None:
        raise MergeError(f"no space group for point group {point_group!r}")
    if centering and centering not in ("P", base.hm[0]) and base.hm[0] == "P":
        cand = gemmi.find_spacegroup_by_name(centering + base.hm[1:])
        if cand is not None:
            return cand
    return base


@dataclass(frozen=True)
class Merged:
    hkl: np.ndarray  # (n, 3) int32, in the asymmetric unit
    friedel: np.ndarray  # (n,) int8: +1 / -1 for I(+)/I(−) of an acentric reflection, 0 otherwise
    intensity: np.ndarray
    sigma: np.ndarray
    n_measurements: np.ndarray  # int32


def _asu_keys(hkl: np.ndarray, ops: gemmi.GroupOps, centro: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per observation: the asymmetric-unit index and its Friedel sign (0 if not kept apart)."""
    uniq, inverse = np.unique(hkl, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sg = gemmi.find_spacegroup_by_ops(ops)
    asu = gemmi.ReciprocalAsu(sg)
    out = np.empty((len(uniq), 3), np.int32)
    sign = np.zeros(len(uniq), np.int8)
    for i, h in enumerate(uniq.tolist()):
        mapped, isym = asu.to_asu(h, ops)
        out[i] = mapped
        if not centro and not ops.is_reflection_centric(h):
            sign[i] = 1 if isym % 2 == 1 else -1
    return out[inverse], sign[inverse]


def merge_intensities(
    hkl: np.ndarray, intensity: np.ndarray, *, point_group: str, min_measurements: int = 2, friedel_merge: bool = False
) -> Merged:
    """process_hkl's merge of observations ``hkl`` (n, 3) with ``intensity`` (n,);
    ``friedel_merge`` merges in the point group's Laue class (IMEAN of an MTZ)."""
    hkl = np.asarray(hkl, dtype=np.int32).reshape(-1, 3)
    intensity = np.asarray(intensity, dtype=np.float64).reshape(-1)
    if hkl.shape[0] != intensity.shape[0]:
        raise ValueError("hkl and intensity differ in length")
    sg, ops = point_group_ops(point_group)
    if friedel_merge and not sg.is_centrosymmetric():
        ops = sg.operations()
        ops.add_inversion()
        sg = gemmi.find_spacegroup_by_ops(ops)
    if hkl.shape[0] == 0:
        z = np.zeros(0)
        return Merged(np.zeros((0, 3), np.int32), np.zeros(0, np.int8), z, z, np.zeros(0, np.int32))
    asu, sign = _asu_keys(hkl, ops, sg.is_centrosymmetric())
    keys = np.column_stack([asu, sign.astype(np.int32)])
    uk, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n = np.bincount(inv, minlength=len(uk))
    mean = np.bincount(inv, weights=intensity, minlength=len(uk)) / n
    m2 = np.bincount(inv, weights=(intensity - mean[inv]) ** 2, minlength=len(uk))
    sigma = np.sqrt(m2 / n) / np.sqrt(n)
    keep = n >= min_measurements
    return Merged(
        hkl=uk[keep, :3].astype(np.int32),
        friedel=uk[keep, 3].astype(np.int8),
        intensity=mean[keep],
        sigma=sigma[keep],
        n_measurements=n[keep].astype(np.int32),
    )


@dataclass(frozen=True)
class Scaling:
    """Per crystal: observed = g·exp(−2·b·s²)·true, s = 1/(2d) (Å⁻¹); ``ok`` False for a
    crystal that could not be scaled (too few reflections measured elsewhere, or a
    non-positive fit), which is left out of the merge."""

    g: np.ndarray
    b_angstrom2: np.ndarray
    ok: np.ndarray
    corrected: np.ndarray  # per observation: I / (g·exp(−2·b·s²)) of its crystal, NaN for rejected crystals

    @property
    def n_rejected(self) -> int:
        return int(np.count_nonzero(~self.ok))


MAX_B_ANGSTROM2 = 200.0  # |B| is held within this (a wild B means a crystal that does not fit)
MAX_B_STEP = 2.0  # Å² per Gauss-Newton step: B and the model move together, large steps oscillate
MIN_FOR_B = 10  # reflections in common a crystal needs for its B to be refined
_GAUSS_NEWTON_STEPS = 4


def scale_crystals(
    hkl: np.ndarray,
    intensity: np.ndarray,
    crystal: np.ndarray,
    *,
    point_group: str,
    cell: gemmi.UnitCell,
    iterations: int = 10,
    bscale: bool = True,
) -> Scaling:
    """Per-crystal scale factors (and B) of observations ``hkl``/``intensity`` whose crystal
    is ``crystal`` (0 .. n−1), refined against their merged mean in ``point_group``: each
    cycle merges the corrected intensities (process_hkl's mean) and refits every crystal
    by Gauss-Newton least squares, Σ (I − G·exp(−2Bs²)·⟨I⟩)², over its reflections that
    are measured at least twice. G starts at 1 and B at 0."""
    hkl = np.asarray(hkl, dtype=np.int32).reshape(-1, 3)
    intensity = np.asarray(intensity, dtype=np.float64).reshape(-1)
    crystal = np.asarray(crystal, dtype=np.int64).reshape(-1)
    if not (hkl.shape[0] == intensity.shape[0] == crystal.shape[0]):
        raise ValueError("hkl, intensity and crystal differ in length")
    n_cryst = int(crystal.max()) + 1 if crystal.size else 0
    g = np.ones(n_cryst)
    b = np.zeros(n_cryst)
    ok = np.ones(n_cryst, bool)
    if crystal.size == 0:
        return Scaling(g, b, ok, intensity.copy())
    sg, ops = point_group_ops(point_group)
    asu, sign = _asu_keys(hkl, ops, sg.is_centrosymmetric())
    _, key = np.unique(np.column_stack([asu, sign.astype(np.int32)]), axis=0, return_inverse=True)
    key = key.reshape(-1)
    n_keys = int(key.max()) + 1
    s2 = np.asarray(cell.calculate_1_d2_array(hkl)) / 4.0  # s² = 1/(4d²)

    def corrected() -> np.ndarray:
        return np.where(ok[crystal], intensity / (g[crystal] * np.exp(-2.0 * b[crystal] * s2)), np.nan)

    for _ in range(iterations):
        corr = corrected()
        use_obs = np.isfinite(corr)
        n = np.bincount(key[use_obs], minlength=n_keys)
        model = np.bincount(key[use_obs], weights=corr[use_obs], minlength=n_keys) / np.maximum(n, 1)
        m = model[key]
        use = use_obs & (n[key] >= 2)
        n_use = np.bincount(crystal[use], minlength=n_cryst)
        fit_b = bscale & (n_use >= MIN_FOR_B)
        for _step in range(_GAUSS_NEWTON_STEPS):
            k = np.exp(-2.0 * b[crystal] * s2) * m  # d(pred)/dG
            pred = g[crystal] * k
            r = np.where(use, intensity - pred, 0.0)
            jg = np.where(use, k, 0.0)
            jb = np.where(use, -2.0 * s2 * pred, 0.0)  # d(pred)/dB
            a11 = np.bincount(crystal, weights=jg * jg, minlength=n_cryst)
            a12 = np.bincount(crystal, weights=jg * jb, minlength=n_cryst)
            a22 = np.bincount(crystal, weights=jb * jb, minlength=n_cryst)
            v1 = np.bincount(crystal, weights=jg * r, minlength=n_cryst)
            v2 = np.bincount(crystal, weights=jb * r, minlength=n_cryst)
            det = a11 * a22 - a12 * a12
            two = fit_b & (det > 1e-12 * np.maximum(a11 * a22, 1e-300))
            with np.errstate(invalid="ignore", divide="ignore"):
                dg = np.where(two, (a22 * v1 - a12 * v2) / det, v1 / a11)
                db = np.where(two, (a11 * v2 - a12 * v1) / det, 0.0)
            step = np.isfinite(dg) & np.isfinite(db) & (a11 > 0)
            db = np.clip(db, -MAX_B_STEP, MAX_B_STEP)
            g = np.where(step, g + dg, g)
            b = np.clip(np.where(step, b + db, b), -MAX_B_ANGSTROM2, MAX_B_ANGSTROM2)
        ok &= (n_use >= 1) & np.isfinite(g) & (g > 0)
        if not ok.any():
            break
        g = np.where(ok, g / np.exp(np.mean(np.log(g[ok]))), 1.0)
        b = np.where(ok, b - np.mean(b[ok]), 0.0)
    return Scaling(g, b, ok, corrected())


def one_over_d(hkl: np.ndarray, cell: gemmi.UnitCell) -> np.ndarray:
    """1/d (Å⁻¹) of each reflection in ``cell``."""
    return np.sqrt(np.asarray(cell.calculate_1_d2_array(np.asarray(hkl, dtype=np.int32))))


def shell_edges(s_min: float, s_max: float, n_shells: int) -> np.ndarray:
    """Edges in 1/d (Å⁻¹) of ``n_shells`` shells of equal reciprocal volume."""
    return np.cbrt(np.linspace(s_min**3, s_max**3, n_shells + 1))


def _cc(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def figures_of_merit(
    merged: Merged,
    half1: Merged,
    half2: Merged,
    *,
    cell: gemmi.UnitCell,
    space_group: gemmi.SpaceGroup,
    n_shells: int = 10,
    d_min_angstrom: float | None = None,
) -> list[dict[str, float]]:
    """Rows per shell (low to high resolution) and a last row ``shell = "overall"``."""
    if len(merged.intensity) == 0:
        return []
    s_all = one_over_d(merged.hkl, cell)
    s_max = float(s_all.max()) if d_min_angstrom is None else 1.0 / d_min_angstrom
    s_min = float(s_all.min())
    edges = shell_edges(s_min, s_max, n_shells)
    tol = 1e-9 * s_max

    def shell_of(s: np.ndarray) -> np.ndarray:
        """Shell index of each 1/d (-1 outside [s_min, s_max])."""
        idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, n_shells - 1)
        return np.where((s >= s_min - tol) & (s <= s_max + tol), idx, -1)

    def key(m: Merged) -> np.ndarray:
        return np.column_stack([m.hkl, m.friedel.astype(np.int32)])

    k1, k2 = key(half1), key(half2)
    d1 = {tuple(r): i for i, r in enumerate(k1.tolist())}
    pairs = [(d1[tuple(r)], j) for j, r in enumerate(k2.tolist()) if tuple(r) in d1]
    i1 = np.array([p[0] for p in pairs], dtype=np.int64)
    i2 = np.array([p[1] for p in pairs], dtype=np.int64)
    a, b = half1.intensity[i1], half2.intensity[i2]
    s_pair = one_over_d(half1.hkl[i1], cell) if i1.size else np.zeros(0)

    # possible reflections (Laue class, systematic absences of the space group)
    possible = gemmi.make_miller_array(cell, space_group, 1.0 / (s_max + tol), 0.0, True)
    sh_pos = shell_of(one_over_d(possible, cell))
    laue_measured = np.unique(merged.hkl, axis=0)
    sh_laue = shell_of(one_over_d(laue_measured, cell))
    sh_all, sh_pair = shell_of(s_all), shell_of(s_pair)

    rows = []
    for label in [*range(n_shells), -1]:
        lo, hi = (edges[label], edges[label + 1]) if label >= 0 else (edges[0], edges[-1])

        def sel(sh: np.ndarray, label: int = label) -> np.ndarray:
            return sh == label if label >= 0 else sh >= 0

        inm, inp = sel(sh_all), sel(sh_pair)
        n_pos = int(sel(sh_pos).sum())
        n_meas_laue = int(sel(sh_laue).sum())
        cc = _cc(a[inp], b[inp])
        den = float(np.sum(a[inp] + b[inp]))
        with np.errstate(invalid="ignore", divide="ignore"):
            i_over_sigma = merged.intensity[inm] / merged.sigma[inm]
        rows.append(
            {
                "shell": "overall" if label < 0 else int(label + 1),
                "d_max_angstrom": float(1 / lo) if lo > 0 else float("inf"),
                "d_min_angstrom": float(1 / hi),
                "n_unique": int(inm.sum()),
                "n_possible": n_pos,
                "completeness": n_meas_laue / n_pos if n_pos else float("nan"),
                "multiplicity": float(merged.n_measurements[inm].mean()) if inm.any() else float("nan"),
                "mean_i_over_sigma": float(np.nanmean(i_over_sigma[np.isfinite(i_over_sigma)]))
                if np.isfinite(i_over_sigma).any()
                else float("nan"),
                "n_common": int(inp.sum()),
                "cc_half": cc,
                "cc_star": float(np.sqrt(2 * cc / (1 + cc))) if cc > 0 else float("nan"),
                "r_split": float(2 / np.sqrt(2) * np.sum(np.abs(a[inp] - b[inp])) / den) if den > 0 else float("nan"),
            }
        )
    return rows


def write_mtz(
    path: str,
    merged: Merged,
    laue: Merged,
    *,
    cell: gemmi.UnitCell,
    space_group: gemmi.SpaceGroup,
    title: str = "panreduce serial crystallography",
) -> None:
    """MTZ with H K L IMEAN SIGIMEAN NMEAS (``laue``: merged with Friedel mates together)
    and, when ``merged`` keeps Friedel mates apart, I(+) SIGI(+) I(−) SIGI(−) N(+) N(−)."""
    mtz = gemmi.Mtz(with_base=True)
    mtz.title = title
    mtz.spacegroup = space_group
    mtz.set_cell_for_all(cell)
    mtz.add_dataset("merged")
    for name, kind in (("IMEAN", "J"), ("SIGIMEAN", "Q"), ("NMEAS", "I")):
        mtz.add_column(name, kind)
    anomalous = bool(np.any(merged.friedel != 0))
    if anomalous:
        for name, kind in (
            ("I(+)", "K"),
            ("SIGI(+)", "M"),
            ("I(-)", "K"),
            ("SIGI(-)", "M"),
            ("N(+)", "I"),
            ("N(-)", "I"),
        ):
            mtz.add_column(name, kind)
    asu = gemmi.ReciprocalAsu(space_group)
    ops = space_group.operations()
    hkl = np.array([asu.to_asu(h, ops)[0] for h in laue.hkl.tolist()], dtype=np.int32).reshape(-1, 3)
    cols = [
        hkl.astype(np.float32),
        laue.intensity[:, None],
        laue.sigma[:, None],
        laue.n_measurements[:, None].astype(np.float32),
    ]
    if anomalous:
        lookup = {
            (tuple(h), int(f)): i
            for i, (h, f) in enumerate(zip(merged.hkl.tolist(), merged.friedel.tolist(), strict=True))
        }
        extra = np.full((len(hkl), 6), np.nan, np.float32)
        extra[:, 4:] = 0
        for r, h in enumerate(laue.hkl.tolist()):
            for f, c in ((1, 0), (-1, 2)):
                i = lookup.get((tuple(h), f), lookup.get((tuple(h), 0)) if f == 1 else None)
                if i is not None:
                    extra[r, c] = merged.intensity[i]
                    extra[r, c + 1] = merged.sigma[i]
                    extra[r, 4 + c // 2] = merged.n_measurements[i]
        cols.append(extra)
    data = np.hstack(cols).astype(np.float32)
    mtz.set_data(data)
    mtz.sort()
    mtz.history = ["panreduce serial_crystallography merge (process_hkl mean, sigma = pop. sd / sqrt(n))"]
    mtz.write_to_file(str(path))
