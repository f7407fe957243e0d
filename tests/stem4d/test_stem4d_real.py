"""Real Merlin data: the fpd scan (sums reproduced exactly, ADF against the recorded
HAADF), single frames (disc radius and centre), Si [110] CBED at 80/200/300 kV (the disc
lattice scales with the electron wavelength)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from stem4d_helpers import corr, run_stem4d

from panreduce_stem4d import calibration as cal
from panreduce_stem4d import strain as st
from panreduce_stem4d.io import open_scan

pytestmark = pytest.mark.data
NIST = "stem4d-merlin/merlintools_nist"
SI_D111_NM = 0.31356  # Si {111} spacing (a = 0.54310 nm)


@pytest.fixture(scope="module")
def fpd_run(dataset, tmp_path_factory):
    path = dataset(f"{NIST}/FPD_HDF5.hdf5")
    out = tmp_path_factory.mktemp("fpd")
    summary, files, _ = run_stem4d([path], {"mrad_per_px": 0.0827, "bf_mrad": 0.5, "adf_mrad": "1.7,8.3"}, out)
    return path, summary, files


def test_fpd_scan_acceptance_outputs(fpd_run):
    _path, summary, files = fpd_run
    assert set(files) == {"stem4d.nxs", "stem4d_overview.png"}
    with h5py.File(files["stem4d.nxs"]) as f:
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "bf"
        for name in ("bf", "adf", "com_x", "com_y", "dpc_phase"):
            g = f[f"entry/{name}"]
            assert g.attrs["NX_class"] == "NXdata" and g["data"].shape == (16, 16)
            assert g["x"].attrs["units"] == "nm"
            assert g["x"][1] - g["x"][0] == pytest.approx(5.48, abs=0.01)
        assert f["entry/sum_pattern/kx"].attrs["units"] == "mrad"
        kx = f["entry/sum_pattern/kx"][()]
        assert kx[1] - kx[0] == pytest.approx(0.0827)
    assert summary["shape"] == [16, 16, 256, 256]
    assert summary["rotation_source"] == "minimum curl"


def test_fpd_sums_reproduced_exactly(fpd_run):
    path, _, files = fpd_run
    with h5py.File(path) as src, h5py.File(files["stem4d.nxs"]) as out:
        np.testing.assert_array_equal(out["entry/total_counts/data"][()], src["fpd_expt/fpd_sum_im/data"][()])
        np.testing.assert_array_equal(out["entry/sum_pattern/data"][()], src["fpd_expt/fpd_sum_dif/data"][()])


def test_fpd_virtual_adf_correlates_with_the_recorded_haadf(fpd_run):
    _, summary, files = fpd_run
    with h5py.File(files["stem4d.nxs"]) as f:
        adf, bf = f["entry/adf/data"][()], f["entry/bf/data"][()]
        haadf = f["entry/haadf_recorded/data"][()]
    # the recorded HAADF holds 1-9 counts per position: a weak but clear positive correlation,
    # and the bright field anti-correlates (256 positions: r = 0.2 is p < 0.002)
    assert corr(adf, haadf) > 0.25
    assert corr(bf, haadf) < 0 < corr(adf, haadf)
    assert summary["corr_adf_recorded_haadf"] == pytest.approx(corr(adf, haadf))


def test_fpd_disc_moves_by_about_a_pixel_and_a_half(fpd_run):
    _, summary, files = fpd_run
    assert 2.0 < summary["disc_radius_px"] < 6.0
    cy, cx = summary["beam_center_px"]
    assert abs(cy - 125) < 3 and abs(cx - 127) < 3
    with h5py.File(files["stem4d.nxs"]) as f:
        mag_px = f["entry/com_magnitude/data"][()] / 0.0827
        descan = np.hypot(f["entry/descan_x/data"][()], f["entry/descan_y/data"][()]) / 0.0827
    total = np.percentile(mag_px + descan, 95)
    assert 0.3 < total < 3.0


@pytest.mark.parametrize(
    "name,radius,center",
    [
        ("SingleMIB", 34.1, (118.2, 121.4)),
        ("200kV_CL_100mm_probe", 31.6, (119.2, 124.1)),
        ("200kV_CL_380mm_probe", 116.8, (128.4, 128.1)),
    ],
)
def test_single_frame_disc_radius_and_centre(dataset, name, radius, center):
    scan = open_scan(dataset(f"{NIST}/{name}.mib"), name)
    assert scan.shape == (1, 1, 256, 256) and scan.metadata["counter_depth"] == 12
    disc = cal.fit_disc(scan.read_rows(0, 1)[0, 0])
    assert disc.radius_px == pytest.approx(radius, abs=1.0)
    assert disc.center_yx_px == pytest.approx(center, abs=1.0)


def _si_lattice(dataset, kv: int, cl: int):
    name = f"{kv}kV_CL_{cl}mm_Si110"
    frame = open_scan(dataset(f"{NIST}/{name}.mib"), name).read_rows(0, 1)[0, 0].astype(float)
    mrad_per_px = json.loads(dataset(f"{NIST}/{kv}kV_calibrations_mrad_per_px.json").read_text())[str(cl)]
    disc = cal.fit_disc(frame)
    finder = st.DiscFinder(
        st.probe_template(frame, disc.center_yx_px, disc.radius_px), disc.radius_px, min_relative=0.2
    )
    pts = finder.find(frame)
    basis = st.guess_basis(pts, pts[0], min_length_px=1.5 * disc.radius_px)
    lat = st.fit_lattice(pts, pts[0], basis)
    assert lat is not None and lat.n_discs >= 5
    g_mrad = np.hypot(*lat.basis) * mrad_per_px
    cos = abs(lat.basis[:, 0] @ lat.basis[:, 1]) / np.prod(np.hypot(*lat.basis))
    return g_mrad, float(np.degrees(np.arccos(cos))), cal.electron_wavelength_nm(kv)


def test_si110_disc_lattice_scales_with_the_wavelength(dataset):
    """The shortest Si [110] reflection is {111}: θ = λ / d111 at 80 and 300 kV; the angle
    between the two basis vectors is one of the [110] zone's (54.7° 111/002, 70.5° 111/1-11)."""
    ratios = {}
    for kv, cl in ((80, 300), (300, 380), (200, 380)):
        g, angle, lam = _si_lattice(dataset, kv, cl)
        assert min(abs(angle - 54.74), abs(angle - 70.53)) < 2.0
        ratios[kv] = g.min() / lam * 1e-3  # 1/d in 1/nm
    # 80 and 300 kV: a wavelength 2.1× apart, the same lattice spacing within 4 %
    for kv in (80, 300):
        assert 1 / ratios[kv] == pytest.approx(SI_D111_NM, rel=0.04)
    assert ratios[80] / ratios[300] == pytest.approx(1.0, abs=0.03)


def test_200kv_cl380_calibration_is_off_by_the_same_factor_in_two_independent_checks(dataset):
    """At 200 kV the 380 mm calibration gives a Si {111} angle ~12 % above λ/d111; the
    bright-field disc at 380 mm vs 100 mm (same aperture) shows the same factor."""
    g, _, lam = _si_lattice(dataset, 200, 380)
    si_factor = g.min() / (lam / SI_D111_NM * 1e3)
    table = json.loads(dataset(f"{NIST}/200kV_calibrations_mrad_per_px.json").read_text())
    r = {}
    for cl in (100, 380):
        frame = open_scan(dataset(f"{NIST}/200kV_CL_{cl}mm_probe.mib"), "p").read_rows(0, 1)[0, 0]
        r[cl] = cal.fit_disc(frame).radius_px * table[str(cl)]
    probe_factor = r[380] / r[100]
    assert si_factor > 1.05 and probe_factor > 1.05
    assert si_factor == pytest.approx(probe_factor, rel=0.03)


def test_a_single_frame_is_reduced_without_curl_maps(dataset, tmp_path):
    """One Merlin frame (a 1 x 1 "scan"): virtual images and CoM, but no curl, divergence or
    fitted rotation, which need 2 x 2 positions (it used to fail inside np.gradient)."""
    path = dataset(f"{NIST}/300kV_CL_380mm_Si110.mib")
    summary, files, _ = run_stem4d([path], {"mrad_per_px": 0.1374, "bf_mrad": 0.5, "adf_mrad": "1.7,8.3"}, tmp_path)
    assert summary["shape"] == [1, 1, 256, 256]
    assert summary["rotation_source"].startswith("none") and summary["rotation_deg"] == 0.0
    with h5py.File(files["stem4d.nxs"]) as f:
        assert {"bf", "adf", "com_x", "com_y"} <= set(f["entry"]) and not {"curl", "divergence"} & set(f["entry"])
        assert f["entry/bf/data"].shape == (1, 1) and f["entry/bf/data"][0, 0] > 0
