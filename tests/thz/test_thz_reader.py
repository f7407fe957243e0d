"""TIFF pages read straight into reused buffers (the fast path) give tifffile's pixels:
either byte order, several pages, pages read in blocks of rows, compressed pages by
tifffile; a page whose data are cut short is refused naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from panreduce.errors import InvalidInput
from panreduce_thz import telbe


def _read(path, width, **kw):
    specs = telbe.image_pages(path.name, path, width=width)
    return specs, [p.copy() for p in telbe.iter_pages(path.name, path, specs, telbe.PageBuffers(3), **kw)]


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_direct_pages_equal_tifffile(tmp_path, byteorder, monkeypatch):
    rng = np.random.default_rng(3)
    pages = [rng.integers(0, 65535, (n, 40), dtype=np.uint16) for n in (37, 5)]
    path = tmp_path / "img.tif"
    with tifffile.TiffWriter(path, byteorder=byteorder) as tw:
        for p in pages:
            tw.write(p, contiguous=False)
    monkeypatch.setattr(telbe, "READ_BYTES", 10 * 40 * 2)  # blocks of 10 rows
    specs, got = _read(path, 40)
    assert [s.rows for s in specs] == [37, 5] and all(s.offset is not None for s in specs)
    assert [g.shape[0] for g in got] == [10, 10, 10, 7, 5]
    assert all(g.dtype == np.uint16 and g.dtype.isnative for g in got)
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate(pages))


def test_ring_buffers_are_reused_after_a_round():
    ring = telbe.PageBuffers(3)
    a, b, c, d = (ring.take(100) for _ in range(4))
    assert not np.shares_memory(a, b) and not np.shares_memory(b, c) and not np.shares_memory(a, c)
    assert np.shares_memory(a, d)


def test_compressed_pages_are_decoded_by_tifffile(tmp_path):
    img = np.arange(30 * 16, dtype=np.uint16).reshape(30, 16)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, img, compression="zlib")
    specs, got = _read(path, 16)
    assert specs[0].offset is None
    np.testing.assert_array_equal(np.concatenate(got), img)


def test_page_data_cut_short_names_the_file(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.ones((200, 64), np.uint16))
    specs = telbe.image_pages(path.name, path, width=64)
    with open(path, "r+b") as fh:
        fh.truncate(specs[0].offset + 1000)
    with pytest.raises(InvalidInput, match=r"cut\.tif.*unreadable"):
        list(telbe.iter_pages(path.name, path, specs, telbe.PageBuffers(3)))
