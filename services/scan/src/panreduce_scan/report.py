"""Write the results: NeXus/HDF5, a CSV table and PNG figures, to given paths."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from panreduce import nexus
from panreduce_scan.nexus import ScanData
from panreduce_scan.normalise import Normalised
from panreduce_scan.peaks import PeakFit
from panreduce_scan.series import SeriesTable

#: fitted quantities reported per scan (value, error)
FIT_KEYS = (
    ("center", "center_err"),
    ("fwhm", "fwhm_err"),
    ("area", "area_err"),
    ("height", "height_err"),
    ("background", "background_err"),
    ("fraction", "fraction_err"),
)
CSV_COLUMNS = (
    "file",
    "scan",
    "series_axis",
    "series_value",
    "axis",
    "axis_units",
    "signal",
    "model",
    "center",
    "center_err",
    "fwhm",
    "fwhm_err",
    "area",
    "area_err",
    "height",
    "height_err",
    "background",
    "background_err",
    "fraction",
    "fraction_err",
    "chi2_reduced",
    "significance",
    "n_points",
    "flags",
)


@dataclass(frozen=True)
class ScanResult:
    """One reduced scan: the data read, its normalisation, the fit and its flags."""

    data: ScanData
    normalised: Normalised
    fit: PeakFit
    flags: list[str]
    series_axis: str
    series_value: float

    def summary(self) -> dict[str, object]:
        """JSON-serialisable per-scan summary (NaN -> None)."""
        d = self.data
        fit = self.fit
        out: dict[str, object] = {
            "file": d.file,
            "scan": d.scan,
            "entry": d.entry,
            "axis": d.axis,
            "axis_units": d.axis_units,
            "declared_axis": d.declared_axis,
            "signal": d.signal,
            "intensity_units": self.normalised.units,
            "model": fit.model,
        }
        for value, error in FIT_KEYS:
            out[value] = json_number(getattr(fit, value))
            out[error] = json_number(getattr(fit, error))
        out.update(
            chi2_reduced=json_number(fit.chi2_reduced),
            significance=json_number(fit.significance),
            n_points=int(d.n_points),
            flags=list(self.flags),
            series_axis=self.series_axis,
            series_value=json_number(self.series_value),
            transmission=json_number(float(np.mean(d.transmission))),
            count_time=json_number(float(np.mean(d.count_time))),
            ring_current=None if d.ring_current is None else json_number(float(np.mean(d.ring_current))),
            scan_command=d.scan_command,
            notes=list(d.notes),
        )
        return out


def json_number(value: object) -> float | int | None:
    """A plain Python number for JSON: numpy scalars converted, NaN/inf -> None."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    v = float(value)  # type: ignore[arg-type]
    return v if math.isfinite(v) else None


def _dataset_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "axis"


def entry_names(results: Sequence[ScanResult]) -> list[str]:
    """Unique NXentry names, ``scan_<number>`` (suffixed when a scan repeats)."""
    names: list[str] = []
    for r in results:
        base = _dataset_name(f"scan_{r.data.scan}")
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}_{i}"
        names.append(name)
    return names


def split_units(units: str) -> tuple[str, str]:
    """``"counts/s (transmission 1, 300 mA)"`` -> ``("counts/s", "transmission 1, 300 mA")``:
    the machine-readable unit (UDUNITS/pint) and the normalisation it is relative to."""
    unit, _, basis = units.partition(" (")
    return unit.strip(), basis.rstrip(")").strip()


def write_nexus(
    path: Path,
    results: Sequence[ScanResult],
    *,
    series: SeriesTable | None = None,
    program: str = "panreduce-scan",
    version: str = "",
) -> None:
    """One NXentry per scan: NXdata ``data`` (normalised intensity with errors, fit and
    residuals against the scan axis), NXdata ``fit_curve`` (the model on a fine grid),
    NXprocess ``peak_fit`` (fitted values, errors, chi2, flags) and NXcollection ``input``
    (what was read). With a series, an NXentry ``series`` plots the centre against it.
    The root's ``@default`` chain leads to the first scan's ``data``."""
    names = entry_names(results)
    with h5py.File(path, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = nexus.program_name(program)
        for name, r in zip(names, results, strict=True):
            _write_entry(nexus.make_group(f, name, "NXentry"), r, program=program, version=version)
        if series is not None and len(series.rows) > 1:
            _write_series(nexus.make_group(f, "series", "NXentry"), series)
        if names:
            nexus.set_default(f[names[0]]["data"])


def _write_entry(entry: h5py.Group, r: ScanResult, *, program: str, version: str) -> None:
    d, fit, nm = r.data, r.fit, r.normalised
    nexus.write_text(entry, "title", d.scan_command or f"scan {d.scan}")
    nexus.write_text(entry, "entry_identifier", str(d.scan))
    if d.start_time:
        nexus.write_text(entry, "start_time", d.start_time)
    axis = _dataset_name(d.axis)
    x = d.axis_values
    unit, basis = split_units(nm.units)

    data = nexus.write_nxdata(
        entry,
        "data",
        signal="intensity",
        data=nm.intensity,
        errors=nm.sigma,
        axes=[(axis, x)],
        units={axis: d.axis_units, "intensity": unit},
        long_names={
            axis: f"{d.axis} ({d.axis_units})" if d.axis_units else d.axis,
            "intensity": f"{d.signal}, normalised" + (f" ({unit}, {basis})" if basis else ""),
        },
        default=False,
    )
    entry.attrs["default"] = "data"
    data.attrs["auxiliary_signals"] = ["fit"]
    curve = fit.curve(x)
    fit_ds = data.create_dataset("fit", data=curve)
    fit_ds.attrs.update(units=unit, long_name=f"{fit.model} + linear background")
    with np.errstate(invalid="ignore", divide="ignore"):
        res = data.create_dataset("residuals", data=(nm.intensity - curve) / nm.sigma)
    res.attrs.update(units="", long_name="(intensity - fit) / sigma")
    data.create_dataset("counts", data=d.counts).attrs["units"] = "counts"

    grid_x = np.linspace(x.min(), x.max(), 501)
    nexus.write_nxdata(
        entry,
        "fit_curve",
        signal="fit",
        data=fit.curve(grid_x),
        axes=[(axis, grid_x)],
        units={axis: d.axis_units, "fit": unit},
        default=False,
    )

    proc = nexus.write_nxprocess(entry, "peak_fit", technique=program, version=version)
    nexus.write_text(proc, "model", fit.model)
    proc["success"] = bool(fit.success)
    nexus.write_text(proc, "message", fit.message)
    if basis:
        nexus.write_text(proc, "normalisation", f"{unit} at {basis}")
    units = {
        "center": d.axis_units,
        "fwhm": d.axis_units,
        "area": f"{unit} * {d.axis_units}".strip(" *"),
        "height": unit,
        "background": unit,
        "fraction": "",
    }
    for value, error in FIT_KEYS:
        ds = proc.create_dataset(value, data=float(getattr(fit, value)))
        ds.attrs["units"] = units[value]
        proc.create_dataset(f"{value}_errors", data=float(getattr(fit, error))).attrs["units"] = units[value]
    proc["bg_slope"] = float(fit.bg_slope)
    proc["chi2"] = float(fit.chi2)
    proc["chi2_reduced"] = float(fit.chi2_reduced)
    proc["degrees_of_freedom"] = int(fit.dof)
    proc["error_scale"] = float(fit.error_scale)
    proc["significance"] = float(fit.significance)
    nexus.write_text(proc, "flags", ";".join(r.flags))
    if fit.covariance.size:
        proc["covariance"] = fit.covariance

    inp = nexus.make_group(entry, "input", "NXcollection")
    nexus.write_text(inp, "file", d.file)
    nexus.write_text(inp, "entry", d.entry)
    nexus.write_text(inp, "axis", d.axis)
    nexus.write_text(inp, "declared_axis", d.declared_axis or "")
    nexus.write_text(inp, "signal", d.signal)
    nexus.write_text(inp, "scan_command", d.scan_command)
    inp.create_dataset("transmission", data=np.asarray(d.transmission, float))
    inp.create_dataset("count_time", data=d.count_time).attrs["units"] = "s"
    if d.ring_current is not None:
        inp.create_dataset("ring_current", data=d.ring_current).attrs["units"] = "mA"
    nexus.write_text(inp, "notes", "\n".join(d.notes))
    inp[r.series_axis if r.series_axis != "scan" else "scan_number"] = float(r.series_value)


def _write_series(entry: h5py.Group, series: SeriesTable) -> None:
    nexus.write_text(entry, "title", f"peak parameters against {series.axis}")
    axis = _dataset_name(series.axis)
    data = nexus.write_nxdata(
        entry,
        "data",
        signal="center",
        data=series.column("center"),
        errors=series.column("center_err"),
        axes=[(axis, series.column(series.axis))],
        default=False,
    )
    entry.attrs["default"] = "data"
    data.attrs["auxiliary_signals"] = ["fwhm", "area", "height"]
    for value, error in FIT_KEYS[1:4]:
        data.create_dataset(value, data=series.column(value))
        data.create_dataset(f"{value}_errors", data=series.column(error))
    if axis != "scan":
        data.create_dataset("scan", data=np.array([str(r.get("scan")) for r in series.rows], dtype=h5py.string_dtype()))
    data.create_dataset(
        "flags",
        data=np.array(
            [
                ";".join(r.get("flags") or [])  # type: ignore[arg-type]
                for r in series.rows
            ],
            dtype=h5py.string_dtype(),
        ),
    )


def write_csv(path: Path, results: Sequence[ScanResult]) -> None:
    """One row per scan (columns :data:`CSV_COLUMNS`; flags joined by ';'; empty = NaN)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
        writer.writeheader()
        for r in results:
            row = r.summary()
            row["flags"] = ";".join(r.flags)
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_COLUMNS})


def plot_scan(path: Path, result: ScanResult) -> None:
    """Data with error bars, the fit, and normalised residuals below."""
    # plots load matplotlib on first use
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    d, fit, nm = result.data, result.fit, result.normalised
    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    x = d.axis_values
    top.errorbar(x, nm.intensity, yerr=nm.sigma, fmt="o", ms=3, lw=1, label=d.signal)
    grid = np.linspace(x.min(), x.max(), 501)
    curve = fit.curve(grid)
    if np.any(np.isfinite(curve)):
        label = fit.model
        if np.isfinite(fit.center):
            label += f": centre {fit.center:.5g} ± {fit.center_err:.2g}, FWHM {fit.fwhm:.3g} ± {fit.fwhm_err:.2g}"
        top.plot(grid, curve, "-", color="C3", label=label)
    top.set_ylabel(nm.units)
    flags = f"  [{', '.join(result.flags)}]" if result.flags else ""
    top.set_title(f"{d.file} (scan {d.scan}){flags}", fontsize=10)
    top.legend(fontsize=8, loc="upper left")
    with np.errstate(invalid="ignore", divide="ignore"):
        resid = (nm.intensity - fit.curve(x)) / nm.sigma
    bottom.axhline(0, color="k", lw=0.5)
    bottom.plot(x, resid, "o", ms=3)
    bottom.set_ylabel("residual / σ")
    bottom.set_xlabel(f"{d.axis} ({d.axis_units})" if d.axis_units else d.axis)
    fig.tight_layout()
    fig.savefig(path, format="png")


def _limits(values: np.ndarray, errors: np.ndarray) -> tuple[float, float] | None:
    """y limits that show ``values`` with their errors, ignoring non-finite ones."""
    lo, hi = values - np.nan_to_num(errors), values + np.nan_to_num(errors)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if not np.any(ok):
        return None
    a, b = float(lo[ok].min()), float(hi[ok].max())
    pad = 0.08 * (b - a) if b > a else max(abs(a) * 0.05, 1e-12)
    return a - pad, b + pad


def plot_series(path: Path, series: SeriesTable, *, axis_units: str = "", value_units: str = "") -> None:
    """Centre, FWHM and area against the series axis: one column of panels per scanned
    axis (a batch of eta and hkl scans gets two, each in its own units); flagged scans
    drawn hollow in red, and the y range set by the unflagged scans so one bad fit's
    error bar cannot flatten the rest (flagged points outside it are drawn at the edge
    as triangles). ``value_units``: the units of the centre and FWHM when the rows do not
    say (rows' ``axis_units`` win)."""
    # plots load matplotlib on first use
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups: dict[str, list[int]] = {}
    for i, row in enumerate(series.rows):
        groups.setdefault(str(row.get("axis") or ""), []).append(i)
    names = list(groups)
    fig = Figure(figsize=(5.5 * len(names) + 1.5, 8), dpi=100)
    FigureCanvasAgg(fig)
    grid = fig.subplots(3, len(names), sharex=True, squeeze=False)
    x_all = series.column(series.axis)
    flagged_all = np.array([bool(r.get("flags")) for r in series.rows])
    for col, name in enumerate(names):
        idx = np.array(groups[name])
        units = str(series.rows[idx[0]].get("axis_units") or value_units)
        x, flagged = x_all[idx], flagged_all[idx]
        good = ~flagged
        for row_i, (value, error) in enumerate(FIT_KEYS[:3]):
            ax = grid[row_i][col]
            y, e = series.column(value)[idx], series.column(error)[idx]
            if np.any(good):
                ax.errorbar(x[good], y[good], yerr=e[good], fmt="o", ms=4, label="fitted")
            limits = _limits(y[good], e[good]) if np.any(good) else _limits(y, e)
            if np.any(flagged):
                ax.errorbar(
                    x[flagged], y[flagged], yerr=e[flagged], fmt="o", ms=4, mfc="none", color="C3", label="flagged"
                )
            if limits is not None:
                ax.set_ylim(*limits)
                out = flagged & np.isfinite(y) & ((y < limits[0]) | (y > limits[1]))
                if np.any(out):
                    edge = np.where(y[out] < limits[0], limits[0], limits[1])
                    ax.plot(x[out], edge, "v", color="C3", ms=7, label="flagged, off scale")
            label = f"{value} of {name}" if name else value
            if units and value != "area":
                label += f" ({units})"
            ax.set_ylabel(label)
        grid[0][col].legend(fontsize=8)
        grid[0][col].set_title(f"{name or 'peak'} scans against {series.axis}", fontsize=10)
        grid[-1][col].set_xlabel(f"{series.axis} ({axis_units})" if axis_units else series.axis)
    fig.tight_layout()
    fig.savefig(path, format="png")
