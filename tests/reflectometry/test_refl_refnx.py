"""Platypus 708-710 (direct beam 711) against refnx's own reduction of the same files, in
absolute R: per angle, the median of |R_ours/R_refnx − 1| (before stitching, both direct-beam
normalised). refnx's curves are in ``refnx_platypus_708_710.txt`` (refnx is not installed in
the test environment; ``make bench-reflectometry`` runs it live).

Where the two differ, it is θ: at the same wavelength the intensities agree to 2-3 %; on Q, 709
and 710 agree to 2-3 %, 708 does not (9 %): refnx's ω(λ) for 708 is 0.007-0.009° (1.5 %) above
ours. Our θ(λ) is what the two beams' heights give per wavelength band with the files' geometry,
θ(λ) = ½·atan((y_R(λ) − y_D(λ) − 2|y_s(λ)|)/L) (last test: no model of the fall after the
sample is needed, the reflected ray being the mirror image of the direct one about the sample
plane; y_s is the beam's fall at the sample, 0.1 mm at 18 Å). But Si's critical edge
(``test_refl_si_edge.py``) wants an angle 0.006-0.007° above ours at 11 Å, within 0.002° of
refnx's: the files' geometry and λ scale are not consistent with Si's SLD at the 1.3 % level,
and refnx's beam-centre choices happen to land on the edge. The cause is not found.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from panreduce_reflectometry import core, gravity, workflow
from panreduce_reflectometry.runs import pixel_two_theta

pytestmark = pytest.mark.data

REFERENCE = Path(__file__).with_name("refnx_platypus_708_710.txt")
PARAMS = {"transmission": "PLP0000711.nx.hdf", "dq_q": 0.05, "wavelength_range": "2.8-18", "plots": False}


def refnx_curves() -> dict[int, np.ndarray]:
    """run -> rows of (λ Å, Q 1/Å, R, dR, ω °)."""
    a = np.loadtxt(REFERENCE)
    return {int(run): a[a[:, 0] == run, 1:] for run in (708, 709, 710)}


@pytest.fixture(scope="module")
def ours(dataset, tmp_path_factory):
    """Our per-run reduction through the technique, its defaults (θ from the detector, gravity)."""
    from panreduce.kit import Context
    from panreduce.storage import stage_paths
    from panreduce_reflectometry.technique import Technique

    files = [str(dataset(f"platypus-refnx/PLP0000{n}.nx.hdf")) for n in (708, 709, 710, 711)]
    t = Technique()
    p = t.validate_parameters(PARAMS)
    inputs = stage_paths(files)
    units = t.units(inputs, p)
    part = t.reduce_block(units, inputs, p, Context(job_id="t", scratch=tmp_path_factory.mktemp("refnx")))
    runs = {int(u.run.run_number[-3:]): u.run for u in units}
    return {int(s.name[-3:]): (s, rec, runs[int(s.name[-3:])]) for s, rec in zip(part.sets, part.records, strict=True)}


def median_deviation(q: np.ndarray, r: np.ndarray, q_peer: np.ndarray, r_peer: np.ndarray) -> float:
    """Median |R_ours/R_peer − 1| at the peer's points inside our Q range (ours interpolated in log R, log Q)."""
    good = np.isfinite(r) & (r > 0)
    q, r = q[good], r[good]
    inside = (q_peer > q[0]) & (q_peer < q[-1]) & (r_peer > 0)
    mine = np.exp(np.interp(np.log(q_peer[inside]), np.log(q), np.log(r)))
    assert inside.sum() >= 30
    return float(np.median(np.abs(mine / r_peer[inside] - 1.0)))


def our_theta_rad(run, rec: dict, wavelength: np.ndarray) -> np.ndarray:
    """Our θ(λ): the detector's nominal θ plus the gravity elevation, as the reduction uses it."""
    assert rec["gravity"] and rec["theta_source"] == "detector"
    coll, to_sample = workflow.gravity_geometry(run)
    theta = math.radians(rec["theta_deg"])
    return theta - gravity.elevation_at_sample(wavelength, theta, collimation_m=coll, slit_to_sample_m=to_sample)


def test_platypus_absolute_r_agrees_with_refnx_at_the_same_wavelength(ours):
    """refnx's points moved onto our θ(λ) (Q ∝ sin θ at each λ): the intensities agree, median
    |ratio − 1| < 3 % (1.9 %, 2.1 %, 2.6 % for 708, 709, 710)."""
    for run, ref in refnx_curves().items():
        s, rec, tof = ours[run]
        lam, q, r, omega = ref[:, 0], ref[:, 1], ref[:, 2], np.radians(ref[:, 4])
        q_on_ours = q * np.sin(our_theta_rad(tof, rec, lam)) / np.sin(omega)
        assert median_deviation(s.q, s.r, q_on_ours, r) < 0.03, run


def test_platypus_absolute_r_agrees_with_refnx_on_q_except_708s_angle(ours):
    """On Q as each reducer has it: 709 and 710 within 3 % (2.0 %, 2.5 %); 708 within 10 % (9.3 %),
    its θ being the difference (next test)."""
    tolerance = {708: 0.10, 709: 0.03, 710: 0.03}
    for run, ref in refnx_curves().items():
        s, _, _ = ours[run]
        assert median_deviation(s.q, s.r, ref[:, 1], ref[:, 2]) < tolerance[run], run


def _band_centre(run, rows: np.ndarray, wavelength: np.ndarray, band: tuple[float, float]) -> float:
    """Height [m] of the beam in one wavelength band: a Gaussian on a flat background."""
    sel = (wavelength >= band[0]) & (wavelength < band[1])
    prof = run.counts[rows][:, sel].sum(axis=1)
    centre, _ = gravity.gauss_fit(np.arange(rows.size, dtype=float), prof, np.sqrt(np.maximum(prof, 1.0)))
    pitch = (run.pixel_y_m[rows[-1]] - run.pixel_y_m[rows[0]]) / (rows.size - 1)
    return float(run.pixel_y_m[rows[0]] + centre * pitch)


def test_platypus_708_angle_per_wavelength_from_the_beams_is_ours(dataset, ours):
    """708 in total reflection (12-18 Å, clean specular beam), 1 Å bands: the measured
    ½·atan((y_R(λ) − y_D(λ) − 2|y_s(λ)|)/L) is within 0.002° of our θ(λ) and 0.006° or more below
    refnx's ω(λ). (The Si edge disagrees with both beams' geometry: ``test_refl_si_edge.py``.)"""
    from panreduce_reflectometry.readers import read_run

    db = read_run(dataset("platypus-refnx/PLP0000711.nx.hdf"), "PLP0000711.nx.hdf")
    _, rec, run = ours[708]
    ref = refnx_curves()[708]
    rows = np.arange(95, 136)  # both beams (pixel ~115) and 20 px of background on each side

    def centres(r):
        _, _, l2 = pixel_two_theta(r, theta_deg=0.0)
        e = core.tof_to_wavelength(r.tof_edges_us - r.tof_offset_us, float(r.source_to_sample_m + l2[115]))
        return 0.5 * (e[1:] + e[:-1])

    lam_r, lam_d = centres(run), centres(db)
    length = float(np.median(run.pixel_z_m))
    for lo in range(12, 18):
        band = (float(lo), lo + 1.0)
        y_r = _band_centre(run, rows, lam_r, band)
        y_d = _band_centre(db, rows, lam_d, band)
        mid = np.array([lo + 0.5])
        # the mirror image of the direct ray: y_R − y_D = 2L·tan θ(λ) + 2|y_s(λ)| (y_s < 0, the fall at the sample)
        y_s = float(gravity.drop_at(mid, *workflow.gravity_geometry(run))[0])
        measured = math.degrees(0.5 * math.atan((y_r - y_d + 2.0 * y_s) / length))
        mine = math.degrees(float(our_theta_rad(run, rec, mid)[0]))
        theirs = float(np.interp(mid[0], ref[:, 0], ref[:, 4]))
        assert mine == pytest.approx(measured, abs=0.002), band  # 0.0001-0.0014° here
        assert theirs - measured > 0.006, band  # 0.007-0.009° here
