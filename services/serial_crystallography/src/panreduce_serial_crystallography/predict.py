"""Prediction of the reflections of an indexed still: the lattice points ``q = M·h`` (M = U·B,
Å⁻¹) whose distance from the Ewald sphere ``|q + kẑ| = k`` (k = 1/λ) is below the profile
radius, projected along ``q + kẑ`` onto the panels of a CrystFEL geometry.

The partiality of a reflection with excitation error ``e`` and profile radius ``R`` is
modelled as a Gaussian rocking curve, ``exp(−e²/(2·(R/2)²))`` (R at two sigma), the model
the simulation of the tests uses too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from panreduce_serial_crystallography.geometry import Detector
from panreduce_serial_crystallography.index import allowed_by_centering, peak_lab_positions, scattering_vectors

__all__ = ["Predicted", "detector_q_max", "partiality", "predict_reflections", "project_to_detector"]


@dataclass(frozen=True)
class Predicted:
    hkl: np.ndarray  # (n, 3) int
    fs: np.ndarray  # array coordinates (integer = pixel centre)
    ss: np.ndarray
    panel: np.ndarray  # int16 panel index
    excitation_error: np.ndarray  # Å⁻¹, signed: > 0 outside the sphere
    one_over_d: np.ndarray  # Å⁻¹

    def __len__(self) -> int:
        return int(self.fs.size)


def partiality(excitation_error: np.ndarray, profile_radius: float) -> np.ndarray:
    """Gaussian rocking curve with ``profile_radius`` at two standard deviations."""
    s = profile_radius / 2.0
    return np.exp(-0.5 * (np.asarray(excitation_error) / s) ** 2)


def detector_q_max(detector: Detector, *, clen_m: float, wavelength_angstrom: float) -> float:
    """The largest |q| (Å⁻¹) any panel corner reaches."""
    fs, ss, pid = [], [], []
    for i, p in enumerate(detector.panels):
        for f in (p.min_fs - 0.5, p.max_fs + 0.5):
            for s in (p.min_ss - 0.5, p.max_ss + 0.5):
                fs.append(f)
                ss.append(s)
                pid.append(i)
    xyz = peak_lab_positions(detector, np.array(fs), np.array(ss), np.array(pid), clen_m=clen_m)
    return float(np.linalg.norm(scattering_vectors(xyz, wavelength_angstrom), axis=1).max())


def project_to_detector(
    k_out: np.ndarray, detector: Detector, *, clen_m: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fs, ss, panel) where rays from the sample along ``k_out`` (n, 3) meet the panels
    (array coordinates, integer = pixel centre; panel −1 where no panel is hit)."""
    n = len(k_out)
    fs_out = np.full(n, np.nan)
    ss_out = np.full(n, np.nan)
    pan = np.full(n, -1, np.int16)
    for i, p in enumerate(detector.panels):
        res = p.res_px_per_m
        f = np.array(p.fs) / res
        s = np.array(p.ss) / res
        p0 = np.array([p.corner_x / res, p.corner_y / res, clen_m])
        normal = np.cross(f, s)
        denom = k_out @ normal
        free = pan < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (p0 @ normal) / denom
        hit = free & (t > 0) & np.isfinite(t)
        if not np.any(hit):
            continue
        rel = t[hit, None] * k_out[hit] - p0
        g = np.array([[f @ f, f @ s], [s @ f, s @ s]])
        ab = np.linalg.solve(g, np.stack([rel @ f, rel @ s]))
        a, b = ab[0], ab[1]
        inside = (a >= 0) & (a < p.width) & (b >= 0) & (b < p.height)
        idx = np.nonzero(hit)[0][inside]
        fs_out[idx] = p.min_fs + a[inside] - 0.5
        ss_out[idx] = p.min_ss + b[inside] - 0.5
        pan[idx] = i
    return fs_out, ss_out, pan


def predict_reflections(
    basis: np.ndarray,
    detector: Detector,
    *,
    clen_m: float,
    wavelength_angstrom: float,
    profile_radius: float,
    centering: str = "P",
    d_min_angstrom: float | None = None,
) -> Predicted:
    """The reflections of the lattice ``basis`` (columns a*, b*, c* in the lab, Å⁻¹) within
    ``profile_radius`` (Å⁻¹) of the Ewald sphere that fall on a panel."""
    k = 1.0 / wavelength_angstrom
    q_max = detector_q_max(detector, clen_m=clen_m, wavelength_angstrom=wavelength_angstrom)
    if d_min_angstrom is not None:
        q_max = min(q_max, 1.0 / d_min_angstrom)
    real = np.linalg.inv(basis)  # rows a, b, c (Å): h_i = a_i · q
    lim = [math.floor(q_max * float(np.linalg.norm(real[i]))) for i in range(3)]
    h = np.arange(-lim[0], lim[0] + 1)
    out_hkl, out_q = [], []
    kk = np.arange(-lim[1], lim[1] + 1)
    ll = np.arange(-lim[2], lim[2] + 1)
    kl = np.stack(np.meshgrid(kk, ll, indexing="ij"), axis=-1).reshape(-1, 2)
    for hv in h:  # one h layer at a time: memory bounded for large cells
        hkl = np.column_stack([np.full(len(kl), hv), kl])
        q = hkl @ basis.T
        c = q.copy()
        c[:, 2] += k
        e = np.linalg.norm(c, axis=1) - k
        keep = (np.abs(e) < profile_radius) & (np.einsum("ij,ij->i", q, q) <= q_max * q_max) & np.any(hkl != 0, axis=1)
        keep &= allowed_by_centering(hkl, centering)
        out_hkl.append(hkl[keep])
        out_q.append(q[keep])
    hkl = np.concatenate(out_hkl).astype(np.int32)
    q = np.concatenate(out_q)
    k_out = q.copy()
    k_out[:, 2] += k
    e = np.linalg.norm(k_out, axis=1) - k
    fs, ss, pan = project_to_detector(k_out, detector, clen_m=clen_m)
    on = pan >= 0
    return Predicted(hkl[on], fs[on], ss[on], pan[on], e[on], np.linalg.norm(q[on], axis=1))
