"""Corrections of projection data before reconstruction.

All functions take and return numpy arrays; projection stacks are
``(n_angles, n_rows, n_cols)``, sinograms ``(n_angles, n_cols)``.

References:
- V. Van Nieuwenhove et al., "Dynamic intensity normalization using eigen flat
  fields in X-ray imaging", Opt. Express 23 (2015) 27975 (dynamic flat-field).
- N. T. Vo, R. C. Atwood, M. Drakopoulos, "Superior techniques for eliminating ring
  artifacts in X-ray micro-tomography", Opt. Express 26 (2018) 28396 (sorting-based
  stripe removal, algorithm 3; filtering-based, algorithm 2).
- D. Paganin et al., "Simultaneous phase and amplitude extraction from a single
  defocused image of a homogeneous object", J. Microsc. 206 (2002) 33.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from panreduce import constants, lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    import scipy.fft
    import scipy.optimize
    from scipy import ndimage
else:
    scipy = lazy.module("scipy", "fft", "optimize")
    ndimage = lazy.module("scipy.ndimage")


# -- -log and dark/flat -------------------------------------------------------------------
def minus_log(x: np.ndarray, floor: float = 1e-6) -> np.ndarray:
    """-ln(x) with values below ``floor`` (zeros, negatives, NaN) clipped to ``floor``
    so that dead or saturated pixels give a large finite attenuation, never inf/NaN."""
    y = np.asarray(x, dtype=np.float32)
    y = np.where(np.isfinite(y), y, floor)
    return -np.log(np.maximum(y, floor))


def flat_field(
    proj: np.ndarray, dark: np.ndarray | None, flat: np.ndarray | None, *, floor: float = 1e-6
) -> np.ndarray:
    """Conventional correction ``(P - D) / (F - D)`` with ``dark``/``flat`` the mean dark
    and flat images (rows, cols); a flat no brighter than the dark gives 1 (no
    information) instead of a division by zero."""
    p = np.asarray(proj, dtype=np.float32)
    d = np.zeros(p.shape[1:], np.float32) if dark is None else np.asarray(dark, np.float32)
    if flat is None:
        return p - d
    den = np.asarray(flat, np.float32) - d
    bad = den <= floor
    out = (p - d) / np.where(bad, 1.0, den)
    if np.any(bad):
        out[:, bad] = 1.0
    return out


@dataclass(frozen=True)
class EigenFlats:
    """Mean flat and principal components of the flats, all dark-subtracted."""

    dark: np.ndarray  # (rows, cols)
    mean: np.ndarray  # (rows, cols)
    components: np.ndarray  # (k, rows, cols)
    explained: np.ndarray  # fraction of the flats' variance per component


def eigen_flats(flats: np.ndarray, dark: np.ndarray, n_components: int = 4) -> EigenFlats:
    """PCA of the dark-subtracted flats (Van Nieuwenhove et al. 2015, eq. 3-4)."""
    f = np.asarray(flats, np.float64) - np.asarray(dark, np.float64)[None]
    mean = f.mean(0)
    a = (f - mean[None]).reshape(len(f), -1)
    k = int(min(n_components, max(len(f) - 1, 0)))
    if k == 0:
        return EigenFlats(
            np.asarray(dark, np.float32), mean.astype(np.float32), np.zeros((0, *mean.shape), np.float32), np.zeros(0)
        )
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    var = s**2
    comps = (vt[:k] * (s[:k, None] / np.sqrt(len(f)))).reshape(k, *mean.shape)
    return EigenFlats(
        np.asarray(dark, np.float32),
        mean.astype(np.float32),
        comps.astype(np.float32),
        (var[:k] / max(var.sum(), 1e-30)),
    )


def _block_mean(img: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return img
    r = img.shape[-2] // factor * factor
    c = img.shape[-1] // factor * factor
    x = img[..., :r, :c]
    return x.reshape(*x.shape[:-2], r // factor, factor, c // factor, factor).mean((-3, -1))


def dynamic_weights(proj: np.ndarray, ef: EigenFlats, *, downsample: int = 2) -> np.ndarray:
    """Per-projection weights of the eigen flats that minimise the total variation of
    the normalised projection (Van Nieuwenhove et al. 2015, eq. 5), on images
    block-averaged by ``downsample``. ``proj`` (A, rows, cols) -> (A, k)."""
    k = len(ef.components)
    if k == 0:
        return np.zeros((len(proj), 0))
    mean = _block_mean(ef.mean.astype(np.float64), downsample)
    comps = _block_mean(ef.components.astype(np.float64), downsample)
    dark = _block_mean(ef.dark.astype(np.float64), downsample)
    out = np.zeros((len(proj), k))
    w0 = np.zeros(k)
    for i, p in enumerate(proj):
        num = _block_mean(np.asarray(p, np.float64), downsample) - dark

        def cost(w: np.ndarray, num: np.ndarray = num) -> tuple[float, np.ndarray]:
            flat = mean + np.tensordot(w, comps, axes=1)
            flat = np.where(np.abs(flat) < 1e-6, 1e-6, flat)
            q = num / flat
            gy = np.diff(q, axis=0)
            gx = np.diff(q, axis=1)
            eps = 1e-8
            ay = np.sqrt(gy * gy + eps)
            ax = np.sqrt(gx * gx + eps)
            tv = ay.sum() + ax.sum()
            # d tv / d q
            dq = np.zeros_like(q)
            sy = gy / ay
            sx = gx / ax
            dq[:-1] -= sy
            dq[1:] += sy
            dq[:, :-1] -= sx
            dq[:, 1:] += sx
            dflat = -dq * q / flat
            grad = np.tensordot(comps, dflat, axes=([1, 2], [0, 1]))
            return float(tv), grad

        res = scipy.optimize.minimize(cost, w0, jac=True, method="L-BFGS-B", options={"maxiter": 50})
        out[i] = res.x
        w0 = res.x  # neighbouring projections have similar weights
    return out


def dynamic_flat_field(proj: np.ndarray, ef: EigenFlats, weights: np.ndarray, *, floor: float = 1e-6) -> np.ndarray:
    """``(P - D) / (F_mean + sum_k w_k u_k)`` with the weights from :func:`dynamic_weights`
    (rows of ``ef`` must match those of ``proj``)."""
    p = np.asarray(proj, np.float32) - ef.dark[None]
    flat = ef.mean[None] + np.tensordot(weights.astype(np.float32), ef.components, axes=1)
    bad = flat <= floor
    out = p / np.where(bad, 1.0, flat)
    out[bad] = 1.0
    return out


# -- outliers -----------------------------------------------------------------------------
def remove_zingers(sino_stack: np.ndarray, threshold: float = 0.3, size: int = 3) -> np.ndarray:
    """Replace isolated bright (or dark) pixels by the local median: a pixel is an
    outlier when it differs from the median of its ``size`` x ``size`` neighbourhood in
    the (angle, column) plane by more than ``threshold`` times that median (relative;
    for intensity data). Works on (A, rows, cols) one detector row at a time, so it needs
    no neighbouring rows (slab friendly)."""
    x = np.asarray(sino_stack, np.float32)
    med = ndimage.median_filter(x, size=(size, 1, size), mode="nearest")
    bad = np.abs(x - med) > threshold * np.maximum(np.abs(med), 1e-6)
    return np.where(bad, med, x)


# -- rings --------------------------------------------------------------------------------
def remove_stripes_sorting(sino: np.ndarray, size: int = 21) -> np.ndarray:
    """Vo et al. (2018) algorithm 3: sort each detector column along the angles, median
    filter the sorted image across columns (window ``size``), and put the values back
    in their original order. Removes full and partial stripes (rings in the
    reconstruction) while keeping the object's features. (A, cols) or (B, A, cols)."""
    s = np.asarray(sino, np.float32)
    if s.ndim == 3:
        return np.stack([remove_stripes_sorting(x, size) for x in s])
    order = np.argsort(s, axis=0, kind="stable")
    sorted_s = np.take_along_axis(s, order, axis=0)
    filt = ndimage.median_filter(sorted_s, size=(1, size), mode="reflect")
    out = np.empty_like(s)
    np.put_along_axis(out, order, filt, axis=0)
    return out


def remove_stripes_filtering(sino: np.ndarray, sigma: float = 3.0, size: int = 21) -> np.ndarray:
    """Vo et al. (2018) algorithm 2: sort each column, split the sorted sinogram into a
    smooth part (Gaussian low-pass along the angles, ``sigma`` in Fourier pixels) and the
    rest, median filter only the smooth part across columns (``size``) and put it back."""
    s = np.asarray(sino, np.float32)
    if s.ndim == 3:
        return np.stack([remove_stripes_filtering(x, sigma, size) for x in s])
    order = np.argsort(s, axis=0, kind="stable")
    sorted_s = np.take_along_axis(s, order, axis=0)
    pad = min(150, len(s) // 2)
    padded = np.pad(sorted_s, ((pad, pad), (0, 0)), mode="reflect")
    n = padded.shape[0]
    f = np.fft.fftfreq(n) * n
    win = np.exp(-(f**2) / (2 * sigma**2))[:, None]
    smooth = np.real(np.fft.ifft(np.fft.fft(padded, axis=0) * win, axis=0))[pad : pad + len(s)]
    sharp = sorted_s - smooth
    smooth = ndimage.median_filter(smooth, size=(1, size), mode="reflect")
    out = np.empty_like(s)
    np.put_along_axis(out, order, (smooth + sharp).astype(np.float32), axis=0)
    return out


def stripe_index(sino: np.ndarray, size: int = 21) -> float:
    """A ring metric in the sinogram: RMS of the column-mean profile minus its running
    median (``size`` columns), relative to the profile's mean absolute value. Stripes
    (ring sources) raise it; smooth objects hardly do."""
    prof = np.asarray(sino, np.float64).mean(axis=-2)
    prof = prof.reshape(-1, prof.shape[-1])
    trend = ndimage.median_filter(prof, size=(1, size), mode="reflect")
    return float(np.sqrt(np.mean((prof - trend) ** 2)) / max(np.mean(np.abs(prof)), 1e-12))


def ring_index(image: np.ndarray, size: int = 9) -> float:
    """A ring metric in a reconstructed slice (axis at pixel n//2): RMS of the
    azimuthally averaged radial profile minus its running median (``size`` pixels),
    relative to the image's standard deviation."""
    img = np.asarray(image, np.float64)
    n0, n1 = img.shape
    yy, xx = np.indices(img.shape)
    r = np.hypot(yy - n0 // 2, xx - n1 // 2).astype(int)
    rmax = min(n0, n1) // 2 - 2
    keep = r < rmax
    prof = np.bincount(r[keep], weights=img[keep]) / np.maximum(np.bincount(r[keep]), 1)
    trend = ndimage.median_filter(prof, size=size, mode="nearest")
    return float(np.sqrt(np.mean((prof - trend)[3:] ** 2)) / max(img[keep].std(), 1e-12))


# -- phase retrieval ----------------------------------------------------------------------
def paganin_kernel_width(*, pixel_size_m: float, distance_m: float, energy_kev: float, delta_beta: float) -> float:
    """The length scale sqrt(pi lambda z delta/beta) of the Paganin filter, in pixels."""
    lam = constants.H_C_KEV_M / energy_kev
    return float(np.sqrt(np.pi * lam * distance_m * delta_beta) / pixel_size_m)


def paganin(
    proj: np.ndarray,
    *,
    pixel_size_m: float,
    distance_m: float,
    energy_kev: float,
    delta_beta: float,
    pad: int | None = None,
) -> np.ndarray:
    """Single-distance phase retrieval for a homogeneous object (Paganin et al. 2002,
    eq. 10): each flat-field corrected projection ``I/I0`` (A, rows, cols) is filtered
    by ``1 / (1 + pi lambda z (delta/beta) |u|^2)`` (``u`` spatial frequency in cycles
    per metre); ``-log`` of the result is mu times the projected thickness. Images are
    padded (edge values) by ``pad`` pixels (default: 3 kernel widths) against wrap-around."""
    p = np.asarray(proj, np.float32)
    lam = constants.H_C_KEV_M / energy_kev
    width = paganin_kernel_width(
        pixel_size_m=pixel_size_m, distance_m=distance_m, energy_kev=energy_kev, delta_beta=delta_beta
    )
    pad = int(np.ceil(3 * width)) + 2 if pad is None else pad
    x = np.pad(p, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    ny, nx = x.shape[1:]
    ny_f, nx_f = scipy.fft.next_fast_len(ny, real=True), scipy.fft.next_fast_len(nx, real=True)
    uy = np.fft.fftfreq(ny_f, d=pixel_size_m)[:, None]
    ux = np.fft.rfftfreq(nx_f, d=pixel_size_m)[None, :]
    filt = 1.0 / (1.0 + np.pi * lam * distance_m * delta_beta * (ux**2 + uy**2))
    spec = scipy.fft.rfft2(x, s=(ny_f, nx_f), workers=-1) * filt[None].astype(np.float32)
    out = scipy.fft.irfft2(spec, s=(ny_f, nx_f), workers=-1)[:, pad : pad + p.shape[1], pad : pad + p.shape[2]]
    return out.astype(np.float32)
