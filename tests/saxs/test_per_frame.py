"""Masks per frame (a module dying and zingers in a later frame) and 2-D NXcanSAS for
every frame of a series, read back by sasdata."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
from conftest import run_saxs
from synthetic import Geo, guinier_sphere, write_tiff

GEO = Geo(shape=(120, 140), pixel_um=172.0, distance_mm=1000.0, wavelength_A=1.0, cx=70.3, cy=60.6)
LAW = GEO.image(lambda q: guinier_sphere(q, background=10))
DEAD = (slice(5, 45), slice(85, 135))  # a module reading -1 from the second frame on
ZINGERS = [(100, 20), (20, 20), (90, 120), (60, 100), (15, 70), (110, 60)]


def _frames(tmp_path):
    second = 2 * LAW
    second[DEAD] = -1
    third = 3 * LAW
    for r, c in ZINGERS:
        third[r, c] = 1e5
    return [write_tiff(tmp_path / f"run_{k:04d}.tiff", img) for k, img in enumerate((LAW, second, third))]


def _curves(path):
    with h5py.File(path) as f:
        names = sorted(k for k in f if k.startswith("sasentry"))
        return [(f[n]["sasdata/Q"][()], f[n]["sasdata/I"][()]) for n in names]


def test_masks_per_frame_and_2d_images_of_every_frame(tmp_path):
    files = _frames(tmp_path)
    params = {
        **GEO.params(),
        "mode": "azimuthal",
        "integration.q_bins": 40,
        "masks.beamstop": "none",
        "masks.hot_pixel_sigma": 8,
    }
    _, plain = run_saxs(files, params, tmp_path / "plain")
    summary, outputs = run_saxs(files, {**params, "masks.per_frame": True, "outputs.image_2d": True}, tmp_path / "own")
    assert summary["masked_pixels"] == 0  # the first frame is clean
    own, fixed = _curves(outputs["saxs_iq.h5"]), _curves(plain["saxs_iq.h5"])
    # the first frame is masked the same either way
    assert np.allclose(own[0][1], fixed[0][1], rtol=1e-6)
    # its own masks leave out the dead module and the zingers: exactly k times the first frame
    # within the variation of I over a bin (the pixels left out are not where the others are)
    for k in (1, 2):
        q, i = own[k]
        assert np.array_equal(q, own[0][0])
        assert np.allclose(i / own[0][1], k + 1, rtol=0.005), k
    # with the first frame's masks only, the dead module and the zingers spoil those frames
    assert np.max(np.abs(fixed[1][1] / fixed[0][1] - 2)) > 0.2
    assert np.max(fixed[2][1] / fixed[0][1] - 3) > 1.0

    # 2-D NXcanSAS: one SASentry per frame, each with its own mask
    with h5py.File(outputs["image_2d.h5"]) as f:
        names = sorted(k for k in f if k.startswith("sasentry"))
        assert len(names) == 3 and f.attrs["default"] == names[0]
        images = [f[n]["sasdata/I"][()] for n in names]
        masks = [f[n]["sasdata/mask"][()].astype(bool) for n in names]
        qx, qy = f[names[2]]["sasdata/Qx"][()], f[names[2]]["sasdata/Qy"][()]
    assert np.allclose(np.hypot(qx, qy), GEO.q, rtol=1e-4)
    expected = guinier_sphere(GEO.q, background=10)
    for k, (img, m) in enumerate(zip(images, masks, strict=True)):
        assert np.allclose(img[~m], (k + 1) * expected[~m], rtol=1e-4), k
    assert not masks[0].any() and masks[1][DEAD].all() and masks[1].sum() == masks[1][DEAD].size
    assert {tuple(p) for p in np.argwhere(masks[2])} == set(ZINGERS)

    loader = pytest.importorskip("sasdata.dataloader.loader")
    logging.getLogger("sasdata").setLevel(logging.ERROR)
    read = loader.Loader().load(str(outputs["image_2d.h5"]))
    assert len(read) == 3
    # sasdata keeps the pixels as stored (masked ones as 0), its mask True = valid
    for k, data in enumerate(read):
        valid = ~masks[k].ravel()
        assert data.data.size == GEO.q.size
        assert np.allclose(data.data[valid], (k + 1) * expected.ravel()[valid], rtol=1e-4), k
        assert np.allclose(np.hypot(data.qx_data, data.qy_data), GEO.q.ravel(), rtol=1e-4)
    # the 1-D file: later entries hard-link the first one's instrument and process; sasdata
    # sees them in every entry, with each frame's own curve
    curves = loader.Loader().load(str(outputs["saxs_iq.h5"]))
    assert len(curves) == 3
    for data, (q, i) in zip(curves, own, strict=True):
        assert np.allclose(data.x, q) and np.allclose(data.y, i)
        assert data.source.wavelength == pytest.approx(1.0)
        assert data.detector[0].distance == pytest.approx(1.0)
    with h5py.File(outputs["saxs_iq.h5"]) as f:
        names = sorted(k for k in f if k.startswith("sasentry"))
        assert all(f[n]["sasprocess"] == f[names[0]]["sasprocess"] for n in names)
