"""Red team (issue 12): a caller's own merge request. The gateway forwarded ``merge=True``
from callers, and the kit's merge read ``part.h5`` by name beside each shard summary,
without the input checks (no reference check for merges): proposal A could hand the
service a crafted part whose datasets are external links into B's files, and the merge
opened them (B's dataset names came back in the error; a dataset shaped like a part's was
read, its values summed into A's result). Now the gateway refuses a caller's merge
(INVALID_ARGUMENT), and the kit checks a merge's parts like any input and reads only
parts that were staged. Real toy service behind a real gateway with two proposals."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from locations_support import SECRET, refused, two_proposals

from panreduce import errors
from panreduce.client import Client, make_request
from panreduce.kit.parts import save_part
from panreduce.kit.toy import ToyPart


@pytest.fixture
def site(tmp_path):
    with two_proposals(tmp_path) as s:
        yield s


def _merge(client: Client, inputs: list[str]):
    req = make_request("toy", inputs, {}, "")
    req.merge = True
    return client._follow(client.stub.Reduce(req, timeout=30), "toy", None)


def _crafted_shards(data):
    """B's part-shaped file (as a kept shard part of B's own split job would be), and A's
    shard folder whose part links its values to B's."""
    b_part = data / "propB" / "kept" / "part.h5"
    b_part.parent.mkdir()
    save_part(b_part, ToyPart(values=np.full(3, SECRET), files=["b"]), technique="toy", shard=0, shard_count=1)
    shard = data / "propA" / "shards" / "0"
    shard.mkdir(parents=True)
    save_part(shard / "part.h5", ToyPart(values=np.ones(3), files=["a"]), technique="toy", shard=0, shard_count=1)
    with h5py.File(shard / "part.h5", "a") as f:
        del f["part/values"]
        f["part/values"] = h5py.ExternalLink(str(b_part), "/part/values")
    (shard / "summary.json").write_text(json.dumps({"shard": 0, "shard_count": 1}))
    return shard


def test_a_callers_merge_is_refused_at_the_gateway(site):
    shard = _crafted_shards(site.data)
    for inputs in ([str(shard.parent) + "/"], [str(shard / "summary.json")]):
        exc = refused(lambda inputs=inputs: _merge(site.a, inputs))
        assert exc.code.name == "INVALID_ARGUMENT" and "merge is the gateway's own step" in str(exc)
    # a summary that does not tile a job was INTERNAL (a caller's mistake)
    (shard / "summary.json").write_text(json.dumps({"shard": 1, "shard_count": 1}))
    assert refused(lambda: _merge(site.a, [str(shard / "summary.json")])).code.name == "INVALID_ARGUMENT"


def test_the_kit_checks_a_merges_parts_and_reads_only_staged_ones(site, tmp_path):
    """The services' side (the kit), reached without the gateway: the crafted part is
    refused by the reference check; a part beside a named summary, not itself an input,
    is not read."""
    shard = _crafted_shards(site.data)
    with h5py.File(site.data / "propB" / "kept" / "part.h5") as f:
        assert float(f["part/values"][0]) == SECRET  # what the link would have read
    from panreduce import kit
    from panreduce.kit.toy import Toy
    from panreduce.storage import Stores

    stores = Stores(tmp_path / "kit-store")
    with pytest.raises(errors.PermissionDenied, match="not followed"):
        kit.run(Toy, [str(shard.parent) + "/"], {}, str(tmp_path / "o1"), merge=True, stores=stores)
    with pytest.raises(errors.InvalidInput, match="not one of the merge's inputs"):
        kit.run(Toy, [str(shard / "summary.json")], {}, str(tmp_path / "o2"), merge=True, stores=stores)
    # an honest merge of A's own shard still works
    save_part(shard / "part.h5", ToyPart(values=np.ones(3), files=["a"]), technique="toy", shard=0, shard_count=1)
    done = kit.run(Toy, [str(shard.parent) + "/"], {}, str(tmp_path / "o3"), merge=True, stores=stores)
    assert done.summary["total"] == 3.0
