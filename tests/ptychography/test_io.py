"""Reading scans (NeXus and CXI layouts) and preparing the frames."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from ptycho_helpers import small_sim

from panreduce.errors import InvalidInput
from panreduce_ptychography.io import list_scans, read_scan, write_cxi, write_nexus
from panreduce_ptychography.problem import HC_EV_M, Scan, crop_and_bin, find_center, prepare


@pytest.fixture(scope="module")
def sim():
    return small_sim(frame_size=32, n_positions=20, bad_pixels=5, dark_level=2.0)


def test_nexus_round_trip(sim, tmp_path):
    path = tmp_path / "scan.nxs"
    write_nexus(path, sim.scan)
    scan = read_scan(path, "scan.nxs")
    assert np.array_equal(scan.frames, sim.scan.frames)
    assert np.allclose(scan.positions_m, sim.scan.positions_m)
    assert np.array_equal(scan.mask, sim.scan.mask)
    assert np.array_equal(scan.dark, sim.scan.dark)
    assert scan.energy_ev == pytest.approx(8000.0)
    assert scan.distance_m == pytest.approx(5.0)
    assert scan.pixel_size_m == pytest.approx((75e-6, 75e-6))
    # NeXus convention: pixel_mask 0 = good
    with h5py.File(path) as f:
        stored = f["entry/instrument/detector/pixel_mask"][()]
    assert np.array_equal(stored == 0, sim.scan.mask)


def test_units_are_honoured(sim, tmp_path):
    path = tmp_path / "units.nxs"
    write_nexus(path, sim.scan)
    with h5py.File(path, "r+") as f:
        e = f["entry"]
        del e["instrument/beam/incident_energy"]
        e["instrument/beam/incident_energy"] = 8.0
        e["instrument/beam/incident_energy"].attrs["units"] = "keV"
        del e["instrument/detector/distance"]
        e["instrument/detector/distance"] = 5000.0
        e["instrument/detector/distance"].attrs["units"] = "mm"
        x = e["data/x"][()]
        del e["data/x"]
        e["data/x"] = x * 1e6
        e["data/x"].attrs["units"] = "um"
    scan = read_scan(path, "units.nxs")
    assert scan.energy_ev == pytest.approx(8000.0)
    assert scan.distance_m == pytest.approx(5.0)
    assert np.allclose(scan.positions_m[:, 1], sim.scan.positions_m[:, 1])


def test_cxi_reads_like_nexus(sim, tmp_path):
    write_cxi(tmp_path / "scan.cxi", sim.scan)
    write_nexus(tmp_path / "scan.nxs", sim.scan)
    a = read_scan(tmp_path / "scan.cxi", "scan.cxi")
    b = read_scan(tmp_path / "scan.nxs", "scan.nxs")
    assert np.allclose(a.positions_m, b.positions_m)  # CXI: minus the sample translation
    assert a.energy_ev == pytest.approx(b.energy_ev)  # CXI: joules
    assert np.array_equal(a.mask, b.mask)
    a.dark = b.dark  # the CXI layout has no dark frame
    pa, pb = prepare(a), prepare(b)
    assert np.allclose(pa.positions, pb.positions)
    assert np.array_equal(pa.counts, pb.counts)


def test_several_entries_are_several_projections(sim, tmp_path):
    path = tmp_path / "pxct.nxs"
    scans = []
    for angle in (0.0, 1.5, 3.0):
        s = Scan(**{**sim.scan.__dict__, "metadata": {"rotation_angle_deg": angle}})
        scans.append(s)
    write_nexus(path, scans, entries=["entry10", "entry2", "entry1"])
    assert list_scans(path, "pxct.nxs") == ["entry1", "entry2", "entry10"]
    assert read_scan(path, "pxct.nxs", "entry2").metadata["rotation_angle_deg"] == 1.5


def test_missing_and_inconsistent_data_name_the_file(sim, tmp_path):
    path = tmp_path / "bad.nxs"
    write_nexus(path, sim.scan)
    with h5py.File(path, "r+") as f:
        del f["entry/instrument/detector/distance"]
    with pytest.raises(InvalidInput, match=r"bad.nxs.*distance"):
        read_scan(path, "bad.nxs")
    write_nexus(path, sim.scan)
    with h5py.File(path, "r+") as f:
        y = f["entry/data/y"][()]
        del f["entry/data/y"]
        f["entry/data/y"] = y[:-1]
    with pytest.raises(InvalidInput, match=r"bad.nxs"):
        read_scan(path, "bad.nxs")
    with h5py.File(path, "w") as f:
        f.create_group("entry")
    with pytest.raises(InvalidInput, match=r"no ptychographic scan"):
        list_scans(path, "bad.nxs")


def test_crop_and_bin_by_hand():
    frames = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6)
    mask = np.ones((6, 6), bool)
    mask[1, 1] = False
    out, good = crop_and_bin(frames, mask, center=(3, 3), size=2, binning=2)
    # the 4x4 cut is rows/cols 1..4; binned 2x2 sums
    f0 = frames[0] * mask
    assert out[0, 0, 0] == f0[1:3, 1:3].sum()
    assert out[0, 1, 1] == f0[3:5, 3:5].sum()
    assert not good[0, 0] and good[1, 1]
    # a cut beyond the detector is masked
    out, good = crop_and_bin(frames, mask, center=(0, 0), size=4)
    assert not good[0, 0] and good[2, 2]
    assert out[0, 2, 2] == frames[0, 0, 0]


def test_centre_is_found_and_frames_cropped_around_it():
    sim = small_sim(frame_size=32, n_positions=20, detector_size=48, center_offset=(5, -3), photons=1e6)
    c = find_center(sim.scan.frames, sim.scan.mask)
    assert abs(c[0] - (24 + 5)) < 1.0 and abs(c[1] - (24 - 3)) < 1.0
    ref = small_sim(frame_size=32, n_positions=20, photons=1e6)
    p = prepare(sim.scan, frame_size=32)
    q = prepare(ref.scan)
    assert np.array_equal(p.counts, q.counts)


def test_dark_is_subtracted_and_pixel_size_follows_geometry(sim):
    p = prepare(sim.scan)
    raw = np.fft.ifftshift(sim.scan.frames - 2.0, axes=(-2, -1))
    good = p.mask > 0
    assert np.allclose(p.counts[:, good], np.clip(raw, 0, None)[:, good])
    lam = HC_EV_M / 8000.0
    assert p.pixel_size_m == pytest.approx(lam * 5.0 / (32 * 75e-6))
    # binning halves the field of view in pixels, keeps the object pixel size
    b = prepare(sim.scan, frame_size=16, binning=2)
    assert b.pixel_size_m == pytest.approx(p.pixel_size_m)
    assert b.counts.sum() <= p.counts.sum() + 1e-3
