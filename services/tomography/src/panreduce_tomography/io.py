"""Reading tomography inputs into one dataclass, :class:`Scan`.

Layouts:
- Data Exchange HDF5 (APS; ``/exchange/data``, ``data_dark``, ``data_white``, ``theta``);
- NXtomo / NeXus with ``image_key`` (Diamond, ESRF: 0 projection, 1 flat, 2 dark,
  3 invalid), external links followed (stage the whole folder);
- TIFF stacks: one image per projection (or a multi-page file), dark/flat images told
  apart by their names (``dark*``, ``flat*``/``white*``), angles from a text file whose
  name contains ``angle`` (one per line);
- sinograms: MATLAB ``.mat`` (v5 via scipy, v7.3 via h5py) or HDF5 with one 2-D array
  (angles x detector, either orientation), plus an angle vector if present;
- FITS stacks per time-of-flight bin (IMAT/MCP): see :mod:`panreduce_tomography.tof`.

Projections are not read at load time: a :class:`Scan` reads detector-row ranges on
demand (:meth:`Scan.read_rows`), so volumes larger than memory are processed in slabs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from panreduce import errors, nexus
from panreduce.kit.readers import HDF5_SIGNATURE, open_hdf5, read_dataset

PathArg = str | os.PathLike[str]


class NamedPath(NamedTuple):
    """A file to read and the caller's name for it (in messages, and to sort and classify)."""

    path: Path
    name: str


def named_paths(paths: Sequence[PathArg], names: Sequence[str] | None = None) -> list[NamedPath]:
    """``paths`` with their ``names`` (default: each path's file name)."""
    if names is not None and len(names) != len(paths):
        raise ValueError(f"{len(names)} names for {len(paths)} paths")
    return [NamedPath(Path(p), n) for p, n in zip(paths, names or [Path(p).name for p in paths], strict=True)]


HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".nx", ".cxi"}
TIFF_SUFFIXES = {".tif", ".tiff"}
MAT_SUFFIXES = {".mat"}
FITS_SUFFIXES = {".fits", ".fit", ".fts"}


@dataclass
class Scan:
    """One tomographic scan: what is needed to correct and reconstruct it."""

    source: str  # the input file (or folder) name, for messages
    layout: str  # "dataexchange", "nxtomo", "tiff", "sinogram", "fits-tof"
    shape: tuple[int, int, int]  # (n_projections, n_rows, n_cols)
    angles: np.ndarray  # radians, one per projection
    kind: str  # "intensity" (raw counts) or "line_integral" (already -log)
    reader: Callable[[int, int], np.ndarray]  # rows r0:r1 -> (n_proj, r1 - r0, n_cols)
    darks: np.ndarray | None = None  # (n, rows, cols)
    flats: np.ndarray | None = None  # (n, rows, cols)
    time: float = 0.0  # time point of a 4-D series (index or seconds)
    meta: dict = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return self.shape[1]

    @property
    def n_cols(self) -> int:
        return self.shape[2]

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Projections of detector rows ``r0:r1`` as float32 (n_proj, r1 - r0, n_cols);
        read failures (truncated or damaged files) raise InvalidInput naming the file."""
        try:
            out = np.asarray(self.reader(r0, r1), dtype=np.float32)
        except errors.PanReduceError:
            raise
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise errors.InvalidInput(
                self.source, f"projections cannot be read: damaged or truncated ({exc})"
            ) from None
        if out.shape != (self.shape[0], r1 - r0, self.shape[2]):
            raise errors.InvalidInput(self.source, f"projection rows {r0}:{r1} have shape {out.shape}")
        return out


# -- helpers -----------------------------------------------------------------------------
def _angles_to_rad(values: np.ndarray, units: str | None, source: str, unit_param: str = "auto") -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).ravel()
    if a.size and not np.all(np.isfinite(a)):
        raise errors.InvalidInput(source, "rotation angles hold NaN or infinite values")
    u = (units or "").lower()
    if unit_param == "degrees" or (unit_param == "auto" and u.startswith("deg")):
        return np.deg2rad(a)
    if unit_param == "radians" or (unit_param == "auto" and u.startswith("rad")):
        return a
    span = float(np.ptp(a)) if a.size else 0.0
    return np.deg2rad(a) if span > 2 * np.pi + 0.1 else a


def _check_shape(source: str, what: str, arr: np.ndarray | None, rows: int, cols: int) -> np.ndarray | None:
    if arr is None or arr.size == 0:
        return None
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (rows, cols):
        raise errors.InvalidInput(source, f"{what} have shape {arr.shape}, projections are {rows} x {cols}")
    return arr


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs [a, b) of sorted indices."""
    if idx.size == 0:
        return []
    breaks = np.nonzero(np.diff(idx) != 1)[0]
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    stops = np.concatenate([idx[breaks] + 1, [idx[-1] + 1]])
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def _h5_reader(path: Path, source: str, dset: str, frames: np.ndarray | None) -> Callable[[int, int], np.ndarray]:
    runs = None if frames is None else _runs(np.asarray(frames))

    def read(r0: int, r1: int) -> np.ndarray:
        with open_hdf5(path, source) as f:
            ds = f[dset]
            if runs is None:
                return ds[:, r0:r1, :]
            return np.concatenate([ds[a:b, r0:r1, :] for a, b in runs], axis=0)

    return read


def _touch(scan: Scan) -> Scan:
    """Read the first and last detector rows once so that damaged files fail at load."""
    scan.read_rows(0, 1)
    if scan.n_rows > 1:
        scan.read_rows(scan.n_rows - 1, scan.n_rows)
    return scan


# -- HDF5 layouts --------------------------------------------------------------------------
def _read_h5_array(f: h5py.File, path: str, source: str) -> np.ndarray:
    try:
        return read_dataset(f[path], source=source)
    except (OSError, RuntimeError, KeyError) as exc:
        raise errors.InvalidInput(source, f"{path} cannot be read: damaged or truncated ({exc})") from None


def _data_exchange(f: h5py.File, path: Path, source: str, unit_param: str) -> Scan:
    ds = f["exchange/data"]
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 3:
        raise errors.InvalidInput(
            source, f"/exchange/data must be a 3-D stack (angles, rows, cols), got {getattr(ds, 'shape', None)}"
        )
    n, rows, cols = ds.shape
    darks = _read_h5_array(f, "exchange/data_dark", source) if "exchange/data_dark" in f else None
    flats = _read_h5_array(f, "exchange/data_white", source) if "exchange/data_white" in f else None
    meta = {}
    if "exchange/theta" in f:
        th = f["exchange/theta"]
        angles = _angles_to_rad(
            _read_h5_array(f, "exchange/theta", source),
            nexus.read_text(th.attrs.get("units")) or None,
            source,
            unit_param,
        )
    else:
        angles = np.linspace(0, np.pi, n, endpoint=False)
        meta["angles_assumed"] = "evenly spaced over 180 degrees (no /exchange/theta)"
    if len(angles) != n:
        raise errors.InvalidInput(source, f"/exchange/theta has {len(angles)} angles for {n} projections")
    return Scan(
        source,
        "dataexchange",
        (n, rows, cols),
        angles,
        "intensity",
        _h5_reader(path, source, "exchange/data", None),
        _check_shape(source, "dark fields", darks, rows, cols),
        _check_shape(source, "flat fields", flats, rows, cols),
        meta=meta,
    )


def _find_image_key(f: h5py.File) -> tuple[str, str, str | None] | None:
    """(image_key path, 3-D data path, angles path) of the first NXtomo-like entry."""
    found: dict[str, list[str]] = {"key": [], "data3": [], "angle": []}

    def visit(name: str, obj: h5py.HLObject) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        base = name.rsplit("/", 1)[-1].lower()
        if base == "image_key":
            found["key"].append(name)
        elif obj.ndim == 3:
            found["data3"].append(name)
        elif obj.ndim == 1 and ("rotation_angle" in base or "theta" in base or base in ("angle", "angles")):
            found["angle"].append(name)

    try:
        f.visititems(visit)
    except (KeyError, OSError, RuntimeError):
        pass
    # external links are not visited by visititems: look at NXdata groups explicitly
    for entry in f.values():
        if not isinstance(entry, h5py.Group):
            continue
        for grp_name in list(entry.keys()):
            try:
                grp = entry[grp_name]
            except (KeyError, OSError):
                continue
            if not isinstance(grp, h5py.Group) or nexus.nx_class(grp) not in ("NXdata", "NXdetector"):
                continue
            for k in list(grp.keys()):
                try:
                    obj = grp[k]
                except (KeyError, OSError):
                    continue
                if not isinstance(obj, h5py.Dataset):
                    continue
                name = f"{grp.name.lstrip('/')}/{k}"
                if obj.ndim == 3 and name not in found["data3"]:
                    found["data3"].append(name)
                low = k.lower()
                if obj.ndim == 1 and ("rotation_angle" in low or "theta" in low) and name not in found["angle"]:
                    found["angle"].append(name)
                if low == "image_key" and name not in found["key"]:
                    found["key"].append(name)
    if not found["key"]:
        return None
    key_path = found["key"][0]
    nkey = f[key_path].shape[0]
    data = [d for d in found["data3"] if f[d].shape[0] == nkey]
    angles = [a for a in found["angle"] if f[a].shape[0] == nkey]
    if not data:
        return None
    # prefer the detector's data / an NXdata signal called data
    data.sort(key=lambda d: (not d.endswith("/data"), d))
    return key_path, data[0], (angles[0] if angles else None)


def _nxtomo(f: h5py.File, path: Path, source: str, found: tuple[str, str, str | None], unit_param: str) -> Scan:
    key_path, data_path, angle_path = found
    key = _read_h5_array(f, key_path, source).astype(int).ravel()
    ds = f[data_path]
    _, rows, cols = ds.shape
    proj = np.nonzero(key == 0)[0]
    if proj.size == 0:
        raise errors.InvalidInput(source, f"{key_path} marks no projections (image_key 0)")

    def frames(which: np.ndarray) -> np.ndarray | None:
        if which.size == 0:
            return None
        try:
            return np.concatenate([ds[a:b] for a, b in _runs(which)], axis=0)
        except (OSError, RuntimeError) as exc:
            raise errors.InvalidInput(source, f"{data_path} cannot be read: damaged or truncated ({exc})") from None

    flats = frames(np.nonzero(key == 1)[0])
    darks = frames(np.nonzero(key == 2)[0])
    meta: dict = {"image_key": key_path, "data": data_path}
    if angle_path:
        a = _read_h5_array(f, angle_path, source).ravel()[proj]
        angles = _angles_to_rad(a, nexus.read_text(f[angle_path].attrs.get("units")) or None, source, unit_param)
        meta["angles"] = angle_path
    else:
        angles = np.linspace(0, np.pi, proj.size, endpoint=False)
        meta["angles_assumed"] = "evenly spaced over 180 degrees (no rotation angles found)"
    return Scan(
        source,
        "nxtomo",
        (int(proj.size), rows, cols),
        angles,
        "intensity",
        _h5_reader(path, source, data_path, proj),
        darks,
        flats,
        meta=meta,
    )


def _h5_sinogram(f: h5py.File, path: Path, source: str, unit_param: str) -> Scan | None:
    arrays: list[str] = []
    vectors: list[str] = []

    def visit(name: str, obj: h5py.HLObject) -> None:
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiu":
            if obj.ndim == 2 and min(obj.shape) > 1:
                arrays.append(name)
            elif obj.ndim == 1 or (obj.ndim == 2 and min(obj.shape) == 1):
                vectors.append(name)

    f.visititems(visit)
    if not arrays:
        return None
    arrays.sort(key=lambda n: ("sino" not in n.lower(), -int(np.prod(f[n].shape))))
    sino = _read_h5_array(f, arrays[0], source)
    named = {v: _read_h5_array(f, v, source) for v in vectors if re.search(r"angle|theta", v, re.I)}
    return _sinogram_scan(sino, named, source, unit_param)


def _sinogram_scan(sino: np.ndarray, vectors: dict[str, np.ndarray], source: str, unit_param: str) -> Scan:
    sino = np.asarray(sino, dtype=np.float32)
    if sino.ndim != 2:
        raise errors.InvalidInput(source, f"a sinogram must be 2-D, got shape {sino.shape}")
    if not np.all(np.isfinite(sino)):
        raise errors.InvalidInput(source, "the sinogram holds NaN or infinite values")
    angles = None
    for name, vec in vectors.items():
        v = np.asarray(vec, dtype=np.float64).ravel()
        if v.size in sino.shape:
            unit = "rad" if "rad" in name.lower() else ("deg" if "deg" in name.lower() else None)
            angles = _angles_to_rad(v, unit, source, unit_param)
            if v.size == sino.shape[1] and v.size != sino.shape[0]:
                sino = sino.T
            break
    if angles is None:
        if sino.shape[0] < sino.shape[1]:
            pass  # (angles, detector) as usual
        angles = np.linspace(0, np.pi, sino.shape[0], endpoint=False)
    data = np.ascontiguousarray(sino)[:, None, :]
    return Scan(source, "sinogram", data.shape, angles, "line_integral", lambda r0, r1: data[:, r0:r1, :])


def read_hdf5(path: PathArg, unit_param: str = "auto", *, name: str | None = None) -> Scan | None:
    """A Data Exchange, NXtomo or sinogram HDF5 file; None when it holds none of them
    (e.g. a detector file an NXtomo links to). ``name``: the caller's name for the file,
    used in messages (default: the file name of ``path``)."""
    path = Path(path)
    source = name or path.name
    with open_hdf5(path, source) as f:
        try:
            if "exchange/data" in f:
                return _touch(_data_exchange(f, path, source, unit_param))
            found = _find_image_key(f)
            if found is not None:
                return _touch(_nxtomo(f, path, source, found, unit_param))
            return _h5_sinogram(f, path, source, unit_param)
        except (OSError, RuntimeError, KeyError) as exc:
            raise errors.InvalidInput(source, f"is damaged or truncated: reading failed ({exc})") from None


def read_mat(path: PathArg, unit_param: str = "auto", *, name: str | None = None) -> Scan:
    """A MATLAB sinogram: the largest 2-D array (angles x detector or the transpose).
    ``name``: the caller's name for the file, used in messages."""
    import scipy.io

    path = Path(path)
    source = name or path.name
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(HDF5_SIGNATURE) or head[512 - 8 :] == HDF5_SIGNATURE or b"MATLAB 7.3" in head:
        scan = read_hdf5(path, unit_param, name=source)
        if scan is None:
            raise errors.InvalidInput(source, "holds no 2-D sinogram")
        return scan
    if not head.startswith(b"MATLAB"):
        raise errors.InvalidInput(source, "is not a MATLAB .mat file (no MATLAB header)")
    try:
        m = scipy.io.loadmat(path)
    except Exception as exc:
        raise errors.InvalidInput(source, f"is a damaged or truncated .mat file ({exc})") from None
    arrays = {
        k: v for k, v in m.items() if not k.startswith("__") and isinstance(v, np.ndarray) and v.dtype.kind in "fiu"
    }
    two_d = [k for k, v in arrays.items() if v.ndim == 2 and min(v.shape) > 1]
    if not two_d:
        raise errors.InvalidInput(source, "holds no 2-D sinogram")
    two_d.sort(key=lambda k: ("sino" not in k.lower(), -arrays[k].size))
    vectors = {k: v for k, v in arrays.items() if re.search(r"angle|theta", k, re.I)}
    return _sinogram_scan(arrays[two_d[0]], vectors, source, unit_param)


# -- TIFF stacks ---------------------------------------------------------------------------
def _read_tiff(path: Path, name: str) -> np.ndarray:
    import tifffile

    try:
        img = tifffile.imread(path)
    except Exception as exc:
        raise errors.InvalidInput(name, f"is not a readable TIFF image ({exc})") from None
    return np.asarray(img)


def tiff_page_rows(tf, page, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of one 2-D TIFF page, reading only the bytes that hold them: an
    offset into uncompressed contiguous pages, the covering strips of strip-organised
    pages (any compression tifffile decodes); tiled or multi-sample pages are decoded
    whole."""
    rows, cols = page.shape[:2]
    plain = len(page.shape) == 2 and not page.is_tiled and page.samplesperpixel == 1
    fh = tf.filehandle
    dtype = np.dtype(page.dtype)
    if (
        plain
        and page.is_contiguous
        and page.compression == 1
        and page.bitspersample == 8 * dtype.itemsize
        and page.fillorder == 1
    ):
        row_bytes = cols * dtype.itemsize
        fh.seek(page.dataoffsets[0] + r0 * row_bytes)
        buf = fh.read((r1 - r0) * row_bytes)
        return np.frombuffer(buf, dtype.newbyteorder(tf.byteorder)).reshape(r1 - r0, cols)
    rps = int(page.rowsperstrip or rows)
    if not plain or len(page.dataoffsets) != (rows + rps - 1) // rps:
        return np.asarray(page.asarray())[r0:r1]
    parts = []
    for k in range(r0 // rps, (r1 - 1) // rps + 1):
        fh.seek(page.dataoffsets[k])
        seg = page.decode(fh.read(page.databytecounts[k]), k)[0]
        parts.append(np.asarray(seg).reshape(-1, cols)[: min(rps, rows - k * rps)])
    block = np.concatenate(parts, axis=0)
    s0 = (r0 // rps) * rps
    return block[r0 - s0 : r1 - s0]


def _tiff_frames(path: Path, name: str) -> tuple[int, tuple[int, ...]]:
    """(number of 2-D frames, frame shape) of a TIFF file, from its headers only."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tf:
            series = tf.series[0]
            shape = tuple(series.shape)
            pages = len(tf.pages)
            page_shape = tuple(tf.pages[0].shape)
    except Exception as exc:
        raise errors.InvalidInput(name, f"is not a readable TIFF image ({exc})") from None
    if len(page_shape) != 2 or int(np.prod(shape)) != pages * int(np.prod(page_shape)):
        raise errors.InvalidInput(name, f"TIFF image of shape {shape} is not a stack of 2-D frames")
    return pages, page_shape


def _tiff_rows_reader(frames: list[tuple[Path, str, int]]) -> Callable[[int, int], np.ndarray]:
    """Rows ``r0:r1`` of every (path, name, page) frame, read by :func:`tiff_page_rows`."""
    import tifffile

    def read(r0: int, r1: int) -> np.ndarray:
        out = None
        i = 0
        while i < len(frames):
            path, name = frames[i][0], frames[i][1]
            try:
                with tifffile.TiffFile(path) as tf:
                    while i < len(frames) and frames[i][0] == path:
                        img = tiff_page_rows(tf, tf.pages[frames[i][2]], r0, r1)
                        if out is None:
                            out = np.empty((len(frames), *img.shape), np.float32)
                        out[i] = img
                        i += 1
            except errors.PanReduceError:
                raise
            except Exception as exc:
                raise errors.InvalidInput(
                    name, f"rows {r0}:{r1} cannot be read: damaged or truncated ({exc})"
                ) from None
        return out

    return read


def read_tiff_stack(
    paths: Sequence[PathArg], unit_param: str = "auto", source: str | None = None, *, names: Sequence[str] | None = None
) -> Scan:
    """Projections, darks and flats from TIFF files (sorted by name), angles from a text
    file whose name contains 'angle' (else evenly spaced over 180 degrees). Projections
    are read by detector-row range when the slabs are processed (only the headers at
    load); darks and flats are read whole. ``names``: the caller's name of each path
    (default: its file name), used to sort, to classify and in messages."""
    files = named_paths(paths, names)
    tifs = [f for f in files if Path(f.name).suffix.lower() in TIFF_SUFFIXES]
    texts = [
        f
        for f in files
        if "angle" in Path(f.name).name.lower() and Path(f.name).suffix.lower() in (".txt", ".csv", ".dat")
    ]
    source = source or (tifs[0].name if tifs else files[0].name)

    def role(f: NamedPath) -> str:
        low = f.name.lower()
        if re.search(r"dark", low):
            return "dark"
        if re.search(r"flat|white|bright", low):
            return "flat"
        return "proj"

    groups: dict[str, list[np.ndarray]] = {"proj": [], "dark": [], "flat": []}
    frames: list[tuple[Path, str, int]] = []
    first = None
    for f in sorted(tifs, key=lambda f: f.name):
        count, shape = _tiff_frames(f.path, f.name)
        if first is None:
            first = shape
        elif shape != first:
            raise errors.InvalidInput(f.name, f"image shape {shape} differs from {first}")
        if role(f) == "proj":
            frames += [(f.path, f.name, k) for k in range(count)]
            groups["proj"].append(f)
        else:
            img = _read_tiff(f.path, f.name)
            groups[role(f)].append(img[None] if img.ndim == 2 else img)
    if not groups["proj"]:
        raise errors.InvalidInput(source, "no projection images among the TIFF files")
    n, (rows, cols) = len(frames), first
    meta: dict = {}
    if texts:
        try:
            vals = np.loadtxt(texts[0].path, dtype=np.float64, ndmin=1, delimiter=None)
        except ValueError as exc:
            raise errors.InvalidInput(texts[0].name, f"angles cannot be parsed ({exc})") from None
        vals = vals.ravel() if vals.ndim == 1 else vals[:, -1]
        if vals.size != n:
            # some writers repeat the first/last angle for frames that are not projections
            d = np.abs(np.diff(vals))
            tol = 0.01 * float(np.median(d[d > 0])) if np.any(d > 0) else 0.0
            runs = vals[np.concatenate([[True], d > tol])]
            if runs.size == n:
                vals = runs
                meta["angles_note"] = "repeated angles collapsed to one per projection"
        if vals.size != n:
            raise errors.InvalidInput(texts[0].name, f"has {vals.size} angles for {n} projections")
        angles = _angles_to_rad(vals, "deg" if unit_param == "auto" else None, texts[0].name, unit_param)
        meta["angles"] = texts[0].name
    else:
        angles = np.linspace(0, np.pi, n, endpoint=False)
        meta["angles_assumed"] = "evenly spaced over 180 degrees (no angles file)"
    darks = np.concatenate(groups["dark"]) if groups["dark"] else None
    flats = np.concatenate(groups["flat"]) if groups["flat"] else None
    return _touch(
        Scan(source, "tiff", (n, rows, cols), angles, "intensity", _tiff_rows_reader(frames), darks, flats, meta=meta)
    )


# -- dispatch ------------------------------------------------------------------------------
def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return "unknown"
    if head == HDF5_SIGNATURE:
        return "hdf5"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head.startswith(b"MATLAB"):
        return "mat"
    if head.startswith(b"SIMPLE"):
        return "fits"
    return "unknown"


def read_scans(
    groups: Sequence[Sequence[NamedPath]],
    *,
    angles_unit: str = "auto",
    band: tuple[int, int] | None = None,
    tof_options: dict | None = None,
) -> list[Scan]:
    """The scans in the inputs, in request order (a 4-D series when more than one).

    ``groups`` holds the files of each input (one file, or every file under a
    folder/prefix) as (path, the caller's name: what messages name). HDF5/NeXus and .mat files are one scan each (HDF5 files without
    tomography data are skipped when something else in the request is a scan: they
    are files an NXtomo links to); the TIFF files of one input form one scan; the FITS
    folders of one input form one scan per wavelength band (``tof_options``: keyword
    arguments of :func:`~panreduce_tomography.tof.read_fits_tof`).
    """
    from panreduce_tomography import tof

    scans: list[Scan] = []
    skipped: list[str] = []
    for files in groups:
        tiffs: list[NamedPath] = []
        fits: list[NamedPath] = []
        for f in sorted(files, key=lambda f: f.name):
            suffix = Path(f.name).suffix.lower()
            if f.path.stat().st_size == 0 and suffix in HDF5_SUFFIXES | TIFF_SUFFIXES | MAT_SUFFIXES | FITS_SUFFIXES:
                raise errors.InvalidInput(f.name, "is empty")
            kind = _sniff(f.path)
            if suffix in MAT_SUFFIXES:
                scans.append(read_mat(f.path, angles_unit, name=f.name))
            elif suffix in HDF5_SUFFIXES or kind == "hdf5":
                scan = read_hdf5(f.path, angles_unit, name=f.name)
                if scan is None:
                    skipped.append(f.name)
                else:
                    scans.append(scan)
            elif suffix in TIFF_SUFFIXES:
                tiffs.append(f)
            elif suffix in FITS_SUFFIXES:
                fits.append(f)
        if tiffs:
            label = files[0].name.split("/")[0] if len(files) > 1 else tiffs[0].name
            scans.append(
                read_tiff_stack([f.path for f in files], angles_unit, source=label, names=[f.name for f in files])
            )
        if fits:
            scans.extend(
                tof.read_fits_tof([f.path for f in files], band, names=[f.name for f in files], **(tof_options or {}))
            )
    if not scans:
        if skipped:
            raise errors.InvalidInput(
                skipped[0],
                "holds no tomography data: expected /exchange/data, an NXtomo entry with image_key, or a 2-D sinogram",
            )
        names = ", ".join(f.name for g in groups for f in g[:3])
        raise errors.InvalidInput(names or "inputs", "no tomography data found (HDF5/NeXus, TIFF, .mat or FITS)")
    return scans
