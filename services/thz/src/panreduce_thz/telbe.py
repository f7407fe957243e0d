"""Reader of a TELBE run folder as the facility writes it.

* one background file whose name contains ``_BG_`` (text; only its first row is used:
  the per-pixel dark row of the timing-tool camera);
* one sub-folder per delay-stage position, named with ``_<pos>mm``, of grey-scale TIFF
  images: every image row is one pulse (uint16, optionally +32768 offset-encoded);
* one big-endian float32 ADC file per position whose name contains ``Experiment`` and the
  same ``<pos>``: ``samples_per_pulse`` samples per pulse, pulses back to back;
* the date and time ``dd.mm.yyyy_HHMM_SS`` in the names.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy
from panreduce.errors import InvalidInput

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    import tifffile
else:
    tifffile = lazy.module("tifffile")

POSITION = re.compile(r"_(-?\d+(?:\.\d+)?)mm")
DATE = re.compile(r"(\d{2})\.(\d{2})\.(\d{4})_(\d{2})(\d{2})_(\d{2})")
TIFF_SUFFIXES = (".tif", ".tiff")
MAX_ROW_PIXELS = 65536
MAX_SAMPLES = 100_000


@dataclass(frozen=True)
class Position:
    """One delay-stage position: its images (sorted by name) and ADC file."""

    position_mm: float
    token: str  # the position as written in the folder name, e.g. "51.10"
    folder: str  # relative name of the image folder
    images: tuple[tuple[str, Path], ...]  # (relative name, local path)
    adc: tuple[str, Path]


@dataclass(frozen=True)
class RunLayout:
    background: tuple[str, Path]
    positions: tuple[Position, ...]  # sorted by stage position
    date: str | None  # ISO 8601 from the names, if present


def parse_date(name: str) -> str | None:
    m = DATE.search(name)
    if not m:
        return None
    dd, mm, yyyy, hh, mi, ss = (int(g) for g in m.groups())
    try:
        return datetime(yyyy, mm, dd, hh, mi, ss).isoformat()
    except ValueError:
        return None


def find_run(files: list[tuple[str, Path]], *, run_name: str = "") -> RunLayout:
    """The run layout from (relative name, local path) pairs of every file of the run."""
    backgrounds = [(n, p) for n, p in files if "_BG_" in PurePosixPath(n).name]
    if not backgrounds:
        raise InvalidInput(run_name or "run", "no background file (a name containing '_BG_')")
    if len(backgrounds) > 1:
        raise InvalidInput(
            backgrounds[1][0],
            f"more than one background file ({backgrounds[0][0]}, "
            f"{backgrounds[1][0]}): give one run folder per request",
        )
    folders: dict[str, list[tuple[str, Path]]] = {}
    adcs: list[tuple[str, Path]] = []
    for name, path in files:
        pure = PurePosixPath(name)
        if pure.suffix.lower() in TIFF_SUFFIXES and len(pure.parts) > 1:
            folders.setdefault(str(pure.parent), []).append((name, path))
        elif "Experiment" in pure.name:
            adcs.append((name, path))
    if not folders:
        raise InvalidInput(
            run_name or "run", "no position folders of timing-tool TIFF images (sub-folders named with '_<pos>mm')"
        )
    positions = []
    used: set[str] = set()
    for folder, images in folders.items():
        found = POSITION.findall(PurePosixPath(folder).name)
        if not found:
            raise InvalidInput(folder, "image folder without a stage position '_<pos>mm' in its name")
        token = found[-1]
        pattern = re.compile(rf"(?<![\d.]){re.escape(token)}(?!\d)")
        match = [a for a in adcs if pattern.search(PurePosixPath(a[0]).name)]
        if not match:
            raise InvalidInput(
                folder, f"position {token} mm has no ADC file (a name containing 'Experiment' and '{token}')"
            )
        if len(match) > 1:
            raise InvalidInput(
                folder, f"position {token} mm has {len(match)} ADC files: " + ", ".join(m[0] for m in match)
            )
        used.add(match[0][0])
        positions.append(Position(float(token), token, folder, tuple(sorted(images)), match[0]))
    orphans = [a[0] for a in adcs if a[0] not in used]
    if orphans:
        raise InvalidInput(orphans[0], "ADC file without a folder of timing-tool images for its position")
    positions.sort(key=lambda p: p.position_mm)
    for a, b in itertools.pairwise(positions):
        if a.position_mm == b.position_mm:
            raise InvalidInput(b.folder, f"stage position {b.token} mm appears twice ({a.folder})")
    names = [run_name, backgrounds[0][0], *[p.folder for p in positions]]
    date = next((d for d in map(parse_date, names) if d), None)
    return RunLayout(backgrounds[0], tuple(positions), date)


def read_background(name: str, path: Path) -> np.ndarray:
    """First row of the background text file (counts per pixel)."""
    try:
        with open(path, encoding="ascii", errors="strict") as fh:
            line = ""
            for line in fh:
                if line.strip() and not line.lstrip().startswith("#"):
                    break
        row = np.array(line.replace(",", " ").split(), dtype=np.float64)
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        raise InvalidInput(name, f"background row is not numeric text: {exc}") from None
    if row.size < 8 or row.size > MAX_ROW_PIXELS:
        raise InvalidInput(name, f"background row has {row.size} pixels (allowed 8..{MAX_ROW_PIXELS})")
    if not np.isfinite(row).all():
        raise InvalidInput(name, "background row holds NaN or infinite values")
    return row


def image_rows(name: str, path: Path, *, width: int) -> list[int]:
    """Pulses (rows) of every page of one TIFF file, reading only the headers."""
    try:
        with tifffile.TiffFile(path) as tif:
            shapes = [tuple(page.shape) for page in tif.pages]
            dtypes = {str(page.dtype) for page in tif.pages}
    except Exception as exc:  # tifffile raises several types for corrupt files
        raise InvalidInput(name, f"not a readable TIFF: {exc}") from None
    if not shapes:
        raise InvalidInput(name, "TIFF without images")
    if dtypes - {"uint16", "uint8"}:
        raise InvalidInput(name, f"timing-tool images must be 8/16-bit grey, got {sorted(dtypes)}")
    rows = []
    for shape in shapes:
        if len(shape) != 2:
            raise InvalidInput(name, f"timing-tool image must be 2-D grey (pulses × pixels), got shape {shape}")
        if shape[1] != width:
            raise InvalidInput(name, f"image rows have {shape[1]} pixels but the background row has {width}")
        rows.append(shape[0])
    return rows


def iter_pages(name: str, path: Path) -> Iterator[np.ndarray]:
    """The pages of one TIFF file, one at a time (pulses × pixels, raw uint16)."""
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                yield page.asarray()
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(name, f"TIFF image data unreadable: {exc}") from None


def open_adc(name: str, path: Path, *, samples_per_pulse: int) -> np.ndarray:
    """Memory map of the ADC file as pulses × samples (big-endian float32)."""
    size = path.stat().st_size
    stride = 4 * samples_per_pulse
    if size == 0 or size % stride:
        raise InvalidInput(
            name,
            f"ADC file of {size} bytes is not a whole number of pulses of "
            f"{samples_per_pulse} big-endian float32 samples ({stride} bytes each)",
        )
    return np.memmap(path, dtype=">f4", mode="r", shape=(size // stride, samples_per_pulse))
