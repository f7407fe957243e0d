"""The real BioCAT Pilatus frame reduced end to end, checked against its README's calibration."""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
from conftest import read_table, run_saxs
from contract_example import BIOCAT_PARAMS
from synthetic import write_tiff

from panreduce.nxcansas import read_nxcansas
from panreduce_saxs.io import read_image, read_spec

D_MM, LAM_A, PIX_MM, CX, CY = 1502.7, 1.245, 0.172, 487.2, 97.0
DIODE_REF, ABS = 259139.0, 0.00071363632818


@pytest.fixture(scope="module")
def reduced(biocat, tmp_path_factory):
    tiff, spec = biocat
    summary, outputs = run_saxs([tiff, spec], BIOCAT_PARAMS, tmp_path_factory.mktemp("biocat"))
    curve = read_table(outputs["GI2_A9_19_001_0000_iq.csv"])
    return summary, outputs, curve


def test_outputs_and_units(reduced):
    summary, outputs, _curve = reduced
    assert summary["intensity_units"] == "1/cm" and summary["frames"] == 1
    assert {"saxs_iq.h5", "iq.png", "GI2_A9_19_001_0000_iq.csv"} <= set(outputs)
    with h5py.File(outputs["saxs_iq.h5"]) as f:
        entry = f[f.attrs["default"]]
        assert entry.attrs["canSAS_class"] == "SASentry" and entry.attrs["version"] == "1.1"
        assert entry["sasdata/I"].attrs["units"] == "1/cm"
        assert entry["sasinstrument/sasdetector/SDD"][()] == pytest.approx(D_MM / 1000)
        assert entry["sasinstrument/sassource/incident_wavelength"][()] == pytest.approx(LAM_A)


def test_q_axis_is_one_pixel_bins_from_the_calibration(reduced):
    q = reduced[2][:, 0]
    r_px = D_MM * np.tan(2 * np.arcsin(q * LAM_A / (4 * np.pi))) / PIX_MM
    assert np.allclose(r_px, np.round(r_px), atol=1e-6)
    assert np.all(np.diff(np.round(r_px)) == 1)
    # the far corner of the detector (column 0, row 194) from the beam centre
    r_max = np.hypot(CX - 0.5, 194.5 - CY)
    assert np.round(r_px[-1]) == pytest.approx(r_max, abs=1.0)
    # the first bins start just outside the beamstop strip
    assert 0.005 < q[0] < 0.012


def test_beamstop_strip_and_dead_pixel_masked(reduced):
    summary = reduced[0]
    r0, r1, c0, c1 = summary["beamstop_box"]
    assert 45 <= r0 <= 53 and 132 <= r1 <= 140 and 468 <= c0 <= 476 and c1 == 486
    assert summary["masked_threshold"] == 1  # the one negative (dead) pixel
    assert 900 < summary["masked_beamstop"] < 1400


def test_intensity_matches_a_hand_computation(reduced, biocat):
    """Ring by ring, I = <counts / cos^3 2θ> / (diode / 259139) * 0.000713636, with
    Poisson σ = sqrt(Σ counts) / Σ cos^3 2θ / norm, computed here without pyFAI."""
    tiff, spec = biocat
    raw = read_image(tiff).astype(float)
    diode = read_spec(spec)[1].column("diode")[0]
    norm = diode / DIODE_REF / ABS
    rows = np.arange(raw.shape[0])[:, None] + 0.5
    cols = np.arange(raw.shape[1])[None, :] + 0.5
    r = np.hypot(rows - CY, cols - CX)
    cos3 = np.cos(np.arctan(r * PIX_MM / D_MM)) ** 3
    ring = np.rint(r).astype(int)
    q, i, s = reduced[2].T
    k_of_q = np.rint(D_MM * np.tan(2 * np.arcsin(q * LAM_A / (4 * np.pi))) / PIX_MM).astype(int)
    good = raw >= 0
    for k in (60, 150, 250, 400):
        sel = (ring == k) & good
        hand = raw[sel].sum() / cos3[sel].sum() / norm
        # pyFAI counts a zero-count pixel as variance 1 (Poisson with at least one count)
        hand_s = np.sqrt(np.maximum(raw[sel], 1).sum()) / cos3[sel].sum() / norm
        (j,) = np.nonzero(k_of_q == k)[0]
        assert i[j] == pytest.approx(hand, rel=1e-4)
        assert s[j] == pytest.approx(hand_s, rel=1e-4)


def test_absolute_level_is_physical(reduced):
    """Protein in aqueous buffer in a capillary: at high q the absolute intensity is that
    of water (0.0163 1/cm at 20 °C) plus a little from the buffer, cell and protein."""
    q, i, s = reduced[2].T
    high = (q > 0.2) & (q < 0.28)
    level = float(np.average(i[high], weights=1 / s[high] ** 2))
    assert 0.0163 < level < 0.035
    # and the protein's forward scattering rises at low q
    assert np.mean(i[q < 0.02]) > 2 * level


def test_sasdata_reads_it(reduced):
    sasdata = pytest.importorskip("sasdata.dataloader.loader")
    logging.getLogger("sasdata").setLevel(logging.ERROR)
    _, outputs, curve = reduced
    (data,) = sasdata.Loader().load(str(outputs["saxs_iq.h5"]))
    assert np.allclose(data.x, curve[:, 0]) and np.allclose(data.y, curve[:, 1], rtol=1e-6)
    assert np.allclose(data.dy, curve[:, 2], rtol=1e-6)
    assert data.source.wavelength == pytest.approx(LAM_A)
    assert data.errors == []
    ours = read_nxcansas(outputs["saxs_iq.h5"])
    assert len(ours) == 1 and np.allclose(ours[0].i, curve[:, 1])


@pytest.mark.parametrize("name", ["biocat.poni", "calib.cfg"])
def test_same_result_from_a_poni_file(reduced, biocat, tmp_path, name):
    """Found among the inputs by its suffix, or named by geometry.poni_file whatever its
    suffix (then it is no frame)."""
    tiff, spec = biocat
    poni = tmp_path / name
    # PONI (pyFAI format 2): the point of normal incidence in metres from the detector's
    # first pixel corner: poni1 = row * pixel, poni2 = column * pixel
    poni.write_text(
        "poni_version: 2\n"
        'Detector: Detector\nDetector_config: {"pixel1": 0.000172, "pixel2": 0.000172, "max_shape": [195, 487]}\n'
        f"Distance: {D_MM / 1000}\nPoni1: {CY * PIX_MM / 1000}\nPoni2: {CX * PIX_MM / 1000}\n"
        f"Rot1: 0\nRot2: 0\nRot3: 0\nWavelength: {LAM_A * 1e-10}\n"
    )
    params = {"normalisation.counter": "diode/259139", "absolute.factor": ABS}
    if name != "biocat.poni":
        params["geometry.poni_file"] = name
    summary, outputs = run_saxs([tiff, spec, poni], params, tmp_path / "job")
    assert summary["frames"] == 1
    curve = read_table(outputs["GI2_A9_19_001_0000_iq.csv"])
    assert np.allclose(curve, reduced[2], rtol=1e-6)


def test_mirrored_frame_with_mirrored_centre_gives_the_same_curve(reduced, biocat, tmp_path):
    """The beamline's software shows the frame mirrored left-right, with the centre at
    x = -0.2: reducing that view must give the same I(q)."""
    tiff, spec = biocat
    mirrored = write_tiff(tmp_path / "GI2_A9_19_001_0000.tiff", read_image(tiff)[:, ::-1])
    params = {**BIOCAT_PARAMS, "geometry.beam_center_px": "-0.2,97.0"}
    _, outputs = run_saxs([mirrored, spec], params, tmp_path / "job")
    curve = read_table(outputs["GI2_A9_19_001_0000_iq.csv"])
    assert np.allclose(curve, reduced[2], rtol=1e-6)
