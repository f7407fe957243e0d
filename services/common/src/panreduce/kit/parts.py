"""A shard's part on disk: ``save_part`` / ``load_part`` of a technique's ``Part`` dataclass.

The kit writes each shard's part into one HDF5 file (``part.h5``) and reads the parts
back for the merge; techniques never handle the format. A part is a dataclass whose
fields are numpy arrays, numbers, strings, booleans, None, JSON-able dicts and lists,
lists (or dicts) of arrays and nested dataclasses (alone, in lists or in dicts).

Reading trusts nothing in the file: the classes are those of the technique's ``Part``
type hints (a file never names code to import), every field of the dataclass must be
there and no other, and a file that is not a part is ``InvalidInput`` naming it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import errors

FORMAT = "panreduce-part/1"
PART_FILE = "part.h5"
_ROOT = "part"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


@dataclass(frozen=True)
class Attachment:
    """A file a part brings along (a shard's hits.cxi, a slab of slices): too large or
    too structured to hold in the part's arrays. ``save_part`` publishes a copy beside
    ``part.h5``; ``load_part`` gives the staged copy's path back."""

    path: Path


def save_part(path: Path | str, part: Any, *, attach: Callable[[str], Path] | None = None, **attrs: Any) -> None:
    """Write the dataclass ``part`` into a new HDF5 file ``path`` (``attrs``: kept on the
    root). Each :class:`Attachment` is copied to ``attach(name)`` (default: beside
    ``path``) and recorded by that name."""
    if not dataclasses.is_dataclass(part) or isinstance(part, type):
        raise TypeError(f"a part must be a dataclass instance, not {type(part).__name__}")
    folder = Path(path).parent
    names: list[str] = []

    def copy(a: Attachment) -> str:
        name = f"{Path(path).stem}-{len(names):04d}-{a.path.name}"[:120]
        name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        target = attach(name) if attach is not None else folder / name
        shutil.copyfile(a.path, target)
        names.append(name)
        return name

    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT
        for key, value in attrs.items():
            f.attrs[key] = value
        _put(f, _ROOT, part, copy)


def part_attrs(path: Path | str) -> dict[str, Any]:
    """The root attributes ``save_part`` kept (the shard's index and count)."""
    with _open(path) as f:
        return {k: _scalar(v) for k, v in f.attrs.items() if k != "format"}


def load_part(path: Path | str, cls: type) -> Any:
    """The ``cls`` instance saved in ``path``; attachments are found beside it (a plain
    file name, never a path: nothing outside the part's folder is reached)."""
    folder = Path(path).parent

    def find(name: str) -> Attachment:
        if not _SAFE_NAME.match(name) or not (folder / name).is_file():
            raise ValueError(f"attachment {name[:80]!r} is not a file beside the part")
        return Attachment(folder / name)

    with _open(path) as f:
        if _ROOT not in f:
            raise errors.InvalidInput(Path(path).name, "holds no shard part")
        try:
            return _get(f[_ROOT], cls, find)
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.InvalidInput(Path(path).name, f"is not a {cls.__name__} part ({exc})") from None


def _open(path: Path | str) -> h5py.File:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise errors.InvalidInput(Path(path).name, f"is not a shard part file ({exc})") from None
    if f.attrs.get("format") not in (FORMAT, FORMAT.encode()):
        f.close()
        raise errors.InvalidInput(Path(path).name, f"is not a shard part file (no format {FORMAT!r})")
    return f


def _scalar(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    return v.item() if isinstance(v, np.generic) else v


# -- writing ---------------------------------------------------------------------------
def _jsonable(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _jsonable(v) for k, v in value.items())
    return False


def _put(parent: h5py.Group, name: str, value: Any, copy: Callable[[Attachment], str]) -> None:
    if isinstance(value, Attachment):
        ds = parent.create_dataset(name, data=copy(value), dtype=h5py.string_dtype())
        ds.attrs["kind"] = "attachment"
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        g = parent.create_group(name)
        g.attrs["kind"] = "dataclass"
        for fld in dataclasses.fields(value):
            _put(g, fld.name, getattr(value, fld.name), copy)
        return
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        parent.create_dataset(name, data=h5py.Empty("f8")).attrs["kind"] = "none"
    elif isinstance(value, bool):
        parent.create_dataset(name, data=value).attrs["kind"] = "bool"
    elif isinstance(value, int):
        parent.create_dataset(name, data=value).attrs["kind"] = "int"
    elif isinstance(value, float):
        parent.create_dataset(name, data=value).attrs["kind"] = "float"
    elif isinstance(value, str):
        parent.create_dataset(name, data=value, dtype=h5py.string_dtype()).attrs["kind"] = "str"
    elif isinstance(value, np.ndarray):
        if value.dtype.kind in "US" or value.dtype == object:
            ds = parent.create_dataset(
                name, data=np.asarray(value, dtype=object).astype(str).astype(object), dtype=h5py.string_dtype()
            )
            ds.attrs["kind"] = "strarray"
        else:
            parent.create_dataset(name, data=value).attrs["kind"] = "array"
    elif _jsonable(value):
        ds = parent.create_dataset(name, data=json.dumps(value), dtype=h5py.string_dtype())
        ds.attrs["kind"] = "json"
    elif isinstance(value, Mapping):
        g = parent.create_group(name)
        g.attrs["kind"] = "dict"
        keys = [str(k) for k in value]
        g.attrs["keys"] = json.dumps(keys)
        for i, v in enumerate(value.values()):
            _put(g, str(i), v, copy)
    elif isinstance(value, (list, tuple)):
        g = parent.create_group(name)
        g.attrs["kind"] = "list"
        g.attrs["length"] = len(value)
        for i, v in enumerate(value):
            _put(g, str(i), v, copy)
    else:
        raise TypeError(f"a part cannot hold {type(value).__name__} (field {name!r})")


# -- reading ---------------------------------------------------------------------------
def _dataclasses_in(hint: Any) -> list[type]:
    """Every dataclass a type hint can stand for (directly, in a union, or in containers)."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return [hint]
    return [c for arg in typing.get_args(hint) for c in _dataclasses_in(arg)]


def _element_hint(hint: Any, *, mapping: bool) -> Any:
    """The element (or value) type of list[X], tuple[X, ...], Sequence[X], dict[K, X]."""
    for cand in (hint, *typing.get_args(hint)):
        origin = typing.get_origin(cand)
        args = typing.get_args(cand)
        if origin is None or not args:
            continue
        if mapping and isinstance(origin, type) and issubclass(origin, Mapping):
            return args[-1]
        if not mapping and isinstance(origin, type) and issubclass(origin, Sequence):
            return args[0]
    return Any


def _wants_tuple(hint: Any) -> bool:
    return any(typing.get_origin(c) is tuple for c in (hint, *typing.get_args(hint)))


def _get(node: h5py.Group | h5py.Dataset, hint: Any, find: Callable[[str], Attachment]) -> Any:
    kind = node.attrs.get("kind")
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "dataclass":
        classes = _dataclasses_in(hint)
        if len(classes) != 1:
            raise TypeError(f"{node.name}: the part's type hints name no single dataclass for it")
        cls = classes[0]
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        if sorted(node.keys()) != sorted(names):
            raise KeyError(f"{node.name} holds {sorted(node.keys())}, {cls.__name__} has {sorted(names)}")
        return cls(**{n: _get(node[n], hints.get(n, Any), find) for n in names})
    if kind == "list":
        elem = _element_hint(hint, mapping=False)
        items = [_get(node[str(i)], elem, find) for i in range(int(node.attrs["length"]))]
        return tuple(items) if _wants_tuple(hint) else items
    if kind == "dict":
        keys = json.loads(node.attrs["keys"])
        elem = _element_hint(hint, mapping=True)
        return {k: _get(node[str(i)], elem, find) for i, k in enumerate(keys)}
    if not isinstance(node, h5py.Dataset):
        raise TypeError(f"{node.name} is a group of unknown kind {kind!r}")
    if kind == "none":
        return None
    if kind == "attachment":
        return find(node.asstr()[()])
    if kind == "bool":
        return bool(node[()])
    if kind == "int":
        return int(node[()])
    if kind == "float":
        return float(node[()])
    if kind == "str":
        return node.asstr()[()]
    if kind == "strarray":
        return np.asarray(node.asstr()[()], dtype=str)
    if kind == "array":
        return np.asarray(node[()])
    if kind == "json":
        value = json.loads(node.asstr()[()])
        return tuple(value) if _wants_tuple(hint) and isinstance(value, list) else value
    raise TypeError(f"{node.name} has unknown kind {kind!r}")


__all__ = ["FORMAT", "PART_FILE", "Attachment", "load_part", "part_attrs", "save_part"]
