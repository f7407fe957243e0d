"""CrystFEL geometry: the real .geom files of five detectors, pixel maps and bad regions."""

from __future__ import annotations

import numpy as np
import pytest
from sx_synthetic import GEOM

from panreduce_serial_crystallography.geometry import (
    GeometryError,
    bad_pixel_mask,
    parse_geometry,
    parse_vector,
    pixel_maps,
    resolution_map,
)


def test_vectors():
    assert parse_vector("x") == (1.0, 0.0, 0.0)
    assert parse_vector("-y") == (0.0, -1.0, 0.0)
    assert parse_vector("-0.003632x +0.999993y") == pytest.approx((-0.003632, 0.999993, 0.0))
    assert parse_vector("+1.0x -2e-3y +0.1z") == pytest.approx((1.0, -0.002, 0.1))
    for bad in ("", "q", "1.0", "xx2"):
        with pytest.raises(GeometryError):
            parse_vector(bad)


@pytest.mark.data
def test_cspad_derived_geometry(dataset):
    det = parse_geometry(dataset("sfx-thermolysin-cspad/thermolysin_cspad_derived.geom").read_text())
    assert len(det.panels) == 64 and det.shape == (1480, 1552)
    assert det.photon_energy == "/LCLS/photon_energy_eV"
    assert det.clen == pytest.approx(0.130106633)
    assert det.data_path == "/entry_1/data_1/data" and det.mask_path == "/entry_1/data_1/mask"
    assert det.dims == ("%", "ss", "fs")
    maps = pixel_maps(det)
    assert (maps.panel_id >= 0).all()  # 64 ASICs of 185 × 194 tile the slab
    # no two pixels of different ASICs share a lab position (1-pixel cells)
    cells = np.rint(maps.x_px).astype(int) * 100_000 + np.rint(maps.y_px).astype(int)
    assert np.unique(cells).size > 0.99 * cells.size
    # the beam is inside the central hole: the nearest pixel a few tens of pixels away
    assert 5 < maps.r_px.min() < 60 and maps.r_px.max() < 1200
    # the corner of the detector at 9.74 keV, 130 mm: 1/d there
    s = resolution_map(maps, clen_m=0.130106633, wavelength_angstrom=12398.42 / 9742.536)
    r_m = maps.r_px.max() / 9097.525473
    expect = 2 * np.sin(np.arctan2(r_m, 0.130106633) / 2) / (12398.42 / 9742.536)
    assert s.max() == pytest.approx(expect, rel=1e-4)


@pytest.mark.data
@pytest.mark.parametrize(
    "name, n_panels, shape",
    [
        ("cspad-cxiformat.geom", 64, (1480, 1552)),
        ("pilatus.geom", 1, (2527, 2463)),
        ("jf-swissfel-16M.geom", 32, None),
        ("Eiger16M-binning2-nativefiles.geom", 1, (2167, 2070)),
        ("simple.geom", 2, (1024, 1024)),
        ("test_stream_embedded.geom", 64, (1480, 1552)),
    ],
)
def test_real_geometries(dataset, name, n_panels, shape):
    det = parse_geometry(dataset(f"crystfel-geometry/{name}").read_text())
    assert len(det.panels) == n_panels
    if shape is not None:
        assert det.shape == shape
    for p in det.panels:
        assert np.hypot(*p.fs[:2]) == pytest.approx(1.0, abs=0.01)
        assert p.res_px_per_m > 1000


@pytest.mark.data
def test_clen_from_a_dataset_with_offset(dataset):
    det = parse_geometry(dataset("crystfel-geometry/cspad-cxiformat.geom").read_text())
    assert det.clen == "/LCLS/detector_1/EncoderValue"
    assert det.panels[0].coffset_m == pytest.approx(0.573224)
    assert det.panels[0].adu_per_ev == pytest.approx(0.00338)
    embedded = parse_geometry(dataset("crystfel-geometry/test_stream_embedded.geom").read_text())
    assert len(embedded.rigid_groups["rigid_group_q0"]) == 16


@pytest.mark.data
def test_bad_regions(dataset):
    eiger = parse_geometry(dataset("crystfel-geometry/Eiger16M-binning2-nativefiles.geom").read_text())
    bad = bad_pixel_mask(eiger, pixel_maps(eiger))
    assert bad[:, 1030:1040].all() and bad[514:551, :].all() and not bad[0:514, 0:1030].any()
    assert bad.sum() == 10 * 2167 + 3 * 37 * 2070 - 3 * 37 * 10
    pil = parse_geometry(dataset("crystfel-geometry/pilatus.geom").read_text())
    maps = pixel_maps(pil)
    bad = bad_pixel_mask(pil, maps)
    # the beamstop region is given in lab pixels: x in [-2000, 100], y in [-40, 100]
    inside = (maps.x_px >= -2000) & (maps.x_px <= 100) & (maps.y_px >= -40) & (maps.y_px <= 100)
    assert bad[inside].all() and inside.sum() > 100_000
    jf = parse_geometry(dataset("crystfel-geometry/jf-swissfel-16M.geom").read_text())
    bad = bad_pixel_mask(jf, pixel_maps(jf))
    region = next(r for r in jf.bad_regions if r.name == "bad_bs_1")
    assert region.panel == "m15"
    assert bad[7710:7771, 890:1030].all()


def test_synthetic_geometry_and_attacks():
    det = parse_geometry(GEOM)
    assert [p.name for p in det.panels] == ["top", "bottom"] and det.shape == (192, 128)
    maps = pixel_maps(det)
    assert maps.x_px[0, 0] == pytest.approx(-63.5) and maps.y_px[0, 0] == pytest.approx(3.5)
    assert maps.y_px[96, 0] == pytest.approx(-98.5)
    assert bad_pixel_mask(det, maps)[:4, :4].all() and bad_pixel_mask(det, maps).sum() == 16
    for text, why in [
        ("", "no panels"),
        ("p/min_fs = 0\np/max_fs = 9\np/min_ss = 0\np/max_ss = 9\np/res = 1\np/fish = 3\n", "unknown panel key"),
        ("p/min_fs = 0\np/max_fs = 9\np/min_ss = 0\np/max_ss = 9\n", "res"),
        ("p/min_fs = 5\np/max_fs = 1\np/min_ss = 0\np/max_ss = 9\np/res = 1\n", "empty"),
        ("res = 1\np/min_fs = 0\np/max_fs = 9\np/min_ss = 0\np/max_ss = 9\nbad_x/min_fs = 0\n", "needs"),
        (
            "res = 1\np/min_fs = 0\np/max_fs = 9\np/min_ss = 0\np/max_ss = 9\nbad_x/min_fs = 0\nbad_x/max_fs = 0\n"
            "bad_x/min_ss = 0\nbad_x/max_ss = 0\nbad_x/panel = q\n",
            "unknown panel",
        ),
        ("just words\n", "expected"),
        ("res = 1\nclen = 5 furlongs\np/min_fs = 0\np/max_fs = 9\np/min_ss = 0\np/max_ss = 9\n", "unit"),
    ]:
        with pytest.raises(GeometryError, match=why):
            parse_geometry(text)
