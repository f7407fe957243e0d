"""The sans inputs: the batch rows (the technique's units), the user file with the
Mantid correction files it names, and the raw runs of a block of rows, found among the
staged files (``LOQ<run>.nxs``, ``-add`` files, run sums) and read once."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from panreduce import errors
from panreduce.kit import Context, Inputs, StagedFile
from panreduce_sans.batch import BatchError, BatchRow, RKHData, RunRef, parse_batch, parse_rkh
from panreduce_sans.instrument import INSTRUMENTS, Instrument
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


def read_text(path: str | os.PathLike[str], *, name: str | None = None) -> str:
    """The text of a file; ``name``: the caller's name for it, in messages (default: the
    file name of ``path``)."""
    name = name or Path(path).name
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise errors.InvalidInput(name, f"cannot be read ({exc.strerror or exc})") from None
    if not data.strip():
        raise errors.InvalidInput(name, "is empty")
    if b"\x00" in data:
        raise errors.InvalidInput(name, "is not a text file")
    return data.decode("utf-8", "replace")


def batch_rows(inputs: Inputs, params: SansParameters) -> list[BatchRow]:
    """The rows of the batch file (the technique's units)."""
    batch_file = named(inputs, params.batch_file, "batch_file")
    try:
        rows, _ = parse_batch(read_text(batch_file.path, name=batch_file.name))
    except BatchError as exc:
        raise errors.InvalidInput(batch_file.name, str(exc)) from None
    for row in rows:
        if row.user_file and row.user_file != params.user_file:
            raise errors.InvalidInput(
                batch_file.name,
                f"line {row.line}: a per-row user_file ({row.user_file}) is not supported; pass it as user_file",
            )
    return rows


def load_batch(inputs: Inputs, params: SansParameters, ctx: Context, rows: list[BatchRow]) -> LoadedBatch:
    """Everything the rows need: the user file and its settings (with the direct-beam, flat
    and moderator files it names) and the runs they use, read (and summed) once."""
    instrument = INSTRUMENTS[params.instrument]
    warnings: list[str] = []

    uf_file = named(inputs, params.user_file, "user_file")
    uf = parse_user_file(read_text(uf_file.path, name=uf_file.name))
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
    direct = {b: _rkh(named(inputs, uf.direct_files[b], f"{uf_file.name} MON/DIRECT ({b})")) for b in banks}
    flat = {
        b: _rkh(named(inputs, uf.flat_files[b], f"{uf_file.name} MON/FLAT ({b})"))
        for b in banks
        if uf.flat_files.get(b)
    }
    moderator = None
    if uf.qresol.on and uf.qresol.moderator_file:
        moderator = _rkh(named(inputs, uf.qresol.moderator_file, f"{uf_file.name} QRESOL/MODERATOR"))
    try:
        settings = settings_from_user_file(
            uf,
            instrument,
            direct,
            flat,
            normalisation_errors=params.normalisation_errors,
            split=params.q_assignment == "split",
            want_qxy=params.qxy,
            moderator=moderator,
            radius_cut=params.radius_cut or None,
            wave_cut=params.wave_cut or None,
        )
    except ReductionError as exc:
        raise errors.InvalidInput(uf_file.name, str(exc)) from None
    for note in settings.notes:
        ctx.log(note, "warning")
        warnings.append(note)

    resolver = RunResolver(inputs, instrument, params.add_runs)
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
            runs.append(
                read_run(f.path, f.name, spectra=(first_spec, last_spec), event_edges=event_edges, period=params.period)
            )
            done += 1
        scatter[label] = sum_runs(runs)
        if len(runs) > 1:
            ctx.log(f"{label}: summed runs {', '.join(str(r.run_number) for r in runs)}")
    trans: dict[str, RawRun] = {}
    for label, files in plan_t.items():
        ctx.progress(done / max(total, 1), "load", f"reading {files[0].name}")
        trans[label] = sum_runs(
            [read_run(f.path, f.name, event_edges=event_edges, period=params.period) for f in files]
        )
        done += 1
    ctx.progress(1.0, "load", f"read {done} run file(s)")
    return LoadedBatch(rows, header, instrument, uf, uf_file.name, settings, scatter, trans, warnings)


def named(inputs: Inputs, name: str, what: str) -> StagedFile:
    f = inputs.find(name)
    if f is None:
        raise errors.InputNotFound(name, f"{what}: no input file named {name!r}")
    return f


def rkh(path: str | os.PathLike[str], *, name: str | None = None) -> RKHData:
    """A Mantid RKH correction file; ``name``: the caller's name for it, in messages."""
    name = name or Path(path).name
    try:
        return parse_rkh(read_text(path, name=name))
    except BatchError as exc:
        raise errors.InvalidInput(name, str(exc)) from None


def _rkh(f: StagedFile) -> RKHData:
    return rkh(f.path, name=f.name)


class RunResolver:
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
            raise errors.InputNotFound(
                f"{self.instrument.name}{number}.nxs", f"{why}: run {number} is not among the inputs"
            )
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
