"""Reading I16 NeXus scans: real files of three layouts, synthetic edge cases, bad files."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from scan_synthetic import synthetic_counts, write_i16_file

from panreduce.errors import InvalidInput
from panreduce_scan.nexus import parse_scan_command, read_scan

pytestmark = pytest.mark.data


# ---------------------------------------------------------------- real files


def test_eta_rocking_scan_2019(dataset):
    s = read_scan(dataset("i16-scans/794932.nxs"))
    assert s.scan == 794932 and s.axis == "eta" and s.declared_axis == "eta"
    assert s.axis_units == "deg"
    assert s.signal == "roi2_sum"
    assert s.n_points == 61
    assert np.allclose(np.diff(s.axis_values), 0.01)  # "scan eta 29.71 30.31 0.01"
    assert s.transmission == pytest.approx(6.167e-5, rel=1e-3)  # attenuated
    assert np.all(s.count_time == 1.0)
    assert s.ring_current is not None and 295 < s.ring_current.mean() < 305  # mA
    assert s.metadata["Ta"] == pytest.approx(6.55, abs=0.01)  # K
    assert s.metadata["en"] == pytest.approx(8.3, abs=1e-3)  # keV
    assert s.counts.max() == 1109032.0


def test_hkl_scan_along_k_although_h_is_declared(dataset):
    """``scan hkl [0 0.5 -16.5] [0 0.9 -16.5] [0 0.01 0]``: the file declares h (constant
    to 1e-13) and kth/kphi move as a consequence; the scanned axis is k."""
    s = read_scan(dataset("i16-scans/782761.nxs"))
    assert s.declared_axis == "h"
    assert s.axis == "k" and s.axis_units == "r.l.u."
    assert s.axis_values[0] == pytest.approx(0.5) and s.axis_values[-1] == pytest.approx(0.9)
    assert s.signal == "roi2_sum"
    assert np.all(s.count_time == 5.0)
    assert s.metadata["Ta"] == pytest.approx(130.0, abs=0.01)  # per-point Ta averaged
    assert any("declares axis 'h'" in n for n in s.notes)


def test_2024_layout_declares_ring_current_as_signal(dataset):
    """The 2024 file's measurement group declares ``rc`` (ring current) as its signal and
    ``h`` as its axis. A beamline scientist wants the detector, not the ring current: the
    Pilatus ROI totals are in instrument/pil3_100k, and the scan moves l."""
    s = read_scan(dataset("i16-scans/hdfmap_1040323.nxs"))
    assert s.scan == 1040323 and s.entry == "entry"
    assert s.axis == "l" and s.declared_axis == "h"
    assert s.axis_values[0] == pytest.approx(0.11179, abs=1e-5)
    assert np.allclose(np.diff(s.axis_values), 0.001)
    assert s.signal == "roi2.total"  # roi1 is empty; roi2 holds the (few) counts
    assert s.counts.sum() == 7
    assert s.ring_current is not None and s.ring_current.mean() == pytest.approx(9.72, abs=0.01)
    assert s.transmission == 1.0
    assert "scan hkl" in s.scan_command
    assert any("declares signal 'rc'" in n for n in s.notes)


def test_explicit_signal_and_axis(dataset):
    s = read_scan(dataset("i16-scans/782761.nxs"), signal="roi1_sum", axis="kth")
    assert s.signal == "roi1_sum" and s.axis == "kth"
    s = read_scan(dataset("i16-scans/hdfmap_1040323.nxs"), signal="pil3_100k.roi1.total")
    assert s.signal == "roi1.total"
    with pytest.raises(InvalidInput, match=r"782761.nxs.*requested signal 'apd'"):
        read_scan(dataset("i16-scans/782761.nxs"), signal="apd")
    with pytest.raises(InvalidInput, match="requested axis 'h' does not vary"):
        read_scan(dataset("i16-scans/782761.nxs"), axis="h")


def test_truncated_real_file_is_invalid_input(dataset, tmp_path):
    src = dataset("i16-scans/794933.nxs")
    cut = tmp_path / "794933_cut.nxs"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 3])
    with pytest.raises(InvalidInput) as err:
        read_scan(cut)
    assert err.value.source == "794933_cut.nxs"
    assert "truncated" in err.value.problem or "HDF5" in err.value.problem


def test_file_without_measurement_group(dataset, tmp_path):
    """Older layout: no measurement group, columns only under instrument."""
    copy = tmp_path / "794934.nxs"
    shutil.copy(dataset("i16-scans/794934.nxs"), copy)
    copy.chmod(0o644)
    with h5py.File(copy, "a") as f:
        del f["entry1/measurement"]
    s = read_scan(copy)
    assert s.axis == "eta" and s.signal == "roi2_sum" and s.n_points == 61
    assert s.transmission == pytest.approx(6.167e-5, rel=1e-3)


# ---------------------------------------------------------------- synthetic files


def _columns(n=31, **extra):
    rng = np.random.default_rng(0)
    x = np.linspace(10.0, 10.6, n)
    cols = {
        "eta": x,
        "chi": np.full(n, 90.0),
        "roi2_sum": synthetic_counts(rng, x, center=10.3, fwhm=0.05, area=50.0),
        "rc": np.full(n, 300.0),
        "count_time": np.full(n, 1.0),
    }
    cols.update(extra)
    return cols


def test_declared_axis_constant_picks_the_varying_one(tmp_path):
    p = write_i16_file(tmp_path / "a.nxs", _columns(), declared_axis="chi", declared_signal="roi2_sum")
    s = read_scan(p)
    assert s.axis == "eta" and s.declared_axis == "chi"


def test_scan_command_wins_over_consequential_motors(tmp_path):
    """``scan sx ...`` where eta also drifts: the commanded sx is the axis."""
    cols = _columns(sx=np.linspace(0, 3, 31), eta=np.linspace(10, 10.001, 31) ** 2)
    p = write_i16_file(tmp_path / "b.nxs", cols, scan_command="scan sx 0 3 0.1 pil3_100k 1", declared_axis="eta")
    assert read_scan(p).axis == "sx"


def test_no_command_most_evenly_stepped_axis(tmp_path):
    cols = _columns(kphi=np.sin(np.linspace(0, 3, 31)))  # varies, but not in equal steps
    p = write_i16_file(tmp_path / "c.nxs", cols)
    assert read_scan(p).axis == "eta"


def test_only_ring_current_is_no_detector_signal(tmp_path):
    cols = _columns()
    del cols["roi2_sum"]
    p = write_i16_file(tmp_path / "rc_only.nxs", cols, declared_signal="rc")
    with pytest.raises(InvalidInput, match=r"rc_only.nxs: no detector signal.*rc"):
        read_scan(p)


def test_nothing_varies(tmp_path):
    cols = _columns(eta=np.full(31, 10.0))
    p = write_i16_file(tmp_path / "still.nxs", cols)
    with pytest.raises(InvalidInput, match=r"still.nxs: no varying axis"):
        read_scan(p)


def test_nans_and_too_few_points(tmp_path):
    cols = _columns()
    cols["roi2_sum"][3] = np.nan
    with pytest.raises(InvalidInput, match=r"nan.nxs: signal 'roi2_sum' contains NaN"):
        read_scan(write_i16_file(tmp_path / "nan.nxs", cols))
    with pytest.raises(InvalidInput, match=r"short.nxs: only 5 scan points; at least 7"):
        read_scan(write_i16_file(tmp_path / "short.nxs", _columns(n=5)))


def test_not_hdf5_and_no_entry(tmp_path):
    txt = tmp_path / "notes.nxs"
    txt.write_text("scan eta 29.7 30.3 0.01\n1 2 3\n")
    with pytest.raises(InvalidInput) as err:
        read_scan(txt)
    assert err.value.source == "notes.nxs" and "not an HDF5" in err.value.problem
    with h5py.File(tmp_path / "bare.h5", "w") as f:
        f["x"] = np.arange(10)
    with pytest.raises(InvalidInput, match=r"bare.h5: no NXentry"):
        read_scan(tmp_path / "bare.h5")
    with pytest.raises(InvalidInput, match=r"missing.nxs: no such file"):
        read_scan(tmp_path / "missing.nxs")


def test_transmission_found_in_before_scan(tmp_path):
    p = write_i16_file(tmp_path / "att.nxs", _columns(), before_scan={"gains_atten": 0.001, "Transmission": 0.001})
    assert read_scan(p).transmission == pytest.approx(0.001)
    p = write_i16_file(tmp_path / "noatt.nxs", _columns())
    s = read_scan(p)
    assert s.transmission == 1.0 and any("transmission" in n for n in s.notes)


def test_parse_scan_command():
    assert parse_scan_command("scan eta 29.7 30.3 0.01 BeamOK pil3_100k 1 roi2") == (["eta"], None, "roi2")
    names, step, roi = parse_scan_command(
        "scan hkl [0.97, 0.022, 0.11] [0.97, 0.022, 0.13] [0, 0, 0.001] MapperProc pil3_100k 1"
    )
    assert names == ["hkl"] and step == [0.0, 0.0, 0.001] and roi is None
    assert parse_scan_command("") == ([], None, None)
