"""Automatic rotation centre: known off-centre axes of analytic phantoms with noise,
rings and zingers (within 0.5 px), and the real APS tooth scan (about 295 px)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from tomo_synthetic import phantom_scan

from panreduce_tomography import centre
from panreduce_tomography import corrections as corr
from panreduce_tomography import phantom as ph


def _sino(scan, row=0):
    norm = corr.flat_field(scan["data"], scan["darks"].mean(0), scan["flats"].mean(0))
    return corr.minus_log(norm)[:, row]


@pytest.mark.parametrize(
    ("n", "n_angles", "offset", "seed"), [(64, 90, 3.3, 1), (96, 150, -5.8, 2), (128, 181, 0.45, 3), (96, 120, 7.25, 4)]
)
def test_shepp_logan_centre_within_half_pixel(n, n_angles, offset, seed):
    scan = phantom_scan(n=n, n_angles=n_angles, n_rows=1, offset=offset, seed=seed, rings=0.02, zingers=1e-3)
    found = centre.find_center_vo(_sino(scan), scan["angles"])
    assert abs(found - scan["center"]) < 0.5, (found, scan["center"])


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_random_ellipsoids_centre_within_half_pixel(seed):
    rng = np.random.default_rng(seed)
    n = 96
    ell = ph.random_ellipsoids(7, 0.4 * n, rng=rng, value_range=(0.005, 0.03), z_scale=0.0)
    offset = float(rng.uniform(-6, 6))
    scan = phantom_scan(n=n, n_angles=140, n_rows=1, offset=offset, seed=seed, rings=0.02, ellipsoids=ell)
    found = centre.find_center_vo(_sino(scan), scan["angles"])
    assert abs(found - scan["center"]) < 0.5, (found, scan["center"])


def test_metric_is_smallest_at_the_true_centre():
    scan = phantom_scan(n=64, n_angles=100, n_rows=1, offset=2.0, seed=0, flux=1e6)
    li = scan["line_integrals"][:, 0]
    cs = scan["center"] + np.array([-4.0, -1.0, 0.0, 1.0, 4.0])
    m = centre.vo_metric(li, cs)
    assert np.argmin(m) == 2 and m[0] > m[1] > m[2] < m[3] < m[4]


def test_360_degree_scan_uses_the_first_half_turn():
    scan = phantom_scan(n=64, n_angles=90, n_rows=1, offset=-3.1, seed=6)
    ell = scan["ellipsoids"]
    angles = np.linspace(0, 2 * np.pi, 180, endpoint=False)
    li = ph.sinogram(ell, angles, 64, scan["center"])
    assert abs(centre.find_center_vo(li, angles) - scan["center"]) < 0.5


@pytest.mark.data
def test_tooth_centre(dataset):
    with h5py.File(dataset("tomo/tooth/tooth.h5")) as f:
        data = f["exchange/data"][()]
        dark = f["exchange/data_dark"][()].mean(0)
        flat = f["exchange/data_white"][()].mean(0)
        theta = np.deg2rad(f["exchange/theta"][()])
    sino = corr.minus_log(corr.flat_field(data, dark, flat))[:, 0]
    found = centre.find_center_vo(sino, theta)
    assert 294.5 < found < 296.5, found
