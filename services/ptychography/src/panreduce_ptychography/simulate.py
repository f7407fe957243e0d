"""Simulated ptychographic scans with a known object, probe and positions.

The object is a weak-phase, weakly absorbing specimen (phase range about 1 rad, a few per
cent amplitude contrast); the probe a defocused circular pupil (a structured, curved
wavefront like a zone-plate focus); positions a Fermat spiral or a jittered raster;
frames the far-field intensities of the exit waves, with Poisson noise. The probe is
placed at each position with an exact sub-pixel Fourier shift, as in the engines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from panreduce_ptychography.problem import Scan, wavelength_m

GOLDEN_ANGLE = np.pi * (3 - np.sqrt(5))


def make_object(
    shape: tuple[int, int],
    *,
    phase_range: float = 1.0,
    amplitude_contrast: float = 0.05,
    seed: int = 0,
    feature_px: float = 2.0,
) -> np.ndarray:
    """A complex specimen: phase spanning ``phase_range`` rad (minimum -phase_range/2)
    and amplitude ``1 - amplitude_contrast * t`` (t in 0..1) from a mix of discs, bars
    and smoothed random texture of correlation length ``feature_px`` pixels."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = ndimage.gaussian_filter(rng.standard_normal(shape), feature_px * 2) * 3.0
    t += ndimage.gaussian_filter(rng.standard_normal(shape), feature_px) * 1.0
    for _ in range(max(4, h * w // 1500)):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(2, max(3.0, min(h, w) / 12))
        t += rng.uniform(0.5, 1.0) * (np.hypot(yy - cy, xx - cx) < r)
    for _ in range(max(2, h * w // 6000)):
        c = rng.uniform(0, h)
        ang = rng.uniform(0, np.pi)
        d = np.abs((yy - c) * np.cos(ang) - (xx - w / 2) * np.sin(ang))
        t += 0.6 * (d < rng.uniform(1, 3))
    t = ndimage.gaussian_filter(t, 0.7)
    t = (t - t.min()) / max(np.ptp(t), 1e-12)
    u = ndimage.gaussian_filter(rng.standard_normal(shape), feature_px * 3)
    u = (u - u.min()) / max(np.ptp(u), 1e-12)
    phase = phase_range * (t - 0.5)
    amp = 1 - amplitude_contrast * (0.5 * t + 0.5 * u)
    return (amp * np.exp(1j * phase)).astype(np.complex64)


def make_probe(
    size: int,
    *,
    diameter_px: float,
    pupil_radius: float = 0.25,
    photons: float = 1e6,
    modes: int = 1,
    mode_power: tuple[float, ...] = (),
    seed: int = 0,
) -> np.ndarray:
    """(K, size, size) probe: a circular pupil of radius ``pupil_radius`` (cycles/pixel)
    with the defocus that spreads it over ``diameter_px`` pixels. Extra modes (for a
    partially coherent beam) carry ``mode_power`` fractions of the power. Scaled to
    ``photons`` per frame in total."""
    k = np.fft.fftfreq(size)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    pupil = (np.sqrt(k2) <= pupil_radius).astype(np.float64)
    pupil = ndimage.gaussian_filter(np.fft.fftshift(pupil), 0.7)
    pupil = np.fft.ifftshift(pupil)
    c = diameter_px / (2 * pupil_radius)
    spec = pupil * np.exp(1j * np.pi * c * k2)
    p0 = np.fft.fftshift(np.fft.ifft2(spec))
    out = [p0]
    rng = np.random.default_rng(seed)
    y = (np.arange(size) - size / 2)[:, None] / (diameter_px / 2)
    x = (np.arange(size) - size / 2)[None, :] / (diameter_px / 2)
    shapes = [y, x, x * y]
    for i in range(1, modes):
        out.append(p0 * (shapes[(i - 1) % 3] + 0.3 * rng.standard_normal()) * np.exp(2j * np.pi * rng.random()))
    out = np.array(out)
    # orthogonalise (Gram-Schmidt) and set the powers
    for i in range(len(out)):
        for j in range(i):
            out[i] -= np.vdot(out[j], out[i]) / np.vdot(out[j], out[j]) * out[j]
    fractions = np.array([1.0, *mode_power[: modes - 1]] + [0.1] * max(0, modes - 1 - len(mode_power)))
    fractions[0] = 1 - fractions[1:].sum()
    for i in range(len(out)):
        out[i] *= np.sqrt(fractions[i] * photons / np.sum(np.abs(out[i]) ** 2))
    return out.astype(np.complex64)


def fermat_spiral(n: int, step: float) -> np.ndarray:
    """(n, 2) points (y, x) of a Fermat spiral with mean nearest-neighbour distance
    about ``step``, centred on 0."""
    i = np.arange(n) + 0.5
    r = step / np.sqrt(np.pi) * np.sqrt(i) * 1.1
    th = i * GOLDEN_ANGLE
    return np.stack([r * np.sin(th), r * np.cos(th)], axis=1)


def raster(ny: int, nx: int, step: float, *, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """(ny*nx, 2) raster points (y, x) at ``step`` spacing, centred on 0, with uniform
    random jitter of +-``jitter``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    pts = np.stack([(yy - (ny - 1) / 2).ravel(), (xx - (nx - 1) / 2).ravel()], axis=1) * step
    return pts + rng.uniform(-jitter, jitter, pts.shape)


def shift_probe(probe: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Probe modes (K, H, W) shifted by each sub-pixel (dy, dx) of ``frac`` (n, 2)
    -> (n, K, H, W), by a Fourier phase ramp."""
    h, w = probe.shape[-2:]
    ky = np.fft.fftfreq(h)
    kx = np.fft.fftfreq(w)
    ramp = (
        np.exp(-2j * np.pi * frac[:, 0, None] * ky[None, :])[:, :, None]
        * np.exp(-2j * np.pi * frac[:, 1, None] * kx[None, :])[:, None, :]
    )
    return np.fft.ifft2(np.fft.fft2(probe)[None] * ramp[:, None])


def diffraction(obj: np.ndarray, probe: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Noise-free far-field intensities (n, H, W), centred (zero frequency in the
    middle), of the exit waves of ``probe`` (K, H, W) at window ``corners`` (n, 2,
    object pixels, sub-pixel parts by Fourier shift)."""
    _, h, w = probe.shape
    ipos = np.floor(corners + 0.5).astype(int)
    frac = corners - ipos
    out = np.empty((len(corners), h, w), np.float64)
    for s in range(0, len(corners), 64):
        sl = slice(s, s + 64)
        pv = shift_probe(probe, frac[sl])
        patches = np.stack([obj[y : y + h, x : x + w] for y, x in ipos[sl]])
        spec = np.fft.fft2(pv * patches[:, None], norm="ortho")
        out[sl] = (np.abs(spec) ** 2).sum(axis=1)
    return np.fft.fftshift(out, axes=(-2, -1))


@dataclass
class Simulation:
    """A simulated scan and its truth. ``corners``: true window corners (y, x) in
    pixels of ``obj``; positions in the scan are window centres in metres, measured from
    pixel [0, 0] of ``obj``."""

    scan: Scan
    obj: np.ndarray
    probe: np.ndarray
    corners: np.ndarray
    pixel_size_m: float


def simulate(
    *,
    frame_size: int = 64,
    n_positions: int = 100,
    pattern: str = "spiral",
    step_px: float | None = None,
    probe_diameter_px: float | None = None,
    photons: float = 1e7,
    jitter_px: float = 0.3,
    modes: int = 1,
    mode_power: tuple[float, ...] = (),
    object_shape: tuple[int, int] | None = None,
    energy_ev: float = 8000.0,
    distance_m: float = 5.0,
    detector_pixel_m: float = 75e-6,
    phase_range: float = 1.0,
    amplitude_contrast: float = 0.05,
    bad_pixels: int = 0,
    dark_level: float = 0.0,
    detector_size: int | None = None,
    center_offset: tuple[int, int] = (0, 0),
    seed: int = 0,
    noise: bool = True,
) -> Simulation:
    """A scan of ``n_positions`` frames of ``frame_size``^2 over a known specimen.

    step_px: mean distance between positions (default 0.3 x probe diameter, about 70 %
    linear overlap); probe_diameter_px: probe size (default 0.4 x frame);
    photons: expected photons per frame; jitter_px: random position error added to the
    nominal pattern (kept in the truth); bad_pixels: number of dead/hot detector
    pixels (reported in the mask, their values wrong in the frames); dark_level:
    constant counts added to every pixel (reported as the dark frame);
    detector_size / center_offset: frames written on a larger detector with the zero
    frequency displaced by (rows, cols) from its middle, to exercise cropping.
    """
    rng = np.random.default_rng(seed)
    n = frame_size
    d = probe_diameter_px or 0.4 * n
    step = step_px or 0.3 * d
    if pattern == "spiral":
        centres = fermat_spiral(n_positions, step)
    elif pattern == "raster":
        side = int(np.ceil(np.sqrt(n_positions)))
        centres = raster(side, side, step, seed=seed)[:n_positions]
    else:
        raise ValueError(f"unknown pattern {pattern!r}")
    centres = centres + rng.uniform(-jitter_px, jitter_px, centres.shape)
    span = np.ptp(centres, axis=0)
    if object_shape is None:
        object_shape = (int(np.ceil(span[0])) + n + 16, int(np.ceil(span[1])) + n + 16)
    offset = (np.array(object_shape) - span) / 2 - centres.min(axis=0)
    centres = centres + offset
    corners = centres - n / 2
    if corners.min() < 0 or np.any(corners.max(axis=0) + n + 1 > np.array(object_shape)):
        raise ValueError("the scan does not fit in the object")
    obj = make_object(object_shape, phase_range=phase_range, amplitude_contrast=amplitude_contrast, seed=seed + 1)
    probe = make_probe(n, diameter_px=d, photons=photons, modes=modes, mode_power=mode_power, seed=seed + 2)
    inten = diffraction(obj, probe, corners)
    frames = rng.poisson(inten).astype(np.float32) if noise else inten.astype(np.float32)
    mask = np.ones((n, n), bool)
    if bad_pixels:
        flat = rng.choice(n * n, bad_pixels, replace=False)
        mask.ravel()[flat] = False
        hot = rng.random(bad_pixels) < 0.5
        frames.reshape(len(frames), -1)[:, flat[hot]] = 1e6
        frames.reshape(len(frames), -1)[:, flat[~hot]] = 0
    if detector_size:
        big = np.zeros((len(frames), detector_size, detector_size), np.float32)
        big_mask = np.zeros((detector_size, detector_size), bool)
        r0 = detector_size // 2 + center_offset[0] - n // 2
        c0 = detector_size // 2 + center_offset[1] - n // 2
        big[:, r0 : r0 + n, c0 : c0 + n] = frames
        big_mask[r0 : r0 + n, c0 : c0 + n] = mask
        frames, mask = big, big_mask
    dark = None
    if dark_level:
        dark = np.full(frames.shape[1:], dark_level, np.float32)
        frames = frames + dark
    lam = wavelength_m(energy_ev)
    dx = lam * distance_m / (n * detector_pixel_m)
    scan = Scan(
        frames=frames,
        positions_m=centres * dx,
        energy_ev=energy_ev,
        distance_m=distance_m,
        pixel_size_m=(detector_pixel_m, detector_pixel_m),
        mask=mask,
        dark=dark,
        name="simulated",
    )
    return Simulation(scan=scan, obj=obj, probe=probe, corners=corners, pixel_size_m=dx)
