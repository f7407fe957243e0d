"""The one NeXus layer: read text and classes, write groups, NXdata with its ``@default``
chain, NXprocess and NXnote, the same way in every technique.

Imports only h5py and numpy (no grpc): science readers and writers use it directly.
Every writer here follows the NeXus conventions the validators check
(https://manual.nexusformat.org/datarules.html):

- strings are variable-length UTF-8 (``write_text``);
- an NXdata names its ``@signal``, its ``@axes`` (one name per dimension, ``"."`` where a
  dimension has no axis), ``@<axis>_indices`` and ``<signal>_errors`` beside the signal;
- ``@default`` on the file root and every group down to the NXdata a viewer should plot;
- one program name, ``panreduce-<technique>``, in every NXprocess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import h5py
import numpy as np

__all__ = [
    "PROGRAM_PREFIX",
    "make_group",
    "nx_class",
    "program_name",
    "read_text",
    "set_default",
    "write_nxdata",
    "write_nxnote",
    "write_nxprocess",
    "write_text",
]

PROGRAM_PREFIX = "panreduce-"

_STR = h5py.string_dtype("utf-8")


# --------------------------------------------------------------------------------------
# reading


def read_text(value: object) -> str:
    """``value`` as text: bytes and ``np.bytes_`` decoded as UTF-8 (undecodable bytes
    replaced), 0-d and 1-element arrays unwrapped, longer arrays and lists joined with
    spaces, an h5py dataset read first; ``None`` is ``""``."""
    if value is None:
        return ""
    if isinstance(value, h5py.Dataset):
        value = value[()]
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return ""
        value = value.reshape(-1)[0] if value.size == 1 else value.reshape(-1).tolist()
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (list, tuple)):
        return " ".join(read_text(v) for v in value)
    if isinstance(value, np.generic):
        value = value.item()
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
    return str(value)


def nx_class(obj: h5py.HLObject) -> str:
    """``obj.attrs["NX_class"]`` as text; ``""`` when absent."""
    return read_text(obj.attrs.get("NX_class"))


# --------------------------------------------------------------------------------------
# writing


def _set_attrs(obj: h5py.HLObject, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        if value is None:
            continue
        obj.attrs[key] = value


def make_group(parent: h5py.Group, name: str, nx_class: str, /, **attrs: Any) -> h5py.Group:
    """A new group ``parent/name`` with ``@NX_class`` and the given attributes (``None``
    values are skipped; the first three are positional, so an attribute may be called
    ``name``). Fails (ValueError) if ``name`` exists already."""
    if not nx_class.startswith("NX"):
        raise ValueError(f"NX_class {nx_class!r} does not start with 'NX'")
    group = parent.create_group(name)
    group.attrs["NX_class"] = nx_class
    _set_attrs(group, attrs)
    return group


def write_text(parent: h5py.Group, name: str, text: object, /, **attrs: Any) -> h5py.Dataset:
    """A scalar variable-length UTF-8 string dataset ``parent/name`` (``text`` through
    ``str``; bytes decoded) with the given attributes (any name, ``name`` too)."""
    value = text.decode("utf-8", "replace") if isinstance(text, (bytes, np.bytes_)) else str(text)
    ds = parent.create_dataset(name, data=value, dtype=_STR)
    _set_attrs(ds, attrs)
    return ds


def set_default(group: h5py.Group) -> None:
    """``@default`` on every ancestor of ``group`` up to the file root, each naming the
    child on the way to ``group``: a viewer opening the file lands on ``group``."""
    child = group
    while child.name != "/":
        parent = child.parent
        parent.attrs["default"] = child.name.rsplit("/", 1)[-1]
        child = parent


def _check_axis(name: str, values: np.ndarray, dim: int, length: int) -> None:
    if values.ndim != 1:
        raise ValueError(f"axis {name!r} must be one-dimensional, not of shape {values.shape}")
    if values.size not in (length, length + 1):
        raise ValueError(
            f"axis {name!r} has {values.size} values for dimension {dim} of length {length} "
            f"(centres: {length}, bin edges: {length + 1})"
        )


def write_nxdata(
    parent: h5py.Group,
    name: str,
    *,
    signal: str,
    data: Any,
    axes: Sequence[tuple[str, Any]] = (),
    errors: Any = None,
    units: Mapping[str, str] | None = None,
    long_names: Mapping[str, str] | None = None,
    title: str | None = None,
    default: bool = True,
    compression: str | None = None,
) -> h5py.Group:
    """An NXdata group ``parent/name`` plotting ``data`` (dataset ``signal``).

    ``axes``: ``(name, values)`` in dimension order, one per dimension from the first (a
    1-D array of the dimension's length, or one more for bin edges); ``(".", None)`` for
    a dimension without an axis; dimensions after the last listed have none. Writes
    ``@signal``, ``@axes``, ``@<axis>_indices`` and, when ``errors`` is given, the
    dataset ``<signal>_errors`` (same shape as the data, the signal's units unless
    ``units`` names it). ``units`` and ``long_names`` map dataset names to their
    ``@units`` / ``@long_name``. ``default=True`` sets the ``@default`` chain from the
    file root to this group. ``compression`` (e.g. ``"gzip"``) applies to the signal
    and its errors.
    """
    units = dict(units or {})
    long_names = dict(long_names or {})
    values = np.asarray(data)
    if len(axes) > max(values.ndim, 1):
        raise ValueError(f"{len(axes)} axes for a signal of {values.ndim} dimension(s)")
    group = make_group(parent, name, "NXdata")
    group.attrs["signal"] = signal
    opts: dict[str, Any] = {}
    if compression is not None and values.ndim > 0 and values.size > 1:
        opts = {"compression": compression, "chunks": True}
    written: dict[str, h5py.Dataset] = {signal: group.create_dataset(signal, data=values, **opts)}
    if errors is not None:
        err = np.asarray(errors)
        if err.shape != values.shape:
            raise ValueError(f"errors of shape {err.shape} for a signal of shape {values.shape}")
        err_name = f"{signal}_errors"
        written[err_name] = group.create_dataset(err_name, data=err, **opts)
        if err_name not in units and signal in units:
            units[err_name] = units[signal]
    axis_names: list[str] = []
    for dim, (axis_name, axis_values) in enumerate(axes):
        if axis_name == "." or axis_values is None:
            axis_names.append(".")
            continue
        if axis_name in written:
            raise ValueError(f"axis {axis_name!r} has the name of another dataset of {name!r}")
        arr = np.asarray(axis_values)
        length = values.shape[dim] if values.ndim else 1
        _check_axis(axis_name, arr, dim, length)
        written[axis_name] = group.create_dataset(axis_name, data=arr)
        group.attrs[f"{axis_name}_indices"] = np.int64(dim)
        axis_names.append(axis_name)
    if axis_names:
        axis_names += ["."] * (values.ndim - len(axis_names))
        group.attrs["axes"] = axis_names  # always an array of names, one per dimension
    for key, unit in units.items():
        if key in written and unit is not None:
            written[key].attrs["units"] = str(unit)
    for key, long_name in long_names.items():
        if key in written and long_name is not None:
            written[key].attrs["long_name"] = str(long_name)
    if title is not None:
        write_text(group, "title", title)
    if default:
        set_default(group)
    return group


def program_name(technique: str) -> str:
    """The one program name every technique's NXprocess carries: ``panreduce-<technique>``
    (the technique's registered name, as given)."""
    technique = str(technique).strip()
    if not technique:
        raise ValueError("technique name is empty")
    return technique if technique.startswith(PROGRAM_PREFIX) else PROGRAM_PREFIX + technique


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_nxnote(
    parent: h5py.Group, name: str, *, data: str, type: str = "text/plain", description: str = ""
) -> h5py.Group:
    """An NXnote ``parent/name``: ``type`` (a MIME type), ``data`` (text) and, when not
    empty, ``description``."""
    note = make_group(parent, name, "NXnote")
    write_text(note, "type", type)
    if description:
        write_text(note, "description", description)
    write_text(note, "data", data)
    return note


def write_nxprocess(
    parent: h5py.Group,
    name: str = "process",
    *,
    technique: str,
    version: str,
    parameters: Mapping[str, Any] | None = None,
    date: str | None = None,
    notes: Mapping[str, str] | None = None,
) -> h5py.Group:
    """An NXprocess ``parent/name``: ``program`` (``program_name(technique)``),
    ``version``, ``date`` (ISO 8601; now, UTC, when not given), the ``parameters`` as an
    NXnote ``parameters`` of JSON, and one text NXnote per entry of ``notes``."""
    process = make_group(parent, name, "NXprocess")
    write_text(process, "program", program_name(technique))
    write_text(process, "version", version)
    write_text(process, "date", date or _now())
    if parameters is not None:
        write_nxnote(
            process,
            "parameters",
            type="application/json",
            description="the job's parameters",
            data=json.dumps(dict(parameters), sort_keys=True, default=str),
        )
    for key, text in (notes or {}).items():
        write_nxnote(process, key, data=str(text))
    return process
