"""The ``sans`` technique: glue between the kit and the reduction.

Inputs: the raw runs (ISIS raw NeXus ``LOQ<run>.nxs``) and the Mantid files (user file,
direct-beam efficiency, flat cell, batch CSV), as folders/prefixes or single files.
One NXcanSAS output (plus PNG, optionally canSAS XML and 2-D) per batch row.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from panreduce import errors
from panreduce.kit import Context, Inputs, StagedFile
from panreduce.kit import Technique as _Technique
from panreduce_sans import __version__
from panreduce_sans.batch import BatchError, BatchRow, RKHData, RunRef, parse_batch, parse_rkh
from panreduce_sans.chain import BatchChain, RowResult, ScatterResult
from panreduce_sans.instrument import INSTRUMENTS, Instrument
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
from panreduce_sans.rawfile import RawRun, read_run, read_run_info, sum_runs
from panreduce_sans.settings import ReductionError, Settings, settings_from_user_file
from panreduce_sans.userfile import UserFile, parse_user_file

_RUN_FILE = re.compile(r"^([A-Za-z]+)0*(\d+)(-add)?\.nxs$", re.IGNORECASE)


@dataclass
class LoadedBatch:
    rows: list[BatchRow]
    header: dict[str, str]
    instrument: Instrument
    user_file: UserFile
    user_file_name: str
    settings: Settings
    scatter: dict[str, RawRun]  # run label -> (summed) main-bank run
    trans: dict[str, RawRun]  # run label -> transmission/direct run
    warnings: list[str] = field(default_factory=list)


def _read_text(f: StagedFile) -> str:
    try:
        data = f.path.read_bytes()
    except OSError as exc:
        raise errors.InvalidInput(f.name, f"cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        raise errors.InvalidInput(f.name, "is empty")
    if b"\x00" in data:
        raise errors.InvalidInput(f.name, "is not a text file")
    return data.decode("utf-8", "replace")


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
        batch_file = self._named(inputs, params.batch_file, "batch_file")
        try:
            rows, _ = parse_batch(_read_text(batch_file))
        except BatchError as exc:
            raise errors.InvalidInput(batch_file.name, str(exc)) from None
        for row in rows:
            if row.user_file and row.user_file != params.user_file:
                raise errors.InvalidInput(batch_file.name, f"line {row.line}: a per-row user_file "
                                          f"({row.user_file}) is not supported; pass it as user_file")
        return rows

    def reduce_block(self, block: Sequence[BatchRow], inputs: Inputs, params: SansParameters,
                     ctx: Context) -> SansPart:
        with ctx.step(0.0, 0.3):
            data = self._load(inputs, params, ctx, list(block))
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
                write_nxcansas_2d(ctx.output_path(f"{name}_2d.h5", format="nxcansas"),
                                  f"{name} I(Qx,Qy)", out.run, res.iqxy, res, meta)
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

    # -- load ------------------------------------------------------------------------------
    def _load(self, inputs: Inputs, params: SansParameters, ctx: Context, rows: list[BatchRow]) -> LoadedBatch:
        instrument = INSTRUMENTS[params.instrument]
        warnings: list[str] = []

        uf_file = self._named(inputs, params.user_file, "user_file")
        uf = parse_user_file(_read_text(uf_file))
        problems = uf.problems
        if problems:
            text = "; ".join(str(p) for p in problems)
            if params.unknown_commands == "error":
                raise errors.InvalidInput(uf_file.name, f"user-file commands that cannot be used: {text}")
            for p in problems:
                ctx.log(f"{uf_file.name} {p}", "warning")
            warnings.extend(f"{uf_file.name} {p}" for p in problems)

        header: dict[str, str] = {}

        banks = ("main", "hab") if uf.detector in ("both", "merged") else (uf.detector,)
        if "main" in banks and not (uf.direct_files.get("main") and uf.flat_files.get("main")):
            raise errors.InvalidInput(uf_file.name, "needs MON/DIRECT and MON/FLAT files for the main bank")
        if "hab" in banks and not uf.direct_files.get("hab"):
            raise errors.InvalidInput(uf_file.name, "needs MON/HAB (or MON/DIRECT) for the high-angle bank")
        direct = {b: self._rkh(self._named(inputs, uf.direct_files[b], f"{uf_file.name} MON/DIRECT ({b})"))
                  for b in banks}
        flat = {b: self._rkh(self._named(inputs, uf.flat_files[b], f"{uf_file.name} MON/FLAT ({b})"))
                for b in banks if uf.flat_files.get(b)}
        moderator = None
        if uf.qresol.on and uf.qresol.moderator_file:
            moderator = self._rkh(self._named(inputs, uf.qresol.moderator_file, f"{uf_file.name} QRESOL/MODERATOR"))
        try:
            settings = settings_from_user_file(
                uf, instrument, direct, flat,
                normalisation_errors=params.normalisation_errors,
                split=params.q_assignment == "split", want_qxy=params.qxy, moderator=moderator,
                radius_cut=params.radius_cut or None, wave_cut=params.wave_cut or None)
        except ReductionError as exc:
            raise errors.InvalidInput(uf_file.name, str(exc)) from None
        for note in settings.notes:
            ctx.log(note, "warning")
            warnings.append(note)

        resolver = _RunResolver(inputs, instrument, params.add_runs)
        scatter_refs: dict[str, RunRef] = {}
        trans_refs: dict[str, RunRef] = {}
        for row in rows:
            for ref in (row.sample_sans, row.can_sans):
                if ref is not None:
                    scatter_refs[ref.label] = ref
            for ref in (row.sample_trans, row.sample_direct_beam, row.can_trans, row.can_direct_beam):
                if ref is not None:
                    trans_refs[ref.label] = ref
        plan = {label: resolver.files(ref) for label, ref in scatter_refs.items()}
        plan_t = {label: resolver.files(ref) for label, ref in trans_refs.items()}
        total = sum(len(v) for v in plan.values()) + len(plan_t)
        done = 0
        first_spec, last_spec = settings.spectra_range
        event_edges = None
        if uf.events_binning:
            from panreduce_sans.binning import rebin_edges

            event_edges = rebin_edges(uf.events_binning)
        scatter: dict[str, RawRun] = {}
        for label, files in plan.items():
            runs = []
            for f in files:
                ctx.progress(done / max(total, 1), "load", f"reading {f.name}")
                runs.append(read_run(f.path, f.name, spectra=(first_spec, last_spec),
                                     event_edges=event_edges, period=params.period))
                done += 1
            scatter[label] = sum_runs(runs)
            if len(runs) > 1:
                ctx.log(f"{label}: summed runs {', '.join(str(r.run_number) for r in runs)}")
        trans: dict[str, RawRun] = {}
        for label, files in plan_t.items():
            ctx.progress(done / max(total, 1), "load", f"reading {files[0].name}")
            trans[label] = sum_runs([read_run(f.path, f.name, event_edges=event_edges, period=params.period)
                                     for f in files])
            done += 1
        ctx.progress(1.0, "load", f"read {done} run file(s)")
        return LoadedBatch(rows, header, instrument, uf, uf_file.name, settings, scatter, trans, warnings)

    @staticmethod
    def _named(inputs: Inputs, name: str, what: str) -> StagedFile:
        f = inputs.find(name)
        if f is None:
            raise errors.InputNotFound(name, f"{what}: no input file named {name!r}")
        return f

    @staticmethod
    def _rkh(f: StagedFile) -> RKHData:
        try:
            return parse_rkh(_read_text(f))
        except BatchError as exc:
            raise errors.InvalidInput(f.name, str(exc)) from None

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
                meta = output_metadata(inst, settings, result, row=row, params=params, version=self.version,
                                       user_file_name=data.user_file_name, user_file_text=data.user_file.text)
                outputs.append(SansOutput(name, row, _slim(result), meta, str(run_s.run_number)))
        ctx.progress(1.0, "reduce", "done")
        dets = chain.detectors
        return SansPart(
            outputs=outputs, instrument=inst.name, detector=settings.detector,
            wavelength_range=[float(settings.wavelength_edges[0]), float(settings.wavelength_edges[-1])],
            q_range=[float(settings.q_edges[0]), float(settings.q_edges[-1])],
            pixels_used=int(sum(d.keep.sum() for d in dets.values())),
            pixels_used_by_bank={name: int(d.keep.sum()) for name, d in dets.items()},
            warnings=list(data.warnings))


def _slim_run(run: RawRun) -> RawRun:
    return dataclasses.replace(run, counts=run.counts[:0], spectra=run.spectra[:0], monitors={})


def _slim(result: RowResult) -> RowResult:
    """``result`` without the raw histograms of its runs (the writers read only their labels)."""
    def scatter(s: ScatterResult | None) -> ScatterResult | None:
        return None if s is None else dataclasses.replace(s, run=_slim_run(s.run))

    return dataclasses.replace(result, sample=scatter(result.sample), can=scatter(result.can),
                               parts=tuple(_slim(p) for p in result.parts))


class _RunResolver:
    """Finds the files of a batch run reference among the inputs."""

    def __init__(self, inputs: Inputs, instrument: Instrument, add_runs: dict[str, list[int]]) -> None:
        self.by_number: dict[int, StagedFile] = {}
        self.added: dict[int, StagedFile] = {}
        for f in inputs.files:
            m = _RUN_FILE.match(f.path.name)
            if not m:
                continue
            number = int(m.group(2))
            (self.added if m.group(3) else self.by_number).setdefault(number, f)
        self.add_runs = add_runs
        self.instrument = instrument
        self._titles: dict[int, tuple[str, int]] | None = None

    def _file(self, number: int, why: str) -> StagedFile:
        f = self.by_number.get(number)
        if f is None:
            raise errors.InputNotFound(f"{self.instrument.name}{number}.nxs", f"{why}: run {number} is not among the inputs")
        return f

    def files(self, ref: RunRef) -> list[StagedFile]:
        if not ref.added:
            return [self._file(ref.number, "batch file")]
        if ref.label in self.add_runs:
            return [self._file(n, f"add_runs {ref.label}") for n in self.add_runs[ref.label]]
        if ref.number in self.added:
            return [self.added[ref.number]]
        return [self._file(n, f"summing {ref.label}") for n in self._infer(ref)]

    def _infer(self, ref: RunRef) -> list[int]:
        """Every scattering run up to ``ref.number`` with the title of run ``ref.number``."""
        if self._titles is None:
            self._titles = {}
            for number, f in self.by_number.items():
                info = read_run_info(f.path, f.name)
                self._titles[number] = (info.title, info.n_spectra)
        last = self._file(ref.number, f"summing {ref.label}")
        if ref.number not in self._titles:
            raise errors.InvalidInput(last.name, "cannot be read")
        title, nspec = self._titles[ref.number]
        return sorted(n for n, (t, ns) in self._titles.items() if t == title and ns == nspec and n <= ref.number)
