"""PXCT: from reconstructed ptychographic projections to a 3-D volume (the tomographic stage).

Pure functions on arrays, then the glue that takes the technique's reconstructions and
writes an NXtomoproc file. The steps (Guizar-Sicairos et al., Opt. Express 19, 21345 (2011),
"Phase tomography from x-ray coherent diffractive imaging projections"):

1. **Unwrap** each projection's phase (``skimage.restoration.unwrap_phase``, Herráez et
   al. 2002; 2-D reliability-sorted unwrapping).
2. **Offsets and ramps**: a plane ``a + b x + c y`` fitted to the air region (by default a
   band of columns at either edge of the field of view) is subtracted: ptychography leaves
   each projection's phase with an arbitrary constant and linear ramp.
3. **Sign**: the projection is ``-phase`` (an object of refractive index ``1 - delta``
   delays the wave: ``phase = -k delta t``), flipped when the total mass comes out
   negative (the other sign convention of the far-field transform).
4. **Alignment**: horizontal by the centre of mass (the mass centre of a parallel-beam
   projection follows ``x0 cos theta + y0 sin theta + c``: a least-squares fit gives the
   rotation axis ``c`` and each projection's deviation from it); vertical by the vertical
   mass fluctuation (the mass per row, summed over the columns, is the same at every angle
   for a rotation about the vertical axis: each profile's derivative is registered to
   their mean, sub-pixel); then ``iterations`` rounds of reprojection: reconstruct,
   project the volume back (``panreduce_tomography.recon.project``) and register each
   projection to its reprojection (sub-pixel cross-correlation).
   The shifts are determined up to what the data cannot see: a common vertical shift (the
   volume moves along the axis), and horizontal shifts of the form ``a + b cos + c sin``
   (an axis offset and a translation of the object in the slice); those parts are kept at
   zero (vertical: zero mean; horizontal: orthogonal to 1, cos, sin; the axis is ``c``).
5. **Reconstruction**: the tomography technique's gridrec
   (:func:`panreduce_tomography.gridrec.gridrec`, shared code) slice by slice, rows of the
   projections being slices (rotation axis along the object's rows, i.e. vertical).

Units: projections and volume in radians of phase shift (per voxel for the volume); with
the wavelength and pixel size, ``delta = volume / (k dx)``, ``k = 2 pi / lambda``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage, optimize

from panreduce_tomography.gridrec import gridrec
from panreduce_tomography.recon import project


@dataclass(frozen=True)
class PxctOptions:
    """How the tomographic stage runs (see the module docstring)."""

    unwrap: bool = True
    air_px: int = 4  # columns at each side of the field of view taken as air (offset and ramp fit)
    vertical: bool = True  # vertical mass-fluctuation alignment
    iterations: int = 5  # reprojection alignment rounds
    filter: str = "ramp"
    upsample: int = 20  # sub-pixel precision of the registration: 1/upsample px
    max_shift_px: float = 20.0  # largest shift any alignment step may apply


@dataclass
class PxctResult:
    """The volume (rows, n, n), the aligned projections (A, rows, cols), the shifts applied
    (A, 2) as (dy, dx) pixels, the rotation axis column, the sign applied to the phase, and
    the per-round alignment history."""

    volume: np.ndarray
    aligned: np.ndarray
    shifts: np.ndarray
    center: float
    sign: float
    angles_deg: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)


# -- single projections ------------------------------------------------------------------
def air_mask(shape: tuple[int, int], air_px: int) -> np.ndarray:
    """True in ``air_px`` columns at each side of the field of view."""
    h, w = shape
    m = np.zeros((h, w), bool)
    a = max(1, min(int(air_px), w // 2 - 1))
    m[:, :a] = True
    m[:, w - a :] = True
    return m


def unwrap(phase: np.ndarray) -> np.ndarray:
    """2-D phase unwrapping (skimage's reliability-sorted algorithm)."""
    from skimage.restoration import unwrap_phase

    return np.asarray(unwrap_phase(np.asarray(phase, np.float64)), np.float64)


def remove_plane(img: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``img`` minus the plane ``a + b x + c y`` fitted (least squares) on ``mask``;
    returns (corrected, (a, b, c)) with x, y in pixels from the top-left pixel."""
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.stack([np.ones(mask.sum()), xx[mask], yy[mask]], axis=1)
    coef, *_ = np.linalg.lstsq(a, img[mask], rcond=None)
    return img - (coef[0] + coef[1] * xx + coef[2] * yy), coef


def shift_image(img: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``img`` moved by (dy, dx) pixels (cubic spline; values from outside the field are
    those of the nearest edge)."""
    return ndimage.shift(np.asarray(img, np.float64), (dy, dx), order=3, mode="nearest")


def prepare_projections(phases: np.ndarray, options: PxctOptions = PxctOptions()) -> tuple[np.ndarray, float]:
    """(A, H, W) phases (wrapped or not) -> (unwrapped, plane-corrected, signed)
    projections and the sign applied (+1: the projection is -phase)."""
    out = np.empty(phases.shape, np.float64)
    mask = air_mask(phases.shape[1:], options.air_px)
    for i, ph in enumerate(phases):
        p = unwrap(ph) if options.unwrap else np.asarray(ph, np.float64)
        out[i], _ = remove_plane(p, mask)
    sign = 1.0 if -out.sum() >= 0 else -1.0
    return -sign * out, sign


# -- alignment ---------------------------------------------------------------------------
def _gauge_x(angles_rad: np.ndarray) -> np.ndarray:
    return np.stack([np.ones_like(angles_rad), np.cos(angles_rad), np.sin(angles_rad)], axis=1)


def remove_gauge(shifts: np.ndarray, angles_rad: np.ndarray) -> np.ndarray:
    """(A, 2) shifts (dy, dx) without what the data do not determine: dy's mean and dx's
    least-squares fit by 1, cos theta, sin theta."""
    out = np.array(shifts, np.float64)
    out[:, 0] -= out[:, 0].mean()
    g = _gauge_x(angles_rad)
    coef, *_ = np.linalg.lstsq(g, out[:, 1], rcond=None)
    out[:, 1] -= g @ coef
    return out


def centre_of_mass_x(projections: np.ndarray) -> np.ndarray:
    """Horizontal centre of mass (column, pixels) of each projection (A, H, W)."""
    w = projections.shape[-1]
    mass = projections.sum(axis=1)  # (A, W)
    return (mass * np.arange(w)[None]).sum(1) / np.maximum(mass.sum(1), 1e-30)


def horizontal_com(projections: np.ndarray, angles_rad: np.ndarray) -> tuple[np.ndarray, float]:
    """Horizontal shifts (A,) that put each projection's centre of mass on the sinusoid
    ``c + a cos + b sin`` fitted to all, and the axis column ``c``."""
    com = centre_of_mass_x(projections)
    g = _gauge_x(angles_rad)
    coef, *_ = np.linalg.lstsq(g, com, rcond=None)
    return g @ coef - com, float(coef[0])


def _shift_1d(f: np.ndarray, d: float) -> np.ndarray:
    k = np.fft.fftfreq(f.size)
    return np.real(np.fft.ifft(np.fft.fft(f) * np.exp(-2j * np.pi * k * d)))


def _register_1d(f: np.ndarray, ref: np.ndarray, max_shift: float) -> float:
    """The shift d (pixels, sub-pixel) minimising |f shifted by d - ref|^2 (f, ref padded)."""
    n = f.size
    xc = np.real(np.fft.ifft(np.fft.fft(ref) * np.conj(np.fft.fft(f))))
    lags = np.fft.fftfreq(n, 1.0 / n)
    ok = np.abs(lags) <= max_shift
    d0 = float(lags[ok][np.argmax(xc[ok])])
    res = optimize.minimize_scalar(
        lambda d: float(np.sum((_shift_1d(f, d) - ref) ** 2)), bounds=(d0 - 1.5, d0 + 1.5), method="bounded"
    )
    return float(res.x)


def vertical_mass_fluctuation(projections: np.ndarray, max_shift: float = 20.0, rounds: int = 3) -> np.ndarray:
    """Vertical shifts (A,) registering each projection's mass per row (its derivative,
    insensitive to what leaves the field) to the mean of the registered profiles; zero mean."""
    a, h, _ = projections.shape
    pad = h // 2
    prof = np.pad(projections.sum(axis=2), [(0, 0), (pad, pad)], mode="edge")
    deriv = np.gradient(prof, axis=1)
    win = np.hanning(prof.shape[1])  # taper: the padded ends do not correlate
    deriv *= win[None]
    shifts = np.zeros(a)
    for _ in range(rounds):
        ref = np.mean([_shift_1d(deriv[i], shifts[i]) for i in range(a)], axis=0)
        shifts = np.array([_register_1d(deriv[i], ref, max_shift) for i in range(a)])
        shifts -= shifts.mean()
    return shifts


def register(moving: np.ndarray, reference: np.ndarray, upsample: int = 20) -> tuple[float, float]:
    """(dy, dx) moving ``moving`` onto ``reference`` (sub-pixel cross-correlation, Guizar-
    Sicairos et al. 2008, skimage)."""
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(reference, moving, upsample_factor=upsample, normalization=None)
    return float(shift[0]), float(shift[1])


def apply_shifts(projections: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Every projection moved by its (dy, dx)."""
    return np.stack([shift_image(p, dy, dx) for p, (dy, dx) in zip(projections, shifts, strict=True)])


def reconstruct(projections: np.ndarray, angles_rad: np.ndarray, center: float, *, filter: str = "ramp") -> np.ndarray:
    """(A, H, W) projections -> (H, W, W) volume, slice ``z`` from row ``z``, by the tomography
    technique's gridrec (pixel ``(i, j)`` of a slice at ``x = j - W//2``, ``y = i - W//2``)."""
    sino = np.ascontiguousarray(np.transpose(projections, (1, 0, 2)), np.float32)
    return gridrec(sino, angles_rad, center, n=projections.shape[-1], filter=filter)


def reproject(volume: np.ndarray, angles_rad: np.ndarray, center: float, n_det: int) -> np.ndarray:
    """(H, n, n) volume -> (A, H, n_det) projections (the tomography technique's projector)."""
    from panreduce.backend import get_backend

    sino = project(np.asarray(volume, np.float64), angles_rad, center, n_det, backend=get_backend("numpy"))
    return np.transpose(np.asarray(sino), (1, 0, 2))


def align_and_reconstruct(
    projections: np.ndarray,
    angles_deg: Sequence[float],
    options: PxctOptions = PxctOptions(),
    *,
    sign: float = 1.0,
    check: Callable[[], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> PxctResult:
    """Align prepared projections (A, H, W) (see :func:`prepare_projections`) and reconstruct."""
    p = np.asarray(projections, np.float64)
    if p.ndim != 3 or p.shape[0] < 3:
        raise ValueError(f"PXCT needs at least 3 projections of (rows, columns), got shape {p.shape}")
    ang = np.deg2rad(np.asarray(angles_deg, np.float64))
    lim = options.max_shift_px
    shifts = np.zeros((len(p), 2))
    history: list[dict[str, float]] = []
    dx, center = horizontal_com(p, ang)
    shifts[:, 1] = np.clip(dx, -lim, lim)
    if options.vertical:
        shifts[:, 0] = vertical_mass_fluctuation(apply_shifts(p, shifts), max_shift=lim)
    shifts = remove_gauge(shifts, ang)
    history.append({"round": 0, "rms_step_px": float(np.sqrt(np.mean(shifts**2)))})
    aligned = apply_shifts(p, shifts)
    for r in range(options.iterations):
        if check is not None:
            check()
        if progress is not None:
            progress(r / max(1, options.iterations), f"PXCT alignment round {r + 1}/{options.iterations}")
        vol = reconstruct(aligned, ang, center, filter=options.filter)
        rep = reproject(vol, ang, center, p.shape[-1])
        step = np.array([register(aligned[i], rep[i], options.upsample) for i in range(len(p))])
        step = remove_gauge(step, ang)
        shifts = remove_gauge(np.clip(shifts + step, -lim, lim), ang)
        aligned = apply_shifts(p, shifts)
        rms = float(np.sqrt(np.mean(step**2)))
        history.append({"round": r + 1, "rms_step_px": rms})
        if rms < 0.5 / options.upsample:
            break
    vol = reconstruct(aligned, ang, center, filter=options.filter)
    return PxctResult(
        volume=vol.astype(np.float32),
        aligned=aligned.astype(np.float32),
        shifts=shifts,
        center=center,
        sign=sign,
        angles_deg=np.asarray(angles_deg, np.float64),
        history=history,
    )


def pxct(
    phases: np.ndarray,
    angles_deg: Sequence[float],
    options: PxctOptions = PxctOptions(),
    *,
    check: Callable[[], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> PxctResult:
    """Phases of the projections (A, H, W), on one grid -> volume: unwrap, remove offsets and
    ramps, align, reconstruct (the module docstring)."""
    prepared, sign = prepare_projections(np.asarray(phases), options)
    return align_and_reconstruct(prepared, angles_deg, options, sign=sign, check=check, progress=progress)


def normalised_rms(a: np.ndarray, truth: np.ndarray) -> float:
    """|a - truth| / |truth| (RMS over all voxels)."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - truth) / max(np.linalg.norm(truth), 1e-30))


# -- a simulated PXCT data set ----------------------------------------------------------
@dataclass
class SimulatedProjections:
    """Wrapped phases (A, H, W) as ptychography leaves them, their angles (deg), the true
    shifts applied (A, 2) (dy, dx; free of what the data cannot determine), the phantom's
    volume (H, W, W), its exact projections (A, H, W) and the true axis column."""

    phases: np.ndarray
    angles_deg: np.ndarray
    shifts: np.ndarray
    truth: np.ndarray
    projections: np.ndarray
    center: float


def simulate_projections(
    n_angles: int = 45,
    rows: int = 40,
    cols: int = 48,
    *,
    seed: int = 0,
    max_shift_px: float = 3.0,
    noise_rad: float = 0.02,
    ramp: float = 0.05,
) -> SimulatedProjections:
    """Phase projections of a 3-D phantom of ellipsoids (a body of about 0.58 ``cols``
    across, six inner ellipsoids; the phase range beyond 2 pi) over 0-180 degrees, each
    moved by a random shift (up to ``max_shift_px``), given a random offset, a linear
    ramp (up to ``ramp`` rad/pixel), Gaussian noise and wrapped to (-pi, pi]."""
    from panreduce_tomography import phantom

    rng = np.random.default_rng(seed)
    k = cols / 48.0
    ell = [phantom.Ellipsoid(0.15 / k, (13.0 * k, 12.0 * k, 14.0 * k), (0.5 * k, -0.5 * k, 0.0), 0.3)]
    ell += [
        phantom.Ellipsoid(e.value / k, e.axes, e.centre, e.phi)
        for e in phantom.random_ellipsoids(6, 11.0 * k, rng=rng, value_range=(0.05, 0.15), size_range=(0.2, 0.45))
    ]
    rng = np.random.default_rng(seed + 100)
    center = (cols - 1) / 2 + 0.3
    angles = np.linspace(0, 180, n_angles, endpoint=False)
    rad = np.deg2rad(angles)
    proj = phantom.projections(ell, rad, rows, cols, center)
    truth = phantom.volume(ell, cols, rows)
    shifts = remove_gauge(rng.uniform(-max_shift_px, max_shift_px, (n_angles, 2)), rad)
    yy, xx = np.mgrid[0:rows, 0:cols]
    phases = np.empty_like(proj)
    for i in range(n_angles):
        moved = shift_image(proj[i], *shifts[i])
        offset = rng.uniform(-np.pi, np.pi)
        gx, gy = rng.uniform(-ramp, ramp, 2)
        phase = -moved + offset + gx * xx + gy * yy + rng.normal(0, noise_rad, (rows, cols))
        phases[i] = np.angle(np.exp(1j * phase))
    return SimulatedProjections(phases, angles, shifts, truth, proj, center)


# -- the technique's glue ----------------------------------------------------------------
def inscribed_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(r0, r1, c0, c1): a rectangle inside ``mask`` (True everywhere in it), from the
    bounding box by removing, one at a time, the edge row or column with the most False."""
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return 0, 0, 0, 0
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    while r1 - r0 > 1 and c1 - c0 > 1:
        sub = mask[r0:r1, c0:c1]
        bad = [(~sub[0]).sum(), (~sub[-1]).sum(), (~sub[:, 0]).sum(), (~sub[:, -1]).sum()]
        if max(bad) == 0:
            break
        k = int(np.argmax(bad))
        if k == 0:
            r0 += 1
        elif k == 1:
            r1 -= 1
        elif k == 2:
            c0 += 1
        else:
            c1 -= 1
    return r0, r1, c0, c1


def common_grid(recs: Sequence[Any], *, threshold: float = 0.3) -> tuple[list[np.ndarray], float]:
    """The phases of reconstructions (``report.Reconstruction``) cut to one grid: the
    intersection, in metres, of the rectangles inside their well-lit regions (illumination
    >= ``threshold`` x its maximum; :func:`inscribed_box`). Returns the (H, W) phases and the pixel size (m). Raises ``ValueError`` when
    the pixel sizes differ by more than 1 % or the boxes do not overlap."""
    from panreduce_ptychography import metrics

    dx = float(recs[0].problem.pixel_size_m)
    boxes = []
    for r in recs:
        pr = r.problem
        if abs(pr.pixel_size_m - dx) > 0.01 * dx:
            raise ValueError(
                f"{r.key}: object pixel size {pr.pixel_size_m:.4g} m differs from {recs[0].key}'s {dx:.4g} m"
            )
        lit = metrics.well_lit(pr.object_shape, r.state.probe, r.state.positions, threshold)
        o = np.asarray(pr.origin_m, np.float64) / dx  # pixel [0, 0] in pixel units of the common frame
        boxes.append((o, *inscribed_box(lit)))
    y0 = max(o[0] + a for o, a, _, _, _ in boxes)
    y1 = min(o[0] + b for o, _, b, _, _ in boxes)
    x0 = max(o[1] + c for o, _, _, c, _ in boxes)
    x1 = min(o[1] + d for o, _, _, _, d in boxes)
    h, w = int(np.floor(y1 - y0)), int(np.floor(x1 - x0))
    if h < 8 or w < 8:
        raise ValueError(f"the projections' well-lit regions overlap on {max(h, 0)} x {max(w, 0)} pixels only")
    out = []
    for r, (o, *_rest) in zip(recs, boxes, strict=True):
        iy, ix = int(np.ceil(y0 - o[0] - 1e-6)), int(np.ceil(x0 - o[1] - 1e-6))
        out.append(np.angle(r.state.obj[iy : iy + h, ix : ix + w]).astype(np.float64))
    return out, dx


def write_nxtomoproc(
    path: Path, result: PxctResult, *, pixel_size_m: float, wavelength_m: float, sources: Sequence[str], version: str
) -> None:
    """``pxct.nxs``: NXtomoproc ``entry/data/data`` (z, y, x) phase per voxel (rad) with the
    tomography technique's axes, ``entry/delta`` (refractive index decrement, when the
    wavelength is known), ``entry/aligned_projections`` (NXdata: the aligned projections,
    angles, shifts), NXprocess ``entry/reconstruction`` (axis, sign, alignment history)."""
    import json

    import h5py

    from panreduce import nexus

    vol = result.volume
    nz, n, _ = vol.shape
    with h5py.File(path, "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry")
        nexus.write_text(entry, "definition", "NXtomoproc")
        nexus.write_text(entry, "title", f"PXCT reconstruction of {len(sources)} ptychographic projections")
        src = nexus.make_group(nexus.make_group(entry, "instrument", "NXinstrument"), "source", "NXsource")
        nexus.write_text(src, "type", "Synchrotron X-ray Source")
        nexus.write_text(src, "name", "unknown")
        nexus.write_text(src, "probe", "x-ray")
        nexus.write_text(nexus.make_group(entry, "sample", "NXsample"), "name", sources[0] if sources else "")
        proc = nexus.write_nxprocess(entry, "reconstruction", technique="ptychography", version=version)
        par = nexus.make_group(proc, "parameters", "NXparameters")
        par.create_dataset("raw_file", data=np.array(list(sources), dtype=h5py.string_dtype()))
        par.create_dataset("rotation_centre", data=result.center).attrs["units"] = "pixel"
        nexus.write_text(par, "rotation_centre_method", "centre-of-mass sinusoid fit")
        nexus.write_text(par, "algorithm", "gridrec")
        par.create_dataset("phase_sign", data=result.sign)
        nexus.write_text(par, "alignment_history_json", json.dumps(result.history))
        d = nexus.make_group(entry, "data", "NXdata", signal="data")
        nexus.set_default(d)
        d.attrs["axes"] = ["z", "y", "x"]
        for i, ax in enumerate(("z", "y", "x")):
            d.attrs[f"{ax}_indices"] = i
        ds = d.create_dataset("data", data=vol.astype(np.float32), chunks=(1, n, n))
        ds.attrs["units"] = "rad"
        ds.attrs["long_name"] = "phase shift per voxel (k delta dx)"
        c = (np.arange(n, dtype=np.float64) - n // 2) * pixel_size_m
        for ax in ("x", "y"):
            d.create_dataset(ax, data=c).attrs["units"] = "m"
        d.create_dataset("z", data=(np.arange(nz, dtype=np.float64) - (nz - 1) / 2) * pixel_size_m).attrs["units"] = "m"
        if wavelength_m > 0:
            k = 2 * np.pi / wavelength_m
            dd = entry.create_dataset("delta", data=(vol / (k * pixel_size_m)).astype(np.float32), chunks=(1, n, n))
            dd.attrs["units"] = ""
            dd.attrs["long_name"] = "refractive index decrement delta"
        al = nexus.make_group(entry, "aligned_projections", "NXdata", signal="data")
        al.attrs["axes"] = ["rotation_angle", ".", "."]
        al.attrs["rotation_angle_indices"] = 0
        al.create_dataset("data", data=result.aligned, compression="gzip").attrs["units"] = "rad"
        al.create_dataset("rotation_angle", data=result.angles_deg).attrs["units"] = "deg"
        for j, name in enumerate(("shift_y", "shift_x")):
            al.create_dataset(name, data=result.shifts[:, j]).attrs["units"] = "pixel"
        al.create_dataset("pixel_size", data=pixel_size_m).attrs["units"] = "m"


def tomography_stage(
    recs: Sequence[Any],
    params: Any,
    *,
    out: Callable[..., Path],
    version: str,
    check: Callable[[], None] | None = None,
    progress: Callable[[float, str], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """The technique's PXCT stage: reconstructions (``report.Reconstruction``, each with
    ``rotation_angle_deg``) and the ``pxct`` parameters (``params.Pxct``) -> ``pxct.nxs``
    (and ``pxct.png``, the middle slice) through ``out(name, format=, role=)``; returns the
    summary. Raises ``panreduce.errors.InvalidInput`` for a projection without an angle or
    projections that do not share a grid."""
    from panreduce import errors

    for r in recs:
        if "rotation_angle_deg" not in r.scan.metadata:
            raise errors.InvalidInput(
                r.scan.source or r.key, f"{r.key}: pxct.enabled needs sample/rotation_angle in every projection"
            )
    angles = [float(r.scan.metadata["rotation_angle_deg"]) for r in recs]
    try:
        phases, dx = common_grid(recs)
    except ValueError as exc:
        raise errors.InvalidInput(recs[0].scan.source or recs[0].key, f"PXCT: {exc}") from None
    opts = PxctOptions(
        unwrap=params.unwrap, air_px=params.air_width_px, vertical=params.vertical, iterations=params.iterations
    )
    res = pxct(np.stack(phases), angles, opts, check=check, progress=progress)
    wavelength = float(recs[0].problem.wavelength_m or 0.0)
    write_nxtomoproc(
        out("pxct.nxs", format="nexus", role="result"),
        res,
        pixel_size_m=dx,
        wavelength_m=wavelength,
        sources=[f"{r.scan.source}:{r.scan.name}" for r in recs],
        version=version,
    )
    if plots:
        from panreduce_tomography.outputs import slice_figure

        mid = res.volume.shape[0] // 2
        slice_figure(
            out("pxct.png", format="png", role="preview"),
            res.volume[mid],
            title=f"PXCT slice {mid} of {res.volume.shape[0]}",
            pixels=384,
            pixel_um=dx * 1e6,
            label="phase shift per voxel (rad)",
        )
    return {
        "volume_shape": list(res.volume.shape),
        "n_projections": len(recs),
        "rotation_centre_px": res.center,
        "phase_sign": res.sign,
        "shift_rms_px": float(np.sqrt(np.mean(res.shifts**2))),
        "shift_max_px": float(np.abs(res.shifts).max()),
        "alignment_rounds": len(res.history) - 1,
        "last_alignment_step_px": res.history[-1]["rms_step_px"],
        "pixel_size_m": dx,
    }
