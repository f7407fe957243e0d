"""CBF images compressed with CBF_PACKED / CBF_PACKED_V2 (what cctbx.xfel wrote for the
LCLS CSPAD and Rayonix hits; fabio reads byte-offset CBFs only).

The format (CBF specification, "CBF_PACKED and CBF_PACKED_V2", after J. P. Abrahams'
CCP4 ``pack_c`` compression): each binary section starts with the 4 marker bytes
``0C 1A 04 D5``, then four little-endian 64-bit words (number of elements, minimum,
maximum, reserved) and the packed stream. The stream is read bit by bit from the least
significant bit of each byte; it is a sequence of blocks, each a header — V1: 3 bits
``c`` (2**c values, 1 … 128) and 3 bits indexing the bit widths {0, 4, 5, 6, 7, 8, 16, 32};
V2: 4 + 4 bits (2**c values, 1 … 32 768; widths {0, 4, 5, …, 16, 32}) — and then that many
two's-complement differences of that width. A value is its difference plus a prediction
from its already decoded neighbours in the section ``(second dimension, fastest)``
plane: the first row of a plane uses the value to the left (its first value the first
value of the previous plane, the very first one 0); later rows use the rounded mean
``(l + ul + u + ur + 2) >> 2`` of left, up-left, up and up-right, at the first column
``(u + ur + 1) >> 1`` and at the last ``(l + u + 1) >> 1``; in the later rows of a later
plane the same neighbours of the previous plane join them (its pixel at the same place
standing for "left"): ``(… + 4) >> 3``, and ``>> 2`` at the edge columns. Every rule here
was checked on the data sets' CBFs (the CSPAD's 8-plane sections, the Rayonix's single
plane) against their HDF5 copies, pixel for pixel. Flags (``uncorrelated_sections``,
``flat``) are not read: such files are not among the data sets.

Several binary sections (the CSPAD's 4 quadrants, each ``(8, 185, 388)``) are laid side by
side along the fast axis, each as ``(third·second, fastest)`` — the Cheetah/CXI raw CSPAD
slab ``(1480, 1552)``, which is how the data sets' CXI copies are laid out.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from panreduce import constants, errors
from panreduce.kit.readers import memory_ceiling

__all__ = ["CbfArray", "CbfError", "CbfImage", "is_packed_cbf", "open_cbf", "read_cbf", "unpack"]

MARKER = b"\x0c\x1a\x04\xd5"
MAX_HEADER_BYTES = 16 << 20  # text before a binary section
MAX_SECTIONS = 64
BITS_V1 = np.array([0, 4, 5, 6, 7, 8, 16, 32], np.int64)
BITS_V2 = np.array([0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 32, -1], np.int64)  # 15: not defined here
_TYPES = {
    "signed 8-bit integer": np.int8,
    "unsigned 8-bit integer": np.uint8,
    "signed 16-bit integer": np.int16,
    "unsigned 16-bit integer": np.uint16,
    "signed 32-bit integer": np.int32,
    "unsigned 32-bit integer": np.uint32,
}
_STATUS = {
    1: "the packed stream ends before all its elements",
    2: "a block header names a bit width CBF_PACKED_V2 does not define",
}


class CbfError(ValueError):
    """A CBF this reader cannot decode (reason in the message)."""


@dataclass(frozen=True)
class CbfArray:
    offset: int  # of the first byte after the 4 marker bytes
    size: int  # X-Binary-Size (the packed stream's 32-byte header included)
    version: int  # 1 or 2
    dtype: np.dtype
    dims: tuple[int, int, int]  # (third, second, fastest)


@dataclass(frozen=True)
class CbfImage:
    path: Path
    arrays: tuple[CbfArray, ...]
    shape: tuple[int, int]  # the assembled frame (ss, fs)
    dtype: np.dtype
    wavelength_angstrom: float | None


def is_packed_cbf(path: Path) -> bool:
    """True when the first binary section of ``path`` is CBF_PACKED or CBF_PACKED_V2."""
    head = b""
    with open(path, "rb") as f:  # the text up to the first binary marker, 1 MiB at a time
        while len(head) < MAX_HEADER_BYTES:
            more = f.read(1 << 20)
            head += more
            at = head.find(MARKER)
            if at >= 0:
                head = head[:at]
                break
            if not more:
                break
    m = re.search(rb'conversions\s*=\s*"?x-CBF_([A-Z0-9_]+)', head)
    return m is not None and m.group(1).startswith(b"PACKED")


def _mime(block: bytes, key: str) -> str | None:
    m = re.search(rb"(?im)(?:^|;)\s*" + re.escape(key.encode()) + rb"\s*[:=]\s*([^;\r\n]+)", block)
    return m.group(1).decode("latin-1").strip().strip('"') if m else None


def _int(block: bytes, key: str, name: str, default: int | None = None) -> int:
    v = _mime(block, key)
    if v is None:
        if default is not None:
            return default
        raise CbfError(f"{name}: a binary section without {key}")
    if not re.fullmatch(r"\d{1,19}", v):
        raise CbfError(f"{name}: {key} {v[:40]!r} is not a non-negative integer")
    return int(v)


def open_cbf(path: Path, name: str | None = None, *, max_bytes: int | None = None) -> CbfImage:
    """The layout of a packed CBF from its headers only (no pixel is decoded). Raises
    :class:`CbfError` for a malformed file and ``InputTooLarge`` when the declared frame
    is over the memory ceiling — before anything is allocated."""
    name = name or path.name
    limit = memory_ceiling() if max_bytes is None else max_bytes
    arrays: list[CbfArray] = []
    wavelength = None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        start = 0
        while len(arrays) <= MAX_SECTIONS:
            at = mm.find(MARKER, start)
            if at < 0:
                break
            lo = max(start, at - MAX_HEADER_BYTES)
            text = mm[lo:at]
            if wavelength is None:
                w = re.search(rb"_diffrn_radiation_wavelength\.wavelength\s+([0-9.eE+-]+)", text) or re.search(
                    rb"#\s*Wavelength\s+([0-9.eE+-]+)", text
                )
                if w:
                    try:
                        wavelength = float(w.group(1))
                    except ValueError:
                        wavelength = None
            sec = text.rfind(b"--CIF-BINARY-FORMAT-SECTION--")
            if sec < 0:
                raise CbfError(f"{name}: binary data at byte {at} outside a MIME section")
            block = text[sec:]
            conv = _mime(block, "conversions") or ""
            if conv.upper() not in ("X-CBF_PACKED", "X-CBF_PACKED_V2"):
                raise CbfError(f"{name}: section {len(arrays) + 1} is {conv or 'uncompressed'!r}, not CBF_PACKED(_V2)")
            etype = (_mime(block, "X-Binary-Element-Type") or "").lower()
            if etype not in _TYPES:
                raise CbfError(f"{name}: element type {etype[:40]!r} is not an integer type this reader knows")
            size = _int(block, "X-Binary-Size", name)
            n = _int(block, "X-Binary-Number-of-Elements", name)
            fast = _int(block, "X-Binary-Size-Fastest-Dimension", name)
            second = _int(block, "X-Binary-Size-Second-Dimension", name, default=1)
            third = _int(block, "X-Binary-Size-Third-Dimension", name, default=1)
            if 0 in (fast, second, third) or fast * second * third != n:
                raise CbfError(f"{name}: dimensions {third} x {second} x {fast} do not make {n} elements")
            nbytes = n * np.dtype(_TYPES[etype]).itemsize
            if nbytes > limit:
                raise errors.InputTooLarge(f"{name}: binary section {len(arrays) + 1} ({n} elements)", nbytes, limit)
            data = at + len(MARKER)
            if size < 32 or data + size > len(mm):
                raise CbfError(
                    f"{name}: section {len(arrays) + 1} declares {size} bytes; the file has {len(mm) - data}"
                )
            declared = int.from_bytes(mm[data : data + 8], "little")
            if declared != n:
                raise CbfError(f"{name}: the packed stream holds {declared} elements, the header says {n}")
            version = 2 if conv.upper().endswith("V2") else 1
            arrays.append(CbfArray(data, size, version, np.dtype(_TYPES[etype]), (third, second, fast)))
            start = data + size
    if not arrays:
        raise CbfError(f"{name}: no binary section")
    if len(arrays) > MAX_SECTIONS:
        raise CbfError(f"{name}: more than {MAX_SECTIONS} binary sections")
    rows = {a.dims[0] * a.dims[1] for a in arrays}
    if len(rows) != 1:
        raise CbfError(f"{name}: binary sections with different numbers of rows cannot be laid side by side")
    total = sum(int(np.prod(a.dims)) for a in arrays) * max(a.dtype.itemsize for a in arrays)
    if total > limit:
        raise errors.InputTooLarge(f"{name}: {len(arrays)} binary sections", total, limit)
    shape = (rows.pop(), sum(a.dims[2] for a in arrays))
    dtype = np.result_type(*[a.dtype for a in arrays])
    return CbfImage(path, tuple(arrays), shape, np.dtype(dtype), wavelength)


def photon_energy_ev(img: CbfImage) -> float | None:
    w = img.wavelength_angstrom
    return constants.H_C_EV_ANGSTROM / w if w is not None and w > 0 else None


def unpack(stream: np.ndarray, dims: tuple[int, int, int], *, version: int = 1) -> np.ndarray:
    """Decode a packed stream (the bytes after the 32-byte header) into an int64 array
    of ``dims`` (third, second, fastest). Raises :class:`CbfError` when the stream is
    short or names an undefined width."""
    third, second, fast = dims
    n = third * second * fast
    out = np.empty(n, np.int64)
    widths = BITS_V1 if version == 1 else BITS_V2
    from panreduce_serial_crystallography.cbf_kernels import unpack_stream  # numba: loaded on first use

    status = unpack_stream(
        np.ascontiguousarray(stream, np.uint8), n, fast, second * fast, widths, 6 if version == 1 else 8, out
    )
    if status:
        raise CbfError(_STATUS[status])
    return out.reshape(dims)


def read_cbf(img: CbfImage, name: str | None = None) -> np.ndarray:
    """The frame ``(ss, fs)`` of ``img`` in its element type (sections side by side)."""
    name = name or img.path.name
    out = np.empty(img.shape, img.dtype)
    col = 0
    with open(img.path, "rb") as f:
        for i, a in enumerate(img.arrays):
            f.seek(a.offset + 32)
            stream = np.frombuffer(f.read(a.size - 32), np.uint8)
            try:
                vals = unpack(stream, a.dims, version=a.version)
            except CbfError as exc:
                raise CbfError(f"{name}: section {i + 1}: {exc}") from None
            info = np.iinfo(a.dtype)
            if vals.size and (vals.min() < info.min or vals.max() > info.max):
                raise CbfError(f"{name}: section {i + 1} decodes to values outside {a.dtype} (corrupt stream)")
            out[:, col : col + a.dims[2]] = vals.reshape(-1, a.dims[2])
            col += a.dims[2]
    return out
