"""The streaming pass: exact integer sums whatever the counts, blocks of any size give the
same result, and the torch path (on the CPU where torch is installed; on a GPU, opt-in) agrees
with numpy."""

from __future__ import annotations

import numpy as np
import pytest

from panreduce_stem4d.detectors import Geometry, MaskSpec
from panreduce_stem4d.stream import Accumulator


def _masks(shape):
    geo = Geometry((shape[0] / 2, shape[1] / 2), 1.0)
    return {"bf": MaskSpec("bf", 0, 5).render(geo, shape), "adf": MaskSpec("adf", 5, 12).render(geo, shape)}


def _run(frames, rows_per_block, **kw):
    ny, nx, dy, dx = frames.shape
    acc = Accumulator((ny, nx), (dy, dx), _masks((dy, dx)), np.ones((dy, dx), np.float32), **kw)
    for r in range(0, ny, rows_per_block):
        acc.add(frames[r : r + rows_per_block], r)
    return acc.result()


@pytest.mark.parametrize("high", [100, 3_000_000])
def test_sums_are_exact_beyond_float32_range(high):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, high, size=(5, 6, 32, 32), dtype=np.uint32)
    res = _run(frames, 2)
    np.testing.assert_array_equal(res.total_counts, frames.sum(axis=(2, 3), dtype=np.int64))
    np.testing.assert_array_equal(res.sum_pattern, frames.sum(axis=(0, 1), dtype=np.uint64))
    np.testing.assert_array_equal(res.max_pattern, frames.max(axis=(0, 1)))
    _yy, xx = np.indices((32, 32))
    w = frames.astype(np.float64)
    np.testing.assert_allclose(res.com_raw_yx_px[1], (w * xx).sum(axis=(2, 3)) / w.sum(axis=(2, 3)), rtol=1e-5)


def test_block_size_does_not_change_the_result():
    rng = np.random.default_rng(5)
    frames = rng.poisson(20.0, size=(7, 5, 24, 24)).astype(np.uint16)
    a, b = _run(frames, 1), _run(frames, 7)
    for k in a.virtual:
        np.testing.assert_array_equal(a.virtual[k], b.virtual[k])
    np.testing.assert_array_equal(a.com_raw_yx_px, b.com_raw_yx_px)


def _torch_matches_numpy(device: str) -> None:
    rng = np.random.default_rng(6)
    frames = rng.poisson(30.0, size=(8, 16, 64, 64)).astype(np.uint16)
    frames[2, 3, 10, 10] = 60_000  # a hot pixel: uint16 beyond int16, through the int32 copy
    ref = _run(frames, 3)
    got = _run(frames, 3, backend="torch", device=device)
    for k in ref.virtual:
        np.testing.assert_allclose(got.virtual[k], ref.virtual[k], rtol=1e-5)
    np.testing.assert_allclose(got.com_raw_yx_px, ref.com_raw_yx_px, atol=1e-4)
    np.testing.assert_array_equal(got.total_counts, ref.total_counts)
    np.testing.assert_array_equal(got.total_counts, frames.sum(axis=(2, 3), dtype=np.int64))
    np.testing.assert_array_equal(got.sum_pattern, ref.sum_pattern)
    np.testing.assert_array_equal(got.max_pattern, frames.max(axis=(0, 1)))


def test_torch_path_on_the_cpu_matches_numpy():
    """The torch product on the CPU (torch is the optional gpu extra: skipped without it)."""
    pytest.importorskip("torch")
    _torch_matches_numpy("cpu")


@pytest.mark.gpu
def test_torch_path_matches_numpy():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    _torch_matches_numpy("cuda")
