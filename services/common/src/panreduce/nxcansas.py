"""NXcanSAS: writing our curves, reading anyone's. One writer for every technique that
produces I(Q) (SAXS/WAXS, SANS).

Writer: NXcanSAS 1.1 (``SASentry@version="1.1"``, ``definition="NXcanSAS"``) following
the canSAS/NeXus application definition (https://manual.nexusformat.org/classes/
applications/NXcanSAS.html): one SASentry per sample, a SASdata with ``I`` (and
``Idev``) over ``Q`` (and ``Qdev``), the instrument (source wavelength, detector
distance, pixel size, beam centre), the sample (thickness, transmission) and a
SASprocess with the reduction's terms and notes (e.g. the user file), and optional
SAStransmission_spectrum groups. A series (kinetics or scan frames) is one SASdata
with ``I`` of shape (frames, q) and a frame axis (``I_axes="Time,Q"`` or
``"Frame,Q"``), which SasView's sasdata reads as one curve per frame. A 2-D image is
``I(Qy, Qx)`` with ``Qx``, ``Qy`` per pixel and ``I_axes="Q,Q"``.

Reader: tolerant of what other facilities write (SASdata found by ``canSAS_class`` or
``NX_class``, ``I_axes`` or ``axes``, missing or misshapen uncertainty/resolution
datasets ignored with a note).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import errors, nexus

CANSAS_VERSION = "1.1"

# SASsource/radiation: the values NXcanSAS enumerates (NXcanSAS.nxdl.xml)
RADIATION = (
    "Spallation Neutron Source",
    "Pulsed Reactor Neutron Source",
    "Reactor Neutron Source",
    "Synchrotron X-ray Source",
    "Pulsed Muon Source",
    "Rotating Anode X-ray",
    "Fixed Tube X-ray",
    "UV Laser",
    "Free-Electron Laser",
    "Optical Laser",
    "Ion Source",
    "UV Plasma Source",
    "neutron",
    "x-ray",
    "muon",
    "electron",
    "ultraviolet",
    "visible light",
    "positron",
    "proton",
)
_RADIATION_ALIASES = {
    "x-ray synchrotron radiation": "Synchrotron X-ray Source",
    "synchrotron": "Synchrotron X-ray Source",
    "xray": "x-ray",
    "x-rays": "x-ray",
    "neutrons": "neutron",
    "free electron laser": "Free-Electron Laser",
}
# units as NXcanSAS enumerates them (and UDUNITS/pint parse them: "1/A" would be per ampere)
Q_UNITS = "1/angstrom"
WAVELENGTH_UNITS = "angstrom"


def radiation_value(value: str) -> str:
    """``value`` as one of NXcanSAS's enumerated SASsource/radiation values (matched
    without regard to case, or through a few common aliases); ValueError otherwise."""
    text = str(value).strip()
    for item in RADIATION:
        if text.lower() == item.lower():
            return item
    alias = _RADIATION_ALIASES.get(text.lower())
    if alias is None:
        raise ValueError(f"radiation {value!r} is not one of NXcanSAS's values: {', '.join(RADIATION)}")
    return alias


def _set(group: h5py.Group, **attrs: Any) -> None:
    for k, v in attrs.items():
        group.attrs[k] = v


def _str(group: h5py.Group, key: str, value: str, **attrs: Any) -> h5py.Dataset:
    return nexus.write_text(group, key, value, **attrs)


def _num(group: h5py.Group, key: str, value: Any, units: str | None = None, **attrs: Any) -> h5py.Dataset:
    ds = group.create_dataset(key, data=value)
    if units is not None:
        ds.attrs["units"] = units
    _set(ds, **attrs)
    return ds


@dataclass
class SasMetadata:
    """What NXcanSAS records about the measurement (all optional)."""

    title: str = ""
    run: str = ""
    sample_id: str = ""
    sample_name: str = ""
    sample_details: str = ""
    thickness_mm: float | None = None
    transmission: float | None = None
    wavelength_A: float | None = None
    radiation: str = "Synchrotron X-ray Source"  # one of RADIATION (aliases accepted)
    probe: str = ""  # "x-ray", "neutron"
    source_type: str = ""
    instrument: str = ""
    distance_m: float | None = None
    pixel_x_m: float | None = None
    pixel_y_m: float | None = None
    beam_center_x_px: float | None = None
    beam_center_y_px: float | None = None
    beam_center_mm: tuple[float, float] | None = None  # used when the centre is not in pixels
    detector: str = ""
    process_name: str = "panreduce"
    process_version: str = ""
    process_terms: Mapping[str, Any] = field(default_factory=dict)  # written in this order
    process_notes: Mapping[str, str] = field(default_factory=dict)  # name -> text (e.g. a user file)
    notes: Sequence[str] = ()


def _entry(f: h5py.File, name: str, meta: SasMetadata, data_name: str) -> tuple[h5py.Group, h5py.Group]:
    """A SASentry ``name`` with its definition, title and run, and an empty SASdata."""
    entry = f.create_group(name)
    _set(entry, NX_class="NXentry", canSAS_class="SASentry", version=CANSAS_VERSION, default=data_name)
    _str(entry, "definition", "NXcanSAS")
    _str(entry, "title", meta.title or name)
    _str(entry, "run", meta.run or name, name=meta.run or name)
    data = entry.create_group(data_name)
    _set(data, NX_class="NXdata", canSAS_class="SASdata", signal="I")
    return entry, data


def _intensity(data: h5py.Group, i: np.ndarray, idev: np.ndarray | None, units: str) -> None:
    ids = _num(data, "I", np.asarray(i, dtype=float), units)
    if idev is not None:
        ids.attrs["uncertainties"] = "Idev"
        _num(data, "Idev", np.asarray(idev, dtype=float), units)


def write_entry(
    f: h5py.File,
    name: str,
    q: np.ndarray,
    i: np.ndarray,
    idev: np.ndarray | None = None,
    qdev: np.ndarray | None = None,
    *,
    meta: SasMetadata | None = None,
    i_units: str = "1/cm",
    frame_axis: tuple[str, np.ndarray, str] | None = None,
    extra: Mapping[str, tuple[np.ndarray, str]] | None = None,
    share: h5py.Group | None = None,
    data_name: str = "sasdata",
) -> h5py.Group:
    """Write one SASentry ``name`` to an open file.

    ``i`` is (nq,) for one curve, or (frames, nq) for a series with ``frame_axis`` =
    (name, values, units), e.g. ("Time", t, "s"). ``extra`` are per-frame 1-D datasets
    stored next to the frame axis (e.g. x/y motor positions of a scan). ``share``: an entry
    of the same file with the same ``meta`` (a series): its SASinstrument and SASprocess are
    hard-linked into this one instead of written again (the same groups to every reader,
    a few ms less per frame). ``data_name`` names the SASdata group.
    """
    meta = meta or SasMetadata()
    q = np.asarray(q, dtype=float)
    i = np.asarray(i, dtype=float)
    entry, data = _entry(f, name, meta, data_name)
    if i.ndim == 1:
        _set(data, I_axes="Q", Q_indices=np.array([0], dtype=np.int32))
    else:
        axis = frame_axis[0] if frame_axis else "Frame"
        _set(data, I_axes=f"{axis},Q", Q_indices=np.array([1], dtype=np.int32))
        data.attrs[f"{axis}_indices"] = np.array([0], dtype=np.int32)
        values = frame_axis[1] if frame_axis else np.arange(i.shape[0])
        _num(data, axis, np.asarray(values, dtype=float), frame_axis[2] if frame_axis else "")
        for key, (vals, units) in (extra or {}).items():
            _num(data, key, np.asarray(vals, dtype=float), units)
    _intensity(data, i, idev, i_units)
    qds = _num(data, "Q", q, Q_UNITS)
    if qdev is not None:
        qds.attrs["resolutions"] = "Qdev"
        _num(data, "Qdev", np.asarray(qdev, dtype=float), Q_UNITS)
    _instrument_sample_process(entry, meta, share)
    return entry


def _instrument_sample_process(entry: h5py.Group, meta: SasMetadata, share: h5py.Group | None) -> None:
    """SASinstrument, SASsample, SASprocess and SASnotes of an entry (instrument and process
    hard-linked from ``share`` when given)."""
    if share is not None:
        entry["sasinstrument"] = share["sasinstrument"]
    else:
        _write_instrument(entry, meta)
    sample = entry.create_group("sassample")
    _set(sample, NX_class="NXsample", canSAS_class="SASsample")
    sample_id = meta.sample_id or meta.title or entry.name.rsplit("/", 1)[-1]
    # SASsample/name is required by NXcanSAS; the ID stands in when no name is known
    _str(sample, "name", meta.sample_name or sample_id)
    _str(sample, "ID", sample_id)
    if meta.thickness_mm is not None:
        _num(sample, "thickness", float(meta.thickness_mm), "mm")
    if meta.transmission is not None:
        _num(sample, "transmission", float(meta.transmission), "")
    if meta.sample_details:
        _str(sample, "details", meta.sample_details)
    if share is not None:
        entry["sasprocess"] = share["sasprocess"]
    else:
        process = entry.create_group("sasprocess")
        _set(process, NX_class="NXprocess", canSAS_class="SASprocess")
        _str(process, "name", meta.process_name)
        if meta.process_version:
            _str(process, "version", meta.process_version)
        _str(process, "date", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
        for k, (key, value) in enumerate(meta.process_terms.items()):
            _str(process, f"term{k:02d}", str(value), name=key)
        for key, text in meta.process_notes.items():
            note = process.create_group(key)
            _set(note, NX_class="NXnote", canSAS_class="SASprocessnote")
            _str(note, "name", key)
            _str(note, "type", "text/plain")
            _str(note, "data", text)
    for k, note in enumerate(meta.notes):
        g = entry.create_group(f"sasnote_{k}")
        _set(g, NX_class="NXnote", canSAS_class="SASnote")
        _str(g, "SASnote", note)


def _write_instrument(entry: h5py.Group, meta: SasMetadata) -> None:
    inst = entry.create_group("sasinstrument")
    _set(inst, NX_class="NXinstrument", canSAS_class="SASinstrument")
    _str(inst, "name", meta.instrument or "unknown")
    source = inst.create_group("sassource")
    _set(source, NX_class="NXsource", canSAS_class="SASsource")
    _str(source, "radiation", radiation_value(meta.radiation))
    if meta.probe:
        _str(source, "probe", meta.probe)
    if meta.source_type:
        _str(source, "type", meta.source_type)
    if meta.wavelength_A is not None:
        _num(source, "incident_wavelength", float(meta.wavelength_A), WAVELENGTH_UNITS)
    coll = inst.create_group("sascollimation")
    _set(coll, NX_class="NXcollimator", canSAS_class="SAScollimation")
    det = inst.create_group("sasdetector")
    _set(det, NX_class="NXdetector", canSAS_class="SASdetector")
    _str(det, "name", meta.detector or "detector")
    if meta.distance_m is not None:
        _num(det, "SDD", float(meta.distance_m), "m")
    if meta.pixel_x_m is not None:
        _num(det, "x_pixel_size", float(meta.pixel_x_m) * 1e3, "mm")
    if meta.pixel_y_m is not None:
        _num(det, "y_pixel_size", float(meta.pixel_y_m) * 1e3, "mm")
    centre = meta.beam_center_mm
    cx, cy, px, py = meta.beam_center_x_px, meta.beam_center_y_px, meta.pixel_x_m, meta.pixel_y_m
    if centre is None and cx is not None and cy is not None and px is not None and py is not None:
        centre = (float(cx) * float(px) * 1e3, float(cy) * float(py) * 1e3)
    if centre is not None:
        _num(det, "beam_center_x", float(centre[0]), "mm")
        _num(det, "beam_center_y", float(centre[1]), "mm")


def write_transmission_spectrum(
    entry: h5py.Group, key: str, name: str, wavelength: np.ndarray, t: np.ndarray, tdev: np.ndarray
) -> h5py.Group:
    """A SAStransmission_spectrum ``key`` (e.g. ``sastransmission_spectrum01``) with
    ``@name`` (``sample`` or ``can``): T and Tdev over lambda (Å)."""
    g = entry.create_group(key)
    _set(
        g,
        NX_class="NXdata",
        canSAS_class="SAStransmission_spectrum",
        name=name,
        signal="T",
        T_axes="lambda",
        T_indices=np.int32(0),
    )
    _num(g, "lambda", np.asarray(wavelength, dtype=float), WAVELENGTH_UNITS)
    # T is NX_DIMENSIONLESS: units "" (UDUNITS' and pint's dimensionless)
    _num(g, "T", np.asarray(t, dtype=float), "", uncertainties="Tdev")
    _num(g, "Tdev", np.asarray(tdev, dtype=float), "")
    return g


def write_entry_2d(
    f: h5py.File,
    name: str,
    qx: np.ndarray,
    qy: np.ndarray,
    i: np.ndarray,
    idev: np.ndarray | None = None,
    *,
    meta: SasMetadata | None = None,
    i_units: str = "1/cm",
    mask: np.ndarray | None = None,
    share: h5py.Group | None = None,
    data_name: str = "sasdata",
) -> h5py.Group:
    """One SASentry with 2-D data I (rows, columns) and Qx/Qy for every pixel, as
    NXcanSAS describes detector-plane data; masked pixels True in ``mask``."""
    meta = meta or SasMetadata()
    entry, data = _entry(f, name, meta, data_name)
    # axis names as SasView's own NXcanSAS writer puts them (I_axes="Qx,Qy",
    # Q_indices=[0, 1]); Qx and Qy are given for every pixel
    _set(data, I_axes="Qx,Qy", Q_indices=np.array([0, 1], dtype=np.int32))
    _intensity(data, i, idev, i_units)
    if share is not None:  # a series on one detector: the same Qx, Qy and instrument
        data["Qx"], data["Qy"] = share[f"{data_name}/Qx"], share[f"{data_name}/Qy"]
    else:
        _num(data, "Qx", np.asarray(qx, dtype=float), Q_UNITS)
        _num(data, "Qy", np.asarray(qy, dtype=float), Q_UNITS)
    if mask is not None:
        data.attrs["mask"] = "mask"
        _num(data, "mask", np.asarray(mask, dtype=bool))
    _instrument_sample_process(entry, meta, share)
    return entry


def set_file_attributes(f: h5py.File, default: str, *, creator: str = "PaNReduce") -> None:
    f.attrs["NX_class"] = "NXroot"
    f.attrs["default"] = default
    f.attrs["file_name"] = Path(f.filename).name
    f.attrs["file_time"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    f.attrs["creator"] = creator
    f.attrs["HDF5_Version"] = h5py.version.hdf5_version
    f.attrs["h5py_version"] = h5py.version.version


# -- reading ---------------------------------------------------------------------------
@dataclass
class SasCurve:
    """One SASdata read back: I over Q (1-D or frames x Q), what else it carried."""

    entry: str
    data: str
    q: np.ndarray
    i: np.ndarray
    idev: np.ndarray | None
    qdev: np.ndarray | None
    q_units: str
    i_units: str
    title: str = ""
    axes: list[str] = field(default_factory=list)
    frame_axis: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _attr(obj: h5py.HLObject, key: str, default: Any = None) -> Any:
    v = obj.attrs.get(key, default)
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, np.ndarray) and v.dtype.kind in "SO":
        return [x.decode(errors="replace") if isinstance(x, bytes) else str(x) for x in v.ravel()]
    return v


def _text(ds: h5py.Dataset | None) -> str:
    if ds is None:
        return ""
    v = ds[()]
    if isinstance(v, np.ndarray):  # the first of several
        v = v.ravel()[0] if v.size else ""
    return nexus.read_text(v)


def _class(obj: h5py.HLObject) -> str:
    c = _attr(obj, "canSAS_class") or _attr(obj, "NX_class") or ""
    return c[0] if isinstance(c, list) else str(c)


def read_nxcansas(path: Path | str, source: str | None = None) -> list[SasCurve]:
    """Every SASdata of every SASentry of an NXcanSAS file (ours or anyone's)."""
    path = Path(path)
    name = source or path.name
    from panreduce.kit.readers import open_checked

    try:
        f = open_checked(path, name)
    except OSError as exc:
        raise errors.InvalidInput(name, f"is not a readable HDF5/NXcanSAS file ({exc})") from None
    curves: list[SasCurve] = []
    try:
        for ename in f:
            entry = f[ename]
            if not isinstance(entry, h5py.Group) or _class(entry) not in ("SASentry", "NXentry"):
                continue
            title = _text(entry.get("title")) if isinstance(entry.get("title"), h5py.Dataset) else ""
            for dname in entry:
                group = entry[dname]
                if not isinstance(group, h5py.Group) or _class(group) not in ("SASdata",):
                    if not (
                        isinstance(group, h5py.Group)
                        and _class(group) == "NXdata"
                        and _attr(group, "canSAS_class") is None
                        and "Q" in group
                    ):
                        continue
                curves.append(_read_sasdata(ename, dname, group, title, name))
    finally:
        f.close()
    if not curves:
        raise errors.InvalidInput(name, "holds no SASentry/SASdata (not NXcanSAS)")
    return curves


def _read_sasdata(ename: str, dname: str, g: h5py.Group, title: str, source: str = "") -> SasCurve:
    from panreduce.kit.readers import read_dataset

    def values(ds: h5py.Dataset) -> np.ndarray:
        """A dataset's values as floats, its declared size checked first (InputTooLarge)."""
        return np.asarray(read_dataset(ds, source=source or None), dtype=float)

    notes: list[str] = []
    signal = _attr(g, "signal", "I") or "I"
    axes = _attr(g, "I_axes", None)
    if axes is None:
        axes = _attr(g, "axes", "Q")
    if isinstance(axes, str):
        axes = [a.strip() for a in axes.split(",")]
    axes = list(axes)
    i_ds = g[signal]
    i = values(i_ds)
    q_name = "Q" if "Q" in g else next((a for a in axes if a in g and a not in (".",)), "Q")
    q_ds = g[q_name]
    q = values(q_ds)

    def companion(ds: h5py.Dataset, attr: str, shape: tuple[int, ...]) -> np.ndarray | None:
        names = _attr(ds, attr) or _attr(ds, attr.rstrip("s"))
        if not names:
            return None
        first = (names[0] if isinstance(names, list) else str(names).split(",")[0]).strip()
        if first not in g:
            notes.append(f"{ds.name}@{attr} names {first!r}, which is missing")
            return None
        arr = values(g[first])
        if arr.shape != shape:
            notes.append(f"{first} has shape {arr.shape}, not {shape}: ignored")
            return None
        return arr

    idev = companion(i_ds, "uncertainties", i.shape)
    qdev = companion(q_ds, "resolutions", q.shape)
    frame_axis = None
    if i.ndim == 2 and len(axes) == 2 and axes[0] in g:
        frame_axis = values(g[axes[0]])
    return SasCurve(
        entry=ename,
        data=dname,
        q=q,
        i=i,
        idev=idev,
        qdev=qdev,
        q_units=str(_attr(q_ds, "units", "")),
        i_units=str(_attr(i_ds, "units", "")),
        title=title,
        axes=axes,
        frame_axis=frame_axis,
        notes=notes,
    )
