"""Peak models on a linear background, a weighted least-squares fit, and quality flags.

Every model is parametrised by the quantities reported, so their uncertainties come
straight from the covariance matrix:

* ``center`` c (axis units), ``fwhm`` w (axis units), ``area`` A (intensity x axis units),
* ``fraction`` eta (pseudo-Voigt only: Lorentzian fraction, 0..1),
* ``bg_level`` b0 (intensity, at the middle of the scan x_ref) and ``bg_slope`` b1
  (intensity per axis unit): background = b0 + b1 (x - x_ref).

Shapes (unit area):
    gaussian   G(x) = sqrt(4 ln2 / pi) / w * exp(-4 ln2 (x - c)^2 / w^2)
    lorentzian L(x) = (2 / (pi w)) / (1 + 4 (x - c)^2 / w^2)
    pseudo_voigt    = eta L + (1 - eta) G, with the same w

Uncertainties are those of counting statistics, propagated from the sigma given per
point; when the fit is worse than counting statistics allow (reduced chi^2 > 1) they
are inflated by sqrt(reduced chi^2) (``scale_errors=True``), the usual practice for
model imperfection. The height, background under the peak and derived errors are
propagated through the covariance with the analytic gradient.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Model = Literal["gaussian", "lorentzian", "pseudo_voigt"]
MODELS: tuple[str, ...] = ("gaussian", "lorentzian", "pseudo_voigt")

_G = math.sqrt(4.0 * math.log(2.0) / math.pi)  # peak height of the unit-area Gaussian x w
_L = 2.0 / math.pi  # peak height of the unit-area Lorentzian x w
_4LN2 = 4.0 * math.log(2.0)


def peak_shape(x: np.ndarray, center: float, fwhm: float, fraction: float) -> np.ndarray:
    """Unit-area pseudo-Voigt (fraction 0: Gaussian, 1: Lorentzian), 1/axis units."""
    u = (x - center) / fwhm
    gauss = _G / fwhm * np.exp(-_4LN2 * u * u)
    lorentz = _L / fwhm / (1.0 + 4.0 * u * u)
    return fraction * lorentz + (1.0 - fraction) * gauss


def model_curve(
    x: np.ndarray,
    *,
    center: float,
    fwhm: float,
    area: float,
    bg_level: float,
    bg_slope: float,
    x_ref: float,
    fraction: float,
) -> np.ndarray:
    """Peak plus linear background at ``x`` (intensity units)."""
    return area * peak_shape(x, center, fwhm, fraction) + bg_level + bg_slope * (x - x_ref)


def peak_height(area: float, fwhm: float, fraction: float) -> float:
    """Height of the peak above background (intensity) for area/fwhm/fraction."""
    return area / fwhm * (fraction * _L + (1.0 - fraction) * _G)


@dataclass(frozen=True)
class PeakFit:
    """The result of :func:`fit_peak`. Values are ``nan`` where they cannot be had."""

    model: str
    success: bool
    message: str
    center: float
    center_err: float
    fwhm: float
    fwhm_err: float
    area: float
    area_err: float
    height: float
    height_err: float
    background: float  # background under the peak centre (intensity)
    background_err: float
    bg_level: float
    bg_slope: float
    x_ref: float
    fraction: float  # Lorentzian fraction (0 gaussian, 1 lorentzian)
    fraction_err: float
    chi2: float  # sum of squared normalised residuals, counting statistics only
    chi2_reduced: float
    dof: int
    error_scale: float  # factor applied to the counting-statistics errors
    significance: float  # peak significance in sigma (likelihood ratio vs background only)
    n_points: int
    covariance: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0)))

    def curve(self, x: np.ndarray) -> np.ndarray:
        """The fitted model at ``x`` (background only where the fit has no peak)."""
        if not (np.isfinite(self.center) and np.isfinite(self.fwhm) and self.fwhm > 0):
            return np.full_like(np.asarray(x, float), np.nan)
        return model_curve(
            np.asarray(x, float),
            center=self.center,
            fwhm=self.fwhm,
            area=self.area,
            bg_level=self.bg_level,
            bg_slope=self.bg_slope,
            x_ref=self.x_ref,
            fraction=self.fraction,
        )

    def as_dict(self) -> dict[str, float | str | bool | int]:
        keys = (
            "model",
            "success",
            "message",
            "center",
            "center_err",
            "fwhm",
            "fwhm_err",
            "area",
            "area_err",
            "height",
            "height_err",
            "background",
            "background_err",
            "bg_slope",
            "fraction",
            "fraction_err",
            "chi2",
            "chi2_reduced",
            "dof",
            "error_scale",
            "significance",
            "n_points",
        )
        return {k: getattr(self, k) for k in keys}


def _initial_guess(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float]:
    """center, fwhm, area, bg_level (at x_ref = mean x), bg_slope from the data."""
    n = x.size
    order = np.argsort(x)
    xs, ys = x[order], y[order]
    k = max(2, n // 8)
    x_ref = float(np.mean(x))
    ends_x = np.concatenate([xs[:k], xs[-k:]])
    ends_y = np.concatenate([ys[:k], ys[-k:]])
    slope, level = np.polyfit(ends_x - x_ref, ends_y, 1)
    net = ys - (level + slope * (xs - x_ref))
    i = int(np.argmax(net))
    height = float(net[i])
    span = float(xs[-1] - xs[0])
    steps = np.diff(xs)
    step = float(np.median(steps[steps > 0])) if np.any(steps > 0) else span / max(n - 1, 1)
    if height <= 0:
        return float(xs[n // 2]), span / 4.0, 0.0, float(level), float(slope)
    above = net >= height / 2.0
    lo = i
    while lo > 0 and above[lo - 1]:
        lo -= 1
    hi = i
    while hi < n - 1 and above[hi + 1]:
        hi += 1
    fwhm = max(float(xs[hi] - xs[lo]), step)
    return float(xs[i]), fwhm, height * fwhm * 1.06, float(level), float(slope)


def residual_jacobian(
    p: np.ndarray, x: np.ndarray, inv_sigma: np.ndarray, x_ref: float, fixed_fraction: float | None
) -> np.ndarray:
    """The analytic Jacobian of the normalised residuals (model - y) / sigma with respect
    to (center, fwhm, area, bg_level, bg_slope[, fraction]): one model evaluation a step,
    not 5-6 more by finite differences."""
    c, w, a = float(p[0]), float(p[1]), float(p[2])
    eta = float(p[5]) if fixed_fraction is None else fixed_fraction
    u = (x - c) / w
    q = 1.0 + 4.0 * u * u
    gauss = _G / w * np.exp(-_4LN2 * u * u)
    lorentz = _L / w / q
    d_gauss_c = gauss * (2.0 * _4LN2 * u / w)
    d_gauss_w = gauss * (2.0 * _4LN2 * u * u - 1.0) / w
    d_lorentz_c = lorentz * (8.0 * u / (w * q))
    d_lorentz_w = lorentz * (8.0 * u * u / q - 1.0) / w
    cols = [
        a * (eta * d_lorentz_c + (1.0 - eta) * d_gauss_c),
        a * (eta * d_lorentz_w + (1.0 - eta) * d_gauss_w),
        eta * lorentz + (1.0 - eta) * gauss,
        np.ones_like(x),
        x - x_ref,
    ]
    if fixed_fraction is None:
        cols.append(a * (lorentz - gauss))
    return np.column_stack(cols) * inv_sigma[:, None]


def _fit_once(x, y, sigma, x_ref, p0, lower, upper, fixed_fraction):
    def unpack(p):
        c, w, a, b0, b1 = p[:5]
        eta = p[5] if fixed_fraction is None else fixed_fraction
        return c, w, a, b0, b1, eta

    dx = x - x_ref
    inv_sigma = 1.0 / sigma

    def residuals(p):
        c, w, a, b0, b1, eta = unpack(p)
        return (a * peak_shape(x, c, w, eta) + b0 + b1 * dx - y) * inv_sigma

    def jacobian(p):
        return residual_jacobian(p, x, inv_sigma, x_ref, fixed_fraction)

    with np.errstate(invalid="ignore"):
        nudge_lo = np.where(np.isfinite(lower), lower + 1e-9 * (np.abs(lower) + 1), lower)
        nudge_hi = np.where(np.isfinite(upper), upper - 1e-9 * (np.abs(upper) + 1), upper)
    p0 = np.clip(p0, nudge_lo, nudge_hi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        from scipy.optimize import least_squares  # scipy.optimize loads on the first fit

        return least_squares(
            residuals, p0, jac=jacobian, bounds=(lower, upper), x_scale="jac", method="trf", max_nfev=2000
        )


def fit_peak(
    x: np.ndarray, y: np.ndarray, sigma: np.ndarray, *, model: Model = "pseudo_voigt", scale_errors: bool = True
) -> PeakFit:
    """Fit ``model`` + linear background to ``y`` (intensity) against ``x`` (axis units)
    with per-point standard deviations ``sigma`` (intensity). Never raises for bad data:
    a fit that fails comes back with ``success=False`` and ``nan`` where it has no value.
    """
    if model not in MODELS:
        raise ValueError(f"unknown peak model {model!r} (known: {', '.join(MODELS)})")
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    sigma = np.asarray(sigma, float)
    n = x.size
    fixed = {"gaussian": 0.0, "lorentzian": 1.0}.get(model)
    n_par = 5 if fixed is not None else 6
    x_ref = float(np.mean(x)) if n else 0.0
    nan = float("nan")

    def failed(message: str) -> PeakFit:
        return PeakFit(
            model,
            False,
            message,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            nan,
            x_ref,
            nan,
            nan,
            nan,
            nan,
            max(n - n_par, 0),
            nan,
            nan,
            n,
        )

    if n < n_par + 1:
        return failed(f"{n} points cannot constrain {n_par} parameters")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(sigma)) and np.all(sigma > 0)):
        return failed("non-finite data or non-positive sigma")
    span = float(np.ptp(x))
    if span <= 0:
        return failed("the axis does not vary")
    steps = np.diff(np.sort(x))
    min_step = float(steps[steps > 0].min())

    # background-only fit, for the significance of the peak (likelihood ratio)
    w = 1.0 / sigma
    design = np.column_stack([np.ones(n), x - x_ref]) * w[:, None]
    bg_coef, *_ = np.linalg.lstsq(design, y * w, rcond=None)
    chi2_bg = float(np.sum((design @ bg_coef - y * w) ** 2))

    c0, w0, a0, b00, b10 = _initial_guess(x, y)
    big = np.inf
    lower = [x.min() - span, min_step * 1e-2, -big, -big, -big]
    upper = [x.max() + span, span * 10.0, big, big, big]
    starts = [
        [c0, w0, a0, b00, b10],
        [float(np.mean(x)), span / 5.0, max(a0, 0.0) or float(np.ptp(y)) * span / 5.0, b00, b10],
    ]
    if fixed is None:
        lower.append(0.0)
        upper.append(1.0)
        for s in starts:
            s.append(0.5)
    lower_a, upper_a = np.array(lower, float), np.array(upper, float)
    best = None
    for s in starts:
        try:
            res = _fit_once(x, y, sigma, x_ref, np.array(s, float), lower_a, upper_a, fixed)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if not np.all(np.isfinite(res.fun)):
            continue
        if best is None or res.cost < best.cost - 1e-9 * abs(best.cost):
            best = res
        if best is res and res.success and best.cost * 2 / max(n - n_par, 1) < 4:
            break  # a good fit from the data-driven start: no need for another
    if best is None:
        return failed("the optimiser failed from every starting point")

    p = best.x
    c, wid, area, b0, b1 = (float(v) for v in p[:5])
    eta = float(p[5]) if fixed is None else float(fixed)
    chi2 = float(np.sum(best.fun**2))
    dof = n - n_par
    chi2_red = chi2 / dof if dof > 0 else nan

    # covariance from the Jacobian of the normalised residuals
    jac = best.jac
    try:
        _, s, vt = np.linalg.svd(jac, full_matrices=False)
        tol = np.finfo(float).eps * max(jac.shape) * (s[0] if s.size else 0.0)
        if s.size == 0 or np.any(s <= tol):
            raise np.linalg.LinAlgError("singular Jacobian")
        cov = (vt.T / s**2) @ vt
    except np.linalg.LinAlgError:
        cov = np.full((n_par, n_par), np.inf)
    scale = math.sqrt(chi2_red) if scale_errors and np.isfinite(chi2_red) and chi2_red > 1 else 1.0
    cov = cov * scale**2
    err = np.sqrt(np.abs(np.diag(cov)))

    # derived quantities: height and background under the centre
    shape_h = eta * _L + (1.0 - eta) * _G
    height = area / wid * shape_h
    grad_h = np.zeros(n_par)
    grad_h[1] = -area / wid**2 * shape_h
    grad_h[2] = shape_h / wid
    if fixed is None:
        grad_h[5] = area / wid * (_L - _G)
    background = b0 + b1 * (c - x_ref)
    grad_b = np.zeros(n_par)
    grad_b[0] = b1
    grad_b[3] = 1.0
    grad_b[4] = c - x_ref
    with np.errstate(invalid="ignore"):
        height_err = float(np.sqrt(abs(grad_h @ cov @ grad_h)))
        background_err = float(np.sqrt(abs(grad_b @ cov @ grad_b)))

    delta_chi2 = max(chi2_bg - chi2, 0.0)
    significance = math.sqrt(delta_chi2 / max(1.0, chi2_red if np.isfinite(chi2_red) else 1.0))
    if area < 0:
        significance = -significance

    return PeakFit(
        model=model,
        success=bool(best.success),
        message=str(best.message),
        center=c,
        center_err=float(err[0]),
        fwhm=wid,
        fwhm_err=float(err[1]),
        area=area,
        area_err=float(err[2]),
        height=float(height),
        height_err=height_err,
        background=float(background),
        background_err=background_err,
        bg_level=b0,
        bg_slope=b1,
        x_ref=x_ref,
        fraction=eta,
        fraction_err=float(err[5]) if fixed is None else 0.0,
        chi2=chi2,
        chi2_reduced=chi2_red,
        dof=dof,
        error_scale=scale,
        significance=float(significance),
        n_points=n,
        covariance=cov,
    )


def chi2_p_value(chi2: float, dof: int) -> float:
    """P(X >= chi2) for X ~ chi^2 with ``dof`` degrees of freedom: the chance that
    counting statistics alone give a fit this poor (``nan`` without degrees of freedom)."""
    if dof <= 0 or not np.isfinite(chi2):
        return float("nan")
    from scipy.special import gammaincc

    return float(gammaincc(dof / 2.0, max(chi2, 0.0) / 2.0))


def assess_peak(
    fit: PeakFit,
    x: np.ndarray,
    *,
    edge_margin_fwhm: float = 1.0,
    min_significance: float = 5.0,
    min_points_in_peak: int = 3,
    min_chi2_p: float = 1e-3,
    n_sigma: float = 3.0,
) -> list[str]:
    """Quality flags of a fitted scan (empty list: a good peak).

    * ``"unfittable"``: the fit failed or did not converge, a value or error is not
      finite, the centre error exceeds the scan range, or the peak is wider than twice
      the scan range (peak and background cannot be separated).
    * ``"flat"``: no significant peak: the peak's likelihood-ratio significance against a
      background-only fit is below ``min_significance`` sigma, or its area is not positive.
    * ``"edge"``: the centre lies within ``edge_margin_fwhm`` x FWHM of either end of the
      scan (or outside it): the scan does not enclose the peak.
    * ``"outside_range"``: the centre lies outside the scanned range by more than
      ``n_sigma`` of its error.
    * ``"few_points"``: fewer than ``min_points_in_peak`` points lie within the FWHM
      around the centre: the peak is under-sampled (step too coarse).
    * ``"narrower_than_step"``: the FWHM plus ``n_sigma`` of its error is below the median
      step of the scan: the width is not measured.
    * ``"poor_fit"``: the chi^2 of the fit is out of line with counting statistics (its
      p-value, :func:`chi2_p_value`, is below ``min_chi2_p``): the model does not describe
      the data, or the errors are underestimated; the reported errors are then scaled.
    * ``"negative_background"``: the background under the peak is negative by more than
      ``n_sigma`` of its error (counts cannot be negative: the background is not
      determined by the scan).
    """
    x = np.asarray(x, float)
    flags: list[str] = []
    span = float(np.ptp(x)) if x.size else 0.0
    values = (fit.center, fit.center_err, fit.fwhm, fit.fwhm_err, fit.area, fit.area_err)
    unfittable = (
        not fit.success or not all(np.isfinite(v) for v in values) or fit.center_err > span or fit.fwhm > 2.0 * span
    )
    if unfittable:
        flags.append("unfittable")
    flat = not np.isfinite(fit.significance) or fit.significance < min_significance or not (fit.area > 0)
    if flat:
        flags.append("flat")
    if not flat and np.isfinite(fit.center) and np.isfinite(fit.fwhm):
        margin = edge_margin_fwhm * fit.fwhm
        if fit.center - x.min() < margin or x.max() - fit.center < margin:
            flags.append("edge")
        err = fit.center_err if np.isfinite(fit.center_err) else 0.0
        if fit.center < x.min() - n_sigma * err or fit.center > x.max() + n_sigma * err:
            flags.append("outside_range")
        inside = int(np.sum(np.abs(x - fit.center) <= fit.fwhm / 2.0))
        if inside < min_points_in_peak:
            flags.append("few_points")
        steps = np.diff(np.sort(x))
        steps = steps[steps > 0]
        fwhm_err = fit.fwhm_err if np.isfinite(fit.fwhm_err) else 0.0
        if steps.size and fit.fwhm + n_sigma * fwhm_err < float(np.median(steps)):
            flags.append("narrower_than_step")
    if not unfittable:
        p = chi2_p_value(fit.chi2, fit.dof)
        if np.isfinite(p) and p < min_chi2_p:
            flags.append("poor_fit")
        if (
            np.isfinite(fit.background)
            and np.isfinite(fit.background_err)
            and fit.background < -n_sigma * fit.background_err
        ):
            flags.append("negative_background")
    return flags
