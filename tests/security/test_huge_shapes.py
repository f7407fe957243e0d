"""Readers check the size a dataset declares before reading it: a tiny file declaring an
enormous frame stack is InputTooLarge (the caller's file), never a MemoryError or an
allocation of the machine's memory."""

from __future__ import annotations

import h5py
import pytest

from panreduce import errors


def _huge(path, shape, chunks):
    with h5py.File(path, "w") as f:
        g = f.create_group("entry")
        g.attrs["NX_class"] = "NXentry"
        g.create_dataset("frames", shape=shape, dtype="f8", chunks=chunks)
    return path


def test_ptychography_frames_declaring_petabytes_are_input_too_large(tmp_path):
    from panreduce_ptychography.io import _frames

    path = _huge(tmp_path / "ptycho.h5", (10**6, 10**5, 10**5), (1, 64, 64))
    with h5py.File(path) as f, pytest.raises(errors.InputTooLarge):
        _frames(f["entry"], "frames", "ptycho.h5")


def test_saxs_frame_declaring_terabytes_is_input_too_large(tmp_path):
    from panreduce_saxs.io import NexusFrames, read_nexus_frame

    path = _huge(tmp_path / "saxs.h5", (10, 10**6, 10**6), (1, 64, 64))
    info = NexusFrames.__new__(NexusFrames)
    object.__setattr__(info, "path", path)
    object.__setattr__(info, "name", "saxs.h5")
    object.__setattr__(info, "dataset", "/entry/frames")
    with h5py.File(path) as f, pytest.raises(errors.InputTooLarge):
        read_nexus_frame(info, 0, f)


def _nxcansas(path, i_shape):
    with h5py.File(path, "w") as f:
        e = f.create_group("sasentry01")
        e.attrs["canSAS_class"] = "SASentry"
        e.attrs["NX_class"] = "NXentry"
        e.create_dataset("title", shape=(10**9,), dtype="S8", chunks=(1024,))  # a title declaring 8 GB
        d = e.create_group("sasdata01")
        d.attrs["canSAS_class"] = "SASdata"
        d.attrs["NX_class"] = "NXdata"
        d.attrs["signal"] = "I"
        d.attrs["I_axes"] = "Q"
        d.create_dataset("I", shape=i_shape, dtype="f8", chunks=(1024,) if i_shape[0] > 1024 else None)
        d.create_dataset("Q", data=[0.1, 0.2, 0.3])
    return path


def test_nxcansas_reader_checks_declared_sizes_before_reading(tmp_path, monkeypatch):
    from panreduce.nxcansas import read_nxcansas

    monkeypatch.setenv("PANREDUCE_MAX_ARRAY_BYTES", str(64 << 20))
    path = _nxcansas(tmp_path / "huge.h5", (10**12,))  # 8 TB declared, a few KB on disk
    assert path.stat().st_size < 100_000
    with pytest.raises(errors.InputTooLarge, match=r"huge\.h5"):
        read_nxcansas(path)
    small = _nxcansas(tmp_path / "small.h5", (3,))
    (curve,) = read_nxcansas(small)
    assert curve.q.tolist() == [0.1, 0.2, 0.3] and curve.i.shape == (3,)


def test_catalogue_values_are_clipped_and_printable(tmp_path):
    from panreduce import catalogue

    path = tmp_path / "long.nxs"
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e.create_dataset("title", data="T\x07" + "x" * 5_000_000)  # 5 MB, with a control character
        s = e.create_group("sample")
        s.create_dataset("name", data="ok sample")
        e.create_dataset("experiment_identifier", shape=(10**9,), dtype="S8", chunks=(1024,))  # 8 GB declared
    found = catalogue.from_nexus(str(path))
    (title,) = found["title"]
    assert len(title) <= catalogue.MAX_VALUE_CHARS and "\x07" not in title and title.startswith("Tx")
    assert found["sample"] == ["ok sample"]
    assert found["proposal"] == []  # not read at all
