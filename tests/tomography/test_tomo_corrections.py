"""Corrections with known answers: dark/flat, -log, zingers, rings (phantom and the real
dendrite sinogram), dynamic flat fields and Paganin phase retrieval (Fresnel-propagated
phantom)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from tomo_synthetic import nrmse, phantom_scan

from panreduce import constants
from panreduce_tomography import corrections as corr
from panreduce_tomography import gridrec, recon


def test_flat_field_and_safe_log():
    dark = np.full((2, 3), 100.0)
    flat = np.full((2, 3), 1100.0)
    flat[0, 0] = 90.0  # a dead flat pixel: no information, no division by zero
    proj = np.full((4, 2, 3), 100.0 + 1000.0 * np.exp(-0.7))
    proj[1, 1, 1] = 50.0  # below the dark level
    norm = corr.flat_field(proj, dark, flat)
    assert norm[0, 1, 2] == pytest.approx(np.exp(-0.7), rel=1e-6)
    assert np.all(norm[:, 0, 0] == 1.0)
    li = corr.minus_log(norm, floor=1e-3)
    assert li[0, 1, 2] == pytest.approx(0.7, rel=1e-5)
    assert li[1, 1, 1] == pytest.approx(-np.log(1e-3), rel=1e-6)  # finite, not NaN/inf
    assert np.all(np.isfinite(corr.minus_log(np.array([0.0, -1.0, np.nan, np.inf]))))


def test_zinger_removal_keeps_the_rest():
    rng = np.random.default_rng(0)
    x = rng.normal(1000, 10, size=(40, 3, 50)).astype(np.float32)
    hits = [(5, 1, 7), (20, 0, 33), (31, 2, 2)]
    for h in hits:
        x[h] = 30000.0
    y = corr.remove_zingers(x, threshold=0.3)
    for h in hits:
        assert abs(y[h] - 1000) < 50
    changed = np.argwhere(np.abs(y - x) > 0)
    assert len(changed) == len(hits)


@pytest.fixture(scope="module")
def ringed():
    scan = phantom_scan(n=96, n_angles=150, n_rows=1, offset=1.5, rings=0.03, seed=4)
    li = corr.minus_log(corr.flat_field(scan["data"], scan["darks"].mean(0), scan["flats"].mean(0)))[:, 0]
    return scan, li


@pytest.mark.parametrize("method", ["sorting", "filtering"])
def test_ring_removal_on_phantom(ringed, method):
    scan, sino = ringed
    clean = scan["line_integrals"][:, 0]
    fix = corr.remove_stripes_sorting(sino, 11) if method == "sorting" else corr.remove_stripes_filtering(sino, size=11)
    assert corr.stripe_index(fix) < 0.5 * corr.stripe_index(sino)
    # the stripes (column offsets from the ring-free sinogram) are mostly gone ...
    stripes_before = np.abs((sino - clean).mean(0)).mean()
    stripes_after = np.abs((fix - clean).mean(0)).mean()
    assert stripes_after < 0.75 * stripes_before, (stripes_before, stripes_after)
    truth, mask = scan["truth"][0], recon.circle_mask(96, 44)
    c = scan["center"]
    before = gridrec.gridrec(sino, scan["angles"], c)
    after = gridrec.gridrec(fix, scan["angles"], c)
    assert corr.ring_index(after) < 0.6 * corr.ring_index(before)
    assert nrmse(after, truth, mask) < 0.85 * nrmse(before, truth, mask)


@pytest.mark.data
def test_ring_removal_on_dendrite(dataset):
    """The real ToMoBAR dendrite sinogram has strong rings: the sorting filter reduces
    both the stripe metric of the sinogram and the ring metric of the slice."""
    m = scipy.io.loadmat(dataset("tomo/dendrite/RealDataDend.mat"))
    sino = m["sinoRD"].T.astype(np.float32)  # (360 angles, 1260 px)
    angles = m["anglesRad"].ravel()
    sino = sino / sino.max()
    fix = corr.remove_stripes_sorting(sino, 31)
    s0, s1 = corr.stripe_index(sino), corr.stripe_index(fix)
    assert s1 < 0.5 * s0, (s0, s1)
    c = 630.0
    before = gridrec.gridrec(sino[:, 230:1030], angles, c - 230)
    after = gridrec.gridrec(fix[:, 230:1030], angles, c - 230)
    r0, r1 = corr.ring_index(before), corr.ring_index(after)
    assert r1 < 0.7 * r0, (r0, r1)


def test_dynamic_flat_field_beats_conventional():
    """Flats whose beam profile moves (two modes): the eigen-flat correction tracks each
    projection's own beam and flattens the normalised images."""
    rng = np.random.default_rng(5)
    rows, cols, na, nf = 24, 48, 30, 20
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = 5000 * (1 + 0.1 * np.cos(xx / 7.0))
    mode1 = 500 * np.sin(xx / 5.0 + yy / 9.0)
    mode2 = 400 * np.cos(yy / 4.0)
    dark = np.full((rows, cols), 100.0)

    def beam(w):
        return base + w[0] * mode1 + w[1] * mode2

    flats = np.stack([beam(rng.uniform(-1, 1, 2)) + dark for _ in range(nf)])
    flats = rng.poisson(flats).astype(np.float32)
    sample = np.exp(-0.5 * ((xx - 24) ** 2 < 36))  # a bar: transmission 0.61 inside
    weights = rng.uniform(-1, 1, (na, 2))
    proj = np.stack([rng.poisson(beam(w) * sample + dark) for w in weights]).astype(np.float32)
    ef = corr.eigen_flats(flats, dark, 3)
    assert ef.explained[:2].sum() > 0.8  # two modes carry the variation
    w = corr.dynamic_weights(proj, ef, downsample=2)
    dyn = corr.dynamic_flat_field(proj, ef, w)
    conv = corr.flat_field(proj, dark, flats.mean(0))
    truth = np.broadcast_to(sample, proj.shape)
    e_dyn, e_conv = np.abs(dyn - truth).mean(), np.abs(conv - truth).mean()
    assert e_dyn < 0.5 * e_conv, (e_dyn, e_conv)


def test_paganin_recovers_thickness_of_propagated_sphere():
    """A sphere's exit wave propagated by Fresnel diffraction (edge-enhanced fringes):
    Paganin's filter returns its projected thickness to a few per cent."""
    energy, dist, px = 20.0, 0.2, 1e-6
    lam = constants.H_C_KEV_M / energy
    delta, beta = 1e-6, 1e-9
    mu = 4 * np.pi * beta / lam
    n = 256
    yy, xx = np.mgrid[0:n, 0:n] - n / 2
    r = 60.0
    thick = 2 * np.sqrt(np.clip(r * r - xx**2 - yy**2, 0, None)) * px  # metres
    wave = np.exp(-mu * thick / 2 - 1j * (2 * np.pi / lam) * delta * thick)
    u = np.fft.fftfreq(n, d=px)
    prop = np.exp(-1j * np.pi * lam * dist * (u[:, None] ** 2 + u[None, :] ** 2))
    intensity = np.abs(np.fft.ifft2(np.fft.fft2(wave) * prop)) ** 2
    assert intensity.max() > 1.05  # phase contrast fringes are there
    out = corr.paganin(
        intensity[None].astype(np.float32), pixel_size_m=px, distance_m=dist, energy_kev=energy, delta_beta=delta / beta
    )[0]
    t_rec = -np.log(out) / mu
    inside = (xx**2 + yy**2) < (0.9 * r) ** 2
    assert np.abs(t_rec - thick)[inside].mean() < 0.03 * thick.max()
    assert np.abs(-np.log(intensity) / mu - thick)[inside].mean() > 2 * np.abs(t_rec - thick)[inside].mean()
    assert out.mean() == pytest.approx(intensity.mean(), rel=0.02)  # the filter keeps the mean (DC = 1)
