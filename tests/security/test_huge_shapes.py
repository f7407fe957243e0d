"""Readers check the size a dataset declares before reading it: a tiny file declaring an
enormous frame stack is InputTooLarge (the caller's file), never a MemoryError or an
allocation of the machine's memory."""

from __future__ import annotations

import h5py
import pytest

from panreduce import errors


def _huge(path, shape, chunks):  # noqa: ANN001, ANN202
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
