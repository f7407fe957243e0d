"""peakfinder8: against a literal loop-by-loop version of the published steps, on a
synthetic ground truth (recall, precision, positions, intensities), the pixel-count,
panel and mask rules, and the real CSPAD and Rayonix hits."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from sx_synthetic import GEOM, SHAPE, background, reference_peakfinder8, render, spots

from panreduce_serial_crystallography.frames import bad_from_mask_array
from panreduce_serial_crystallography.geometry import bad_pixel_mask, parse_geometry, pixel_maps
from panreduce_serial_crystallography.peakfinder8 import layout, peakfinder8, radial_thresholds

PF = {"threshold": 60.0, "min_snr": 5.0, "min_pix_count": 2, "max_pix_count": 30, "local_bg_radius": 3}


def _layout(geom_text=GEOM, mask=None, **kw):
    det = parse_geometry(geom_text)
    maps = pixel_maps(det)
    bad = bad_pixel_mask(det, maps) | (np.zeros(det.shape, bool) if mask is None else mask)
    slices = [(slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1)) for p in det.panels]
    return det, maps, bad, layout(maps.r_px, maps.panel_id, bad, slices, **kw)


def _match(found_fs, found_ss, true, tol=1.5):
    """Indices of found peaks matched to true centres (nearest within tol)."""
    pairs = []
    for k, (f, s) in enumerate(true):
        d = np.hypot(found_fs - f, found_ss - s)
        if d.size and d.min() < tol:
            pairs.append((k, int(d.argmin())))
    return pairs


def test_radial_statistics_are_sigma_clipped():
    rng = np.random.default_rng(1)
    _, _maps, _bad, lay = _layout()
    flat = np.full(SHAPE, 100.0) + rng.normal(0, 5, SHAPE)
    flat[50, 50] = 1e6  # one outlier must not move its bin's statistics
    upper, mean, sigma = radial_thresholds(flat, lay, threshold=0, min_snr=3)
    b = lay.radius_bin[50, 50]
    assert mean[b] == pytest.approx(100, abs=3) and sigma[b] == pytest.approx(5, rel=0.4)
    assert upper[b] == pytest.approx(mean[b] + 3 * sigma[b])
    # the absolute threshold is a floor, empty bins never trigger
    upper, _, _ = radial_thresholds(flat, lay, threshold=1000, min_snr=3)
    assert (upper[np.isfinite(upper)] >= 1000).all()
    assert np.isinf(upper[lay.n_bins - 1]) or lay.counts[-1] > 0


@pytest.mark.parametrize("compiled", [True, False], ids=["numba", "numpy"])
def test_equals_the_literal_algorithm(compiled):
    rng = np.random.default_rng(7)
    centres = spots(rng, 25)
    img = render(centres, rng.uniform(80, 600, len(centres)), rng=rng)
    img[10:12, 100:103] += 2000  # a 6-pixel blob
    img[96 - 1, 40] += 800  # spots touching the panel boundary from both sides
    img[96, 40] += 800
    _det, maps, bad, lay = _layout()
    got = peakfinder8(img, lay, **PF, compiled=compiled)
    ref = reference_peakfinder8(img, maps.r_px, maps.panel_id, bad, **PF)
    assert len(got) == len(ref) >= 20
    ref = np.array(ref)
    np.testing.assert_allclose(got.fs, ref[:, 0], atol=1e-4)
    np.testing.assert_allclose(got.ss, ref[:, 1], atol=1e-4)
    np.testing.assert_allclose(got.intensity, ref[:, 2], rtol=1e-4)
    np.testing.assert_array_equal(got.n_pixels, ref[:, 3])


def test_recall_precision_positions_and_intensity():
    rng = np.random.default_rng(3)
    _, _, _, lay = _layout()
    recall, precision, err, ratio = [], [], [], []
    for _ in range(6):
        centres = spots(rng, 30)
        amps = rng.uniform(150, 1500, len(centres))
        img = render(centres, amps, rng=rng)
        pk = peakfinder8(img, lay, **PF)
        pairs = _match(pk.fs, pk.ss, centres)
        recall.append(len(pairs) / len(centres))
        precision.append(len(pairs) / max(len(pk), 1))
        for k, j in pairs:
            err.append(np.hypot(pk.fs[j] - centres[k][0], pk.ss[j] - centres[k][1]))
            # integrated Gaussian volume 2π σ² A, of which the pixels above threshold hold most
            ratio.append(pk.intensity[j] / (2 * np.pi * 0.8**2 * amps[k]))
    assert np.mean(recall) > 0.95 and np.mean(precision) > 0.97
    # centroids of the thresholded pixels: within a quarter pixel (median)
    assert np.median(err) < 0.25
    assert 0.6 < np.median(ratio) < 1.05


def test_pixel_count_limits_panels_and_masks():
    _, _, _, lay = _layout()
    img = background()
    img[40:50, 40:50] += 3000  # 100 pixels: over max_pix_count
    img[20, 80] += 3000  # a single pixel: under min_pix_count
    img[70:72, 30:32] += 3000  # 4 pixels: a peak
    pk = peakfinder8(img, lay, **PF)
    assert len(pk) == 1 and pk.n_pixels[0] == 4
    assert pk.fs[0] == pytest.approx(30.5) and pk.ss[0] == pytest.approx(70.5)
    # a spot split by the panel boundary (ss 95 | 96) is two candidates, never one
    img = background()
    img[94:96, 60:62] += 3000
    img[96:98, 60:62] += 3000
    pk = peakfinder8(img, lay, **PF)
    assert sorted(pk.panel.tolist()) == [0, 1] and (pk.n_pixels == 4).all()
    # masked pixels are never peaks
    mask = np.zeros(SHAPE, bool)
    mask[70:72, 30:32] = True
    _, _, _, masked = _layout(mask=mask)
    img = background()
    img[70:72, 30:32] += 3000
    assert len(peakfinder8(img, masked, **PF)) == 0
    # radius limits: the same spot outside max_res is ignored
    _, maps, _, lay2 = _layout(max_res=10.0)
    assert maps.r_px[70, 30] > 10
    assert len(peakfinder8(img, lay2, **PF)) == 0
    with pytest.raises(ValueError, match="shape"):
        peakfinder8(np.zeros((10, 10)), lay, **PF)


def _same_peaks(a, b):
    assert len(a) == len(b)
    for name in ("fs", "ss", "n_pixels", "panel"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for name in ("intensity", "sigma", "max_value", "snr"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-6, err_msg=name)


def test_compiled_path_where_the_clipping_band_breaks():
    """Bins whose first-pass σ is inflated by a bright spot (few pixels near the beam)
    leave the band shortcut and are clipped from all their pixels; a low min_snr makes
    every bin do so. The compiled path still equals the numpy one and the literal loop."""
    rng = np.random.default_rng(11)
    _det, maps, bad, lay = _layout()
    centres = spots(rng, 20)
    img = render(centres, rng.uniform(150, 900, len(centres)), rng=rng)
    near = np.argwhere((maps.r_px > 3) & (maps.r_px < 8) & ~bad)
    for ss, fs in near[:: max(1, len(near) // 3)][:3]:
        img[ss, fs] += 5000  # a bright pixel in a bin of a few dozen
    for kw in (PF, {**PF, "min_snr": 1.2, "threshold": 0.0, "max_pix_count": 10_000}):
        a = peakfinder8(img, lay, **kw)
        b = peakfinder8(img, lay, **kw, compiled=False)
        _same_peaks(a, b)
        if kw is PF:
            ref = np.array(reference_peakfinder8(img, maps.r_px, maps.panel_id, bad, **kw))
            assert len(a) == len(ref) >= 15
            np.testing.assert_allclose(a.fs, ref[:, 0], atol=1e-4)
    # at most max_n_peaks, the first ones found
    few = peakfinder8(img, lay, **PF, max_n_peaks=5)
    _same_peaks(few, peakfinder8(img, lay, **PF, max_n_peaks=5, compiled=False))
    np.testing.assert_array_equal(few.fs, peakfinder8(img, lay, **PF).fs[:5])


def test_mask_bits():
    m = np.array([0, 1, 2, 3], np.uint16)
    assert bad_from_mask_array(m, mask_good=0, mask_bad=0xFFFF).tolist() == [False, True, True, True]
    assert bad_from_mask_array(m, mask_good=1, mask_bad=0).tolist() == [True, False, True, False]
    assert bad_from_mask_array(m, mask_good=1, mask_bad=2).tolist() == [True, False, True, True]


def _real(dataset, frames, geom):
    det = parse_geometry(dataset(geom).read_text())
    maps = pixel_maps(det)
    with h5py.File(dataset(frames), "r") as f:
        data = f["entry_1/data_1/data"][()]
        bad = bad_from_mask_array(f["entry_1/data_1/mask"][()], mask_good=0, mask_bad=0xFFFF)
    bad |= bad_pixel_mask(det, maps)
    slices = [(slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1)) for p in det.panels]
    return data, bad, layout(maps.r_px, maps.panel_id, bad, slices)


@pytest.mark.data
def test_real_cspad_hits(dataset):
    data, bad, lay = _real(
        dataset,
        "sfx-thermolysin-cspad/thermolysin_cspad_4hits.cxi",
        "sfx-thermolysin-cspad/thermolysin_cspad_derived.geom",
    )
    counts = []
    positions = []
    for frame in data:
        pk = peakfinder8(frame, lay, threshold=200, min_snr=6, min_pix_count=2, max_pix_count=30, local_bg_radius=3)
        _same_peaks(
            pk,
            peakfinder8(
                frame,
                lay,
                threshold=200,
                min_snr=6,
                min_pix_count=2,
                max_pix_count=30,
                local_bg_radius=3,
                compiled=False,
            ),
        )
        counts.append(len(pk))
        assert (pk.snr >= 6).all() and ((pk.n_pixels >= 2) & (pk.n_pixels <= 30)).all()
        ss, fs = np.rint(pk.ss).astype(int), np.rint(pk.fs).astype(int)
        assert not bad[ss, fs].any()
        assert (frame[ss, fs] > 200).mean() > 0.9  # peak centres are bright pixels
        positions.append(set(zip(fs.tolist(), ss.tolist(), strict=True)))
    # four indexable hits: tens to a couple of hundred spots each
    assert all(50 <= c <= 250 for c in counts), counts
    # Bragg spots move from shot to shot: few positions repeat (no hot-pixel lists)
    repeated = set.intersection(*positions)
    assert len(repeated) <= 3


@pytest.mark.data
def test_real_rayonix_hit(dataset):
    data, _bad, lay = _real(
        dataset, "sfx-rayonix-mfx/rayonix_mfx_hit.h5", "sfx-rayonix-mfx/rayonix_mfx_hit_derived.geom"
    )
    frame = data[0]
    kw = {"threshold": 100, "min_snr": 5, "min_pix_count": 2, "max_pix_count": 50, "local_bg_radius": 3}
    pk = peakfinder8(frame, lay, **kw)
    _same_peaks(pk, peakfinder8(frame, lay, **kw, compiled=False))
    # weak spots on kapton and solvent rings: still a hit, without the rings themselves
    assert 20 <= len(pk) <= 400, len(pk)
    r = lay.radius_bin[np.rint(pk.ss).astype(int), np.rint(pk.fs).astype(int)]
    hist = np.bincount(r // 20)
    assert hist.max() < 0.3 * len(pk)  # not all on one ring
