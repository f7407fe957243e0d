"""`panreduce validate`: run each installed technique's reference case through a live
deployment and compare its figures with recorded reference values.

The cases and their reference figures are in ``validate_references.json`` beside this
module, each figure with its tolerance and the source of its value. A case's inputs are
registered files (panreduce.datasets, the ExPaNDS data in ../shared/data); they are sent
as the local paths the registry finds, so the gateway and the technique's service must
see the data at the same path (the chart mounts it). A row is PASS, FAIL, or SKIP with
the reason (technique not installed, data missing); ERROR when the reduction failed.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from panreduce import datasets, errors
from panreduce.client import Client

REFERENCES = Path(__file__).with_name("validate_references.json")
MAX_CASES = 200
MAX_FIGURES = 50


@dataclass
class Row:
    technique: str
    case: str
    figure: str
    expected: float | None
    got: float | None
    tolerance: str
    status: str  # PASS, FAIL, SKIP, ERROR
    note: str = ""
    source: str = ""


def load_references(path: Path = REFERENCES) -> list[dict[str, Any]]:
    """The cases of a reference file, checked for shape (a bad file is InvalidRequest)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise errors.InvalidRequest(f"reference file {path}: {exc}") from None
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases or len(cases) > MAX_CASES:
        raise errors.InvalidRequest(f"reference file {path}: 'cases' must be a list of 1 to {MAX_CASES} cases")
    for case in cases:
        for key in ("technique", "case", "inputs", "figures"):
            if key not in case:
                raise errors.InvalidRequest(f"reference file {path}: case {case.get('case')!r} has no {key!r}")
        if not 0 < len(case["figures"]) <= MAX_FIGURES:
            raise errors.InvalidRequest(f"reference file {path}: case {case['case']!r}: 1 to {MAX_FIGURES} figures")
        for fig in case["figures"]:
            if not isinstance(fig.get("expected"), (int, float)) or not ("abs" in fig or "rel" in fig):
                raise errors.InvalidRequest(
                    f"reference file {path}: case {case['case']!r} figure "
                    f"{fig.get('name')!r} needs a number 'expected' and 'abs' or 'rel'"
                )
            if not fig.get("source"):
                raise errors.InvalidRequest(
                    f"reference file {path}: case {case['case']!r} figure {fig.get('name')!r} has no 'source'"
                )
    return cases


def within(expected: float, got: float, fig: Mapping[str, Any]) -> bool:
    if not math.isfinite(got):
        return False
    limit = float(fig.get("abs", 0.0)) + float(fig.get("rel", 0.0)) * abs(expected)
    return abs(got - expected) <= limit


def tolerance_text(fig: Mapping[str, Any]) -> str:
    parts = []
    if "abs" in fig:
        parts.append(f"±{fig['abs']:g}")
    if "rel" in fig:
        parts.append(f"±{100 * float(fig['rel']):g}%")
    return " + ".join(parts)


def from_summary(summary: Mapping[str, Any], path: Sequence[Any]) -> float:
    value: Any = summary
    for key in path:
        value = value[key]
    return float(value)


def curve_points(path: Path, column: str = "I") -> list[tuple[float, float]]:
    """The (Q, ``column``) points of a downloaded curve, sorted by Q: NXcanSAS HDF5 (``.h5``,
    ``.nxs``: the default SASdata's Q and I), ORSO text (``.ort``: its first two columns, Qz and R)
    or CSV (a Q column and ``column``; # comments skipped)."""
    if path.suffix in (".h5", ".nxs", ".hdf5"):
        import h5py  # only validate reads HDF5 here; keep it off the CLI's import path

        with h5py.File(path, "r") as f:
            entry = f[_default_child(f, "SASentry")]
            data = entry[_default_child(entry, "SASdata")]
            q, values = data["Q"][()], data[column][()]
        pts = list(zip(q.ravel().tolist(), values.ravel().tolist(), strict=True))
    else:
        text = path.read_text()
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if path.suffix == ".ort":
            pts = [(float(r[0]), float(r[1])) for r in (ln.split() for ln in lines)]
        else:
            reader = csv.reader(io.StringIO("\n".join(lines)))
            header = [h.strip() for h in next(reader)]
            qi = next(i for i, h in enumerate(header) if h.split("(")[0].strip().lower() == "q")
            ii = next(i for i, h in enumerate(header) if h.split("(")[0].strip() == column)
            pts = [(float(r[qi]), float(r[ii])) for r in reader if r]
    pts = sorted(p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1]))
    if not pts:
        raise errors.InvalidInput("curve", f"{path.name} has no finite points")
    return pts


def _default_child(group: Any, nx_class: str) -> str:
    """The @default child of an HDF5 group, else its first child of NeXus class ``nx_class``."""
    default = group.attrs.get("default")
    if isinstance(default, bytes):
        default = default.decode()
    if default and default in group:
        return str(default)
    for name, child in group.items():
        cls = child.attrs.get("canSAS_class", child.attrs.get("NX_class", b""))
        if (cls.decode() if isinstance(cls, bytes) else str(cls)) in (nx_class, "NX" + nx_class[3:].lower()):
            return str(name)
    raise errors.InvalidInput("curve", f"no {nx_class} group in {group.name}")


def curve_at(pts: Sequence[tuple[float, float]], q: float) -> float:
    """A curve's value at ``q``, linearly interpolated between its points."""
    for (q0, i0), (q1, i1) in itertools.pairwise(pts):
        if q0 <= q <= q1:
            return i0 + (i1 - i0) * (q - q0) / (q1 - q0) if q1 > q0 else i0
    raise errors.InvalidInput("curve", f"Q={q:g} is outside the curve ({pts[0][0]:g} to {pts[-1][0]:g})")


def guinier_rg(pts: Sequence[tuple[float, float]], q_max: float) -> float:
    """The radius of gyration (in the inverse of Q's unit) from a Guinier fit, ln I = ln I0 - (Q Rg)^2 / 3,
    over the points with 0 < Q <= ``q_max`` and I > 0 (unweighted least squares)."""
    use = [(q * q, math.log(i)) for q, i in pts if 0 < q <= q_max and i > 0]
    if len(use) < 3:
        raise errors.InvalidInput("curve", f"fewer than 3 positive points below Q={q_max:g} for a Guinier fit")
    n = len(use)
    mx, my = sum(x for x, _ in use) / n, sum(y for _, y in use) / n
    slope = sum((x - mx) * (y - my) for x, y in use) / sum((x - mx) ** 2 for x, _ in use)
    return math.sqrt(-3 * slope) if slope < 0 else math.nan


def _case_inputs(names: Sequence[str]) -> list[str]:
    """Registered files as local paths; a name ending in / is the folder of every registered file under it."""
    return [str(datasets.folder(n)) + "/" if n.endswith("/") else str(datasets.path(n)) for n in names]


def run(client: Client, cases: list[dict[str, Any]], *, log: Callable[[str], None] = lambda s: None) -> list[Row]:
    installed = {t.name for t in client.describe().techniques}
    rows: list[Row] = []
    for case in cases:
        technique, name = case["technique"], case["case"]

        def skip(reason: str, status: str = "SKIP", case: dict[str, Any] = case) -> None:
            for fig in case["figures"]:
                rows.append(
                    Row(
                        case["technique"],
                        case["case"],
                        fig["name"],
                        fig["expected"],
                        None,
                        tolerance_text(fig),
                        status,
                        reason,
                        fig["source"],
                    )
                )

        if technique not in installed:
            skip(f"technique {technique!r} is not installed on this deployment")
            continue
        try:
            inputs = _case_inputs(case["inputs"])
        except datasets.DatasetMissing as exc:
            skip(f"reference data missing: {errors.clip(str(exc), 300)}")
            continue
        except KeyError as exc:  # only registered files are read, never a path the file names
            skip(f"not a registered data set: {errors.clip(str(exc), 300)}")
            continue
        log(f"{technique}/{name}: reducing {len(inputs)} input(s)")
        try:
            result = client.reduce(technique, inputs, case.get("parameters") or {})
        except errors.PanReduceError as exc:
            skip(f"the reduction failed: {errors.clip(str(exc), 300)}", "ERROR")
            continue
        curves: dict[str, list[tuple[float, float]]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            for fig in case["figures"]:
                try:
                    got = _figure(client, result, fig, curves, Path(tmp))
                except (
                    StopIteration,
                    KeyError,
                    IndexError,
                    TypeError,
                    ValueError,
                    OSError,
                    errors.PanReduceError,
                ) as exc:
                    rows.append(
                        Row(
                            technique,
                            name,
                            fig["name"],
                            fig["expected"],
                            None,
                            tolerance_text(fig),
                            "ERROR",
                            f"figure not found in the result: {errors.clip(repr(exc), 200)}",
                            fig["source"],
                        )
                    )
                    continue
                ok = within(float(fig["expected"]), got, fig)
                rows.append(
                    Row(
                        technique,
                        name,
                        fig["name"],
                        float(fig["expected"]),
                        got if math.isfinite(got) else None,
                        tolerance_text(fig),
                        "PASS" if ok else "FAIL",
                        "" if math.isfinite(got) else f"got {got}",
                        fig["source"],
                    )
                )
    return rows


def _figure(
    client: Client, result: Any, fig: Mapping[str, Any], curves: dict[str, list[tuple[float, float]]], tmp: Path
) -> float:
    """One figure of a result: a summary value, or an output curve at a Q (``q``) or its Guinier radius
    (``guinier_q_max``)."""
    if "output" not in fig:
        return from_summary(result.summary, fig["summary"])
    key = f"{fig['output']}:{fig.get('column', 'I')}"
    if key not in curves:
        out = next(o for o in result.outputs if o.uri.rstrip("/").rsplit("/", 1)[-1] == fig["output"])
        local = tmp / f"{len(curves)}-{Path(fig['output']).name}"
        client.download(out.uri, local)
        curves[key] = curve_points(local, fig.get("column", "I"))
    if "guinier_q_max" in fig:
        return guinier_rg(curves[key], float(fig["guinier_q_max"]))
    return curve_at(curves[key], float(fig["q"]))


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.6g}"


def table(rows: list[Row]) -> str:
    head = ("technique", "case", "figure", "expected", "got", "tolerance", "pass")
    body = [
        (
            r.technique,
            r.case,
            r.figure,
            _num(r.expected),
            _num(r.got),
            r.tolerance,
            r.status + (f" ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in (head, *body)
    )


def markdown(rows: list[Row]) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    out = [
        "| technique | case | figure | expected | got | tolerance | pass | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = r.status + (f": {r.note}" if r.note else "")
        out.append(
            "| "
            + " | ".join(
                cell(x)
                for x in (r.technique, r.case, r.figure, _num(r.expected), _num(r.got), r.tolerance, status, r.source)
            )
            + " |"
        )
    counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "SKIP", "ERROR")}
    out.append("")
    out.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(out) + "\n"


def as_json(rows: list[Row]) -> str:
    return json.dumps(
        {"rows": [asdict(r) for r in rows], "passed": all(r.status in ("PASS", "SKIP") for r in rows)},
        indent=1,
        allow_nan=False,
    )
