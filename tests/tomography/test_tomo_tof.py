"""Neutron time of flight: Tremsin overlap correction against a Monte-Carlo detector,
Bragg-edge fit, and a FITS-per-time-bin tomography scan through the technique."""

from __future__ import annotations

import numpy as np
import pytest
from tomo_synthetic import nrmse, phantom_scan, read_csv

from panreduce import constants
from panreduce_tomography import recon, tof


def test_overlap_correction_recovers_the_rate():
    """A Timepix pixel keeps only its first event per shutter window: simulate 20000
    triggers with a rising rate over 50 bins; the corrected counts follow the true
    per-bin detection probability while the raw counts sag late in the window."""
    rng = np.random.default_rng(0)
    bins, triggers = 50, 20000
    lam = np.linspace(0.002, 0.04, bins)  # mean events per bin per trigger
    first = np.full(triggers, bins)
    for i in range(bins):
        hit = (rng.uniform(size=triggers) < 1 - np.exp(-lam[i])) & (first == bins)
        first[hit] = i
    counts = np.bincount(first, minlength=bins + 1)[:bins].astype(float)
    corrected = tof.overlap_correction(counts, np.zeros(bins, int), np.array([triggers]))
    expected = triggers * (1 - np.exp(-lam))
    assert np.abs(corrected / expected - 1)[-10:].mean() < 0.05
    assert (counts / expected)[-10:].mean() < 0.5  # uncorrected: half the events lost late on


def test_overlap_correction_restarts_each_shutter_window():
    counts = np.array([[10.0], [10.0], [10.0], [10.0]])
    out = tof.overlap_correction(counts, np.array([0, 0, 1, 1]), np.array([100, 100]))
    assert out[:, 0] == pytest.approx([10, 10 / 0.9, 10, 10 / 0.9])


def test_bragg_edge_fit():
    rng = np.random.default_rng(1)
    lam = np.linspace(3.0, 5.0, 300)
    truth = tof.edge_model(lam, 4.054, 0.015, 0.3, 0.02, 0.25, 0.0)
    meas = truth * (1 + rng.normal(0, 0.01, lam.size))
    fit = tof.fit_bragg_edge(lam, meas)
    assert fit["edge"] == pytest.approx(4.054, abs=0.005)
    assert 0 < fit["edge_error"] < 0.005


def test_wavelength_from_tof():
    # 1 angstrom neutrons travel at 3956 m/s: 56 m in 14.16 ms
    assert tof.wavelength_angstrom(56 / 3956.034, 56.0) == pytest.approx(1.0, rel=1e-6)


def test_fits_tof_scan_through_the_technique(tmp_path):
    from astropy.io import fits
    from tomo_synthetic import run

    n, na, nbins = 32, 40, 4
    scan = phantom_scan(n=n, n_angles=na, n_rows=2, offset=1.4, seed=3, flux=5e4)
    root = tmp_path / "imat"
    for i in range(na):
        d = root / f"angle_{i:03d}"
        d.mkdir(parents=True)
        for b in range(nbins):  # the counts split evenly over the time bins
            fits.PrimaryHDU((scan["data"][i] / nbins).astype(np.float32)).writeto(d / f"IMAT_{b:05d}.fits")
        np.savetxt(d / "IMAT_Spectra.txt", np.c_[np.arange(nbins) * 1e-3 + 0.01, np.ones(nbins)])
    ob = root / "ob"
    ob.mkdir()
    for b in range(nbins):
        fits.PrimaryHDU((scan["flats"].mean(0) / nbins).astype(np.float32)).writeto(ob / f"OB_{b:05d}.fits")
    np.savetxt(root / "angles.txt", np.rad2deg(scan["angles"]))
    summary, outs, _ = run([root], tmp_path, previews=0, flat_field="conventional")
    assert summary["layout"] == "fits-tof"
    assert abs(summary["center"] - scan["center"]) < 0.5
    import h5py

    with h5py.File(outs["tomography.nxs"].path) as f:
        vol = f["entry/data/data"][()]
        assert f["entry/instrument/source/probe"][()] == b"neutron"
    assert nrmse(vol, scan["truth"], recon.circle_mask(n, 13)) < 0.5
    # the frame-averaged transmission spectrum, one row per time bin
    spec = read_csv(outs["tof_spectrum.csv"].path)
    assert len(spec) == nbins and summary["tof"]["bins"] == nbins
    lam = [float(r["wavelength_angstrom"]) for r in spec]
    assert lam[0] == pytest.approx(tof.wavelength_angstrom(0.01, 56.4)) and np.all(np.diff(lam) > 0)
    trans = np.array([float(r["transmission"]) for r in spec])
    assert np.all((trans > 0.3) & (trans < 1.0)) and np.ptp(trans) < 1e-3  # counts split evenly over bins
    # split over the two slices: the same tables (every shard's part carries them), one merged volume
    split, souts, _ = run([root], tmp_path, name="split", split=2, previews=0, flat_field="conventional")
    assert set(souts) == set(outs) and split["tof"] == summary["tof"]
    assert read_csv(souts["tof_spectrum.csv"].path) == spec
    # half the time bins: the same object, the same centre
    half, _, _ = run([root], tmp_path, name="band", previews=0, tof_band=[0, 2])
    assert abs(half["center"] - summary["center"]) < 0.3 and half["tof"]["band"] == [0, 2]


def _tof_of_wavelength(lam, flight_path_m=56.4):
    return np.asarray(lam) * flight_path_m / (constants.H_OVER_NEUTRON_MASS * 1e10)


def _write_tof_folder(d, images, tof_s, prefix="IMAT"):
    from astropy.io import fits

    d.mkdir(parents=True)
    for b, img in enumerate(images):
        fits.PrimaryHDU(np.asarray(img, np.float32)).writeto(d / f"{prefix}_{b:05d}.fits")
    np.savetxt(d / f"{prefix}_Spectra.txt", np.c_[tof_s, np.ones(len(tof_s))])


def test_region_boxes_and_bands():
    from panreduce import errors

    assert tof.region_boxes((10, 12)) == [(0, 10, 0, 12)]
    assert tof.region_boxes((10, 12), grid=(2, 3)) == [
        (0, 5, 0, 4),
        (0, 5, 4, 8),
        (0, 5, 8, 12),
        (5, 10, 0, 4),
        (5, 10, 4, 8),
        (5, 10, 8, 12),
    ]
    assert tof.region_boxes((10, 12), [[1, 3, 2, 5]]) == [(1, 3, 2, 5)]
    with pytest.raises(errors.InvalidParameters, match="tof_regions"):
        tof.region_boxes((10, 12), [[1, 3, 2, 13]])
    with pytest.raises(errors.InvalidParameters, match="tof_regions"):
        tof.region_boxes((10, 12), [[3, 3, 2, 5]])
    with pytest.raises(errors.InvalidParameters, match="tof_region_grid"):
        tof.region_boxes((10, 12), grid=(11, 1))
    lam = np.array([3.0, 3.5, 4.0, 4.5])
    assert [b.tolist() for b in tof.band_bins(lam, [(3.0, 4.0), (4.0, 5.0)])] == [[0, 1], [2, 3]]
    with pytest.raises(errors.InvalidParameters, match="tof_bands_angstrom"):
        tof.band_bins(lam, [(5.0, 6.0)])


def test_bragg_edge_per_region(tmp_path):
    """Four detector quadrants hold materials whose Bragg edges sit at known, different
    wavelengths; the per-region spectra (Poisson counts, open beam and dark) recover each
    edge within 0.01 angstrom with a consistent error bar, in the CSV and the NeXus file."""
    import h5py
    from tomo_synthetic import run

    rng = np.random.default_rng(5)
    n, nproj, flux, dark = 16, 4, 3000.0, 20.0
    lam = np.linspace(3.7, 4.5, 81)
    tof_s = _tof_of_wavelength(lam)
    edges = np.array([[3.95, 4.02], [4.09, 4.16]])  # quadrant (top/bottom, left/right)
    trans = np.empty((lam.size, n, n))
    for qi in range(2):
        for qj in range(2):
            t = tof.edge_model(lam, edges[qi, qj], 0.012, 0.3, 0.02, 0.25, 0.0)
            trans[:, qi * 8 : (qi + 1) * 8, qj * 8 : (qj + 1) * 8] = t[:, None, None]
    root = tmp_path / "imat"
    for i in range(nproj):
        _write_tof_folder(root / f"proj_{i:03d}", rng.poisson(flux * trans) + dark, tof_s)
    _write_tof_folder(root / "openbeam", rng.poisson(flux * np.ones_like(trans)) + dark, tof_s, "OB")
    _write_tof_folder(root / "dark", np.full_like(trans, dark), tof_s, "DK")
    summary, outs, _ = run(
        [root], tmp_path, previews=0, center=7.5, tof_region_grid=[2, 2], bragg_edge_angstrom=4.05, slice_stop=2
    )
    t = summary["tof"]
    assert t["regions"] == 4
    got = np.array(t["region_edges"])
    err = np.array(t["region_edge_errors"])
    assert np.abs(got - edges.ravel()).max() < 0.01
    assert np.all((err > 0) & (err < 0.005))
    assert np.all(np.abs(got - edges.ravel()) < 5 * err + 0.002)  # the error bar means something
    table = read_csv(outs["tof_regions.csv"].path)
    assert [(int(r["row0"]), int(r["row1"]), int(r["col0"]), int(r["col1"])) for r in table] == [
        (0, 8, 0, 8),
        (0, 8, 8, 16),
        (8, 16, 0, 8),
        (8, 16, 8, 16),
    ]
    assert np.allclose([float(r["edge_angstrom"]) for r in table], got)
    spectra = read_csv(outs["tof_region_spectra.csv"].path)
    assert len(spectra) == 4 * lam.size
    with h5py.File(outs["tomography.nxs"].path) as f:
        g = f["entry/tof"]
        assert g.attrs["signal"] == "transmission"
        tr = g["transmission"][()]
        assert tr.shape == (4, lam.size)
        assert np.allclose(g["wavelength"][()], lam, atol=1e-9)
        assert np.allclose(g["bragg_edge"][()], got)
        # far below every edge the transmission is exp(-(0.3 + 0.02 lam) - 0.25) (within 2 %)
        expect = np.exp(-(0.3 + 0.02 * lam[:5]) - 0.25)
        assert np.allclose(tr[:, :5].mean(1), expect.mean(), rtol=0.02)
    # explicit boxes: one box straddling two quadrants sees both edges' average region
    boxed, _outs2, _ = run(
        [root],
        tmp_path,
        name="boxes",
        previews=0,
        center=7.5,
        slice_stop=2,
        tof_regions=[[0, 8, 8, 16], [8, 16, 0, 8]],
        bragg_edge_angstrom=4.05,
    )
    assert np.allclose(boxed["tof"]["region_edges"], [edges[0, 1], edges[1, 0]], atol=0.01)


def test_wavelength_bands_in_one_job(tmp_path):
    """A phantom whose attenuation is 1.0x below 3.9 angstrom and 0.4x above: two bands in
    one job give two volumes, each matching its scaled truth; the centre is found once."""
    import h5py
    from tomo_synthetic import run

    rng = np.random.default_rng(11)
    n, na = 32, 40
    scan = phantom_scan(n=n, n_angles=na, n_rows=2, offset=1.4, seed=3, flux=5e4)
    li = scan["line_integrals"]  # (angles, rows, cols)
    lam = np.arange(8) * 0.25 + 3.0  # 3.0 ... 4.75
    k = np.where(lam < 3.9, 1.0, 0.4)
    flux = 2e4
    tof_s = _tof_of_wavelength(lam)
    root = tmp_path / "imat"
    for i in range(na):
        _write_tof_folder(root / f"angle_{i:03d}", [rng.poisson(flux * np.exp(-kb * li[i])) for kb in k], tof_s)
    _write_tof_folder(root / "ob", [np.full(li.shape[1:], flux) for _ in k], tof_s, "OB")
    np.savetxt(root / "angles.txt", np.rad2deg(scan["angles"]))
    summary, outs, _ = run([root], tmp_path, previews=0, tof_bands_angstrom=[[2.9, 3.9], [3.9, 4.9]])
    assert summary["tof"]["bands_angstrom"] == [[2.9, 3.9], [3.9, 4.9]]
    assert summary["tof"]["band_bins"] == [[0, 4], [4, 8]]
    assert summary["center"] == [summary["center"][0]] * 2 and abs(summary["center"][0] - scan["center"]) < 0.5
    mask = recon.circle_mask(n, 13)
    with h5py.File(outs["tomography.nxs"].path) as f:
        d = f["entry/data"]
        vol = d["data"][()]
        assert vol.shape == (2, 2, n, n)
        assert list(d.attrs["axes"]) == ["wavelength", "z", "y", "x"]
        assert d["wavelength"][()] == pytest.approx([3.4, 4.4])
        assert d["wavelength_band"][()].tolist() == [[2.9, 3.9], [3.9, 4.9]]
    truth = scan["truth"]
    assert nrmse(vol[0], truth, mask) < 0.5
    assert nrmse(vol[1], 0.4 * truth, mask) < 0.5
    assert nrmse(vol[1], truth, mask) > 0.55  # the bands really differ
    ratio = vol[1][:, mask].sum() / vol[0][:, mask].sum()
    assert ratio == pytest.approx(0.4, abs=0.04)
