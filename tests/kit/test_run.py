"""panreduce.kit.run: the whole job in-process (no gRPC), and the shard contract."""

from __future__ import annotations

import json
import threading

import h5py
import numpy as np
import pytest

from panreduce import errors, kit
from panreduce.kit.toy import Toy
from panreduce.storage import Stores


@pytest.fixture
def files(tmp_path):
    out = []
    for i in range(5):
        np.save(tmp_path / f"v{i}.npy", np.arange(3.0) + 10 * i)
        out.append(str(tmp_path / f"v{i}.npy"))
    return out


@pytest.fixture
def stores(tmp_path):
    return Stores(tmp_path / "store")


def test_run_publishes_outputs_with_provenance(files, stores, tmp_path):
    seen = []
    result = kit.run(
        Toy,
        files,
        {"steps": 4},
        tmp_path / "out",
        stores=stores,
        progress=lambda stage, fraction, message: seen.append((stage, fraction)),
    )
    assert result.summary["total"] == pytest.approx(sum(3 * 10 * i + 3 for i in range(5)))
    assert {o.uri.rsplit("/", 1)[1] for o in result.outputs} == {"toy.nxs", "toy.csv", "provenance.json"}
    record = json.loads(result.path("provenance.json").read_text())
    assert record["id"] == result.provenance_id and record["request"]["inputs"] == files
    assert record["parameters"]["steps"] == 4
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {"stage", "work", "publish", "done"} <= {s for s, _ in seen}
    with h5py.File(result.path("toy.nxs")) as f:
        assert json.loads(f["entry/provenance/data"][()])["id"] == result.provenance_id
    assert not list((tmp_path / "out").glob("*.partial*"))


def test_run_refuses_bad_requests_at_the_edge(files, stores, tmp_path):
    with pytest.raises(errors.InvalidParameters) as err:
        kit.run(Toy, files, {"scale": float("nan")}, tmp_path / "o", stores=stores)
    assert [v.field for v in err.value.violations] == ["scale"]
    with pytest.raises(errors.InvalidParameters):
        kit.run(Toy, files, {"no_such": 1}, tmp_path / "o", stores=stores)
    with pytest.raises(errors.InvalidRequest, match="below"):
        kit.run(Toy, files, {}, tmp_path / "o", shard=(4, 4), stores=stores)
    with pytest.raises(errors.InputNotFound):
        kit.run(Toy, [str(tmp_path / "missing.npy")], {}, tmp_path / "o", stores=stores)
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(errors.InvalidRequest, match="existing file"):
        kit.run(Toy, files, {}, tmp_path / "a-file" / "out", stores=stores)
    with pytest.raises(errors.LimitExceeded, match="labels"):
        kit.run(Toy, files, {}, tmp_path / "o", labels={f"k{i}": "v" for i in range(65)}, stores=stores)
    with pytest.raises(errors.LimitExceeded, match=r"shard\.count"):
        kit.run(Toy, files, {}, tmp_path / "o", shard=(0, 5000), stores=stores)
    assert not (tmp_path / "o").exists()


def test_cancel_event_stops_between_steps_and_publishes_nothing(files, stores, tmp_path):
    cancel = threading.Event()
    Toy.steps_done = 0

    def progress(stage, fraction, message):
        if stage == "work" and Toy.steps_done >= 3:
            cancel.set()

    with pytest.raises(errors.JobCancelled):
        kit.run(
            Toy,
            files,
            {"steps": 1000, "step_seconds": 0.001},
            tmp_path / "out",
            stores=stores,
            progress=progress,
            cancel=cancel,
        )
    assert 3 <= Toy.steps_done < 10
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_shards_then_merge_equal_the_whole_job(files, stores, tmp_path, count):
    """Every split (more shards than files included) gives the unsharded result; the
    shards with no file publish only the empty marker, which the merge skips."""
    whole = kit.run(Toy, files, {}, tmp_path / "whole", stores=stores)
    folder = tmp_path / "shards"
    empty = 0
    for i in range(count):
        r = kit.run(Toy, files, {}, folder / f"shard-{i:04d}", shard=(i, count), stores=stores)
        names = {o.uri.rsplit("/", 1)[1] for o in r.outputs}
        if r.summary.get("empty_shard"):
            empty += 1
            assert names == {"summary.json", "provenance.json"}
        else:
            assert names == {"part.h5", "summary.json", "provenance.json"}
    assert empty == max(count - len(files), 0)
    merged = kit.run(Toy, [str(folder) + "/"], {}, tmp_path / "merged", merge=True, stores=stores)
    assert merged.summary["total"] == whole.summary["total"]
    assert merged.summary["files"] == whole.summary["files"]
    assert merged.summary["shards"] == min(count, len(files))
    with h5py.File(merged.path("toy.nxs")) as a, h5py.File(whole.path("toy.nxs")) as b:
        np.testing.assert_array_equal(a["entry/values"][()], b["entry/values"][()])


def test_merge_refuses_shards_that_do_not_tile_the_job(files, stores, tmp_path):
    folder = tmp_path / "shards"
    for i in (0, 2):  # shard 1 of 3 missing
        kit.run(Toy, files, {}, folder / f"shard-{i}", shard=(i, 3), stores=stores)
    with pytest.raises(errors.InternalError, match="do not tile"):
        kit.run(Toy, [str(folder) + "/"], {}, tmp_path / "m", merge=True, stores=stores)
    with pytest.raises(errors.InvalidRequest, match="no shard results"):
        kit.run(Toy, files, {}, tmp_path / "m", merge=True, stores=stores)
    assert not (tmp_path / "m").exists()


def test_merge_of_only_empty_shards_is_refused(tmp_path, stores):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "v.npy", np.ones(2))
    folder = tmp_path / "shards"
    for i in (0, 1):  # one file over three shards: the last holds it
        r = kit.run(Toy, [str(tmp_path / "in" / "v.npy")], {}, folder / f"s{i}", shard=(i, 3), stores=stores)
        assert r.summary["empty_shard"] is True
    (folder / "s2").mkdir()  # its marker, forged as empty
    (folder / "s2" / "summary.json").write_text(json.dumps({"shard": 2, "shard_count": 3, "empty_shard": True}))
    with pytest.raises(errors.InvalidRequest, match="every shard was empty"):
        kit.run(Toy, [str(folder) + "/"], {}, tmp_path / "m", merge=True, stores=stores)


def test_a_part_of_another_technique_or_shard_is_refused(files, stores, tmp_path):
    folder = tmp_path / "shards"
    kit.run(Toy, files, {}, folder / "a", shard=(0, 2), stores=stores)
    kit.run(Toy, files, {}, folder / "b", shard=(1, 2), stores=stores)
    with h5py.File(folder / "b" / "part.h5", "r+") as f:
        f.attrs["shard"] = 0  # claims to be shard 0 as well
    with pytest.raises(errors.InvalidInput, match="part"):
        kit.run(Toy, [str(folder) + "/"], {}, tmp_path / "m", merge=True, stores=stores)


def test_technique_by_registry_name(tmp_path, stores):
    with pytest.raises(errors.UnknownTechnique):
        kit.run("no-such-technique", ["/x"], {}, tmp_path / "o", stores=stores)


def test_forged_markers_cannot_claim_a_huge_job(tmp_path, stores):
    """A merge input naming a billion shards is refused by the limit, without building
    anything that size."""
    folder = tmp_path / "shards" / "s0"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"shard": 0, "shard_count": 10**9, "empty_shard": True}))
    with pytest.raises(errors.InvalidRequest, match="over the limit"):
        kit.run(Toy, [str(tmp_path / "shards") + "/"], {}, tmp_path / "m", merge=True, stores=stores)
    (folder / "summary.json").write_text("[1, 2]")
    with pytest.raises(errors.InvalidInput, match="not a shard's summary"):
        kit.run(Toy, [str(tmp_path / "shards") + "/"], {}, tmp_path / "m", merge=True, stores=stores)
