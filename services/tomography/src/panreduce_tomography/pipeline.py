"""From :class:`~panreduce_tomography.io.Scan` s to a reconstructed volume, one slab of
detector rows at a time: :func:`reconstruct_volume` is the whole science of a job.

Order of the corrections: zingers (raw counts) -> dark/flat (conventional or dynamic)
-> Paganin phase retrieval -> -log (safe) -> ring removal (per sinogram) -> centre
(once per scan) -> reconstruction -> field-of-view mask.

Each step takes its parameter model (:mod:`panreduce_tomography.params`) as a keyword
argument of the same name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panreduce.backend import get_backend
from panreduce_tomography import centre as centre_mod
from panreduce_tomography import corrections as corr
from panreduce_tomography import recon
from panreduce_tomography.io import Scan
from panreduce_tomography.params import Corrections, PhaseRetrieval, Reconstruction, RotationAxis

Progress = Callable[[float, str, str], None]  # (fraction of the volume, stage, message)


class NotFinite(ValueError):
    """A reconstruction produced NaN or infinite values."""


@dataclass
class Prepared:
    """What is computed once per scan before the slabs."""

    dark: np.ndarray | None
    flat: np.ndarray | None
    eigen: corr.EigenFlats | None
    weights: np.ndarray | None  # (n_proj, k) dynamic flat-field weights
    margin: int  # extra rows read on each side of a slab (2-D filters)
    scale: float = 1.0  # open-beam level when there are no flats (from the data)


def paganin_margin(phase: PhaseRetrieval) -> int:
    kw = phase.kwargs()
    if kw is None:
        return 0
    return int(np.ceil(3 * corr.paganin_kernel_width(**kw))) + 2


def prepare(
    scan: Scan,
    *,
    corrections: Corrections = Corrections(),
    phase: PhaseRetrieval = PhaseRetrieval(),
    slab_rows: int = 32,
    progress: Callable[[float, str], None] | None = None,
) -> Prepared:
    """Mean dark and flat; eigen flats and per-projection weights for dynamic flat
    fields (fitted on whole projections, read slab by slab and block-averaged)."""
    c = corrections
    margin = paganin_margin(phase)
    if scan.kind == "line_integral" or c.flat_field == "none":
        return Prepared(None, None, None, None, margin)
    dark = scan.darks.astype(np.float32).mean(0) if scan.darks is not None else np.zeros(scan.shape[1:], np.float32)
    if scan.flats is None:
        # no flat fields: the brightest values (air seen beside the sample) stand for them
        mid = scan.read_rows(scan.n_rows // 2, scan.n_rows // 2 + 1) - dark[scan.n_rows // 2]
        return Prepared(dark, None, None, None, margin, max(float(np.percentile(mid, 99.9)), 1e-6))
    flats = scan.flats.astype(np.float32)
    if c.zinger_threshold > 0:
        flats = corr.remove_zingers(flats, c.zinger_threshold)
    flat = flats.mean(0)
    if c.flat_field != "dynamic" or len(flats) < 2:
        return Prepared(dark, flat, None, None, margin)
    ef = corr.eigen_flats(flats, dark, c.dynamic_components)
    ds = c.dynamic_downsample
    # the fit needs whole projections: read them in slabs, keep them block-averaged
    step = max(ds, (slab_rows // ds) * ds)
    rows = scan.n_rows // ds * ds
    parts = []
    for r0 in range(0, max(rows, 1), step):
        r1 = min(rows, r0 + step) if rows else scan.n_rows
        if progress:
            progress(r0 / max(rows, 1), f"dynamic flat field: rows {r0}-{r1}")
        parts.append(corr._block_mean(scan.read_rows(r0, r1), ds))
    small = np.concatenate(parts, axis=1)
    ef_small = corr.EigenFlats(ef.dark[:rows, :], ef.mean[:rows, :], ef.components[:, :rows, :], ef.explained)
    weights = corr.dynamic_weights(small * 1.0, _rescaled(ef_small, ds), downsample=1)
    return Prepared(dark, flat, ef, weights, margin)


def _rescaled(ef: corr.EigenFlats, ds: int) -> corr.EigenFlats:
    return corr.EigenFlats(
        corr._block_mean(ef.dark, ds), corr._block_mean(ef.mean, ds), corr._block_mean(ef.components, ds), ef.explained
    )


def sinograms(
    scan: Scan,
    prep: Prepared,
    rows: Sequence[int],
    *,
    corrections: Corrections = Corrections(),
    phase: PhaseRetrieval = PhaseRetrieval(),
) -> np.ndarray:
    """Corrected line-integral sinograms (len(rows), n_proj, n_cols) of the given rows
    (sorted; read as one slab, with a margin for 2-D filters)."""
    c = corrections
    lo, hi = rows[0], rows[-1] + 1
    r0, r1 = max(0, lo - prep.margin), min(scan.n_rows, hi + prep.margin)
    data = scan.read_rows(r0, r1)
    sel = np.asarray(rows) - r0
    if scan.kind == "line_integral":
        li = data
        if c.zinger_threshold > 0:
            li = corr.remove_zingers(li, c.zinger_threshold)
    else:
        if c.zinger_threshold > 0:
            data = corr.remove_zingers(data, c.zinger_threshold)
        if prep.eigen is not None and prep.weights is not None:
            ef = corr.EigenFlats(
                prep.eigen.dark[r0:r1], prep.eigen.mean[r0:r1], prep.eigen.components[:, r0:r1], prep.eigen.explained
            )
            norm = corr.dynamic_flat_field(data, ef, prep.weights, floor=1e-6)
        elif prep.flat is not None:
            norm = corr.flat_field(data, prep.dark[r0:r1], prep.flat[r0:r1])
        elif prep.dark is not None:
            norm = corr.flat_field(data, prep.dark[r0:r1], None) / prep.scale
        else:
            norm = data  # flat_field="none": the input is a transmission already
        paganin = phase.kwargs()
        if paganin is not None:
            norm = corr.paganin(norm, **paganin)
        li = corr.minus_log(norm, c.log_floor)
    sino = np.ascontiguousarray(np.moveaxis(li[:, sel, :], 1, 0))  # (rows, angles, cols)
    if c.ring_removal == "sorting":
        sino = corr.remove_stripes_sorting(sino, c.ring_size)
    elif c.ring_removal == "filtering":
        sino = corr.remove_stripes_filtering(sino, size=c.ring_size)
    return sino.astype(np.float32, copy=False)


def find_centre(
    scan: Scan,
    prep: Prepared,
    rows: Sequence[int],
    *,
    search_radius: float | None = None,
    corrections: Corrections = Corrections(),
    phase: PhaseRetrieval = PhaseRetrieval(),
) -> float:
    """The rotation axis from the sinograms of up to three rows around the middle of
    ``rows`` (averaged), by Vo's method."""
    mid = len(rows) // 2
    pick = sorted({rows[max(0, mid - 1)], rows[mid], rows[min(len(rows) - 1, mid + 1)]})
    sino = np.concatenate([sinograms(scan, prep, [r], corrections=corrections, phase=phase) for r in pick]).mean(0)
    return centre_mod.find_center_vo(sino, scan.angles, search_radius=search_radius, guess=(scan.n_cols - 1) / 2)


@dataclass
class VolumeInfo:
    """What :func:`reconstruct_volume` reports besides the volume."""

    centres: list[float] = field(default_factory=list)  # one per scan
    found: list[bool] = field(default_factory=list)  # centre found (True) or given
    value_range: tuple[float, float] = (float("inf"), float("-inf"))  # inside the field of view
    seconds: float = 0.0
    backend: str = "numpy:cpu"


def volume_shape(scans: Sequence[Scan], n_rows: int, size: int | None) -> tuple[int, ...]:
    """(rows, n, n) for one scan, (scans, rows, n, n) for a series."""
    n = size or scans[0].n_cols
    return (n_rows, n, n) if len(scans) == 1 else (len(scans), n_rows, n, n)


def reconstruct_volume(
    scans: Sequence[Scan],
    rows: Sequence[int],
    *,
    out: Any,
    centre_rows: Sequence[int] | None = None,
    corrections: Corrections = Corrections(),
    phase: PhaseRetrieval = PhaseRetrieval(),
    axis: RotationAxis = RotationAxis(),
    reconstruction: Reconstruction = Reconstruction(),
    slab_rows: int = 32,
    progress: Progress | None = None,
    check: Callable[[], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> VolumeInfo:
    """Reconstruct detector ``rows`` of every scan into ``out`` (an array of
    :func:`volume_shape`, numpy or an HDF5 dataset: written slab by slab, the only side
    effect). The centre of each scan is ``axis.center`` or found on ``centre_rows``
    (default ``rows``; the rows of the whole job, so that every shard finds the same
    one). ``progress``, ``check`` (raise to stop) and ``log`` are the job's."""
    if not rows:
        raise ValueError("no rows to reconstruct")
    rec = reconstruction
    bk = get_backend(rec.device)
    centre_rows = list(centre_rows or rows)
    n = rec.size or scans[0].n_cols
    mask = recon.circle_mask(n, n / 2) if rec.circle else None
    info = VolumeInfo(backend=f"{bk.name}:{bk.device}")
    lo, hi = np.inf, -np.inf
    total = len(scans) * ((len(rows) + slab_rows - 1) // slab_rows)
    done = 0
    t0 = time.perf_counter()

    def report(stage: str, message: str) -> None:
        if progress is not None:
            progress(done / total, stage, message)

    def stop(*_: Any) -> None:
        if check is not None:
            check()

    for ti, scan in enumerate(scans):
        report("prepare", f"{scan.source}: dark/flat")
        prep = prepare(scan, corrections=corrections, phase=phase, slab_rows=slab_rows, progress=stop)
        if axis.center is not None:
            c, found = float(axis.center), False
        elif ti > 0 and "band" in scan.meta:
            c, found = info.centres[0], True  # wavelength bands of one scan: one axis, found on all the bins
        else:
            report("centre", f"{scan.source}: finding the rotation axis")
            cscan = scan.meta.get("centre_scan", scan)
            cprep = (
                prep
                if cscan is scan
                else prepare(cscan, corrections=corrections, phase=phase, slab_rows=slab_rows, progress=stop)
            )
            c = find_centre(cscan, cprep, centre_rows, corrections=corrections, phase=phase, **axis.kwargs())
            found = True
            if log is not None:
                log(f"{scan.source}: rotation centre found at {c:.2f} px (Vo 2014)")
        info.centres.append(c)
        info.found.append(found)
        plan = None
        if rec.algorithm == "gridrec":  # finufft on numpy, gridding on torch (CPU or GPU): one plan per scan
            from panreduce_tomography.gridrec import gridrec_plan

            plan = gridrec_plan(
                scan.angles, c, scan.n_cols, n=n, filter=rec.filter, cutoff=rec.filter_cutoff, backend=bk
            )
        for s0 in range(0, len(rows), slab_rows):
            slab = list(rows[s0 : s0 + slab_rows])
            report("reconstruct", f"{scan.source}: rows {slab[0]}-{slab[-1]} ({len(rows)} slices)")
            sino = sinograms(scan, prep, slab, corrections=corrections, phase=phase)
            if plan is not None:
                vol = plan(sino)
            else:
                vol = recon.reconstruct(
                    sino,
                    scan.angles,
                    c,
                    **{**rec.kwargs(), "circle": False, "size": n, "backend": bk},
                    callback=stop,
                    check=stop,
                )
            vol = np.asarray(vol, np.float32).reshape(len(slab), n, n)
            if mask is not None:
                vol = vol * mask
            if not np.all(np.isfinite(vol)):
                raise NotFinite(f"reconstruction of rows {slab[0]}-{slab[-1]} produced NaN/inf")
            inside = vol[:, mask] if mask is not None else vol
            lo, hi = min(lo, float(inside.min())), max(hi, float(inside.max()))
            if len(scans) == 1:
                out[s0 : s0 + len(slab)] = vol
            else:
                out[ti, s0 : s0 + len(slab)] = vol
            done += 1
    info.value_range = (float(lo), float(hi))
    info.seconds = time.perf_counter() - t0
    return info


def trial_centres(
    scan: Scan,
    row: int,
    centres: Sequence[float],
    *,
    corrections: Corrections = Corrections(),
    phase: PhaseRetrieval = PhaseRetrieval(),
    reconstruction: Reconstruction = Reconstruction(),
    check: Callable[[], None] | None = None,
) -> np.ndarray:
    """Detector ``row`` reconstructed at every trial centre: (len(centres), n, n) float32
    (tomopy's ``write_center``, tomocupy's ``--reconstruction-type try``)."""
    prep = prepare(scan, corrections=corrections, phase=phase, slab_rows=1)
    sino = sinograms(scan, prep, [row], corrections=corrections, phase=phase)[0]
    kw = {**reconstruction.kwargs(), "backend": get_backend(reconstruction.device)}
    out = []
    for c in centres:
        if check is not None:
            check()
        out.append(np.asarray(recon.reconstruct(sino, scan.angles, float(c), **kw), np.float32))
    return np.stack(out)
