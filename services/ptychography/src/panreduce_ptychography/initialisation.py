"""Initial guesses: the probe (from a file, a parametric model, or the data alone) and the
object (flat, or the low-frequency phase from differential phase contrast)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from panreduce_ptychography.problem import Problem


def initial_probe(
    problem: Problem, probe: np.ndarray | None, modes: int, *, seed: int = 0, diameter_px: float | None = None
) -> np.ndarray:
    """(K, H, W) complex64 probe: the given one (its first modes), else the inverse
    Fourier transform of the mean diffraction amplitude (a focused probe), or a
    Gaussian of FWHM ``diameter_px``; extra modes are the first mode times low-order
    polynomials at 5 % of its power each. Scaled to the mean photons per frame."""
    h, w = problem.frame_shape
    if probe is not None:
        p = np.asarray(probe, np.complex64)
        if p.ndim == 2:
            p = p[None]
    elif diameter_px:
        y = np.arange(h) - h / 2
        x = np.arange(w) - w / 2
        r2 = y[:, None] ** 2 + x[None, :] ** 2
        p = np.exp(-4 * np.log(2) * r2 / diameter_px**2)[None].astype(np.complex64)
    else:
        amp = np.sqrt(np.maximum((problem.counts * problem.mask).mean(axis=0), 0))
        p = np.fft.fftshift(np.fft.ifft2(amp, norm="ortho"))[None].astype(np.complex64)
    out = np.zeros((modes, h, w), np.complex64)
    k0 = min(modes, p.shape[0])
    out[:k0] = p[:k0]
    if modes > k0:
        rng = np.random.default_rng(seed)
        y = (np.arange(h) - h / 2) / (h / 4)
        x = (np.arange(w) - w / 2) / (w / 4)
        basis = [
            y[:, None] + 0 * x[None, :],
            0 * y[:, None] + x[None, :],
            y[:, None] * x[None, :],
            y[:, None] ** 2 - x[None, :] ** 2,
        ]
        power0 = np.sum(np.abs(out[0]) ** 2)
        for k in range(k0, modes):
            b = basis[(k - k0) % len(basis)] * np.exp(2j * np.pi * rng.random())
            m = out[0] * b
            m *= np.sqrt(0.05 * power0 / max(np.sum(np.abs(m) ** 2), 1e-30))
            out[k] = m
    # scale to the measured photons per frame (object of unit amplitude)
    good = max(float(problem.mask.mean()), 1e-6)
    photons = float(problem.counts.sum(axis=(1, 2)).mean()) / good
    power = float(np.sum(np.abs(out) ** 2))
    if power > 0:
        out *= np.sqrt(photons / power)
    return out


# -----------------------------------------------------------------------------------------
# parametric probes: a pupil (the focusing optic's aperture, in spatial frequency) at focus,
# propagated by the defocus (Fresnel), as PtyPy's illumination model
def _freq(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (cycles per object pixel), zero at [0, 0]."""
    return np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]


def defocus_phase(shape: tuple[int, int], c: float | tuple[float, float]) -> np.ndarray:
    """exp(i pi (c_y k_y^2 + c_x k_x^2)) on the frequency grid of ``shape``: the Fresnel
    propagator of a defocus ``z`` is ``c = -wavelength z / dx^2`` (object pixels);
    a scalar ``c`` for both axes, a pair for an astigmatic (KB) focus."""
    cy, cx = (c, c) if np.isscalar(c) else c
    ky, kx = _freq(*shape)
    return np.exp(1j * np.pi * (cy * ky**2 + cx * kx**2))


def probe_from_pupil(pupil: np.ndarray, c: float | tuple[float, float] = 0.0) -> np.ndarray:
    """(H, W) probe, centred in the frame, of a pupil (zero frequency at [0, 0]) with a
    defocus ``c`` (see :func:`defocus_phase`)."""
    spec = pupil * defocus_phase(pupil.shape, c)
    return np.fft.fftshift(np.fft.ifft2(spec, norm="ortho")).astype(np.complex64)


def aperture_pupil(shape: tuple[int, int], kind: str, half_widths: tuple[float, float]) -> np.ndarray:
    """A circular (``half_widths`` = (radius, radius)) or rectangular pupil in cycles per
    object pixel, zero frequency at [0, 0], its edge softened over ~1 pixel."""
    from scipy import ndimage

    ky, kx = _freq(*shape)
    ry, rx = half_widths
    if kind == "circular":
        inside = (ky / ry) ** 2 + (kx / rx) ** 2 <= 1
    else:
        inside = (np.abs(ky) <= ry) & (np.abs(kx) <= rx)
    soft = ndimage.gaussian_filter(np.fft.fftshift(inside.astype(np.float64)), 0.7)
    return np.fft.ifftshift(soft)


def parametric_probe(
    problem: Problem,
    kind: str,
    *,
    aperture_m: float | None = None,
    aperture_height_m: float | None = None,
    focal_length_m: float | None = None,
    diameter_m: float | None = None,
    defocus_m: float = 0.0,
) -> np.ndarray:
    """(H, W) probe of a model optic: ``circular`` (lens or zone plate of diameter
    ``aperture_m``) or ``rectangular`` (KB mirrors, ``aperture_m`` wide and
    ``aperture_height_m`` high) focusing at ``focal_length_m``, or ``gaussian`` (a focus
    of intensity FWHM ``diameter_m``); the sample ``defocus_m`` downstream of the focus.
    Units: metres; the wavelength and object pixel size from ``problem``."""
    h, w = problem.frame_shape
    dx, lam = problem.pixel_size_m, problem.wavelength_m
    if lam <= 0:
        raise ValueError("the problem has no wavelength")
    c = -lam * defocus_m / dx**2
    if kind == "gaussian":
        if not diameter_m:
            raise ValueError("a gaussian probe needs its diameter")
        y = np.arange(h) - h / 2
        x = np.arange(w) - w / 2
        d = diameter_m / dx
        focus = np.exp(-2 * np.log(2) * (y[:, None] ** 2 + x[None, :] ** 2) / d**2)
        pupil = np.fft.fft2(np.fft.ifftshift(focus), norm="ortho")
        return probe_from_pupil(pupil, c)
    if kind not in ("circular", "rectangular") or not aperture_m or not focal_length_m:
        raise ValueError(f"a {kind} probe needs the aperture and the focal length")
    # the aperture's half-width a subtends a / f rad: a / (f wavelength) cycles/m
    kx = aperture_m / 2 / (focal_length_m * lam) * dx
    ky = (aperture_height_m or aperture_m) / 2 / (focal_length_m * lam) * dx
    if min(kx, ky) < 1.0 / min(h, w):
        raise ValueError(
            f"the aperture's numerical aperture gives a pupil under one pixel ({min(kx, ky) * min(h, w):.2f} px)"
        )
    return probe_from_pupil(aperture_pupil((h, w), kind, (ky, kx)), c)


def data_pupil(problem: Problem, threshold: float = 0.1) -> np.ndarray:
    """The pupil (bright-field disc) seen in the data: the square root of the mean
    diffraction pattern where it exceeds ``threshold`` of its (smoothed) maximum, the
    largest connected region holding the zero frequency, edges softened."""
    from scipy import ndimage

    mean = np.fft.fftshift((problem.counts * problem.mask).mean(axis=0)).astype(np.float64)
    good = np.fft.fftshift(problem.mask) > 0
    smooth = ndimage.gaussian_filter(mean, 1.0) / np.maximum(ndimage.gaussian_filter(good * 1.0, 1.0), 1e-3)
    inside = smooth >= threshold * smooth.max()
    labels, _ = ndimage.label(inside)
    h, w = mean.shape
    centre = labels[h // 2, w // 2]
    if centre:
        inside = labels == centre
    inside = ndimage.binary_fill_holes(inside)
    amp = np.sqrt(np.maximum(np.where(good, mean, smooth), 0)) * inside
    amp = ndimage.gaussian_filter(amp, 0.5)
    return np.fft.ifftshift(amp)


def probe_from_data(
    problem: Problem,
    *,
    frames: int = 40,
    iterations: int = 16,
    seed: int = 0,
    backend=None,
    check: Callable[[], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """(H, W) probe estimated from the data alone: the pupil of :func:`data_pupil` (the
    aperture's extent from the mean diffraction pattern) and the defocus (a scalar, then
    per axis for an astigmatic focus) that best explains ``frames`` neighbouring frames
    after ``iterations`` of ML (its likelihood discriminates far better than DM's after a
    few iterations: 1.5 against >= 2.8 per pixel on the held-out frames of a KB raster,
    where DM's preferred a point-like probe), by the Poisson deviance; scaled to
    the mean counts later (:func:`initial_probe`). Returns (probe, what was found).
    ``check()`` runs before every trial and after each of its iterations; an exception it
    raises (a cancelled job) stops the search there."""
    from panreduce_ptychography.backend import Backend
    from panreduce_ptychography.engines import State, final_metrics, reconstruct
    from panreduce_ptychography.model import Options

    backend = backend or Backend()
    h, w = problem.frame_shape
    pupil = data_pupil(problem)
    ky, kx = _freq(h, w)
    support = pupil > 0.05 * pupil.max()
    ry = max(float(np.abs(ky[:, 0:1] * support).max()), 1.0 / h)
    rx = max(float(np.abs(kx[0:1] * support).max()), 1.0 / w)
    # a local patch of the scan: the frames nearest its centre
    pos = problem.positions
    n = len(pos)
    near = np.sort(np.argsort(((pos - pos.mean(axis=0)) ** 2).sum(1))[: min(frames, n)])
    patch = _sub_problem(problem, near)
    # cross-validation: reconstruct from two thirds of the patch, score on them and on
    # the other third
    # (a wrong probe that only fits the frames it saw -- e.g. a small one, whose frames
    # overlap less -- scores badly on the frames it did not see)
    held = np.zeros(len(near), bool)
    held[1::3] = True
    train = dataclasses.replace(patch, counts=patch.counts[~held], positions=patch.positions[~held])
    test = dataclasses.replace(patch, counts=patch.counts[held], positions=patch.positions[held])
    opts = Options(subpixel_grid=4, seed=seed)

    def score(c: tuple[float, float]) -> float:
        if check is not None:
            check()
        p = initial_probe(train, probe_from_pupil(pupil, c)[None], 1)
        st = State(obj=initial_object(train, p), probe=p, positions=train.positions.copy())
        out = reconstruct(
            train,
            st,
            engine="ml",
            iterations=iterations,
            backend=backend,
            options=opts,
            callback=None if check is None else (lambda *_: check()),
        )
        fit = out.history[-1]["poisson_deviance"]
        out = dataclasses.replace(out, positions=test.positions.copy())
        v = fit + final_metrics(test, out, backend)["poisson_deviance"]
        return v if np.isfinite(v) else np.inf

    # the probe's diameter is about 2 r |c| px for a pupil of radius r cycles/px: diameters
    # from 0.08 to 0.85 of the frame, either sign of the defocus
    r = 0.5 * (ry + rx)
    # (an exact focus is left out: a point-like probe explains few frames early on, and
    # scores deceptively well after a few iterations)
    diam = np.array([0.08, 0.14, 0.2, 0.27, 0.35, 0.45, 0.57, 0.7, 0.85]) * min(h, w)
    cands = sorted({*(d / (2 * r) for d in diam), *(-d / (2 * r) for d in diam)})
    scores = {(c, c): score((c, c)) for c in cands}
    best = min(scores, key=scores.get)
    # finer, then each axis (astigmatism)
    for f in (0.85, 1.15):
        c = (best[0] * f, best[1] * f)
        scores[c] = score(c)
    best = min(scores, key=scores.get)
    for axis in (0, 1):
        for f in (0.7, 0.85, 1.2, 1.4):
            c = list(best)
            c[axis] *= f
            c = (c[0], c[1])
            if c not in scores:
                scores[c] = score(c)
        best = min(scores, key=scores.get)
    info = {
        "pupil_half_width_px": [ry * h, rx * w],
        "defocus_c_px": list(best),
        "probe_diameter_px": [2 * ry * abs(best[0]), 2 * rx * abs(best[1])],
        "candidates": len(scores),
    }
    return probe_from_pupil(pupil, best), info


def _sub_problem(problem: Problem, idx: np.ndarray) -> Problem:
    """The frames ``idx`` of ``problem`` on a tight object grid of their own."""
    h, w = problem.frame_shape
    pos = problem.positions[idx]
    lo = np.floor(pos.min(axis=0)) - 2
    p = pos - lo
    shape = (int(np.ceil(p[:, 0].max())) + h + 3, int(np.ceil(p[:, 1].max())) + w + 3)
    return dataclasses.replace(problem, counts=problem.counts[idx], positions=p, object_shape=shape)


def initial_object(problem: Problem, probe: np.ndarray | None = None, *, smoothing: float | None = None) -> np.ndarray:
    """Initial object: unit amplitude and the low-frequency phase from differential phase
    contrast (DPC).

    The centre of mass of a far-field pattern moves by ``<grad phi> / (2 pi)`` cycles per
    object pixel, ``<.>`` the average over the illuminated area weighted by the probe
    intensity. The shifts of all frames (minus their mean, which is only a phase ramp)
    sample the object's phase gradient at the probe positions; they are spread over the
    object grid by a normalised Gaussian convolution of width ``smoothing`` (default:
    the mean distance between neighbouring positions) and integrated by Fourier
    (Frankot-Chellappa) least squares on a padded grid. The engines are slow to build
    up phase at spatial periods longer than the probe; this map gives them a start
    (the detail is then recovered by the engine).
    """
    from scipy import fft as sfft
    from scipy import ndimage

    n, h, w = problem.counts.shape
    shape = problem.object_shape
    flat = np.ones(shape, np.complex64)
    if n < 3:
        return flat
    c = np.fft.fftshift(problem.counts * problem.mask, axes=(-2, -1))
    ky = np.fft.fftshift(np.fft.fftfreq(h))
    kx = np.fft.fftshift(np.fft.fftfreq(w))
    tot = c.sum(axis=(1, 2), dtype=np.float64)
    if np.any(tot <= 0):
        return flat
    gy = 2 * np.pi * (c.sum(axis=2, dtype=np.float64) @ ky) / tot
    gx = 2 * np.pi * (c.sum(axis=1, dtype=np.float64) @ kx) / tot
    del c
    gy -= gy.mean()
    gx -= gx.mean()
    # where each measurement sits: the centroid of the probe intensity in its window
    cy, cx = h / 2, w / 2
    if probe is not None:
        p2 = (np.abs(np.asarray(probe).reshape(-1, h, w)) ** 2).sum(0)
        total = float(p2.sum())
        if total > 0:
            cy = float(p2.sum(1) @ np.arange(h)) / total
            cx = float(p2.sum(0) @ np.arange(w)) / total
    pts = problem.positions + np.array([cy, cx])
    if smoothing is None:
        d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        smoothing = float(np.mean(np.sqrt(d2.min(axis=1))))
    smoothing = max(smoothing, 1.0)
    # normalised convolution on a grid padded by a quarter on each side (the periodic
    # integration must not wrap around)
    pad = (shape[0] // 4 + 1, shape[1] // 4 + 1)
    big = (shape[0] + 2 * pad[0], shape[1] + 2 * pad[1])
    iy = np.clip(np.round(pts[:, 0]).astype(int), 0, shape[0] - 1) + pad[0]
    ix = np.clip(np.round(pts[:, 1]).astype(int), 0, shape[1] - 1) + pad[1]
    flat_idx = iy * big[1] + ix
    size = big[0] * big[1]
    fields = []
    for vals in (np.ones(n), gy, gx):
        acc = np.bincount(flat_idx, vals, size).reshape(big).astype(np.float32)
        fields.append(ndimage.gaussian_filter(acc, smoothing, mode="constant", truncate=3.0))
    wgt, sy, sx = fields
    ok = wgt > 0.2 * wgt.max()
    safe = np.where(ok, wgt, 1)
    gyf = np.where(ok, sy / safe, 0).astype(np.float32)
    gxf = np.where(ok, sx / safe, 0).astype(np.float32)
    fy = np.fft.fftfreq(big[0]).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(big[1]).astype(np.float32)[None, :]
    k2 = fy**2 + fx**2
    k2[0, 0] = 1.0
    spec = fy * sfft.fft2(gyf, workers=1)
    spec += fx * sfft.fft2(gxf, workers=1)
    spec *= -1j / (2 * np.pi * k2)
    spec[0, 0] = 0
    phase = sfft.ifft2(spec, workers=1, overwrite_x=True).real[pad[0] : pad[0] + shape[0], pad[1] : pad[1] + shape[1]]
    return np.exp(1j * phase).astype(np.complex64)
