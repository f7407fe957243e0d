"""The reflectometry technique: glue between the kit and the reduction."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from panreduce import errors
from panreduce.errors import FieldViolation, InvalidParameters
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce_reflectometry import output, workflow
from panreduce_reflectometry.offspecular import OffSpecularMap
from panreduce_reflectometry.output import OrtSet
from panreduce_reflectometry.params import ReflectometryParameters
from panreduce_reflectometry.readers import read_run, read_transmission_table
from panreduce_reflectometry.reduction import Transmission
from panreduce_reflectometry.runs import TofRun

VERSION = "0.1.0"
RUN_SUFFIXES = (".nxs", ".nx", ".hdf", ".h5", ".hdf5", ".nx.hdf")
TABLE_SUFFIXES = (".csv", ".txt", ".dat", ".tsv")


@dataclass
class Loaded:
    runs: list[tuple[int, TofRun]]  # (index in run order, run)
    n_runs: int
    transmission: Transmission | None
    step: float  # log-bin dQ/Q shared by every run
    notes: list[str]
    direct_height_m: float | None = None  # the direct beam's height on the detector (theta_from=detector)


@dataclass
class RunUnit:
    index: int  # in run order over the whole job
    run: TofRun
    loaded: Loaded  # the job's transmission, binning and notes (shared by every unit)


@dataclass
class OffSpecular:
    name: str
    instrument: str
    theta_deg: float
    map: OffSpecularMap


@dataclass
class ReflPart:
    """The reduced runs of a block: ORSO data sets, their records, off-specular maps."""

    sets: list[OrtSet]
    records: list[dict[str, Any]]
    offspecular: list[OffSpecular]
    notes: list[str]


def _bad(field: str, why: str) -> InvalidParameters:
    return InvalidParameters([FieldViolation(field, why)])


def _call(params: ReflectometryParameters) -> str:
    return "panreduce reduce reflectometry " + json.dumps(params.model_dump(exclude_none=True), default=str)


class Technique(_Technique[ReflectometryParameters, ReflPart]):
    name = "reflectometry"
    version = VERSION
    title = "Time-of-flight neutron reflectometry to ORSO R(Q) (ISIS OFFSPEC/INTER, ANSTO Platypus)"
    description = (
        "Reduces time-of-flight reflectometry runs the way Mantid's ReflectometryReductionOneAuto does: "
        "TOF to wavelength, monitor normalisation, background from side pixels, summation in λ or along "
        "lines of constant Q (Cubitt 2015), transmission/direct-beam normalisation (or monitor only, "
        "flagged: no absolute scale), log Q binning with dQ per point, and stitches several angles with "
        "reported overlap factors. Writes ORSO .ort per run and *_stitched.ort, and a log R vs Q PNG."
    )
    Parameters = ReflectometryParameters
    input_kinds = ("nexus/isis-raw", "nexus/mantid-processed", "nexus/platypus", "csv/transmission")
    output_formats = ("ort", "orb", "png")
    shardable = True
    shard_unit = "run"

    Part = ReflPart

    # -- the shard contract: one unit per reflectivity run ------------------------------
    def units(self, inputs: Inputs, params: ReflectometryParameters) -> list[RunUnit]:
        """Every reflectivity run in run order, each with the job's shared transmission
        and binning (read and built once per job or shard: every run needs them)."""
        loaded = self._load(inputs, params)
        return [RunUnit(index, run, loaded) for index, run in loaded.runs]

    def _load(self, inputs: Inputs, params: ReflectometryParameters) -> Loaded:
        files = inputs.files
        named = set(params.transmission or [])
        missing = [n for n in named if inputs.find(n) is None]
        if missing:
            raise _bad("transmission", f"not among the inputs: {', '.join(sorted(missing))}")
        runs: list[TofRun] = []
        direct: list[TofRun] = []
        table: Transmission | None = None
        notes: list[str] = []
        candidates = [
            f for f in files if f.path.name.lower().endswith(RUN_SUFFIXES) or f.path.name in named or f.name in named
        ]
        skipped = [f.name for f in files if f not in candidates]
        if skipped:
            notes.append(f"not run files, ignored: {', '.join(skipped[:10])}")
        for f in candidates:
            is_named = f.path.name in named or f.name in named
            if is_named and f.path.name.lower().endswith(TABLE_SUFFIXES):
                table = read_transmission_table(
                    f.path, name=f.name, size=f.size, wavelength_range=params.wavelength_range
                )
                continue
            run = read_run(f.path, f.path.name)
            if is_named:
                direct.append(run)
            elif params.transmission is None and run.is_direct_beam and params.correction_kind:
                notes.append(
                    f"{f.path.name}: a direct beam (ω = 0, 2θ = 0), not used: the "
                    f"{params.correction_kind} correction normalises"
                )
            elif params.transmission is None and run.is_direct_beam:
                direct.append(run)
                notes.append(f"{f.path.name}: a direct beam (ω = 0, 2θ = 0), used as the transmission")
            else:
                runs.append(run)
        if not runs:
            raise errors.InvalidRequest("no reflectivity runs among the inputs (NeXus/HDF5 files)")
        if table is not None and direct:
            raise _bad("transmission", "give transmission runs or one table, not both")
        if len(direct) > 2:
            raise _bad("transmission", f"{len(direct)} direct-beam runs: give at most two by name")
        runs.sort(key=lambda r: r.source)
        indexed = list(enumerate(runs))
        self._check_lengths(params, len(runs))
        step = workflow.common_step(runs, params)
        transmission = table
        if direct:
            roi = workflow.pick(params.roi, 0, len(runs)) if params.roi else None
            try:
                transmission, tnotes = workflow.build_transmission(direct, params, sample_roi=roi)
            except ValueError as exc:
                raise errors.InvalidInput(direct[0].source, f"as transmission: {exc}") from None
            notes += tnotes
        height = None
        # the default θ on an instrument that supports it, with a direct beam given: the detector
        auto = (
            params.theta_from is None
            and not params.theta_deg
            and bool(direct)
            and all(r.instrument.direct_beam_theta for r in runs)
        )
        if (params.theta_from == "detector" or auto) and direct:
            try:
                height = workflow.direct_beam_height(direct[0], params)
            except ValueError as exc:
                raise errors.InvalidInput(direct[0].source, f"as the direct beam for θ: {exc}") from None
            notes.append(
                f"θ from the detector: the reflected beams' heights above the direct beam {direct[0].run_number} "
                f"({1000 * height:.3f} mm)"
                + (" (the default with a direct beam; theta_from=log for the logs)" if auto else "")
            )
        elif params.theta_from == "detector":
            notes.append("θ from the detector: no direct beam among the inputs, θ is ½ of the beam's recorded 2θ")
        return Loaded(indexed, len(runs), transmission, step, notes, height)

    @staticmethod
    def _check_lengths(params: ReflectometryParameters, n: int) -> None:
        for field in ("theta_deg", "roi", "background_roi", "q_range", "scale"):
            values = getattr(params, field)
            if (values and len(values) not in (1, n)) or (field == "scale" and values and len(values) != n):
                raise _bad(
                    field,
                    f"{len(values)} value(s) for {n} run(s): give one per run"
                    + ("" if field == "scale" else ", or one for all"),
                )

    def reduce_block(
        self, block: Sequence[RunUnit], inputs: Inputs, params: ReflectometryParameters, ctx: Context
    ) -> ReflPart:
        call = _call(params)
        data = block[0].loaded
        sets, records, maps = [], [], []
        for k, unit in enumerate(block):
            run, index = unit.run, unit.index
            ctx.progress(k / len(block), "reduce", f"run {run.run_number}")
            try:
                plan = workflow.plan_run(run, index, data.n_runs, params, data.direct_height_m)
                s, rec = workflow.reduce_one(
                    run, plan, params, transmission=data.transmission, step=data.step, version=VERSION, call=call
                )
            except ValueError as exc:
                field, _, why = str(exc).partition(": ")
                if field in ReflectometryParameters.model_fields or "/" in field:
                    raise _bad(field.split("/")[0], why) from None
                raise InvalidParameters([FieldViolation("roi", f"run {run.run_number}: {exc}")]) from None
            sets.append(s)
            records.append(rec)
            if params.offspecular:
                m = workflow.offspecular_for(run, plan, params, i0=rec["i0"])
                maps.append(OffSpecular(s.name, run.instrument.name, plan.theta_deg, m))
        return ReflPart(sets, records, maps, list(data.notes))

    def combine(self, parts: Sequence[ReflPart], params: ReflectometryParameters) -> ReflPart:
        return ReflPart(
            [s for p in parts for s in p.sets],
            [r for p in parts for r in p.records],
            [m for p in parts for m in p.offspecular],
            parts[0].notes,
        )

    def write(self, result: ReflPart, params: ReflectometryParameters, ctx: Context) -> Mapping[str, Any]:
        """The per-run ORSO files, the stitched curve and the plots, over every run."""
        for note in result.notes:
            ctx.log(note)
        for o in result.offspecular:
            output.write_offspecular(
                ctx.output_path(f"{o.name}_offspecular.nxs", format="nexus"),
                ctx.output_path(f"{o.name}_offspecular.png", format="png", role="preview") if params.plots else None,
                o.map,
                run=o.name,
                instrument=o.instrument,
                theta_deg=o.theta_deg,
            )
        ctx.progress(0.2, "write", "writing ORSO files")
        order = sorted(range(len(result.records)), key=lambda i: result.records[i]["index"])
        return self._finish(
            [result.sets[i] for i in order],
            [result.records[i] for i in order],
            params,
            ctx,
            call=_call(params),
            notes=result.notes,
        )

    def _finish(
        self,
        sets: list,
        records: list[dict],
        params: ReflectometryParameters,
        ctx: Context,
        *,
        call: str,
        notes: list[str],
    ) -> dict[str, Any]:
        absolute = all(r["normalisation"] != "monitor" for r in records)
        warnings = [] if absolute else [output.MONITOR_ONLY_WARNING]
        if warnings:
            ctx.log(output.MONITOR_ONLY_WARNING, "warning")
        comment = "PaNReduce reflectometry" + ("" if absolute else " - WARNING: " + output.MONITOR_ONLY_WARNING)
        for s in sets:
            output.write_ort(ctx.output_path(f"{s.name}.ort", format="ort"), [s], comment=comment)
            if params.orb:
                output.write_orb(ctx.output_path(f"{s.name}.orb", format="orb"), [s])
        summary: dict[str, Any] = {
            "runs": records,
            "n_runs": len(records),
            "absolute_scale": absolute,
            "normalisation": records[0]["normalisation"] if absolute else "monitor",
            "warnings": warnings,
            "notes": notes,
        }
        stitched = None
        if len(sets) > 1:
            try:
                stitched, info = workflow.stitch_sets(sets, records, manual=params.scale, version=VERSION, call=call)
            except ValueError as exc:
                raise _bad("scale" if params.scale else "dq_q", str(exc)) from None
            name = f"{sets[0].name}_{sets[-1].name}_stitched"
            output.write_ort(ctx.output_path(f"{name}.ort", format="ort"), [stitched], comment=comment)
            if params.orb:
                output.write_orb(ctx.output_path(f"{name}.orb", format="orb"), [stitched])
            summary["stitched"] = f"{name}.ort"
            summary["scale_factors"] = info["factors"]
            summary["scale_mode"] = info["mode"]
        if params.plots:
            title = f"{records[0]['instrument']} " + ", ".join(str(r["run"]) for r in records)
            factors = [f["factor"] for f in summary.get("scale_factors", [])] or [1.0] * len(sets)
            curves = [
                (f"{s.name} (θ={r['theta_deg']:.3g}°)" + (f" ×{f:.3g}" if f != 1.0 else ""), s.q, s.r * f, s.dr * f)
                for s, r, f in zip(sets, records, factors, strict=True)
            ]
            st = (stitched.q, stitched.r, stitched.dr) if stitched is not None else None
            output.plot(
                ctx.output_path("reflectivity.png", format="png", role="preview"),
                curves,
                stitched=st,
                title=title,
                absolute=absolute,
            )
        ctx.progress(1.0, "write", "done")
        return summary
