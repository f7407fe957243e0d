"""panreduce.backend: one numpy/torch array backend. The numpy backend's operators are
checked against their definitions (Parseval, exact adjoints, float64 accumulation); the
torch backend, when torch is installed, against the numpy one on the CPU."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from panreduce import backend, errors

RNG = np.random.default_rng(7)


def test_importing_the_backend_loads_no_torch_nor_scipy():
    code = (
        "import sys, panreduce.backend as b; b.get_backend('cpu').zeros((2,)); "
        "bad = [m for m in ('torch', 'scipy', 'grpc') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_get_backend_names():
    cpu = backend.get_backend("cpu", workers=3)
    assert (cpu.name, cpu.device, cpu.workers) == ("numpy", "cpu", 3)
    assert backend.get_backend("numpy").name == "numpy"
    assert backend.get_backend().workers == 1
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        backend.get_backend("tpu")
    if not backend.cuda_available():
        with pytest.raises(errors.FailedPrecondition, match="device 'gpu' needs"):
            backend.get_backend("gpu")
        with pytest.raises(errors.FailedPrecondition):
            backend.get_backend("cuda")
        assert backend.get_backend("auto").name == "numpy"
    if not backend.torch_available():
        with pytest.raises(errors.FailedPrecondition, match="torch"):
            backend.get_backend("torch-cpu")


def test_creation_dtypes():
    b = backend.get_backend("cpu")
    assert b.zeros((2, 3)).dtype == np.float32
    assert b.ones((2,), dtype="complex64").dtype == np.complex64
    assert b.arange(4, dtype="int64").tolist() == [0, 1, 2, 3]
    x = np.ones((3, 4), np.float32)
    assert b.asarray(x) is x  # no copy when it already is one
    assert b.asarray([[1, 2]], dtype="float64").dtype == np.float64
    assert b.index([3, 1]).dtype == np.int64
    with pytest.raises(ValueError, match="unknown dtype"):
        b.zeros((2,), dtype="float16")


def test_ffts_unitary_and_inverse():
    b = backend.get_backend("cpu", workers=2)
    a = (RNG.normal(size=(3, 16, 8)) + 1j * RNG.normal(size=(3, 16, 8))).astype(np.complex64)
    f = b.fft2(a)
    np.testing.assert_allclose(b.norm2(f), b.norm2(a), rtol=1e-5)  # Parseval
    np.testing.assert_allclose(b.ifft2(f), a, atol=1e-5)
    np.testing.assert_allclose(f, np.fft.fft2(a, norm="ortho"), atol=1e-4)
    r = RNG.normal(size=(2, 10)).astype(np.float32)
    back = b.irfft(b.rfft(r, 16), 16)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back[:, :10], r, atol=1e-5)
    np.testing.assert_allclose(back[:, 10:], 0.0, atol=1e-5)


def test_reductions_accumulate_in_double():
    b = backend.get_backend("cpu")
    x = np.full(10_000_000, 0.1, np.float32)
    assert b.total(x) == pytest.approx(1e6, rel=1e-7)  # float32 accumulation is off by ~1e-4
    a = RNG.normal(size=5) + 1j * RNG.normal(size=5)
    c = RNG.normal(size=5) + 1j * RNG.normal(size=5)
    assert b.vdot(a, c) == pytest.approx(np.sum(np.conj(a) * c).real, rel=1e-12)
    assert b.norm2(a) == pytest.approx(np.sum(np.abs(a) ** 2), rel=1e-12)
    np.testing.assert_allclose(b.abs2(a), np.abs(a) ** 2, rtol=1e-12)
    frames = RNG.normal(size=(4, 3, 3))
    np.testing.assert_allclose(b.real_dot_per_frame(frames, 2 * frames), 2 * (frames**2).sum(axis=(1, 2)), rtol=1e-12)
    assert b.max(np.array([1.0, 5.0, 2.0])) == 5.0
    np.testing.assert_allclose(b.exp_i(np.array([0.0, np.pi / 2])), [1, 1j], atol=1e-7)


def test_gather_and_scatter_are_adjoint():
    b = backend.get_backend("cpu")
    obj = (RNG.normal(size=(20, 24)) + 1j * RNG.normal(size=(20, 24))).astype(np.complex64)
    iy, ix = np.array([0, 3, 11, 12]), np.array([0, 9, 2, 16])
    patches = b.gather(obj, iy, ix, 8, 8)
    assert patches.shape == (4, 8, 8)
    np.testing.assert_array_equal(patches[1], obj[3:11, 9:17])
    s = (RNG.normal(size=(4, 8, 8)) + 1j * RNG.normal(size=(4, 8, 8))).astype(np.complex64)
    # <gather(obj), s> == <obj, scatter(s)>
    assert b.vdot(patches, s) == pytest.approx(b.vdot(obj, b.scatter(obj.shape, s, iy, ix)), rel=1e-5)
    np.testing.assert_allclose(
        b.scatter_same(obj.shape, s[0], iy, ix), b.scatter(obj.shape, np.repeat(s[:1], 4, axis=0), iy, ix), rtol=1e-6
    )


def test_interp_is_linear_and_splat_its_adjoint():
    b = backend.get_backend("cpu")
    n = 12
    rows = np.tile(np.arange(n, dtype=np.float32) * 2.0 + 1.0, (2, 3, 1))  # y = 2 i + 1
    t = np.array([[0.0, 2.5, 10.75], [1.0, 5.5, 11.0], [-2.0, 0.5, 13.0]], np.float32)
    out = b.interp(rows, t)
    np.testing.assert_allclose(out[:, 0], [[1.0, 6.0, 22.5]] * 2, rtol=1e-6)
    assert out[0, 2, 0] == 0.0 and out[0, 2, 2] == 0.0  # outside [-1, n]
    v = RNG.normal(size=(2, 3, 3)).astype(np.float32)
    x = RNG.normal(size=(2, 3, n)).astype(np.float32)
    tt = RNG.uniform(-1.5, n + 0.5, size=(3, 3)).astype(np.float32)
    # <interp(x, t), v> == <x, splat(v, t)>
    assert b.vdot(b.interp(x, tt), v) == pytest.approx(b.vdot(x, b.splat(v, tt, n)), rel=1e-5)
    padded = b.pad_edge(np.array([[1.0, 2.0, 3.0]]), 2, 1)
    np.testing.assert_array_equal(padded, [[1, 1, 1, 2, 3, 3]])


def test_torch_on_the_cpu_matches_numpy():
    pytest.importorskip("torch")
    t, n = backend.get_backend("torch-cpu"), backend.get_backend("cpu")
    assert (t.name, t.device) == ("torch", "cpu")
    a = (RNG.normal(size=(2, 8, 8)) + 1j * RNG.normal(size=(2, 8, 8))).astype(np.complex64)
    np.testing.assert_allclose(t.to_numpy(t.fft2(t.asarray(a, "complex64"))), n.fft2(a), atol=1e-4)
    obj = RNG.normal(size=(16, 16)).astype(np.float32)
    iy, ix = np.array([0, 4, 8]), np.array([1, 5, 7])
    np.testing.assert_allclose(t.to_numpy(t.gather(t.asarray(obj), iy, ix, 6, 6)), n.gather(obj, iy, ix, 6, 6))
    s = RNG.normal(size=(3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(
        t.to_numpy(t.scatter(obj.shape, t.asarray(s), iy, ix)), n.scatter(obj.shape, s, iy, ix), rtol=1e-6
    )
    rows = RNG.normal(size=(2, 3, 10)).astype(np.float32)
    tt = RNG.uniform(-1.5, 10.5, size=(3, 4)).astype(np.float32)
    np.testing.assert_allclose(t.to_numpy(t.interp(t.asarray(rows), t.asarray(tt))), n.interp(rows, tt), atol=1e-5)
    v = RNG.normal(size=(2, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(t.to_numpy(t.splat(t.asarray(v), t.asarray(tt), 10)), n.splat(v, tt, 10), atol=1e-5)
    assert t.total(t.asarray(obj)) == pytest.approx(n.total(obj), rel=1e-6)
    assert t.vdot(t.asarray(a, "complex64"), t.asarray(a, "complex64")) == pytest.approx(n.norm2(a), rel=1e-6)
