"""Neutron time of flight: Tremsin overlap correction against a Monte-Carlo detector,
Bragg-edge fit, and a FITS-per-time-bin tomography scan through the technique."""

from __future__ import annotations

import numpy as np
import pytest
from tomo_synthetic import nrmse, phantom_scan

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
    from test_tomo_technique import run

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
    import csv
    import io

    spec = list(csv.DictReader(io.StringIO(outs["tof_spectrum.csv"].path.read_text())))
    assert len(spec) == nbins and summary["tof"]["bins"] == nbins
    lam = [float(r["wavelength_angstrom"]) for r in spec]
    assert lam[0] == pytest.approx(tof.wavelength_angstrom(0.01, 56.4)) and np.all(np.diff(lam) > 0)
    trans = np.array([float(r["transmission"]) for r in spec])
    assert np.all((trans > 0.3) & (trans < 1.0)) and np.ptp(trans) < 1e-3  # counts split evenly over bins
    # half the time bins: the same object, the same centre
    half, _, _ = run([root], tmp_path, name="band", previews=0, tof_band=[0, 2])
    assert abs(half["center"] - summary["center"]) < 0.3 and half["tof"]["band"] == [0, 2]
