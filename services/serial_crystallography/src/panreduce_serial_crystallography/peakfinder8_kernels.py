"""Compiled (numba) peakfinder8: the same arithmetic as the numpy path in ``peakfinder8``
(tests compare the two on the real CSPAD and Rayonix hits), in a few passes over the frame
in memory order, one core:

* radial statistics: one pass for the first sigma-clipping iteration (all pixels), one
  that sums the pixels inside a band of ±1.5 σ around its mean and keeps the few outside
  it; the later iterations only look again at those (the band stays between the
  thresholds, checked every iteration, else the iteration is a full pass);
* peaks: the pixels above their bin's threshold, then per panel an 8-connected flood fill
  from each unvisited one in raster order (the numpy path's label order), the component's
  pixels sorted back into raster order so that its sums add up in the same order, the
  local background disc and the acceptance tests per candidate — no per-peak Python.

Sums are float64 as in the numpy path; the radial sums add in raster order rather than
numpy's pairwise order (thresholds differ in the last bits, far below any pixel's
distance from them). All kernels release the GIL (``nogil``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

BAND_SIGMAS = 1.5  # the numpy path's band
LANES = 4  # interleaved copies of the first pass's sums (a power of two)


@njit(cache=True, nogil=True)
def _thresholds(n, s1, s2, threshold, min_snr, mean, sigma, upper, lower):
    for b in range(n.size):
        if n[b] > 0:
            m = s1[b] / n[b]
            var = s2[b] / n[b] - m * m
            sd = np.sqrt(var) if var > 0 else 0.0
            mean[b] = m
            sigma[b] = sd
            upper[b] = max(m + min_snr * sd, threshold)
            lower[b] = m - min_snr * sd
        else:
            mean[b] = 0.0
            sigma[b] = 0.0
            upper[b] = 1e9
            lower[b] = -1e9


@njit(cache=True, nogil=True)
def radial_stats(data, bins, counts, order, bin_start, threshold, min_snr, n_passes, cv, cb):
    """Per radius bin: (upper threshold, mean, σ) after ``n_passes`` sigma clippings of
    the pixels of ``data`` (ss, fs, float32) whose ``bins`` (int32) is ≥ 0; ``counts``:
    the pixels per bin (float64; bins without any get an infinite threshold), ``order``
    the flat indices of those pixels grouped by bin, bin ``b``'s from ``bin_start[b]``;
    ``cv`` (float32) and ``cb`` (int32), of at least one more than the valid pixels: the
    caller's scratch (reused, so that its pages are not faulted in anew every frame)."""
    ny, nx = data.shape
    n_bins = counts.size
    # first pass (every pixel): Σv and Σv² in LANES interleaved copies, so that neighbouring
    # pixels of one bin do not wait on each other's sums
    acc = np.zeros((LANES, n_bins, 2))
    for i in range(ny):
        for j in range(nx):
            b = bins[i, j]
            if b >= 0:
                v = np.float64(data[i, j])
                lane = j & (LANES - 1)
                acc[lane, b, 0] += v
                acc[lane, b, 1] += v * v
    s1_all = np.zeros(n_bins)
    s2_all = np.zeros(n_bins)
    for lane in range(LANES):
        for b in range(n_bins):
            s1_all[b] += acc[lane, b, 0]
            s2_all[b] += acc[lane, b, 1]
    mean = np.zeros(n_bins)
    sigma = np.zeros(n_bins)
    upper = np.zeros(n_bins)
    lower = np.zeros(n_bins)
    _thresholds(counts, s1_all, s2_all, threshold, min_snr, mean, sigma, upper, lower)
    lo_band = mean - BAND_SIGMAS * sigma
    hi_band = mean + BAND_SIGMAS * sigma
    # the pixels outside the band, kept (branch-free) for the later passes; the band's own
    # sums are the totals less theirs
    nc = 0
    for i in range(ny):
        for j in range(nx):
            b = bins[i, j]
            if b >= 0:
                x = data[i, j]
                v = np.float64(x)
                cv[nc] = x
                cb[nc] = b
                nc += (v <= lo_band[b]) | (v >= hi_band[b])
    n_out = np.zeros(n_bins)
    s1_out = np.zeros(n_bins)
    s2_out = np.zeros(n_bins)
    for k in range(nc):
        b = cb[k]
        n_out[b] += 1.0
        v = np.float64(cv[k])
        s1_out[b] += v
        s2_out[b] += v * v
    n_in = counts - n_out
    s1_in = s1_all - s1_out
    s2_in = s2_all - s2_out
    # a bin whose band no longer lies between its thresholds is clipped from all its
    # pixels (``order``: the valid pixels grouped by bin) from then on
    full = np.zeros(n_bins, np.bool_)
    flat = data.reshape(-1)
    n = np.empty(n_bins)
    s1 = np.empty(n_bins)
    s2 = np.empty(n_bins)
    for _ in range(n_passes - 1):
        n[:] = 0.0
        s1[:] = 0.0
        s2[:] = 0.0
        for b in range(n_bins):
            if counts[b] > 0 and not full[b] and not (lower[b] <= lo_band[b] and upper[b] >= hi_band[b]):
                full[b] = True
        for k in range(nc):
            b = cb[k]
            v = np.float64(cv[k])
            if not full[b] and v > lower[b] and v < upper[b]:
                n[b] += 1.0
                s1[b] += v
                s2[b] += v * v
        for b in range(n_bins):
            if full[b]:
                for k in range(bin_start[b], bin_start[b] + np.int64(counts[b])):
                    v = np.float64(flat[order[k]])
                    if v > lower[b] and v < upper[b]:
                        n[b] += 1.0
                        s1[b] += v
                        s2[b] += v * v
            else:
                n[b] += n_in[b]
                s1[b] += s1_in[b]
                s2[b] += s2_in[b]
        _thresholds(n, s1, s2, threshold, min_snr, mean, sigma, upper, lower)
    for b in range(n_bins):
        if counts[b] == 0:
            upper[b] = np.inf
    return upper, mean, sigma


@njit(cache=True, nogil=True)
def find_peaks(
    data,
    bins,
    radius_bin,
    panel_id,
    panel_bounds,
    upper,
    rmean,
    min_pix_count,
    max_pix_count,
    local_bg_radius,
    min_snr,
    max_n_peaks,
    above,
    stack,
    comp,
):
    """The accepted peaks of ``data`` (float32, ss × fs): (fs, ss, intensity, σ, pixels,
    max value, SNR, panel), arrays of the peaks in order of discovery. ``bins`` is the
    radius bin of a valid pixel (-1: not used), ``upper`` the threshold per bin (∞ for
    empty bins), ``panel_bounds`` (n, 4) the panels' [ss0, ss1) × [fs0, fs1) rectangles;
    ``above`` (uint8, as ``data``), ``stack`` and ``comp`` (int64, at least the largest
    panel's pixels): the caller's scratch."""
    ny, nx = data.shape
    for i in range(ny):  # 1: above threshold (2 once a flood fill visited it)
        for j in range(nx):
            b = bins[i, j]
            above[i, j] = 1 if b >= 0 and np.float64(data[i, j]) > upper[b] else 0
    ring = 2 * local_bg_radius
    ring2 = ring * ring
    cap = max_n_peaks
    o_fs = np.empty(cap, np.float32)
    o_ss = np.empty(cap, np.float32)
    o_int = np.empty(cap, np.float32)
    o_sig = np.empty(cap, np.float32)
    o_npix = np.empty(cap, np.int32)
    o_max = np.empty(cap, np.float32)
    o_snr = np.empty(cap, np.float32)
    o_pan = np.empty(cap, np.int16)
    n_out = 0
    for p in range(panel_bounds.shape[0]):
        if n_out >= cap:
            break
        ss0, ss1, fs0, fs1 = panel_bounds[p, 0], panel_bounds[p, 1], panel_bounds[p, 2], panel_bounds[p, 3]
        for i0 in range(ss0, ss1):
            for j0 in range(fs0, fs1):
                if above[i0, j0] != 1 or n_out >= cap:
                    continue
                # 8-connected flood fill inside the panel's rectangle
                above[i0, j0] = 2
                stack[0] = i0 * nx + j0
                top = 1
                npix = 0
                while top > 0:
                    top -= 1
                    q = stack[top]
                    comp[npix] = q
                    npix += 1
                    qi = q // nx
                    qj = q - qi * nx
                    for di in range(-1, 2):
                        ii = qi + di
                        if ii < ss0 or ii >= ss1:
                            continue
                        for dj in range(-1, 2):
                            jj = qj + dj
                            if jj < fs0 or jj >= fs1 or above[ii, jj] != 1:
                                continue
                            above[ii, jj] = 2
                            stack[top] = ii * nx + jj
                            top += 1
                if npix < min_pix_count or npix > max_pix_count:
                    continue
                pix = np.sort(comp[:npix])  # raster order: the numpy path's order of summation
                sum_i = 0.0
                sum_fs = 0.0
                sum_ss = 0.0
                peak_max = -np.inf
                for k in range(npix):
                    q = pix[k]
                    qi = q // nx
                    qj = q - qi * nx
                    v = np.float64(data[qi, qj])
                    sum_i += v
                    sum_fs += v * qj
                    sum_ss += v * qi
                    peak_max = max(peak_max, v)
                if not sum_i > 0:
                    continue
                com_fs = sum_fs / sum_i
                com_ss = sum_ss / sum_i
                cfs = np.int64(np.rint(com_fs))
                css = np.int64(np.rint(com_ss))
                first = pix[0]
                cpanel = panel_id[first // nx, first - (first // nx) * nx]
                css_c = min(max(css, 0), ny - 1)
                cfs_c = min(max(cfs, 0), nx - 1)
                if panel_id[css_c, cfs_c] != cpanel:
                    continue
                # local background: a disc of radius 2·local_bg_radius on the same panel
                n_bg = 0
                b1 = 0.0
                b2 = 0.0
                bg_max = -np.inf
                for di in range(-ring, ring):
                    ii = css + di
                    if ii < 0 or ii >= ny:
                        continue
                    for dj in range(-ring, ring):
                        if di * di + dj * dj > ring2:
                            continue
                        jj = cfs + dj
                        if jj < 0 or jj >= nx:
                            continue
                        if bins[ii, jj] == -1 or panel_id[ii, jj] != cpanel or above[ii, jj] != 0:
                            continue
                        v = np.float64(data[ii, jj])
                        n_bg += 1
                        b1 += v
                        b2 += v * v
                        bg_max = max(bg_max, v)
                if n_bg == 0:
                    rb = min(max(radius_bin[css_c, cfs_c], 0), rmean.size - 1)
                    bg_mean = rmean[rb]
                    bg_sigma = 0.01
                else:
                    bg_mean = b1 / n_bg
                    var = b2 / n_bg - bg_mean * bg_mean
                    bg_sigma = np.sqrt(var) if var > 0 else 0.0
                total = sum_i - bg_mean * npix
                max_value = peak_max - bg_mean
                snr = total / bg_sigma if bg_sigma > 0 else np.inf
                if not snr >= min_snr or max_value < bg_max - bg_mean:
                    continue
                o_fs[n_out] = com_fs
                o_ss[n_out] = com_ss
                o_int[n_out] = total
                o_sig[n_out] = bg_sigma
                o_npix[n_out] = npix
                o_max[n_out] = max_value
                o_snr[n_out] = snr
                o_pan[n_out] = cpanel
                n_out += 1
    return (
        o_fs[:n_out],
        o_ss[:n_out],
        o_int[:n_out],
        o_sig[:n_out],
        o_npix[:n_out],
        o_max[:n_out],
        o_snr[:n_out],
        o_pan[:n_out],
    )
