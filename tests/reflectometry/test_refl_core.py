"""Hand-computable answers of the reduction arithmetic: TOF→λ, pixel 2θ, log bins,
rebinning, SumInQ on a synthetic specular line, monitor normalisation, stitch factors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from panreduce_reflectometry import core
from panreduce_reflectometry.instruments import OFFSPEC
from panreduce_reflectometry.runs import TofRun, pixel_two_theta
from panreduce_reflectometry.stitch import Curve, stitch


def test_tof_to_wavelength_is_h_over_m_times_t_over_l():
    # 10 ms over 10 m is 1000 m/s: λ = h/(m v) = 3.95603401 Å (CODATA 2022 h/m_n)
    assert core.tof_to_wavelength(np.array([10_000.0]), 10.0)[0] == pytest.approx(3.95603401, rel=1e-8)
    # one row per flight path
    lam = core.tof_to_wavelength(np.array([1000.0, 2000.0]), np.array([1.0, 2.0]))
    np.testing.assert_allclose(lam, [[3.956034, 7.912068], [1.978017, 3.956034]])


def test_q_from_wavelength_and_theta():
    # θ = 30°: Q = 4π·0.5/λ = 2π/λ
    assert core.wavelength_to_q(np.array([2.0]), math.radians(30.0))[0] == pytest.approx(math.pi)


def _offspec_run(n_tof: int = 4) -> TofRun:
    pixel = np.arange(OFFSPEC.n_pixels)
    return TofRun(
        source="synthetic",
        instrument=OFFSPEC,
        run_number="1",
        title="",
        start_time="",
        sample_name="",
        counts=np.zeros((pixel.size, n_tof)),
        variances=np.zeros((pixel.size, n_tof)),
        spectra=pixel + OFFSPEC.first_pixel_spectrum,
        tof_edges_us=np.linspace(1000, 5000, n_tof + 1),
        pixel_y_m=OFFSPEC.first_pixel_y_m + pixel * OFFSPEC.pixel_pitch_m,
        pixel_z_m=np.full(pixel.size, OFFSPEC.detector_distance_m),
        pixel_height_m=OFFSPEC.pixel_height_m,
        source_to_sample_m=OFFSPEC.source_to_sample_m,
    )


def test_pixel_two_theta_of_the_offspec_worked_example():
    # ROI 399-410 at ThetaIn 0.5°: the detector moves to y = 3.62·tan(1°) = 0.063187 m; the
    # reference spectrum 404 is pixel 399 at y = 0.062939 m, so 2θ_R = 0.99607°
    run = _offspec_run()
    tt, width, l2 = pixel_two_theta(run, theta_deg=0.5)
    p = 404 - OFFSPEC.first_pixel_spectrum
    assert math.degrees(tt[p]) == pytest.approx(0.99607, abs=2e-5)
    assert 3.62 * math.tan(math.radians(1.0)) == pytest.approx(0.063187, abs=1e-6)
    assert l2[p] == pytest.approx(math.hypot(3.62, 0.062939), abs=1e-6)
    # the angular height of a 0.5185 mm pixel at 3.62 m is h/L·cos²(2θ)
    assert width[p] == pytest.approx(0.5185e-3 / 3.62 * math.cos(tt[p]) ** 2, rel=1e-4)


def test_log_edges_follow_mantids_rebin_rule():
    edges = core.log_edges(0.01, 0.0125, 0.03)
    # 0.01, 0.0103, 0.010609, 0.01092727, 0.0112550881, 0.01159274 ... then q_max: the last step
    # is taken while x + 1.25·step ≤ end
    np.testing.assert_allclose(edges[:4], [0.01, 0.0103, 0.010609, 0.01092727])
    assert edges[-1] == 0.0125
    assert np.all(np.diff(edges) > 0)
    # the edge before last still allowed one more step, the last log edge did not
    assert edges[-3] * (1 + 1.25 * 0.03) <= 0.0125 < edges[-2] * (1 + 1.25 * 0.03)


def test_aligned_log_edges_share_one_grid():
    a = core.aligned_log_edges(0.011, 0.05, 0.03, 0.001)
    b = core.aligned_log_edges(0.03, 0.2, 0.03, 0.001)
    k_a = np.log(a / 0.001) / np.log(1.03)
    np.testing.assert_allclose(k_a, np.round(k_a), atol=1e-9)
    common = np.intersect1d(np.round(a, 12), np.round(b, 12))
    assert common.size >= 2 and a[0] <= 0.011 and a[-1] >= 0.05


def test_rebin_counts_conserves_and_shares_by_overlap():
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([10.0, 20.0, 30.0])
    new, var = core.rebin_counts(edges, y, y, np.array([0.5, 1.5, 3.0]))
    np.testing.assert_allclose(new, [5 + 10, 10 + 30])
    np.testing.assert_allclose(var, new)


def test_rebin_distribution_averages_over_the_covered_width():
    edges = np.array([0.0, 1.0, 2.0])
    y = np.array([2.0, 4.0])
    new, _ = core.rebin_distribution(edges, y, y, np.array([0.0, 2.0, 4.0]))
    assert new[0] == pytest.approx(3.0)  # width average
    assert np.isnan(new[1])  # no data there


def test_sum_in_q_of_a_specular_line_conserves_counts_at_the_right_wavelength():
    # a specular reflection seen by 5 pixels: each pixel holds counts at the λ of one Q
    # (λ·sin(2θ_R)/sin(2θ) is the same for all): summing along constant Q puts all counts
    # in the bin of that projected λ, whatever pixel they came from
    two_theta = np.radians(np.array([0.98, 0.99, 1.00, 1.01, 1.02]))
    width = np.full(5, np.radians(0.002))
    lam_v = 6.0
    two_theta_r = two_theta[2]
    edges = np.linspace(2.0, 14.0, 1201)  # 0.01 Å bins
    counts = np.zeros((5, 1200))
    for p in range(5):
        lam = lam_v * math.sin(two_theta[p]) / math.sin(two_theta_r)
        counts[p, int((lam - 2.0) / 0.01)] = 100.0 * (p + 1)
    out_edges = np.linspace(4.0, 8.0, 401)
    y, var = core.sum_in_q(
        np.tile(edges, (5, 1)),
        counts,
        counts,
        two_theta=two_theta,
        two_theta_width=width,
        two_theta_r=two_theta_r,
        theta0=0.0,
        output_edges=out_edges,
    )
    assert y.sum() == pytest.approx(counts.sum(), rel=1e-12)
    centre = np.sum(y * 0.5 * (out_edges[1:] + out_edges[:-1])) / y.sum()
    assert centre == pytest.approx(lam_v, abs=0.01)
    assert np.all(var >= 0)
    # errors: shared linearly within a pixel (σ·f per bin, Σf = 1), so Σσ² ≤ Σ counts, with
    # equality only when no input bin is split
    assert 0 < var.sum() <= counts.sum() * (1 + 1e-12)
    one, one_var = core.sum_in_q(
        edges,
        counts[2:3],
        counts[2:3],
        two_theta=two_theta[2:3],
        two_theta_width=np.zeros(1),
        two_theta_r=two_theta_r,
        theta0=0.0,
        output_edges=edges,
    )
    np.testing.assert_allclose(one, counts[2], atol=1e-9)  # the reference pixel maps onto itself
    np.testing.assert_allclose(one_var, counts[2], atol=1e-9)


def test_sum_in_q_refuses_pixels_below_the_horizon():
    with pytest.raises(ValueError, match="horizon"):
        core.sum_in_q(
            np.linspace(1, 2, 3),
            np.ones((1, 2)),
            np.ones((1, 2)),
            two_theta=np.array([0.001]),
            two_theta_width=np.array([0.01]),
            two_theta_r=0.01,
            theta0=0.0,
            output_edges=np.linspace(1, 2, 3),
        )


def test_monitor_normalisation_subtracts_a_flat_background_and_integrates_whole_bins():
    edges = np.linspace(0.0, 20.0, 201)  # 0.1 Å bins
    centre = 0.5 * (edges[1:] + edges[:-1])
    signal = np.where((centre > 2) & (centre < 14), 50.0, 0.0)
    counts = signal + 3.0  # flat background, 3 counts per bin = 30 per Å
    m = core.integrate_monitor(edges, counts, background_angstrom=(15.0, 20.0), integration_angstrom=(2.0, 14.0))
    assert m.background_rate == pytest.approx(30.0)
    assert m.value == pytest.approx(120 * 50.0)  # 120 whole bins in 2-14 Å
    assert m.variance == pytest.approx(120 * 53.0)


def test_slit_resolution_of_inter_61440_is_its_titles_dq_q():
    # INTER 61440 "dq/q=0.08": S1VG 3.543 mm, S2VG 0.687 mm, slits 1.923 m apart, θ = 0.8°
    res = core.slit_resolution(slit1_mm=3.543, slit2_mm=0.687, slit_distance_mm=1923.0, theta_rad=math.radians(0.8))
    assert res == pytest.approx(0.0788, abs=0.001)


def _curve(edges, scale, lo, hi):
    c = 0.5 * (edges[1:] + edges[:-1])
    r = np.where((c >= lo) & (c <= hi), scale * c**-4, np.nan)
    return Curve(edges, r, (0.01 * r) ** 2)


def test_stitch_factors_of_two_overlapping_synthetic_curves():
    edges = core.aligned_log_edges(0.01, 0.3, 0.03, 0.001)
    lhs = _curve(edges, 1.0, 0.01, 0.06)
    rhs = _curve(edges, 0.4, 0.04, 0.3)  # measured 2.5× too low
    res = stitch([lhs, rhs])
    assert res.factors[0] == 1.0
    assert res.factors[1] == pytest.approx(2.5, rel=1e-9)
    assert 0 < res.factor_errors[1] < 0.05
    c = 0.5 * (res.curve.edges[1:] + res.curve.edges[:-1])
    ok = np.isfinite(res.curve.r)
    np.testing.assert_allclose(res.curve.r[ok], c[ok] ** -4, rtol=1e-9)
    lo, hi = res.overlaps[1]
    assert 0.039 < lo < 0.042 and 0.059 < hi < 0.062


def test_manual_stitch_factors_are_used_as_given():
    edges = core.aligned_log_edges(0.01, 0.3, 0.03, 0.001)
    res = stitch([_curve(edges, 1.0, 0.01, 0.06), _curve(edges, 0.4, 0.04, 0.3)], manual_factors=[1.0, 2.0])
    assert res.mode == "manual" and res.factors == [1.0, 2.0]


def test_stitch_refuses_curves_that_do_not_overlap():
    edges = core.aligned_log_edges(0.01, 0.3, 0.03, 0.001)
    with pytest.raises(ValueError, match="overlap"):
        stitch([_curve(edges, 1.0, 0.01, 0.03), _curve(edges, 1.0, 0.05, 0.3)])


def test_offspecular_map_conserves_counts_and_puts_the_specular_line_at_qx_zero():
    from panreduce_reflectometry.offspecular import offspecular_map, scattering_vector

    # specular: α_f = α_i gives Qx = 0 and Qz = 4π sin θ/λ
    qx, qz = scattering_vector(np.array([4.0]), math.radians(1.0), np.array([math.radians(1.0)]))
    assert abs(qx[0]) < 1e-15 and qz[0] == pytest.approx(4 * math.pi * math.sin(math.radians(1.0)) / 4.0)
    theta = math.radians(1.0)
    two_theta = np.radians(np.linspace(1.5, 2.5, 11))  # pixel 5 is specular (2θ = 2°)
    edges = np.tile(np.linspace(2.0, 14.0, 121), (11, 1))
    counts = np.ones((11, 120))
    counts[5] *= 50.0
    m = offspecular_map(
        counts, counts, edges, two_theta, theta_rad=theta, i0=10.0, wavelength_range=(2.0, 14.0), n_qx=41, n_qz=50
    )
    assert m.intensity.sum() == pytest.approx(counts.sum() / 10.0)
    ridge_qx = 0.5 * (m.qx_edges[1:] + m.qx_edges[:-1])[np.argmax(m.intensity.sum(axis=0))]
    assert abs(ridge_qx) <= np.diff(m.qx_edges)[0]


def test_polynomial_and_exponential_corrections_have_mantids_meaning():
    from panreduce_reflectometry.reduction import AlgorithmicCorrection

    # PolynomialCorrection: C0 + C1·λ + C2·λ²; at λ = 4 Å with 2, 0.5, 0.25: 2 + 2 + 4 = 8
    poly = AlgorithmicCorrection("polynomial", (2.0, 0.5, 0.25))
    np.testing.assert_allclose(poly.value_at(np.array([0.0, 4.0])), [2.0, 8.0])
    # ExponentialCorrection: C0·exp(−C1·λ); C0 = 2, C1 = 0.1 at λ = 4 Å: 2·e^−0.4 = 1.340640
    expo = AlgorithmicCorrection("exponential", (2.0, 0.1))
    assert expo.value_at(np.array([4.0]))[0] == pytest.approx(1.3406401, rel=1e-7)
    assert "C0=2" in expo.source and "C1=0.1" in expo.source


@pytest.mark.parametrize("summation", ["lambda", "q"])
def test_a_correction_divides_each_lambda_bin_by_its_value_at_the_bin_centre(summation):
    from dataclasses import replace

    from panreduce_reflectometry.reduction import AlgorithmicCorrection, reduce_run

    run = _offspec_run(n_tof=200)
    counts = run.counts.copy()
    counts[399 - OFFSPEC.first_pixel_spectrum : 411 - OFFSPEC.first_pixel_spectrum] = 100.0
    run = replace(
        run, counts=counts, variances=counts.copy(), tof_edges_us=np.linspace(2000, 90000, 201), monitor_total=1000.0
    )
    common = dict(
        theta_deg=0.5,
        roi=(399, 410),
        background_roi=None,
        summation=summation,
        reduction_type="non_flat_sample",
        wavelength_range=(2.0, 12.0),
        monitor_background=None,
        monitor_integration=None,
        transmission=None,
    )
    plain = reduce_run(run, **common)
    for corr in (AlgorithmicCorrection("polynomial", (2.0, 0.5)), AlgorithmicCorrection("exponential", (2.0, 0.1))):
        res = reduce_run(run, **common, correction=corr)
        assert res.normalisation == corr.kind
        lam = 0.5 * (res.lambda_edges[1:] + res.lambda_edges[:-1])[::-1]  # R is in ascending Q
        ratio = plain.r / res.r
        ok = np.isfinite(ratio) & (plain.r > 0)
        if summation == "lambda":  # exact: one factor per output bin
            np.testing.assert_allclose(ratio[ok], corr.value_at(lam[ok]), rtol=1e-12)
            np.testing.assert_allclose(plain.var[ok] / res.var[ok], corr.value_at(lam[ok]) ** 2, rtol=1e-12)
        else:  # per pixel before the projection: within the spread of λ over the ROI (< 1 %), away from
            # the partly filled bins at both ends of the projected range
            inner = ok & (plain.r > 0.9 * np.nanmedian(plain.r[ok]))
            assert inner.sum() > 100
            np.testing.assert_allclose(ratio[inner], corr.value_at(lam[inner]), rtol=0.01)
    with pytest.raises(ValueError, match="not both"):
        from panreduce_reflectometry.reduction import Transmission

        t = Transmission(np.array([1.0, 20.0]), np.array([1.0]), np.array([0.0]), "t")
        reduce_run(run, **{**common, "transmission": t}, correction=AlgorithmicCorrection("polynomial", (1.0,)))


def test_correction_parameters_take_mantids_names_and_refuse_half_given():
    from pydantic import ValidationError

    from panreduce_reflectometry.params import ReflectometryParameters as P

    assert P.model_validate({"polynomial": "1,2,3"}).correction_kind == "polynomial"
    assert P.model_validate({"polynomial": "1,2,3"}).polynomial == [1.0, 2.0, 3.0]
    assert (
        P.model_validate({"correction_algorithm": "ExponentialCorrection", "c0": 2, "c1": 0.1}).correction_kind
        == "exponential"
    )
    assert P.model_validate({"correction_algorithm": "None", "polynomial": "1"}).correction_kind is None
    for bad in (
        {"c0": 2},
        {"correction_algorithm": "PolynomialCorrection"},
        {"polynomial": "1", "c0": 1, "c1": 0},
        {"polynomial": "1", "transmission": "PLP0000711.nx.hdf"},
        {"c0": -1, "c1": 0.1},
    ):
        with pytest.raises(ValidationError):
            P.model_validate(bad)


def test_offspecular_map_over_pi_minus_pf_puts_the_specular_line_at_zero():
    from panreduce_reflectometry.offspecular import offspecular_map, pi_pf

    # α_i = 1°, α_f = 1.5°, λ = 2π Å (k = 1): pi − pf = sin 1° − sin 1.5°, pi + pf = sin 1° + sin 1.5°
    a, b = pi_pf(np.array([2 * math.pi]), math.radians(1.0), np.array([math.radians(1.5)]))
    s1, s15 = math.sin(math.radians(1.0)), math.sin(math.radians(1.5))
    assert a[0] == pytest.approx(s1 - s15, rel=1e-12) and b[0] == pytest.approx(s1 + s15, rel=1e-12)
    theta = math.radians(1.0)
    two_theta = np.radians(np.linspace(1.5, 2.5, 11))
    edges = np.tile(np.linspace(2.0, 14.0, 121), (11, 1))
    counts = np.ones((11, 120))
    counts[5] *= 50.0
    m = offspecular_map(
        counts,
        counts,
        edges,
        two_theta,
        theta_rad=theta,
        i0=10.0,
        wavelength_range=(2.0, 14.0),
        n_qx=41,
        n_qz=50,
        axes="pi_pf",
    )
    assert m.axes == ("pi-pf", "pi+pf")
    assert m.intensity.sum() == pytest.approx(counts.sum() / 10.0)
    ridge = 0.5 * (m.qx_edges[1:] + m.qx_edges[:-1])[np.argmax(m.intensity.sum(axis=0))]
    assert abs(ridge) <= np.diff(m.qx_edges)[0]
    # the vertical axis is Qz = k(sin α_i + sin α_f): its top is at the shortest λ bin centre and the largest α_f
    top = 2 * math.pi / 2.05 * (math.sin(theta) + math.sin(math.radians(1.5)))
    assert m.qz_edges[-1] == pytest.approx(top, rel=1e-9)


def test_found_background_on_both_sides_removes_a_sloping_background_under_the_beam():
    from panreduce_reflectometry.reduction import background_rows, find_specular

    pix = np.arange(240)
    beam = 5000.0 * np.exp(-0.5 * ((pix - 120) / 2.0) ** 2)
    slope_bg = 300.0 - 1.5 * pix  # more background below the beam than above (Platypus 710)
    counts = np.repeat((beam + slope_bg)[:, None], 4, axis=1)
    roi, bg, centroid = find_specular(counts, pix)
    assert centroid == pytest.approx(120.0, abs=0.05)
    assert len(bg) == 4 and bg[1] < roi[0] and bg[2] > roi[1]
    assert roi[0] - bg[1] == bg[2] - roi[1] and bg[1] - bg[0] == bg[3] - bg[2]  # symmetric about the beam
    sub, _ = core.subtract_background(counts, counts.copy(), background_rows(pix, bg))
    rows = slice(roi[0], roi[1] + 1)
    # the linear background cancels exactly: what is left in the ROI is the beam (less the
    # beam's own tails beyond 5 sd, which reach the background regions 1 FWHM away: < 1e-5)
    np.testing.assert_allclose(sub[rows].sum(axis=0), beam[rows].sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="one or two"):
        background_rows(pix, (1, 2, 3))


def _ridge_image(rng, centre_of_lambda, *, n_pix=60, diffuse=0.0):
    """Counts (pixel, λ bin) of a specular beam (sd 1.5 px) whose centre is ``centre_of_lambda(λ)``,
    on a flat background, plus a broad diffuse hump (sd 8 px at pixel 22) at short λ only."""
    lam = np.linspace(2.0, 20.0, 300)
    x = np.arange(n_pix, dtype=float)[:, None]
    spec = 40.0 * np.exp(-0.5 * ((x - centre_of_lambda(lam)[None, :]) / 1.5) ** 2)
    hump = diffuse * np.exp(-0.5 * ((x - 22.0) / 8.0) ** 2) * (lam < 8.0)[None, :]
    return rng.poisson(spec + hump + 0.5).astype(float), lam


def test_ridge_search_finds_the_specular_centre_beside_diffuse_scattering():
    """The centre from the long-λ end holds the specular ridge (30.3 px) where a count-weighted
    centroid over all λ is pulled 1 px and more towards a diffuse hump at short λ."""
    from panreduce_reflectometry import gravity

    rng = np.random.default_rng(7)
    counts, lam = _ridge_image(rng, lambda lam: np.full_like(lam, 30.3), diffuse=6.0)
    y = 0.001 * np.arange(60.0)  # 1 mm pixels
    rows = np.arange(60)
    centre, sd = gravity.ridge_centre(counts, y, lam, (2.0, 20.0), rows=rows)
    assert centre == pytest.approx(0.0303, abs=0.03e-3)
    assert sd == pytest.approx(0.0015, rel=0.1)
    centroid = gravity.beam_height(counts, y, lam, (2.0, 20.0), rows=rows)
    assert abs(centroid - 0.0303) > 1e-3


def test_ridge_search_with_a_per_wavelength_drop_finds_the_infinitely_fast_centre():
    """A beam that falls 3 px over the λ range (drop ∝ λ²): with the drop removed per λ bin the
    ridge is at the undeflected height (25.0 px) within 0.03 px; without, it sits lower."""
    from panreduce_reflectometry import gravity

    rng = np.random.default_rng(11)
    drop_px = lambda lam: -3.0 * (lam / 20.0) ** 2  # noqa: E731
    counts, lam = _ridge_image(rng, lambda lam: 25.0 + drop_px(lam))
    y = 0.002 * np.arange(60.0) - 0.05  # 2 mm pixels, offset
    rows = np.arange(60)
    centre, _ = gravity.ridge_centre(counts, y, lam, (2.0, 20.0), rows=rows, drop_m=0.002 * drop_px(lam))
    assert (centre + 0.05) / 0.002 == pytest.approx(25.0, abs=0.03)
    raw, _ = gravity.ridge_centre(counts, y, lam, (2.0, 20.0), rows=rows)
    assert (raw + 0.05) / 0.002 < 24.0


def test_gauss_fit_recovers_mean_and_width_on_a_background():
    from panreduce_reflectometry import gravity

    x = np.arange(40.0)
    y = 3.0 + 100.0 * np.exp(-0.5 * ((x - 17.25) / 2.2) ** 2)
    mean, sd = gravity.gauss_fit(x, y, np.sqrt(y))
    assert mean == pytest.approx(17.25, abs=1e-6) and sd == pytest.approx(2.2, rel=1e-6)
    with pytest.raises(ValueError):
        gravity.gauss_fit(x, np.zeros_like(x), np.ones_like(x))
