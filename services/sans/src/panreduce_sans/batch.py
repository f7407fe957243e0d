"""The ISIS SANS batch file (Mantid ``SANS batch`` CSV) and the RKH text format.

Batch rows are ``key,value`` pairs on one line (``sample_sans,75965-add,sample_trans,75876,...``).
A first line starting ``MANTID_BATCH_FILE`` is a header of metadata. Lines starting ``#`` are
comments. Unknown keys and malformed lines are reported with their line number.

RKH files (``LoadRKH``): a title line, a blank line, a line of integers, a line of zeros, a
Fortran format line such as ``3 (F12.5,2E16.6)``, then rows ``x  y  sigma_y``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["BatchError", "BatchRow", "RKHData", "RunRef", "parse_batch", "parse_rkh", "parse_run_ref"]

KNOWN_KEYS = (
    "sample_sans",
    "sample_trans",
    "sample_direct_beam",
    "can_sans",
    "can_trans",
    "can_direct_beam",
    "output_as",
    "user_file",
    "sample_thickness",
    "sample_height",
    "sample_width",
    "background_sans",
    "background_trans",
    "background_direct_beam",
)
FLOAT_KEYS = ("sample_thickness", "sample_height", "sample_width")


class BatchError(ValueError):
    """A batch or RKH file that cannot be used; the message names the line."""


@dataclass(frozen=True)
class RunRef:
    """A run named in a batch file: ``75884``, ``LOQ75884`` or a summed ``75965-add``."""

    text: str
    number: int
    added: bool

    @property
    def label(self) -> str:
        return f"{self.number}-add" if self.added else str(self.number)


_RUN = re.compile(r"^(?:[A-Za-z]+)?0*(\d+)(-add)?(?:\.nxs)?$", re.IGNORECASE)


def parse_run_ref(text: str) -> RunRef:
    m = _RUN.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a run number (e.g. 75884, LOQ75884 or 75965-add)")
    return RunRef(text.strip(), int(m.group(1)), bool(m.group(2)))


@dataclass(frozen=True)
class BatchRow:
    line: int
    output_as: str
    sample_sans: RunRef
    sample_trans: RunRef | None = None
    sample_direct_beam: RunRef | None = None
    can_sans: RunRef | None = None
    can_trans: RunRef | None = None
    can_direct_beam: RunRef | None = None
    user_file: str | None = None
    sample_thickness: float | None = None  # mm
    sample_height: float | None = None  # mm
    sample_width: float | None = None  # mm
    extra: dict[str, str] = field(default_factory=dict)


def parse_batch(text: str) -> tuple[list[BatchRow], dict[str, str]]:
    """Rows and header metadata of a batch file; raises :class:`BatchError` naming the line."""
    rows: list[BatchRow] = []
    header: dict[str, str] = {}
    problems: list[str] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        cells = [c.strip() for c in line.split(",")]
        if cells[0].upper() == "MANTID_BATCH_FILE":
            it = iter(cells[1:])
            header.update({k: v for k, v in zip(it, it, strict=False) if k})
            continue
        while cells and cells[-1] == "":
            cells.pop()
        if len(cells) % 2:
            problems.append(f"line {n}: expected key,value pairs, got an odd number of cells")
            continue
        values: dict[str, str] = {}
        for key, value in zip(cells[::2], cells[1::2], strict=True):
            k = key.lower()
            if k not in KNOWN_KEYS:
                problems.append(f"line {n}: unknown key {key!r} (known: {', '.join(KNOWN_KEYS)})")
                continue
            if value:
                values[k] = value
        if "sample_sans" not in values:
            problems.append(f"line {n}: no sample_sans run")
            continue
        try:
            refs = {
                k: parse_run_ref(values[k])
                for k in (
                    "sample_sans",
                    "sample_trans",
                    "sample_direct_beam",
                    "can_sans",
                    "can_trans",
                    "can_direct_beam",
                )
                if k in values
            }
            floats = {k: float(values[k]) for k in FLOAT_KEYS if k in values}
        except ValueError as exc:
            problems.append(f"line {n}: {exc}")
            continue
        for k in ("background_sans", "background_trans", "background_direct_beam"):
            if k in values:
                problems.append(f"line {n}: {k} (background subtraction) is not implemented")
        if ("sample_trans" in refs) != ("sample_direct_beam" in refs):
            problems.append(f"line {n}: sample_trans and sample_direct_beam go together")
        if ("can_trans" in refs) != ("can_direct_beam" in refs):
            problems.append(f"line {n}: can_trans and can_direct_beam go together")
        output = values.get("output_as") or refs["sample_sans"].label
        if not re.fullmatch(r"[A-Za-z0-9_.+-]+", output):
            problems.append(f"line {n}: output_as {output!r} must be a plain file name")
            continue
        rows.append(BatchRow(line=n, output_as=output, user_file=values.get("user_file"), **refs, **floats))
    names = [r.output_as for r in rows]
    for name in {x for x in names if names.count(x) > 1}:
        problems.append(f"output_as {name!r} is used by more than one row")
    if problems:
        raise BatchError("; ".join(problems))
    if not rows:
        raise BatchError("no batch rows (expected lines like sample_sans,75884,...,output_as,NAME)")
    return rows, header


@dataclass(frozen=True)
class RKHData:
    x: np.ndarray
    y: np.ndarray
    e: np.ndarray
    title: str


def parse_rkh(text: str) -> RKHData:
    """Read a one-dimensional RKH file (x, y, sigma_y columns after the 5-line header)."""
    lines = text.splitlines()
    if len(lines) < 6:
        raise BatchError("an RKH file needs a 5-line header and data rows")
    rows = []
    for n, raw in enumerate(lines[5:], start=6):
        if not raw.strip():
            continue
        parts = raw.split()
        if len(parts) < 2:
            raise BatchError(f"line {n}: expected 'x y [sigma]'")
        try:
            values = [float(p) for p in parts[:3]]
        except ValueError:
            raise BatchError(f"line {n}: not numbers: {raw.strip()!r}") from None
        rows.append(values + [0.0] * (3 - len(values)))
    if not rows:
        raise BatchError("no data rows")
    arr = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise BatchError("holds NaN or infinite values")
    return RKHData(arr[:, 0], arr[:, 1], arr[:, 2], lines[0].strip())
