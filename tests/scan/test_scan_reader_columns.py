"""The reader's column reads (the low-level read into the declared type): the values of
every numeric type and byte order are h5py's own, and a column declaring more points than
the memory ceiling allows is InputTooLarge naming the file, before anything is allocated."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scan_synthetic import synthetic_counts, write_i16_file

from panreduce import errors
from panreduce_scan.nexus import read_scan

ETA = np.linspace(29.7, 30.3, 41)


@pytest.mark.parametrize("counts_dtype", [">i4", "<u2", ">f4", "<f8", "<i8"])
def test_columns_of_every_numeric_type_read_as_h5py_reads_them(tmp_path, counts_dtype):
    counts = synthetic_counts(
        np.random.default_rng(3), ETA, center=30.02, fwhm=0.05, area=60.0, background=20.0, slope=0.0
    )
    path = write_i16_file(
        tmp_path / "typed.nxs",
        {"eta": ETA.astype(">f8"), "roi2_sum": counts.astype(counts_dtype), "count_time": np.ones(ETA.size, "<f4")},
        declared_axis="eta",
        declared_signal="roi2_sum",
        scan_command="scan eta 29.7 30.3 0.015 pil3_100k 1 roi2",
    )
    scan = read_scan(path)
    with h5py.File(path) as f:
        expected_counts = np.asarray(f["entry1/measurement/roi2_sum"][()], dtype=float)
        expected_eta = np.asarray(f["entry1/measurement/eta"][()], dtype=float)
    assert scan.axis == "eta" and scan.signal == "roi2_sum"
    assert scan.counts.dtype == np.float64 and scan.axis_values.dtype == np.float64
    np.testing.assert_array_equal(scan.counts, expected_counts)
    np.testing.assert_array_equal(scan.axis_values, expected_eta)
    assert scan.counts.max() > 500  # the peak is there, not zeros from a wrong-type read


def test_a_column_declaring_terabytes_is_input_too_large(tmp_path, monkeypatch):
    monkeypatch.setenv("PANREDUCE_MAX_ARRAY_BYTES", str(64 << 20))
    path = write_i16_file(
        tmp_path / "huge.nxs",
        {"eta": ETA, "roi2_sum": np.full(ETA.size, 10.0)},
        declared_axis="eta",
        declared_signal="roi2_sum",
    )
    with h5py.File(path, "a") as f:  # a per-point column declaring 10^12 points, a few KB on disk
        f["entry1/measurement"].create_dataset("ic1monitor", shape=(10**12,), dtype="f8", chunks=(4096,))
    assert path.stat().st_size < 200_000
    with pytest.raises(errors.InputTooLarge, match=r"huge\.nxs.*ic1monitor"):
        read_scan(path)
