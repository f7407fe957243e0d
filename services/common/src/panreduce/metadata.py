"""Metadata of any NeXus/HDF5 file: every field with its value, units and NeXus class,
and the sample, instrument and user information pulled out into one table.

``extract(path)`` is the library function behind ``panreduce metadata FILE [--json]``:
large arrays are summarised (shape, dtype, min/max/mean), never dumped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from panreduce import errors

if TYPE_CHECKING:
    from collections.abc import Iterator

    from panreduce.storage import Stores
    from panreduce.v1 import reduce_pb2 as pb

MAX_VALUES = 16  # arrays with more elements than this are summarised
MAX_TEXT = 500  # characters of a string value kept

# NeXus classes whose fields describe the sample, the instrument and the people
SAMPLE_CLASSES = ("NXsample", "SASsample", "NXsample_component", "NXenvironment")
INSTRUMENT_CLASSES = (
    "NXinstrument",
    "SASinstrument",
    "NXsource",
    "SASsource",
    "NXdetector",
    "SASdetector",
    "NXmonochromator",
    "NXcollimator",
    "SAScollimation",
    "NXaperture",
    "aperture",
    "NXbeam",
    "NXslit",
    "NXattenuator",
    "NXmirror",
    "NXinsertion_device",
    "NXpositioner",
    "NXcrystal",
    "NXmonitor",
)
USER_CLASSES = ("NXuser",)
ENTRY_FIELDS = (
    "title",
    "start_time",
    "end_time",
    "experiment_identifier",
    "experiment_description",
    "definition",
    "program_name",
    "run",
    "entry_identifier",
    "collection_description",
)


@dataclass
class Record:
    """One metadata field (a dataset or an attribute)."""

    path: str  # HDF5 path; attributes as path@name
    value: Any  # JSON-ready: number, string, short list, or a summary dict for large arrays
    units: str
    nx_class: str  # NeXus (or canSAS) class of the group holding it
    kind: str = "field"  # "field" or "attribute"


@dataclass
class Metadata:
    """What ``extract`` returns: every record and the summary table."""

    file: str
    records: list[Record]
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)  # sample/instrument/user/entry

    def __iter__(self) -> Iterator[Record]:  # iterate over the records
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "summary": self.summary, "records": [asdict(r) for r in self.records]}

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.as_dict(), allow_nan=False, default=str, **kw)

    def table(self) -> str:
        """A text table: the summary first, then every record (path, value, units, class)."""
        lines = []
        for section, values in self.summary.items():
            if not values:
                continue
            lines.append(f"[{section}]")
            for key, val in values.items():
                lines.append(f"  {key:<40} {_show(val)}")
        lines.append("")
        width = max((len(r.path) for r in self.records), default=10)
        lines.append(f"{'path':<{width}}  {'value':<40}  {'units':<10}  class")
        for r in self.records:
            lines.append(f"{r.path:<{width}}  {_show(r.value)[:40]:<40}  {r.units:<10}  {r.nx_class}")
        return "\n".join(lines)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


def _class_of(obj: h5py.HLObject) -> str:
    for key in ("NX_class", "canSAS_class"):
        v = obj.attrs.get(key)
        if v is not None:
            if isinstance(v, np.ndarray):
                v = v.ravel()[0] if v.size else ""
            return _text(v)
    return ""


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    """A JSON-ready value; arrays above MAX_VALUES elements become a summary."""
    if isinstance(value, bytes):
        return _text(value)[:MAX_TEXT]
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return _finite(value)
    arr = np.asarray(value)
    if arr.dtype.kind in "SOU":
        flat = [_text(x)[:MAX_TEXT] for x in arr.ravel()[:MAX_VALUES]]
        if arr.size == 1:
            return flat[0]
        return flat if arr.size <= MAX_VALUES else {"shape": list(arr.shape), "dtype": "string", "first": flat[:3]}
    if arr.dtype.kind == "V" or arr.dtype.names:
        return {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.size == 1:
        return _jsonable(arr.ravel()[0])
    if arr.size <= MAX_VALUES and arr.ndim == 1:
        return [_jsonable(x) for x in arr]
    return _summarise(arr)


def _summarise(arr: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {"shape": list(arr.shape), "dtype": str(arr.dtype)}
    if arr.dtype.kind in "uifb" and arr.size:
        a = arr.astype(float, copy=False)
        fin = np.isfinite(a)
        if fin.any():
            out.update(
                min=_finite(float(a[fin].min())), max=_finite(float(a[fin].max())), mean=_finite(float(a[fin].mean()))
            )
        if not fin.all():
            out["non_finite"] = int((~fin).sum())
    return out


def _dataset_value(ds: h5py.Dataset) -> Any:
    if ds.size > MAX_VALUES or ds.ndim > 1:
        # summarise without reading huge arrays whole: sample by blocks when large
        if ds.size > 5_000_000 or ds.dtype.kind not in "uifb":
            return {"shape": list(ds.shape), "dtype": str(ds.dtype)}
        return _summarise(ds[()])
    return _jsonable(ds[()])


@dataclass(frozen=True)
class WalkLimits:
    """Bounds of one metadata walk: a file that needs more is InputTooLarge."""

    max_depth: int = 64  # group nesting
    max_records: int = 100_000  # records returned
    max_objects: int = 200_000  # links looked at
    max_seconds: float = 30.0  # wall-clock time


def extract(
    path: Path | str,
    source: str | None = None,
    *,
    roots: Iterable[Path] | None = None,
    limits: WalkLimits | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Metadata:
    """Every metadata field of a NeXus/HDF5 file and the sample/instrument/user summary.

    Each object is visited once (hard-link cycles and shared groups are listed once, the
    second path as a link record); the walk stops at ``limits`` (InputTooLarge) and when
    ``cancelled()`` turns true (JobCancelled). External links, virtual-dataset sources and
    external storage must resolve inside ``roots`` (see ``panreduce.kit.readers.open_hdf5``).
    Raises ``InvalidInput`` (naming the file) for a file that is not readable HDF5."""
    from panreduce.kit.readers import open_hdf5

    path = Path(path)
    name = source or path.name
    records: list[Record] = []
    with open_hdf5(path, name, roots=roots) as f:
        _walk(f, records, limits or WalkLimits(), cancelled, name)
    return Metadata(file=name, records=records, summary=summarise(records))


def _object_token(obj: h5py.HLObject) -> tuple[int, int]:
    info = h5py.h5o.get_info(obj.id)
    return (info.fileno, info.addr)


def _walk(
    root: h5py.Group, out: list[Record], limits: WalkLimits, cancelled: Callable[[], bool] | None, name: str
) -> None:
    """Depth-first over the file without recursion; each object once."""
    started = time.monotonic()
    seen: dict[tuple[int, int], str] = {_object_token(root): "/"}
    looked = 0
    stack: list[tuple[h5py.Group, str, int]] = [(root, "", 0)]

    def add(record: Record) -> None:
        if len(out) >= limits.max_records:
            raise errors.InputTooLarge(f"{name} (metadata records)", len(out) + 1, limits.max_records)
        out.append(record)

    while stack:
        group, gclass, depth = stack.pop()
        gpath = group.name if group.name != "/" else ""
        for key, val in group.attrs.items():
            if key in ("NX_class",):
                continue
            add(Record(f"{gpath or '/'}@{key}", _jsonable(val), "", gclass, "attribute"))
        children: list[tuple[h5py.Group, str, int]] = []
        for key in group:
            looked += 1
            if looked > limits.max_objects:
                raise errors.InputTooLarge(f"{name} (objects)", looked, limits.max_objects)
            # every link (not every 256th): one dataset summary can take ~50 ms (up to 5 M
            # values read), so 256 of them would run ~13 s past a cancel or the time limit
            if cancelled is not None and cancelled():
                raise errors.JobCancelled("cancelled while reading metadata")
            if time.monotonic() - started > limits.max_seconds:
                raise errors.InputTooLarge(
                    f"{name} (seconds to read its metadata)", int(time.monotonic() - started), int(limits.max_seconds)
                )
            here = f"{gpath}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink | h5py.SoftLink):
                try:
                    obj = group[key]
                except (KeyError, OSError):
                    target = f"{link.filename}:{link.path}" if isinstance(link, h5py.ExternalLink) else link.path
                    add(Record(here, {"link": target, "resolved": False}, "", gclass))
                    continue
                if isinstance(link, h5py.SoftLink):
                    add(Record(here, {"link": link.path}, "", gclass))
                    continue
            else:
                try:
                    obj = group[key]
                except (KeyError, OSError):
                    add(Record(here, {"unreadable": "the object cannot be opened"}, "", gclass))
                    continue
            token = _object_token(obj)
            if token in seen:  # a second path to an object already listed (or a cycle)
                add(Record(here, {"link": seen[token]}, "", gclass))
                continue
            seen[token] = here
            if isinstance(obj, h5py.Group):
                if depth + 1 > limits.max_depth:
                    raise errors.InputTooLarge(f"{name} (group nesting)", depth + 1, limits.max_depth)
                children.append((obj, _class_of(obj), depth + 1))
            elif isinstance(obj, h5py.Dataset):
                units = obj.attrs.get("units", obj.attrs.get("unit", ""))
                try:
                    value = _dataset_value(obj)
                except (OSError, TypeError, ValueError) as exc:
                    value = {"unreadable": str(exc)[:200]}
                add(
                    Record(
                        here,
                        value,
                        _text(units)
                        if not isinstance(units, np.ndarray)
                        else _text(units.ravel()[0])
                        if units.size
                        else "",
                        gclass,
                    )
                )
                for akey, aval in obj.attrs.items():
                    if akey in ("units", "unit"):
                        continue
                    add(Record(f"{here}@{akey}", _jsonable(aval), "", gclass, "attribute"))
        stack.extend(reversed(children))


def to_message(m: Metadata, uri: str) -> pb.MetadataResponse:
    """The GetMetadata response for ``m``."""
    from panreduce.v1 import reduce_pb2 as pb

    return pb.MetadataResponse(
        uri=uri,
        summary_json=json.dumps(m.summary, allow_nan=False, default=str),
        records=[
            pb.MetadataRecord(
                path=r.path,
                value_json=json.dumps(r.value, allow_nan=False, default=str),
                units=r.units,
                nx_class=r.nx_class,
                kind=r.kind,
            )
            for r in m.records
        ],
    )


def of_uri(
    stores: Stores,
    uri: str,
    *,
    roots: Iterable[Path] | None = None,
    cancelled: Callable[[], bool] | None = None,
    checked: Path | None = None,
) -> pb.MetadataResponse:
    """The GetMetadata response for one file or object known to ``stores``; ``roots``:
    folders (besides the file's own) its HDF5 references may resolve into. ``checked``:
    the resolved local path the caller's access was checked on; that very path is read
    (opened without following a link swapped in since), not ``uri`` resolved again."""
    import shutil
    import tempfile

    from panreduce.locations import hdf5_roots
    from panreduce.storage import LocalStore

    store = stores.for_uri(uri)
    refs = store.list(uri)
    if len(refs) != 1 or uri.endswith("/"):
        raise errors.InvalidRequest(f"{uri}: name one file, not a folder or prefix ({len(refs)} objects)")
    extra = list(roots or ())
    if isinstance(store, LocalStore):
        path = checked if checked is not None else store.path_of(uri)
        try:
            from panreduce.locations import pin

            pin(path)  # the file checked is the one read: a link swapped in since is refused
        except (FileNotFoundError, IsADirectoryError):
            raise errors.ObjectNotFound(uri) from None
        return to_message(extract(path, source=uri, roots=hdf5_roots(path, extra), cancelled=cancelled), uri)
    scratch = Path(tempfile.mkdtemp(prefix="panreduce-metadata-"))
    try:
        path = store.stage(refs[0], scratch)
        return to_message(extract(path, source=uri, roots=hdf5_roots(path, extra), cancelled=cancelled), uri)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def from_message(resp: pb.MetadataResponse) -> Metadata:
    """A GetMetadata response as a Metadata (client side)."""
    return Metadata(
        resp.uri,
        [Record(r.path, json.loads(r.value_json), r.units, r.nx_class, r.kind) for r in resp.records],
        json.loads(resp.summary_json or "{}"),
    )


def summarise(records: list[Record]) -> dict[str, dict[str, Any]]:
    """Sample, instrument, user and entry information from the records, keyed by a short
    name (``<group>/<field>`` under its class's group)."""
    summary: dict[str, dict[str, Any]] = {"entry": {}, "sample": {}, "instrument": {}, "user": {}}
    for r in records:
        if r.kind != "field" or (isinstance(r.value, dict) and "shape" in r.value):
            continue
        parts = r.path.strip("/").split("/")
        short = "/".join(parts[-2:]) if len(parts) > 1 else parts[-1]
        value = f"{r.value} {r.units}".strip() if r.units and not isinstance(r.value, dict | list) else r.value
        if r.nx_class in SAMPLE_CLASSES:
            section = "sample"
        elif r.nx_class in USER_CLASSES:
            section = "user"
        elif r.nx_class in INSTRUMENT_CLASSES:
            section = "instrument"
        elif r.nx_class in ("NXentry", "SASentry", "NXsubentry") and parts[-1] in ENTRY_FIELDS:
            section = "entry"
        else:
            continue
        if short in summary[section]:  # the same group/field name elsewhere: use the full path
            short = r.path
        summary[section][short] = value
    return summary
