"""Reading 4D-STEM scans: Merlin ``.mib`` (+ ``.hdr``) and HDF5 4-D stacks (NeXus NXdata,
fpd / EMD groups, or a named dataset), always in blocks of scan rows.

``open_scan`` returns a :class:`Scan4D`: the (scan y, scan x, detector y, detector x)
shape, the scan step in nm where the file states it, and ``read_rows(r0, r1)`` giving
the frames of rows [r0, r1) as a native-endian array: memory is bounded by the block.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import errors, nexus
from panreduce_stem4d import mib

MAX_SCAN = 8192  # positions per scan axis
MAX_DETECTOR = 4096  # pixels per detector axis
_LENGTH_NM = {
    "nm": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "micron": 1e3,
    "a": 0.1,
    "å": 0.1,
    "angstrom": 0.1,
    "m": 1e9,
    "mm": 1e6,
    "pm": 1e-3,
}


@dataclass
class Scan4D:
    """A 4D-STEM scan, read lazily by rows."""

    source: str  # file name for messages
    shape: tuple[int, int, int, int]  # scan y, scan x, detector y, detector x
    dtype: np.dtype
    read_rows: Callable[[int, int], np.ndarray]
    close: Callable[[], None] = lambda: None
    # read_frames(f0, f1, out): frames [f0, f1) (flat over scan y, x) into the caller's
    # (f1 - f0, dy, dx) native array (no allocation); None where only rows are read
    read_frames: Callable[[int, int, np.ndarray], None] | None = None
    step_nm: tuple[float, float] | None = None  # (y, x)
    energy_kev: float | None = None
    layout: str = ""  # "mib 1x1", "mib 2x2", "hdf5 /path"
    metadata: dict[str, Any] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)  # simultaneous 2-D images (e.g. HAADF)

    @property
    def frame_bytes(self) -> int:
        return self.shape[2] * self.shape[3] * self.dtype.itemsize

    def __enter__(self) -> Scan4D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_shape(source: str, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    if len(shape) != 4:
        raise errors.InvalidInput(
            source, f"expected a 4-D (scan y, scan x, detector y, detector x) array, got shape {shape}"
        )
    ny, nx, dy, dx = (int(s) for s in shape)
    if min(shape) < 1 or ny > MAX_SCAN or nx > MAX_SCAN or dy > MAX_DETECTOR or dx > MAX_DETECTOR:
        raise errors.InvalidInput(
            source, f"shape {shape} is outside the limits (scan ≤ {MAX_SCAN}, detector ≤ {MAX_DETECTOR} per axis)"
        )
    if dy < 8 or dx < 8:
        raise errors.InvalidInput(source, f"detector {dy} x {dx} is too small for a diffraction pattern")
    return ny, nx, dy, dx


def scan_shape_for(n_frames: int, per_trigger: int | None) -> tuple[int, int]:
    """The scan (rows, columns) of ``n_frames`` when the caller did not give it: the
    ``.hdr``'s frames per trigger when it divides the frames, else a square, else one row."""
    if per_trigger and per_trigger > 1 and n_frames % per_trigger == 0:
        return n_frames // per_trigger, per_trigger
    side = math.isqrt(n_frames)
    if side * side == n_frames:
        return side, side
    return 1, n_frames


def open_mib(
    path: Path, source: str, *, scan_shape: tuple[int, int] | None = None, hdr_path: Path | None = None
) -> Scan4D:
    try:
        head, frames = mib.open_frames(path)
        mib.check_headers(path, head, frames.shape[0])
    except mib.MibFormatError as exc:
        raise errors.InvalidInput(source, str(exc)) from None
    hdr: dict[str, str] = {}
    hdr_path = hdr_path or path.with_suffix(".hdr")
    if hdr_path.is_file():
        hdr = mib.parse_hdr(hdr_path.read_text(errors="replace"))
    n = frames.shape[0]
    if scan_shape is not None:
        ny, nx = scan_shape
        if ny * nx > n:
            raise errors.InvalidInput(source, f"scan_shape {ny} x {nx} needs {ny * nx} frames; the file has {n}")
    else:
        ny, nx = scan_shape_for(n, mib.frames_per_trigger(hdr))
    shape = _check_shape(source, (ny, nx, head.height, head.width))
    native = head.dtype.newbyteorder("=")

    def read_rows(r0: int, r1: int) -> np.ndarray:
        block = frames[r0 * nx : r1 * nx]
        return np.asarray(block, dtype=native).reshape(r1 - r0, nx, head.height, head.width)

    def read_frames(f0: int, f1: int, out: np.ndarray) -> None:
        np.copyto(out, frames[f0:f1])  # to native order in the copy

    meta = {
        "counter_depth": head.counter_depth,
        "exposure_s": head.exposure_s,
        "chips": head.chips,
        "assembly": head.layout,
        "thresholds_kev": list(head.thresholds_kev),
        "frames_in_file": n,
    }
    meta.update({f"hdr/{k}": v for k, v in hdr.items()})
    return Scan4D(
        source=source,
        shape=shape,
        dtype=native,
        read_rows=read_rows,
        read_frames=read_frames,
        layout=f"mib {head.layout}",
        metadata=meta,
    )


def _units_nm(units: Any) -> float | None:
    return _LENGTH_NM.get(nexus.read_text(units).strip().lower()) if units is not None else None


def _axis_step_nm(ds: h5py.Dataset | None) -> float | None:
    if ds is None or ds.ndim != 1 or ds.shape[0] < 2:
        return None
    scale = _units_nm(ds.attrs.get("units"))
    if scale is None:
        return None
    values = ds[()].astype(float)
    step = float(np.median(np.diff(values))) * scale
    return abs(step) if np.isfinite(step) and step != 0 else None


def _nxdata_signal(f: h5py.File) -> tuple[h5py.Dataset, list[h5py.Dataset | None]] | None:
    """The 4-D signal of the NeXus default plot, or of any NXdata group, with its axes."""

    def signal_of(group: h5py.Group) -> tuple[h5py.Dataset, list[h5py.Dataset | None]] | None:
        name = group.attrs.get("signal")
        ds = group.get(nexus.read_text(name)) if name is not None else None
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 4:
            return None
        axes = group.attrs.get("axes", [])
        axes = [nexus.read_text(a) for a in np.atleast_1d(axes)]
        found = [group.get(a) if a not in (".", "") else None for a in axes] + [None] * 4
        return ds, [x if isinstance(x, h5py.Dataset) else None for x in found[:4]]

    g: Any = f
    for _ in range(3):  # follow @default: root -> entry -> data
        name = g.attrs.get("default")
        if name is None or not isinstance(g.get(nexus.read_text(name)), h5py.Group):
            break
        g = g[nexus.read_text(name)]
        if nexus.nx_class(g) == "NXdata":
            hit = signal_of(g)
            if hit:
                return hit
    hits: list[Any] = []

    def visit(_name: str, obj: Any) -> None:
        if not hits and isinstance(obj, h5py.Group) and nexus.nx_class(obj) == "NXdata":
            hit = signal_of(obj)
            if hit:
                hits.append(hit)

    f.visititems(visit)
    return hits[0] if hits else None


def _nexus_energy_kev(f: h5py.File, name: str) -> float | None:
    """The accelerating voltage of the entry holding ``name``: instrument/source/voltage
    (or .../energy), in kV, V or keV / eV."""
    entry = "/" + name.strip("/").split("/")[0]
    for rel in ("instrument/source/voltage", "instrument/source/energy", "instrument/beam/incident_energy"):
        ds = f.get(f"{entry}/{rel}")
        if isinstance(ds, h5py.Dataset) and ds.shape in ((), (1,)) and ds.dtype.kind in "uif":
            units = nexus.read_text(ds.attrs.get("units", "kV"))
            scale = {"kv": 1.0, "kev": 1.0, "v": 1e-3, "ev": 1e-3, "mv": 1e3, "mev": 1e3}.get(units.strip().lower())
            value = float(np.ravel(ds[()])[0])
            if scale is not None and np.isfinite(value) and value > 0:
                return value * scale
    return None


def open_hdf5(path: Path, source: str, *, dataset: str | None = None) -> Scan4D:
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise errors.InvalidInput(source, f"not a readable HDF5 file: {exc}") from None
    try:
        axes: list[h5py.Dataset | None] = [None] * 4
        ds: Any = None
        if dataset:
            ds = f.get(dataset)
            if not isinstance(ds, h5py.Dataset):
                raise errors.InvalidInput(source, f"no dataset {dataset!r} in the file")
        else:
            hit = _nxdata_signal(f)
            if hit:
                ds, axes = hit
        if ds is None:  # fpd / EMD: a group marked emd_group_type with data and dim1..dim4
            found: list[h5py.Dataset] = []

            def visit(_name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset) and obj.ndim == 4 and obj.dtype.kind in "uif":
                    found.append(obj)

            f.visititems(visit)
            if not found:
                raise errors.InvalidInput(source, "no 4-D dataset (NXdata signal, fpd/EMD data or other) found")
            ds = found[0]
            parent = ds.parent
            axes = [
                parent.get(f"dim{i}") if isinstance(parent.get(f"dim{i}"), h5py.Dataset) else None for i in range(1, 5)
            ]
        if ds.dtype.kind not in "uif":
            raise errors.InvalidInput(source, f"{ds.name}: pixel type {ds.dtype} is not numeric")
        shape = _check_shape(source, ds.shape)
        steps = (_axis_step_nm(axes[0]), _axis_step_nm(axes[1]))
        step = (steps[0] or steps[1], steps[1] or steps[0]) if (steps[0] or steps[1]) else None
        images: dict[str, np.ndarray] = {}
        energy = None
        tia = f.get("fpd_expt/TIA0/data")
        if isinstance(tia, h5py.Dataset) and tia.shape == shape[:2]:
            images["haadf_recorded"] = tia[()].astype(np.float64)
        ht = f.get("fpd_expt/TIA0/tags/ObjectInfo/ExperimentalDescription/High tension_kV")
        if isinstance(ht, h5py.Dataset) and ht.shape == ():
            energy = float(ht[()])
        if energy is None:
            energy = _nexus_energy_kev(f, ds.name)
        native = ds.dtype.newbyteorder("=")
    except BaseException:
        f.close()
        raise

    def read_rows(r0: int, r1: int) -> np.ndarray:
        try:
            return np.asarray(ds[r0:r1], dtype=native)
        except OSError as exc:
            raise errors.InvalidInput(source, f"{ds.name} rows {r0}-{r1}: {exc}") from None

    nx = shape[1]

    def read_frames(f0: int, f1: int, out: np.ndarray) -> None:
        f = f0
        try:
            while f < f1:  # a piece per scan row touched
                r, x0 = divmod(f, nx)
                x1 = min(nx, x0 + f1 - f)
                ds.read_direct(out, np.s_[r, x0:x1], np.s_[f - f0 : f - f0 + x1 - x0])
                f += x1 - x0
        except OSError as exc:
            raise errors.InvalidInput(source, f"{ds.name} frames {f0}-{f1}: {exc}") from None

    return Scan4D(
        source=source,
        shape=shape,
        dtype=native,
        read_rows=read_rows,
        # sub-row reads only where the dataset is contiguous (a chunked one would be decoded again per piece)
        read_frames=read_frames if ds.chunks is None else None,
        close=f.close,
        step_nm=step,
        energy_kev=energy,
        layout=f"hdf5 {ds.name}",
        images=images,
        metadata={"dataset": ds.name},
    )


def open_scan(
    path: Path,
    source: str,
    *,
    dataset: str | None = None,
    scan_shape: tuple[int, int] | None = None,
    hdr_path: Path | None = None,
) -> Scan4D:
    """Open ``path`` (``.mib`` or HDF5/NeXus) as a :class:`Scan4D`."""
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"MQ1,"):
        return open_mib(path, source, scan_shape=scan_shape, hdr_path=hdr_path)
    if magic == b"\x89HDF\r\n\x1a\n":
        scan = open_hdf5(path, source, dataset=dataset)
        if scan_shape is not None and tuple(scan_shape) != scan.shape[:2]:
            scan.close()
            raise errors.InvalidInput(source, f"scan_shape {scan_shape} differs from the file's {scan.shape[:2]}")
        return scan
    raise errors.InvalidInput(source, "neither a Merlin .mib nor an HDF5 file")
