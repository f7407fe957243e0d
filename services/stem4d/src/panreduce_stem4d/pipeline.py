"""The reduction of one scan, in three named steps (no transport, no kit):

1. ``calibrate``: a mean pattern from rows sampled over the whole scan (the same for every
   shard) -> beam centre and disc radius, optional ellipse and its affine correction;
2. ``stream``: one pass over a block of scan rows -> virtual images, raw CoM, exact sums,
   max pattern, and (optionally) a lattice per position (:class:`Partial`);
3. ``finish``: the Partial of the whole scan -> calibrated maps (descan removed, DPC in the
   scan frame, phase, strain) (:class:`Maps`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panreduce_stem4d import calibration as cal
from panreduce_stem4d import dpc
from panreduce_stem4d import strain as st
from panreduce_stem4d.detectors import Geometry, MaskSpec, parse_mask
from panreduce_stem4d.stream import Accumulator

ReadRows = Callable[[int, int], np.ndarray]
# read_frames(f0, f1, out): frames [f0, f1) in scan order (flat over scan y, x) into ``out``
# ((f1 - f0, dy, dx), C-contiguous, native), no allocation
ReadFrames = Callable[[int, int, np.ndarray], None]
FRAME_CHUNK_BYTES = 4 << 20  # the reused buffer of the compiled path: stays in the L2/L3 cache
Progress = Callable[[float, str], None]


@dataclass
class Calibration:
    geometry: Geometry
    disc_radius_px: float
    sample_mean: np.ndarray  # mean pattern of the sampled rows
    ellipse: cal.Ellipse | None = None
    residual_ellipticity: float | None = None
    detectors: list[MaskSpec] = field(default_factory=list)
    com_mrad: float | None = None
    lattice_origin_xy: np.ndarray | None = None  # direct beam (x, y) px, corrected frame
    lattice_basis: np.ndarray | None = None  # guessed basis (columns g1, g2), raw detector px
    template: np.ndarray | None = None


def sample_rows(n_rows: int, k: int = 8) -> list[int]:
    """Up to ``k`` rows spread evenly over the scan."""
    return sorted({round(x) for x in np.linspace(0, n_rows - 1, min(k, n_rows))})


def calibrate(
    read_rows: ReadRows,
    shape: tuple[int, int, int, int],
    *,
    mrad_per_px: float,
    center_px: tuple[float, float] | None = None,
    ellipse_ring_mrad: tuple[float, float] | None = None,
    bf_mrad: float | None = None,
    adf_mrad: tuple[float, float] | None = None,
    haadf_mrad: tuple[float, float] | None = None,
    masks: dict[str, str] | None = None,
    com_mrad: float | None = None,
    strain: bool = False,
    vacuum_frame: np.ndarray | None = None,
    disc_threshold: float = 0.1,
) -> Calibration:
    ny, nx, dy, dx = shape
    acc = np.zeros((dy, dx), np.float64)
    rows = sample_rows(ny)
    for r in rows:
        acc += read_rows(r, r + 1).reshape(nx, dy, dx).sum(axis=0, dtype=np.float64)
    mean = acc / (len(rows) * nx)
    disc = cal.fit_disc(mean)
    centre = tuple(center_px) if center_px is not None else disc.center_yx_px
    affine = np.eye(2)
    ellipse = residual = None
    if ellipse_ring_mrad is not None:
        lo, hi = (v / mrad_per_px for v in ellipse_ring_mrad)
        ellipse = cal.fit_ellipse_ring(mean, centre, lo, hi)
        residual = cal.residual_ellipticity(mean, ellipse, lo, hi)
        affine = ellipse.affine_xy()
        if center_px is None:
            centre = (ellipse.y0, ellipse.x0)
    geometry = Geometry((float(centre[0]), float(centre[1])), mrad_per_px, affine)
    r_bf = bf_mrad if bf_mrad is not None else 1.2 * disc.radius_px * mrad_per_px
    specs = [MaskSpec("bf", 0.0, r_bf)]
    specs.append(MaskSpec("adf", *(adf_mrad if adf_mrad is not None else (1.5 * r_bf, 4.0 * r_bf))))
    if haadf_mrad is not None:
        specs.append(MaskSpec("haadf", *haadf_mrad))
    for name, text in (masks or {}).items():
        if name in ("bf", "adf", "haadf"):
            raise ValueError(f"mask {name!r}: the name is taken by a built-in detector")
        specs.append(parse_mask(name, text))
    out = Calibration(
        geometry, disc.radius_px, mean, ellipse, residual, specs, com_mrad if com_mrad is not None else r_bf
    )
    if strain:
        probe = vacuum_frame if vacuum_frame is not None else mean
        pdisc = cal.fit_disc(probe)
        out.template = st.probe_template(probe, pdisc.center_yx_px, pdisc.radius_px)
        finder = st.DiscFinder(out.template, pdisc.radius_px, min_relative=disc_threshold)
        pts = finder.find(mean)
        origin = np.array([centre[1], centre[0]])
        if len(pts):
            origin = pts[np.argmin(np.hypot(*(pts - origin).T))]
        out.lattice_origin_xy = origin
        out.lattice_basis = st.guess_basis(pts, origin, min_length_px=1.5 * pdisc.radius_px)
        out.disc_radius_px = pdisc.radius_px
    return out


@dataclass
class Partial:
    """What the pass over rows [row0, row1) accumulated (raw detector frame)."""

    row0: int
    row1: int
    virtual: dict[str, np.ndarray]
    com_raw_yx_px: np.ndarray  # (2, rows, nx)
    total_counts: np.ndarray
    sum_pattern: np.ndarray
    max_pattern: np.ndarray
    lattice: np.ndarray | None = None  # (rows, nx, 2, 2) bases, corrected detector px; NaN where no fit
    n_discs: np.ndarray | None = None

    @staticmethod
    def concatenate(parts: list[Partial]) -> Partial:
        parts = sorted(parts, key=lambda p: p.row0)
        for a, b in itertools.pairwise(parts):
            if a.row1 != b.row0:
                raise ValueError(f"shard rows do not join: {a.row0}-{a.row1} then {b.row0}-{b.row1}")
        lat = [p.lattice for p in parts]
        return Partial(
            parts[0].row0,
            parts[-1].row1,
            {k: np.concatenate([p.virtual[k] for p in parts]) for k in parts[0].virtual},
            np.concatenate([p.com_raw_yx_px for p in parts], axis=1),
            np.concatenate([p.total_counts for p in parts]),
            np.sum([p.sum_pattern for p in parts], axis=0, dtype=np.uint64),
            np.max([p.max_pattern for p in parts], axis=0),
            np.concatenate(lat) if all(x is not None for x in lat) else None,
            np.concatenate([p.n_discs for p in parts]) if all(p.n_discs is not None for p in parts) else None,
        )


def rows_per_block(shape: tuple[int, int, int, int], itemsize: int, budget_mb: int) -> int:
    """Scan rows per block so a block, its float32 copy and the products fit ``budget_mb``."""
    ny, nx, dy, dx = shape
    per_row = nx * dy * dx * (itemsize + 4)
    return int(max(1, min(ny, (budget_mb << 20) // max(per_row, 1))))


def stream(
    read_rows: ReadRows,
    shape: tuple[int, int, int, int],
    calib: Calibration,
    *,
    row0: int,
    row1: int,
    itemsize: int,
    budget_mb: int = 256,
    backend: str = "numpy",
    device: str = "cpu",
    strain: bool = False,
    progress: Progress | None = None,
    read_frames: ReadFrames | None = None,
    dtype: np.dtype | None = None,
) -> Partial:
    """One pass over rows [row0, row1). With ``read_frames`` and the frames' ``dtype`` given
    and the compiled kernel applicable (unsigned frames, binary non-overlapping masks, no
    strain), frames are read in chunks of ``FRAME_CHUNK_BYTES`` into one reused buffer (no
    allocation or page faults per block, the chunk still in cache for the kernel); otherwise
    ``read_rows`` gives blocks of rows within ``budget_mb``."""
    _ny, nx, dy, dx = shape
    geo = calib.geometry
    masks = {m.name: m.render(geo, (dy, dx)) for m in calib.detectors}
    if calib.com_mrad is not None:
        com_mask = MaskSpec("com", 0.0, calib.com_mrad).render(geo, (dy, dx))
    else:
        com_mask = np.ones((dy, dx), np.float32)
    acc = Accumulator((row1 - row0, nx), (dy, dx), masks, com_mask, backend=backend, device=device)
    if read_frames is not None and dtype is not None and not strain and acc.compiled_for(dtype):
        _stream_frames(read_frames, acc, np.dtype(dtype), (row0, row1), nx, (dy, dx), progress)
        res = acc.result()
        return Partial(
            row0, row1, res.virtual, res.com_raw_yx_px, res.total_counts, res.sum_pattern, res.max_pattern, None, None
        )
    block = rows_per_block(shape, itemsize, budget_mb)
    lattice = n_discs = finder = None
    if strain:
        assert calib.template is not None and calib.lattice_basis is not None
        finder = st.DiscFinder(calib.template, calib.disc_radius_px)
        lattice = np.full((row1 - row0, nx, 2, 2), np.nan)
        n_discs = np.zeros((row1 - row0, nx), np.int32)
    for r in range(row0, row1, block):
        r1 = min(r + block, row1)
        frames = read_rows(r, r1)
        acc.add(frames, r - row0)
        if strain:
            basis_raw = calib.lattice_basis
            origin_raw = calib.lattice_origin_xy
            for i in range(r1 - r):
                for j in range(nx):
                    pts = finder.find(frames[i, j])
                    if len(pts) < 3:
                        continue
                    o = pts[np.argmin(np.hypot(*(pts - origin_raw).T))]
                    fit = st.fit_lattice(pts, o, basis_raw)
                    if fit is not None:
                        lattice[r - row0 + i, j] = geo.affine_xy @ fit.basis
                        n_discs[r - row0 + i, j] = fit.n_discs
        if progress is not None:
            progress((r1 - row0) / max(row1 - row0, 1), f"rows {r1}/{row1 - row0 + row0}")
    res = acc.result()
    return Partial(
        row0, row1, res.virtual, res.com_raw_yx_px, res.total_counts, res.sum_pattern, res.max_pattern, lattice, n_discs
    )


def _stream_frames(
    read_frames: ReadFrames,
    acc: Accumulator,
    dtype: np.dtype,
    rows: tuple[int, int],
    nx: int,
    det: tuple[int, int],
    progress: Progress | None,
) -> None:
    row0, row1 = rows
    f_start, f_end = row0 * nx, row1 * nx
    per = max(1, FRAME_CHUNK_BYTES // (det[0] * det[1] * dtype.itemsize))
    buf = np.empty((per, *det), dtype)
    report_every = max(1, (f_end - f_start) // 100)
    last = f_start
    for f in range(f_start, f_end, per):
        n = min(per, f_end - f)
        read_frames(f, f + n, buf[:n])
        acc.add_frames(buf[:n].reshape(n, -1), f - f_start)
        if progress is not None and (f + n - last >= report_every or f + n == f_end):
            last = f + n
            done_rows = (f + n - f_start) // nx
            progress((f + n - f_start) / max(f_end - f_start, 1), f"rows {done_rows}/{row1 - row0}")


@dataclass
class Maps:
    """Calibrated images on the scan grid and what was fitted."""

    images: dict[str, np.ndarray]  # name -> (ny, nx)
    units: dict[str, str]
    fitted: dict[str, Any]


def finish(
    part: Partial,
    calib: Calibration,
    *,
    descan: str = "plane",
    rotation_deg: float | None = None,
    flip: bool = False,
    step_nm: tuple[float, float] | None = None,
    energy_kev: float | None = None,
    want_phase: bool = True,
    strain_reference: tuple[int, int, int, int] | None = None,
    strain_frame: str = "scan",
) -> Maps:
    """``strain_frame``: "scan" (the bases turned by the scan–detector rotation and flip, so
    εxx is along the scan's x) or "detector" (the corrected detector's x, y)."""
    geo = calib.geometry
    images: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    for name, img in part.virtual.items():
        images[name], units[name] = img, "counts"
    images["total_counts"], units["total_counts"] = part.total_counts.astype(np.float64), "counts"
    cy, cx = part.com_raw_yx_px
    a = np.asarray(geo.affine_xy)
    ox, oy = cx - geo.center_yx_px[1], cy - geo.center_yx_px[0]
    ux, uy = a[0, 0] * ox + a[0, 1] * oy, a[1, 0] * ox + a[1, 1] * oy
    order = {"none": None, "mean": 0, "plane": 1, "quadratic": 2}[descan]
    fitted: dict[str, Any] = {"descan": descan}
    if order is not None:
        dx_map, dy_map = cal.fit_descan(ux, order=order), cal.fit_descan(uy, order=order)
        images["descan_x"], images["descan_y"] = dx_map * geo.mrad_per_px, dy_map * geo.mrad_per_px
        units["descan_x"] = units["descan_y"] = "mrad"
        ux, uy = ux - dx_map, uy - dy_map
    small = min(ux.shape) < 2  # curl, divergence and so the rotation need at least 2 x 2 positions
    if rotation_deg is None and small:
        fitted["rotation_deg"], fitted["rotation_source"] = 0.0, "none: fewer than 2 x 2 scan positions (no curl)"
    elif rotation_deg is None:
        rot = dpc.find_rotation(ux, uy, flip=flip)
        fitted["rotation_deg"], fitted["rotation_source"] = rot.rotation_deg, "minimum curl"
    else:
        fitted["rotation_deg"], fitted["rotation_source"] = float(rotation_deg), "given"
    fitted["flip"] = bool(flip)
    fx, fy = dpc.to_scan_frame(ux * geo.mrad_per_px, uy * geo.mrad_per_px, fitted["rotation_deg"], flip)
    images["com_x"], images["com_y"] = fx, fy
    images["com_magnitude"] = np.hypot(fx, fy)
    sy, sx = step_nm if step_nm is not None else (1.0, 1.0)
    per = "mrad/nm" if step_nm is not None else "mrad/step"
    units.update(com_x="mrad", com_y="mrad", com_magnitude="mrad")
    if not small:
        images["divergence"] = dpc.divergence(fx, fy, sx, sy)
        images["curl"] = dpc.curl(fx, fy, sx, sy)
        units.update(divergence=per, curl=per)
        fitted["curl_rms"] = float(np.sqrt(np.nanmean(images["curl"] ** 2)))
        fitted["divergence_rms"] = float(np.sqrt(np.nanmean(images["divergence"] ** 2)))
    if want_phase and energy_kev is not None and step_nm is not None and min(fx.shape) >= 2:
        lam = cal.electron_wavelength_nm(energy_kev)
        images["dpc_phase"], units["dpc_phase"] = dpc.phase_from_com(fx, fy, step_nm=step_nm, wavelength_nm=lam), "rad"
        fitted["wavelength_nm"] = lam
    if part.lattice is not None:
        ny, nx = part.lattice.shape[:2]
        r0, r1, c0, c1 = strain_reference if strain_reference is not None else (0, ny, 0, nx)
        region = part.lattice[r0 : min(r1, ny), c0 : min(c1, nx)].reshape(-1, 2, 2)
        region = region[np.all(np.isfinite(region), axis=(1, 2))]
        if len(region) == 0:
            raise ValueError("no lattice was fitted inside the strain reference region")
        ref = np.median(region, axis=0)
        bases, ref_f = part.lattice, ref
        if strain_frame == "scan":
            m = dpc.detector_to_scan(fitted["rotation_deg"], flip)
            bases, ref_f = m @ part.lattice, m @ ref
        elif strain_frame != "detector":
            raise ValueError(f"strain_frame: 'scan' or 'detector', got {strain_frame!r}")
        fitted["strain_frame"] = strain_frame
        for k, v in st.strain_from_bases(bases, ref_f).items():
            key = f"strain_{k}" if k != "rotation" else "lattice_rotation"
            images[key], units[key] = v, "rad" if k == "rotation" else "1"
        fitted["reference_basis_px"] = ref.tolist()
        fitted["reference_basis_mrad"] = (ref * geo.mrad_per_px).tolist()
        fitted["lattice_fitted_fraction"] = float(np.isfinite(part.lattice[..., 0, 0]).mean())
    return Maps(images, units, fitted)
