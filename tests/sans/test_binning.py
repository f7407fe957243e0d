"""Rebin strings and count-conserving rebinning, against hand-computed answers."""

import numpy as np
import pytest

from panreduce_sans.binning import bin_centres, rebin_counts, rebin_distribution, rebin_edges


def test_linear_rebin_string_keeps_a_short_last_bin():
    # 0 -> 1 in 0.3: at x=.6, .6 + 1.25*.3 = .975 <= 1 -> add .9; at .9, .9 + .375 > 1 -> append 1
    assert np.allclose(rebin_edges([0, 0.3, 1.0]), [0, 0.3, 0.6, 0.9, 1.0])
    # the 1.25 rule merges a tiny remainder into the previous bin: 0 -> 1.05 in 0.5
    assert np.allclose(rebin_edges([0, 0.5, 1.05]), [0, 0.5, 1.05])


def test_fact_sheet_wavelength_grid():
    edges = rebin_edges([2.2, -0.035, 10.0])
    assert edges.size - 1 == 44
    assert edges[0] == 2.2 and edges[-1] == 10.0
    assert edges[-2] == pytest.approx(9.6573, abs=1e-4)
    assert np.allclose(edges[1:-1] / edges[:-2], 1.035)


def test_fact_sheet_q_grid():
    edges = rebin_edges([0.008, 0.002, 0.08, -0.05, 0.285])
    assert np.allclose(edges[:37], np.linspace(0.008, 0.08, 37))
    assert np.allclose(edges[37:-1], 0.08 * 1.05 ** np.arange(1, edges.size - 37))
    assert edges[-2] == pytest.approx(0.27091, abs=1e-5) and edges[-1] == 0.285
    assert edges.size - 1 == 62


@pytest.mark.parametrize("bad", [[1, 0.1], [1, 0, 2], [2, 0.1, 1], [0, -0.1, 1]])
def test_bad_rebin_strings_are_refused(bad):
    with pytest.raises(ValueError):
        rebin_edges(bad)


def test_proportional_rebin_by_hand():
    # old bins [0,1] 10 counts, [1,2] 20 counts -> new [0.5, 1.5]: 5 + 10 = 15
    y, v, m = rebin_counts(np.array([0.0, 1, 2]), np.array([10.0, 20]), np.array([10.0, 20]), np.array([0.5, 1.5]))
    assert y == pytest.approx([15.0])
    assert v == pytest.approx([15.0])  # E^2 * overlap / width
    assert m == pytest.approx([0.0])


def test_rebin_conserves_counts_and_variance():
    rng = np.random.default_rng(1)
    edges_in = np.cumsum(rng.uniform(0.5, 1.5, 51))
    y = rng.poisson(100, (3, 50)).astype(float)
    edges_out = np.linspace(edges_in[0] - 1, edges_in[-1] + 1, 17)  # covers everything
    yo, vo, _ = rebin_counts(edges_in, y, y, edges_out)
    assert yo.sum(axis=1) == pytest.approx(y.sum(axis=1))
    assert vo.sum(axis=1) == pytest.approx(y.sum(axis=1))
    # a sub-range keeps exactly the overlapping fraction
    yo2, _, _ = rebin_counts(edges_in, y[0], y[0], edges_in[10:21])
    assert yo2 == pytest.approx(y[0, 10:20])


def test_scaled_rows_equal_rebinning_each_row_on_its_own_axis():
    rng = np.random.default_rng(2)
    tof = np.geomspace(3500, 43500, 40)
    y = rng.poisson(50, (4, 39)).astype(float)
    scale = np.array([1e-3, 1.1e-3, 0.9e-3, 1.3e-3])
    out = np.linspace(3.0, 40.0, 12)
    ys, vs, _ = rebin_counts(tof, y, 2 * y, out, scale=scale)
    for r in range(4):
        yr, vr, _ = rebin_counts(tof * scale[r], y[r], 2 * y[r], out)
        assert ys[r] == pytest.approx(yr)
        assert vs[r] == pytest.approx(vr)


def test_masked_fraction_is_the_masked_width_share():
    edges = np.array([0.0, 1, 2, 3, 4])
    y = np.ones(4)
    masked = np.array([False, True, False, False])
    # new bin [0.5, 2.5]: masked old bin [1,2] covers 1 of its 2 units
    _, _, m = rebin_counts(edges, y, y, np.array([0.5, 2.5, 4.0]), masked=masked)
    assert m == pytest.approx([0.5, 0.0])


def test_distribution_rebin_is_a_width_weighted_average():
    edges = np.array([0.0, 1.0, 3.0])
    values = np.array([2.0, 5.0])  # per unit x
    out, err = rebin_distribution(edges, values, np.array([1.0, 1.0]), np.array([0.0, 2.0]))
    # (2*1 + 5*1)/2
    assert out == pytest.approx([3.5])
    assert np.all(err > 0)


def test_bin_centres():
    assert bin_centres(np.array([1.0, 2.0, 4.0])) == pytest.approx([1.5, 3.0])
