"""The GFP batch split by row over shards through the gateway gives the same files and
the same I(Q) as one unsplit job (the kit's default merge of independent outputs)."""

from __future__ import annotations

import h5py
import numpy as np

from panreduce.client import Client


def test_batch_split_by_row_equals_the_whole(gateway_for, dataset_folder, tmp_path):
    inputs = [str(dataset_folder("loq-gfp/raw")) + "/", str(dataset_folder("loq-gfp/mantid-files")) + "/"]
    params = {"user_file": "USER_LOQ_125B.txt", "batch_file": "reduce-gfp.csv", "plots": False}
    with Client(gateway_for("sans"), timeout=600) as c:
        whole = c.reduce("sans", inputs, params, str(tmp_path / "s1"), split=1).summary
        split = c.reduce("sans", inputs, params, str(tmp_path / "s3"), split=3).summary
    assert split["shards"] == 3
    assert sorted(split["outputs"]) == sorted(whole["outputs"]) == ["GFP_10mgml", "GFP_1mgml", "GFP_5mgml"]
    assert split["instrument"] == whole["instrument"]
    for name in whole["outputs"]:
        with h5py.File(tmp_path / "s1" / f"{name}.h5") as a, h5py.File(tmp_path / "s3" / f"{name}.h5") as b:
            ia = a["sasentry01/sasdata01/I"][()]
            ib = b["sasentry01/sasdata01/I"][()]
            np.testing.assert_allclose(ib, ia, rtol=1e-12)
