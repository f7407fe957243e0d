"""The shard contract, for every shardable technique (found from the entry points, and
the kit's toy), in-process through ``panreduce.kit.run``:

* one input split 4 ways (a technique sharded by file gets its example's first file:
  three shards find nothing and publish only the empty marker) succeeds with the
  technique's outputs;
* its contract example split 3 ways equals the unsplit job: the same output files,
  the summaries' numbers and every numeric dataset of the HDF5 outputs (and the data
  rows of the text tables) within a relative 1e-6 (absolute 1e-9).
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from contract_examples import TECHNIQUES, load_example, technique_class

from panreduce import kit
from panreduce.storage import Stores

RTOL, ATOL = 1e-6, 1e-9
SHARDABLE = [n for n in TECHNIQUES if technique_class(n).shardable]
# run-to-run values (timing, the machine) and the shard count itself
VOLATILE = {"shards", "iterations_per_s", "seconds", "elapsed_s", "wall_s", "time_s", "device"}
HDF5 = {"nexus", "nxcansas", "hdf5", "cxi"}
TEXT = {"csv", "ort", "hkl", "lst", "dat", "xml"}


CASES = SHARDABLE


def test_every_shardable_technique_is_covered():
    assert {
        "toy",
        "scan",
        "sans",
        "ptychography",
        "stem4d",
        "thz",
        "reflectometry",
        "serial_crystallography",
        "saxs",
        "tomography",
    } <= set(SHARDABLE)
    assert all(technique_class(n).Part is not None for n in SHARDABLE)


@pytest.mark.parametrize("name", CASES)
def test_one_input_split_four_ways(name, dataset, tmp_path):
    cls = technique_class(name)
    (tmp_path / "example").mkdir()
    example = load_example(name)(dataset, tmp_path / "example")
    inputs = example["inputs"][:1] if "file" in cls.shard_unit else example["inputs"]
    result = kit.run_split(cls, inputs, example["params"], tmp_path / "out", split=4, stores=Stores(tmp_path / "store"))
    names = _names(result)
    assert names - {"provenance.json"}, "a split job of one input published nothing but provenance"
    assert "part.h5" not in names and "summary.json" not in names
    assert not result.summary.get("empty_shard")
    assert 1 <= result.summary["shards"] <= 4
    assert not any((tmp_path / "store" / "shards").iterdir())  # the shard scratch is gone


@pytest.mark.parametrize("name", CASES)
def test_split_three_equals_the_whole(name, dataset, tmp_path):
    cls = technique_class(name)
    (tmp_path / "example").mkdir()
    example = load_example(name)(dataset, tmp_path / "example")
    stores = Stores(tmp_path / "store")
    whole = kit.run(cls, example["inputs"], example["params"], tmp_path / "whole", stores=stores)
    split = kit.run_split(cls, example["inputs"], example["params"], tmp_path / "split", split=3, stores=stores)
    assert _names(split) == _names(whole)
    assert "shards" in split.summary
    _same(split.summary, whole.summary, "summary")
    compared = 0
    for o in whole.outputs:
        name_ = o.uri.rsplit("/", 1)[1]
        other = Path(split.output(name_).uri)
        if o.format in HDF5:
            compared += _same_hdf5(Path(o.uri), other)
        elif o.format in TEXT:
            compared += _same_text(Path(o.uri), other)
    assert compared, "no result arrays compared"


def _volatile(key: str) -> bool:
    return key in VOLATILE or "seconds" in key or key.endswith("_per_s")


def _names(result: kit.Result) -> set[str]:
    return {o.uri.rsplit("/", 1)[1] for o in result.outputs}


def _same(a, b, where: str) -> None:
    """Numbers within the tolerance, everything else equal; volatile keys skipped."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = {k for k in set(a) | set(b) if not _volatile(k)}
        assert {k for k in a if k in keys} == {k for k in b if k in keys}, f"{where}: keys differ"
        for k in sorted(keys):
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: {len(a)} items against {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int | float) or not isinstance(b, int | float):
        assert a == b, f"{where}: {a!r} != {b!r}"
    elif not (math.isnan(a) and math.isnan(b)):
        assert a == pytest.approx(b, rel=RTOL, abs=ATOL), f"{where}: {a} != {b}"


def _datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found: dict[str, h5py.Dataset] = {}

    def visit(name: str, obj) -> None:
        parts = name.split("/")
        if (
            isinstance(obj, h5py.Dataset)
            and obj.dtype.kind in "biufc"
            and "provenance" not in parts
            and not _volatile(parts[-1])
        ):
            found[name] = obj

    f.visititems(visit)
    return found


def _same_hdf5(a: Path, b: Path) -> int:
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        da, db = _datasets(fa), _datasets(fb)
        assert sorted(da) == sorted(db), f"{a.name}: numeric datasets differ"
        for name, ds in da.items():
            np.testing.assert_allclose(db[name][()], ds[()], rtol=RTOL, atol=ATOL, err_msg=f"{a.name}:{name}")
        return len(da)


def _same_text(a: Path, b: Path) -> int:
    rows_a = [r for r in a.read_text().splitlines() if not r.startswith("#")]
    rows_b = [r for r in b.read_text().splitlines() if not r.startswith("#")]
    assert len(rows_a) == len(rows_b), f"{a.name}: {len(rows_a)} rows against {len(rows_b)}"
    for ra, rb in zip(rows_a, rows_b, strict=True):
        ca, cb = ra.replace(",", " ").split(), rb.replace(",", " ").split()
        assert len(ca) == len(cb), f"{a.name}: {ra!r} / {rb!r}"
        for x, y in zip(ca, cb, strict=True):
            try:
                fx, fy = float(x), float(y)
            except ValueError:
                assert x == y, f"{a.name}: {ra!r} / {rb!r}"
                continue
            assert fx == pytest.approx(fy, rel=RTOL, abs=ATOL, nan_ok=True), f"{a.name}: {ra!r} / {rb!r}"
    return len(rows_a)
