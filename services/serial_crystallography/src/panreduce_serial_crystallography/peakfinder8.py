"""peakfinder8 (Barty et al., J. Appl. Cryst. 47, 1118 (2014)), vectorised with numpy/scipy.

The steps and their order follow the published algorithm as CrystFEL and OM run it:

1. radial statistics: per integer radius bin, 5 passes of sigma clipping — the mean and
   σ = √(⟨I²⟩ − ⟨I⟩²) of the pixels strictly between the lower and upper thresholds,
   then upper = max(mean + min_snr·σ, threshold), lower = mean − min_snr·σ (empty bins:
   infinite threshold);
2. candidate peaks: 8-connected components, within one panel, of pixels above their
   bin's upper threshold, with min_pix_count ≤ pixels ≤ max_pix_count;
3. local background: pixels within 2·local_bg_radius of the integer centroid, on the
   same panel, unmasked, below threshold and not in the peak → mean and σ (none: the
   radial mean and σ = 0.01);
4. intensity = Σ(I − local mean) over the peak, centroid = intensity-weighted centre of
   mass of the raw values, SNR = intensity / local σ; rejected if SNR < min_snr, if the
   brightest peak pixel is below the brightest background pixel, or if the centroid
   falls off the panel; at most max_n_peaks kept (in order of discovery).

Coordinates: fs, ss of the data array, integer = pixel centre (Cheetah/OM's and the CXI
peak lists' convention; CrystFEL adds 0.5 when it reads them).

Two paths with the same results: the compiled one (``peakfinder8_kernels``, numba; the
default) and this module's numpy/scipy one (``compiled=False``), kept as the reference.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from scipy import ndimage

    from panreduce_serial_crystallography import peakfinder8_kernels as kernels
else:
    ndimage = lazy.module("scipy.ndimage")
    kernels = lazy.module("panreduce_serial_crystallography.peakfinder8_kernels")  # numba: heavy

__all__ = ["PeakfinderLayout", "Peaks", "layout", "peakfinder8", "radial_thresholds"]

_EIGHT = np.ones((3, 3), dtype=bool)
N_SIGMA_PASSES = 5


@dataclass(frozen=True)
class Peaks:
    """The peaks of one frame (arrays of equal length, in order of discovery)."""

    fs: np.ndarray  # float32, pixels
    ss: np.ndarray
    intensity: np.ndarray  # background-subtracted total (ADU)
    sigma: np.ndarray  # local background σ (ADU)
    n_pixels: np.ndarray  # int32
    max_value: np.ndarray  # brightest background-subtracted pixel (ADU)
    snr: np.ndarray
    panel: np.ndarray  # int16 index into the detector's panels

    def __len__(self) -> int:
        return int(self.fs.size)


@dataclass(frozen=True)
class PeakfinderLayout:
    """What peakfinder8 needs of the detector, computed once per geometry/mask."""

    radius_bin: np.ndarray  # int32 per pixel: rounded radius (pixels)
    valid: np.ndarray  # bool per pixel: unmasked, on a panel, inside (min_res, max_res)
    panel_id: np.ndarray  # int16 per pixel, -1 off panels
    panel_slices: tuple[tuple[slice, slice], ...]
    n_bins: int
    order: np.ndarray  # flat indices of the valid pixels, grouped by radius bin
    bins: np.ndarray  # the non-empty radius bins, ascending
    starts: np.ndarray  # start of each non-empty bin in ``order``
    counts: np.ndarray  # pixels in each non-empty bin
    bin_counts: np.ndarray  # float64 per radius bin 0 .. n_bins - 1: its valid pixels
    bin_start: np.ndarray  # int64 per radius bin: where its pixels start in ``order``
    valid_bin: np.ndarray  # int32 per pixel: radius_bin where valid, else -1 (the compiled path's one map)
    panel_bounds: np.ndarray  # (n, 4) int64: each panel slice's ss start, ss stop, fs start, fs stop

    @property
    def max_panel_pixels(self) -> int:
        b = self.panel_bounds
        return int(max(1, *((b[:, 1] - b[:, 0]) * (b[:, 3] - b[:, 2])).tolist()))


def layout(
    r_px: np.ndarray,
    panel_id: np.ndarray,
    bad: np.ndarray,
    panel_slices: list[tuple[slice, slice]],
    *,
    min_res: float = 0.0,
    max_res: float = 1e9,
) -> PeakfinderLayout:
    """Prepare the per-pixel maps: ``r_px`` the radius from the beam (pixels), ``bad``
    True for masked pixels; ``min_res``/``max_res`` the radius limits in pixels (CrystFEL's
    ``--min-res``/``--max-res`` for peakfinder8)."""
    rbin = np.rint(r_px).astype(np.int32)
    valid = (~bad) & (panel_id >= 0) & (r_px >= min_res) & (r_px <= max_res)
    flat = np.flatnonzero(valid.ravel())
    order = flat[np.argsort(rbin.ravel()[flat], kind="stable")]
    bins, starts, counts = np.unique(rbin.ravel()[order], return_index=True, return_counts=True)
    bin_counts = np.bincount(rbin.ravel()[flat], minlength=int(rbin.max()) + 1)
    return PeakfinderLayout(
        radius_bin=rbin,
        valid=valid,
        panel_id=panel_id,
        panel_slices=tuple(panel_slices),
        n_bins=int(rbin.max()) + 1,
        order=order,
        bins=bins.astype(np.int64),
        starts=starts,
        counts=counts,
        bin_counts=bin_counts.astype(np.float64),
        bin_start=np.concatenate([[0], np.cumsum(bin_counts)[:-1]]).astype(np.int64),
        valid_bin=np.where(valid, rbin, -1).astype(np.int32),
        panel_bounds=np.array(
            [[*ss.indices(r_px.shape[0])[:2], *fs.indices(r_px.shape[1])[:2]] for ss, fs in panel_slices],
            dtype=np.int64,
        ).reshape(-1, 4),
    )


def _stats(n, s1, s2, threshold, min_snr):
    mean = s1 / np.maximum(n, 1)
    sigma = np.sqrt(np.maximum(s2 / np.maximum(n, 1) - mean * mean, 0.0))
    upper = np.where(n > 0, np.maximum(mean + min_snr * sigma, threshold), 1e9)
    lower = np.where(n > 0, mean - min_snr * sigma, -1e9)
    return mean, sigma, upper, lower


def radial_thresholds(
    data: np.ndarray, lay: PeakfinderLayout, *, threshold: float, min_snr: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per radius bin (index = rounded radius in pixels): (upper threshold, mean, σ) after
    the sigma-clipping passes, in ADU; bins without valid pixels have an infinite
    threshold.

    The passes after the first only look again at the pixels outside a band of ±1.5 σ
    around the first pass's mean (a few per cent of them): every pixel inside the band
    stays between the thresholds as long as the thresholds enclose the band, which is
    checked at every pass — otherwise the frame is clipped pass by pass over all pixels."""
    values = data.ravel()[lay.order].astype(np.float64)
    starts, counts = lay.starts, lay.counts
    if values.size == 0:
        return np.full(lay.n_bins, np.inf), np.zeros(lay.n_bins), np.zeros(lay.n_bins)
    squares = values * values
    # first pass: thresholds at ±1e9 keep every pixel
    n_all = counts.astype(np.float64)
    s1_all = np.add.reduceat(values, starts)
    s2_all = np.add.reduceat(squares, starts)
    mean, sigma, upper, lower = _stats(n_all, s1_all, s2_all, threshold, min_snr)
    band = 1.5 * sigma
    lo_band, hi_band = mean - band, mean + band
    cand = np.flatnonzero((values <= np.repeat(lo_band, counts)) | (values >= np.repeat(hi_band, counts)))
    cbin = np.searchsorted(starts, cand, side="right") - 1
    cv, cv2 = values[cand], squares[cand]
    nb = len(starts)
    n_in = n_all - np.bincount(cbin, minlength=nb)
    s1_in = s1_all - np.bincount(cbin, weights=cv, minlength=nb)
    s2_in = s2_all - np.bincount(cbin, weights=cv2, minlength=nb)
    fast = True
    for _ in range(N_SIGMA_PASSES - 1):
        if fast and not (np.all(lower <= lo_band) and np.all(upper >= hi_band)):
            fast = False
        if fast:
            keep = (cv > lower[cbin]) & (cv < upper[cbin])
            n = n_in + np.bincount(cbin[keep], minlength=nb)
            s1 = s1_in + np.bincount(cbin[keep], weights=cv[keep], minlength=nb)
            s2 = s2_in + np.bincount(cbin[keep], weights=cv2[keep], minlength=nb)
        else:
            keep = (values > np.repeat(lower, counts)) & (values < np.repeat(upper, counts))
            n = np.add.reduceat(keep, starts).astype(np.float64)
            s1 = np.add.reduceat(np.where(keep, values, 0.0), starts)
            s2 = np.add.reduceat(np.where(keep, squares, 0.0), starts)
        mean, sigma, upper, lower = _stats(n, s1, s2, threshold, min_snr)
    full_upper = np.full(lay.n_bins, np.inf)
    full_mean = np.zeros(lay.n_bins)
    full_sigma = np.zeros(lay.n_bins)
    full_upper[lay.bins] = upper
    full_mean[lay.bins] = mean
    full_sigma[lay.bins] = sigma
    return full_upper, full_mean, full_sigma


def _disc_offsets(local_bg_radius: int) -> tuple[np.ndarray, np.ndarray]:
    ring = 2 * local_bg_radius
    d = np.arange(-ring, ring)  # CrystFEL's loop: -ring_width .. ring_width-1
    dss, dfs = np.meshgrid(d, d, indexing="ij")
    inside = dss**2 + dfs**2 <= ring * ring
    return dss[inside].astype(np.int64), dfs[inside].astype(np.int64)


def peakfinder8(
    data: np.ndarray,
    lay: PeakfinderLayout,
    *,
    threshold: float = 800.0,
    min_snr: float = 6.0,
    min_pix_count: int = 2,
    max_pix_count: int = 200,
    local_bg_radius: int = 3,
    max_n_peaks: int = 2048,
    compiled: bool = True,
) -> Peaks:
    """Find Bragg peaks in one frame ``data`` (ss, fs) in ADU. Parameter names and
    defaults are CrystFEL's ``indexamajig --peaks=peakfinder8`` options (``threshold`` in
    ADU, ``local_bg_radius`` in pixels). ``compiled``: the numba kernels (else the numpy
    reference path)."""
    if data.shape != lay.valid.shape:
        raise ValueError(f"frame shape {data.shape} is not the geometry's {lay.valid.shape}")
    if compiled:
        return _compiled(
            data,
            lay,
            threshold=threshold,
            min_snr=min_snr,
            min_pix_count=min_pix_count,
            max_pix_count=max_pix_count,
            local_bg_radius=local_bg_radius,
            max_n_peaks=max_n_peaks,
        )
    frame = np.asarray(data, dtype=np.float32)
    upper, rmean, _ = radial_thresholds(frame, lay, threshold=threshold, min_snr=min_snr)
    thr_img = upper[lay.radius_bin]
    above = lay.valid & (frame > thr_img)

    # 8-connected components inside each panel (labels made unique over the frame)
    labels = np.zeros(frame.shape, np.int32)
    n_total = 0
    for sl in lay.panel_slices:
        sub = above[sl]
        if not sub.any():
            continue
        lab, n = ndimage.label(sub, structure=_EIGHT)
        if n:
            lab[lab > 0] += n_total
            labels[sl] = lab
            n_total += n
    empty = Peaks(
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int32),
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int16),
    )
    if n_total == 0:
        return empty

    flat_lab = labels.ravel()
    on = np.flatnonzero(flat_lab)
    lab_on = flat_lab[on]
    vals = frame.ravel()[on].astype(np.float64)
    ss_on, fs_on = np.divmod(on, frame.shape[1])
    npix = np.bincount(lab_on, minlength=n_total + 1)[1:]
    sum_i = np.bincount(lab_on, weights=vals, minlength=n_total + 1)[1:]
    sum_fs = np.bincount(lab_on, weights=vals * fs_on, minlength=n_total + 1)[1:]
    sum_ss = np.bincount(lab_on, weights=vals * ss_on, minlength=n_total + 1)[1:]
    keep = (npix >= min_pix_count) & (npix <= max_pix_count) & (sum_i > 0)
    cand = np.flatnonzero(keep)  # label - 1, in label order (= discovery order, raster per panel)
    if cand.size == 0:
        return empty
    com_fs = sum_fs[cand] / sum_i[cand]
    com_ss = sum_ss[cand] / sum_i[cand]
    cfs = np.rint(com_fs).astype(np.int64)
    css = np.rint(com_ss).astype(np.int64)
    ny, nx = frame.shape
    css_c = np.clip(css, 0, ny - 1)
    cfs_c = np.clip(cfs, 0, nx - 1)
    # the panel of a candidate: that of its first pixel
    first = ndimage.minimum(np.arange(on.size), lab_on, cand + 1).astype(np.int64)
    cpanel = lay.panel_id.ravel()[on[first]]
    centroid_on_panel = lay.panel_id[css_c, cfs_c] == cpanel

    # local background on a disc of radius 2·local_bg_radius, vectorised over candidates
    dss, dfs = _disc_offsets(local_bg_radius)
    pss = css[:, None] + dss[None, :]
    pfs = cfs[:, None] + dfs[None, :]
    inside = (pss >= 0) & (pss < ny) & (pfs >= 0) & (pfs < nx)
    pss_c = np.clip(pss, 0, ny - 1)
    pfs_c = np.clip(pfs, 0, nx - 1)
    bg_ok = (
        inside
        & lay.valid[pss_c, pfs_c]
        & (lay.panel_id[pss_c, pfs_c] == cpanel[:, None])
        & (labels[pss_c, pfs_c] == 0)
        & ~above[pss_c, pfs_c]
    )
    bg_vals = np.where(bg_ok, frame[pss_c, pfs_c], 0.0).astype(np.float64)
    n_bg = bg_ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bg_mean = bg_vals.sum(axis=1) / np.maximum(n_bg, 1)
        bg_var = (bg_vals**2).sum(axis=1) / np.maximum(n_bg, 1) - bg_mean**2
    bg_sigma = np.sqrt(np.maximum(bg_var, 0.0))
    bg_max = np.where(bg_ok, frame[pss_c, pfs_c], -np.inf).max(axis=1)
    no_bg = n_bg == 0
    rbin_c = lay.radius_bin[css_c, cfs_c]
    bg_mean = np.where(no_bg, rmean[np.clip(rbin_c, 0, rmean.size - 1)], bg_mean)
    bg_sigma = np.where(no_bg, 0.01, bg_sigma)

    # background-subtracted sums over each candidate's pixels
    pos = np.full(n_total, -1, np.int64)
    pos[cand] = np.arange(cand.size)
    k = pos[lab_on - 1]
    sel = k >= 0
    k, v = k[sel], vals[sel]
    n_c = npix[cand].astype(np.float64)
    total = np.bincount(k, weights=v, minlength=cand.size) - bg_mean * n_c
    peak_max_raw = np.full(cand.size, -np.inf)
    np.maximum.at(peak_max_raw, k, v)
    max_value = peak_max_raw - bg_mean
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(bg_sigma > 0, total / bg_sigma, np.inf)
    ok = (snr >= min_snr) & centroid_on_panel & ~(max_value < (bg_max - bg_mean))
    idx = np.flatnonzero(ok)[:max_n_peaks]
    return Peaks(
        fs=com_fs[idx].astype(np.float32),
        ss=com_ss[idx].astype(np.float32),
        intensity=total[idx].astype(np.float32),
        sigma=bg_sigma[idx].astype(np.float32),
        n_pixels=npix[cand][idx].astype(np.int32),
        max_value=max_value[idx].astype(np.float32),
        snr=snr[idx].astype(np.float32),
        panel=cpanel[idx].astype(np.int16),
    )


class _Scratch(threading.local):
    """The compiled path's work arrays, one set per thread, reused from frame to frame
    (allocated by numpy, which asks for huge pages: fresh buffers every frame cost more in
    page faults than the passes themselves)."""

    def __init__(self) -> None:
        self.cv = np.zeros(0, np.float32)
        self.cb = np.zeros(0, np.int32)
        self.mask = np.zeros((0, 0), np.uint8)
        self.stack = np.zeros(0, np.int64)
        self.comp = np.zeros(0, np.int64)

    def values(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.cv.size < n:
            self.cv, self.cb = np.empty(n, np.float32), np.empty(n, np.int32)
        return self.cv, self.cb

    def above(self, shape: tuple[int, ...]) -> np.ndarray:
        if self.mask.shape != shape:
            self.mask = np.empty(shape, np.uint8)
        return self.mask

    def pixels(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.stack.size < n:
            self.stack, self.comp = np.empty(n, np.int64), np.empty(n, np.int64)
        return self.stack, self.comp


_SCRATCH = _Scratch()


def _compiled(
    data: np.ndarray,
    lay: PeakfinderLayout,
    *,
    threshold: float,
    min_snr: float,
    min_pix_count: int,
    max_pix_count: int,
    local_bg_radius: int,
    max_n_peaks: int,
) -> Peaks:
    frame = np.ascontiguousarray(data, dtype=np.float32)
    scratch = _SCRATCH
    upper, rmean, _sigma = kernels.radial_stats(
        frame,
        lay.valid_bin,
        lay.bin_counts,
        lay.order,
        lay.bin_start,
        float(threshold),
        float(min_snr),
        N_SIGMA_PASSES,
        *scratch.values(lay.order.size + 1),
    )
    out = kernels.find_peaks(
        frame,
        lay.valid_bin,
        lay.radius_bin,
        lay.panel_id,
        lay.panel_bounds,
        upper,
        rmean,
        int(min_pix_count),
        int(max_pix_count),
        int(local_bg_radius),
        float(min_snr),
        int(max_n_peaks),
        scratch.above(frame.shape),
        *scratch.pixels(lay.max_panel_pixels),
    )
    return Peaks(*out)
