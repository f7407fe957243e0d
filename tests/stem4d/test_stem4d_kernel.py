"""The compiled one-pass kernel (numba) against the numpy reference on random uint16 frames:
BF/ADF/HAADF sums exact, CoM to 1e-9 px, totals and patterns exact, one thread or several;
overlapping user masks fall back to the dense product and still agree."""

from __future__ import annotations

import numpy as np
import pytest

from panreduce_stem4d.detectors import Geometry, MaskSpec
from panreduce_stem4d.stream import Accumulator

SHAPE = (6, 7, 48, 40)  # scan y, scan x, detector y, detector x


def _detectors(shape):
    geo = Geometry((shape[0] / 2 - 0.3, shape[1] / 2 + 0.4), 1.0, np.array([[1.02, 0.01], [0.0, 0.98]]))
    masks = {
        "bf": MaskSpec("bf", 0, 6).render(geo, shape),
        "adf": MaskSpec("adf", 8, 14).render(geo, shape),
        "haadf": MaskSpec("haadf", 14, 22).render(geo, shape),
    }
    return masks, MaskSpec("com", 0, 10).render(geo, shape)


def _reference(frames, masks, com):
    """Exact numpy (int64) virtual sums and float64 CoM of the frames."""
    f = frames.astype(np.int64)
    virtual = {n: (f * m.astype(np.int64)).sum(axis=(2, 3)) for n, m in masks.items()}
    yy, xx = np.indices(frames.shape[2:])
    w = f * com.astype(np.int64)
    s = w.sum(axis=(2, 3)).astype(np.float64)
    return virtual, np.stack([(w * yy).sum(axis=(2, 3)) / s, (w * xx).sum(axis=(2, 3)) / s])


def _run(frames, masks, com, **kw):
    ny, nx = frames.shape[:2]
    acc = Accumulator((ny, nx), frames.shape[2:], masks, com, **kw)
    for r in range(0, ny, 4):
        acc.add(frames[r : r + 4], r)
    return acc, acc.result()


@pytest.mark.parametrize("threads", [1, 3])
def test_kernel_equals_numpy_reference(threads):
    rng = np.random.default_rng(17)
    frames = rng.integers(0, 65536, size=SHAPE, dtype=np.uint16)
    masks, com = _detectors(SHAPE[2:])
    assert all(m.sum() > 20 for m in masks.values())
    acc, res = _run(frames, masks, com, threads=threads)
    assert acc._runs is not None  # the compiled path was taken
    virtual, com_ref = _reference(frames, masks, com)
    for name, ref in virtual.items():
        np.testing.assert_array_equal(res.virtual[name], ref.astype(np.float64))  # exact beyond 2**24
    assert max(v.max() for v in virtual.values()) > 2**24
    np.testing.assert_allclose(res.com_raw_yx_px, com_ref, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(res.total_counts, frames.sum(axis=(2, 3), dtype=np.int64))
    np.testing.assert_array_equal(res.sum_pattern, frames.sum(axis=(0, 1), dtype=np.uint64))
    np.testing.assert_array_equal(res.max_pattern, frames.max(axis=(0, 1)))
    # the dense float32 product (the reference path) agrees within float32 rounding
    _, dense = _run(frames, masks, com, compiled=False)
    for name, ref in virtual.items():
        np.testing.assert_allclose(dense.virtual[name], ref, rtol=1e-5)
    np.testing.assert_allclose(dense.com_raw_yx_px, com_ref, atol=1e-3)


def test_overlapping_user_masks_take_the_dense_path():
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 4000, size=SHAPE, dtype=np.uint16)
    masks, com = _detectors(SHAPE[2:])
    masks["user"] = np.maximum(masks["bf"], masks["adf"])  # overlaps two annuli
    acc, res = _run(frames, masks, com)
    assert acc._runs is None
    virtual, com_ref = _reference(frames, masks, com)
    for name, ref in virtual.items():
        np.testing.assert_allclose(res.virtual[name], ref, rtol=1e-6)
    np.testing.assert_allclose(res.com_raw_yx_px, com_ref, atol=1e-4)
