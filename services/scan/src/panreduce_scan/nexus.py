"""Read one Diamond I16 NeXus scan file into a :class:`ScanData`.

GDA has written I16 scans in several layouts over the years; this module copes with

* the 2019 layout (``entry1``): a ``measurement`` NXdata group holding every per-point
  column, ``before_scan`` NXcollections holding the scalar metadata (``Ta``, ``en``,
  ``psi``, ``Transmission``, ``rc`` ...), NXpositioner/NXdetector groups under
  ``instrument``;
* older files without a ``measurement`` group: the columns are read from the
  NXpositioner / NXdetector groups under ``instrument``;
* the 2024 layout (``entry``): ``measurement`` holds only the positioners (its declared
  signal may be the ring current ``rc``), the detector counters live in
  ``instrument/<detector>/roiN.total`` and in one NXdata per counter, scalar metadata
  in ``instrument`` NXcollections (with ``value`` datasets for positioners), and the
  scan command in ``diamond_scan/scan_command``.

Axis rule (``axis="auto"``)
    1. Commanded scannables, in order: the scannable named by the scan command (``scan
       eta ...`` -> ``eta``; ``scan hkl [..] [..] [0,0,0.001]`` -> the h/k/l component
       with the largest step, then the other components), the groups GDA marks
       ``scan_role="scannable"``, the ``measurement`` group's ``@axes``, datasets marked
       ``primary="1"``. The first of these that actually varies is the scan axis
       (an ``scan hkl`` along k therefore gives ``k`` even though the file declares
       ``h``; the diffractometer motors that move as a consequence, kth/kphi/..., are
       never preferred over the commanded scannable).
    2. If none of them varies (or the file names none), the varying positioner column
       whose values are most nearly linear in the point index (a commanded motor moves
       in equal steps; R^2 of a straight line), ties broken by the larger relative range.
    3. Nothing varies -> ``InvalidInput``.

    "Varies" means peak-to-peak > max(1e-9, 1e-7 * max|x|): the 1e-13 rounding noise of
    ``h`` in a k scan is constant.

Signal rule (``signal="auto"``)
    Monitors and bookkeeping columns (``rc`` ring current, ``ic1monitor``, times,
    ``count_time``, ``beamOK``, ``path``, pixel positions ``maxx``/``maxy``) are never a
    signal, even when the file declares one as such (the 2024 file declares ``rc``).
    Candidates, in order: the declared signal if it is a detector counter and not all
    zero; ROI sums (``roiN_sum``, ``roiN.total``) that are not all zero, the ROI named in
    the scan command first, then roi2, roi1, roi3, ...; the detector ``sum``/``total``;
    any other NXdetector column (``maxval`` last); then all-zero ROI sums. A file whose
    only per-point counters are monitors raises ``InvalidInput`` ("no detector signal").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from panreduce.errors import InputTooLarge, InvalidInput
from panreduce.kit.readers import memory_ceiling, open_checked, read_dataset
from panreduce.nexus import nx_class, read_text

#: Per-point columns that are monitors or bookkeeping: never a signal, never an axis.
MONITOR_NAMES = frozenset(
    {
        "rc",
        "ic1monitor",
        "ic2monitor",
        "monitor",
        "TimeSec",
        "TimeFromEpoch",
        "beamOK",
        "count_time",
        "path",
        "atime",
        "atimetwo",
        "delta_axis_offset",
        "Time",
        "time",
        "epoch",
        "t",
    }
)
#: Detector columns that are pixel positions, not intensities.
_PIXEL_POSITION = re.compile(r"(^|[._])max_?[xy]$")
_ROI_SUM = re.compile(r"^(?:.*\.)?roi(\d+)(?:_sum|\.total)$")
_DETECTOR_TOTAL = re.compile(r"^(?:.*\.)?(sum|total)$")
_MAXVAL = re.compile(r"(^|[._])max_?val$")
_TIME_LIKE = re.compile(r"(?i)^(time.*|.*time|day|hours|minutes|seconds|year|month|epoch)$")

#: Units of common I16 scannables when the file does not say.
KNOWN_UNITS = {
    **{
        m: "deg"
        for m in (
            "eta",
            "chi",
            "phi",
            "mu",
            "delta",
            "gam",
            "kth",
            "kap",
            "kphi",
            "kmu",
            "kdelta",
            "kgam",
            "psi",
            "azimuth",
            "tthp",
            "thp",
            "stokes",
            "bragg",
            "alpha",
            "beta",
        )
    },
    **{m: "r.l.u." for m in ("h", "k", "l")},
    "en": "keV",
    "energy": "keV",
    **{m: "K" for m in ("Ta", "Tb", "Tc", "Td", "Tset", "Tsample", "T")},
    **{m: "mm" for m in ("sx", "sy", "sz", "spara", "sperp", "x", "y", "z")},
}


@dataclass(frozen=True)
class ScanData:
    """One scan, read from one file. Arrays are per scan point (length ``n_points``)."""

    file: str  # file name (what errors and outputs call it)
    scan: int | str  # scan number (int when numeric)
    entry: str  # NXentry the scan was read from
    axis: str  # the scanned axis (the one that varies)
    axis_values: np.ndarray  # its positions, in ``axis_units``
    axis_units: str
    declared_axis: str | None  # what the file declares (may differ from ``axis``)
    signal: str  # name of the detector column used
    counts: np.ndarray  # raw detector counts per point
    count_time: np.ndarray  # s, per point
    transmission: float | np.ndarray  # attenuator transmission (0..1], scalar or per point
    ring_current: np.ndarray | None  # mA per point (or broadcast scalar); None if absent
    monitor: np.ndarray | None  # ic1monitor per point, if recorded (not used to normalise)
    scan_command: str
    metadata: dict[str, float] = field(default_factory=dict)  # scalar metadata (Ta, en, psi...)
    start_time: str | None = None
    notes: tuple[str, ...] = ()  # what the reader decided and why

    @property
    def n_points(self) -> int:
        return int(self.axis_values.size)


# --------------------------------------------------------------------------------------
# small helpers


def _attr_list(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return [read_text(v) for v in value.reshape(-1)]
    return [read_text(value)]


def _scalar(ds: h5py.Dataset | _Leaf) -> float | None:
    dtype, shape = ds.dtype, ds.shape
    if dtype.kind not in "fiu" or shape is None or math.prod(shape) != 1 or len(shape) > 2:
        return None
    out = np.empty(shape, dtype=dtype)  # the low-level read: a third of ds[()]'s time
    ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
    value = float(out.reshape(-1)[0])
    return value if math.isfinite(value) else None


def varies(values: np.ndarray) -> bool:
    """True when ``values`` change by more than rounding noise (see the module doc)."""
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return False
    ptp = float(finite.max() - finite.min())
    return ptp > max(1e-9, 1e-7 * float(np.abs(finite).max()))


def _linearity(values: np.ndarray) -> float:
    """R^2 of a straight line through ``values`` against the point index."""
    idx = np.arange(values.size, dtype=float)
    if values.size < 3 or not varies(values):
        return 0.0
    r = np.corrcoef(idx, values)[0, 1]
    return float(r * r) if np.isfinite(r) else 0.0


@dataclass
class _Column:
    name: str
    values: np.ndarray
    kind: str  # "positioner", "detector", "monitor", "other"
    path: str
    units: str = ""
    aliases: tuple[str, ...] = ()
    scan_role: str = ""
    primary: bool = False


# --------------------------------------------------------------------------------------
# scan command


def parse_scan_command(command: str) -> tuple[list[str], list[float] | None, str | None]:
    """The scannables a GDA scan command moves, the hkl step vector if given, and the ROI
    it counts. ``"scan eta 29.7 30.3 0.01 BeamOK pil3_100k 1 roi2"`` -> (["eta"], None,
    "roi2"); ``"scan hkl [..] [..] [0, 0, 0.001] ..."`` -> (["hkl"], [0, 0, 0.001], None).
    """
    # normalise lists to single tokens
    flat = re.sub(r"\[([^\]]*)\]", lambda m: "[" + m.group(1).replace(" ", "") + "]", command)
    tokens = flat.split()
    if not tokens:
        return [], None, None
    scannables: list[str] = []
    step_vector: list[float] | None = None
    if re.match(r"^(c?scan\w*|a?scan|rscan|dscan|pos|ascan|cscan|scancn)$", tokens[0]):
        if len(tokens) > 1 and re.match(r"^[A-Za-z_][\w.]*$", tokens[1]):
            scannables.append(tokens[1])
        lists = [t for t in tokens[2:5] if t.startswith("[")]
        if tokens[1:2] == ["hkl"] and len(lists) >= 3:
            try:
                step_vector = [float(v) for v in lists[2].strip("[]").split(",")]
            except ValueError:
                step_vector = None
    roi = next((t for t in tokens if re.fullmatch(r"roi\d+", t)), None)
    return scannables, step_vector, roi


# --------------------------------------------------------------------------------------
# reading


def read_scan(
    path: str | Path, *, axis: str = "auto", signal: str = "auto", min_points: int = 7, name: str | None = None
) -> ScanData:
    """Read the scan in the NeXus file ``path``.

    ``axis``/``signal``: a column name, or "auto" for the rules in the module doc.
    ``min_points``: fewer scan points than this is an error. ``name``: how errors call the
    file (default: its file name). Raises ``InvalidInput`` naming the file.
    """
    path = Path(path)
    source = name or path.name
    try:
        if not path.is_file():
            raise InvalidInput(source, "no such file")
        if not h5py.is_hdf5(path):
            raise InvalidInput(source, "not an HDF5/NeXus file (no HDF5 signature)")
        with open_checked(path, source) as f:
            return _read(f, source, path, axis=axis, signal=signal, min_points=min_points)
    except InvalidInput:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise InvalidInput(source, f"cannot be read as HDF5/NeXus (truncated or corrupt?): {exc}") from None


def _find_entry(f: h5py.File, source: str) -> h5py.Group:
    entries = [
        f[k]
        for k in f
        if isinstance(f.get(k, getlink=True), h5py.HardLink)
        and isinstance(f[k], h5py.Group)
        and nx_class(f[k]) == "NXentry"
    ]
    if not entries:
        raise InvalidInput(source, "no NXentry group (not a NeXus scan file)")
    return entries[0]


_EXTERNAL = h5py.h5l.TYPE_EXTERNAL
_GROUP_ID, _DATASET_ID = h5py.h5g.GroupID, h5py.h5d.DatasetID


class _Leaf:
    """A dataset as the walks see it: its dtype and shape from the low-level handle, the
    h5py Dataset built only when its attributes or values are read (building one for each
    of a file's ~300 datasets was a third of the walks' time)."""

    __slots__ = ("_ds", "dtype", "id", "name", "shape")

    def __init__(self, oid: h5py.h5d.DatasetID, name: str) -> None:
        self.id, self.name = oid, name
        self.dtype, self.shape = oid.dtype, oid.shape
        self._ds: h5py.Dataset | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape) if self.shape is not None else 0

    @property
    def size(self) -> int:
        return math.prod(self.shape) if self.shape is not None else 0

    @property
    def dataset(self) -> h5py.Dataset:
        if self._ds is None:
            self._ds = h5py.Dataset(self.id)
        return self._ds

    @property
    def attrs(self) -> h5py.AttributeManager:
        return self.dataset.attrs


class _View:
    """One file's objects as the reader walks them, each listed, opened and read once: the
    column, metadata and transmission walks cross the same groups (a file's ~300 objects
    were opened about three times each, and the walks were most of a scan's read time)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.max_bytes = memory_ceiling()  # once per file, not per dataset
        self._children: dict[str, list[tuple[str, h5py.Group | _Leaf]]] = {}
        self._classes: dict[str, str] = {}
        self._scalars: dict[str, float | None] = {}
        self._paths: dict[int, str] = {}  # id(Group) -> its path, for the groups listed here

    def path(self, group: h5py.Group) -> str:
        """``group.name`` without asking the library again for a group this view listed
        (the path it was opened by: its parent's path and its link name)."""
        return self._paths.get(id(group)) or group.name

    def children(self, group: h5py.Group) -> list[tuple[str, h5py.Group | _Leaf]]:
        """(name, object) for the hard/soft-linked children, groups as h5py Groups and
        datasets as :class:`_Leaf` (external links are skipped: the 2024 layout links
        detector images from files that are not staged)."""
        key = self.path(group)
        listed = self._children.get(key)
        if listed is None:
            listed = []
            gid = group.id
            prefix = key.rstrip("/")
            links: list[tuple[bytes, int]] = []
            # one listing with the link types, in h5py's order (creation order where tracked)
            tracked = gid.get_create_plist().get_link_creation_order() & h5py.h5p.CRT_ORDER_TRACKED
            gid.links.iterate(
                lambda raw, info: links.append((raw, info.type)),
                idx_type=h5py.h5.INDEX_CRT_ORDER if tracked else h5py.h5.INDEX_NAME,
                info=True,
            )
            append, decode, h5o_open = listed.append, group._d, h5py.h5o.open
            for raw, link_type in links:
                if link_type == _EXTERNAL:
                    continue
                try:
                    oid = h5o_open(gid, raw)
                except (KeyError, OSError, RuntimeError):
                    continue
                if isinstance(oid, _GROUP_ID):
                    name = decode(raw)
                    child = h5py.Group(oid)
                    self._paths[id(child)] = f"{prefix}/{name}"
                    append((name, child))
                elif isinstance(oid, _DATASET_ID):
                    name = decode(raw)
                    append((name, _Leaf(oid, f"{prefix}/{name}")))
            self._children[key] = listed
        return listed

    def close(self) -> None:
        """Drop every handle this view opened: the file then closes without hunting down
        ~300 still-open objects (h5py's close does that object by object)."""
        self._children.clear()
        self._paths.clear()

    def nx_class(self, group: h5py.Group) -> str:
        key = self.path(group)
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = nx_class(group)
        return cls

    def scalar(self, ds: _Leaf) -> float | None:
        key = ds.name
        if key not in self._scalars:
            self._scalars[key] = _scalar(ds)
        return self._scalars[key]

    def numeric_1d(self, ds: _Leaf | h5py.Dataset) -> np.ndarray | None:
        if ds.dtype.kind not in "fiub" or ds.ndim != 1:
            return None
        if isinstance(ds, _Leaf) and ds.dtype.kind != "b":
            # the low-level read into an array of the declared type (an h5py Dataset and
            # its reader built per column were most of a column's read time), after the
            # same memory-ceiling check as read_dataset
            nbytes = ds.size * ds.dtype.itemsize
            if nbytes > self.max_bytes:
                raise InputTooLarge(f"{self.source}: {ds.name} (shape {ds.shape})", nbytes, self.max_bytes)
            out = np.empty(ds.shape, dtype=ds.dtype)
            if out.size:
                ds.id.read(h5py.h5s.ALL, h5py.h5s.ALL, out)
            return out.astype(float, copy=False)
        dset = ds.dataset if isinstance(ds, _Leaf) else ds
        return np.asarray(read_dataset(dset, source=self.source, max_bytes=self.max_bytes), dtype=float)


def _column_kind(name: str, group_class: str, scan_role: str) -> str:
    leaf = name.split(".")[-1]
    if name in MONITOR_NAMES or leaf in MONITOR_NAMES:
        return "monitor"
    if _ROI_SUM.match(name) or _DETECTOR_TOTAL.match(name) or group_class == "NXdetector":
        return "detector"
    if group_class == "NXpositioner" or scan_role in ("scannable", "monitor_per_point"):
        return "positioner"
    return "other"


def _collect_columns(entry: h5py.Group, view: _View) -> tuple[dict[str, _Column], h5py.Group | None]:
    columns: dict[str, _Column] = {}
    aliases: dict[str, str] = {}

    def add(col: _Column) -> None:
        if col.name in columns:
            existing = columns[col.name]
            if existing.kind == "other" and col.kind != "other":
                existing.kind = col.kind
            if col.primary:
                existing.primary = True
            if col.scan_role and not existing.scan_role:
                existing.scan_role = col.scan_role
            if col.units and not existing.units:
                existing.units = col.units
            for a in col.aliases:
                aliases.setdefault(a, col.name)
            return
        columns[col.name] = col
        for a in col.aliases:
            aliases.setdefault(a, col.name)

    measurement = entry.get("measurement")
    if isinstance(measurement, h5py.Group):
        for key, obj in view.children(measurement):
            if isinstance(obj, _Leaf):
                values = view.numeric_1d(obj)
                if values is not None:
                    add(
                        _Column(
                            key, values, _column_kind(key, "", ""), obj.name, read_text(obj.attrs.get("units", b""))
                        )
                    )
    else:
        measurement = None

    instrument = next(
        (
            obj
            for _, obj in view.children(entry)
            if isinstance(obj, h5py.Group) and view.nx_class(obj) == "NXinstrument"
        ),
        None,
    )
    if instrument is not None:
        for gname, group in view.children(instrument):
            if not isinstance(group, h5py.Group):
                continue
            gclass = view.nx_class(group)
            if gclass in ("NXtransformations", "NXsource", "NXattenuator"):
                continue
            role = read_text(group.attrs.get("scan_role", b""))
            for dname, ds in view.children(group):
                if not isinstance(ds, _Leaf):
                    continue
                values = view.numeric_1d(ds)
                if values is None or values.size < 2:
                    continue
                if dname in ("soft_limit_max", "soft_limit_min"):
                    continue
                cname = gname if dname == "value" else dname
                alias = (f"{gname}.{dname}",) if dname != "value" else ()
                kind = _column_kind(cname, gclass, role)
                add(
                    _Column(
                        cname,
                        values,
                        kind,
                        ds.name,
                        read_text(ds.attrs.get("units", b"")),
                        aliases=alias,
                        scan_role=role,
                        primary=read_text(ds.attrs.get("primary", b"")) == "1",
                    )
                )
    # other NXdata groups of the entry: their declared signal columns
    for gname, group in view.children(entry):
        if not isinstance(group, h5py.Group) or view.nx_class(group) != "NXdata":
            continue
        if gname == "measurement":
            continue
        sig = read_text(group.attrs.get("signal", b""))
        if sig and isinstance(group.get(sig), h5py.Dataset):
            values = view.numeric_1d(group[sig])
            if values is not None:
                add(_Column(sig, values, _column_kind(sig, "", ""), group[sig].name))
    for alias, target in aliases.items():
        if alias not in columns:
            columns[alias] = columns[target]
    return columns, measurement


def _collect_metadata(entry: h5py.Group, skip: set[str], view: _View | None = None) -> dict[str, float]:
    """Scalar numeric metadata by leaf name (first occurrence wins; ``value`` datasets are
    named by their group). before_scan (2019 layout) is read first."""
    found: dict[str, float] = {}
    view = view or _View(entry.file.filename)

    def visit(group: h5py.Group, depth: int) -> None:
        if depth > 4:
            return
        for key, obj in view.children(group):
            if isinstance(obj, h5py.Group):
                if view.nx_class(obj) in ("NXdata", "NXtransformations") or key == "measurement":
                    continue
                visit(obj, depth + 1)
            elif isinstance(obj, _Leaf):
                if obj.ndim > 1 and obj.size != 1:
                    continue
                value = view.scalar(obj)
                if value is None:
                    continue
                name = view.path(group).rsplit("/", 1)[-1] if key == "value" else key
                if name in skip:
                    continue
                found.setdefault(name, value)

    before = entry.get("before_scan")
    if isinstance(before, h5py.Group):
        visit(before, 0)
    visit(entry, 0)
    return found


def _scan_number(entry: h5py.Group, f: h5py.File, path: Path) -> int | str:
    candidates = []
    if isinstance(entry.get("entry_identifier"), h5py.Dataset):
        candidates.append(read_text(entry["entry_identifier"][()]))
    candidates.append(Path(read_text(f.attrs.get("file_name", b""))).stem)
    candidates.append(path.stem)
    for c in candidates:
        m = re.search(r"(\d+)$", c) or re.search(r"(\d{3,})", c)
        if m:
            return int(m.group(1))
    return path.stem


def _scan_command(entry: h5py.Group) -> str:
    for key in ("scan_command", "diamond_scan/scan_command", "title"):
        obj = entry.get(key)
        if isinstance(obj, h5py.Dataset):
            text = read_text(obj[()]).strip()
            if text:
                return text
    return ""


def _choose_axis(
    columns: dict[str, _Column], n: int, command: str, declared: str | None, requested: str, source: str
) -> tuple[str, list[str]]:
    notes: list[str] = []
    usable = {k: c for k, c in columns.items() if c.values.size == n}
    if requested != "auto":
        col = usable.get(requested)
        if col is None:
            names = sorted(k for k, c in usable.items() if c.kind in ("positioner", "other"))
            raise InvalidInput(
                source,
                f"requested axis {requested!r} is not a per-point column of this scan (available: {', '.join(names)})",
            )
        if not varies(col.values):
            raise InvalidInput(source, f"requested axis {requested!r} does not vary in this scan")
        return col.name, notes

    scannables, step_vector, _ = parse_scan_command(command)
    commanded: list[str] = []
    for s in scannables:
        if s == "hkl" or (s not in usable and all(c in usable for c in s)):
            comps = list(s) if s != "hkl" else ["h", "k", "l"]
            if step_vector and len(step_vector) == len(comps):
                comps = [c for _, c in sorted(zip((-abs(v) for v in step_vector), comps, strict=True))]
            commanded += comps
        else:
            commanded.append(s)
    commanded += [k for k, c in usable.items() if c.scan_role == "scannable"]
    if declared:
        commanded.append(declared)
    commanded += [k for k, c in usable.items() if c.primary]

    seen: set[str] = set()
    for cand in commanded:
        if cand in seen:
            continue
        seen.add(cand)
        col = usable.get(cand)
        if col is None or col.kind in ("monitor", "detector"):
            continue
        if not varies(col.values):
            notes.append(f"commanded/declared axis {cand!r} is constant in this scan")
            continue
        if declared and col.name != declared:
            notes.append(f"file declares axis {declared!r}; the scanned axis is {col.name!r}")
        return col.name, notes

    ranked = sorted(
        (
            (_linearity(c.values), float(np.ptp(c.values)) / (abs(c.values).max() + 1e-12), k)
            for k, c in usable.items()
            if c.kind in ("positioner", "other") and k == c.name and not _TIME_LIKE.match(k) and varies(c.values)
        ),
        reverse=True,
    )
    if not ranked:
        raise InvalidInput(source, "no varying axis: no positioner changes during the scan")
    chosen = ranked[0][2]
    notes.append(f"no commanded axis varies; chose {chosen!r}, the most evenly stepped column")
    return chosen, notes


def _choose_signal(
    columns: dict[str, _Column], n: int, declared: str | None, command_roi: str | None, requested: str, source: str
) -> str:
    usable = {k: c for k, c in columns.items() if c.values.size == n}
    if requested != "auto":
        col = usable.get(requested)
        if col is None:
            names = sorted(k for k, c in usable.items() if c.kind == "detector" and k == c.name)
            raise InvalidInput(
                source,
                f"requested signal {requested!r} is not a per-point column of this scan "
                f"(detector columns: {', '.join(names) or 'none'})",
            )
        return col.name

    detectors = {
        k: c for k, c in usable.items() if k == c.name and c.kind == "detector" and not _PIXEL_POSITION.search(k)
    }
    if not detectors:
        monitors = sorted(k for k, c in usable.items() if c.kind == "monitor" and k == c.name)
        raise InvalidInput(
            source,
            "no detector signal: the only per-point counters are monitors/bookkeeping "
            f"({', '.join(monitors) or 'none'})",
        )

    def nonzero(c: _Column) -> bool:
        return bool(np.any(np.nan_to_num(c.values) != 0))

    if declared in detectors and nonzero(detectors[declared]):
        return declared  # type: ignore[return-value]

    def roi_rank(name: str) -> tuple[int, int]:
        num = int(_ROI_SUM.match(name).group(1))  # type: ignore[union-attr]
        if command_roi and command_roi == f"roi{num}":
            return (0, 0)
        return (1, {2: 0, 1: 1}.get(num, num))

    rois = sorted((k for k in detectors if _ROI_SUM.match(k)), key=roi_rank)
    totals = [k for k in detectors if _DETECTOR_TOTAL.match(k) and not _ROI_SUM.match(k)]
    others = [k for k in detectors if k not in rois and k not in totals and not _MAXVAL.search(k)]
    maxvals = [k for k in detectors if _MAXVAL.search(k)]
    for group in (rois, totals, others, maxvals):
        for k in group:
            if nonzero(detectors[k]):
                return k
    return (rois + totals + others + maxvals)[0]


def _find_transmission(entry: h5py.Group, columns: dict[str, _Column], n: int, view: _View):
    col = columns.get("Transmission")
    if col is not None and col.values.size == n:
        return col.values, "per-point Transmission column"
    found: list[tuple[int, float, str]] = []

    def visit(group: h5py.Group, depth: int) -> None:
        if depth > 4:
            return
        for key, obj in view.children(group):
            if isinstance(obj, h5py.Group):
                if view.nx_class(obj) == "NXdata":
                    continue
                visit(obj, depth + 1)
            elif isinstance(obj, _Leaf) and obj.size == 1:
                rank = {"attenuator_transmission": 0, "Transmission": 1, "transmission": 2}.get(key)
                if rank is not None:
                    value = view.scalar(obj)
                    if value is not None:
                        found.append((rank, value, obj.name))

    visit(entry, 0)
    if not found:
        return None, "no transmission recorded"
    found.sort()
    return found[0][1], found[0][2]


def _read(f: h5py.File, source: str, path: Path, *, axis: str, signal: str, min_points: int) -> ScanData:
    entry = _find_entry(f, source)
    view = _View(source)
    try:
        return _read_view(f, entry, view, source, path, axis=axis, signal=signal, min_points=min_points)
    finally:
        view.close()


def _read_view(
    f: h5py.File, entry: h5py.Group, view: _View, source: str, path: Path, *, axis: str, signal: str, min_points: int
) -> ScanData:
    columns, measurement = _collect_columns(entry, view)
    notes: list[str] = []
    if measurement is None:
        notes.append("no measurement group: columns read from the instrument groups")
    declared_axis = declared_signal = None
    if measurement is not None:
        axes = _attr_list(measurement.attrs.get("axes"))
        declared_axis = axes[0] if axes and axes[0] != "." else None
        declared_signal = read_text(measurement.attrs.get("signal", b"")) or None
    if declared_axis is None:
        declared_axis = next((k for k, c in columns.items() if c.primary), None)

    if not columns:
        raise InvalidInput(source, "no per-point data (no measurement group, no scan columns)")
    # number of scan points: the declared axis's length, else the most common length
    lengths = [c.values.size for c in columns.values() if c.kind != "other"]
    if declared_axis in columns:
        n = columns[declared_axis].values.size
    else:
        lengths = lengths or [c.values.size for c in columns.values()]
        n = int(np.bincount(lengths).argmax())

    command = _scan_command(entry)
    axis_name, axis_notes = _choose_axis(columns, n, command, declared_axis, axis, source)
    notes += axis_notes
    _, _, command_roi = parse_scan_command(command)
    signal_name = _choose_signal(columns, n, declared_signal, command_roi, signal, source)
    if declared_signal and signal_name != declared_signal and signal == "auto":
        notes.append(f"file declares signal {declared_signal!r}; using detector {signal_name!r}")

    x = columns[axis_name].values
    counts = columns[signal_name].values
    if n < min_points:
        raise InvalidInput(source, f"only {n} scan points; at least {min_points} are needed")
    if not np.all(np.isfinite(x)):
        raise InvalidInput(source, f"axis {axis_name!r} contains NaN/inf values")
    if not np.all(np.isfinite(counts)):
        raise InvalidInput(source, f"signal {signal_name!r} contains NaN/inf values")

    count_time = columns.get("count_time")
    if count_time is not None and count_time.values.size == n:
        t = count_time.values
    else:
        t = np.ones(n)
        notes.append("no count_time recorded: 1 s assumed")
    if not np.all(np.isfinite(t) & (t > 0)):
        raise InvalidInput(source, "count_time has zero, negative or NaN values")

    transmission, where = _find_transmission(entry, columns, n, view)
    if transmission is None:
        transmission = 1.0
        notes.append("no attenuator transmission recorded: 1 assumed")
    if not np.all(np.isfinite(transmission) & (np.asarray(transmission) > 0)):
        raise InvalidInput(source, f"transmission {transmission!r} at {where} is not > 0")

    metadata = _collect_metadata(entry, skip=set(), view=view)
    ring = columns.get("rc")
    if ring is not None and ring.values.size == n and np.all(ring.values > 0):
        ring_current: np.ndarray | None = ring.values
    else:
        scalar_rc = metadata.get("rc") or metadata.get("current")
        ring_current = np.full(n, scalar_rc) if scalar_rc and scalar_rc > 0 else None
    monitor_col = columns.get("ic1monitor")
    monitor = monitor_col.values if monitor_col is not None and monitor_col.values.size == n else None

    # per-point environment columns: their scan mean replaces the before-scan value
    for k, c in columns.items():
        if k == c.name and k != axis_name and c.values.size == n and k in metadata:
            if np.all(np.isfinite(c.values)):
                metadata[k] = float(np.mean(c.values))

    start = entry.get("start_time")
    if not isinstance(start, h5py.Dataset):
        start = entry.get("diamond_scan/start_time")
    start_time = read_text(start[()]) if isinstance(start, h5py.Dataset) else None

    units = columns[axis_name].units or KNOWN_UNITS.get(axis_name, "")
    return ScanData(
        file=source,
        scan=_scan_number(entry, f, path),
        entry=entry.name.lstrip("/"),
        axis=axis_name,
        axis_values=np.array(x, dtype=float),
        axis_units=units,
        declared_axis=declared_axis,
        signal=signal_name,
        counts=np.array(counts, dtype=float),
        count_time=np.array(t, dtype=float),
        transmission=transmission if np.ndim(transmission) else float(transmission),
        ring_current=None if ring_current is None else np.array(ring_current, dtype=float),
        monitor=None if monitor is None else np.array(monitor, dtype=float),
        scan_command=command,
        metadata=metadata,
        start_time=start_time,
        notes=tuple(notes),
    )
