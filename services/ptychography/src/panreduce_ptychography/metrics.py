"""Comparing a reconstruction with the truth: registration, phase error, FRC.

A ptychographic reconstruction is defined up to a global complex factor, a linear phase
ramp (a shift of the diffraction patterns) and a shift of object against probe; these
are removed before the phase error in the well-illuminated region and the Fourier ring
correlation are computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from scipy import ndimage
else:
    ndimage = lazy.module("scipy.ndimage")


def illumination(shape: tuple[int, int], probe: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """sum_j sum_k |P_k|^2 at window ``corners`` (rounded) on an object grid."""
    p2 = (np.abs(np.asarray(probe).reshape(-1, *probe.shape[-2:])) ** 2).sum(0)
    h, w = p2.shape
    out = np.zeros(shape)
    for y, x in np.floor(np.asarray(corners) + 0.5).astype(int):
        out[y : y + h, x : x + w] += p2
    return out


def well_lit(shape: tuple[int, int], probe: np.ndarray, corners: np.ndarray, threshold: float = 0.3) -> np.ndarray:
    """Object pixels whose illumination is at least ``threshold`` x its maximum."""
    ill = illumination(shape, probe, corners)
    return ill >= threshold * ill.max()


def phase_noise_floor(obj: np.ndarray, probe: np.ndarray, positions: np.ndarray, threshold: float = 0.3) -> float:
    """The shot-noise floor (rad) of the object phase in the well-lit region: the RMS over
    the object pixels lit at >= ``threshold`` x the maximum of sqrt(1 / (4 N)), N the
    photons that crossed the pixel over the whole scan (sum_j |P(r - r_j)|^2 |O(r)|^2,
    the probe in sqrt(photons) per pixel). 1 / (4 N) is the least variance of a phase
    measured with N photons (the Cramer-Rao bound of an ideal interferometer); no
    reconstruction of the object at full resolution does better, and ours reach 2-4 x it
    (docs/ptychography.md, Convergence). Needs no ground truth."""
    ill = illumination(obj.shape, probe, positions)
    lit = ill >= threshold * ill.max()
    n = ill[lit] * np.abs(obj[lit]) ** 2
    return float(np.sqrt(np.mean(1.0 / (4.0 * np.maximum(n, 1e-12)))))


def _plane(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yy, xx = np.nonzero(mask)
    return yy.astype(float), xx.astype(float), np.ones(len(yy))


def remove_plane(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img`` minus the least-squares plane a + b y + c x fitted over ``mask``."""
    yy, xx, one = _plane(mask)
    coef, *_ = np.linalg.lstsq(np.stack([one, yy, xx], 1), img[mask], rcond=None)
    gy, gx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]]
    return img - (coef[0] + coef[1] * gy + coef[2] * gx)


def _upsampled_dft(data: np.ndarray, size: int, factor: int, offset: tuple[float, float]) -> np.ndarray:
    """Inverse DFT of ``data`` on a ``size``^2 grid ``factor`` times finer than a pixel,
    starting at ``offset`` (Guizar-Sicairos et al., Opt. Lett. 33, 156 (2008))."""
    h, w = data.shape
    ky = np.fft.ifftshift(np.arange(h)) - h // 2
    kx = np.fft.ifftshift(np.arange(w)) - w // 2
    ry = np.arange(size) - offset[0]
    rx = np.arange(size) - offset[1]
    ey = np.exp(2j * np.pi / (h * factor) * ry[:, None] * ky[None, :])
    ex = np.exp(2j * np.pi / (w * factor) * kx[:, None] * rx[None, :])
    return ey @ data @ ex


def register_shift(ref: np.ndarray, img: np.ndarray, factor: int = 50) -> np.ndarray:
    """Sub-pixel shift (dy, dx) such that ``img(r) ~ ref(r - shift)``, from the peak of
    the cross-correlation refined by an upsampled DFT."""
    f1 = np.fft.fft2(ref)
    f2 = np.fft.fft2(img)
    prod = f2 * np.conj(f1)
    cc = np.fft.ifft2(prod)
    peak = np.array(np.unravel_index(np.argmax(np.abs(cc)), cc.shape), float)
    shape = np.array(cc.shape)
    peak = np.where(peak > shape // 2, peak - shape, peak)
    peak = np.round(peak * factor) / factor
    size = int(np.ceil(factor * 1.5))
    centre = np.fix(size / 2)
    up = _upsampled_dft(prod, size, factor, tuple(centre - peak * factor))
    sub = np.array(np.unravel_index(np.argmax(np.abs(up)), up.shape), float)
    return peak + (sub - centre) / factor


def fourier_shift(img: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``img`` moved by ``shift`` (dy, dx) pixels (periodic, sub-pixel)."""
    ky = np.fft.fftfreq(img.shape[0])[:, None]
    kx = np.fft.fftfreq(img.shape[1])[None, :]
    out = np.fft.ifft2(np.fft.fft2(img) * np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1])))
    return out if np.iscomplexobj(img) else out.real


@dataclass
class Comparison:
    """A reconstruction registered on the truth."""

    aligned: np.ndarray  # the reconstruction, shifted, de-ramped, scaled
    shift_px: np.ndarray  # (dy, dx) removed
    ramp: np.ndarray  # (phase offset rad, d/dy rad/px, d/dx rad/px) removed
    phase_error_rad: float  # RMS phase difference over the region
    region: np.ndarray


def compare(recon: np.ndarray, truth: np.ndarray, region: np.ndarray) -> Comparison:
    """Register ``recon`` on ``truth`` over ``region`` (bool): remove the sub-pixel
    shift, the global phase, a linear phase ramp and the global amplitude, then
    return the RMS phase error in the region."""
    recon = np.asarray(recon, np.complex128)
    truth = np.asarray(truth, np.complex128)
    region = np.asarray(region, bool)
    if recon.shape != truth.shape:
        raise ValueError(f"shapes differ: {recon.shape} vs {truth.shape}")
    window = ndimage.gaussian_filter(region.astype(float), 2.0) * region
    # 1) the shift, from phase maps each freed of its own mean phase and phase gradient
    # (iterated: the window, fixed on the truth, biases each estimate towards zero)
    ph_t = remove_plane(np.angle(_deramp_self(truth, region)), region) * window
    shift = np.zeros(2)
    shifted = recon
    for _ in range(4):
        ph_r = remove_plane(np.angle(_deramp_self(shifted, region)), region) * window
        step = register_shift(ph_t, ph_r)
        shift = shift + step
        shifted = fourier_shift(recon, -shift)
        if np.all(np.abs(step) < 0.01):
            break
    # 2) phase offset + ramp, twice (the second on the residual)
    total = np.zeros(3)
    for _ in range(3):
        z = shifted * np.exp(-1j * _ramp_map(total, recon.shape)) * np.conj(truth)
        total += _fit_ramp(z, region)
    aligned = shifted * np.exp(-1j * _ramp_map(total, recon.shape))
    scale = np.sum(np.abs(truth[region])) / max(np.sum(np.abs(aligned[region])), 1e-30)
    aligned *= scale
    err = np.angle(aligned[region] * np.conj(truth[region]))
    return Comparison(
        aligned=aligned.astype(np.complex64),
        shift_px=shift,
        ramp=total,
        phase_error_rad=float(np.sqrt(np.mean(err**2))),
        region=region,
    )


def _deramp_self(z: np.ndarray, region: np.ndarray) -> np.ndarray:
    """``z`` times exp(-i (c + g.r)) with c its mean phase and g its mean phase gradient
    over ``region``: a field with no phase offset or ramp of its own."""
    ramp = _fit_ramp(z, region, plane=False)
    return z * np.exp(-1j * _ramp_map(ramp, z.shape))


def _ramp_map(ramp: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    gy, gx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ramp[0] + ramp[1] * gy + ramp[2] * gx


def _fit_ramp(z: np.ndarray, region: np.ndarray, *, plane: bool = True) -> np.ndarray:
    """(offset, gy, gx) of the phase of ``z`` over ``region``: gradients from the mean
    phase difference of neighbours, then a weighted least-squares plane of the wrapped
    residual."""
    m = region
    my = m[1:, :] & m[:-1, :]
    mx = m[:, 1:] & m[:, :-1]
    gy = np.angle(np.sum((z[1:, :] * np.conj(z[:-1, :]))[my])) if my.any() else 0.0
    gx = np.angle(np.sum((z[:, 1:] * np.conj(z[:, :-1]))[mx])) if mx.any() else 0.0
    yy, xx = np.mgrid[0 : z.shape[0], 0 : z.shape[1]]
    zz = z * np.exp(-1j * (gy * yy + gx * xx))
    c = np.angle(np.sum(zz[m]))
    if not plane:
        return np.array([c, gy, gx])
    res = np.angle(zz[m] * np.exp(-1j * c))
    yv, xv, one = _plane(m)
    coef, *_ = np.linalg.lstsq(np.stack([one, yv, xv], 1), res, rcond=None)
    return np.array([c + coef[0], gy + coef[1], gx + coef[2]])


def frc(a: np.ndarray, b: np.ndarray, region: np.ndarray, n_rings: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of ``a`` and ``b`` over the bounding box of ``region``
    (apodised at its edge), with their means removed. Returns (frequency as a fraction
    of Nyquist at each ring's centre, FRC)."""
    ys, xs = np.nonzero(region)
    sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    win = ndimage.gaussian_filter(region.astype(float), 3.0)[sl] * region[sl]
    a = np.asarray(a)[sl]
    b = np.asarray(b)[sl]
    a = (a - np.sum(a * win) / win.sum()) * win
    b = (b - np.sum(b * win) / win.sum()) * win
    fa = np.fft.fftshift(np.fft.fft2(a))
    fb = np.fft.fftshift(np.fft.fft2(b))
    h, w = a.shape
    fy = (np.arange(h) - h // 2) / (h / 2)
    fx = (np.arange(w) - w // 2) / (w / 2)
    r = np.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    n_rings = n_rings or min(h, w) // 4
    edges = np.linspace(0, 1, n_rings + 1)
    which = np.digitize(r.ravel(), edges) - 1
    ok = (which >= 0) & (which < n_rings)
    cross = np.bincount(which[ok], (fa * np.conj(fb)).ravel()[ok].real, n_rings)
    cross_i = np.bincount(which[ok], (fa * np.conj(fb)).ravel()[ok].imag, n_rings)
    pa = np.bincount(which[ok], (np.abs(fa) ** 2).ravel()[ok], n_rings)
    pb = np.bincount(which[ok], (np.abs(fb) ** 2).ravel()[ok], n_rings)
    curve = np.abs(cross + 1j * cross_i) / np.sqrt(np.maximum(pa * pb, 1e-300))
    return (edges[:-1] + edges[1:]) / 2, curve
