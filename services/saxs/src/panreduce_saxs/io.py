"""Reading SAXS/WAXS inputs: detector frames, SPEC counter files, NeXus scans.

Every reader raises ``InvalidInput`` naming the file when the file cannot be used
(not an image, truncated, wrong shape, missing dataset).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import errors
from panreduce.constants import xray_wavelength_angstrom
from panreduce.kit.readers import memory_ceiling, open_checked, open_hdf5, read_dataset
from panreduce.nexus import nx_class, read_text
from panreduce_saxs.transformations import LENGTH_TO_M

IMAGE_SUFFIXES = {".tif", ".tiff", ".edf", ".cbf", ".img", ".mccd", ".sfrm", ".npy", ".gz", ".bz2"}
HDF5_SUFFIXES = {".h5", ".hdf5", ".nxs", ".hdf", ".nx5", ".cxi"}


# -- single images -------------------------------------------------------------------------
def read_image(path: Path | str, source: str | None = None) -> np.ndarray:
    """A 2-D detector frame (or a 3-D stack) from TIFF, EDF, CBF, ... as float32.

    TIFF goes through tifffile (which refuses truncated files); other formats through
    fabio; ``.npy`` through numpy.
    """
    path = Path(path)
    name = source or path.name
    suffix = path.suffix.lower()
    try:
        if path.stat().st_size == 0:
            raise errors.InvalidInput(name, "is empty (0 bytes)")
    except OSError as exc:
        raise errors.InvalidInput(name, f"cannot be read ({exc.strerror or exc})") from None
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(path)
        elif suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            import fabio

            img = fabio.open(str(path))
            data = img.data
            if img.nframes > 1:
                data = np.stack([img.getframe(i).data for i in range(img.nframes)])
    except errors.InvalidInput:
        raise
    except Exception as exc:  # any library failure means an unusable file
        raise errors.InvalidInput(name, f"is not a readable detector image ({type(exc).__name__}: {exc})") from None
    if data is None:
        raise errors.InvalidInput(name, "is not a readable detector image (damaged or truncated)")
    data = np.asarray(data)
    if data.ndim not in (2, 3) or min(data.shape[-2:]) < 2:
        raise errors.InvalidInput(name, f"is not a detector frame (array of shape {data.shape})")
    if data.dtype.kind not in "uif":
        raise errors.InvalidInput(name, f"holds {data.dtype} values, not numbers")
    return data.astype(np.float32, copy=False)


# -- SPEC counter files -------------------------------------------------------------------
@dataclass
class SpecScan:
    number: int
    command: str
    labels: list[str]
    data: np.ndarray  # (points, columns)

    def column(self, label: str) -> np.ndarray:
        return self.data[:, self.labels.index(label)]


def read_spec(path: Path | str, source: str | None = None) -> dict[int, SpecScan]:
    """The scans of a SPEC file: ``{scan number: SpecScan}`` with the ``#L`` columns."""
    path = Path(path)
    name = source or path.name
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise errors.InvalidInput(name, f"cannot be read ({exc.strerror or exc})") from None
    scans: dict[int, SpecScan] = {}
    number, command, labels, rows = None, "", [], []

    def close() -> None:
        if number is not None and labels:
            width = len(labels)
            good = [r for r in rows if len(r) == width]
            arr = np.array(good, dtype=float).reshape(len(good), width)
            scans[number] = SpecScan(number, command, labels, arr)

    for line in text.splitlines():
        if line.startswith("#S "):
            close()
            parts = line[3:].split(None, 1)
            try:
                number = int(parts[0])
            except (ValueError, IndexError):
                raise errors.InvalidInput(name, f"has a malformed scan header {line!r}") from None
            command, labels, rows = (parts[1] if len(parts) > 1 else ""), [], []
        elif line.startswith("#L ") and number is not None:
            labels = re.split(r"\s{2,}", line[3:].strip())
            if len(labels) == 1:
                labels = line[3:].split()
        elif line and not line.startswith("#") and number is not None and labels:
            try:
                rows.append([float(v) for v in line.split()])
            except ValueError:
                continue
    close()
    if not scans:
        raise errors.InvalidInput(name, "is not a SPEC file (no '#S' scan with '#L' counters and data)")
    return scans


FRAME_NAME = re.compile(r"_(\d+)_(\d+)\.[A-Za-z0-9]+$")


def frame_scan_point(filename: str) -> tuple[int, int] | None:
    """(scan, point) from a BioCAT/RAW-style name ``<prefix>_<scan>_<point>.tiff``."""
    m = FRAME_NAME.search(filename)
    return (int(m.group(1)), int(m.group(2))) if m else None


# -- counter expressions --------------------------------------------------------------------
COUNTER_EXPR = re.compile(r"^\s*([A-Za-z_][\w .-]*?)\s*(?:([/*])\s*([0-9.eE+-]+))?\s*$")


def parse_counter_expression(expr: str) -> tuple[str, float]:
    """``"diode/259139"`` -> ("diode", 1/259139); ``"I1*2"`` -> ("I1", 2); ``"I1"`` -> ("I1", 1).

    The normalisation value of a frame is ``counter * factor``; the frame is divided by it.
    """
    m = COUNTER_EXPR.match(expr)
    if not m:
        raise ValueError(f"{expr!r} is not COUNTER, COUNTER/NUMBER or COUNTER*NUMBER")
    counter, op, number = m.groups()
    factor = 1.0
    if op:
        value = float(number)
        if value == 0:
            raise ValueError("division by zero")
        factor = 1.0 / value if op == "/" else value
    return counter, factor


# -- NeXus / HDF5 frame stacks --------------------------------------------------------------
@dataclass
class NexusFrames:
    """Where the frames of one HDF5/NeXus file are, and what its metadata say."""

    path: Path
    name: str
    dataset: str  # HDF5 path of the frame stack (n, rows, cols) or frame (rows, cols)
    n_frames: int
    shape: tuple[int, int]
    geometry: dict[str, Any] = field(default_factory=dict)  # distance_m, wavelength_m, ..., poni
    positioners: dict[str, np.ndarray] = field(default_factory=dict)  # 1-D per-frame values
    times: np.ndarray | None = None


def _units(ds: h5py.Dataset) -> str:
    return read_text(ds.attrs.get("units", "")).strip()


def _scalar(ds: h5py.Dataset) -> float | None:
    try:
        v = np.asarray(ds[()], dtype=float).ravel()
    except (TypeError, ValueError, OSError):
        return None
    return float(v[0]) if v.size else None


def _length_m(ds: h5py.Dataset, default_unit: str = "m") -> float | None:
    v = _scalar(ds)
    if v is None:
        return None
    unit = (_units(ds) or default_unit).lower()
    return v * LENGTH_TO_M.get(unit, 1.0)


def _walk(group: h5py.Group) -> Iterator[tuple[str, h5py.HLObject]]:
    stack = [group]
    while stack:
        g = stack.pop()
        for key in g:
            try:
                obj = g[key]
            except (KeyError, OSError):  # broken external link
                continue
            yield obj.name, obj
            if isinstance(obj, h5py.Group):
                stack.append(obj)


def inspect_nexus(path: Path | str, source: str | None = None, frames_path: str = "") -> NexusFrames:
    """Find the detector frames of a NeXus/HDF5 file and its geometry/positioner metadata.

    The frames are ``frames_path`` if given, else the ``data`` of the first NXdetector
    with 2-D/3-D numbers, else the signal of the first NXdata with rank >= 2.
    """
    path = Path(path)
    name = source or path.name
    with open_hdf5(path, name) as f:
        return _inspect(f, path, name, frames_path)


def _numeric_frames(d: object) -> bool:
    return isinstance(d, h5py.Dataset) and d.ndim in (2, 3) and d.dtype.kind in "uif"


def _frames_dataset(f: h5py.File, objects: list[tuple[str, h5py.HLObject]], name: str, frames_path: str) -> str:
    """The HDF5 path of the frames: ``frames_path``, else the first NXdetector's ``data``,
    else the first NXdata signal, else the first 2-D/3-D numeric dataset (>= 8 x 8)."""
    if frames_path:
        if not isinstance(f.get(frames_path), h5py.Dataset):
            raise errors.InvalidInput(name, f"has no dataset {frames_path}")
        return frames_path
    groups = [obj for _p, obj in objects if isinstance(obj, h5py.Group)]
    for obj in groups:
        if nx_class(obj) == "NXdetector" and _numeric_frames(obj.get("data")):
            return obj["data"].name
    for obj in groups:
        if nx_class(obj) == "NXdata":
            sig = read_text(obj.attrs.get("signal"))
            if sig and _numeric_frames(obj.get(sig)):
                return obj[sig].name
    for p, obj in objects:
        if _numeric_frames(obj) and min(obj.shape[-2:]) >= 8:
            return p
    raise errors.InvalidInput(name, "holds no detector frames (no 2-D or 3-D numeric dataset)")


def _detector_fields(obj: h5py.Group, geometry: dict[str, Any], centre: dict[str, tuple[float, str]]) -> None:
    """An NXdetector's distance, pixel sizes (m) and beam centre (value, unit): the first found wins."""
    for key, target in (("distance", "distance_m"), ("x_pixel_size", "pixel2_m"), ("y_pixel_size", "pixel1_m")):
        if isinstance(obj.get(key), h5py.Dataset) and target not in geometry:
            v = _length_m(obj[key])
            if v is not None:
                geometry[target] = v
    for key, target in (("beam_center_x", "center_x"), ("beam_center_y", "center_y")):
        if isinstance(obj.get(key), h5py.Dataset) and target not in centre:
            v = _scalar(obj[key])
            if v is not None:
                centre[target] = (v, _units(obj[key]).lower())


def _beam_fields(obj: h5py.Group, geometry: dict[str, Any]) -> None:
    """The wavelength (m) or energy (keV) of an NXmonochromator/NXbeam/NXsource/NXcrystal."""
    for key in ("wavelength", "incident_wavelength"):
        if isinstance(obj.get(key), h5py.Dataset) and "wavelength_m" not in geometry:
            v = _length_m(obj[key], default_unit="angstrom")
            if v:
                geometry["wavelength_m"] = v
    for key in ("energy", "incident_energy"):
        if isinstance(obj.get(key), h5py.Dataset) and "energy_kev" not in geometry:
            v = _scalar(obj[key])
            unit = _units(obj[key]).lower() or "kev"
            if v:
                geometry["energy_kev"] = v / 1000.0 if unit == "ev" else v


PER_FRAME_PARENTS = (
    "NXsample",
    "NXdata",
    "NXcollection",
    "NXpositioner",
    "NXmonitor",
    "NXentry",
    "NXinstrument",
    "NXlog",
)
TIME_NAMES = ("time", "elapsed_time", "frame_time", "timestamp")


def _per_frame(
    objects: list[tuple[str, h5py.HLObject]], ds_path: str, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(positioners and counters with one value per frame, the frame times if recorded)."""
    positioners: dict[str, np.ndarray] = {}
    times = None
    for p, obj in objects:
        if isinstance(obj, h5py.Group):
            val = obj.get("value")
            if (
                nx_class(obj) == "NXpositioner"
                and isinstance(val, h5py.Dataset)
                and val.ndim == 1
                and val.shape[0] == n
            ):
                positioners[obj.name.rsplit("/", 1)[-1]] = np.asarray(val[()], dtype=float)
            continue
        if not (
            isinstance(obj, h5py.Dataset)
            and obj.ndim == 1
            and obj.shape[0] == n
            and n > 1
            and obj.dtype.kind in "uif"
            and p != ds_path
        ):
            continue
        parent_class = nx_class(obj.parent)
        key = p.rsplit("/", 1)[-1]
        if parent_class not in PER_FRAME_PARENTS or (key == "value" and parent_class == "NXpositioner"):
            continue
        if key in TIME_NAMES and times is None:
            times = np.asarray(obj[()], dtype=float)
        positioners.setdefault(key, np.asarray(obj[()], dtype=float))
    return positioners, times


def _inspect(f: h5py.File, path: Path, name: str, frames_path: str) -> NexusFrames:
    objects = list(_walk(f))
    ds_path = _frames_dataset(f, objects, name, frames_path)
    d = f[ds_path]
    n = d.shape[0] if d.ndim == 3 else 1
    shape = tuple(int(s) for s in d.shape[-2:])
    geometry: dict[str, Any] = {}
    centre: dict[str, tuple[float, str]] = {}
    detector_path = ""
    for _p, obj in objects:
        if not isinstance(obj, h5py.Group):
            continue
        cls = nx_class(obj)
        if cls == "NXdetector":
            if not detector_path or ds_path.startswith(obj.name + "/"):
                detector_path = obj.name
            _detector_fields(obj, geometry, centre)
        elif cls in ("NXmonochromator", "NXbeam", "NXsource", "NXcrystal"):
            _beam_fields(obj, geometry)
    positioners, times = _per_frame(objects, ds_path, n)
    for axis, pix in (("x", "pixel2_m"), ("y", "pixel1_m")):
        if f"center_{axis}" in centre:
            v, unit = centre[f"center_{axis}"]
            if unit in ("", "pixel", "pixels", "px"):
                geometry[f"center_{axis}_px"] = v
            elif unit in LENGTH_TO_M and geometry.get(pix):
                geometry[f"center_{axis}_px"] = v * LENGTH_TO_M[unit] / geometry[pix]
    if detector_path:
        _placement(f, f[detector_path], geometry)
    if "energy_kev" in geometry and "wavelength_m" not in geometry:
        geometry["wavelength_m"] = xray_wavelength_angstrom(geometry["energy_kev"]) * 1e-10
    return NexusFrames(
        path=path,
        name=name,
        dataset=ds_path,
        n_frames=n,
        shape=shape,  # type: ignore[arg-type]
        geometry=geometry,
        positioners=positioners,
        times=times,
    )


def _placement(f: h5py.File, detector: h5py.Group, geometry: dict[str, Any]) -> None:
    """The detector's placement (NXtransformations), converted to pyFAI's geometry once the
    pixel size is known (the file's or a parameter); a chain that cannot be followed is
    reported only if the geometry is needed from it."""
    from panreduce_saxs.transformations import TransformationError, read_placement

    try:
        placement = read_placement(f, detector)
    except TransformationError as exc:
        geometry["placement_error"] = f"{detector.name}: its depends_on chain cannot be used: {exc}"
    else:
        if placement is not None:
            geometry["placement"] = placement


def _frame_fits(d: h5py.Dataset, source: str) -> bool:
    """True, or InputTooLarge when one frame of the stack ``d`` declares more bytes than
    the memory ceiling (checked before anything is allocated)."""
    nbytes = int(np.prod(d.shape[1:], dtype=object)) * d.dtype.itemsize
    if nbytes > memory_ceiling():
        raise errors.InputTooLarge(f"{source}: {d.name} (frame shape {d.shape[1:]})", nbytes, memory_ceiling())
    return True


def read_nexus_frame(info: NexusFrames, index: int, handle: h5py.File | None = None) -> np.ndarray:
    """Frame ``index`` of a NeXus stack as float32 (InvalidInput if it cannot be read)."""
    try:
        if handle is None:
            with open_checked(info.path, info.name) as f:
                return read_nexus_frame(info, index, f)
        d = handle[info.dataset]
        arr = d[index] if d.ndim == 3 and _frame_fits(d, info.name) else read_dataset(d, source=info.name)
    except (OSError, RuntimeError, KeyError) as exc:
        raise errors.InvalidInput(info.name, f"frame {index} cannot be read: damaged or truncated ({exc})") from None
    return np.asarray(arr, dtype=np.float32)
