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


@dataclass(frozen=True)
class PageSpec:
    """One TIFF page as its header describes it: ``rows`` pulses of ``width`` pixels of
    ``dtype`` (with the file's byte order); ``offset`` is the byte offset of its data when
    they are stored uncompressed in one piece (read straight into a buffer), else None
    (decoded by tifffile)."""

    index: int
    rows: int
    width: int
    dtype: np.dtype
    offset: int | None

    @property
    def nbytes(self) -> int:
        return self.rows * self.width * self.dtype.itemsize


def image_pages(name: str, path: Path, *, width: int) -> tuple[PageSpec, ...]:
    """The pages of one TIFF file (pulses and where their data lie), reading only the
    headers; every page must be 2-D 8/16-bit grey with rows of ``width`` pixels."""
    try:
        with tifffile.TiffFile(path) as tif:
            order = tif.byteorder
            pages = []
            for i, page in enumerate(tif.pages):
                shape, dtype = tuple(page.shape), page.dtype
                flat = (
                    page.is_memmappable
                    and getattr(page, "is_tiled", False) is False
                    and len(shape) == 2
                    and dtype is not None
                    and page.nbytes == shape[0] * shape[1] * dtype.itemsize
                )
                pages.append((i, shape, dtype, int(page.dataoffsets[0]) if flat else None))
    except Exception as exc:  # tifffile raises several types for corrupt files
        raise InvalidInput(name, f"not a readable TIFF: {exc}") from None
    if not pages:
        raise InvalidInput(name, "TIFF without images")
    dtypes = {str(d) for _, _, d, _ in pages}
    if dtypes - {"uint16", "uint8"}:
        raise InvalidInput(name, f"timing-tool images must be 8/16-bit grey, got {sorted(dtypes)}")
    out = []
    for i, shape, dtype, offset in pages:
        if len(shape) != 2:
            raise InvalidInput(name, f"timing-tool image must be 2-D grey (pulses × pixels), got shape {shape}")
        if shape[1] != width:
            raise InvalidInput(name, f"image rows have {shape[1]} pixels but the background row has {width}")
        out.append(PageSpec(i, shape[0], shape[1], np.dtype(dtype).newbyteorder(order), offset))
    return tuple(out)


def image_rows(name: str, path: Path, *, width: int) -> list[int]:
    """Pulses (rows) of every page of one TIFF file, reading only the headers."""
    return [p.rows for p in image_pages(name, path, width=width)]


class PageBuffers:
    """A ring of ``size`` reusable byte buffers for pages read straight from their files
    (no allocation and first-touch page faults per page). A buffer is handed out again
    after ``size - 1`` further pages: the caller keeps fewer pages than that in use."""

    def __init__(self, size: int = 3) -> None:
        self._bufs: list[np.ndarray] = [np.empty(0, np.uint8) for _ in range(size)]
        self._next = 0

    def take(self, nbytes: int) -> np.ndarray:
        i = self._next
        self._next = (i + 1) % len(self._bufs)
        if self._bufs[i].size < nbytes:
            self._bufs[i] = np.empty(nbytes, np.uint8)
        return self._bufs[i][:nbytes]


READ_BYTES = 4 << 20  # rows read at a time from an uncompressed page (a block that stays in the cache)


def iter_pages(
    name: str, path: Path, specs: tuple[PageSpec, ...] | None = None, buffers: PageBuffers | None = None
) -> Iterator[np.ndarray]:
    """The pages of one TIFF file in order, one block of rows at a time (pulses × pixels,
    raw, native byte order). With the ``specs`` from ``image_pages`` and ``buffers``,
    pages stored in one uncompressed piece are read directly, ~``READ_BYTES`` at a time,
    into the next buffer (valid until the ring comes round: see ``PageBuffers``); others
    are decoded whole by tifffile."""
    if specs is not None and buffers is not None and all(s.offset is not None for s in specs):
        try:
            with open(path, "rb", buffering=0) as fh:
                for s in specs:
                    row_bytes = s.width * s.dtype.itemsize
                    step = max(1, READ_BYTES // max(row_bytes, 1))
                    fh.seek(s.offset or 0)
                    for r0 in range(0, s.rows, step):
                        rows = min(step, s.rows - r0)
                        buf = buffers.take(rows * row_bytes)
                        got = fh.readinto(memoryview(buf))
                        if got != buf.size:
                            raise InvalidInput(
                                name,
                                f"TIFF image data unreadable: page {s.index} ends after "
                                f"{r0 * row_bytes + (got or 0)} of its {s.nbytes} bytes",
                            )
                        page = buf.view(s.dtype).reshape(rows, s.width)
                        if not page.dtype.isnative:
                            page = page.byteswap(inplace=True).view(s.dtype.newbyteorder("="))
                        yield page
        except OSError as exc:
            raise InvalidInput(name, f"TIFF image data unreadable: {exc}") from None
        return
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                yield page.asarray()
    except InvalidInput:
        raise
    except Exception as exc:
        raise InvalidInput(name, f"TIFF image data unreadable: {exc}") from None


def open_adc(name: str, path: Path, *, samples_per_pulse: int) -> np.ndarray:
    """Memory map of the ADC file as pulses × samples (big-endian float32; an ndarray
    viewing the map, which stays open while the array lives)."""
    size = path.stat().st_size
    stride = 4 * samples_per_pulse
    if size == 0 or size % stride:
        raise InvalidInput(
            name,
            f"ADC file of {size} bytes is not a whole number of pulses of "
            f"{samples_per_pulse} big-endian float32 samples ({stride} bytes each)",
        )
    # a plain ndarray view of the map: slicing an np.memmap runs its __array_finalize__ (costly per slice)
    return np.memmap(path, dtype=">f4", mode="r", shape=(size // stride, samples_per_pulse)).view(np.ndarray)
