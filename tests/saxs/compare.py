"""Comparing two saxs jobs' outputs: every HDF5 dataset and attribute (rtol 1e-9), every
table and text image line by line (past their provenance lines), and the summaries."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest


def same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{k}]")
    elif isinstance(a, float) and a is not None:
        assert b == pytest.approx(a, rel=1e-9, nan_ok=True), where
    else:
        assert a == b, where


CLOCK_ATTRS = ("panreduce_provenance_id", "file_time")  # the job's record and clock


def _h5_items(path: Path) -> dict:
    items: dict = {}

    def visit(name, obj):
        parts = name.split("/")
        if "provenance" in parts or parts[-1] == "date":  # the job's own record and clock
            return
        attrs = {k: v for k, v in obj.attrs.items() if k not in CLOCK_ATTRS}
        items[name] = (obj[()] if isinstance(obj, h5py.Dataset) else None, attrs)

    with h5py.File(path, "r") as f:
        f.visititems(visit)
        items["/"] = (None, {k: v for k, v in f.attrs.items() if k not in CLOCK_ATTRS})
    return items


def _assert_same_value(a, b, where: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, where
    if a.dtype.kind in "fc":
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=0, equal_nan=True, err_msg=where)
    else:
        assert np.array_equal(a, b), where


def assert_same_h5(a: Path, b: Path) -> None:
    ia, ib = _h5_items(a), _h5_items(b)
    assert sorted(ia) == sorted(ib), a.name
    for name, (va, attrs_a) in ia.items():
        vb, attrs_b = ib[name]
        where = f"{a.name}:{name}"
        assert sorted(attrs_a) == sorted(attrs_b), where
        for k in attrs_a:
            _assert_same_value(attrs_a[k], attrs_b[k], f"{where}@{k}")
        if va is not None:
            _assert_same_value(va, vb, where)


def body(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def table(path: Path) -> np.ndarray:
    """A published CSV (provenance lines, a header line) as numbers."""
    return np.loadtxt(body(path)[1:], delimiter=",", ndmin=2)


def assert_same_outputs(whole: Path, split: Path, ws: dict, ss: dict) -> None:
    names = sorted(p.name for p in whole.iterdir())
    assert sorted(p.name for p in split.iterdir()) == names
    assert "saxs_shard.h5" not in names and "summary.json" not in names
    for name in names:
        if name.endswith((".h5", ".nxs")):
            assert_same_h5(whole / name, split / name)
        elif name.endswith((".csv", ".txt")):
            assert body(whole / name) == body(split / name), name
    # the summary: the unsharded one's keys and values, and the shard count
    assert sorted(ss) == sorted([*ws, "shards"])
    same(ws, {k: v for k, v in ss.items() if k != "shards"}, "summary")
