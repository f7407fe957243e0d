"""PXCT end to end through the kit: simulated ptychographic scans of projections of a 3-D
phantom (each with its rotation angle, random shifts) reconstructed one by one, then the
tomographic stage (``pxct.enabled``) to the volume, compared with the phantom."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from panreduce import errors, kit
from panreduce.storage import Stores
from panreduce_ptychography import pxct
from panreduce_ptychography.io import write_nexus
from panreduce_ptychography.problem import Scan, wavelength_m
from panreduce_ptychography.simulate import diffraction, fermat_spiral, make_probe
from panreduce_ptychography.technique import Technique
from panreduce_tomography import phantom

FRAME, N = 32, 28  # frame side; the projection grid pasted into each object (N x N)
ENERGY, DIST, DET = 8000.0, 5.0, 75e-6


def _ellipsoids() -> list[phantom.Ellipsoid]:
    return [
        phantom.Ellipsoid(0.1, (8.0, 7.0, 9.0), (0.5, 0.0, 0.0), 0.4),
        phantom.Ellipsoid(0.12, (3.0, 4.0, 3.0), (-2.5, 1.5, 2.0), 0.0),
        phantom.Ellipsoid(-0.06, (2.5, 2.5, 3.5), (3.0, -1.0, -3.0), 0.0),
    ]


def _scan(projection: np.ndarray, angle: float, rng: np.random.Generator) -> Scan:
    """A ptychographic scan (1e6 photons per frame, 64 spiral positions) of the object whose
    phase is -projection (amplitude exp(-0.1 projection)), pasted in air."""
    side = 80
    obj = np.ones((side, side), np.complex64)
    o = (side - N) // 2
    obj[o : o + N, o : o + N] = np.exp((-1j - 0.1) * projection)
    centres = fermat_spiral(64, 3.8) + rng.uniform(-0.3, 0.3, (64, 2)) + side / 2
    probe = make_probe(FRAME, diameter_px=12.8, photons=1e6)
    frames = rng.poisson(diffraction(obj, probe, centres - FRAME / 2)).astype(np.float32)
    dx = wavelength_m(ENERGY) * DIST / (FRAME * DET)
    return Scan(
        frames=frames,
        positions_m=centres * dx,
        energy_ev=ENERGY,
        distance_m=DIST,
        pixel_size_m=(DET, DET),
        mask=np.ones((FRAME, FRAME), bool),
        probe=make_probe(FRAME, diameter_px=12.8 * 1.15, pupil_radius=0.25 * 0.95),
        metadata={"rotation_angle_deg": angle},
    )


@pytest.fixture(scope="module")
def pxct_scans(tmp_path_factory):
    rng = np.random.default_rng(3)
    angles = np.linspace(0, 180, 12, endpoint=False)
    rad = np.deg2rad(angles)
    ell = _ellipsoids()
    proj = phantom.projections(ell, rad, N, N, (N - 1) / 2)
    shifts = pxct.remove_gauge(rng.uniform(-1.5, 1.5, (len(angles), 2)), rad)
    scans = [_scan(pxct.shift_image(p, *s), a, rng) for p, s, a in zip(proj, shifts, angles, strict=True)]
    path = tmp_path_factory.mktemp("pxct") / "pxct.nxs"
    write_nexus(path, scans, entries=[f"proj_{i:03d}" for i in range(len(scans))])
    return path, angles, phantom.volume(ell, N, N), proj, shifts


def _embed(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape)
    out[tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(shape, a.shape, strict=True))] = a
    return out


def _run(paths, out, **raw):
    return kit.run(Technique, [str(p) for p in paths], raw, out, stores=Stores(out.parent / "store"))


def test_pxct_from_ptychographic_scans_to_the_volume(pxct_scans, tmp_path):
    path, angles, truth, proj, true_shifts = pxct_scans
    res = _run([path], tmp_path / "out", iterations=40, ml_iterations=30, plots=True, pxct={"enabled": True})
    s = res.summary["pxct"]
    assert s["n_projections"] == 12 and s["phase_sign"] == 1.0
    names = {o.uri.rsplit("/", 1)[1] for o in res.outputs}
    assert {"pxct.nxs", "pxct.png"} <= names
    nxs = next(o.uri for o in res.outputs if o.uri.endswith("/pxct.nxs"))
    with h5py.File(nxs) as f:
        vol = f["entry/data/data"][()]
        assert f["entry/definition"][()].decode() == "NXtomoproc"
        al = f["entry/aligned_projections"]
        assert al["data"].shape[0] == 12 and f["entry/delta"].shape == vol.shape
        found = np.stack([al["shift_y"][()], al["shift_x"][()]], axis=1)
    # the shifts undo the true ones (up to what the data cannot see, and the sub-pixel
    # placement each ptychographic reconstruction chose)
    err = pxct.remove_gauge(found + true_shifts, np.deg2rad(angles))
    print(f"PXCT chain: shift error RMS {np.sqrt(np.mean(err**2)):.3f} px, max {np.abs(err).max():.3f}; {s}")
    assert np.abs(err).max() < 0.5
    # the volume against the phantom: both in one zero-padded box, registered (the volume's
    # place is fixed by the alignment's conventions and the common field of view)
    assert min(vol.shape) >= 20, vol.shape
    shape = tuple(max(a, b) + 8 for a, b in zip(vol.shape, truth.shape, strict=True))
    big_vol, big_truth = _embed(vol, shape), _embed(truth, shape)
    shift = phase_cross_correlation(big_truth, big_vol, upsample_factor=10, normalization=None)[0]
    error = pxct.normalised_rms(ndimage.shift(big_vol, shift, order=1), big_truth)
    reference = pxct.normalised_rms(pxct.reconstruct(proj, np.deg2rad(angles), (N - 1) / 2), truth)
    print(f"PXCT chain: volume NRMS {error:.3f} (exact projections {reference:.3f}), shift {shift}")
    assert error < 0.5 and error < reference + 0.3, (error, reference)


def test_pxct_needs_three_projections_and_angles(pxct_scans, tmp_path):
    path, *_ = pxct_scans
    one = tmp_path / "one.nxs"
    with h5py.File(path) as f, h5py.File(one, "w") as g:
        f.copy("proj_000", g)
        f.copy("proj_001", g)
    with pytest.raises(errors.InvalidParameters) as e:
        _run([one], tmp_path / "a", iterations=2, ml_iterations=0, pxct={"enabled": True})
    assert e.value.violations[0].field == "pxct.enabled"


def test_pxct_sharded_over_replicas_and_a_projection_without_angle(pxct_scans, tmp_path):
    """Split over 3 shards, the merge gets all projections and runs the tomographic stage;
    a projection without its rotation angle is the caller's mistake, named."""
    path, *_ = pxct_scans
    out = tmp_path / "split"
    res = kit.run_split(
        Technique,
        [str(path)],
        {"iterations": 8, "ml_iterations": 0, "plots": False, "pxct": {"enabled": True, "iterations": 1}},
        out,
        split=3,
        stores=Stores(tmp_path / "store"),
    )
    assert res.summary["shards"] == 3 and res.summary["pxct"]["n_projections"] == 12
    assert any(o.uri.endswith("/pxct.nxs") for o in res.outputs)
    bad = tmp_path / "bad.nxs"
    with h5py.File(path) as f, h5py.File(bad, "w") as g:
        for e in ("proj_000", "proj_001", "proj_002"):
            f.copy(e, g)
        del g["proj_001/sample/rotation_angle"]
    with pytest.raises(errors.InvalidInput, match=r"proj_001.*rotation_angle"):
        _run([bad], tmp_path / "b", iterations=2, ml_iterations=0, plots=False, pxct={"enabled": True})
