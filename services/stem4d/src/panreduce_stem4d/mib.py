"""Quantum Detectors Merlin (Medipix3) ``.mib`` frames and their ``.hdr`` acquisition header.

A ``.mib`` file is a run of frames, each a small ASCII header (384 bytes for one chip,
768 for a quad) followed by big-endian pixels: ``U08`` (counter depth 1 and 6), ``U16``
(12), ``U32`` (24). Bit-packed ``R64`` ("RAW") frames are refused. A 2x2 quad frame is
stored assembled as one 512 x 512 image; ROI mode frames are narrower rows (the header
gives width and height).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_DTYPES = {"U08": ">u1", "U16": ">u2", "U32": ">u4"}


class MibFormatError(ValueError):
    """The bytes are not Merlin frames this reader understands."""


@dataclass(frozen=True)
class MibHeader:
    """The fields of one frame header that the reader needs."""

    header_bytes: int
    chips: int
    width: int  # pixels per row (detector x)
    height: int  # rows (detector y)
    pixel_type: str  # "U08", "U16", "U32"
    layout: str  # "1x1", "2x2", "Nx1"
    counter_depth: int
    exposure_s: float
    timestamp: str
    thresholds_kev: tuple[float, ...] = field(default=())

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_DTYPES[self.pixel_type])

    @property
    def frame_bytes(self) -> int:
        return self.header_bytes + self.width * self.height * self.dtype.itemsize


def parse_header(raw: bytes) -> MibHeader:
    """Parse the ASCII header at the start of ``raw`` (at least the header's bytes)."""
    text = raw[:1024].decode("ascii", errors="replace")
    fields = text.split(",")
    if len(fields) < 12 or fields[0] != "MQ1":
        raise MibFormatError("not a Merlin frame (the header does not start with 'MQ1,')")
    try:
        header_bytes = int(fields[2])
        chips = int(fields[3])
        width = int(fields[4])
        height = int(fields[5])
    except ValueError:
        raise MibFormatError("the frame header has no valid size fields") from None
    pixel_type = fields[6].strip()
    if pixel_type.startswith("R"):
        raise MibFormatError(
            f"bit-packed RAW frames ({pixel_type}) are not supported; record with the counter depth's native pixel type"
        )
    if pixel_type not in _DTYPES:
        raise MibFormatError(f"unknown pixel type {pixel_type!r}")
    if not (0 < width <= 4096 and 0 < height <= 4096 and 0 < header_bytes <= 4096):
        raise MibFormatError(f"implausible frame size {width} x {height} / header {header_bytes} B")
    depth = {"U08": 6, "U16": 12, "U32": 24}[pixel_type]
    if "MQ1A" in fields:  # extended header: timestamp, exposure in ns, counter depth
        i = fields.index("MQ1A")
        try:
            depth = int(fields[i + 3])
        except (IndexError, ValueError):
            pass
    try:
        exposure = float(fields[10])
        thresholds = tuple(float(x) for x in fields[14:22])
    except ValueError:
        exposure, thresholds = math.nan, ()
    return MibHeader(
        header_bytes,
        chips,
        width,
        height,
        pixel_type,
        fields[7].strip(),
        depth,
        exposure,
        fields[9].strip(),
        thresholds,
    )


def parse_hdr(text: str) -> dict[str, str]:
    """The acquisition ``.hdr`` text as a mapping of its field names (up to the first '(' or ':')."""
    out: dict[str, str] = {}
    for line in text.replace("\x00", "").splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key = re.sub(r"\s*\(.*$", "", key).strip()
        if key:
            out[key] = value.strip()
    return out


def frames_per_trigger(hdr: dict[str, str]) -> int | None:
    value = hdr.get("Frames per Trigger")
    try:
        return int(value) if value else None
    except ValueError:
        return None


def open_frames(path: Path) -> tuple[MibHeader, np.ndarray]:
    """Map the frames of a ``.mib`` file: (header of the first frame, array (n, height, width))
    of big-endian pixels backed by the file (nothing read until indexed)."""
    with open(path, "rb") as fh:
        first = fh.read(1024)
    head = parse_header(first)
    size = path.stat().st_size
    n, rest = divmod(size, head.frame_bytes)
    if n == 0:
        raise MibFormatError(f"file of {size} B holds no complete {head.frame_bytes} B frame")
    if rest:
        raise MibFormatError(f"truncated: {size} B is not a whole number of {head.frame_bytes} B frames")
    record = np.dtype([("header", f"S{head.header_bytes}"), ("pixels", head.dtype, (head.height, head.width))])
    mm = np.memmap(path, dtype=record, mode="r", shape=(n,))
    return head, mm["pixels"]


def check_headers(path: Path, head: MibHeader, n: int) -> None:
    """Every frame must carry the same header size and shape as the first (a spliced file is refused)."""
    with open(path, "rb") as fh:
        for i in sorted({0, n // 2, n - 1}):
            fh.seek(i * head.frame_bytes)
            h = parse_header(fh.read(head.header_bytes))
            if (h.width, h.height, h.pixel_type, h.header_bytes) != (
                head.width,
                head.height,
                head.pixel_type,
                head.header_bytes,
            ):
                raise MibFormatError(f"frame {i} has a different header than frame 0")
