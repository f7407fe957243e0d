"""A sharded reconstruction through the gateway equals the unsharded one: the shards'
slice ranges are stacked in order, uint16 volumes re-quantised on one scale."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from panreduce.client import Client


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_sharded_volume_equals_the_whole(gateway_for, dataset_folder, tmp_path, dtype):
    folder = dataset_folder("tomo/savu-tiff")
    params = {"slice_start": 40, "slice_stop": 50, "center": 79.0, "previews": 1, "output_dtype": dtype, "size": 96}
    with Client(gateway_for("tomography"), timeout=300) as c:
        whole = c.reduce("tomography", [str(folder) + "/"], params, str(tmp_path / "whole"), split=1)
        split = c.reduce("tomography", [str(folder) + "/"], params, str(tmp_path / "split"), split=3)
    assert split.summary["slices"] == whole.summary["slices"] == 10
    assert split.summary["shards"] == 3
    with h5py.File(tmp_path / "whole" / "tomography.nxs") as a, h5py.File(tmp_path / "split" / "tomography.nxs") as b:
        assert b["entry/definition"][()] == b"NXtomoproc"
        np.testing.assert_array_equal(a["entry/data/z"][()], b["entry/data/z"][()])
        va, vb = a["entry/data/data"], b["entry/data/data"]
        assert va.shape == vb.shape == (10, 96, 96) and va.dtype == vb.dtype
        if dtype == "float32":
            np.testing.assert_allclose(vb[()], va[()], rtol=0, atol=1e-6 * float(np.abs(va[()]).max()))
        else:
            # both quantise the same values on (nearly) the same range: within one step or two
            real_a = va.attrs["add_offset"] + va.attrs["scale_factor"] * va[()].astype(float)
            real_b = vb.attrs["add_offset"] + vb.attrs["scale_factor"] * vb[()].astype(float)
            assert np.max(np.abs(real_a - real_b)) <= 2.5 * max(va.attrs["scale_factor"], vb.attrs["scale_factor"])
        assert "provenance" in b["entry"]
