"""Monitor, transmission, direct-beam and scale corrections on hand-computable inputs."""

import numpy as np
import pytest

from panreduce_sans.corrections import (
    absolute_scale,
    direct_beam_histogram,
    fit_transmission,
    flat_background,
    monitor_spectrum,
    radius_wave_cut,
    remove_bins_linear,
    sample_volume,
    time_mask_bins,
    tof_to_wavelength,
    transmission_ratio,
)

LOQ_TOF = 3500.0 * 1.025 ** np.arange(103)  # the LOQ grid: 3500 µs, ratio 1.025 (fact sheet §2.1)


def test_loq_grid_matches_the_fact_sheet():
    assert LOQ_TOF[70] == pytest.approx(19712.4, abs=0.5)
    assert LOQ_TOF[71] == pytest.approx(20205.2, abs=0.5)


def test_wavelength_of_a_known_flight():
    # 10 m in 2528 µs is 1.0004 Å for h/m = 3956.034 m Å / s
    assert tof_to_wavelength(10000.0, 10.0) == pytest.approx(3.956034)
    assert tof_to_wavelength(np.array([2528.0]), 10.0)[0] == pytest.approx(1.00009, abs=1e-5)


def test_prompt_peak_bins_are_interpolated_linearly_between_neighbours():
    y = np.arange(102, dtype=float) * 10
    y[68:72] = 1e6  # a spike inside 19000-20500 µs
    e = np.sqrt(np.abs(y))
    yo, eo = remove_bins_linear(LOQ_TOF, y, e, 19000, 20500)
    # bins 68..71 replaced; neighbours 67 (670) and 72 (720): steps of (720-670)/5
    assert yo[68:72] == pytest.approx([680, 690, 700, 710])
    assert eo[68:72] == pytest.approx(0.5 * (e[67] + e[72]))
    assert np.array_equal(yo[:68], y[:68]) and np.array_equal(yo[72:], y[72:])


def test_flat_background_mean_of_rates():
    edges = np.array([0.0, 1, 2, 4, 6])  # widths 1, 1, 2, 2
    rate = np.array([10.0, 10, 3, 5])  # per µs; window [2, 6] -> bins 2, 3 -> bg = 4
    y = rate * np.diff(edges)
    e = np.sqrt(y)
    yo, eo, bg = flat_background(edges, y, e, 2.5, 5.5)
    assert bg == pytest.approx(4.0)
    assert yo == pytest.approx([6, 6, 0, 2])  # bin 2 went negative -> 0
    sigma_bg = np.sqrt((e[2] / 2) ** 2 + (e[3] / 2) ** 2) / 2
    assert eo[0] == pytest.approx(np.hypot(e[0], sigma_bg * 1))
    assert eo[3] == pytest.approx(np.hypot(e[3] / 2, sigma_bg) * 2)
    assert eo[2] == pytest.approx(max(np.hypot(e[2] / 2, sigma_bg), 4.0) * 2)


def test_time_masks_on_the_loq_grid_hit_the_fact_sheet_bins():
    masked = time_mask_bins(LOQ_TOF, [(19711.5, 21228.5), (39354.5, 41348.5)])
    assert np.flatnonzero(masked).tolist() == [69, 70, 71, 72, 73, 97, 98, 99, 100]


def test_monitor_spectrum_conserves_counts_inside_the_range():
    counts = np.full(102, 100.0)
    lam = tof_to_wavelength(LOQ_TOF, 10.424)
    out_edges = lam[10:50]  # an output grid made of input edges
    y, e = monitor_spectrum(LOQ_TOF, counts, 10.424, out_edges, prompt_peak=None, background=None)
    assert y == pytest.approx(np.full(39, 100.0))
    assert e == pytest.approx(np.full(39, 10.0))


def test_transmission_ratio_and_its_errors():
    one = np.array([1.0])
    t, te = transmission_ratio(
        (np.array([100.0]), np.array([10.0])),
        (np.array([40.0]), np.array([2.0])),
        (np.array([200.0]), np.array([0.0])),
        (np.array([100.0]), np.array([0.0])),
    )
    assert t == pytest.approx([0.8])  # (40/100)/(100/200)
    assert te == pytest.approx(0.8 * np.hypot(0.1, 0.05) * one)


def test_log_fit_recovers_an_exponential():
    lam = np.linspace(2.2, 10, 30)
    t = np.exp(-0.05 - 0.02 * lam)
    fit = fit_transmission(lam, t, 0.01 * t, lam, method="log", lambda_min=2.2, lambda_max=10)
    assert fit.coefficients == pytest.approx([-0.05, -0.02])
    assert fit.values == pytest.approx(t)
    # sigma of ln T = 0.01 per point: the line's error at the centre is ~0.01/sqrt(30)
    assert fit.errors[15] / fit.values[15] == pytest.approx(0.01 / np.sqrt(30), rel=0.1)


def test_log_fit_weights_points_by_their_errors():
    lam = np.array([3.0, 4.0, 5.0])
    t = np.array([0.9, 0.5, 0.9])  # the middle point is off, but uncertain
    err = np.array([1e-4, 10.0, 1e-4])
    fit = fit_transmission(lam, t, err, lam, method="log")
    assert fit.values == pytest.approx([0.9, 0.9, 0.9], rel=1e-6)


def test_linear_polynomial_and_off_fits():
    lam = np.linspace(2, 10, 20)
    t = 0.9 - 0.01 * lam + 0.001 * lam**2
    err = np.full(20, 0.01)
    lin = fit_transmission(lam, 0.9 - 0.01 * lam, err, lam, method="linear")
    assert lin.coefficients == pytest.approx([0.9, -0.01])
    poly = fit_transmission(lam, t, err, lam, method="polynomial", order=2)
    assert poly.values == pytest.approx(t)
    off = fit_transmission(lam, t, err, lam, method="off")
    assert np.array_equal(off.values, t)
    # the fit range selects the points
    sub = fit_transmission(lam, np.where(lam < 6, 0.5, 0.9), err, lam, method="linear", lambda_min=6, lambda_max=10)
    assert sub.values == pytest.approx(np.full(20, 0.9))


def test_direct_beam_histogram_edges_and_average():
    x = np.arange(1.0, 6.0)  # points 1..5, edges .5 1.5 ... 5.5
    d, de = direct_beam_histogram(x, x * 10, np.ones(5), np.array([1.5, 3.5]))
    assert d == pytest.approx([25.0])  # mean of 20 and 30
    assert de[0] == pytest.approx(np.sqrt(2) / 2)
    with pytest.raises(ValueError):
        direct_beam_histogram(x, x, x, np.array([0.1, 2.0]))


def test_sample_volume_and_the_loq_scale():
    assert sample_volume("Disc", 2.0, 8.0, 8.0) == pytest.approx(100.531, abs=1e-3)
    assert sample_volume("Cylinder", 2.0, 8.0, 5.0) == pytest.approx(5 * np.pi * 16)
    assert sample_volume("FlatPlate", 2.0, 8.0, 5.0) == pytest.approx(80.0)
    with pytest.raises(ValueError):
        sample_volume("Teapot", 1, 1, 1)
    # fact sheet §5.8: a = 1.4621, LOQ factor 100/pi, disc t=2 w=8 -> 0.462943
    assert absolute_scale(1.4621, sample_volume("Disc", 2, 8, 8), 100 / np.pi) == pytest.approx(0.462943, abs=1e-6)


def test_radius_wave_cut():
    edges = np.array([1.0, 2.0, 3.0, 4.0])
    cut = radius_wave_cut(np.array([0.0, 0.05, 0.2]), edges, radius_cut=0.1, wave_cut=4.0)
    # R=0: cutoff 4 -> lower edges 1,2,3 all below; R=.05: cutoff 2 -> only the edge 1; R=.2: none
    assert cut.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert not radius_wave_cut(np.zeros(2), edges, 0.0, 4.0).any()


def test_wide_angle_transmission_correction():
    from panreduce_sans.corrections import wide_angle_transmission

    t0 = np.array([0.5, 0.8])
    c = wide_angle_transmission(np.array([0.0, np.arccos(0.5)]), t0)
    assert c[0] == pytest.approx([1.0, 1.0])  # on the beam axis nothing changes
    # 2theta = 60 deg: A = 1, C = (T0 - 1)/ln T0
    assert c[1] == pytest.approx((t0 - 1) / np.log(t0))
    # small angles: C ~ 1 + A ln(T0)/2
    small = wide_angle_transmission(np.array([1e-3]), t0)
    a = 1 / np.cos(1e-3) - 1
    assert small[0] == pytest.approx(1 + a * np.log(t0) / 2, rel=1e-9)
