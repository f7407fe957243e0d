"""Catalogue metadata read from the inputs, so that facility staff can find a
reduction by user name, proposal, sample name and dates.

Reads the NeXus fields every facility writes (``NXentry/title``, ``start_time``,
``experiment_identifier``, ``sample/name``, the ``NXuser`` groups' ``name``/
``username``, ``instrument/name``) from HDF5 inputs. Values seen in several inputs are
joined with "; " (at most a few), placeholders (blank, "Default Sample") are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import h5py

from panreduce import errors, locations
from panreduce.kit.readers import input_roots
from panreduce.kit.technique import StagedFile

log = logging.getLogger("panreduce.catalogue")

KEYS = ("sample", "user", "proposal", "title", "start_time", "instrument")
PLACEHOLDERS = {"", "default sample", "none", "unknown", "n/a"}
MAX_FILES = 50
MAX_VALUES = 5


MAX_VALUE_CHARS = 1024  # one catalogue value, as a request label's (panreduce.limits.label_value_chars)
MAX_STRING_BYTES = 1 << 20  # a string dataset read for the catalogue at most


def _text(value: object) -> str:
    """A catalogue value as text: control characters dropped, at most MAX_VALUE_CHARS."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        value = value[0] if value else ""
    if isinstance(value, bytes):
        value = value[: 4 * MAX_VALUE_CHARS].decode("utf-8", "replace")
    text = "".join(c for c in str(value)[: 4 * MAX_VALUE_CHARS] if c.isprintable() or c == " ").strip()
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _small(obj: object) -> bool:
    """A dataset small enough to read for the catalogue (few elements, bounded storage)."""
    if not isinstance(obj, h5py.Dataset) or obj.size > 16:
        return False
    try:
        return bool(obj.id.get_storage_size() <= MAX_STRING_BYTES)
    except (OSError, RuntimeError, ValueError):
        return False


def _nx_class(obj: h5py.HLObject) -> str:
    v = obj.attrs.get("NX_class", b"")
    return v.decode() if isinstance(v, bytes) else str(v)


def from_nexus(path: str, *, roots: Iterable[Path] | None = None) -> dict[str, list[str]]:
    """Catalogue fields of one NeXus/HDF5 file (empty when it is not one). Its external
    links, virtual-dataset sources and external storage must resolve inside ``roots``
    (default: the file's folder), else PermissionDenied before anything is read."""
    found: dict[str, list[str]] = {k: [] for k in KEYS}
    if not h5py.is_hdf5(path):
        return found
    with h5py.File(path, "r") as f:
        locations.check_opened_hdf5(path, f)  # the very file staging checked (no link swapped in)
        locations.check_hdf5_references(f, path, locations.hdf5_roots(path) if roots is None else roots)
        for entry in f.values():
            if not isinstance(entry, h5py.Group):
                continue
            for key, field in (
                ("title", "title"),
                ("start_time", "start_time"),
                ("proposal", "experiment_identifier"),
                ("sample", "sample/name"),
                ("instrument", "instrument/name"),
            ):
                obj = entry.get(field)
                if _small(obj):
                    found[key].append(_text(obj[()]))
            for group in entry.values():
                if isinstance(group, h5py.Group) and _nx_class(group) == "NXuser":
                    for field in ("name", "username"):
                        obj = group.get(field)
                        if _small(obj):
                            found["user"].append(_text(obj[()]))
    return found


def extract(files: Iterable[StagedFile]) -> dict[str, str]:
    """Catalogue metadata of a job's inputs, one string per key."""
    values: dict[str, list[str]] = {k: [] for k in KEYS}
    for i, f in enumerate(files):
        if i >= MAX_FILES:
            break
        try:
            one = from_nexus(str(f.path), roots=input_roots(f))
        except errors.PermissionDenied as exc:
            log.warning("catalogue: %s", exc)
            continue
        except (OSError, RuntimeError, ValueError, KeyError, errors.PanReduceError):
            continue  # unreadable inputs are the technique's to report
        for key, vals in one.items():
            for v in vals:
                if v.lower() not in PLACEHOLDERS and v not in values[key]:
                    values[key].append(v)
    out = {}
    for key, vals in values.items():
        if vals:
            shown = vals if key != "start_time" else sorted(vals)[:1]
            joined = "; ".join(shown[:MAX_VALUES]) + (" ..." if len(shown) > MAX_VALUES else "")
            out[key] = joined if len(joined) <= MAX_VALUE_CHARS else joined[: MAX_VALUE_CHARS - 3] + "..."
    return out
