"""The ``sans`` technique: glue between the kit and the reduction.

Inputs: the raw runs (ISIS raw NeXus ``LOQ<run>.nxs``) and the Mantid files (user file,
direct-beam efficiency, flat cell, batch CSV), as folders/prefixes or single files.
One NXcanSAS output (plus PNG, optionally canSAS XML and 2-D) per batch row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from panreduce import errors
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce_sans import __version__
from panreduce_sans.batch import BatchRow
from panreduce_sans.chain import BatchChain, RowResult, ScatterResult
from panreduce_sans.inputs import LoadedBatch, batch_rows, load_batch
from panreduce_sans.output import (
    OutputMetadata,
    output_metadata,
    plot_iq,
    row_summary,
    write_cansas_xml,
    write_nxcansas,
    write_nxcansas_2d,
)
from panreduce_sans.params import SansParameters
from panreduce_sans.rawfile import RawRun
from panreduce_sans.settings import ReductionError


@dataclass
class SansOutput:
    """One reduced output of a batch row (the row's main, HAB or merged bank)."""

    name: str
    row: BatchRow
    result: RowResult
    meta: OutputMetadata
    run: str  # the sample run number, as the 2-D file names it


@dataclass
class SansPart:
    outputs: list[SansOutput]
    instrument: str
    detector: str
    wavelength_range: list[float]
    q_range: list[float]
    pixels_used: int
    pixels_used_by_bank: dict[str, int]
    warnings: list[str]


class Technique(_Technique[SansParameters, SansPart]):
    name = "sans"
    version = __version__
    title = "Time-of-flight SANS reduction to absolute I(Q) (ISIS LOQ)"
    description = (
        "Reduces ISIS LOQ time-of-flight SANS runs to absolute I(Q) as the ISIS reducer in Mantid "
        "does: run summation, monitor normalisation with prompt-peak removal and flat background, "
        "wavelength conversion and rebinning, transmission from transmission/direct runs with the "
        "user file's fit, direct-beam efficiency, flat cell, solid angle, radius/row/box/line/time "
        "masks and sectors, optional gravity, Q1D with error propagation, can subtraction and "
        "absolute scaling, on the main bank, the high-angle bank (provisional layout) or both "
        "merged with a fitted rescale and shift; driven by an ISIS user file and a Mantid batch "
        "CSV; writes NXcanSAS (optionally canSAS XML and 2-D I(Qx,Qy)) and a PNG per output."
    )
    Parameters = SansParameters
    input_kinds = ("nexus/isis-raw", "text/isis-sans-user-file", "text/isis-sans-batch", "text/rkh")
    output_formats = ("nxcansas", "cansas-xml", "png")
    shardable = True
    shard_unit = "batch row"

    def warm_up(self) -> None:
        """Import the plotting and sasdata stacks once, before the service reports SERVING."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot
        import sasdata.dataloader.data_info  # noqa: F401

    Part = SansPart

    # -- the shard contract: one unit per batch row -------------------------------------
    def units(self, inputs: Inputs, params: SansParameters) -> list[BatchRow]:
        return batch_rows(inputs, params)

    def reduce_block(self, block: Sequence[BatchRow], inputs: Inputs, params: SansParameters, ctx: Context) -> SansPart:
        with ctx.step(0.0, 0.3):
            data = load_batch(inputs, params, ctx, list(block))
        with ctx.step(0.3, 1.0):
            return self._reduce(data, params, ctx)

    def combine(self, parts: Sequence[SansPart], params: SansParameters) -> SansPart:
        return dataclasses.replace(parts[0], outputs=[o for p in parts for o in p.outputs])

    def write(self, result: SansPart, params: SansParameters, ctx: Context) -> Mapping[str, Any]:
        """One NXcanSAS file (and PNG, canSAS XML, 2-D file as asked) per output of every row."""
        rows_summary = []
        n = len(result.outputs)
        for k, out in enumerate(result.outputs):
            name, res, meta = out.name, out.result, out.meta
            ctx.progress(k / n, "write", f"{name}.h5")
            write_nxcansas(ctx.output_path(f"{name}.h5", format="nxcansas"), res, meta)
            if params.plots:
                plot_iq(ctx.output_path(f"{name}.png", format="png", role="preview"), res)
            if params.cansas_xml:
                write_cansas_xml(ctx.output_path(f"{name}.xml", format="cansas-xml"), res, meta)
            if params.qxy and res.iqxy is not None:
                write_nxcansas_2d(
                    ctx.output_path(f"{name}_2d.h5", format="nxcansas"),
                    f"{name} I(Qx,Qy)",
                    out.run,
                    res.iqxy,
                    res,
                    meta,
                )
            rows_summary.append(row_summary(out.row, name, res))
        ctx.progress(1.0, "write", "done")
        return {
            "outputs": [r["output"] for r in rows_summary],
            "rows": rows_summary,
            "instrument": result.instrument,
            "detector": result.detector,
            "wavelength_range": result.wavelength_range,
            "q_range": result.q_range,
            "pixels_used": result.pixels_used,
            "pixels_used_by_bank": result.pixels_used_by_bank,
            "warnings": result.warnings,
        }

    # -- reduce ----------------------------------------------------------------------------
    def _reduce(self, data: LoadedBatch, params: SansParameters, ctx: Context) -> SansPart:
        settings = data.settings
        chain = BatchChain(settings, data.scatter, data.trans)
        inst = data.instrument
        outputs: list[SansOutput] = []
        n = len(data.rows)
        for k, row in enumerate(data.rows):
            ctx.progress(k / n, "reduce", f"row {row.line}: {row.output_as}")
            run_s = data.scatter[row.sample_sans.label]
            try:
                results = chain.row(row, run_s)
            except ReductionError as exc:
                raise errors.InvalidInput(params.batch_file, f"line {row.line} ({row.output_as}): {exc}") from None
            for name, result in results.items():
                meta = output_metadata(
                    inst,
                    settings,
                    result,
                    row=row,
                    params=params,
                    version=self.version,
                    user_file_name=data.user_file_name,
                    user_file_text=data.user_file.text,
                )
                outputs.append(SansOutput(name, row, _slim(result), meta, str(run_s.run_number)))
        ctx.progress(1.0, "reduce", "done")
        dets = chain.detectors
        return SansPart(
            outputs=outputs,
            instrument=inst.name,
            detector=settings.detector,
            wavelength_range=[float(settings.wavelength_edges[0]), float(settings.wavelength_edges[-1])],
            q_range=[float(settings.q_edges[0]), float(settings.q_edges[-1])],
            pixels_used=int(sum(d.keep.sum() for d in dets.values())),
            pixels_used_by_bank={name: int(d.keep.sum()) for name, d in dets.items()},
            warnings=list(data.warnings),
        )


def _slim_run(run: RawRun) -> RawRun:
    return dataclasses.replace(run, counts=run.counts[:0], spectra=run.spectra[:0], monitors={})


def _slim(result: RowResult) -> RowResult:
    """``result`` without the raw histograms of its runs (the writers read only their labels)."""

    def scatter(s: ScatterResult | None) -> ScatterResult | None:
        return None if s is None else dataclasses.replace(s, run=_slim_run(s.run))

    return dataclasses.replace(
        result, sample=scatter(result.sample), can=scatter(result.can), parts=tuple(_slim(p) for p in result.parts)
    )
