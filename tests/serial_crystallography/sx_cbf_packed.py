"""A small CBF_PACKED / CBF_PACKED_V2 writer for the tests (the encoding side of the rules
``cbf.py`` decodes: the neighbour predictions, blocks of 2**c differences of one width,
bits least significant first), and an imgCIF wrapper with one binary section per array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTHS = {1: [0, 4, 5, 6, 7, 8, 16, 32], 2: [0, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 32]}
TYPES = {np.dtype(np.int32): "signed 32-bit integer", np.dtype(np.uint16): "unsigned 16-bit integer"}


def predictions(a: np.ndarray) -> np.ndarray:
    """The prediction of every element of ``a`` (third, second, fastest) from its
    neighbours (vectorised; the decoder computes the same one element at a time)."""
    v = a.astype(np.int64)
    pred = np.zeros_like(v)
    nz, ny, nx = v.shape
    for z in range(nz):
        pred[z, 0, 1:] = v[z, 0, :-1]
        if z > 0:
            pred[z, 0, 0] = v[z - 1, 0, 0]
        if ny == 1:
            continue
        up = v[z, :-1]
        if nx == 1:
            pred[z, 1:, 0] = up[:, 0]
            continue
        cur = [v[z, 1:, :-2], up[:, :-2], up[:, 1:-1], up[:, 2:]]  # for columns 1 … nx-2: l, ul, u, ur
        first = [up[:, 0], up[:, 1]]  # u, ur
        last = [v[z, 1:, -2], up[:, -1]]  # l, u
        if z == 0:
            pred[z, 1:, 1:-1] = (sum(cur) + 2) >> 2
            pred[z, 1:, 0] = (sum(first) + 1) >> 1
            pred[z, 1:, -1] = (sum(last) + 1) >> 1
        else:
            pu = v[z - 1, :-1]
            prev = [v[z - 1, 1:, 1:-1], pu[:, :-2], pu[:, 1:-1], pu[:, 2:]]
            pred[z, 1:, 1:-1] = (sum(cur) + sum(prev) + 4) >> 3
            pred[z, 1:, 0] = (sum(first) + pu[:, 0] + pu[:, 1] + 2) >> 2
            pred[z, 1:, -1] = (sum(last) + v[z - 1, 1:, -1] + pu[:, -1] + 2) >> 2
    return pred


def pack(a: np.ndarray, *, version: int = 1, rng: np.random.Generator | None = None) -> bytes:
    """The packed stream of ``a`` (without the 32-byte header): blocks of random sizes."""
    rng = rng or np.random.default_rng(0)
    diffs = (a.astype(np.int64) - predictions(a)).reshape(-1)
    widths = WIDTHS[version]
    hbits = 3 if version == 1 else 4
    max_code = 7 if version == 1 else 15
    bits: list[np.ndarray] = []
    p = 0
    while p < diffs.size:
        code = int(rng.integers(0, max_code + 1))
        block = diffs[p : p + (1 << code)]
        lo, hi = int(block.min()), int(block.max())
        w = next(
            x for x in widths if (x == 0 and lo == hi == 0) or (x > 0 and -(1 << (x - 1)) <= lo and hi < 1 << (x - 1))
        )
        head = code | (widths.index(w) << hbits)
        bits.append((head >> np.arange(2 * hbits)) & 1)
        vals = np.zeros(1 << code, np.int64)
        vals[: block.size] = block
        if w:
            bits.append(((vals[:, None] & ((1 << w) - 1)) >> np.arange(w)).reshape(-1) & 1)
        p += block.size
    flat = np.concatenate(bits).astype(np.uint8)
    return np.packbits(flat, bitorder="little").tobytes()


def section(a: np.ndarray, *, version: int = 1, binary_id: int = 1, stream: bytes | None = None, **override) -> bytes:
    """One MIME binary section of a 3-D array (headers can be overridden to lie)."""
    nz, ny, nx = a.shape
    body = stream if stream is not None else pack(a, version=version)
    data = (a.size).to_bytes(8, "little") + bytes(24) + body
    conv = "x-CBF_PACKED" if version == 1 else "x-CBF_PACKED_V2"
    head = {
        "X-Binary-Size": len(data),
        "X-Binary-ID": binary_id,
        "X-Binary-Element-Type": f'"{TYPES[a.dtype]}"',
        "X-Binary-Element-Byte-Order": "LITTLE_ENDIAN",
        "X-Binary-Number-of-Elements": a.size,
        "X-Binary-Size-Fastest-Dimension": nx,
        "X-Binary-Size-Second-Dimension": ny,
        "X-Binary-Size-Third-Dimension": nz,
        "X-Binary-Size-Padding": 16,
    }
    head.update(override)
    text = "--CIF-BINARY-FORMAT-SECTION--\r\nContent-Type: application/octet-stream;\r\n"
    text += f'     conversions="{conv}"\r\nContent-Transfer-Encoding: BINARY\r\n'
    text += "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    return text.encode() + b"\x0c\x1a\x04\xd5" + data + bytes(16) + b"\r\n--CIF-BINARY-FORMAT-SECTION----\r\n;\r\n"


def write_cbf(path: Path, sections: list[bytes], *, wavelength: float = 1.3776) -> Path:
    text = "###CBF: VERSION 1.5\r\ndata_test\r\n\r\n"
    text += f"_diffrn_radiation_wavelength.wavelength {wavelength}\r\n\r\n"
    text += "loop_\r\n_array_data.array_id\r\n_array_data.binary_id\r\n_array_data.data\r\n"
    out = text.encode()
    for i, s in enumerate(sections):
        out += f" ARRAY{i} {i + 1}\r\n;\r\n".encode() + s
    path.write_bytes(out)
    return path
