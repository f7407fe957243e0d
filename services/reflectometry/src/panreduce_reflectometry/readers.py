"""Readers: ISIS raw NeXus, Mantid processed NeXus, ANSTO Platypus NeXus -> :class:`TofRun`.

Every reader returns the detector spectra in time of flight with what the geometry and
normalisation need; what the file does not hold comes from the instrument description.
Problems with a file raise ``InvalidInput`` naming it.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from panreduce import errors, nexus
from panreduce.kit.readers import open_hdf5
from panreduce_reflectometry.instruments import INTER, OFFSPEC, PLATYPUS
from panreduce_reflectometry.reduction import Transmission, transmission_from_table
from panreduce_reflectometry.runs import TofRun

MAX_SPECTRA = 4096
MAX_TOF_BINS = 200_000
MAX_TABLE_BYTES = 20_000_000


def read_run(path: Path, name: str) -> TofRun:
    """Read any supported reflectometry file, by its layout."""
    with open_hdf5(path, name) as f:
        if "raw_data_1" in f:
            return _isis_raw(f, name)
        if "mantid_workspace_1" in f:
            return _mantid_processed(f, name)
        if "entry1" in f and "data/hmm" in f["entry1"]:
            return _platypus(f, name)
    raise errors.InvalidInput(
        name,
        "is not an ISIS raw NeXus (raw_data_1), Mantid processed NeXus "
        "(mantid_workspace_1) or Platypus NeXus (entry1/data/hmm) file",
    )


def read_transmission_table(
    path: Path, *, name: str, size: int, wavelength_range: tuple[float, float] | None = None
) -> Transmission:
    """A transmission table (λ [Å], T per Å, σT; ``#`` comments and header rows skipped) ->
    :class:`Transmission` over ``wavelength_range`` (default: the table's own λ range)."""
    if size > MAX_TABLE_BYTES:
        raise errors.InputTooLarge(name, size, MAX_TABLE_BYTES)
    try:
        text = path.read_text(errors="strict")
        rows = [
            ln.replace(",", " ").split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
        ]
        rows = [r for r in rows if not r[0][0].isalpha()]
        arr = np.array(rows, dtype=float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.InvalidInput(name, f"is not a table of λ, T, σT numbers ({exc})") from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise errors.InvalidInput(name, "needs three columns: λ [Å], T per Å, σT")
    try:
        return transmission_from_table(
            arr[:, 0],
            arr[:, 1],
            arr[:, 2],
            source=path.name,
            wavelength_range=wavelength_range or (float(arr[0, 0]), float(arr[-1, 0])),
        )
    except ValueError as exc:
        raise errors.InvalidInput(name, str(exc)) from None


def _req(group: h5py.Group, path: str, source: str) -> h5py.Dataset:
    if path not in group:
        raise errors.InvalidInput(source, f"lacks {group.name.rstrip('/')}/{path}")
    obj = group[path]
    if not isinstance(obj, h5py.Dataset):
        raise errors.InvalidInput(source, f"{obj.name} is not a dataset")
    return obj


def _text(group: h5py.Group, path: str, default: str = "") -> str:
    if path not in group:
        return default
    v = group[path][()]
    if isinstance(v, np.ndarray):  # the first of several
        v = v.ravel()[0] if v.size else b""
    return nexus.read_text(v).strip()


def _number(group: h5py.Group, path: str) -> float | None:
    if path not in group:
        return None
    v = np.asarray(group[path][()], dtype=float).ravel()
    return float(v[-1]) if v.size else None


def _check_edges(edges: np.ndarray, n: int, source: str) -> np.ndarray:
    edges = np.asarray(edges, dtype=float).ravel()
    if edges.size != n + 1 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
        raise errors.InvalidInput(source, f"time-of-flight edges: need {n + 1} increasing finite values")
    return edges


def _check_counts(counts: np.ndarray, source: str) -> np.ndarray:
    if counts.ndim != 2 or counts.shape[0] > MAX_SPECTRA or counts.shape[1] > MAX_TOF_BINS:
        raise errors.InvalidInput(
            source, f"detector array of shape {counts.shape} is not (spectra ≤ {MAX_SPECTRA}, tof ≤ {MAX_TOF_BINS})"
        )
    if not np.all(np.isfinite(counts)):
        raise errors.InvalidInput(source, "detector counts hold NaN or infinity")
    return counts


# -- ISIS raw NeXus (OFFSPEC) ---------------------------------------------------------------
def _isis_raw(f: h5py.File, source: str) -> TofRun:
    g = f["raw_data_1"]
    name = (_text(g, "name") or _text(g, "beamline") or _text(g, "instrument/name")).upper()
    if "OFFSPEC" not in name:
        raise errors.InvalidInput(
            source, f"ISIS raw file of instrument {name or '?'}: only OFFSPEC has a description here"
        )
    inst = OFFSPEC
    spec_all = np.asarray(_req(g, "detector_1/spectrum_index", source)[()], dtype=int).ravel()
    if "detector_1/counts" in g:
        raw = np.asarray(_req(g, "detector_1/counts", source)[()], dtype=float)
        if raw.ndim == 3:
            raw = raw.sum(axis=0)  # periods summed
        edges = _check_edges(_req(g, "detector_1/time_of_flight", source)[()], raw.shape[-1], source)
        notes: tuple[str, ...] = ()
    elif "detector_1_events" in g:
        edges = np.asarray(_req(g, "detector_1/time_of_flight", source)[()], dtype=float)
        ev = g["detector_1_events"]
        ids = np.asarray(_req(ev, "event_id", source)[()], dtype=int)
        tof = np.asarray(_req(ev, "event_time_offset", source)[()], dtype=float)
        rows = np.searchsorted(spec_all, ids)
        raw, _, _ = np.histogram2d(rows, tof, bins=(np.arange(spec_all.size + 1) - 0.5, edges))
        notes = ("histogrammed from events",)
    else:
        raise errors.InvalidInput(source, "has neither detector_1/counts nor detector_1_events")
    raw = _check_counts(raw, source)
    if raw.shape[0] != spec_all.size:
        raise errors.InvalidInput(source, f"{raw.shape[0]} detector rows but {spec_all.size} spectrum numbers")
    det = spec_all >= inst.first_pixel_spectrum
    spectra = spec_all[det]
    pixel = spectra - inst.first_pixel_spectrum
    if pixel.max(initial=0) >= inst.n_pixels:
        raise errors.InvalidInput(
            source, f"spectrum numbers up to {spectra.max()} exceed the {inst.n_pixels}-pixel detector"
        )
    counts = raw[det]
    mon_path = f"monitor_{inst.i0_monitor_spectrum}/data"
    monitor = np.asarray(_req(g, mon_path, source)[()], dtype=float).reshape(-1)
    if monitor.size != counts.shape[1]:
        raise errors.InvalidInput(source, f"{mon_path} has {monitor.size} bins, the detector {counts.shape[1]}")
    return TofRun(
        source=source,
        instrument=inst,
        run_number=_text(g, "run_number") or Path(source).stem,
        title=_text(g, "title"),
        start_time=_text(g, "start_time"),
        sample_name=_text(g, "sample/name") or _text(g, "title"),
        counts=counts,
        variances=counts.copy(),
        spectra=spectra,
        tof_edges_us=edges,
        pixel_y_m=inst.first_pixel_y_m + pixel * inst.pixel_pitch_m,
        pixel_z_m=np.full(spectra.size, inst.detector_distance_m),
        pixel_height_m=inst.pixel_height_m,
        source_to_sample_m=inst.source_to_sample_m,
        monitor_counts=monitor,
        monitor_flight_path_m=inst.monitor_flight_path_m,
        theta_log_deg=None,  # selog Theta is constant over these runs: not used
        proton_charge_uah=_number(g, "proton_charge"),
        notes=notes,
    )


# -- Mantid processed NeXus (INTER) ---------------------------------------------------------
def _mantid_processed(f: h5py.File, source: str) -> TofRun:
    g = f["mantid_workspace_1"]
    name = _text(g, "instrument/name").upper()
    if name != "INTER":
        raise errors.InvalidInput(
            source, f"Mantid workspace of instrument {name or '?'}: only INTER has a description here"
        )
    inst = INTER
    values = _check_counts(np.asarray(_req(g, "workspace/values", source)[()], dtype=float), source)
    errs = np.asarray(_req(g, "workspace/errors", source)[()], dtype=float)
    if errs.shape != values.shape:
        raise errors.InvalidInput(source, "workspace/errors and workspace/values differ in shape")
    edges = _check_edges(_req(g, "workspace/axis1", source)[()], values.shape[1], source)
    spectra = np.asarray(_req(g, "workspace/axis2", source)[()], dtype=int).ravel()
    pos = np.asarray(_req(g, "instrument/detector/detector_positions", source)[()], dtype=float)
    det_ids = np.asarray(_req(g, "instrument/detector/detector_list", source)[()], dtype=int).ravel()
    if pos.shape != (spectra.size, 3) or det_ids.size != spectra.size:
        raise errors.InvalidInput(source, "detector positions/list do not match the spectra")
    mon_ids = (
        set(np.asarray(g["instrument/physical_monitors/detector_number"][()], dtype=int).ravel())
        if "instrument/physical_monitors/detector_number" in g
        else {1, 2, 3}
    )
    linear = det_ids >= 2001  # the linear detector (ids 2001...); 1001/1002 are point detectors
    mon_row = np.flatnonzero(spectra == inst.i0_monitor_spectrum)
    if mon_row.size != 1 or int(det_ids[mon_row[0]]) not in mon_ids:
        raise errors.InvalidInput(source, f"no I0 monitor at spectrum {inst.i0_monitor_spectrum}")
    r, tt = pos[linear, 0], np.radians(pos[linear, 1])
    slits = None
    s1, s2 = _number(g, "logs/S1VG/value"), _number(g, "logs/S2VG/value")
    if s1 is not None and s2 is not None and inst.slit_positions_m:
        slits = (s1, s2)
    return TofRun(
        source=source,
        instrument=inst,
        run_number=_text(g, "logs/run_number/value") or Path(source).stem,
        title=_text(g, "logs/run_title/value") or _text(g, "title"),
        start_time=_text(g, "logs/run_start/value") or _text(g, "logs/start_time/value"),
        sample_name=_text(g, "logs/run_title/value") or _text(g, "title"),
        counts=values[linear],
        variances=errs[linear] ** 2,
        spectra=spectra[linear],
        tof_edges_us=edges,
        pixel_y_m=r * np.sin(tt),
        pixel_z_m=r * np.cos(tt),
        pixel_height_m=inst.pixel_height_m,
        source_to_sample_m=inst.source_to_sample_m,
        monitor_counts=values[mon_row[0]],
        monitor_flight_path_m=inst.monitor_flight_path_m,
        theta_log_deg=_number(g, "logs/Theta/value"),
        slit_gaps_mm=slits,
        slit_distance_mm=1000.0 * (inst.slit_positions_m[1] - inst.slit_positions_m[0]) if slits else None,
        proton_charge_uah=_number(g, "logs/gd_prtn_chrg/value"),
    )


# -- ANSTO Platypus NeXus -------------------------------------------------------------------
def _platypus(f: h5py.File, source: str) -> TofRun:
    e = f["entry1"]
    inst = PLATYPUS
    hmm = np.asarray(_req(e, "data/hmm", source)[()], dtype=float)
    if hmm.ndim != 4:
        raise errors.InvalidInput(source, f"entry1/data/hmm has shape {hmm.shape}, not (scan, tof, y, x)")
    image = hmm.sum(axis=(0, 3))  # scan points and x summed: (tof, y)
    counts = _check_counts(np.ascontiguousarray(image.T), source)  # (y, tof)
    tof = np.asarray(_req(e, "data/time_of_flight", source)[()], dtype=float).ravel()
    edges = _check_edges(tof[: counts.shape[1] + 1], counts.shape[1], source)
    y_off = np.asarray(_req(e, "instrument/detector/y_pixel_offset", source)[()], dtype=float).ravel()
    if y_off.size < counts.shape[0]:
        raise errors.InvalidInput(source, "y_pixel_offset has fewer entries than y pixels")
    y_off = y_off[: counts.shape[0]]
    pitch = float(np.median(np.abs(np.diff(y_off)))) * 1e-3
    par = "instrument/parameters/"
    dy = _number(e, "instrument/detector/longitudinal_translation")
    vt = _number(e, "instrument/detector/vertical_translation") or 0.0
    sample_distance = _number(e, par + "sample_distance")
    speeds = [_number(e, f"instrument/disk_chopper/ch{i}speed") or 0.0 for i in (1, 2, 3, 4)]
    phases = [_number(e, f"instrument/disk_chopper/ch{i}phase") or 0.0 for i in (1, 2, 3, 4)]
    dists = [_number(e, par + f"chopper{i}_distance") or 0.0 for i in (1, 2, 3, 4)]
    poffs = [_number(e, par + f"chopper{i}_phase_offset") or 0.0 for i in (1, 2, 3, 4)]
    if dy is None or sample_distance is None or abs(speeds[0]) < 2:
        raise errors.InvalidInput(
            source, "lacks the detector translation, sample distance or a running master chopper (disk 1)"
        )
    slave = next((i for i in (1, 2, 3) if abs(speeds[i]) > 10), None)
    if slave is None:
        raise errors.InvalidInput(source, "no slave chopper is running")
    freq_hz = abs(speeds[0]) / 60.0
    openings = inst.chopper.disc_openings_deg if inst.chopper else (60.0, 10.0, 25.0, 60.0)
    # phase opening between master (disc 1) and slave; time origin at the trailing edge of disc 1
    disc = slave + 1  # disc number of the slave (2, 3 or 4)
    turn = 1.0 if disc == 4 else -1.0  # disc 4's phase counts the other way
    phase_angle = 0.5 * openings[0] + 0.5 * openings[slave] + turn * phases[slave] - poffs[slave]
    t_offset = 1e6 * (poffs[0] - phase_angle + openings[0]) / (2.0 * 360.0 * freq_hz)
    chopper_mid_mm = 0.5 * (dists[0] + dists[slave])
    omega = _number(e, par + "omega")
    twotheta = _number(e, par + "twotheta") or 0.0
    s2 = _number(e, "instrument/slits/second_vertical_gap")
    s3 = _number(e, "instrument/slits/third_vertical_gap")
    d2, d3 = _number(e, par + "slit2_distance"), _number(e, par + "slit3_distance")
    db = omega is not None and abs(omega) < 1e-3 and abs(twotheta) < 1e-3
    n = counts.shape[0]
    return TofRun(
        source=source,
        instrument=inst,
        run_number=Path(source).name.split(".")[0],
        title=_text(e, "sample/name"),
        start_time=_text(e, "start_time"),
        sample_name=_text(e, "sample/name"),
        counts=counts,
        variances=counts.copy(),
        spectra=np.arange(n),
        tof_edges_us=edges,
        # the hmm y index counts upwards (the direct beam's long-λ neutrons, which fall most,
        # land on lower indices; refnx takes height = index × pitch) while y_pixel_offset is
        # written top-down (+115 mm at index 0): height above the detector centre = −offset
        pixel_y_m=1e-3 * (vt - y_off),
        pixel_z_m=np.full(n, 1e-3 * dy),
        pixel_height_m=pitch,
        source_to_sample_m=1e-3 * (sample_distance - chopper_mid_mm),
        tof_offset_us=float(t_offset),
        monitor_total=_number(e, "monitor/bm1_counts"),
        theta_log_deg=omega,
        slit_gaps_mm=(s2, s3) if s2 and s3 else None,
        slit_distance_mm=(d3 - d2) if d2 is not None and d3 is not None else None,
        first_slit_to_sample_m=1e-3 * (sample_distance - d2) if d2 is not None else None,
        counting_time_s=_number(e, "instrument/detector/time"),
        is_direct_beam=db,
        notes=(f"chopper pair 1-{disc} at {freq_hz:.2f} Hz, time origin {t_offset:.1f} µs",),
    )
