"""Curve analysis: Gaussian peak fits (batched), Guinier fits, the invariant, map gridding.

Pure numpy; every function works on many frames at once where it matters for scans.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
PEAK_FIELDS = ("position", "fwhm", "height", "background", "slope")
# Levenberg-Marquardt evaluations per fit: a good start converges in 10-40; a frame still
# not converged after this many is a failed fit (NaN, ok False), not worth 2000 more
MAX_EVALUATIONS = 400


# -- Gaussian + linear background -------------------------------------------------------------
@dataclass
class PeakFits:
    """Per-frame fits of ``height * exp(-(q - position)^2 / (2 s^2)) + background + slope (q - qc)``
    (qc the window centre), ``fwhm = 2 sqrt(2 ln 2) s``; errors are one standard deviation
    from the covariance scaled by the reduced chi-square; ``ok`` False where the fit
    failed or the peak lies outside the window."""

    position: np.ndarray
    position_err: np.ndarray
    fwhm: np.ndarray
    fwhm_err: np.ndarray
    height: np.ndarray
    height_err: np.ndarray
    background: np.ndarray
    slope: np.ndarray
    chi2_red: np.ndarray
    ok: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _gauss_lin(xc: float):
    def f(x: np.ndarray, a: float, x0: float, s: float, b0: float, b1: float) -> np.ndarray:
        return a * np.exp(-0.5 * ((x - x0) / s) ** 2) + b0 + b1 * (x - xc)

    def jac(x: np.ndarray, a: float, x0: float, s: float, b0: float, b1: float) -> np.ndarray:
        d = x - x0
        g = np.exp(-0.5 * (d / s) ** 2)
        return np.stack([g, a * g * d / s**2, a * g * d**2 / s**3, np.ones_like(x), x - xc], axis=1)

    return f, jac


def fit_gaussian_peaks(
    q: np.ndarray, i: np.ndarray, sigma: np.ndarray | None = None, window: tuple[float, float] | None = None
) -> PeakFits:
    """Fit a Gaussian on a linear background to each row of ``i`` (frames, nq) over
    ``window`` (q_min, q_max): Levenberg-Marquardt (MINPACK through
    ``scipy.optimize.curve_fit``) weighted by 1/σ², started from the maximum above the
    line through the window's ends and the peak's second moment."""
    from scipy.optimize import OptimizeWarning, curve_fit

    q = np.asarray(q, dtype=float)
    i = np.atleast_2d(np.asarray(i, dtype=float))
    sigma = np.ones_like(i) if sigma is None else np.atleast_2d(np.asarray(sigma, dtype=float))
    sel = np.ones(q.shape, dtype=bool) if window is None else (q >= window[0]) & (q <= window[1])
    x, y_all, s_all = q[sel], i[:, sel], sigma[:, sel]
    n, m = y_all.shape
    out = {
        k: np.full(n, np.nan)
        for k in (
            "position",
            "position_err",
            "fwhm",
            "fwhm_err",
            "height",
            "height_err",
            "background",
            "slope",
            "chi2_red",
        )
    }
    ok = np.zeros(n, dtype=bool)
    if m < 6:
        return PeakFits(**out, ok=ok)
    xc = float(0.5 * (x[0] + x[-1]))
    f, jac = _gauss_lin(xc)
    dx = float(np.median(np.diff(x)))
    k = max(m // 10, 1)
    x0e, x1e = x[:k].mean(), x[-k:].mean()
    for row in range(n):
        y, s = y_all[row], s_all[row]
        good = np.isfinite(y) & np.isfinite(s) & (s > 0)
        if good.sum() < 6:
            continue
        xs, ys, ss = x[good], y[good], s[good]
        y0 = np.mean(y[:k][good[:k]]) if good[:k].any() else ys[0]
        y1 = np.mean(y[-k:][good[-k:]]) if good[-k:].any() else ys[-1]
        slope = (y1 - y0) / (x1e - x0e)
        base = y0 + slope * (xc - x0e)
        above = ys - (base + slope * (xs - xc))
        j = int(np.argmax(above))
        amp = max(float(above[j]), 1e-30)
        wpos = np.clip(above, 0, None)
        tot = wpos.sum()
        width = math.sqrt((wpos * (xs - xs[j]) ** 2).sum() / tot) if tot > 0 else 3 * dx
        width = min(max(width, 1.5 * dx), (x[-1] - x[0]) / 2)
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                p, cov = curve_fit(
                    f,
                    xs,
                    ys,
                    p0=[amp, xs[j], width, base, slope],
                    sigma=ss,
                    absolute_sigma=True,
                    jac=jac,
                    maxfev=MAX_EVALUATIONS,
                )
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
        resid = (ys - f(xs, *p)) / ss
        chi2_red = float(resid @ resid) / max(good.sum() - 5, 1)
        err = np.sqrt(np.abs(np.diag(cov)) * max(chi2_red, 1e-300))
        p[2] = abs(p[2])
        out["position"][row], out["position_err"][row] = p[1], err[1]
        out["fwhm"][row], out["fwhm_err"][row] = p[2] * FWHM_PER_SIGMA, err[2] * FWHM_PER_SIGMA
        out["height"][row], out["height_err"][row] = p[0], err[0]
        out["background"][row], out["slope"][row] = p[3], p[4]
        out["chi2_red"][row] = chi2_red
        ok[row] = bool(np.all(np.isfinite(err)) and p[0] > 0 and x[0] <= p[1] <= x[-1])
    return PeakFits(**out, ok=ok)


# -- Guinier -----------------------------------------------------------------------------------
@dataclass
class Guinier:
    rg: float  # Å
    rg_err: float
    i0: float
    i0_err: float
    q_min: float
    q_max: float
    points: int
    ok: bool


def guinier_fit(
    q: np.ndarray,
    i: np.ndarray,
    sigma: np.ndarray,
    *,
    q_min: float = 0.0,
    qrg_max: float = 1.3,
    q_max: float | None = None,
    min_points: int = 5,
    iterations: int = 20,
) -> Guinier:
    """Guinier fit ln I = ln I0 - (q Rg)^2 / 3, weighted (σ_lnI = σ/I), over
    q_min <= q <= min(q_max, qrg_max / Rg), iterated until the range is stable
    (Guinier & Fournet 1955; q·Rg ≤ 1.3 for globular particles)."""
    q = np.asarray(q, float)
    i = np.asarray(i, float)
    sigma = np.asarray(sigma, float)
    use = np.isfinite(i) & (i > 0) & (q >= q_min) & np.isfinite(sigma)
    if q_max is not None:
        use &= q <= q_max
    bad = Guinier(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, 0, False)
    idx = np.nonzero(use)[0]
    if idx.size < min_points:
        return bad
    upper = float(q[idx[min(len(idx) - 1, max(min_points * 4, len(idx) // 4))]])
    result = bad
    for _ in range(iterations):
        sel = use & (q <= upper)
        if sel.sum() < min_points:
            break
        x = q[sel] ** 2
        y = np.log(i[sel])
        sy = np.where(sigma[sel] > 0, sigma[sel] / i[sel], np.nan)
        wts = (
            1.0
            / np.where(np.isfinite(sy) & (sy > 0), sy, np.nanmedian(sy) if np.isfinite(np.nanmedian(sy)) else 1.0) ** 2
        )
        sw, sx, sy_, sxx, sxy = wts.sum(), (wts * x).sum(), (wts * y).sum(), (wts * x * x).sum(), (wts * x * y).sum()
        det = sw * sxx - sx * sx
        if det <= 0:
            break
        slope = (sw * sxy - sx * sy_) / det
        icpt = (sxx * sy_ - sx * sxy) / det
        var_slope, var_icpt = sw / det, sxx / det
        resid = y - (icpt + slope * x)
        chi2_red = float((wts * resid**2).sum() / max(sel.sum() - 2, 1))
        scale = max(chi2_red, 1.0)
        if slope >= 0:
            result = bad
            break
        rg = math.sqrt(-3.0 * slope)
        rg_err = 1.5 / rg * math.sqrt(var_slope * scale)
        i0 = math.exp(icpt)
        i0_err = i0 * math.sqrt(var_icpt * scale)
        result = Guinier(rg, rg_err, i0, i0_err, float(q[sel].min()), float(q[sel].max()), int(sel.sum()), True)
        new_upper = qrg_max / rg
        if q_max is not None:
            new_upper = min(new_upper, q_max)
        if abs(new_upper - upper) <= 1e-9 * max(upper, 1e-30):
            break
        upper = new_upper
    if result.ok and result.q_max * result.rg > qrg_max * 1.001:
        return Guinier(**{**result.__dict__, "ok": False})
    return result


def invariant(q: np.ndarray, i: np.ndarray, sigma: np.ndarray | None = None) -> tuple[float, float]:
    """Scattering invariant over the measured range, Q* = ∫ q² I(q) dq (trapezoid rule;
    1/Å³ × intensity units) with its standard error from the point errors."""
    q = np.asarray(q, float)
    i = np.asarray(i, float)
    good = np.isfinite(i)
    q, i = q[good], i[good]
    if q.size < 2:
        return math.nan, math.nan
    # trapezoid weights
    wq = np.zeros_like(q)
    dq = np.diff(q)
    wq[:-1] += dq / 2
    wq[1:] += dq / 2
    value = float(np.sum(wq * q**2 * i))
    err = math.nan
    if sigma is not None:
        s = np.asarray(sigma, float)[good]
        err = float(np.sqrt(np.sum((wq * q**2 * s) ** 2)))
    return value, err


# -- maps from motor positions ------------------------------------------------------------------
def _axis_nodes(values: np.ndarray, step: float | None) -> tuple[np.ndarray, float]:
    """Regular grid nodes covering ``values``; the step is estimated from the clusters
    the positions form (a jittered raster) unless given."""
    v = np.sort(np.asarray(values, float))
    span = float(v[-1] - v[0])
    if span == 0:
        return np.array([v[0]]), 0.0
    if step is None:
        gaps = np.diff(v)
        big = gaps.max()
        for _ in range(3):
            steps = gaps[gaps > 0.5 * big]
            est = float(np.median(steps))
            big = est
        # cluster centres -> the step between neighbouring clusters
        starts = np.concatenate([[0], np.nonzero(gaps > 0.5 * est)[0] + 1])
        centres = np.array([v[a:b].mean() for a, b in zip(starts, [*starts[1:], v.size], strict=True)])
        step = float(np.median(np.diff(centres))) if centres.size > 1 else est
        lo = float(centres[0])
        n = round(float(centres[-1] - lo) / step) + 1
    else:
        lo = float(v[0])
        n = round(span / step) + 1
    return lo + step * np.arange(n), float(step)


@dataclass
class MapGrid:
    x: np.ndarray  # node positions (nx,)
    y: np.ndarray  # (ny,)
    ix: np.ndarray  # node column of each frame
    iy: np.ndarray  # node row of each frame
    step_x: float
    step_y: float

    def image(self, values: np.ndarray) -> np.ndarray:
        """(ny, nx) map of per-frame ``values``: the mean of the frames falling on a node,
        NaN where none did (a point that was not measured stays empty)."""
        values = np.asarray(values, float)
        total = np.zeros((self.y.size, self.x.size))
        count = np.zeros_like(total)
        ok = np.isfinite(values)
        np.add.at(total, (self.iy[ok], self.ix[ok]), values[ok])
        np.add.at(count, (self.iy[ok], self.ix[ok]), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(count > 0, total / np.where(count > 0, count, 1), np.nan)


def map_grid(x: np.ndarray, y: np.ndarray, step_x: float | None = None, step_y: float | None = None) -> MapGrid:
    """A regular grid from actual motor positions (jitter, snakes, missing points and
    irregular ordering allowed): each frame goes to its nearest node."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    gx, sx = _axis_nodes(x, step_x)
    gy, sy = _axis_nodes(y, step_y)
    ix = np.clip(np.rint((x - gx[0]) / sx).astype(int), 0, gx.size - 1) if sx else np.zeros(x.size, int)
    iy = np.clip(np.rint((y - gy[0]) / sy).astype(int), 0, gy.size - 1) if sy else np.zeros(y.size, int)
    return MapGrid(gx, gy, ix, iy, sx, sy)


def write_ascii_image(path, image: np.ndarray) -> None:
    """A text image ImageJ opens (File > Import > Text Image): one image row per line
    (row 0 = first y node), tab-separated numbers, NaN where no frame fell; no header,
    so that ImageJ reads nothing but pixels."""
    with open(path, "w") as fh:
        for row in np.asarray(image, float):
            fh.write("\t".join("NaN" if not np.isfinite(v) else f"{v:.8g}" for v in row) + "\n")
