"""kit.parts: a shard's part survives the file, and a file cannot name code or fields."""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np
import pytest

from panreduce import errors
from panreduce.kit.parts import Attachment, load_part, part_attrs, save_part


@dataclass
class Fit:
    centre: float
    sigma: float | None
    curve: np.ndarray


@dataclass
class Part:
    frames: np.ndarray
    labels: np.ndarray
    name: str
    count: int
    ok: bool
    missing: None
    meta: dict
    axes: tuple[str, ...]
    curves: list[np.ndarray]
    fit: Fit
    fits: list[Fit]
    by_name: dict[str, Fit] = field(default_factory=dict)
    maybe: Fit | None = None


def _part() -> Part:
    rng = np.random.default_rng(1)
    return Part(
        frames=rng.normal(size=(3, 4, 5)).astype(np.float32),
        labels=np.array(["a", "bé", "c"]),
        name="scan 7 — ü",
        count=12,
        ok=True,
        missing=None,
        meta={"q": [0.1, 0.2], "unit": "1/angstrom", "nested": {"k": None}},
        axes=("x", "y"),
        curves=[np.arange(3.0), np.arange(4, dtype=np.int64)],
        fit=Fit(1.5, None, np.linspace(0, 1, 4)),
        fits=[Fit(1.0, 0.1, np.zeros(2)), Fit(2.0, 0.2, np.ones(3))],
        by_name={"s1": Fit(3.0, 0.3, np.full(2, 7.0))},
        maybe=None,
    )


def test_round_trip_keeps_types_values_and_dtypes(tmp_path):
    part = _part()
    save_part(tmp_path / "part.h5", part, technique="t", shard=2, shard_count=4)
    back = load_part(tmp_path / "part.h5", Part)
    assert part_attrs(tmp_path / "part.h5") == {"technique": "t", "shard": 2, "shard_count": 4}
    np.testing.assert_array_equal(back.frames, part.frames)
    assert back.frames.dtype == np.float32
    assert back.labels.tolist() == ["a", "bé", "c"]
    assert (back.name, back.count, back.ok, back.missing) == ("scan 7 — ü", 12, True, None)
    assert back.meta == part.meta and back.axes == ("x", "y")
    assert [c.dtype for c in back.curves] == [np.float64, np.int64]
    assert isinstance(back.fit, Fit) and back.fit.sigma is None
    np.testing.assert_array_equal(back.fits[1].curve, np.ones(3))
    assert back.by_name["s1"].centre == 3.0 and back.maybe is None


def test_a_file_that_is_not_a_part_is_invalid_input(tmp_path):
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(errors.InvalidInput, match=r"text\.h5"):
        load_part(tmp_path / "text.h5", Part)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(errors.InvalidInput, match=r"plain\.h5"):
        load_part(tmp_path / "plain.h5", Part)


def test_a_forged_part_cannot_add_or_drop_fields_or_pick_classes(tmp_path):
    """A file decides no class (the type hints do) and holds exactly the dataclass's fields."""
    save_part(tmp_path / "p.h5", _part())
    with h5py.File(tmp_path / "p.h5", "r+") as f:
        f["part/extra"] = 1
        f["part/extra"].attrs["kind"] = "int"
    with pytest.raises(errors.InvalidInput, match="extra"):
        load_part(tmp_path / "p.h5", Part)
    save_part(tmp_path / "q.h5", _part())
    with h5py.File(tmp_path / "q.h5", "r+") as f:
        del f["part/fit"]
        f.create_group("part/fit").attrs["kind"] = "dataclass"
        f["part/fit"].attrs["type"] = "os:system"
    with pytest.raises(errors.InvalidInput):
        load_part(tmp_path / "q.h5", Part)
    save_part(tmp_path / "r.h5", _part())
    with h5py.File(tmp_path / "r.h5", "r+") as f:
        f["part/count"].attrs["kind"] = "pickle"
    with pytest.raises(errors.InvalidInput, match="unknown kind"):
        load_part(tmp_path / "r.h5", Part)


def test_what_a_part_cannot_hold_is_refused_at_save(tmp_path):
    @dataclass
    class Bad:
        x: object

    with pytest.raises(TypeError, match="cannot hold"):
        save_part(tmp_path / "b.h5", Bad(object()))
    with pytest.raises(TypeError, match="dataclass"):
        save_part(tmp_path / "b.h5", {"x": 1})


@dataclass
class WithFiles:
    files: list[Attachment]
    label: str


def test_attachments_travel_beside_the_part_and_stay_there(tmp_path):
    src = tmp_path / "work"
    src.mkdir()
    (src / "hits.cxi").write_bytes(b"\x00hits" * 100)
    (src / "other name.bin").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    save_part(out / "part.h5", WithFiles([Attachment(src / "hits.cxi"), Attachment(src / "other name.bin")], "a"))
    back = load_part(out / "part.h5", WithFiles)
    assert [a.path.parent for a in back.files] == [out, out]
    assert back.files[0].path.read_bytes() == b"\x00hits" * 100
    assert " " not in back.files[1].path.name
    # a forged name cannot leave the part's folder
    with h5py.File(out / "part.h5", "r+") as f:
        del f["part/files/0"]
        f.create_dataset("part/files/0", data="../work/hits.cxi", dtype=h5py.string_dtype())
        f["part/files/0"].attrs["kind"] = "attachment"
    with pytest.raises(errors.InvalidInput, match="attachment"):
        load_part(out / "part.h5", WithFiles)
