"""Readers: Merlin .mib at every counter depth, quad and ROI layouts, RAW refused, damaged
files named; HDF5 4-D stacks (NeXus NXdata, fpd) read by rows the same as the array."""

from __future__ import annotations

import numpy as np
import pytest
from stem4d_helpers import unzip, write_mib

from panreduce import errors
from panreduce_stem4d import mib, synthetic
from panreduce_stem4d.io import open_scan, scan_shape_for

QD = "stem4d-merlin/rosettasciio_quantumdetector"


@pytest.fixture(scope="module")
def qd(dataset, tmp_path_factory):
    dest = tmp_path_factory.mktemp("qd")
    for z in ("Merlin_Single_Quad.zip", "Merlin_navigation4x2_ROI.zip", "Merlin_navigation4x2_signalNx256_ROI.zip"):
        unzip(dataset(f"{QD}/{z}"), dest)
    return dest


@pytest.mark.data
@pytest.mark.parametrize("layout,side", [("Single", 256), ("Quad", 512)])
@pytest.mark.parametrize("depth,dtype", [(1, np.uint8), (6, np.uint8), (12, np.uint16), (24, np.uint32)])
def test_every_counter_depth_and_layout(qd, layout, side, depth, dtype):
    for frames in (1, 9):
        path = qd / f"{layout}_{frames}_Frame_CounterDepth_{depth}_Rows_256.mib"
        scan = open_scan(path, path.name)
        ny, nx, dy, dx = scan.shape
        assert (dy, dx) == (side, side) and ny * nx == frames
        assert scan.metadata["counter_depth"] == depth
        assert scan.metadata["assembly"] == ("2x2" if layout == "Quad" else "1x1")
        data = scan.read_rows(0, ny)
        assert data.dtype == dtype
        # big-endian pixels decoded: counts within the counter's range, and not all zero
        assert 0 < data.max() <= 2 ** min(depth, 12) - 1 if depth != 24 else 0 < data.max() < 2**24
        if depth == 1:
            assert set(np.unique(data)) <= {0, 1}


@pytest.mark.data
def test_quad_frame_of_12_and_24_bit_show_the_same_pattern(qd):
    a = open_scan(qd / "Quad_1_Frame_CounterDepth_12_Rows_256.mib", "a").read_rows(0, 1)[0, 0].astype(float)
    b = open_scan(qd / "Quad_1_Frame_CounterDepth_24_Rows_256.mib", "b").read_rows(0, 1)[0, 0].astype(float)
    from scipy import ndimage

    sa, sb = ndimage.gaussian_filter(a, 4), ndimage.gaussian_filter(b, 4)
    assert np.corrcoef(sa.ravel(), sb.ravel())[0, 1] > 0.9
    # a mis-assembled quad (chips swapped) would not match
    swapped = np.roll(sb, 256, axis=1)
    assert np.corrcoef(sa.ravel(), swapped.ravel())[0, 1] < 0.5


@pytest.mark.data
def test_raw_bit_packed_frames_are_refused_by_name(qd):
    path = qd / "Single_1_Frame_CounterDepth_1_Rows_256RAW.mib"
    with pytest.raises(errors.InvalidInput, match="RAW"):
        open_scan(path, path.name)


@pytest.mark.data
def test_real_4x2_scan_and_roi_mode(qd):
    full = open_scan(qd / "001_4x2_6bit.mib", "full", scan_shape=(2, 4))
    roi = open_scan(qd / "002_4x2_6bit_roi128.mib", "roi", scan_shape=(2, 4))
    assert full.shape == (2, 4, 256, 256) and roi.shape == (2, 4, 128, 256)
    assert full.metadata["hdr/Counter Depth"] == "6"
    data = full.read_rows(0, 2)
    assert data.max() == 63  # the saturated direct beam of a 6-bit counter
    mean = data.mean(axis=(0, 1))
    col = np.argmax(mean.sum(axis=0))
    assert col < 64  # the beam sits near the left edge
    for name, shape in (
        ("002_merlin_test_roi_sig256x128_nav4x2_hot_pixel_52x_39y", (2, 4, 128, 256)),
        ("003_merlin_test_roi_sig256x64_nav4x2_hot_pixel_52x_39y", (2, 4, 64, 256)),
    ):
        s = open_scan(qd / f"{name}.mib", name, scan_shape=(2, 4))
        assert s.shape == shape
        frames = s.read_rows(0, 2)
        # the hot pixel the file is named after: column 52, row 39
        hot = np.unravel_index(int(np.argmax(frames.sum(axis=(0, 1)))), shape[2:])
        assert hot == (39, 52)


def test_scan_shape_defaults():
    assert scan_shape_for(256, 16) == (16, 16)
    assert scan_shape_for(9, 3) == (3, 3)
    assert scan_shape_for(9, 1) == (3, 3)
    assert scan_shape_for(8, 1) == (1, 8)


def test_written_mib_round_trips_by_rows_and_damage_is_named(tmp_path):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 4096, size=(12, 16, 20))
    path = tmp_path / "scan.mib"
    write_mib(path, frames)
    scan = open_scan(path, "scan.mib", scan_shape=(3, 4))
    np.testing.assert_array_equal(scan.read_rows(1, 3), frames[4:12].reshape(2, 4, 16, 20))
    with pytest.raises(errors.InvalidInput, match="needs 15 frames"):
        open_scan(path, "scan.mib", scan_shape=(3, 5))
    cut = tmp_path / "cut.mib"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(errors.InvalidInput, match=r"cut.mib: truncated"):
        open_scan(cut, "cut.mib")
    # a frame from another acquisition spliced in the middle
    other = tmp_path / "other.mib"
    write_mib(other, rng.integers(0, 255, size=(1, 16, 20)), depth=6)
    spliced = tmp_path / "spliced.mib"
    raw = path.read_bytes()
    fb = 384 + 16 * 20 * 2
    one = other.read_bytes()
    spliced.write_bytes(raw[: 6 * fb] + one + raw[6 * fb + len(one) :])
    with pytest.raises(errors.InvalidInput, match=r"spliced.mib"):
        open_scan(spliced, "spliced.mib")
    # an absurd frame size in the header is refused before anything is mapped
    bad = tmp_path / "bad.mib"
    bad.write_bytes(raw.replace(b"0020,0016", b"9999,9999", 1))
    with pytest.raises(errors.InvalidInput, match="implausible"):
        open_scan(bad, "bad.mib")


def test_header_parsing_of_the_extended_fields():
    head = mib.parse_header(
        b"MQ1,000001,00768,04,0512,0512,U16,   2x2,0F,2021-04-15 14:44:43.1,0.001000,0,0,0,"
        b"2.0E+0,5.11E+2,0,0,0,0,0,0,3RX,MQ1A,2021-04-15T13:44:43Z,1000000ns,12,"
    )
    assert (head.header_bytes, head.chips, head.width, head.height) == (768, 4, 512, 512)
    assert head.layout == "2x2" and head.counter_depth == 12 and head.exposure_s == 0.001
    assert head.frame_bytes == 768 + 512 * 512 * 2


def test_nexus_4d_signal_read_by_rows_equals_the_array(tmp_path):
    sim = synthetic.make_scan(5, 7, 32, disc_radius_px=3, ring_radius_px=10)
    path = tmp_path / "s.nxs"
    synthetic.write_nexus(path, sim.frames, step_nm=0.25)
    with open_scan(path, "s.nxs") as scan:
        assert scan.shape == (5, 7, 32, 32) and scan.step_nm == (0.25, 0.25)
        np.testing.assert_array_equal(scan.read_rows(2, 4), np.rint(sim.frames[2:4]).astype(np.uint16))
    with pytest.raises(errors.InvalidInput, match="no dataset"):
        open_scan(path, "s.nxs", dataset="/entry/nothing")


@pytest.mark.data
def test_fpd_layout(dataset):
    with open_scan(dataset("stem4d-merlin/merlintools_nist/FPD_HDF5.hdf5"), "fpd") as scan:
        assert scan.shape == (16, 16, 256, 256)
        assert scan.layout == "hdf5 /fpd_expt/fpd_data/data"
        assert scan.step_nm == pytest.approx((5.48, 5.48), abs=0.01)
        assert scan.energy_kev == 200.0
        assert scan.images["haadf_recorded"].shape == (16, 16)
