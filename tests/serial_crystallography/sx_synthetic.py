"""Synthetic serial-crystallography frames with a known answer: two panels with a gap, a
radial background with a water-like ring, Poisson noise and Gaussian Bragg spots at known
positions, plus a slow, literal peakfinder8 used as a reference."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import h5py
import numpy as np

# two 96 × 128 panels stacked in ss (the data array is 192 × 128), the lower one shifted
# by a 6-pixel gap; the beam lies between them
GEOM = """\
; two-panel test detector
res = 10000
clen = 0.1
photon_energy = 9000
dim0 = %
dim1 = ss
dim2 = fs
data = /entry_1/data_1/data
mask = /entry_1/data_1/mask
mask_good = 0x0
mask_bad = 0x1

top/min_fs = 0
top/max_fs = 127
top/min_ss = 0
top/max_ss = 95
top/fs = x
top/ss = y
top/corner_x = -64
top/corner_y = 3

bottom/min_fs = 0
bottom/max_fs = 127
bottom/min_ss = 96
bottom/max_ss = 191
bottom/fs = x
bottom/ss = y
bottom/corner_x = -64
bottom/corner_y = -99

bad_corner/min_fs = 0
bad_corner/max_fs = 3
bad_corner/min_ss = 0
bad_corner/max_ss = 3
"""
SHAPE = (192, 128)


def background(shape=SHAPE, *, level=20.0, ring_radius_px=60.0, ring_height=30.0) -> np.ndarray:
    """A smooth radial background (ADU) with a ring, for GEOM's pixel layout."""
    ss, fs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    x = -64 + fs + 0.5
    y = np.where(ss < 96, 3 + ss + 0.5, -99 + (ss - 96) + 0.5)
    r = np.hypot(x, y)
    return level * (1 + 30 / (r + 10)) + ring_height * np.exp(-0.5 * ((r - ring_radius_px) / 4.0) ** 2)


def spots(rng, n, *, shape=SHAPE, margin=6, min_sep=8.0):
    """n spot centres (fs, ss) inside panels, away from panel edges and each other."""
    out: list[tuple[float, float]] = []
    while len(out) < n:
        fs = rng.uniform(margin, shape[1] - margin)
        ss = rng.uniform(margin, shape[0] - margin)
        if abs(ss - 96) < margin or (fs < 10 and ss < 10):
            continue
        if all((fs - a) ** 2 + (ss - b) ** 2 > min_sep**2 for a, b in out):
            out.append((fs, ss))
    return np.array(out)


def render(centres, amplitudes, *, sigma_px=0.8, shape=SHAPE, rng=None, bg=None) -> np.ndarray:
    """Background + Gaussian spots (peak-pixel amplitude ``amplitudes``), Poisson noise."""
    ss, fs = np.mgrid[0 : shape[0], 0 : shape[1]].astype(float)
    img = background(shape) if bg is None else bg.copy()
    for (cf, cs), a in zip(centres, amplitudes, strict=True):
        img += a * np.exp(-0.5 * ((fs - cf) ** 2 + (ss - cs) ** 2) / sigma_px**2)
    if rng is not None:
        img = rng.poisson(img).astype(np.float64)
    return img


def write_stack(path: Path, frames: np.ndarray, mask: np.ndarray | None = None) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=frames.astype(np.int32))
        if mask is not None:
            f.create_dataset("entry_1/data_1/mask", data=mask.astype(np.uint16))
    return path


def reference_peakfinder8(
    data, r_px, panel_id, bad, *, threshold, min_snr, min_pix_count, max_pix_count, local_bg_radius, max_n_peaks=2048
):
    """A literal, loop-by-loop peakfinder8 following the published steps (slow: tests only)."""
    data = np.asarray(data, dtype=np.float64)
    ny, nx = data.shape
    rbin = np.rint(r_px).astype(int)
    valid = ~bad & (panel_id >= 0)
    nb = rbin.max() + 1
    up = np.full(nb, 1e9)
    lo = np.full(nb, -1e9)
    mean = np.zeros(nb)
    for _ in range(5):
        s1 = np.zeros(nb)
        s2 = np.zeros(nb)
        c = np.zeros(nb)
        for j in range(ny):
            for i in range(nx):
                if valid[j, i]:
                    b = rbin[j, i]
                    v = data[j, i]
                    if lo[b] < v < up[b]:
                        s1[b] += v
                        s2[b] += v * v
                        c[b] += 1
        for b in range(nb):
            if c[b] > 0:
                mean[b] = s1[b] / c[b]
                sd = np.sqrt(max(s2[b] / c[b] - mean[b] ** 2, 0.0))
                up[b] = max(mean[b] + min_snr * sd, threshold)
                lo[b] = mean[b] - min_snr * sd
            else:
                up[b] = np.inf
    above = np.zeros_like(valid)
    for j in range(ny):
        for i in range(nx):
            above[j, i] = valid[j, i] and data[j, i] > up[rbin[j, i]]
    visited = np.zeros_like(valid)
    peaks = []
    panels = sorted(set(panel_id[panel_id >= 0].ravel().tolist()))
    for p in panels:
        for j in range(ny):
            for i in range(nx):
                if panel_id[j, i] != p or visited[j, i] or not above[j, i]:
                    continue
                pix = []
                q = deque([(j, i)])
                visited[j, i] = True
                while q:
                    a, b = q.popleft()
                    pix.append((a, b))
                    for da in (-1, 0, 1):
                        for db in (-1, 0, 1):
                            y, x = a + da, b + db
                            if (
                                0 <= y < ny
                                and 0 <= x < nx
                                and not visited[y, x]
                                and above[y, x]
                                and panel_id[y, x] == p
                            ):
                                visited[y, x] = True
                                q.append((y, x))
                if not (min_pix_count <= len(pix) <= max_pix_count):
                    continue
                vals = np.array([data[a, b] for a, b in pix])
                if vals.sum() <= 0:
                    continue
                cfs = sum(data[a, b] * b for a, b in pix) / vals.sum()
                css = sum(data[a, b] * a for a, b in pix) / vals.sum()
                ic, jc = int(np.rint(cfs)), int(np.rint(css))
                ring = 2 * local_bg_radius
                pset = set(pix)
                bgv = []
                for dy in range(-ring, ring):
                    for dx in range(-ring, ring):
                        y, x = jc + dy, ic + dx
                        if dx * dx + dy * dy > ring * ring or not (0 <= y < ny and 0 <= x < nx):
                            continue
                        if panel_id[y, x] != p or not valid[y, x] or (y, x) in pset or above[y, x]:
                            continue
                        bgv.append(data[y, x])
                if bgv:
                    bm, bs, bmax = np.mean(bgv), np.std(bgv), max(bgv)
                else:
                    bm, bs, bmax = mean[rbin[jc, ic]], 0.01, -np.inf
                total = float(np.sum(vals - bm))
                snr = total / bs if bs > 0 else np.inf
                if not (0 <= jc < ny and 0 <= ic < nx) or panel_id[jc, ic] != p:
                    continue
                if snr < min_snr or (vals.max() - bm) < (bmax - bm):
                    continue
                peaks.append((cfs, css, total, len(pix)))
                if len(peaks) >= max_n_peaks:
                    return peaks
    return peaks
