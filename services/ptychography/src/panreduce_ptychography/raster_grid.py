"""The raster-grid ambiguity (issue 19): on a raster WITHOUT jitter, a function with the
raster's period can move between the probe and the object without changing any frame
(P. Thibault et al., Ultramicroscopy 109, 338 (2009), the "raster grid pathology"), so a
reconstruction can fit the data to the noise and still carry the raster's stripes. Both
checks here need no ground truth: whether the scan positions lie on a regular lattice, and
how much of the recovered phase in the well-lit region is periodic with that lattice (its
spectral power at the reciprocal lattice in excess of the spectrum around each peak)."""

from __future__ import annotations

import numpy as np

from panreduce_ptychography.metrics import illumination, remove_plane

#: positions within this many object pixels of a lattice line count as on the lattice
LATTICE_TOLERANCE_PX = 0.1
#: least significance of a raster-periodic phase reported as the raster-grid ambiguity
RASTER_SIGNIFICANCE = 10.0


def _axis_step(values: np.ndarray, tol: float) -> float | None:
    """The spacing of ``values`` if they fall in >= 3 evenly spaced groups each narrower
    than ``tol``, else None."""
    v = np.sort(values)
    groups = np.split(v, np.nonzero(np.diff(v) > tol)[0] + 1)
    if len(groups) < 3 or max(float(np.ptp(g)) for g in groups) > tol:
        return None
    d = np.diff([float(g.mean()) for g in groups])
    return float(d.mean()) if float(np.ptp(d)) <= 2 * tol else None


def raster_steps(positions: np.ndarray, tol: float = LATTICE_TOLERANCE_PX) -> tuple[float, float] | None:
    """(step_y, step_x) in pixels when ``positions`` (N, 2) form a rectangular raster without
    jitter (rows and columns within ``tol`` px, even spacing, at least 80 % of the grid's
    nodes scanned), else None (spirals, jittered rasters, circles)."""
    p = np.asarray(positions, float)
    steps = [_axis_step(p[:, a], tol) for a in (0, 1)]
    if steps[0] is None or steps[1] is None:
        return None
    nodes = np.prod([np.ptp(p[:, a]) / steps[a] + 1 for a in (0, 1)])
    if len(p) < 0.8 * nodes:
        return None
    return steps[0], steps[1]


def raster_periodic_phase(
    obj: np.ndarray, probe: np.ndarray, positions: np.ndarray, steps: tuple[float, float], threshold: float = 0.3
) -> tuple[float, float]:
    """(RMS in rad, significance) of the part of the object phase, over the region lit at >= ``threshold`` x
    the maximum, that is periodic with the raster ``steps``: the phase (less its mean and a
    fitted plane) is Fourier transformed and, at every reciprocal-lattice point (m / step_y,
    k / step_x), |m|, |k| <= 3, not the origin, the power in a disc in excess of the mean
    power in a ring around it is summed (signed, then floored at 0; Parseval: power -> RMS). A specimen has no reason
    to be periodic with the scan, so its own contribution is only the spectrum's scatter,
    which grows with the specimen's contrast (random 1 rad specimens: up to 0.011 rad, 2 rad:
    0.021). The significance is the excess over its standard deviation were the disc's
    power values independent draws of the ring's mean (exponential): random specimens
    -6.8 to +2.5 (the powers are correlated, so the scale is not a normal one), reconstructions
    carrying the raster's period 26-30 (docs/ptychography.md, Convergence)."""
    ill = illumination(obj.shape, probe, positions)
    lit = ill >= threshold * ill.max()
    ref = obj[lit].mean()
    phase = np.angle(obj * np.conj(ref / max(abs(ref), 1e-30)))
    phase = np.angle(np.exp(1j * remove_plane(phase, lit)))
    phase[~lit] = 0
    power = np.abs(np.fft.fft2(phase)) ** 2
    h, w = phase.shape
    fy, fx = np.fft.fftfreq(h)[:, None] * h, np.fft.fftfreq(w)[None, :] * w  # spectrum px
    spacing = min(h / steps[0], w / steps[1])  # between lattice peaks, spectrum px
    disc, inner, outer = max(1.5, 0.17 * spacing), 0.27 * spacing, 0.5 * spacing
    excess = var = 0.0
    for m in range(-3, 4):
        for k in range(-3, 4):
            ky, kx = m * h / steps[0], k * w / steps[1]
            if (m == 0 and k == 0) or abs(ky) > h / 2 or abs(kx) > w / 2:
                continue
            # distance on the periodic spectrum
            dy = (fy - ky + h / 2) % h - h / 2
            dx = (fx - kx + w / 2) % w - w / 2
            r = np.hypot(dy, dx)
            ring = power[(r > inner) & (r <= outer)].mean()
            inside = r <= disc
            excess += float((power[inside] - ring).sum())  # signed: no bias from the scatter
            var += float(inside.sum()) * ring**2
    rms = float(np.sqrt(max(excess, 0.0) / (h * w) / max(int(lit.sum()), 1)))
    return rms, float(excess / np.sqrt(var)) if var > 0 else 0.0
