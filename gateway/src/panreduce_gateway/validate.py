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


def curve_at(text: str, q: float, column: str = "I") -> float:
    """A CSV curve (a Q column and ``column``; # comments skipped) at ``q``, linearly interpolated."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = [h.strip() for h in next(reader)]
    qi = next(i for i, h in enumerate(header) if h.split("(")[0].strip().lower() == "q")
    ii = next(i for i, h in enumerate(header) if h.split("(")[0].strip() == column)
    pts = sorted((float(r[qi]), float(r[ii])) for r in reader if r)
    for (q0, i0), (q1, i1) in itertools.pairwise(pts):
        if q0 <= q <= q1:
            return i0 + (i1 - i0) * (q - q0) / (q1 - q0) if q1 > q0 else i0
    raise errors.InvalidInput("curve", f"Q={q:g} is outside the curve ({pts[0][0]:g} to {pts[-1][0]:g})")


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
            inputs = [str(datasets.path(n)) for n in case["inputs"]]
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
        downloads: dict[str, str] = {}
        for fig in case["figures"]:
            try:
                if "output" in fig:
                    if fig["output"] not in downloads:
                        out = next(o for o in result.outputs if o.uri.rstrip("/").rsplit("/", 1)[-1] == fig["output"])
                        with tempfile.TemporaryDirectory() as tmp:
                            client.download(out.uri, Path(tmp) / "f")
                            downloads[fig["output"]] = (Path(tmp) / "f").read_text()
                    got = curve_at(downloads[fig["output"]], float(fig["q"]), fig.get("column", "I"))
                else:
                    got = from_summary(result.summary, fig["summary"])
            except (StopIteration, KeyError, IndexError, TypeError, ValueError, errors.PanReduceError) as exc:
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
