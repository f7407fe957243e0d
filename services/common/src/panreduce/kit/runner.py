"""The whole job, without gRPC: ``panreduce.kit.run(technique, inputs, params, output)``.

Edge validation (limits, technique, shard, parameters), staging with checksums, the
technique's work (``load``/``reduce``, or the shard contract: ``units`` ->
``reduce_block`` -> ``combine`` -> ``write``), provenance in every output, and the
atomic publish. Cancellation is a ``threading.Event``; progress a callback
``(stage, fraction, message)``. The gRPC servicer (kit.server) only decodes a request,
calls :func:`run` and encodes its :class:`Result`; tests, benchmarks and notebooks
call :func:`run` directly.

The request is kept as the protocol's message (``panreduce.v1`` is protobuf data, not
gRPC): the limits and the provenance record read the same fields whichever way a job
arrives.

Sharding (a technique with ``shardable = True`` and a ``Part`` dataclass):

* a shard job (``shard=(index, count)``) takes its contiguous block of ``units``,
  turns it into one part (``reduce_block``) and publishes ``part.h5`` and a
  ``summary.json`` naming the shard; a shard whose block is empty publishes only the
  ``summary.json`` marker (``empty_shard: true``);
* the merge job (``merge=True``, the inputs being the shards' outputs) checks that the
  shards' markers tile ``0..count-1``, loads the parts of the non-empty shards in
  shard order, ``combine``s them and ``write``s the result;
* an unsharded job is ``write(combine([reduce_block(units)]))``: one writer renders
  both.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2

from panreduce import catalogue, errors, limits, locations, provenance, registry
from panreduce.convert import from_struct, message_to_dict, plain, to_struct
from panreduce.kit.parts import PART_FILE, load_part, part_attrs, save_part
from panreduce.kit.readers import input_roots
from panreduce.kit.technique import AnyTechnique, Context, Inputs, Parameters, Shard
from panreduce.metrics import BYTES_STAGED, JOB_SECONDS, JOBS, JOBS_RUNNING
from panreduce.storage import LocalStore, Stores, check_inputs_exist, sha256_file, stage_inputs
from panreduce.v1 import reduce_pb2 as pb

# Fractions of a job's progress given to each kit stage.
STAGE_SPAN = {"stage": (0.0, 0.05), "load": (0.05, 0.2), "reduce": (0.2, 0.95), "publish": (0.95, 1.0)}
# Within "reduce", an unsharded contract job gives reduce_block the first part, write the rest.
WRITE_FROM = 0.8
SUMMARY_FILE = "summary.json"

ProgressCallback = Callable[[str, float, str], None]
LogCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class Output:
    """One published output."""

    uri: str
    format: str
    role: str
    size: int
    sha256: str


@dataclass
class Result:
    """What a finished job gives back."""

    job_id: str
    summary: dict[str, Any]
    outputs: list[Output]
    provenance_uri: str = ""
    provenance_id: str = ""
    catalogue: dict[str, str] = field(default_factory=dict)

    def output(self, name: str) -> Output:
        """The output whose URI ends with ``name`` (a file name or a relative path)."""
        for o in self.outputs:
            if o.uri.rstrip("/").endswith("/" + name) or o.uri == name:
                return o
        raise KeyError(f"no output {name!r} among {[o.uri for o in self.outputs]}")

    def path(self, name: str) -> Path:
        """The local path of output ``name`` (local outputs only)."""
        return Path(self.output(name).uri)


def is_contract(cls: type[AnyTechnique]) -> bool:
    """Whether ``cls`` shards by the contract (declares a ``Part``)."""
    return bool(cls.shardable and getattr(cls, "Part", None) is not None)


def technique_of(technique: str | type[AnyTechnique] | AnyTechnique) -> AnyTechnique:
    if isinstance(technique, str):
        technique = registry.load(technique)
    return technique() if isinstance(technique, type) else technique


def distribution_of(t: type[AnyTechnique]) -> str:
    """The installed distribution that provides technique ``t`` (for provenance): the one
    whose entry point names its package (reading entry points only; a service starting
    pays no scan of every installed file list), else the package index."""
    top = t.__module__.split(".")[0]
    for ep in importlib_metadata.entry_points(group=registry.GROUP):
        if ep.value.split(":")[0].split(".")[0] == top and ep.dist is not None:
            return ep.dist.name
    return (importlib_metadata.packages_distributions().get(top) or [top])[0]


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


# -- the edge ---------------------------------------------------------------------------
def validate_request(technique: type[AnyTechnique], request: pb.ReduceRequest) -> Parameters:
    """Check a request at the edge: limits, technique, inputs, shard, parameters. Returns params."""
    limits.check_reduce_request(request)
    if request.technique and request.technique != technique.name:
        raise errors.UnknownTechnique(request.technique, [technique.name])
    if not request.inputs:
        raise errors.InvalidRequest("no inputs: give at least one input URI or path")
    if request.HasField("shard") and request.shard.count:
        if not technique.shardable and request.shard.count > 1:
            raise errors.InvalidRequest(f"technique {technique.name!r} cannot be sharded")
        if request.shard.index >= request.shard.count:
            raise errors.InvalidRequest(
                f"shard.index {request.shard.index} must be below shard.count {request.shard.count}"
            )
    if request.merge and not technique.shardable:
        raise errors.InvalidRequest(f"technique {technique.name!r} is not shardable: nothing to merge")
    nonfinite = limits.nonfinite_numbers(request.parameters)
    if nonfinite:
        raise errors.InvalidParameters(
            [
                errors.FieldViolation(errors.clip(p, 120), "Input should be a finite number; got NaN or infinity")
                for p in nonfinite
            ]
        )
    params: Parameters = technique.validate_parameters(from_struct(request.parameters))
    return params


def check_output_location(stores: Stores, output: str) -> None:
    """Refuse, before a job runs, an output that names an existing file (or lies under
    one): results go into a folder. Checked at submission by the gateway and the service."""
    if not output:
        return
    store = stores.for_uri(output)
    if not isinstance(store, LocalStore):
        return
    path = store.path_of(output.rstrip("/") or "/")
    for p in (path, *path.parents):
        try:
            if not p.exists():
                continue
            if not p.is_dir():
                raise errors.InvalidRequest(
                    f"output {errors.clip(output)}: {errors.clip(str(p))} is an existing file, not a folder; "
                    "name a folder (new or existing) for the results"
                )
        except OSError as exc:
            raise errors.InvalidRequest(
                f"output {errors.clip(output)} is not a usable location ({exc.strerror or exc})"
            ) from None
        return


def _struct(params: Mapping[str, Any] | Parameters | None) -> struct_pb2.Struct:
    if params is None:
        return struct_pb2.Struct()
    if isinstance(params, Parameters):
        return to_struct(params.model_dump(mode="json", exclude_defaults=True))
    s = struct_pb2.Struct()
    try:
        s.update(dict(params))  # NaN stays NaN here, so that the edge names it
    except (TypeError, ValueError):
        s = to_struct(params)
    return s


def make_request(
    technique: str,
    inputs: Sequence[str | Path],
    params: Mapping[str, Any] | Parameters | None = None,
    output: str | Path | None = None,
    *,
    shard: Shard | tuple[int, int] | None = None,
    merge: bool = False,
    labels: Mapping[str, str] | None = None,
    idempotency_key: str = "",
) -> pb.ReduceRequest:
    """The protocol's request for a job (grpc-free)."""
    req = pb.ReduceRequest(
        technique=technique,
        inputs=[str(i) for i in inputs],
        parameters=_struct(params),
        output=str(output) if output else "",
        merge=merge,
        idempotency_key=idempotency_key,
    )
    if labels:
        req.labels.update(dict(labels))
    if shard is not None:
        index, count = (shard.index, shard.count) if isinstance(shard, Shard) else shard
        req.shard.index, req.shard.count = int(index), int(count)
    return req


# -- the job ----------------------------------------------------------------------------
def run(
    technique: str | type[AnyTechnique] | AnyTechnique,
    inputs: Sequence[str | Path],
    params: Mapping[str, Any] | Parameters | None = None,
    output: str | Path | None = None,
    *,
    shard: Shard | tuple[int, int] | None = None,
    merge: bool = False,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    stores: Stores | None = None,
    job_id: str | None = None,
    log: LogCallback | None = None,
    deadline: float | None = None,
    labels: Mapping[str, str] | None = None,
    scratch_root: Path | None = None,
    max_input_bytes: int | None = None,
) -> Result:
    """Run one job of ``technique`` on ``inputs`` (paths or URIs; a URI ending in "/"
    means every file under it) with the raw ``params``, publishing into ``output`` (a
    folder; None: the store's default folder for the job).

    ``shard=(index, count)`` runs one shard of a shardable job; ``merge=True`` combines
    the shards' outputs (``inputs``: their folders). ``progress(stage, fraction,
    message)`` receives the job's overall fraction; setting ``cancel`` stops the job at
    the technique's next progress report (``JobCancelled``; nothing is published);
    ``deadline`` is a ``time.monotonic()`` value. Errors are ``panreduce.errors``.
    """
    tech = technique_of(technique)
    cls = type(tech)
    request = make_request(cls.name, inputs, params, output, shard=shard, merge=merge, labels=labels)
    return run_request(
        tech,
        request,
        stores=stores if stores is not None else Stores.from_env(),
        job_id=job_id or new_job_id(),
        progress=progress,
        log=log,
        cancel=cancel,
        deadline=deadline,
        scratch_root=scratch_root,
        max_input_bytes=max_input_bytes,
    )


def run_split(
    technique: str | type[AnyTechnique] | AnyTechnique,
    inputs: Sequence[str | Path],
    params: Mapping[str, Any] | Parameters | None = None,
    output: str | Path | None = None,
    *,
    split: int,
    stores: Stores | None = None,
    **kwargs: Any,
) -> Result:
    """A job as the gateway runs it when it splits: ``split`` shard jobs, one after the
    other, into a scratch folder of the store, then the merge job into ``output`` (the
    scratch is removed). ``kwargs`` go to every :func:`run`."""
    tech = technique_of(technique)
    stores = stores if stores is not None else Stores.from_env()
    job_id = kwargs.pop("job_id", None) or new_job_id()
    scratch = stores.scratch_uri(job_id)
    try:
        for i in range(split):
            run(
                tech,
                inputs,
                params,
                f"{scratch}/shard-{i:04d}",
                shard=(i, split),
                stores=stores,
                job_id=f"{job_id}-s{i}",
                **kwargs,
            )
        return run(tech, [scratch + "/"], params, output, merge=True, stores=stores, job_id=job_id, **kwargs)
    finally:
        stores.remove_tree(scratch)


def run_request(
    tech: AnyTechnique,
    request: pb.ReduceRequest,
    *,
    stores: Stores,
    job_id: str,
    progress: ProgressCallback | None = None,
    log: LogCallback | None = None,
    cancel: threading.Event | None = None,
    deadline: float | None = None,
    scratch_root: Path | None = None,
    max_input_bytes: int | None = None,
    checked: bool = False,
) -> Result:
    """:func:`run` for a request already in the protocol's form (the servicer's way in).
    ``checked``: the inputs and output were checked at submission."""
    cls = type(tech)
    name = cls.name
    params = validate_request(cls, request)
    if not checked:
        check_inputs_exist(stores, list(request.inputs))
        check_output_location(stores, request.output)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    JOBS_RUNNING.labels(name, name).inc()
    root = Path(scratch_root or tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=root))
    state = "FAILED"
    try:
        shard = Shard(request.shard.index, request.shard.count) if request.shard.count else None
        if cls.shardable and not is_contract(cls):
            raise errors.InternalError(
                f"technique {name!r} is shardable but declares no Part "
                "(the shard contract: docs/techniques.md, Sharding)"
            )
        ctx = Context(
            job_id=job_id, scratch=scratch, progress_sink=progress, log_sink=log, cancel_event=cancel, deadline=deadline
        )
        ctx._set_span(*STAGE_SPAN["stage"])
        ctx.progress(0.0, "stage", f"staging {len(request.inputs)} input(s)")
        inputs = stage_inputs(
            stores,
            list(request.inputs),
            scratch,
            max_bytes=max_input_bytes if max_input_bytes is not None else cls.max_input_bytes,
            on_file=lambda ref: BYTES_STAGED.labels(name, name).inc(ref.size),
            accept=None if request.merge else cls.accepts,  # a merge reads the kit's parts
            on_skip=lambda uri, why: ctx.log(f"skipped {uri}: {why}", "warning"),
        )
        ctx.progress(1.0, "stage", f"staged {len(inputs.files)} file(s)")
        for f in inputs.files:  # whichever library the technique reads it with (a merge's parts too)
            locations.check_file_references(f.path, input_roots(f), source=f.name)
            ctx.check_cancelled()
        found = catalogue.extract(inputs.files)
        if cls.shardable:
            summary = _run_contract(tech, inputs, params, ctx, shard=shard, merge=request.merge)
        else:
            summary = _run_whole(tech, inputs, params, ctx, shard=shard)
        ctx.check_cancelled()
        ctx._set_span(*STAGE_SPAN["publish"])
        ctx.progress(0.0, "publish", f"writing provenance and publishing {len(ctx.outputs)} output(s)")
        result = _publish(tech, request, params, inputs, ctx, summary or {}, started, stores)
        result.catalogue.update(found)
        if progress is not None:
            progress("done", 1.0, "finished")
        state = "SUCCEEDED"
        return result
    except errors.JobCancelled:
        state = "CANCELLED"
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        JOBS_RUNNING.labels(name, name).dec()
        JOBS.labels(name, name, state).inc()
        JOB_SECONDS.labels(name, name).observe(time.monotonic() - t0)


def _write_summary(ctx: Context, doc: Mapping[str, Any]) -> None:
    path = ctx.output_path(SUMMARY_FILE, format="json", role="summary")
    path.write_text(json.dumps(plain(doc or {}), indent=1))


def _run_whole(
    tech: AnyTechnique, inputs: Inputs, params: Parameters, ctx: Context, *, shard: Shard | None
) -> Mapping[str, Any]:
    """A technique that does not shard: load, then reduce."""
    ctx._set_span(*STAGE_SPAN["load"])
    data = tech.load(inputs, params, ctx)
    ctx.check_cancelled()
    ctx._set_span(*STAGE_SPAN["reduce"])
    summary = tech.reduce(data, params, ctx)
    ctx.check_cancelled()
    if shard is not None:  # shard 0 of 1: the whole job, with the marker a shard publishes
        _write_summary(ctx, {"shard": 0, "shard_count": 1, **(summary or {})})
    return summary


def _run_contract(
    tech: AnyTechnique, inputs: Inputs, params: Parameters, ctx: Context, *, shard: Shard | None, merge: bool
) -> Mapping[str, Any]:
    cls = type(tech)
    lo, hi = STAGE_SPAN["reduce"]
    if merge:
        ctx._set_span(*STAGE_SPAN["load"])
        ctx.progress(0.0, "merge", "reading the shards' parts")
        assert cls.Part is not None, "only a contract technique (is_contract) reaches here"
        parts = read_parts(inputs, cls.Part, cls.name)
        ctx.progress(1.0, "merge", f"{len(parts)} part(s)")
        ctx._set_span(lo, hi)
        ctx.progress(0.0, "combine", f"combining {len(parts)} part(s)")
        combined = tech.combine(parts, params)
        ctx.check_cancelled()
        summary = dict(tech.write(combined, params, ctx) or {})
        summary.setdefault("shards", len(parts))
        return summary
    ctx._set_span(*STAGE_SPAN["load"])
    units = list(tech.units(inputs, params))
    ctx.check_cancelled()
    unit = cls.shard_unit or "unit"
    if shard is None:
        if not units:
            raise errors.InvalidRequest(f"the inputs hold no {unit} to reduce")
        ctx._set_span(lo, lo + (hi - lo) * WRITE_FROM)
        part = tech.reduce_block(units, inputs, params, ctx)
        ctx.check_cancelled()
        ctx._set_span(lo + (hi - lo) * WRITE_FROM, hi)
        return tech.write(tech.combine([part], params), params, ctx)
    start, stop = shard.bounds(len(units))
    marker = {
        "shard": shard.index,
        "shard_count": shard.count,
        "units": stop - start,
        "unit_range": [start, stop],
        "of_units": len(units),
    }
    if start == stop:
        ctx.log(f"shard {shard.index} of {shard.count} has none of the {len(units)} {unit}(s)")
        marker["empty_shard"] = True
        _write_summary(ctx, marker)
        return marker
    ctx._set_span(lo, hi)
    part = tech.reduce_block(units[start:stop], inputs, params, ctx)
    ctx.check_cancelled()
    save_part(
        ctx.output_path(PART_FILE, format="part", role="part"),
        part,
        attach=lambda name: ctx.output_path(name, format="part", role="part"),
        technique=cls.name,
        shard=shard.index,
        shard_count=shard.count,
    )
    _write_summary(ctx, marker)
    return marker


def read_parts(inputs: Inputs, part_cls: type, technique: str) -> list[Any]:
    """The parts of a merge's inputs, in shard order; every shard of the job must be
    there (a part or an empty marker) exactly once."""
    markers: dict[Path, dict[str, Any]] = {}
    staged = {f.path for f in inputs.files}
    for f in inputs.files:
        if f.path.name == SUMMARY_FILE:
            try:
                doc = json.loads(f.path.read_text())
            except (OSError, ValueError):
                raise errors.InvalidInput(f.name, "is not a shard's summary (JSON)") from None
            if (
                not isinstance(doc, dict)
                or not isinstance(doc.get("shard"), int)
                or not isinstance(doc.get("shard_count"), int)
            ):
                raise errors.InvalidInput(f.name, "is not a shard's summary (no shard index and count)")
            markers[f.path.parent] = doc
    if not markers:
        raise errors.InvalidRequest("the inputs hold no shard results to merge")
    counts = {doc["shard_count"] for doc in markers.values()}
    indices = sorted(doc["shard"] for doc in markers.values())
    if len(markers) > limits.LIMITS.shard_count or max(counts) > limits.LIMITS.shard_count:
        raise errors.InvalidRequest(
            f"{max(len(markers), max(counts))} shards is over the limit of {limits.LIMITS.shard_count}"
        )
    if len(counts) != 1 or indices != list(range(next(iter(counts)))):
        raise errors.InternalError(
            f"the shard results do not tile one job: shards {indices[:20]} of {sorted(counts)[:5]}"
        )
    parts = []
    for folder, doc in sorted(markers.items(), key=lambda kv: kv[1]["shard"]):
        if doc.get("empty_shard"):
            continue
        path = folder / PART_FILE
        if not path.is_file():
            raise errors.InternalError(f"shard {doc['shard']} of {technique} published no {PART_FILE}")
        if path not in staged:  # only what was staged (and checked) is read: not a link beside it
            raise errors.InvalidInput(f"{PART_FILE} of shard {doc['shard']}", "is not one of the merge's inputs")
        attrs = part_attrs(path)
        if attrs.get("technique") != technique or attrs.get("shard") != doc["shard"]:
            raise errors.InvalidInput(path.name, f"is not shard {doc['shard']}'s part of a {technique} job")
        parts.append(load_part(path, part_cls))
    if not parts:
        raise errors.InvalidRequest("every shard was empty: the job's inputs hold nothing to merge")
    return parts


def _publish(
    tech: AnyTechnique,
    request: pb.ReduceRequest,
    params: Parameters,
    inputs: Inputs,
    ctx: Context,
    summary: Mapping[str, Any],
    started: datetime,
    stores: Stores,
) -> Result:
    cls = type(tech)
    outputs = ctx.outputs
    for out in outputs:
        if not out.path.is_file():
            raise errors.InternalError(f"technique {cls.name} declared output {out.name} but did not write it")
    record = provenance.build(
        job_id=ctx.job_id,
        technique=cls.name,
        technique_version=cls.version,
        technique_distribution=distribution_of(cls),
        request=message_to_dict(request),
        parameters=params.model_dump(mode="json"),
        inputs=inputs,
        started=started,
    )
    for out in outputs:
        if out.role != "part":
            provenance.embed(record, out)
    record["outputs"] = [
        {
            "name": o.name,
            "format": o.format,
            "role": o.role,
            "size": o.path.stat().st_size,
            "sha256": sha256_file(o.path),
        }
        for o in outputs
    ]
    prov_path = ctx.output_path("provenance.json", format="json", role="provenance")
    prov_path.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
    all_outputs = ctx.outputs
    ctx.check_cancelled()  # last point at which a cancel leaves nothing behind
    dest = request.output or stores.default_output(ctx.job_id)
    store = stores.for_uri(dest)
    uris = store.publish([(o.path, o.name) for o in all_outputs], dest)
    result = Result(job_id=ctx.job_id, summary=plain(dict(summary)), outputs=[], provenance_id=record["id"])
    for o, uri in zip(all_outputs, uris, strict=True):
        result.outputs.append(
            Output(uri=uri, format=o.format, role=o.role, size=o.path.stat().st_size, sha256=sha256_file(o.path))
        )
        if o.role == "provenance":
            result.provenance_uri = uri
    return result


def to_message(result: Result) -> pb.Result:
    """The protocol's form of a Result (the servicer's encode)."""
    msg = pb.Result(
        summary=to_struct(result.summary), provenance_id=result.provenance_id, provenance_uri=result.provenance_uri
    )
    for o in result.outputs:
        msg.outputs.add(uri=o.uri, format=o.format, role=o.role, size=o.size, sha256=o.sha256)
    msg.catalogue.update(result.catalogue)
    return msg
