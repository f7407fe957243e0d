"""From a :class:`~panreduce_tomography.io.Scan` to sinograms of line integrals, one slab
of detector rows at a time, and the rotation centre.

Order of the corrections: zingers (raw counts) -> dark/flat (conventional or dynamic)
-> Paganin phase retrieval -> -log (safe) -> ring removal (per sinogram).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from panreduce_tomography import centre as centre_mod
from panreduce_tomography import corrections as corr
from panreduce_tomography.io import Scan
from panreduce_tomography.params import TomographyParameters


@dataclass
class Prepared:
    """What is computed once per scan before the slabs."""

    dark: np.ndarray | None
    flat: np.ndarray | None
    eigen: corr.EigenFlats | None
    weights: np.ndarray | None  # (n_proj, k) dynamic flat-field weights
    margin: int  # extra rows read on each side of a slab (2-D filters)
    scale: float = 1.0  # open-beam level when there are no flats (from the data)


def paganin_margin(p: TomographyParameters) -> int:
    if p.phase_retrieval != "paganin":
        return 0
    w = corr.paganin_kernel_width(pixel_size_m=p.pixel_size_um * 1e-6, distance_m=p.distance_m,
                                  energy_kev=p.energy_kev, delta_beta=p.delta_beta)
    return int(np.ceil(3 * w)) + 2


def prepare(scan: Scan, p: TomographyParameters, progress: Callable[[float, str], None] | None = None) -> Prepared:
    """Mean dark and flat; eigen flats and per-projection weights for dynamic flat
    fields (fitted on whole projections, read slab by slab and block-averaged)."""
    margin = paganin_margin(p)
    if scan.kind == "line_integral" or p.flat_field == "none":
        return Prepared(None, None, None, None, margin)
    dark = scan.darks.astype(np.float32).mean(0) if scan.darks is not None else np.zeros(scan.shape[1:], np.float32)
    if scan.flats is None:
        # no flat fields: the brightest values (air seen beside the sample) stand for them
        mid = scan.read_rows(scan.n_rows // 2, scan.n_rows // 2 + 1) - dark[scan.n_rows // 2]
        return Prepared(dark, None, None, None, margin, max(float(np.percentile(mid, 99.9)), 1e-6))
    flats = scan.flats.astype(np.float32)
    if p.zinger_threshold > 0:
        flats = corr.remove_zingers(flats, p.zinger_threshold)
    flat = flats.mean(0)
    if p.flat_field != "dynamic" or len(flats) < 2:
        return Prepared(dark, flat, None, None, margin)
    ef = corr.eigen_flats(flats, dark, p.dynamic_components)
    ds = p.dynamic_downsample
    # the fit needs whole projections: read them in slabs, keep them block-averaged
    step = max(ds, (p.slab_rows // ds) * ds)
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
    return corr.EigenFlats(corr._block_mean(ef.dark, ds), corr._block_mean(ef.mean, ds),
                           corr._block_mean(ef.components, ds), ef.explained)


def sinograms(scan: Scan, prep: Prepared, rows: list[int], p: TomographyParameters) -> np.ndarray:
    """Corrected line-integral sinograms (len(rows), n_proj, n_cols) of the given rows
    (sorted; read as one slab, with a margin for 2-D filters)."""
    lo, hi = rows[0], rows[-1] + 1
    r0, r1 = max(0, lo - prep.margin), min(scan.n_rows, hi + prep.margin)
    data = scan.read_rows(r0, r1)
    sel = np.asarray(rows) - r0
    if scan.kind == "line_integral":
        li = data
        if p.zinger_threshold > 0:
            li = corr.remove_zingers(li, p.zinger_threshold)
    else:
        if p.zinger_threshold > 0:
            data = corr.remove_zingers(data, p.zinger_threshold)
        if prep.eigen is not None and prep.weights is not None:
            ef = corr.EigenFlats(prep.eigen.dark[r0:r1], prep.eigen.mean[r0:r1], prep.eigen.components[:, r0:r1],
                                 prep.eigen.explained)
            norm = corr.dynamic_flat_field(data, ef, prep.weights, floor=1e-6)
        elif prep.flat is not None:
            norm = corr.flat_field(data, prep.dark[r0:r1], prep.flat[r0:r1])
        elif prep.dark is not None:
            norm = corr.flat_field(data, prep.dark[r0:r1], None) / prep.scale
        else:
            norm = data  # flat_field="none": the input is a transmission already
        if p.phase_retrieval == "paganin":
            norm = corr.paganin(norm, pixel_size_m=p.pixel_size_um * 1e-6, distance_m=p.distance_m,
                                energy_kev=p.energy_kev, delta_beta=p.delta_beta)
        li = corr.minus_log(norm, p.log_floor)
    sino = np.ascontiguousarray(np.moveaxis(li[:, sel, :], 1, 0))  # (rows, angles, cols)
    if p.ring_removal == "sorting":
        sino = corr.remove_stripes_sorting(sino, p.ring_size)
    elif p.ring_removal == "filtering":
        sino = corr.remove_stripes_filtering(sino, size=p.ring_size)
    return sino.astype(np.float32, copy=False)


def find_centre(scan: Scan, prep: Prepared, rows: list[int], p: TomographyParameters) -> float:
    """The rotation axis from the sinograms of up to three rows around the middle of
    ``rows`` (averaged), by Vo's method."""
    mid = len(rows) // 2
    pick = sorted({rows[max(0, mid - 1)], rows[mid], rows[min(len(rows) - 1, mid + 1)]})
    sino = np.concatenate([sinograms(scan, prep, [r], p) for r in pick]).mean(0)
    return centre_mod.find_center_vo(sino, scan.angles, search_radius=p.center_search_radius,
                                     guess=(scan.n_cols - 1) / 2)
