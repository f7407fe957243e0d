"""Integration physics on synthetic detector images with known geometry and I(q)."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import AGBEH_Q1, Geo, agbeh, guinier_sphere

from panreduce_saxs.analysis import fit_gaussian_peaks
from panreduce_saxs.geometry import Geometry, make_integrator
from panreduce_saxs.integrate import Curve, IntegrationSetup, Integrator
from panreduce_saxs.masks import beamstop_mask, parse_rectangles, rectangles_mask, threshold_mask
from panreduce_saxs.normalisation import absolute_scale_factor, subtract

GEO = Geo()


def integrator(geo: Geo = GEO, **setup) -> Integrator:
    g = Geometry(geo.d, geo.lam * 1e-10, geo.cx, geo.cy, geo.p, geo.p)
    return Integrator(make_integrator(g, geo.shape), geo.shape, IntegrationSetup(**setup))


def test_agbeh_ring_positions_recovered():
    img = GEO.image(lambda q: agbeh(q))
    curve = integrator(q_bins=1500).integrate1d(img)
    for n in (1, 2, 3, 4):
        qn = n * AGBEH_Q1
        fit = fit_gaussian_peaks(curve.q, curve.i, np.sqrt(np.abs(curve.i)) + 1, (qn - 0.012, qn + 0.012))
        assert fit.ok[0]
        # bins are ~3.6e-4 1/Å wide: the centre lands within a small fraction of one
        assert fit.position[0] == pytest.approx(qn, abs=5e-5), n
        # peak height above background: 1000/n (narrow rings are smeared a little by the bins)
        assert fit.height[0] == pytest.approx(1000.0 / n, rel=0.03)


def test_known_intensity_with_solid_angle_correction():
    law = lambda q: guinier_sphere(q, rg=25.0)  # noqa: E731
    img = GEO.image(law)
    curve = integrator(q_bins=400).integrate1d(img)
    assert np.allclose(curve.i, law(curve.q), rtol=0.01)
    # without the correction the integrated curve carries cos^3(2 theta)
    raw = integrator(q_bins=400, solid_angle=False).integrate1d(img)
    two_theta = 2 * np.arcsin(raw.q * GEO.lam / (4 * np.pi))
    assert np.allclose(raw.i, law(raw.q) * np.cos(two_theta) ** 3, rtol=0.01)
    assert raw.i[-1] < 0.99 * curve.i[-1]


def test_one_pixel_bins_sit_on_whole_pixel_radii():
    img = GEO.image(lambda q: guinier_sphere(q))
    curve = integrator().integrate1d(img)
    r_px = np.tan(2 * np.arcsin(curve.q * GEO.lam / (4 * np.pi))) * GEO.d / GEO.p
    assert np.allclose(r_px, np.round(r_px), atol=1e-6)
    assert np.all(np.diff(np.round(r_px)) == 1)


def test_masked_pixels_do_not_count():
    law = lambda q: guinier_sphere(q)  # noqa: E731
    img = GEO.image(law)
    bad = img.copy()
    rect = parse_rectangles("10:60:20:90; 200:210:0:319")
    mask = rectangles_mask(GEO.shape, rect)
    bad[mask] = 1e7
    bad[5, 5] = -1  # a dead pixel marker
    mask |= threshold_mask(bad, below=0)
    assert mask[5, 5]
    curve = integrator(q_bins=300, mask=mask).integrate1d(bad)
    assert np.allclose(curve.i, law(curve.q), rtol=0.01)
    unmasked = integrator(q_bins=300).integrate1d(bad)
    assert unmasked.i.max() > 100 * curve.i.max()


def test_poisson_errors_match_the_scatter():
    rng = np.random.default_rng(3)
    lam = 200.0
    img = rng.poisson(lam, GEO.shape).astype(np.float32)
    curve = integrator(q_bins=100, solid_angle=False).integrate1d(img)
    expected = np.sqrt(lam / curve.count)
    assert np.allclose(curve.sigma, expected, rtol=0.05)
    pulls = (curve.i - lam) / curve.sigma
    assert abs(np.std(pulls) - 1) < 0.2


def test_normalisation_and_absolute_scale_from_water():
    law = lambda q: guinier_sphere(q, background=0.0) + 50.0  # noqa: E731
    img = GEO.image(law)
    monitor, scale = 2.5e4, 3.7e-4
    integ = integrator(q_bins=200)
    plain = integ.integrate1d(img)
    norm = integ.integrate1d(img, monitor / scale)
    assert np.allclose(norm.i, plain.i * scale / monitor, rtol=1e-6)
    assert np.allclose(norm.sigma, plain.sigma * scale / monitor, rtol=1e-6)
    # a water frame: flat 400 counts per unit solid angle at monitor 1e5, thickness 1 mm
    water = GEO.image(lambda q: np.full_like(q, 400.0))
    w = integ.integrate1d(water, 1e5 * 0.1)  # monitor x thickness (cm)
    factor, err = absolute_scale_factor(w, np.array([0.0]), np.array([0.01632]))
    assert factor == pytest.approx(0.01632 / (400.0 / 1e4), rel=1e-3)
    assert err < 0.01 * factor
    # the sample scaled by it is within 1% of the known law in 1/cm
    sample = integ.integrate1d(img, 1e5 * 0.1 / factor)
    assert np.allclose(sample.i, law(sample.q) / 1e4 * factor, rtol=0.01)


def test_absolute_scale_from_a_reference_curve():
    q = np.linspace(0.01, 0.3, 200)
    ref = 30.0 * np.exp(-((q * 20) ** 2) / 3) + 0.5  # a glassy-carbon-like known curve (1/cm)
    measured = Curve(q, ref / 123.0, ref / 123.0 * 0.01)
    factor, _err = absolute_scale_factor(measured, q[::3], ref[::3], (0.02, 0.25))
    assert factor == pytest.approx(123.0, rel=0.002)
    with pytest.raises(ValueError):
        absolute_scale_factor(measured, q, ref, (1.0, 2.0))


def test_background_subtraction_propagates_errors():
    q = np.linspace(0.01, 0.2, 50)
    s = Curve(q, np.full(50, 10.0), np.full(50, 0.3))
    b = Curve(q, np.full(50, 4.0), np.full(50, 0.4))
    out = subtract(s, b, 0.5)
    assert np.allclose(out.i, 8.0)
    assert np.allclose(out.sigma, np.hypot(0.3, 0.5 * 0.4))
    # on a different grid the background is interpolated
    b2 = Curve(q[::2], np.full(25, 4.0), np.full(25, 0.4))
    out2 = subtract(s, b2)
    assert np.allclose(out2.i, 6.0) and out2.q.size == 49


def test_dark_and_flat_are_corrected():
    law = lambda q: guinier_sphere(q)  # noqa: E731
    rng = np.random.default_rng(0)
    flat = rng.uniform(0.8, 1.2, GEO.shape).astype(np.float32)
    dark = np.full(GEO.shape, 7.0, np.float32)
    img = GEO.image(law) * flat + dark
    curve = integrator(q_bins=300, dark=dark, flat=flat).integrate1d(img)
    assert np.allclose(curve.i, law(curve.q), rtol=0.01)


def test_polarisation_correction_flattens_an_anisotropic_frame():
    # wide angles make polarisation visible: a WAXS geometry
    waxs = Geo(distance_mm=60.0)
    integ = integrator(waxs, q_bins=200, polarization=0.95)
    pol = integ.ai.polarization(waxs.shape, 0.95)
    img = waxs.image(lambda q: np.full_like(q, 100.0)) * pol
    curve = integ.integrate1d(img)
    assert np.allclose(curve.i, 100.0, rtol=1e-3)
    uncorrected = integrator(waxs, q_bins=200).integrate1d(img)
    assert uncorrected.i.min() < 97.0


def test_sector_and_cake_see_anisotropy():
    integ = integrator(q_bins=100, chi_bins=72)
    chi = np.degrees(integ.ai.center_array(GEO.shape, unit="chi_rad"))
    law = guinier_sphere(GEO.q)
    img = law * GEO.solid_angle * np.where(np.abs(chi) < 45, 2.0, 1.0)
    iso = law * GEO.solid_angle
    right = integ.integrate1d(img, chi_range_deg=(-30, 30))
    left = integ.integrate1d(img, chi_range_deg=(150, 179))
    # the same sectors of the isotropic frame: the ratio is the anisotropy, exactly
    assert np.allclose(right.i / integ.integrate1d(iso, chi_range_deg=(-30, 30)).i, 2.0, rtol=1e-4)
    assert np.allclose(left.i / integ.integrate1d(iso, chi_range_deg=(150, 179)).i, 1.0, rtol=1e-4)
    # a sector integrates fewer pixels than the full circle
    assert right.count.sum() < 0.25 * integ.integrate1d(iso).count.sum()
    cake = integ.integrate2d(img)
    assert cake.i.shape == (72, 100)
    row0 = np.nanmean(cake.i[np.abs(cake.chi) < 30] / guinier_sphere(cake.q)[None, :])
    row1 = np.nanmean(cake.i[np.abs(cake.chi) > 60] / guinier_sphere(cake.q)[None, :])
    assert row0 == pytest.approx(2.0, rel=0.02) and row1 == pytest.approx(1.0, rel=0.02)


def test_beamstop_strip_found_and_nothing_on_a_clean_frame():
    geo = Geo(shape=(200, 300), cx=300.2, cy=100.0)  # beam just off the right edge, as at BioCAT
    rng = np.random.default_rng(5)
    expected = geo.image(lambda q: guinier_sphere(q, i0=60, rg=40, background=15))
    clean = rng.poisson(expected).astype(np.float32)
    mask0 = np.zeros(geo.shape, bool)
    assert beamstop_mask(clean, mask0, geo.cx, geo.cy).sum() == 0
    shadowed = clean.copy()
    shadowed[60:141, 285:] = rng.poisson(0.3, (81, 15))
    found = beamstop_mask(shadowed, mask0, geo.cx, geo.cy)
    strip = np.zeros(geo.shape, bool)
    strip[60:141, 285:] = True
    assert found[strip].all()  # the whole shadow
    assert (found & ~strip).sum() < 0.3 * strip.sum()  # and little else (a 2-pixel margin)
