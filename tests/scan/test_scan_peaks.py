"""Peak fitting on synthetic scans with known peaks and Poisson counting statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scan_synthetic import FRACTION, synthetic_counts

from panreduce_scan.normalise import counting_sigma, normalise
from panreduce_scan.peaks import assess_peak, fit_peak, peak_height, peak_shape

X = np.linspace(-1.0, 1.0, 41)  # axis units (think: degrees of eta)
TRUE = {"center": 0.05, "fwhm": 0.3, "area": 600.0}  # area in counts x axis units


def _pulls(model: str, seeds: int, *, scale_errors: bool = True) -> dict[str, np.ndarray]:
    pulls: dict[str, list[float]] = {k: [] for k in TRUE}
    for seed in range(seeds):
        counts = synthetic_counts(np.random.default_rng(seed), X, model=model, **TRUE)
        fit = fit_peak(X, counts, counting_sigma(counts), model=model, scale_errors=scale_errors)
        assert fit.success
        for key, truth in TRUE.items():
            pulls[key].append((getattr(fit, key) - truth) / getattr(fit, f"{key}_err"))
    return {k: np.array(v) for k, v in pulls.items()}


@pytest.mark.parametrize("model", ["gaussian", "lorentzian", "pseudo_voigt"])
def test_uncertainties_cover_the_truth(model):
    """Over 200 independent scans, the centre lies within its 1-sigma error about 68 % of
    the time, and the pulls (fit - truth) / error of centre, FWHM and area are unbiased
    with unit spread: the errors are the counting-statistics errors, neither too small
    nor too large."""
    pulls = _pulls(model, 200)
    inside = float(np.mean(np.abs(pulls["center"]) < 1.0))
    assert 0.60 <= inside <= 0.76, inside
    for key, p in pulls.items():
        assert abs(np.mean(p)) < 0.25, (key, np.mean(p))
        assert 0.82 <= np.std(p) <= 1.15, (key, np.std(p))


def test_unscaled_errors_are_pure_counting_statistics():
    """Without the sqrt(reduced chi2) inflation, the pull spread is 1 (a correct model)."""
    pulls = _pulls("gaussian", 200, scale_errors=False)
    for key, p in pulls.items():
        assert 0.88 <= np.std(p) <= 1.12, (key, np.std(p))


@pytest.mark.parametrize("model", ["gaussian", "lorentzian", "pseudo_voigt"])
def test_fwhm_area_height_recovered(model):
    """A strong peak: FWHM, area, height and background come back within 3 sigma, and
    the reduced chi2 of a correct model is about 1."""
    rng = np.random.default_rng(7)
    counts = synthetic_counts(rng, X, model=model, center=-0.1, fwhm=0.2, area=3000.0, background=50.0, slope=0.0)
    fit = fit_peak(X, counts, counting_sigma(counts), model=model)
    assert abs(fit.center + 0.1) < 3 * fit.center_err
    assert abs(fit.fwhm - 0.2) < 3 * fit.fwhm_err
    assert abs(fit.area - 3000.0) < 3 * fit.area_err
    true_height = peak_height(3000.0, 0.2, FRACTION[model])
    assert abs(fit.height - true_height) < 3 * fit.height_err
    assert abs(fit.background - 50.0) < 3 * fit.background_err
    assert 0.5 < fit.chi2_reduced < 1.6
    assert assess_peak(fit, X) == []


def test_shapes_have_unit_area_and_the_stated_fwhm():
    x = np.linspace(-50, 50, 200001)
    for fraction in (0.0, 0.5, 1.0):
        y = peak_shape(x, 1.0, 0.7, fraction)
        area = np.trapezoid(y, x)
        # the Lorentzian tails beyond +-50 (71 FWHM) hold about 0.45 % of its area
        assert area == pytest.approx(1.0, abs=0.005)
        half = y.max() / 2
        above = x[y >= half]
        assert above[-1] - above[0] == pytest.approx(0.7, abs=2e-3)  # grid step 5e-4
        assert x[np.argmax(y)] == pytest.approx(1.0, abs=1e-3)


def test_normalisation_scales_values_not_significance():
    """Fitting normalised intensities (counts / transmission / time) gives the same centre
    and FWHM, and area/height scaled by the constant normalisation factor."""
    counts = synthetic_counts(np.random.default_rng(3), X, area=800.0)
    raw = fit_peak(X, counts, counting_sigma(counts), model="gaussian")
    nm = normalise(counts, count_time=2.0, transmission=1e-4)
    norm = fit_peak(X, nm.intensity, nm.sigma, model="gaussian")
    assert norm.center == pytest.approx(raw.center, abs=1e-6)
    assert norm.fwhm == pytest.approx(raw.fwhm, rel=1e-5)
    assert norm.center_err == pytest.approx(raw.center_err, rel=1e-4)
    assert norm.area == pytest.approx(raw.area / 2.0 / 1e-4, rel=1e-5)
    assert norm.area_err == pytest.approx(raw.area_err / 2.0 / 1e-4, rel=1e-4)
    assert norm.significance == pytest.approx(raw.significance, rel=1e-4)


def test_flat_scan_is_flagged_flat():
    """Pure background (no peak): flagged 'flat' in nearly every realisation, while a
    clear peak is never 'flat'."""
    flat = 0
    for seed in range(40):
        counts = synthetic_counts(np.random.default_rng(seed), X, area=0.0)
        fit = fit_peak(X, counts, counting_sigma(counts), model="pseudo_voigt")
        flat += "flat" in assess_peak(fit, X)
    assert flat >= 38
    counts = synthetic_counts(np.random.default_rng(1), X, area=300.0, background=100.0)
    fit = fit_peak(X, counts, counting_sigma(counts), model="pseudo_voigt")
    assert "flat" not in assess_peak(fit, X)


def test_peak_at_edge_is_flagged_edge():
    """A peak centred half a FWHM inside the last point: the scan misses its tail."""
    counts = synthetic_counts(np.random.default_rng(11), X, center=0.85, fwhm=0.3, area=2000.0, background=50.0)
    fit = fit_peak(X, counts, counting_sigma(counts), model="gaussian")
    assert abs(fit.center - 0.85) < 3 * fit.center_err
    assert "edge" in assess_peak(fit, X, edge_margin_fwhm=1.0)
    assert "edge" not in assess_peak(fit, X, edge_margin_fwhm=0.2)
    # a centred peak is not at the edge
    counts = synthetic_counts(np.random.default_rng(11), X, center=0.0, area=2000.0)
    fit = fit_peak(X, counts, counting_sigma(counts), model="gaussian")
    assert "edge" not in assess_peak(fit, X)


def test_empty_scan_is_unfittable_and_flat():
    """All-zero counts (no photons): no peak parameters can be determined."""
    counts = np.zeros_like(X)
    fit = fit_peak(X, counts, counting_sigma(counts), model="gaussian")
    flags = assess_peak(fit, X)
    assert "unfittable" in flags and "flat" in flags


def test_bad_data_gives_a_failed_fit_not_an_exception():
    counts = synthetic_counts(np.random.default_rng(0), X)
    counts[5] = np.nan
    fit = fit_peak(X, counts, np.ones_like(X), model="gaussian")
    assert not fit.success and "unfittable" in assess_peak(fit, X)
    fit = fit_peak(np.zeros(41), counts, np.ones_like(X), model="gaussian")
    assert not fit.success
    fit = fit_peak(X[:5], counts[:5], np.ones(5), model="pseudo_voigt")  # 5 points, 6 params
    assert not fit.success and "unfittable" in assess_peak(fit, X[:5])
    with pytest.raises(ValueError):
        fit_peak(X, counts, np.ones_like(X), model="voigt")  # type: ignore[arg-type]


def test_undersampled_peak_is_flagged_few_points():
    """A peak narrower than the step has fewer than 3 points within its FWHM."""
    x = np.linspace(-1, 1, 21)  # 0.1 steps
    counts = synthetic_counts(
        np.random.default_rng(2), x, center=0.0, fwhm=0.12, area=500.0, background=20.0, slope=0.0
    )
    fit = fit_peak(x, counts, counting_sigma(counts), model="gaussian")
    assert "few_points" in assess_peak(fit, x)


def test_good_fits_are_rarely_poor_fit():
    """Poisson scans of the model itself: chi^2 follows counting statistics, so with a
    p-value threshold of 1e-3 at most a few of 100 scans are flagged 'poor_fit'."""
    poor = 0
    for seed in range(100):
        counts = synthetic_counts(np.random.default_rng(seed), X, model="gaussian", **TRUE)
        fit = fit_peak(X, counts, counting_sigma(counts), model="gaussian")
        poor += "poor_fit" in assess_peak(fit, X)
    assert poor <= 2, poor


def test_wrong_model_and_underestimated_errors_are_poor_fit():
    """A Lorentzian peak fitted as a Gaussian with many counts, and errors 10x too small:
    chi^2 far beyond counting statistics is flagged."""
    counts = synthetic_counts(
        np.random.default_rng(3), X, model="lorentzian", center=0.05, fwhm=0.3, area=60000.0, background=100.0
    )
    fit = fit_peak(X, counts, counting_sigma(counts), model="gaussian")
    assert fit.chi2_reduced > 5
    assert "poor_fit" in assess_peak(fit, X)
    counts = synthetic_counts(np.random.default_rng(4), X, model="gaussian", **TRUE)
    fit = fit_peak(X, counts, counting_sigma(counts) / 10.0, model="gaussian")
    assert "poor_fit" in assess_peak(fit, X)


def test_negative_background_is_flagged():
    """Counts with a large negative offset (a bad dark subtraction): the fitted background
    is negative by many sigma."""
    counts = synthetic_counts(
        np.random.default_rng(5), X, model="gaussian", center=0.0, fwhm=0.3, area=2000.0, background=50.0
    )
    sigma = counting_sigma(counts)
    fit = fit_peak(X, counts - 400.0, sigma, model="gaussian")
    assert fit.background < -3 * fit.background_err
    assert "negative_background" in assess_peak(fit, X)
    fit = fit_peak(X, counts, sigma, model="gaussian")
    assert "negative_background" not in assess_peak(fit, X)


def test_peak_narrower_than_step_and_outside_range():
    """A scan 10x coarser than the peak is flagged; a fit whose centre sits beyond the
    scanned range by many errors is flagged 'outside_range'."""
    coarse = np.linspace(-1.0, 1.0, 11)  # step 0.2
    counts = synthetic_counts(
        np.random.default_rng(6),
        coarse,
        model="gaussian",
        center=0.0,
        fwhm=0.02,
        area=2000.0,
        background=10.0,
        slope=0.0,
    )
    fit = fit_peak(coarse, counts, counting_sigma(counts), model="gaussian")
    flags = assess_peak(fit, coarse)
    assert "narrower_than_step" in flags or "unfittable" in flags, flags
    counts = synthetic_counts(
        np.random.default_rng(7), X, model="gaussian", center=1.3, fwhm=0.3, area=20000.0, background=20.0, slope=0.0
    )
    fit = fit_peak(X, counts, counting_sigma(counts), model="gaussian")
    if fit.success and fit.center > X.max() + 3 * fit.center_err:
        assert "outside_range" in assess_peak(fit, X)
    good = synthetic_counts(np.random.default_rng(8), X, model="gaussian", **TRUE)
    fit = fit_peak(X, good, counting_sigma(good), model="gaussian")
    assert assess_peak(fit, X) == []


@pytest.mark.parametrize("fixed", [None, 0.0, 1.0])
def test_the_analytic_jacobian_is_the_derivative_of_the_residuals(fixed):
    """Against central differences of the residuals, at a peak off the middle of the scan."""
    from panreduce_scan.peaks import peak_shape, residual_jacobian

    x = np.linspace(29.7, 30.3, 61)
    sigma = np.linspace(1.0, 3.0, x.size)
    x_ref = float(x.mean())
    p = np.array([30.03, 0.08, 5.0e3, 20.0, -4.0] + ([0.3] if fixed is None else []))

    def residuals(q):
        eta = q[5] if fixed is None else fixed
        return (q[2] * peak_shape(x, q[0], q[1], eta) + q[3] + q[4] * (x - x_ref)) / sigma

    jac = residual_jacobian(p, x, 1.0 / sigma, x_ref, fixed)
    assert jac.shape == (x.size, p.size)
    for k in range(p.size):
        h = 1e-6 * max(abs(p[k]), 1e-3)
        step = np.zeros_like(p)
        step[k] = h
        numeric = (residuals(p + step) - residuals(p - step)) / (2 * h)
        np.testing.assert_allclose(jac[:, k], numeric, rtol=1e-5, atol=1e-5 * np.abs(numeric).max())
