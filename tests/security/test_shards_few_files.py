"""A job split into more shards than it has units succeeds (issue 12, "faults and load").

Each shardable technique's contract example (one input file, or one batch row) is
reduced through a real gateway in front of two real replicas on loopback, split into
4 shards: the gateway makes no more shards than there are input files, and the kit
turns a shard with nothing to do into an empty part that the merge skips.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from faults_support import load_example

from panreduce import registry
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.gateway import GatewayService

SHARDABLE = ["scan", "saxs", "tomography", "sans", "ptychography"]


@pytest.fixture(scope="module", params=SHARDABLE)
def two_replicas(request, tmp_path_factory):
    name = request.param
    root = tmp_path_factory.mktemp(f"shards-{name}")
    stores = Stores(root)
    cls = registry.load(name)
    replicas = [start_technique(cls, stores=stores) for _ in range(2)]
    gateway = GatewayService({name: [r.address for r in replicas]}, stores=stores)
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    yield {"name": name, "gateway": gw, "service": gateway}
    gw.drain_and_stop(2)
    gateway.close()
    for r in replicas:
        r.drain_and_stop(2)


@pytest.mark.parametrize("split", [4, 0])
def test_one_input_over_two_replicas_succeeds(two_replicas, dataset, tmp_path, split):
    """split=4 asks for 4 shards of one unit; split=0 lets the gateway choose (2
    replicas x 2 slots = 4 shards). Both must succeed with the technique's outputs."""
    name = two_replicas["name"]
    example = load_example(name)(dataset, tmp_path)
    if "file" in registry.load(name).shard_unit:
        example["inputs"] = example["inputs"][:1]  # one unit
    out = tmp_path / "out"
    with Client(two_replicas["gateway"].address, timeout=300) as client:
        done = client.reduce(name, example["inputs"], example["params"], str(out), split=split)
        job = client.get_job(done.job_id)
    assert done.outputs, "a sharded job of one input produced no outputs"
    assert "provenance.json" in {Path(o.uri).name for o in done.outputs}
    results = [o for o in done.outputs if o.role == "result"]
    assert results, f"no result output among {[o.uri for o in done.outputs]}"
    for o in done.outputs:
        assert Path(o.uri).is_file() and Path(o.uri).stat().st_size == o.size
    # No more shards than units where the gateway can count them (one file each).
    if "file" in registry.load(name).shard_unit:
        assert job.shards <= len(example["inputs"])
    summary = done.summary
    assert not summary.get("empty_shard"), summary
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    json.loads((out / "provenance.json").read_text())


def test_one_file_under_a_prefix_is_split_by_the_kit(two_replicas, dataset, tmp_path):
    """A folder input hides its file count from the gateway, so it splits 4 ways; three
    shards find no file, end as empty parts, and the merge keeps the one real part."""
    name = two_replicas["name"]
    if "file" not in registry.load(name).shard_unit:
        pytest.skip("the technique's unit is not a file")
    example = load_example(name)(dataset, tmp_path)
    folder = tmp_path / "one"
    folder.mkdir()
    first = Path(example["inputs"][0])
    (folder / first.name).symlink_to(first)
    with Client(two_replicas["gateway"].address, timeout=300) as client:
        done = client.reduce(name, [str(folder) + "/"], example["params"], str(tmp_path / "out"), split=4)
        job = client.get_job(done.job_id)
    assert job.shards == 4
    summary = done.summary
    assert summary["n_scans"] == 1, summary  # the empty parts added nothing
    assert 29.71 < summary["center"] < 30.31  # the peak lies inside the scanned eta range (deg)
    assert [o for o in done.outputs if o.role == "result"]
