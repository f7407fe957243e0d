"""Segmentation and quantification on volumes with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from panreduce_tomography import segment


def test_spheres_counted_and_measured():
    z, y, x = np.mgrid[0:40, 0:60, 0:60]
    vol = np.zeros((40, 60, 60), np.float32)
    spheres = [((20, 15, 15), 6), ((20, 45, 20), 4), ((12, 30, 45), 8)]
    for (cz, cy, cx), r in spheres:
        vol[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = 1.0
    vol += np.random.default_rng(0).normal(0, 0.1, vol.shape).astype(np.float32)
    vol[0, 0, 0] = 5.0  # a single hot voxel: below min_voxels, not an object
    summary, rows = segment.quantify(vol, min_voxels=5, voxel_size=2.0)
    assert summary["object_count"] == 3
    assert 0.3 < summary["threshold"] < 0.7  # Otsu between the two levels
    vols = sorted(r["voxels"] for r in rows)
    for got, r in zip(vols, sorted(r for _, r in spheres), strict=True):
        assert got == pytest.approx(4 / 3 * np.pi * r**3, rel=0.12)
    true_frac = sum(4 / 3 * np.pi * r**3 for _, r in spheres) / vol.size
    assert summary["volume_fraction"] == pytest.approx(true_frac, rel=0.1)
    assert summary["porosity"] == pytest.approx(1 - summary["volume_fraction"])
    big = max(rows, key=lambda r: r["voxels"])
    assert (big["centroid_z"], big["centroid_y"], big["centroid_x"]) == pytest.approx((12, 30, 45), abs=0.3)
    assert big["volume"] == pytest.approx(big["voxels"] * 8.0)
    assert big["equivalent_diameter"] == pytest.approx(16 * 2.0, rel=0.05)
    hist = segment.size_histogram(rows, bins=4)
    assert sum(h["count"] for h in hist) == 3
    text = segment.to_csv(rows)
    assert text.splitlines()[0].startswith("label,voxels,volume") and len(text.splitlines()) == 4


def test_mask_limits_the_analysed_region():
    vol = np.zeros((4, 10, 10), np.float32)
    vol[:, :5, :] = 1.0
    vol[:, :, 8:] = 1.0  # outside the mask: not counted
    mask = np.ones((10, 10), bool)
    mask[:, 8:] = False
    summary, _ = segment.quantify(vol, threshold=0.5, mask=np.broadcast_to(mask, vol.shape))
    assert summary["volume_fraction"] == pytest.approx(40 / 80)
    assert segment.quantify(vol, threshold=0.5)[0]["volume_fraction"] == pytest.approx(60 / 100)
