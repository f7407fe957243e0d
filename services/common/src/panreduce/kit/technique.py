"""What a technique declares, and what the kit hands it while it runs.

A technique is one class::

    class Technique(panreduce.kit.Technique):
        name = "scan"
        version = "0.1.0"
        title = "Single-crystal diffraction scans"
        Parameters = ScanParameters          # a panreduce.kit.Parameters subclass
        input_kinds = ("nexus/i16-scan",)
        output_formats = ("nexus", "csv", "png")

        def load(self, inputs, params, ctx):  # read the staged files -> data
            ...
        def reduce(self, data, params, ctx):  # the science; returns the summary
            path = ctx.output_path("result.nxs", format="nexus")
            ...
            return {"center": ...}

A shardable technique instead declares a ``Part`` dataclass and implements ``units``,
``reduce_block``, ``combine`` and ``write`` (the shard contract; docs/techniques.md,
"Sharding"): the kit selects each shard's block, stores its part and runs the merge.

Everything else — transport, staging, progress events, cancellation, health, errors,
provenance, publishing the outputs atomically — is the kit's (``panreduce.kit.run``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import pydantic

from panreduce.errors import DeadlineExceeded, FieldViolation, InvalidParameters, JobCancelled, clip


class Parameters(pydantic.BaseModel):
    """Base of every technique's parameter model.

    Unknown parameters are refused (``extra="forbid"``); give every field a
    description with its unit and constraints (``ge``/``le``) so the JSON Schema
    served by ``Describe`` and the error messages name the allowed range. NaN and
    infinite numbers are refused (``allow_inf_nan=False``), naming the parameter.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, allow_inf_nan=False)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _dotted_keys(cls, raw: Any) -> Any:
        """Step models take dotted keys: ``{"geometry.distance_mm": 1}`` is
        ``{"geometry": {"distance_mm": 1}}`` (what ``-p step.field=value`` gives). A dotted
        key merges into (a copy of) a step also given as a mapping and wins over it, as
        ``-p`` wins over ``--params FILE``.
        A key whose first part is no field is left alone (and refused as unknown)."""
        if not isinstance(raw, dict) or not any(isinstance(k, str) and "." in k for k in raw):
            return raw
        out: dict[str, Any] = {}
        dotted: list[tuple[str, str, Any]] = []
        for key, value in raw.items():
            step, _, name = key.partition(".") if isinstance(key, str) else (key, "", "")
            if name and step in cls.model_fields:
                dotted.append((step, name, value))
            else:
                out[key] = value
        for step, name, value in dotted:
            given = out.get(step, {})
            if isinstance(given, pydantic.BaseModel):
                given = given.model_dump()
            if not isinstance(given, dict):
                continue  # the step given as something else: its model names it
            out[step] = {**given, name: value}
        return out

    @classmethod
    def route_bare_fields(cls, data: Any, bare: Mapping[str, tuple[str, str]]) -> Any:
        """For a ``mode="before"`` validator of a model nested by step: a step's field given by
        its bare name (``{"algorithm": "sirt"}``, as a flat model of earlier versions took it)
        moves into its step, ``bare[name] = (step, field)``. A field given both bare and in its
        step (a mapping or a dotted key) is refused ("step.field is given twice"); the model's
        own fields and unknown keys stay as they are (to be refused)."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        steps: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            if isinstance(key, str) and key not in cls.model_fields and key in bare:
                step, name = bare[key]
                steps.setdefault(step, {})[name] = value
            else:
                out[key] = value
        for step, fields in steps.items():
            given = out.get(step, {})
            if isinstance(given, pydantic.BaseModel):
                given = given.model_dump()
            if not isinstance(given, dict):
                out[step] = given  # refused by the step's model
                continue
            dotted = {k.partition(".")[2] for k in data if isinstance(k, str) and k.startswith(step + ".")}
            twice = sorted((set(given) | dotted) & set(fields))
            if twice:
                raise ValueError(f"{step}.{twice[0]} is given twice")
            out[step] = {**given, **fields}
        return out


P = TypeVar("P", bound=Parameters)
D = TypeVar("D")


@dataclass(frozen=True)
class StagedFile:
    """One input file, staged on local disk for the technique to read."""

    path: Path  # local path to read
    uri: str  # where it came from
    name: str  # path relative to the input it belongs to (its file name for a single file)
    size: int
    sha256: str


@dataclass(frozen=True)
class StagedInput:
    """One input URI of the request: a single file, or every file under a prefix."""

    uri: str
    root: Path  # local path of the file, or of the folder holding the prefix's files
    is_prefix: bool
    files: tuple[StagedFile, ...]


@dataclass(frozen=True)
class Inputs:
    """All inputs of a request, in request order."""

    items: tuple[StagedInput, ...]

    @property
    def files(self) -> list[StagedFile]:
        """Every staged file, in request order (files under a prefix sorted by name)."""
        return [f for item in self.items for f in item.files]

    def find(self, name: str) -> StagedFile | None:
        """The staged file whose relative name or file name is ``name``."""
        for f in self.files:
            if f.name == name or f.path.name == name:
                return f
        return None


@dataclass(frozen=True)
class OutputSpec:
    """An output file the technique wrote in scratch, published by the kit on success."""

    name: str  # relative name under the job's output destination
    path: Path  # where the technique writes it (scratch)
    format: str  # "nexus", "nxcansas", "csv", "png", "json", ...
    role: str  # "result", "table", "preview"


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, stop) of this shard's part of n units (contiguous, sizes differ by ≤ 1)."""
        return (n * self.index) // self.count, (n * (self.index + 1)) // self.count


ProgressSink = Callable[[str, float, str], None]
LogSink = Callable[[str, str], None]


class Context:
    """What a running job gives its technique: progress, logs, cancellation, outputs.

    ``progress`` and ``check_cancelled`` raise ``JobCancelled`` (or ``DeadlineExceeded``)
    once the job is cancelled, so an algorithm that reports progress between its steps
    stops there.
    """

    def __init__(
        self,
        *,
        job_id: str,
        scratch: Path,
        progress_sink: ProgressSink | None = None,
        log_sink: LogSink | None = None,
        cancel_event: threading.Event | None = None,
        deadline: float | None = None,
        shard: Shard | None = None,  # kept for callers; the kit gives None (science sees no shards)
    ) -> None:
        self.job_id = job_id
        self.scratch = scratch
        self.out_dir = scratch / "out"
        self.work_dir = scratch / "work"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self._progress_sink = progress_sink
        self._log_sink = log_sink
        self._cancel = cancel_event or threading.Event()
        self._deadline = deadline  # time.monotonic() value
        self._outputs: dict[str, OutputSpec] = {}
        self._span = (0.0, 1.0)
        self._last = 0.0

    # -- cancellation -------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise if the job was cancelled or ran past its deadline."""
        if self._cancel.is_set():
            raise JobCancelled("cancelled by the caller")
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DeadlineExceeded("the job ran past its deadline")

    # -- progress and logs --------------------------------------------------------
    def progress(self, fraction: float, stage: str, message: str = "") -> None:
        """Report progress: ``fraction`` (0..1) of the whole ``load`` or ``reduce`` step
        being run, ``stage`` a short name of what it does now. The job's overall fraction
        never goes backwards. Raises once the job is cancelled or past its deadline."""
        self.check_cancelled()
        lo, hi = self._span
        overall = max(lo + (hi - lo) * min(max(float(fraction), 0.0), 1.0), self._last)
        self._last = overall
        if self._progress_sink is not None:
            self._progress_sink(stage, overall, message)

    def log(self, message: str, level: str = "info") -> None:
        if self._log_sink is not None:
            self._log_sink(level, message)

    def _set_span(self, lo: float, hi: float) -> None:
        self._span = (lo, hi)

    @contextlib.contextmanager
    def step(self, lo: float, hi: float) -> Iterator[None]:
        """Within the block, ``progress(f)`` covers [lo, hi] of the current step (a step
        that first loads, then reduces, gives each its share)."""
        a, b = self._span
        self._span = (a + (b - a) * lo, a + (b - a) * hi)
        try:
            yield
        finally:
            self._span = (a, b)

    # -- outputs ------------------------------------------------------------------
    def output_path(self, name: str, *, format: str, role: str = "result") -> Path:
        """A scratch path for output ``name``; the kit publishes it after success."""
        rel = Path(name)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"output name must be a relative path inside the job: {name!r}")
        path = self.out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self._outputs[rel.as_posix()] = OutputSpec(rel.as_posix(), path, format, role)
        return path

    @property
    def outputs(self) -> list[OutputSpec]:
        return list(self._outputs.values())


class Technique(Generic[P, D]):
    """Base of a technique: declare the class attributes, implement load and reduce."""

    name: ClassVar[str]
    version: ClassVar[str] = "0.1.0"
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Parameters: ClassVar[type[Parameters]]
    input_kinds: ClassVar[tuple[str, ...]] = ()
    output_formats: ClassVar[tuple[str, ...]] = ()
    wants_gpu: ClassVar[bool] = False
    shardable: ClassVar[bool] = False
    shard_unit: ClassVar[str] = ""
    # Bytes an input may have before the kit refuses it (None: no limit).
    max_input_bytes: ClassVar[int | None] = None

    def warm_up(self) -> None:
        """Called once when the service starts (import heavy libraries, probe the GPU).
        Health reports SERVING only after it returns."""

    def load(self, inputs: Inputs, params: P, ctx: Context) -> D:
        """Read the staged inputs into the data ``reduce`` works on.
        Raise ``InvalidInput`` naming the file and what is wrong."""
        raise NotImplementedError

    def reduce(self, data: D, params: P, ctx: Context) -> Mapping[str, Any]:
        """The science. Write outputs to ``ctx.output_path(...)``; return the summary
        (JSON-serialisable numbers, strings, lists and dicts)."""
        raise NotImplementedError

    # -- the shard contract (shardable techniques; see docs/techniques.md "Sharding") ------
    # A shardable technique declares ``Part`` (a dataclass: what one block of units
    # reduces to) and implements units / reduce_block / combine / write instead of
    # load / reduce. The kit (panreduce.kit.run) selects each shard's block, saves its
    # part (kit.parts), skips empty shards and runs the merge; an unsharded job is
    # ``write(combine([reduce_block(units)]))``, so one writer renders both.
    Part: ClassVar[type | None] = None

    def units(self, inputs: Inputs, params: P) -> Sequence[Any]:
        """What the job is split over (files, frames, rows, projections), in order:
        cheap, no science. A unit may carry its own global index if the science needs it."""
        raise NotImplementedError

    def reduce_block(self, block: Sequence[Any], inputs: Inputs, params: P, ctx: Context) -> Any:
        """The science of one contiguous, non-empty block of units -> a ``Part``."""
        raise NotImplementedError

    def combine(self, parts: Sequence[Any], params: P) -> Any:
        """The parts of consecutive blocks (in unit order) as one ``Part``; pure."""
        raise NotImplementedError

    def write(self, result: Any, params: P, ctx: Context) -> Mapping[str, Any]:
        """Write the outputs of a (combined) part; return the summary."""
        raise NotImplementedError

    # -- helpers the kit uses -------------------------------------------------------
    @classmethod
    def accepts(cls, path: Path) -> bool:
        """Whether a file found in a folder input is one this technique reads, judged by
        its content (e.g. :func:`is_hdf5`), not its name; the kit skips the others with a
        log line naming them. Files named one by one are always given to the technique."""
        return True

    @classmethod
    def parameters_schema(cls) -> dict[str, Any]:
        return cls.Parameters.model_json_schema()

    @classmethod
    def validate_parameters(cls, raw: Mapping[str, Any]) -> P:
        """Validate raw parameters once, at the edge; InvalidParameters names every field."""
        try:
            # a ClassVar cannot be typed with the class's P, so mypy sees the base Parameters
            return cls.Parameters.model_validate(dict(raw))  # type: ignore[return-value]
        except pydantic.ValidationError as exc:
            raise InvalidParameters(_violations(cls.Parameters, exc)) from None
        except (TypeError, ArithmeticError, RecursionError) as exc:
            # a technique's own validator choked on a value of the wrong kind (int([1]),
            # int(inf)): pydantic passes only ValueError on as a field's error, so name
            # the field here; the caller's mistake, never INTERNAL
            raise InvalidParameters([_choked_on(cls.Parameters, dict(raw), exc)]) from None


# A technique of any parameters and data: what the kit's runner and servicer handle.
AnyTechnique = Technique[Any, Any]


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: Path) -> bool:
    """The HDF5 signature at offset 0, 512, 1024, 2048, ... (a user block moves it), read
    without opening the file as HDF5: for :meth:`Technique.accepts`."""
    try:
        with open(path, "rb") as f:
            offset = 0
            while offset <= 1 << 20:
                f.seek(offset)
                head = f.read(len(HDF5_SIGNATURE))
                if head == HDF5_SIGNATURE:
                    return True
                if len(head) < len(HDF5_SIGNATURE):
                    return False
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def _choked_on(model: type[pydantic.BaseModel], raw: dict[str, Any], exc: BaseException) -> FieldViolation:
    """The field whose value made a validator raise ``exc`` (not a ValueError): found by
    validating each given field alone (only on this error path)."""
    why = f"a value of the wrong kind ({type(exc).__name__}: {clip(str(exc), 160)})"
    for key, value in raw.items():
        try:
            model.model_validate({key: value})
        except (TypeError, ArithmeticError, RecursionError):
            return FieldViolation(clip(str(key), 120), why)
        except Exception:  # its other errors belong to the full validation
            continue
    return FieldViolation("parameters", why)


def _violations(model: type[pydantic.BaseModel], exc: pydantic.ValidationError) -> list[FieldViolation]:
    out: list[FieldViolation] = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ())) or "parameters"
        fields = _fields_at(model, err.get("loc", ())[:-1])  # the (nested) model the field belongs to
        if err.get("type") == "extra_forbidden":
            allowed = ", ".join(sorted(fields))
            out.append(FieldViolation(loc, f"unknown parameter (allowed: {allowed})"))
            continue
        msg = err.get("msg", "invalid")
        last = str((err.get("loc") or ("",))[-1])
        if last in fields:
            msg += _allowed(fields[last])
        if "input" in err and err.get("type") != "missing":
            shown = json.dumps(err["input"], default=str)
            if len(shown) <= 80:
                msg += f"; got {shown}"
        out.append(FieldViolation(loc, msg))
    return out


def _fields_at(model: type[pydantic.BaseModel], path: tuple[int | str, ...]) -> dict[str, pydantic.fields.FieldInfo]:
    """The fields of the model nested at ``path`` (step models of a nested parameter model)."""
    for key in path:
        ann = model.model_fields[key].annotation if isinstance(key, str) and key in model.model_fields else None
        if not (isinstance(ann, type) and issubclass(ann, pydantic.BaseModel)):
            return {}
        model = ann
    return model.model_fields


def _allowed(info: pydantic.fields.FieldInfo) -> str:
    """' (allowed: 0 <= x <= 10)' from a field's constraints, or ''."""
    lo = hi = None
    lo_op = hi_op = ""
    for meta in info.metadata:
        for attr, op in (("ge", "<="), ("gt", "<")):
            if getattr(meta, attr, None) is not None:
                lo, lo_op = getattr(meta, attr), op
        for attr, op in (("le", "<="), ("lt", "<")):
            if getattr(meta, attr, None) is not None:
                hi, hi_op = getattr(meta, attr), op
    if lo is None and hi is None:
        return ""
    text = f"{lo} {lo_op} value" if lo is not None else "value"
    if hi is not None:
        text += f" {hi_op} {hi}"
    return f" (allowed: {text})"
