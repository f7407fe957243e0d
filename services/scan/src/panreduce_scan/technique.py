"""The scan technique: glue between the kit and the algorithms."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panreduce.errors import FieldViolation, InvalidParameters, InvalidRequest
from panreduce.kit import Context, Inputs, StagedFile
from panreduce.kit import Technique as _Technique
from panreduce.kit.technique import is_hdf5
from panreduce_scan.nexus import KNOWN_UNITS, ScanData, read_scan
from panreduce_scan.normalise import Normalised, normalise
from panreduce_scan.params import ScanParameters
from panreduce_scan.peaks import PeakFit, assess_peak, fit_peak
from panreduce_scan.report import ScanResult, entry_names, json_number, plot_scan, plot_series, write_csv, write_nexus
from panreduce_scan.series import SCAN_NUMBER, SeriesTable, choose_series_axis, series_table

VERSION = "0.1.0"
READ_SHARE = 0.15  # of a block's progress: reading its files (the rest: fitting)


@dataclass
class FittedScan:
    """One scan read, normalised and fitted (its series value is the job's to choose)."""

    data: ScanData
    normalised: Normalised
    fit: PeakFit
    flags: list[str]


@dataclass
class ScanPart:
    scans: list[FittedScan]


def _scan_key(d: ScanData) -> tuple[int, float, str]:
    return (0, float(d.scan), d.file) if isinstance(d.scan, int) else (1, 0.0, str(d.scan))


def batch_summary(summaries: list[dict[str, Any]], table: SeriesTable, model: str) -> dict[str, Any]:
    """The job summary: every scan, the series, and one scan's keys at the top level
    when there is only one."""
    axis = table.axis
    summary: dict[str, Any] = {
        "scans": summaries,
        "n_scans": len(summaries),
        "series_axis": axis,
        "series": [
            {
                axis: json_number(row[axis]),
                "scan": row["scan"],
                "center": row["center"],
                "center_err": row["center_err"],
                "fwhm": row["fwhm"],
                "fwhm_err": row["fwhm_err"],
                "area": row["area"],
                "area_err": row["area_err"],
                "flags": row["flags"],
            }
            for row in table.rows
        ],
        "n_flagged": sum(1 for s in summaries if s.get("flags")),
        "model": model,
    }
    if len(summaries) == 1:
        for k, v in summaries[0].items():
            summary.setdefault(k, v)
    return summary


class Technique(_Technique[ScanParameters, ScanPart]):
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

    @classmethod
    def accepts(cls, path: Path) -> bool:
        """NeXus (HDF5) files, by their signature: a folder's README or notes are skipped."""
        return is_hdf5(path)

    Part = ScanPart

    # -- the shard contract: one unit per scan file -------------------------------------
    def units(self, inputs: Inputs, params: ScanParameters) -> list[StagedFile]:
        if not inputs.files:
            raise InvalidRequest("no scan files to reduce")
        return inputs.files

    def reduce_block(
        self, block: Sequence[StagedFile], inputs: Inputs, params: ScanParameters, ctx: Context
    ) -> ScanPart:
        """Read every scan of the block, then normalise and fit each (reading is the
        first READ_SHARE of the block's progress, as loading was of a job's)."""
        scans: list[ScanData] = []
        with ctx.step(0.0, READ_SHARE):
            for i, staged in enumerate(block):
                ctx.progress(i / len(block), "load", f"reading {staged.name}")
                scan = read_scan(
                    staged.path, axis=params.axis, signal=params.signal, min_points=params.min_points, name=staged.name
                )
                for note in scan.notes:
                    ctx.log(f"{staged.name}: {note}")
                scans.append(scan)
        fitted: list[FittedScan] = []
        with ctx.step(READ_SHARE, 1.0):
            for i, scan in enumerate(scans):
                ctx.progress(i / len(scans), "fit", f"fitting scan {scan.scan}")
                normalised = normalise(
                    scan.counts,
                    count_time=scan.count_time,
                    transmission=scan.transmission,
                    ring_current=scan.ring_current if params.normalise_ring_current else None,
                    ring_current_reference=params.ring_current_reference,
                    enabled=params.normalise,
                )
                fit = fit_peak(
                    scan.axis_values,
                    normalised.intensity,
                    normalised.sigma,
                    model=params.model,
                    scale_errors=params.scale_errors,
                )
                flags = assess_peak(
                    fit,
                    scan.axis_values,
                    edge_margin_fwhm=params.edge_margin_fwhm,
                    min_significance=params.min_significance,
                )
                fitted.append(FittedScan(scan, normalised, fit, list(flags)))
            ctx.progress(1.0, "fit", f"fitted {len(fitted)} scan(s)")
        return ScanPart(fitted)

    def combine(self, parts: Sequence[ScanPart], params: ScanParameters) -> ScanPart:
        return ScanPart([s for p in parts for s in p.scans])

    def write(self, result: ScanPart, params: ScanParameters, ctx: Context) -> Mapping[str, Any]:
        """The series over every scan of the job (its axis chosen from all of them), the
        NeXus file, the CSV table and the plots: the same for a whole and a split job."""
        fitted = sorted(result.scans, key=lambda s: _scan_key(s.data))
        series_axis = self._series_axis([s.data for s in fitted], params)
        results: list[ScanResult] = []
        for i, s in enumerate(fitted):
            if series_axis == SCAN_NUMBER:
                value = float(s.data.scan) if isinstance(s.data.scan, int) else float(i)
            else:
                value = float(s.data.metadata[series_axis])
            results.append(ScanResult(s.data, s.normalised, s.fit, s.flags, series_axis, value))
        summaries = [r.summary() for r in results]
        table = series_table([r.series_value for r in results], summaries, axis=series_axis)

        ctx.progress(0.0, "write", "writing NeXus and CSV")
        write_nexus(
            ctx.output_path("scans.nxs", format="nexus", role="result"),
            results,
            series=table,
            program="panreduce-scan",
            version=VERSION,
        )
        write_csv(ctx.output_path("scans.csv", format="csv", role="table"), results)
        if params.plots:
            # "<scan>.png"; repeated scan numbers get the NXentry suffix (_2, _3, ...)
            png_names = [n.removeprefix("scan_") for n in entry_names(results)]
            for i, r in enumerate(results):
                ctx.progress(0.1 + 0.9 * i / len(results), "write", f"plotting scan {r.data.scan}")
                name = f"{png_names[i]}.png"
                plot_scan(ctx.output_path(name, format="png", role="preview"), r)
            if len(results) > 1:
                plot_series(
                    ctx.output_path("series.png", format="png", role="preview"),
                    table,
                    axis_units=KNOWN_UNITS.get(series_axis, ""),
                    value_units=results[0].data.axis_units,
                )
        ctx.progress(1.0, "write", "done")
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
            raise InvalidParameters(
                [
                    FieldViolation(
                        "series_axis",
                        f"{params.series_axis!r} is not a scalar of every scan (missing in "
                        f"{', '.join(missing[:5])}); try 'auto', 'scan'" + (f" or {hint}" if hint else ""),
                    )
                ]
            )
        return params.series_axis
