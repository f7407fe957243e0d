"""Synthetic scans with a known truth: thickness -> BF/ADF, beam shift -> CoM/DPC with its
rotation and flip, elliptical distortion -> the ellipse fit, a +1 % εxx step -> strain."""

from __future__ import annotations

import numpy as np
import pytest
from stem4d_helpers import corr, rows_of

from panreduce_stem4d import calibration as cal
from panreduce_stem4d import dpc, pipeline, strain, synthetic

MRAD = 0.5  # mrad per px of the synthetic detector


def _reduce(sim, **kw):
    shape = sim.frames.shape
    calib_kw = {
        k: kw.pop(k)
        for k in list(kw)
        if k in ("ellipse_ring_mrad", "bf_mrad", "adf_mrad", "masks", "strain", "com_mrad", "center_px")
    }
    calib = pipeline.calibrate(rows_of(sim.frames), shape, mrad_per_px=MRAD, **calib_kw)
    part = pipeline.stream(
        rows_of(sim.frames),
        shape,
        calib,
        row0=0,
        row1=shape[0],
        itemsize=4,
        budget_mb=8,
        strain=calib_kw.get("strain", False),
    )
    return calib, part, pipeline.finish(part, calib, **kw)


@pytest.fixture(scope="module")
def scan():
    return synthetic.make_scan(18, 22, 64, rotation_deg=25.0, shift_amplitude_px=2.0)


def test_virtual_bf_and_adf_follow_the_thickness(scan):
    _, _, maps = _reduce(scan, bf_mrad=4.5, adf_mrad=(6.0, 15.5))
    assert corr(maps.images["adf"], scan.thickness) > 0.99
    assert corr(maps.images["bf"], 1 - scan.thickness) > 0.99
    # a thickness map that is NOT what the detectors see fails the same assertion
    assert corr(maps.images["adf"], np.roll(scan.thickness, 5, axis=1)) < 0.9


def _truth_without_plane(sim):
    tx, ty = sim.shift_scan_xy_px
    return tx - cal.fit_descan(tx), ty - cal.fit_descan(ty)


@pytest.mark.parametrize("rotation_deg,flip", [(25.0, False), (-40.0, True)])
def test_com_rotation_and_flip_recovered(rotation_deg, flip):
    sim = synthetic.make_scan(18, 22, 64, rotation_deg=rotation_deg, flip=flip)
    _, _, maps = _reduce(sim, bf_mrad=4.5, flip=flip)
    assert maps.fitted["rotation_deg"] == pytest.approx(rotation_deg, abs=0.5)
    tx, ty = _truth_without_plane(sim)
    fx, fy = maps.images["com_x"] / MRAD, maps.images["com_y"] / MRAD  # back to px
    rms = float(np.sqrt(np.mean((fx - tx) ** 2 + (fy - ty) ** 2)))
    assert rms < 0.05
    assert corr(fx, tx) > 0.99 and corr(fy, ty) > 0.99  # the sign: not a mirrored field
    # the wrong flip leaves a curl: the field is no longer a gradient
    _, _, wrong = _reduce(sim, bf_mrad=4.5, flip=not flip)
    assert wrong.fitted["curl_rms"] > 5 * maps.fitted["curl_rms"]


def test_given_rotation_is_used_and_the_other_branch_negates_the_field(scan):
    _, _, found = _reduce(scan, bf_mrad=4.5)
    _, _, other = _reduce(scan, bf_mrad=4.5, rotation_deg=found.fitted["rotation_deg"] + 180.0)
    assert other.fitted["rotation_source"] == "given"
    np.testing.assert_allclose(other.images["com_x"], -found.images["com_x"], atol=1e-9)


def test_descan_plane_is_removed(scan):
    _, _, none = _reduce(scan, bf_mrad=4.5, descan="none", rotation_deg=25.0)
    _, _, plane = _reduce(scan, bf_mrad=4.5, descan="plane", rotation_deg=25.0)
    tx, _ = _truth_without_plane(scan)
    err_none = np.sqrt(np.mean((none.images["com_x"] / MRAD - tx) ** 2))
    err_plane = np.sqrt(np.mean((plane.images["com_x"] / MRAD - tx) ** 2))
    assert err_plane < 0.05 < err_none


def test_dpc_phase_integrates_the_deflection(scan):
    _, _, maps = _reduce(scan, bf_mrad=4.5, step_nm=(0.2, 0.2), energy_kev=200.0)
    phase = maps.images["dpc_phase"]
    # the gradient of the phase is 2π θ / λ back again
    k = 2 * np.pi / cal.electron_wavelength_nm(200.0) * 1e-3
    gx = np.gradient(phase, 0.2, axis=1) / k
    inner = (slice(2, -2), slice(2, -2))
    assert corr(gx[inner], maps.images["com_x"][inner]) > 0.98


def test_ellipse_axis_ratio_angle_and_residual():
    sim = synthetic.make_scan(10, 10, 64, axis_ratio=1.05, ellipse_theta_deg=30.0, shift_amplitude_px=1.0)
    calib, _, maps = _reduce(sim, ellipse_ring_mrad=(6.0, 14.0), bf_mrad=4.5)
    el = calib.ellipse
    assert el.axis_ratio == pytest.approx(1.05, abs=0.005)
    assert el.theta_deg == pytest.approx(30.0, abs=2.0)
    assert abs(calib.residual_ellipticity) < 0.003
    # the corrected CoM matches the truth as well
    tx, ty = _truth_without_plane(sim)
    rms = np.sqrt(np.mean((maps.images["com_x"] / MRAD - tx) ** 2 + (maps.images["com_y"] / MRAD - ty) ** 2))
    assert rms < 0.05


def test_ellipse_fit_of_a_ring_at_another_angle_and_ratio():
    yy, xx = np.indices((96, 96), dtype=float)
    el = cal.Ellipse(47.3, 49.1, 30.0 * 1.08, 30.0, -62.0)
    a = el.affine_xy()
    ux = a[0, 0] * (xx - el.x0) + a[0, 1] * (yy - el.y0)
    uy = a[1, 0] * (xx - el.x0) + a[1, 1] * (yy - el.y0)
    ring = np.exp(-0.5 * ((np.hypot(ux, uy) - 30.0 * np.sqrt(1.08)) / 2.5) ** 2)
    fit = cal.fit_ellipse_ring(ring, (48.0, 48.0), 20, 42)
    assert fit.axis_ratio == pytest.approx(1.08, abs=0.005)
    assert fit.theta_deg == pytest.approx(-62.0, abs=2.0)
    assert (fit.x0, fit.y0) == pytest.approx((47.3, 49.1), abs=0.05)


def test_strain_step_of_one_percent():
    th = np.radians(17.0)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    sim = synthetic.make_scan(
        6,
        12,
        128,
        disc_radius_px=5,
        ring_radius_px=300,
        shift_amplitude_px=0.5,
        lattice=rot @ np.diag([21.0, 24.0]),
        strain_exx_right=0.01,
        bragg_radius_px=5,
    )
    _, part, maps = _reduce(sim, strain=True, bf_mrad=3.0, strain_reference=(0, 6, 0, 6))
    exx, eyy, exy = (maps.images[k] for k in ("strain_exx", "strain_eyy", "strain_exy"))
    assert np.isfinite(exx).all()
    step = np.nanmean(exx[:, 6:]) - np.nanmean(exx[:, :6])
    assert step == pytest.approx(0.01, abs=0.0005)
    assert np.abs(exx[:, 6:] - 0.01).max() < 0.0005 and np.abs(exx[:, :6]).max() < 0.0005
    assert np.sqrt(np.mean(eyy**2)) < 0.002 and np.sqrt(np.mean(exy**2)) < 0.002
    assert part.n_discs.min() >= 6


def test_strain_of_a_pure_rotation_is_zero_strain():
    ref = np.array([[20.0, 3.0], [-2.0, 22.0]])
    t = np.radians(1.0)
    r = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    out = strain.strain_from_bases((r @ ref)[None], ref)
    assert abs(out["exx"][0]) < 2e-4 and abs(out["eyy"][0]) < 2e-4
    assert out["rotation"][0] == pytest.approx(t, rel=1e-3)


def test_curl_free_field_has_no_curl_and_rotated_one_has():
    sim = synthetic.make_scan(16, 16, 32, disc_radius_px=3, ring_radius_px=10)
    sx, sy = sim.shift_scan_xy_px
    assert np.sqrt(np.mean(dpc.curl(sx, sy)[2:-2, 2:-2] ** 2)) < 0.05 * np.sqrt(np.mean(dpc.divergence(sx, sy) ** 2))
    rx, ry = dpc.to_scan_frame(sx, sy, 90.0, False)
    assert np.sqrt(np.mean(dpc.curl(rx, ry) ** 2)) > 0.5 * np.sqrt(np.mean(dpc.divergence(sx, sy) ** 2))


@pytest.mark.parametrize("flip", [False, True])
def test_strain_step_in_the_scan_frame_through_a_30_degree_rotation(flip):
    """A +1 % εxx step along the scan's x, seen on the detector turned by 30° (and flipped):
    the scan-frame maps recover it from the CoM's minimum-curl rotation; the detector-frame
    maps show the turned tensor instead (εxx' = 0.01 cos²30°, εxy' = ∓0.01 sin30° cos30°)."""
    th = np.radians(11.0)
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    sim = synthetic.make_scan(
        6,
        12,
        128,
        disc_radius_px=5,
        ring_radius_px=300,
        shift_amplitude_px=1.0,
        rotation_deg=30.0,
        flip=flip,
        lattice=rot @ np.diag([21.0, 24.0]),
        strain_exx_right=0.01,
        strain_frame="scan",
        bragg_radius_px=5,
    )
    shape = sim.frames.shape
    calib = pipeline.calibrate(rows_of(sim.frames), shape, mrad_per_px=MRAD, bf_mrad=3.0, strain=True)
    part = pipeline.stream(
        rows_of(sim.frames), shape, calib, row0=0, row1=shape[0], itemsize=4, budget_mb=8, strain=True
    )
    maps = pipeline.finish(part, calib, strain_reference=(0, 6, 0, 6), flip=flip)
    assert maps.fitted["strain_frame"] == "scan"
    assert maps.fitted["rotation_deg"] % 180 == pytest.approx(30.0, abs=2.0)
    exx, eyy, exy = (maps.images[k] for k in ("strain_exx", "strain_eyy", "strain_exy"))
    assert np.isfinite(exx).all()
    assert np.nanmean(exx[:, 6:]) - np.nanmean(exx[:, :6]) == pytest.approx(0.01, abs=0.0005)
    assert np.abs(exx[:, 6:] - 0.01).max() < 0.0005 and np.abs(exx[:, :6]).max() < 0.0005
    assert np.sqrt(np.mean(eyy**2)) < 0.002 and np.sqrt(np.mean(exy**2)) < 0.002
    det = pipeline.finish(part, calib, strain_reference=(0, 6, 0, 6), flip=flip, strain_frame="detector")
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    sign = 1.0 if flip else -1.0  # F_det = M^-1 F_scan M
    assert np.nanmean(det.images["strain_exx"][:, 6:]) == pytest.approx(0.01 * c * c, abs=0.0005)
    assert np.nanmean(det.images["strain_exy"][:, 6:]) == pytest.approx(sign * 0.01 * s * c, abs=0.0005)
