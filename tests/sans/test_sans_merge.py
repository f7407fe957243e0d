"""The GFP batch split by row over shards through the gateway gives the same files and
the same I(Q) as one unsplit job (the kit's default merge of independent outputs)."""

from __future__ import annotations

import h5py
import numpy as np

from panreduce import registry
from panreduce.client import Client, make_request
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.gateway import GatewayService


def test_batch_split_by_row_equals_the_whole(dataset_folder, tmp_path):
    raw = dataset_folder("loq-gfp/raw")
    mantid = dataset_folder("loq-gfp/mantid-files")
    stores = Stores(tmp_path / "store")
    service = start_technique(registry.load("sans"), stores=stores)
    gw_service = GatewayService({"sans": service.address}, stores=stores)
    gw = start_server(gw_service, name="gateway", manager=gw_service.manager)
    gw.set_serving(True)
    params = {"user_file": "USER_LOQ_125B.txt", "batch_file": "reduce-gfp.csv", "plots": False}
    results = {}
    try:
        with Client(gw.address, timeout=600) as c:
            for split in (1, 3):
                req = make_request("sans", [str(raw) + "/", str(mantid) + "/"], params, str(tmp_path / f"s{split}"))
                req.split = split
                results[split] = c._follow(c.stub.Reduce(req, timeout=600), "sans", None)
    finally:
        gw.drain_and_stop(2)
        gw_service.close()
        service.drain_and_stop(2)
    whole, split = results[1].summary, results[3].summary
    assert split["shards"] == 3
    assert sorted(split["outputs"]) == sorted(whole["outputs"]) == ["GFP_10mgml", "GFP_1mgml", "GFP_5mgml"]
    assert split["instrument"] == whole["instrument"]
    for name in whole["outputs"]:
        with h5py.File(tmp_path / "s1" / f"{name}.h5") as a, h5py.File(tmp_path / "s3" / f"{name}.h5") as b:
            ia = a["sasentry01/sasdata01/I"][()]
            ib = b["sasentry01/sasdata01/I"][()]
            np.testing.assert_allclose(ib, ia, rtol=1e-12)
