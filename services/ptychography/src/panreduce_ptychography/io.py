"""Reading (and, for simulations and tests, writing) ptychographic scans.

Two layouts are read (see docs/ptychography.md):

NeXus/HDF5 -- one NXentry per scan (projection)::

    /<entry>                                   NXentry
      instrument/detector/data                 (N, H, W) counts, centred patterns
      instrument/detector/x_pixel_size         detector pixel width  (m; @units honoured)
      instrument/detector/y_pixel_size         detector pixel height (m)
      instrument/detector/distance             sample-detector distance (m)
      instrument/detector/pixel_mask           (H, W) optional, 0 = good (NeXus)
      instrument/detector/dark                 (H, W) optional, counts to subtract
      instrument/detector/beam_center_x|y      optional, zero frequency (pixels)
      instrument/beam/incident_energy          photon energy (eV; keV or J by @units)
      instrument/beam/probe                    (K, h, w) or (h, w) complex, optional
      data/x, data/y                           (N,) probe positions on the sample (m)
      sample/rotation_angle                    optional projection angle (deg), PXCT

CXI (format 1.6, ptychography) -- one ``entry_<n>`` per scan::

    /cxi_version
    /entry_1/instrument_1/source_1/energy              photon energy (J)
    /entry_1/instrument_1/detector_1/data              (N, H, W)
    /entry_1/instrument_1/detector_1/distance          (m)
    /entry_1/instrument_1/detector_1/x_pixel_size      (m), y_pixel_size (m)
    /entry_1/instrument_1/detector_1/mask              optional, non-zero = bad
    /entry_1/sample_1/geometry_1/translation           (N, 3) sample translation
                                                       (x, y, z) (m); also data_1/translation
    /entry_1/instrument_1/source_1/illumination        optional initial probe

The probe position on the sample is minus the CXI sample translation.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from panreduce import errors
from panreduce.kit.readers import open_hdf5, read_array, read_dataset, require_dataset
from panreduce_ptychography.problem import Scan

EV_PER_J = 1.0 / 1.602176634e-19

_LENGTH = {
    "m": 1.0,
    "metre": 1.0,
    "meter": 1.0,
    "mm": 1e-3,
    "um": 1e-6,
    "µm": 1e-6,
    "micron": 1e-6,
    "nm": 1e-9,
    "cm": 1e-2,
}
_ENERGY = {"ev": 1.0, "kev": 1e3, "j": EV_PER_J}


def _units(ds: h5py.Dataset) -> str:
    u = ds.attrs.get("units", "")
    if isinstance(u, bytes):
        u = u.decode()
    return str(u).strip()


def _scalar(group: h5py.Group, path: str, source: str, *, kind: str, default_unit: str) -> float:
    ds = require_dataset(group, path, source)
    arr = read_array(group, path, source)
    if arr.size < 1 or arr.dtype.kind not in "iuf":
        raise errors.InvalidInput(source, f"{ds.name} is not a number")
    value = float(np.ravel(arr)[0])
    table = _LENGTH if kind == "length" else _ENERGY
    unit = _units(ds) or default_unit
    key = unit if kind == "length" else unit.lower()
    if key not in table:
        raise errors.InvalidInput(source, f"{ds.name} has unknown units {unit!r} (known: {', '.join(table)})")
    value *= table[key]
    if not value > 0:
        raise errors.InvalidInput(source, f"{ds.name} must be positive, got {value:g}")
    return value


def _lengths(group: h5py.Group, path: str, source: str) -> np.ndarray:
    ds = require_dataset(group, path, source)
    arr = read_array(group, path, source).astype(np.float64)
    unit = _units(ds) or "m"
    if unit not in _LENGTH:
        raise errors.InvalidInput(source, f"{ds.name} has unknown units {unit!r} (known: {', '.join(_LENGTH)})")
    return arr * _LENGTH[unit]


def _frames(group: h5py.Group, path: str, source: str) -> np.ndarray:
    ds = require_dataset(group, path, source)
    if ds.ndim != 3:
        raise errors.InvalidInput(source, f"{ds.name} must be (frames, rows, cols), got shape {ds.shape}")
    if ds.shape[0] < 1 or ds.shape[1] < 4 or ds.shape[2] < 4:
        raise errors.InvalidInput(source, f"{ds.name} has too few frames or pixels: shape {ds.shape}")
    if ds.dtype.kind not in "iuf":
        raise errors.InvalidInput(source, f"{ds.name} holds {ds.dtype}, not counts")
    try:
        arr = read_dataset(ds, source=source)  # the declared size is checked before reading
    except (OSError, RuntimeError) as exc:
        raise errors.InvalidInput(source, f"{ds.name} cannot be read: damaged or truncated ({exc})") from None
    return np.asarray(arr, np.float32)


def _probe(group: h5py.Group, path: str, source: str) -> np.ndarray | None:
    if path not in group:
        return None
    p = read_array(group, path, source)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3:
        raise errors.InvalidInput(source, f"{group.name}/{path} must be (modes, rows, cols), got {p.shape}")
    return p.astype(np.complex64)


def _is_cxi(f: h5py.File) -> bool:
    return "cxi_version" in f or any(
        k.startswith("entry_") and "instrument_1" in f[k] for k in f if isinstance(f[k], h5py.Group)
    )


def list_scans(path: Path, source: str) -> list[str]:
    """Names of the entries of ``path`` that hold a ptychographic scan (one per
    projection), in file order; InvalidInput when there is none."""
    with open_hdf5(path, source) as f:
        if _is_cxi(f):
            names = [
                k
                for k in f
                if k.startswith("entry_") and isinstance(f[k], h5py.Group) and "instrument_1/detector_1/data" in f[k]
            ]
        else:
            names = [k for k in f if isinstance(f[k], h5py.Group) and "instrument/detector/data" in f[k]]
        if not names:
            what = (
                "entry_*/instrument_1/detector_1/data (CXI)"
                if _is_cxi(f)
                else "<entry>/instrument/detector/data (NeXus)"
            )
            raise errors.InvalidInput(source, f"has no ptychographic scan: no {what}")
        return sorted(names, key=_natural)


def _natural(name: str) -> tuple:
    digits = "".join(ch for ch in name if ch.isdigit())
    return (name.rstrip("0123456789"), int(digits) if digits else -1, name)


def read_scan(path: Path, source: str, entry: str | None = None) -> Scan:
    """The scan in ``entry`` of ``path`` (the first one by default)."""
    entry = entry or list_scans(path, source)[0]
    with open_hdf5(path, source) as f:
        if entry not in f:
            raise errors.InvalidInput(source, f"has no entry {entry!r}")
        g = f[entry]
        scan = _read_cxi(g, source) if _is_cxi(f) else _read_nexus(g, source)
    scan.name = entry
    scan.source = source
    n = scan.frames.shape[0]
    if scan.positions_m.shape != (n, 2):
        raise errors.InvalidInput(source, f"{entry}: {scan.positions_m.shape[0]} positions for {n} frames")
    if not np.all(np.isfinite(scan.positions_m)):
        raise errors.InvalidInput(source, f"{entry}: positions are not all finite")
    if scan.mask is not None and scan.mask.shape != scan.frames.shape[1:]:
        raise errors.InvalidInput(
            source, f"{entry}: mask shape {scan.mask.shape} differs from the frames' {scan.frames.shape[1:]}"
        )
    if scan.dark is not None and scan.dark.shape != scan.frames.shape[1:]:
        raise errors.InvalidInput(
            source, f"{entry}: dark shape {scan.dark.shape} differs from the frames' {scan.frames.shape[1:]}"
        )
    return scan


def _read_nexus(g: h5py.Group, source: str) -> Scan:
    det = "instrument/detector"
    frames = _frames(g, f"{det}/data", source)
    px = _scalar(g, f"{det}/x_pixel_size", source, kind="length", default_unit="m")
    py = _scalar(g, f"{det}/y_pixel_size", source, kind="length", default_unit="m")
    dist = _scalar(g, f"{det}/distance", source, kind="length", default_unit="m")
    energy = _scalar(g, "instrument/beam/incident_energy", source, kind="energy", default_unit="eV")
    x = _lengths(g, "data/x", source).ravel()
    y = _lengths(g, "data/y", source).ravel()
    if x.shape != y.shape:
        raise errors.InvalidInput(source, f"{g.name}/data/x and data/y differ in length ({x.size} vs {y.size})")
    mask = None
    if f"{det}/pixel_mask" in g:
        mask = read_array(g, f"{det}/pixel_mask", source) == 0
    dark = read_array(g, f"{det}/dark", source).astype(np.float32) if f"{det}/dark" in g else None
    center = None
    if f"{det}/beam_center_x" in g and f"{det}/beam_center_y" in g:
        center = (
            float(read_array(g, f"{det}/beam_center_y", source)),
            float(read_array(g, f"{det}/beam_center_x", source)),
        )
    meta = {}
    if "sample/rotation_angle" in g:
        meta["rotation_angle_deg"] = float(np.ravel(read_array(g, "sample/rotation_angle", source))[0])
    return Scan(
        frames=frames,
        positions_m=np.stack([y, x], axis=1),
        energy_ev=energy,
        distance_m=dist,
        pixel_size_m=(py, px),
        mask=mask,
        dark=dark,
        probe=_probe(g, "instrument/beam/probe", source),
        center=center,
        metadata=meta,
    )


def _read_cxi(g: h5py.Group, source: str) -> Scan:
    det = "instrument_1/detector_1"
    frames = _frames(g, f"{det}/data", source)
    px = _scalar(g, f"{det}/x_pixel_size", source, kind="length", default_unit="m")
    py = _scalar(g, f"{det}/y_pixel_size", source, kind="length", default_unit="m")
    dist = _scalar(g, f"{det}/distance", source, kind="length", default_unit="m")
    energy = _scalar(g, "instrument_1/source_1/energy", source, kind="energy", default_unit="J")
    tpath = "sample_1/geometry_1/translation" if "sample_1/geometry_1/translation" in g else "data_1/translation"
    t = _lengths(g, tpath, source)
    if t.ndim != 2 or t.shape[1] < 2:
        raise errors.InvalidInput(source, f"{g.name}/{tpath} must be (N, 3), got {t.shape}")
    mask = read_array(g, f"{det}/mask", source) == 0 if f"{det}/mask" in g else None
    probe = None
    for p in ("instrument_1/source_1/illumination", "instrument_1/source_1/probe"):
        probe = _probe(g, p, source)
        if probe is not None:
            break
    return Scan(
        frames=frames,
        positions_m=-t[:, [1, 0]],
        energy_ev=energy,
        distance_m=dist,
        pixel_size_m=(py, px),
        mask=mask,
        probe=probe,
    )


# -----------------------------------------------------------------------------------------
def write_nexus(path: Path, scans: list[Scan] | Scan, *, entries: list[str] | None = None) -> None:
    """Write scans in the NeXus layout read by :func:`read_scan` (one NXentry each)."""
    scans = [scans] if isinstance(scans, Scan) else scans
    entries = entries or (["entry"] if len(scans) == 1 else [f"entry{i + 1}" for i in range(len(scans))])
    with h5py.File(path, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["default"] = entries[0]
        for name, s in zip(entries, scans, strict=True):
            e = f.create_group(name)
            e.attrs["NX_class"] = "NXentry"
            e.attrs["default"] = "data"
            e["definition"] = "NXptycho"
            inst = e.create_group("instrument")
            inst.attrs["NX_class"] = "NXinstrument"
            det = inst.create_group("detector")
            det.attrs["NX_class"] = "NXdetector"
            d = det.create_dataset(
                "data", data=s.frames, chunks=(1, *s.frames.shape[1:]), compression="gzip", compression_opts=1
            )
            d.attrs["units"] = "counts"
            for key, val in (
                ("x_pixel_size", s.pixel_size_m[1]),
                ("y_pixel_size", s.pixel_size_m[0]),
                ("distance", s.distance_m),
            ):
                det.create_dataset(key, data=val).attrs["units"] = "m"
            if s.mask is not None:
                det.create_dataset("pixel_mask", data=(~np.asarray(s.mask, bool)).astype(np.uint32))
            if s.dark is not None:
                det.create_dataset("dark", data=s.dark).attrs["units"] = "counts"
            if s.center is not None:
                det.create_dataset("beam_center_y", data=s.center[0]).attrs["units"] = "pixel"
                det.create_dataset("beam_center_x", data=s.center[1]).attrs["units"] = "pixel"
            beam = inst.create_group("beam")
            beam.attrs["NX_class"] = "NXbeam"
            beam.create_dataset("incident_energy", data=s.energy_ev).attrs["units"] = "eV"
            if s.probe is not None:
                beam.create_dataset("probe", data=np.asarray(s.probe, np.complex64))
            sample = e.create_group("sample")
            sample.attrs["NX_class"] = "NXsample"
            if "rotation_angle_deg" in s.metadata:
                sample.create_dataset("rotation_angle", data=s.metadata["rotation_angle_deg"]).attrs["units"] = "deg"
            data = e.create_group("data")
            data.attrs["NX_class"] = "NXdata"
            data.attrs["signal"] = "data"
            data["data"] = d
            data.create_dataset("y", data=s.positions_m[:, 0]).attrs["units"] = "m"
            data.create_dataset("x", data=s.positions_m[:, 1]).attrs["units"] = "m"


def write_cxi(path: Path, scan: Scan) -> None:
    """Write one scan in the CXI 1.6 ptychography layout read by :func:`read_scan`."""
    with h5py.File(path, "w") as f:
        f["cxi_version"] = 160
        e = f.create_group("entry_1")
        src = e.create_group("instrument_1/source_1")
        src["energy"] = scan.energy_ev / EV_PER_J
        if scan.probe is not None:
            src["illumination"] = np.asarray(scan.probe, np.complex64)
        det = e.create_group("instrument_1/detector_1")
        det["data"] = scan.frames
        det["distance"] = scan.distance_m
        det["x_pixel_size"] = scan.pixel_size_m[1]
        det["y_pixel_size"] = scan.pixel_size_m[0]
        if scan.mask is not None:
            det["mask"] = (~np.asarray(scan.mask, bool)).astype(np.uint32)
        t = np.zeros((len(scan.positions_m), 3))
        t[:, 0] = -scan.positions_m[:, 1]
        t[:, 1] = -scan.positions_m[:, 0]
        geo = e.create_group("sample_1/geometry_1")
        geo["translation"] = t
        d1 = e.create_group("data_1")
        d1["data"] = h5py.SoftLink("/entry_1/instrument_1/detector_1/data")
        d1["translation"] = h5py.SoftLink("/entry_1/sample_1/geometry_1/translation")


#: where a probe is found in a file given as the initial probe (probe.input): this
#: technique's output, another scan file's, CXI's illumination, PtyPy's CXI export
PROBE_PATHS = (
    "probe/probe",
    "instrument/beam/probe",
    "instrument_1/source_1/illumination",
    "instrument_1/source_1/probe",
    "probe/data",
    "probe",
)


def read_probe(path: Path, source: str) -> tuple[np.ndarray, float | None]:
    """The probe modes (K, H, W) complex64 in a file given as the initial probe (a previous
    reconstruction's NeXus output, a scan with a probe, a CXI file), from its first entry
    holding one, with their pixel size (m) when the file says (``object/pixel_size``)."""
    with open_hdf5(path, source) as f:
        for name in sorted(f, key=_natural):
            g = f[name]
            if not isinstance(g, h5py.Group):
                continue
            for p in PROBE_PATHS:
                if p in g and isinstance(g[p], h5py.Dataset) and g[p].dtype.kind == "c":
                    probe = _probe(g, p, source)
                    dx = None
                    if "object/pixel_size" in g:
                        dx = float(np.ravel(read_array(g, "object/pixel_size", source))[0])
                    return probe, dx
    raise errors.InvalidInput(
        source, "holds no complex probe (looked for <entry>/" + ", <entry>/".join(PROBE_PATHS) + ")"
    )
