"""ISIS raw NeXus (``ISISTOFRAW``) files: histogram and event mode, and run summation.

Layout (fact sheet ``loq-sans.md`` §2): ``/raw_data_1`` (NXentry) holds
``detector_1/counts`` (period, spectrum, tof) with ``spectrum_index`` and ``time_of_flight``
bin edges in µs, ``monitor_<n>/data`` (period, 1, tof) with ``spectrum_index``, the sample
block (thickness, width, height in mm, shape), ``proton_charge`` (µAh), ``good_frames``,
``run_number``, ``title`` and ``start_time``. Event-mode files hold
``detector_1_events/{event_id, event_time_offset}`` (NXevent_data) instead of
``detector_1/counts``; they are histogrammed here on a given TOF grid.

Counting errors are ``E = sqrt(counts)``; the reduction carries variances (``= counts``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from panreduce import errors, nexus
from panreduce.kit.readers import open_hdf5, read_array, require_dataset

__all__ = ["RawRun", "RunInfo", "SampleGeometry", "histogram_events", "read_run", "read_run_info", "sum_runs"]

ENTRY = "raw_data_1"


@dataclass(frozen=True)
class SampleGeometry:
    thickness: float  # mm
    width: float  # mm
    height: float  # mm
    shape: str  # "Disc", "Cylinder", "FlatPlate" (ISIS sample block)


@dataclass(frozen=True)
class RunInfo:
    run_number: int
    title: str
    n_spectra: int
    source: str


@dataclass(frozen=True)
class RawRun:
    """One run (or a sum of runs) as histograms on a common TOF grid."""

    source: str  # file name(s)
    run_number: int  # of the first run summed
    runs: tuple[int, ...]  # every run summed, in order
    title: str
    instrument: str
    start_time: str
    tof: np.ndarray  # (ntof+1,) detector TOF bin edges, µs
    spectra: np.ndarray  # (nspec,) spectrum numbers of the rows of ``counts``
    counts: np.ndarray  # (nspec, ntof) float64
    monitor_tof: np.ndarray  # (ntof_m+1,) monitor TOF edges, µs
    monitors: dict[int, np.ndarray]  # spectrum -> (ntof_m,) counts
    proton_charge: float  # µAh
    good_frames: int
    sample: SampleGeometry
    event_mode: bool = False

    @property
    def name(self) -> str:
        """``<last run>-add`` for a sum (the ISIS convention), else the run number."""
        return f"{self.runs[-1]}-add" if len(self.runs) > 1 else str(self.run_number)

    def spectrum(self, number: int) -> np.ndarray:
        """Counts of one detector spectrum."""
        idx = np.flatnonzero(self.spectra == number)
        if idx.size == 0:
            raise errors.InvalidInput(self.source, f"has no spectrum {number}")
        return self.counts[idx[0]]


def _scalar(group: h5py.Group, path: str, source: str, default=None):
    if path not in group:
        if default is not None:
            return default
        raise errors.InvalidInput(source, f"has no dataset {group.name}/{path}")
    value = read_array(group, path, source, finite=False)
    value = value.reshape(-1)[0] if value.size else default
    if isinstance(value, bytes | np.bytes_):
        return nexus.read_text(value).strip()
    return value.item() if isinstance(value, np.generic) else value


def _entry(f: h5py.File, source: str) -> h5py.Group:
    entry = f.get(ENTRY)
    if not isinstance(entry, h5py.Group):
        raise errors.InvalidInput(source, f"is not an ISIS raw NeXus file (no /{ENTRY} entry)")
    return entry


def read_run_info(path: Path, source: str) -> RunInfo:
    """Run number, title and number of detector spectra, without reading the counts."""
    with open_hdf5(path, source) as f:
        entry = _entry(f, source)
        if "detector_1/spectrum_index" in entry:
            n = int(require_dataset(entry, "detector_1/spectrum_index", source).shape[0])
        elif "detector_1_events" in entry:
            n = -1
        else:
            raise errors.InvalidInput(source, "has neither detector_1 histograms nor detector_1_events")
        return RunInfo(int(_scalar(entry, "run_number", source)), str(_scalar(entry, "title", source, "")), n, source)


def histogram_events(event_id: np.ndarray, tof: np.ndarray, spectra: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram events (detector id, time of flight µs) into (len(spectra), len(edges)-1)
    counts; events of other ids or outside the edges are dropped."""
    spectra = np.asarray(spectra)
    edges = np.asarray(edges, dtype=np.float64)
    order = np.argsort(spectra)
    sorted_spec = spectra[order]
    pos = np.searchsorted(sorted_spec, event_id)
    pos_c = np.clip(pos, 0, sorted_spec.size - 1)
    keep = sorted_spec[pos_c] == event_id
    tbin = np.searchsorted(edges, tof, side="right") - 1
    keep &= (tbin >= 0) & (tbin < edges.size - 1) & (tof < edges[-1])
    row = order[pos_c[keep]]
    nb = edges.size - 1
    flat = np.bincount(row * nb + tbin[keep], minlength=spectra.size * nb)
    return flat.reshape(spectra.size, nb).astype(np.float64)


def _read_rows(ds: h5py.Dataset, i0: int, i1: int, period: int = 0) -> np.ndarray:
    """``ds[period, i0:i1, :]`` of a (period, spectrum, tof) dataset.

    ISIS files store it in small gzip chunks of whole spectra (e.g. 8 x 102); for those the
    chunks are read raw and inflated with zlib, which is about 1.5x faster than going
    through HDF5's filter pipeline. Any other layout goes through h5py.
    """
    chunks = ds.chunks
    plain_gzip = (
        chunks is not None
        and chunks[0] == 1
        and chunks[2] == ds.shape[2]
        and ds.compression == "gzip"
        and not ds.shuffle
        and not ds.fletcher32
        and ds.scaleoffset is None
        and ds.dtype.kind in "iu"
        and len(ds._filters) == 1
    )
    if not plain_gzip or i1 <= i0:
        return ds[period, i0:i1, :]
    step = chunks[1]
    first, last = (i0 // step) * step, ((i1 + step - 1) // step) * step
    dsid = ds.id
    raw = []
    for start in range(first, last, step):
        mask, data = dsid.read_direct_chunk((period, start, 0))
        if mask:  # a chunk stored without its filter: let HDF5 handle the whole read
            return ds[period, i0:i1, :]
        raw.append(zlib.decompress(data))
    full = np.frombuffer(b"".join(raw), dtype=ds.dtype).reshape(-1, ds.shape[2])
    return full[i0 - first : i1 - first]


def _period_index(n_periods: int, period: int, source: str) -> int:
    """0-based index of the requested (1-based) period of a multi-period run; a single-period
    run (e.g. the transmission runs of a multi-period sample) is read whatever is asked."""
    if n_periods == 1:
        return 0
    if period == 0:
        raise errors.InvalidInput(
            source, f"has {n_periods} periods; choose one with the 'period' parameter (1-{n_periods})"
        )
    if not 1 <= period <= n_periods:
        raise errors.InvalidInput(source, f"has {n_periods} period(s); period {period} does not exist")
    return period - 1


def read_run(
    path: Path,
    source: str,
    *,
    spectra: tuple[int, int] | None = None,
    event_edges: np.ndarray | None = None,
    period: int = 0,
) -> RawRun:
    """Read an ISIS raw NeXus run.

    ``spectra`` = (first, last) limits the detector spectra read (inclusive), e.g. the main
    bank. Event data are histogrammed on ``event_edges`` (µs), or on the monitors' TOF grid.
    ``period`` (1-based) picks one period of a multi-period histogram run, detectors and
    monitors alike; 0 refuses multi-period runs. Single-period runs ignore it.
    Raises ``InvalidInput`` naming ``source`` for anything missing, damaged or inconsistent.
    """
    with open_hdf5(path, source) as f:
        entry = _entry(f, source)
        monitors: dict[int, np.ndarray] = {}
        monitor_tof = None
        for name in sorted(entry):
            if not name.startswith("monitor_"):
                continue
            grp = entry[name]
            spec = int(_scalar(grp, "spectrum_index", source))
            data = read_array(grp, "data", source)
            if data.ndim != 3 or data.shape[1] != 1:
                raise errors.InvalidInput(source, f"{grp.name}/data has shape {data.shape}, expected (period, 1, tof)")
            monitors[spec] = data[_period_index(data.shape[0], period, source), 0].astype(np.float64)
            if monitor_tof is None and "time_of_flight" in grp:
                monitor_tof = read_array(grp, "time_of_flight", source).astype(np.float64)
        event_mode = "detector_1_events" in entry and "detector_1/counts" not in entry
        if event_mode and period > 1:
            raise errors.InvalidInput(source, f"is an event-mode run: period {period} cannot be selected")
        if event_mode:
            ev = entry["detector_1_events"]
            ids = read_array(ev, "event_id", source).astype(np.int64)
            t = read_array(ev, "event_time_offset", source).astype(np.float64)
            if ids.shape != t.shape:
                raise errors.InvalidInput(source, "event_id and event_time_offset differ in length")
            edges = event_edges if event_edges is not None else monitor_tof
            if edges is None:
                raise errors.InvalidInput(source, "event data but no TOF grid (no monitor time_of_flight)")
            tof = np.asarray(edges, dtype=np.float64)
            lo, hi = spectra if spectra is not None else (int(ids.min(initial=1)), int(ids.max(initial=1)))
            spec_numbers = np.arange(lo, hi + 1)
            counts = histogram_events(ids, t, spec_numbers, tof)
        else:
            counts_ds = require_dataset(entry, "detector_1/counts", source)
            if counts_ds.ndim != 3:
                raise errors.InvalidInput(source, f"detector_1/counts has shape {counts_ds.shape}, expected 3-D")
            p_index = _period_index(counts_ds.shape[0], period, source)
            spec_all = read_array(entry, "detector_1/spectrum_index", source).astype(np.int64)
            tof = read_array(entry, "detector_1/time_of_flight", source).astype(np.float64)
            if spec_all.size != counts_ds.shape[1] or tof.size != counts_ds.shape[2] + 1:
                raise errors.InvalidInput(
                    source,
                    f"detector_1/counts {counts_ds.shape} does not match {spec_all.size} spectra "
                    f"and {tof.size} TOF edges",
                )
            if spectra is None:
                i0, i1 = 0, spec_all.size
            else:
                i0 = int(np.searchsorted(spec_all, spectra[0]))
                i1 = int(np.searchsorted(spec_all, spectra[1], side="right"))
                expected = spectra[1] - spectra[0] + 1
                if i1 - i0 != expected or not np.array_equal(spec_all[i0:i1], np.arange(spectra[0], spectra[1] + 1)):
                    raise errors.InvalidInput(
                        source,
                        f"does not hold spectra {spectra[0]}-{spectra[1]} contiguously "
                        f"(it has {spec_all.size} spectra {spec_all[0]}-{spec_all[-1]})",
                    )
            try:
                block = _read_rows(counts_ds, i0, i1, p_index)
            except (OSError, RuntimeError, ValueError, zlib.error) as exc:
                raise errors.InvalidInput(
                    source, f"detector_1/counts cannot be read: damaged or truncated ({exc})"
                ) from None
            counts = np.asarray(block, dtype=np.float64)
            spec_numbers = spec_all[i0:i1]
        if not np.all(np.diff(tof) > 0):
            raise errors.InvalidInput(source, "TOF bin edges are not increasing")
        if not np.all(np.isfinite(counts)) or (counts < 0).any():
            raise errors.InvalidInput(source, "detector counts are negative or not finite")
        if monitor_tof is None:
            monitor_tof = tof
        for spec, m in monitors.items():
            if m.size != monitor_tof.size - 1:
                raise errors.InvalidInput(
                    source, f"monitor spectrum {spec} has {m.size} bins, expected {monitor_tof.size - 1}"
                )
        sample = SampleGeometry(
            thickness=float(_scalar(entry, "sample/thickness", source, 0.0)),
            width=float(_scalar(entry, "sample/width", source, 0.0)),
            height=float(_scalar(entry, "sample/height", source, 0.0)),
            shape=str(_scalar(entry, "sample/shape", source, "")),
        )
        number = int(_scalar(entry, "run_number", source))
        return RawRun(
            source=source,
            run_number=number,
            runs=(number,),
            title=str(_scalar(entry, "title", source, "")),
            instrument=str(_scalar(entry, "name", source, "")),
            start_time=str(_scalar(entry, "start_time", source, "")),
            tof=tof,
            spectra=np.asarray(spec_numbers),
            counts=counts,
            monitor_tof=np.asarray(monitor_tof, dtype=np.float64),
            monitors=monitors,
            proton_charge=float(_scalar(entry, "proton_charge", source, 0.0)),
            good_frames=int(_scalar(entry, "good_frames", source, 0)),
            sample=sample,
            event_mode=event_mode,
        )


def sum_runs(runs: list[RawRun]) -> RawRun:
    """Add runs (``SANSadd``): counts and monitors summed, metadata of the first run.

    Every run must share the TOF grids, spectra and monitors. Proton charge and good frames
    add up. The sum's ``name`` is ``<last run>-add``.
    """
    if not runs:
        raise ValueError("nothing to sum")
    first = runs[0]
    if len(runs) == 1:
        return first
    counts = first.counts.copy()
    monitors = {k: v.copy() for k, v in first.monitors.items()}
    for r in runs[1:]:
        if not (
            np.array_equal(r.tof, first.tof)
            and np.array_equal(r.spectra, first.spectra)
            and np.array_equal(r.monitor_tof, first.monitor_tof)
            and r.monitors.keys() == first.monitors.keys()
        ):
            raise errors.InvalidInput(
                r.source, f"cannot be added to {first.source}: different TOF grid, spectra or monitors"
            )
        counts += r.counts
        for k in monitors:
            monitors[k] += r.monitors[k]
    return replace(
        first,
        source=", ".join(r.source for r in runs),
        runs=tuple(n for r in runs for n in r.runs),
        counts=counts,
        monitors=monitors,
        proton_charge=sum(r.proton_charge for r in runs),
        good_frames=sum(r.good_frames for r in runs),
    )
