"""The LOQ high-angle bank description, bank merging (DET/MERGED), and the sector, line, box
and gravity options, on synthetic inputs with hand-computable answers."""

import numpy as np
import pytest

from panreduce_sans.corrections import gravity_drop, gravity_two_theta, line_mask, sector_mask
from panreduce_sans.instrument import LOQ, ModularBank, RectangularBank, pixel_geometry
from panreduce_sans.merge import fit_rescale_shift, merge_range, stitch
from panreduce_sans.q1d import q1d, qxy

# -- the high-angle bank ------------------------------------------------------------------------


def test_hab_spectra_are_four_modules_of_348_with_two_spare_channels_each():
    hab = LOQ.hab
    assert isinstance(hab, ModularBank) and hab.n_pixels == 4 * 348
    spectra = hab.spectra
    assert spectra[0] == 16387 and spectra[-1] == 17784  # fact sheet §2.1
    starts = [m.spectra[0] for m in hab.modules]
    ends = [m.spectra[-1] for m in hab.modules]
    assert starts == [16387, 16737, 17087, 17437] and ends == [16734, 17084, 17434, 17784]
    # the spare DAE channels 16735-16736 etc. belong to no pixel; main-bank ids are not reused
    assert not np.isin([16735, 16736, 17085, 17086], spectra).any()
    assert not np.isin(spectra, LOQ.main.spectra).any()
    assert hab.z == 11.58 and hab.pixel_size == (0.012, 0.012)


def test_hab_modules_form_a_pinwheel_round_a_square_hole():
    hab = LOQ.hab
    x, y = hab.positions()
    # no two pixel centres closer than a pixel: modules do not overlap
    xy = np.c_[x, y]
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, 1.0)
    assert np.sqrt(d2.min()) == pytest.approx(0.012)
    # every pixel lies outside the 204 mm square hole and inside the 492 mm outer square
    assert np.all(np.maximum(np.abs(x), np.abs(y)) > 0.102) and np.all(np.maximum(np.abs(x), np.abs(y)) < 0.246)
    # a quarter turn maps the bank onto itself, module k onto module k+1
    for k in range(4):
        xa, ya = hab.modules[k].positions()
        xb, yb = hab.modules[(k + 1) % 4].positions()
        assert np.allclose(-ya, xb) and np.allclose(xa, yb)
    # along each module the pixel nearest the beam is in row 20 of 29, at the innermost column
    for m in hab.modules:
        mx, my = m.positions()
        r = np.hypot(mx, my).reshape(29, 12)
        assert np.unravel_index(np.argmin(r), r.shape) == (20, 0)


def test_hab_scattering_angles():
    shift = LOQ.beam_centre_shift((0.32219, 0.320875))  # SET CENTRE/HAB of the GFP user file
    geo = pixel_geometry(LOQ.hab, sample_z=10.999, shift=shift)
    # 0.581 m from the sample, 2theta from ~10 to ~30 degrees: Q 0.11-0.24 1/Å at 10 Å, up to 1.5 at 2.2 Å
    tt = np.degrees(geo.two_theta)
    assert 9.5 < tt.min() < 11.0 and 29.5 < tt.max() < 31.5
    assert geo.solid_angle.max() == pytest.approx(0.012**2 * 0.581 / np.min(geo.l2) ** 3)


def test_modular_bank_has_no_rows_and_columns():
    with pytest.raises(ValueError, match="modular"):
        LOQ.hab.indices()
    assert LOQ.main.grid and not LOQ.hab.grid


def test_rotated_module_positions_by_hand():
    m = RectangularBank(
        "m", id_start=1, nx=2, ny=3, x0=0.1, y0=0.2, dx=0.01, dy=0.02, z=1.0, fast=(0.0, -1.0), slow=(1.0, 0.0)
    )
    x, y = m.positions(shift=(0.001, 0.0))
    # id 1 + ix + 2*iy: ix runs down (-y), iy runs right (+x)
    assert np.allclose(x, [0.101, 0.101, 0.121, 0.121, 0.141, 0.141])
    assert np.allclose(y, [0.2, 0.19, 0.2, 0.19, 0.2, 0.19])


# -- merging ------------------------------------------------------------------------------------


def _two_banks(rescale=1.7, shift=-0.01, noise=0.0, seed=1):
    """A curve seen by both banks: the HAB reads truth/rescale - shift (so that
    rescale*(I_hab + shift) is the truth), the main bank below Q = 0.3, the HAB above 0.12."""
    q = np.geomspace(0.05, 1.0, 40)
    truth = 1.0 / (1.0 + (q / 0.1) ** 2) + 0.02
    n_m = np.where(q < 0.3, 1.0 + q, 0.0)
    n_h = np.where(q > 0.12, 2.0, 0.0)
    e = 0.01 * truth + 1e-4
    rng = np.random.default_rng(seed)
    i_m = np.where(n_m > 0, truth + noise * e * rng.standard_normal(q.size), 0.0)
    i_h = np.where(n_h > 0, truth / rescale - shift + noise * e / rescale * rng.standard_normal(q.size), 0.0)
    return q, truth, (i_m, np.where(n_m > 0, e, 0.0), n_m), (i_h, np.where(n_h > 0, e / rescale, 0.0), n_h)


def test_fit_recovers_rescale_and_shift_exactly_on_exact_data():
    _q, _truth, main, hab = _two_banks()
    use = (main[2] > 0) & (hab[2] > 0)
    s, c = fit_rescale_shift(main[0], main[1], hab[0], hab[1], use, fit_rescale=True, fit_shift=True)
    assert (s, c) == pytest.approx((1.7, -0.01), rel=1e-9)
    # one factor fitted, the other held at its given value
    s, _ = fit_rescale_shift(main[0], main[1], hab[0], hab[1], use, fit_rescale=True, fit_shift=False, shift=-0.01)
    assert s == pytest.approx(1.7, rel=1e-9)
    _, c = fit_rescale_shift(main[0], main[1], hab[0], hab[1], use, fit_rescale=False, fit_shift=True, rescale=1.7)
    assert c == pytest.approx(-0.01, rel=1e-9)


def test_fit_on_noisy_data_is_within_its_errors():
    estimates = []
    for seed in range(20):
        _, _, main, hab = _two_banks(noise=1.0, seed=seed)
        use = (main[2] > 0) & (hab[2] > 0)
        estimates.append(
            fit_rescale_shift(main[0], main[1], hab[0], hab[1], use, fit_rescale=True, fit_shift=False, shift=-0.01)[0]
        )
    assert abs(np.mean(estimates) - 1.7) < 0.01 and np.std(estimates) < 0.03


def test_stitch_uses_main_below_hab_above_and_the_weighted_mean_between():
    q, truth, main, hab = _two_banks()
    overlap = merge_range(q, main[2], hab[2])
    both = (main[2] > 0) & (hab[2] > 0)
    assert overlap == (q[both].min(), q[both].max())
    i, e, source = stitch(q, main, hab, rescale=1.7, shift=-0.01, overlap=overlap)
    assert np.allclose(i, truth)  # exact banks stitch to the truth everywhere
    assert np.all(source[q < 0.12] == 0) and np.all(source[q > 0.3] == 1) and np.all(source[both] == 2)
    j = np.flatnonzero(source == 1)[0]
    assert e[j] == pytest.approx(1.7 * hab[1][j])


def test_stitch_weights_are_the_counts_and_normalisations_summed():
    """Where the banks disagree the stitched value is (C_m + C_h + shift*N_h)/(N_m + N_h/rescale),
    with C = I*N: the HAB's normalisation counts 1/rescale."""
    q = np.array([0.1, 0.2])
    main = (np.array([1.0, 1.0]), np.array([0.1, 0.1]), np.array([3.0, 3.0]))
    hab = (np.array([0.4, 0.4]), np.array([0.05, 0.05]), np.array([2.0, 2.0]))
    i, e, source = stitch(q, main, hab, rescale=2.0, shift=0.1, overlap=(0.0, 1.0))
    c_m, n_m, c_h, n_h = 1.0 * 3.0, 3.0, 0.4 * 2.0, 2.0
    assert i == pytest.approx((c_m + c_h + 0.1 * n_h) / (n_m + n_h / 2.0))  # (3 + 0.8 + 0.2)/4 = 1.0
    assert e == pytest.approx(np.hypot(3.0 * 0.1, 2.0 * 0.05) / (n_m + n_h / 2.0))
    assert source.tolist() == [2, 2]


def test_stitch_with_a_given_range():
    q, truth, main, hab = _two_banks(rescale=2.0, shift=0.0)
    i, _, source = stitch(q, main, hab, rescale=2.0, shift=0.0, overlap=(0.2, 0.25))
    assert np.all(source[(q > 0.12) & (q < 0.2)] == 0)  # both have data, but below the range: main
    assert np.all(source[q > 0.25] == 1)
    assert np.allclose(i, truth)


def test_banks_without_common_bins_are_refused():
    q = np.linspace(0.1, 1, 10)
    n_m, n_h = np.r_[np.ones(5), np.zeros(5)], np.r_[np.zeros(5), np.ones(5)]
    with pytest.raises(ValueError, match="share no Q bin"):
        merge_range(q, n_m, n_h)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_rescale_shift(
            np.ones(10), np.ones(10), np.ones(10), np.ones(10), (n_m > 0) & (n_h > 0), fit_rescale=True, fit_shift=False
        )


# -- sector, line and box masks -----------------------------------------------------------------


def test_sector_mask_with_and_without_mirror():
    phi = np.radians(np.arange(-175, 180, 10))  # pixels every 10 degrees round the beam
    x, y = np.cos(phi), np.sin(phi)
    deg = np.degrees(phi)
    keep = sector_mask(x, y, -30, 30, mirror=False)
    assert set(np.round(deg[keep]).astype(int)) == {-25, -15, -5, 5, 15, 25}
    keep = sector_mask(x, y, -30, 30)
    assert keep.sum() == 12 and set(np.round(deg[keep & (x < 0)]).astype(int)) == {155, 165, 175, -175, -165, -155}
    # a sector through +-180 degrees wraps
    keep = sector_mask(x, y, 160, -160, mirror=False)
    assert set(np.round(deg[keep]).astype(int)) == {165, 175, -175, -165}


def test_line_mask_is_an_arm_from_the_centre_outwards():
    x, y = np.meshgrid(np.linspace(-0.1, 0.1, 20), np.linspace(-0.1, 0.1, 20))  # no pixel on an edge
    x, y = x.ravel(), y.ravel()
    masked = line_mask(x, y, 0.025, 90.0)  # an arm going up, 25 mm wide: |x| <= 12.5 mm, y >= 0
    assert np.array_equal(masked, (np.abs(x) <= 0.0125 + 1e-12) & (y >= -1e-12))
    masked = line_mask(x, y, 0.015, 225.0, x0=0.02, y0=0.0)  # down and to the left from (20 mm, 0)
    d = np.c_[x - 0.02, y]
    along = d @ np.array([-1, -1]) / np.sqrt(2)
    across = d @ np.array([1, -1]) / np.sqrt(2)
    assert np.array_equal(masked, (along >= -1e-12) & (np.abs(across) <= 0.0075 + 1e-12))


# -- gravity ------------------------------------------------------------------------------------


def test_gravity_drop_by_hand():
    # d = g m^2 lambda^2 L^2/(2 h^2): 0.540 mm for 10 Å over 4.151 m
    assert gravity_drop(np.array([10.0]), np.array([4.151]))[0, 0] == pytest.approx(5.3985e-4, rel=1e-4)
    # quadratic in wavelength and in the flight path (with the extra length before the sample)
    d = gravity_drop(np.array([5.0, 10.0]), np.array([2.0]), extra_length=2.0)
    assert d[0, 1] == pytest.approx(4 * d[0, 0]) and d[0, 1] == pytest.approx(
        gravity_drop(np.array([10.0]), np.array([4.0]))[0, 0]
    )


def test_gravity_two_theta():
    lam = np.array([2.0, 10.0])
    drop10 = gravity_drop(lam, np.array([4.0]))[0, 1]
    # a pixel exactly one drop below the beam saw unscattered neutrons at 10 Å
    tt = gravity_two_theta(np.array([0.0, 0.05]), np.array([-drop10, 0.0]), 4.0, lam)
    assert tt[0, 1] == pytest.approx(0.0, abs=1e-9) and tt[0, 0] > 0
    # a pixel on the x axis: 2theta from (x, drop) slightly larger than without gravity
    assert tt[1, 1] == pytest.approx(
        np.arctan2(np.hypot(0.05, gravity_drop(lam, np.array([np.hypot(0.05, 4.0)]))[0, 1]), 4.0)
    )


def test_q1d_with_per_wavelength_angles_equals_per_pixel_angles_when_constant():
    rng = np.random.default_rng(5)
    npix, lam_edges = 50, np.linspace(2, 10, 17)
    s = rng.uniform(1, 10, (npix, 16))
    tt = rng.uniform(0.01, 0.08, npix)
    args = (s, s, np.zeros_like(s), lam_edges, np.ones(16), np.zeros(16))
    q_edges = np.linspace(0.005, 0.3, 30)
    a = q1d(*args, tt, np.ones(npix), np.zeros(npix), q_edges)
    b = q1d(*args, np.repeat(tt[:, None], 16, axis=1), np.ones(npix), np.zeros(npix), q_edges)
    assert np.array_equal(a.intensity, b.intensity) and np.array_equal(a.error, b.error)
    c = q1d(*args, np.repeat(tt[:, None], 16, axis=1), np.ones(npix), np.zeros(npix), q_edges, split=True)
    d = q1d(*args, tt, np.ones(npix), np.zeros(npix), q_edges, split=True)
    assert np.allclose(c.intensity, d.intensity)


def test_qxy_aimed_heights_move_the_pattern_up():
    x, y, l2 = np.array([0.0]), np.array([-0.02]), np.array([np.hypot(0.02, 4.0)])
    lam_edges = np.array([9.0, 11.0])
    args = (
        np.ones((1, 1)),
        np.ones((1, 1)),
        np.zeros((1, 1)),
        lam_edges,
        np.ones(1),
        x,
        y,
        l2,
        np.ones(1),
        0.02,
        0.002,
    )
    below = qxy(*args)
    level = qxy(*args, y_aim=np.zeros((1, 1)))  # aimed at the beam height: Q = 0
    iy_below = np.nonzero(below.intensity)[0][0]
    iy_level = np.nonzero(level.intensity)[0][0]
    assert iy_below < iy_level and level.qy_edges[iy_level] <= 0 < level.qy_edges[iy_level + 1]
