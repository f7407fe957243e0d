"""A sharded reconstruction through the gateway equals the unsharded one: the shards'
slice ranges are stacked in order, uint16 volumes re-quantised on one scale."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from panreduce import registry
from panreduce.client import Client, make_request
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.gateway import GatewayService


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    stores = Stores(tmp_path_factory.mktemp("store"))
    service = start_technique(registry.load("tomography"), stores=stores)
    gw_service = GatewayService({"tomography": service.address}, stores=stores)
    gw = start_server(gw_service, name="gateway", manager=gw_service.manager)
    gw.set_serving(True)
    yield gw.address
    gw.drain_and_stop(2)
    gw_service.close()
    service.drain_and_stop(2)


def run(address, inputs, params, out, split):
    req = make_request("tomography", inputs, params, str(out))
    req.split = split
    with Client(address, timeout=300) as c:
        return c._follow(c.stub.Reduce(req, timeout=300), "tomography", None)


@pytest.mark.parametrize("dtype", ["float32", "uint16"])
def test_sharded_volume_equals_the_whole(gateway, dataset_folder, tmp_path, dtype):
    folder = dataset_folder("tomo/savu-tiff")
    params = {"slice_start": 40, "slice_stop": 50, "center": 79.0, "previews": 1, "output_dtype": dtype,
              "size": 96}
    whole = run(gateway, [str(folder) + "/"], params, tmp_path / "whole", split=1)
    split = run(gateway, [str(folder) + "/"], params, tmp_path / "split", split=3)
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
