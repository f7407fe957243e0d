"""Instrument geometry -> Q, and Q1D/Qxy with error propagation, on synthetic inputs."""

import numpy as np
import pytest

from panreduce_sans.binning import rebin_edges
from panreduce_sans.instrument import LOQ, RectangularBank, pixel_geometry
from panreduce_sans.q1d import q1d, q_resolution_sigma, qxy


def test_loq_bank_ids_and_positions():
    bank = LOQ.main
    assert bank.spectra[0] == 3 and bank.spectra[-1] == 16386
    ix, iy = bank.indices()
    # spectrum s: ix = (s-3) mod 128, iy = (s-3) div 128 (fact sheet §2.1)
    s = 16131
    assert (ix[s - 3], iy[s - 3]) == ((s - 3) % 128, (s - 3) // 128) == (0, 126)
    x, y = bank.positions()
    assert x[0] == pytest.approx(-0.3136009) and y[0] == pytest.approx(-0.3124091)
    assert x[127] == pytest.approx(-0.3136009 + 127 * 0.005038)


def test_loq_beam_centre_shift_from_the_fact_sheet():
    shift = LOQ.beam_centre_shift((0.32339, 0.330748))
    assert shift == pytest.approx((-0.00589, -0.013248))


def test_pixel_geometry_by_hand():
    bank = RectangularBank("b", id_start=1, nx=3, ny=1, x0=-0.01, y0=0.0, dx=0.01, dy=0.01, z=5.0)
    geo = pixel_geometry(bank, sample_z=1.0)
    dz = 4.0
    assert geo.radius == pytest.approx([0.01, 0.0, 0.01])
    assert geo.l2[1] == pytest.approx(dz)
    assert geo.two_theta[0] == pytest.approx(np.arctan(0.01 / dz))
    assert geo.solid_angle[1] == pytest.approx(1e-4 / dz**2)
    assert geo.solid_angle[0] == pytest.approx(1e-4 * dz / (dz**2 + 1e-4) ** 1.5)


def test_q_of_a_loq_pixel():
    geo = pixel_geometry(LOQ.main, sample_z=10.999, shift=LOQ.beam_centre_shift((0.32339, 0.330748)))
    # the pixel nearest the beam axis has R < half a pixel diagonal
    assert geo.radius.min() < 0.0036
    # a pixel at R = 0.1 m, dz = 4.151 m: Q at 5 Å = 4 pi sin(atan(0.1/4.151)/2)/5
    k = int(np.argmin(np.abs(geo.radius - 0.1)))
    expected = 4 * np.pi * np.sin(0.5 * np.arctan(geo.radius[k] / 4.151)) / 5.0
    assert 4 * np.pi * np.sin(geo.two_theta[k] / 2) / 5.0 == pytest.approx(expected, rel=1e-12)


def _flat_sample(intensity: float, npix: int = 400):
    """Pixels on a ring pattern, counts = I * W * Omega*F exactly (a flat scatterer)."""
    rng = np.random.default_rng(3)
    two_theta = rng.uniform(0.01, 0.09, npix)
    lam_edges = rebin_edges([2.2, -0.035, 10.0])
    nl = lam_edges.size - 1
    wav = rng.uniform(1e3, 2e3, nl)
    pix = rng.uniform(1e-6, 2e-6, npix)
    counts = intensity * wav[None, :] * pix[:, None]
    return counts, lam_edges, wav, two_theta, pix


def test_q1d_recovers_a_flat_intensity_and_applies_the_scale():
    counts, lam_edges, wav, tt, pix = _flat_sample(3.0)
    q_edges = rebin_edges([0.008, 0.002, 0.08, -0.05, 0.285])
    z = np.zeros_like
    iq = q1d(counts, counts, np.zeros_like(counts), lam_edges, wav, z(wav), tt, pix, z(pix), q_edges, scale=0.5)
    filled = iq.denominator > 0
    assert filled.sum() > 40
    assert iq.intensity[filled] == pytest.approx(1.5)


def test_q1d_masked_fraction_removes_the_same_share_of_the_denominator():
    counts, lam_edges, wav, tt, pix = _flat_sample(2.0)
    m = np.zeros_like(counts)
    m[:, 10] = 0.25
    counts[:, 10] *= 0.75  # a quarter of the bin was masked (and its counts zeroed)
    z = np.zeros_like
    q_edges = rebin_edges([0.008, 0.002, 0.08, -0.05, 0.285])
    iq = q1d(counts, counts, m, lam_edges, wav, z(wav), tt, pix, z(pix), q_edges)
    assert iq.intensity[iq.denominator > 0] == pytest.approx(2.0)


def test_q1d_errors_by_hand():
    # two elements landing in the same Q bin (same pixel angle, neighbouring wavelengths)
    lam_edges = np.array([5.0, 5.001, 5.002])
    tt = np.array([0.05])
    counts = np.array([[100.0, 300.0]])
    wav = np.array([2.0, 4.0])
    wav_e = np.array([0.2, 0.0])
    pix = np.array([0.5])
    pix_e = np.array([0.05])
    q_edges = np.array([0.0, 1.0])
    iq = q1d(counts, counts, np.zeros_like(counts), lam_edges, wav, wav_e, tt, pix, pix_e, q_edges)
    num, den = 400.0, 2 * 0.5 + 4 * 0.5
    assert iq.intensity[0] == pytest.approx(num / den)
    var_den = (0.2 * 0.5) ** 2 + (2 * 0.05) ** 2 + (4 * 0.05) ** 2
    expected = np.sqrt(400.0 / den**2 + (num / den) ** 2 * var_den / den**2)
    assert iq.error[0] == pytest.approx(expected)
    counting_only = q1d(
        counts,
        counts,
        np.zeros_like(counts),
        lam_edges,
        wav,
        wav_e,
        tt,
        pix,
        pix_e,
        q_edges,
        normalisation_errors=False,
    )
    assert counting_only.error[0] == pytest.approx(20.0 / den)


def test_q1d_split_conserves_totals_and_agrees_on_a_flat_sample():
    counts, lam_edges, wav, tt, pix = _flat_sample(3.0)
    z = np.zeros_like
    q_edges = np.linspace(0.0, 0.5, 11)  # wider than every element's Q range
    centre = q1d(counts, counts, z(counts), lam_edges, wav, z(wav), tt, pix, z(pix), q_edges)
    split = q1d(counts, counts, z(counts), lam_edges, wav, z(wav), tt, pix, z(pix), q_edges, split=True)
    assert split.counts.sum() == pytest.approx(counts.sum())
    assert centre.counts.sum() == pytest.approx(counts.sum())
    good = split.denominator > 0
    assert split.intensity[good] == pytest.approx(3.0)


def test_q1d_q_dev_is_the_counts_weighted_mean_sigma():
    lam_edges = np.array([5.0, 5.001, 5.002])
    counts = np.array([[100.0, 300.0]])
    sig = np.array([[0.001, 0.003]])
    iq = q1d(
        counts,
        counts,
        np.zeros_like(counts),
        lam_edges,
        np.ones(2),
        np.zeros(2),
        np.array([0.05]),
        np.ones(1),
        np.zeros(1),
        np.array([0.0, 1.0]),
        q_sigma=sig,
    )
    assert iq.q_dev[0] == pytest.approx((100 * 0.001 + 300 * 0.003) / 400)


def test_qxy_is_point_symmetric_for_a_symmetric_detector():
    bank = RectangularBank("b", id_start=1, nx=40, ny=40, x0=-0.195, y0=-0.195, dx=0.01, dy=0.01, z=5.0)
    geo = pixel_geometry(bank, sample_z=1.0)
    lam_edges = np.array([4.0, 6.0])
    counts = np.full((geo.x.size, 1), 10.0)
    out = qxy(
        counts, counts, np.zeros_like(counts), lam_edges, np.ones(1), geo.x, geo.y, geo.l2, geo.solid_angle, 0.1, 0.01
    )
    assert out.intensity.shape == (20, 20)
    assert np.allclose(out.intensity, out.intensity[::-1, ::-1])
    assert np.allclose(out.intensity, out.intensity.T)


def test_resolution_formula_by_hand():
    s = q_resolution_sigma(
        np.array([[0.0]]),
        np.array([5.0]),
        np.array([0.0]),
        l1=4.0,
        l2=np.array([4.0]),
        r1=0.01,
        r2=0.004,
        delta_r=0.005,
    )
    l3 = 2.0
    expected = np.sqrt(4 * np.pi**2 / (12 * 25) * (3 * (0.01 / 4) ** 2 + 3 * (0.004 / l3) ** 2 + (0.005 / 4) ** 2))
    assert s[0, 0] == pytest.approx(expected)
    # the wavelength term: Q * sigma_lambda / lambda with sigma_lambda^2 = dl^2/12
    s2 = q_resolution_sigma(
        np.array([[0.1]]), np.array([5.0]), np.array([0.5]), l1=4.0, l2=np.array([4.0]), r1=0.0, r2=0.0, delta_r=0.0
    )
    assert s2[0, 0] == pytest.approx(0.1 * 0.5 / np.sqrt(12) / 5.0)
