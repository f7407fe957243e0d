"""Frames read in chunks into one reused buffer (``read_frames``, the compiled path): any
chunk size, chunks across scan rows and the pattern sum's overflow flushes give exactly the
result of the row blocks; the MIB and contiguous HDF5 readers fill the buffer with the same
frames; a chunked HDF5 dataset keeps reading by rows."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from stem4d_helpers import write_mib

from panreduce_stem4d import pipeline
from panreduce_stem4d.detectors import Geometry, MaskSpec
from panreduce_stem4d.io import open_scan
from panreduce_stem4d.stream import Accumulator

DET = (32, 36)
GEO = Geometry((15.6, 17.3), 1.0)
SPECS = [MaskSpec("bf", 0, 5), MaskSpec("adf", 6, 11), MaskSpec("haadf", 11, 16)]


def _acc(scan):
    masks = {m.name: m.render(GEO, DET) for m in SPECS}
    return Accumulator(scan, DET, masks, MaskSpec("com", 0, 7).render(GEO, DET))


@pytest.mark.parametrize(("dtype", "high"), [(np.uint8, 256), (np.uint16, 65536), (np.uint32, 2**32)])
def test_uneven_frame_chunks_equal_row_blocks_exactly(dtype, high):
    rng = np.random.default_rng(21)
    frames = rng.integers(0, high, size=(4, 5, *DET), dtype=dtype)
    rows = _acc((4, 5))
    rows.add(frames, 0)
    ref = rows.result()
    acc = _acc((4, 5))
    assert acc.compiled_for(dtype)
    flat = frames.reshape(20, -1)
    f = 0
    for n in (1, 3, 7, 2, 5, 2):  # across row boundaries; uint32 frames flush the pattern sum every call
        acc.add_frames(flat[f : f + n], f)
        f += n
    assert f == 20
    got = acc.result()
    for name in ref.virtual:
        np.testing.assert_array_equal(got.virtual[name], ref.virtual[name])
        m = SPECS[[s.name for s in SPECS].index(name)].render(GEO, DET) != 0
        np.testing.assert_array_equal(got.virtual[name], (frames.astype(np.int64) * m).sum(axis=(2, 3)))
    np.testing.assert_array_equal(got.com_raw_yx_px, ref.com_raw_yx_px)
    np.testing.assert_array_equal(got.total_counts, frames.sum(axis=(2, 3), dtype=np.int64))
    np.testing.assert_array_equal(got.sum_pattern, frames.sum(axis=(0, 1), dtype=np.uint64))
    np.testing.assert_array_equal(got.max_pattern, frames.max(axis=(0, 1)))
    assert got.frames == 20


def _stream(scan, *, frames_path: bool):
    calib = pipeline.Calibration(GEO, 5.0, np.zeros(DET), detectors=SPECS, com_mrad=7.0)
    return pipeline.stream(
        scan.read_rows,
        scan.shape,
        calib,
        row0=1,
        row1=scan.shape[0],
        itemsize=scan.dtype.itemsize,
        read_frames=scan.read_frames if frames_path else None,
        dtype=scan.dtype,
    )


def _same(a, b):
    for name in a.virtual:
        np.testing.assert_array_equal(a.virtual[name], b.virtual[name])
    np.testing.assert_array_equal(a.com_raw_yx_px, b.com_raw_yx_px)
    np.testing.assert_array_equal(a.total_counts, b.total_counts)
    np.testing.assert_array_equal(a.sum_pattern, b.sum_pattern)
    np.testing.assert_array_equal(a.max_pattern, b.max_pattern)


def test_mib_and_contiguous_hdf5_read_frames_equal_rows(tmp_path, monkeypatch):
    # chunks of 3 frames on scan rows of 5: every other chunk spans two rows
    monkeypatch.setattr(pipeline, "FRAME_CHUNK_BYTES", 3 * DET[0] * DET[1] * 2)
    rng = np.random.default_rng(22)
    frames = rng.poisson(40.0, size=(6, 5, *DET)).astype(np.uint16)
    frames[2, 1, 3, 4] = 4095
    write_mib(tmp_path / "s.mib", frames.reshape(30, *DET))
    with h5py.File(tmp_path / "flat.h5", "w") as f:
        f.create_dataset("frames", data=frames.astype(">u2"))  # contiguous, big-endian on disk
        f.create_dataset("chunked", data=frames, chunks=(1, 5, *DET))
    mib_scan = open_scan(tmp_path / "s.mib", "s.mib", scan_shape=(6, 5))
    with (
        open_scan(tmp_path / "flat.h5", "flat.h5", dataset="/frames") as h5,
        open_scan(tmp_path / "flat.h5", "flat.h5", dataset="/chunked") as chunked,
    ):
        assert chunked.read_frames is None  # a chunked dataset is read by rows
        for scan in (mib_scan, h5):
            assert scan.read_frames is not None
            buf = np.empty((4, *DET), scan.dtype)
            scan.read_frames(3, 7, buf)  # frames 3..6 of the flat scan: rows 0 and 1
            np.testing.assert_array_equal(buf, frames.reshape(30, *DET)[3:7])
            got = _stream(scan, frames_path=True)
            ref = _stream(scan, frames_path=False)
            _same(got, ref)
            np.testing.assert_array_equal(got.total_counts, frames[1:].sum(axis=(2, 3), dtype=np.int64))
            np.testing.assert_array_equal(got.sum_pattern, frames[1:].sum(axis=(0, 1), dtype=np.uint64))
        _same(_stream(chunked, frames_path=True), _stream(h5, frames_path=False))
