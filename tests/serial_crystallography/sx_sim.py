"""A ground-truth serial crystallography experiment: still frames of a random-atom P222
structure (structure factors from gemmi) in a known orthorhombic cell, random orientations,
partialities from the Ewald offset (Gaussian rocking curve), Poisson noise, a water ring,
four panels with gaps, and blank frames among them.

Spot positions are computed here on their own (flat panels at z = clen, fs = x, ss = y),
not with the code under test."""

from __future__ import annotations

from dataclasses import dataclass

import gemmi
import numpy as np
from scipy.spatial.transform import Rotation

CELL = (36.0, 42.0, 48.0, 90.0, 90.0, 90.0)
WAVELENGTH = 1.3  # Å
PHOTON_ENERGY_EV = 12398.419843320026 / WAVELENGTH
CLEN_M = 0.1
RES = 5000.0  # px/m (200 µm pixels)
PANEL = 160  # px, square panels
GAP = 8  # px between panels
PROFILE_RADIUS = 0.003  # Å⁻¹ (at two sigma of the rocking curve)
SPOT_SIGMA_PX = 0.8

# 2 x 2 panels, each 160 x 160 in a (320, 320) array; in the lab they are separated by GAP
# pixels around the beam (the gap pixels do not exist in the data)
_H = PANEL + GAP / 2


def _panel(name: str, min_fs: int, min_ss: int, cx: float, cy: float) -> str:
    return (
        f"{name}/min_fs = {min_fs}\n{name}/max_fs = {min_fs + PANEL - 1}\n"
        f"{name}/min_ss = {min_ss}\n{name}/max_ss = {min_ss + PANEL - 1}\n"
        f"{name}/fs = x\n{name}/ss = y\n{name}/corner_x = {cx}\n{name}/corner_y = {cy}\n\n"
    )


GEOM = (
    "; four-panel simulated detector\n"
    f"res = {RES}\nclen = {CLEN_M}\nphoton_energy = {PHOTON_ENERGY_EV:.6f}\nadu_per_photon = 1\n"
    "dim0 = %\ndim1 = ss\ndim2 = fs\ndata = /entry_1/data_1/data\n\n"
    + _panel("p0", 0, 0, -_H, -_H)
    + _panel("p1", PANEL, 0, GAP / 2, -_H)
    + _panel("p2", 0, PANEL, -_H, GAP / 2)
    + _panel("p3", PANEL, PANEL, GAP / 2, GAP / 2)
)
SHAPE = (2 * PANEL, 2 * PANEL)


def lab_xy_px() -> tuple[np.ndarray, np.ndarray]:
    """Lab x, y (pixels) of every pixel centre of the data array."""
    ss, fs = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(float)
    x = np.where(fs < PANEL, -_H + fs + 0.5, GAP / 2 + fs - PANEL + 0.5)
    y = np.where(ss < PANEL, -_H + ss + 0.5, GAP / 2 + ss - PANEL + 0.5)
    return x, y


def random_structure(rng, n_asu: int = 60, *, b_iso: float = 12.0) -> gemmi.Structure:
    """n_asu random C/N/O atoms, expanded by P222's operators, in a P 1 model."""
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(*CELL)
    st.spacegroup_hm = "P 1"
    model = gemmi.Model("1")
    chain = gemmi.Chain("A")
    frac = rng.uniform(0, 1, (n_asu, 3))
    elements = rng.choice(["C", "N", "O"], n_asu, p=[0.6, 0.2, 0.2])
    n = 0
    for sx, sy, sz in ((1, 1, 1), (-1, -1, 1), (-1, 1, -1), (1, -1, -1)):
        for f, el in zip(frac, elements, strict=True):
            res = gemmi.Residue()
            res.name = "UNK"
            n += 1
            res.seqid = gemmi.SeqId(str(n))
            atom = gemmi.Atom()
            atom.name = el
            atom.element = gemmi.Element(el)
            atom.pos = st.cell.orthogonalize(gemmi.Fractional(sx * f[0] % 1, sy * f[1] % 1, sz * f[2] % 1))
            atom.b_iso = b_iso
            atom.occ = 1.0
            res.add_atom(atom)
            chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    return st


class TrueIntensities:
    """|F(hkl)|² of a structure, computed by gemmi on demand and cached."""

    def __init__(self, st: gemmi.Structure) -> None:
        self.st = st
        self.calc = gemmi.StructureFactorCalculatorX(st.cell)
        self.cache: dict[tuple[int, int, int], float] = {}

    def __call__(self, hkl: np.ndarray) -> np.ndarray:
        out = np.empty(len(hkl))
        for i, h in enumerate(np.asarray(hkl, dtype=int)):
            key = (int(h[0]), int(h[1]), int(h[2]))
            v = self.cache.get(key)
            if v is None:
                v = abs(self.calc.calculate_sf_from_model(self.st[0], list(key))) ** 2
                self.cache[key] = v
            out[i] = v
        return out


@dataclass
class Simulation:
    frames: np.ndarray  # (n, ss, fs) float
    crystal: np.ndarray  # (n,) bool: a crystal was in the beam
    rotations: list[np.ndarray | None]  # U (q_lab = U·B·h), None for a blank
    spots: list[np.ndarray]  # per frame (m, 2): (fs, ss) of spots with ≥ ``strong`` photons
    truth: TrueIntensities


def reciprocal_basis() -> np.ndarray:
    """B from gemmi's fractionalisation matrix: q_cart = Fᵀ·h."""
    return np.array(gemmi.UnitCell(*CELL).frac.mat).T


def background() -> np.ndarray:
    """Photons per pixel: a smooth radial fall-off and a water ring at 3.1 Å."""
    x, y = lab_xy_px()
    r_m = np.hypot(x, y) / RES
    q = 2 * np.sin(np.arctan2(r_m, CLEN_M) / 2) / WAVELENGTH
    return 6.0 + 40.0 / (1 + (q / 0.05) ** 2) + 25.0 * np.exp(-0.5 * ((q - 1 / 3.1) / 0.02) ** 2)


def simulate(
    n_frames: int, *, seed: int = 1, blank_fraction: float = 0.15, scale: float = 0.25, strong: float = 150.0
) -> Simulation:
    rng = np.random.default_rng(seed)
    truth = TrueIntensities(random_structure(rng))
    B = reciprocal_basis()
    k = 1 / WAVELENGTH
    lim = [int(0.36 * CELL[i]) for i in range(3)]
    hkl = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in lim], indexing="ij"), axis=-1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    bg = background()
    ny, nx = SHAPE
    d = np.arange(-4, 5)
    dy, dx = (a.ravel() for a in np.meshgrid(d, d, indexing="ij"))
    frames = np.empty((n_frames, *SHAPE))
    crystal = rng.uniform(size=n_frames) >= blank_fraction
    rotations: list[np.ndarray | None] = []
    spots: list[np.ndarray] = []
    for n in range(n_frames):
        img = bg.copy()
        if not crystal[n]:
            rotations.append(None)
            spots.append(np.zeros((0, 2)))
            frames[n] = rng.poisson(img)
            continue
        U = Rotation.random(random_state=rng).as_matrix()
        q = hkl @ (U @ B).T
        kout = q.copy()
        kout[:, 2] += k
        e = np.linalg.norm(kout, axis=1) - k
        sel = (np.abs(e) < 2 * PROFILE_RADIUS) & (kout[:, 2] > 0)
        kout, e, h = kout[sel], e[sel], hkl[sel]
        x = CLEN_M * kout[:, 0] / kout[:, 2] * RES  # lab pixels
        y = CLEN_M * kout[:, 1] / kout[:, 2] * RES
        # lab → array coordinates (integer = pixel centre); drop spots in the gaps / off the detector
        fs = np.where(x < -GAP / 2, x + _H, x - GAP / 2 + PANEL) - 0.5
        ss = np.where(y < -GAP / 2, y + _H, y - GAP / 2 + PANEL) - 0.5
        on = (np.abs(x) > GAP / 2) & (np.abs(y) > GAP / 2) & (np.abs(x) < _H) & (np.abs(y) < _H)
        fs, ss, e, h = fs[on], ss[on], e[on], h[on]
        part = np.exp(-0.5 * (e / (PROFILE_RADIUS / 2)) ** 2)
        photons = scale * truth(h) * part
        # Gaussian spots, each clipped to its own panel (a 9 x 9 window)
        yy = np.rint(ss).astype(int)[:, None] + dy
        xx = np.rint(fs).astype(int)[:, None] + dx
        w = np.exp(-0.5 * ((xx - fs[:, None]) ** 2 + (yy - ss[:, None]) ** 2) / SPOT_SIGMA_PX**2)
        w /= 2 * np.pi * SPOT_SIGMA_PX**2
        same = (
            (yy >= 0)
            & (yy < ny)
            & (xx >= 0)
            & (xx < nx)
            & ((yy >= PANEL) == (ss[:, None] >= PANEL - 0.5))
            & ((xx >= PANEL) == (fs[:, None] >= PANEL - 0.5))
        )
        np.add.at(img, (yy[same], xx[same]), (photons[:, None] * w)[same])
        frames[n] = rng.poisson(img)
        rotations.append(U)
        strong_spot = (photons > strong) & (fs > 2) & (fs < nx - 3) & (ss > 2) & (ss < ny - 3)
        spots.append(np.column_stack([fs[strong_spot], ss[strong_spot]]))
    return Simulation(frames, crystal, rotations, spots, truth)


def rotation_error_deg(u_est: np.ndarray, u_true: np.ndarray) -> float:
    """Angle (deg) between two orientations, the smallest over the lattice's 222 rotations."""
    best = 180.0
    for r in (np.diag([1, 1, 1]), np.diag([-1, -1, 1]), np.diag([-1, 1, -1]), np.diag([1, -1, -1])):
        m = (u_true @ r).T @ u_est
        best = min(best, float(np.degrees(np.arccos(np.clip((np.trace(m) - 1) / 2, -1, 1)))))
    return best
