"""The scan technique: glue between the kit and the algorithms."""

from __future__ import annotations

import csv
import json
import math
import shutil
from collections.abc import Mapping
from typing import Any

import h5py

from panreduce.errors import FieldViolation, InvalidParameters, InvalidRequest
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce_scan.nexus import KNOWN_UNITS, ScanData, read_scan
from panreduce_scan.normalise import normalise
from panreduce_scan.params import ScanParameters
from panreduce_scan.peaks import assess_peak, fit_peak
from panreduce_scan.report import (
    CSV_COLUMNS,
    ScanResult,
    _write_series,
    entry_names,
    json_number,
    plot_scan,
    plot_series,
    write_csv,
    write_nexus,
)
from panreduce_scan.series import SCAN_NUMBER, SeriesTable, choose_series_axis, series_table

VERSION = "0.1.0"
FIT_SHARE = 0.7  # of the reduce step's progress; writing and plotting take the rest


def _scan_key(d: ScanData) -> tuple[int, float, str]:
    return (0, float(d.scan), d.file) if isinstance(d.scan, int) else (1, 0.0, str(d.scan))


def _summary_key(s: Mapping[str, Any]) -> tuple[int, float, str]:
    scan = s.get("scan")
    return (0, float(scan), str(s.get("file"))) if isinstance(scan, int) else (1, 0.0, str(scan))


def batch_summary(summaries: list[dict[str, Any]], table: SeriesTable, model: str) -> dict[str, Any]:
    """The job summary: every scan, the series, and one scan's keys at the top level
    when there is only one."""
    axis = table.axis
    summary: dict[str, Any] = {
        "scans": summaries,
        "n_scans": len(summaries),
        "series_axis": axis,
        "series": [
            {axis: json_number(row[axis]), "scan": row["scan"],
             "center": row["center"], "center_err": row["center_err"],
             "fwhm": row["fwhm"], "fwhm_err": row["fwhm_err"],
             "area": row["area"], "area_err": row["area_err"], "flags": row["flags"]}
            for row in table.rows
        ],
        "n_flagged": sum(1 for s in summaries if s.get("flags")),
        "model": model,
    }
    if len(summaries) == 1:
        for k, v in summaries[0].items():
            summary.setdefault(k, v)
    return summary


class Technique(_Technique[ScanParameters, list[ScanData]]):
    name = "scan"
    version = VERSION
    title = "Single-crystal diffraction scans (Diamond I16)"
    description = (
        "Finds the scanned axis and detector signal of each I16 NeXus scan, normalises "
        "by transmission, count time and ring current, fits a Gaussian, Lorentzian or "
        "pseudo-Voigt peak on a linear background with counting-statistics errors, flags "
        "edge/flat/unfittable/under-sampled scans, and tabulates the fitted centre, FWHM "
        "and area of a batch against temperature, energy, azimuth or scan number."
    )
    Parameters = ScanParameters
    input_kinds = ("nexus/i16-scan",)
    output_formats = ("nexus", "csv", "png")
    shardable = True
    shard_unit = "scan file"

    def load(self, inputs: Inputs, params: ScanParameters, ctx: Context) -> list[ScanData]:
        files = inputs.files
        if ctx.shard is not None:
            files = ctx.shard.select(files)
        if not files:
            raise InvalidRequest("no scan files to reduce")
        scans: list[ScanData] = []
        for i, staged in enumerate(files):
            ctx.check_cancelled()
            ctx.progress(i / len(files), "load", f"reading {staged.name}")
            scan = read_scan(
                staged.path, axis=params.axis, signal=params.signal,
                min_points=params.min_points, name=staged.name,
            )
            for note in scan.notes:
                ctx.log(f"{staged.name}: {note}")
            scans.append(scan)
        ctx.progress(1.0, "load", f"read {len(scans)} scan(s)")
        return scans

    def reduce(
        self, data: list[ScanData], params: ScanParameters, ctx: Context
    ) -> Mapping[str, Any]:
        scans = sorted(data, key=_scan_key)
        series_axis = self._series_axis(scans, params)
        results: list[ScanResult] = []
        for i, scan in enumerate(scans):
            ctx.progress(FIT_SHARE * i / max(len(scans), 1), "fit", f"fitting scan {scan.scan}")
            normalised = normalise(
                scan.counts,
                count_time=scan.count_time,
                transmission=scan.transmission,
                ring_current=scan.ring_current if params.normalise_ring_current else None,
                ring_current_reference=params.ring_current_reference,
                enabled=params.normalise,
            )
            fit = fit_peak(scan.axis_values, normalised.intensity, normalised.sigma,
                           model=params.model, scale_errors=params.scale_errors)
            flags = assess_peak(fit, scan.axis_values, edge_margin_fwhm=params.edge_margin_fwhm,
                                min_significance=params.min_significance)
            if series_axis == SCAN_NUMBER:
                value = float(scan.scan) if isinstance(scan.scan, int) else float(i)
            else:
                value = float(scan.metadata[series_axis])
            results.append(ScanResult(scan, normalised, fit, flags, series_axis, value))
        ctx.progress(FIT_SHARE, "fit", f"fitted {len(results)} scan(s)")

        summaries = [r.summary() for r in results]
        table = series_table([r.series_value for r in results], summaries, axis=series_axis)

        ctx.progress(FIT_SHARE, "write", "writing NeXus and CSV")
        write_nexus(ctx.output_path("scans.nxs", format="nexus", role="result"), results,
                    series=table, program="panreduce-scan", version=VERSION)
        write_csv(ctx.output_path("scans.csv", format="csv", role="table"), results)
        if params.plots:
            # "<scan>.png"; repeated scan numbers get the NXentry suffix (_2, _3, ...)
            png_names = [n.removeprefix("scan_") for n in entry_names(results)]
            for i, r in enumerate(results):
                ctx.progress(FIT_SHARE + (1 - FIT_SHARE) * i / len(results), "write", f"plotting scan {r.data.scan}")
                name = f"{png_names[i]}.png"
                plot_scan(ctx.output_path(name, format="png", role="preview"), r)
            if len(results) > 1:
                plot_series(ctx.output_path("series.png", format="png", role="preview"), table,
                            axis_units=KNOWN_UNITS.get(series_axis, ""),
                            value_units=results[0].data.axis_units)
        ctx.progress(1.0, "write", "done")

        return batch_summary(summaries, table, params.model)

    def merge(self, inputs: Inputs, params: ScanParameters, ctx: Context) -> Mapping[str, Any]:
        """Combine shards: per-scan NeXus entries, CSV rows and plots are copied; the
        series table and plot are made anew over every scan. The series axis is the
        shards' when they agree (set ``series_axis`` explicitly for a sharded batch),
        else the scan number."""
        shards = sorted({f.path.parent for f in inputs.files if f.path.name == "summary.json"})
        summaries: list[dict[str, Any]] = []
        for folder in shards:
            doc = json.loads((folder / "summary.json").read_text())
            summaries.extend(doc.get("scans", []))
        if not summaries:
            raise InvalidRequest("the shards hold no scan results to merge")
        order = sorted(range(len(summaries)), key=lambda i: _summary_key(summaries[i]))
        summaries = [summaries[i] for i in order]
        axes = {s.get("series_axis") for s in summaries}
        series_axis = axes.pop() if len(axes) == 1 else SCAN_NUMBER
        if series_axis == SCAN_NUMBER:
            values = [float(s["scan"]) if isinstance(s.get("scan"), int) else float(i)
                      for i, s in enumerate(summaries)]
        else:
            values = [math.nan if s.get("series_value") is None else float(s["series_value"]) for s in summaries]
        table = series_table(values, summaries, axis=series_axis)
        ctx.progress(0.2, "merge", f"merging {len(summaries)} scan(s) from {len(shards)} shard(s)")
        with h5py.File(ctx.output_path("scans.nxs", format="nexus", role="result"), "w") as out:
            out.attrs["NX_class"] = "NXroot"
            out.attrs["creator"] = "panreduce-scan"
            for folder in shards:
                with h5py.File(folder / "scans.nxs", "r") as part:
                    for name, group in part.items():
                        if name == "series" or not isinstance(group, h5py.Group):
                            continue
                        target = name if name not in out else f"{name}_{len(out)}"
                        part.copy(group, out, name=target)
                        if "provenance" in out[target]:
                            del out[target]["provenance"]
            out.attrs["default"] = next((k for k in out if k != "series"), "")
            if len(table.rows) > 1:
                _write_series(out.create_group("series"), table)
        with open(ctx.output_path("scans.csv", format="csv", role="table"), "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS), extrasaction="ignore")
            writer.writeheader()
            for row in summaries:
                row = {**row, "flags": ";".join(row.get("flags") or [])}
                writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_COLUMNS})
        for folder in shards:
            for png in sorted(folder.glob("*.png")):
                if png.name != "series.png":
                    shutil.copyfile(png, ctx.output_path(png.name, format="png", role="preview"))
        if len(summaries) > 1 and params.plots:
            plot_series(ctx.output_path("series.png", format="png", role="preview"), table,
                        axis_units=KNOWN_UNITS.get(series_axis, ""),
                        value_units=str(summaries[0].get("axis_units") or ""))
        ctx.progress(1.0, "merge", "merged")
        return batch_summary(summaries, table, params.model)

    @staticmethod
    def _series_axis(scans: list[ScanData], params: ScanParameters) -> str:
        if params.series_axis == "auto":
            return choose_series_axis([s.metadata for s in scans])
        if params.series_axis == SCAN_NUMBER:
            return SCAN_NUMBER
        missing = [s.file for s in scans if params.series_axis not in s.metadata]
        if missing:
            common = set(scans[0].metadata)
            for s in scans[1:]:
                common &= set(s.metadata)
            hint = ", ".join(k for k in ("Ta", "Tb", "Tset", "en", "psi") if k in common)
            raise InvalidParameters([FieldViolation(
                "series_axis",
                f"{params.series_axis!r} is not a scalar of every scan (missing in "
                f"{', '.join(missing[:5])}); try 'auto', 'scan'" + (f" or {hint}" if hint else ""),
            )])
        return params.series_axis
