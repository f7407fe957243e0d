"""Physics on the real runs: Platypus 708-710 with the direct beam 711 (absolute R), the
OFFSPEC polymer film 46992-46994 (SumInQ, monitor only) and INTER 61440."""

from __future__ import annotations

import math

import numpy as np
import pytest
from refl_helpers import critical_edge, fringe_period

from panreduce_reflectometry import workflow
from panreduce_reflectometry.params import ReflectometryParameters
from panreduce_reflectometry.readers import read_run
from panreduce_reflectometry.reduction import reduce_run

pytestmark = pytest.mark.data

# Si: SLD 2.07e-6 Å⁻², Qc = 4·sqrt(π·SLD) = 0.0102 1/Å
SI_QC = 4.0 * math.sqrt(math.pi * 2.07e-6)


def _reduce(runs, params, transmission=None):
    p = ReflectometryParameters.model_validate(params)
    step = workflow.common_step(runs, p)
    sets, records = [], []
    for i, run in enumerate(runs):
        plan = workflow.plan_run(run, i, len(runs), p)
        s, rec = workflow.reduce_one(run, plan, p, transmission=transmission, step=step, version="test", call="")
        sets.append(s)
        records.append(rec)
    return p, sets, records


@pytest.fixture(scope="module")
def platypus(dataset):
    runs = [read_run(dataset(f"platypus-refnx/PLP0000{n}.nx.hdf"), f"PLP0000{n}.nx.hdf") for n in (708, 709, 710)]
    db = read_run(dataset("platypus-refnx/PLP0000711.nx.hdf"), "PLP0000711.nx.hdf")
    p = ReflectometryParameters()
    t, _ = workflow.build_transmission([db], p, sample_roi=None)
    return (*_reduce(runs, {}, transmission=t), db)


def test_platypus_direct_beam_is_recognised_and_angles_come_from_the_logs(platypus):
    _, _, records, db = platypus
    assert db.is_direct_beam
    assert [r["theta_deg"] for r in records] == pytest.approx([0.5, 2.0, 6.5])
    assert all(r["theta_source"] == "log" and r["normalisation"] == "transmission" for r in records)


def test_platypus_total_reflection_plateau_is_one(platypus):
    _, sets, _, _ = platypus
    s = sets[0]  # 708: the direct beam was measured with the same slits
    plateau = (s.q > 0.0065) & (s.q < 0.009)
    assert plateau.sum() >= 5
    r = s.r[plateau]
    assert np.median(r) == pytest.approx(1.0, abs=0.05)
    assert np.all(np.abs(r - 1.0) < 0.07)


def test_platypus_critical_edge_is_that_of_silicon(platypus):
    _, sets, _, _ = platypus
    s = sets[0]
    # the first Q where R falls below 1/2
    q_half = s.q[np.argmax((s.q > 0.007) & (s.r < 0.5))]
    assert q_half == pytest.approx(SI_QC, rel=0.06)
    # above the edge R falls roughly as Q^-4 (Fresnel): R·Q⁴ stays within a factor 3 over 0.02-0.035
    hi = (s.q > 0.02) & (s.q < 0.035)
    rq4 = s.r[hi] * s.q[hi] ** 4
    assert rq4.max() / rq4.min() < 3


def test_platypus_angles_agree_in_their_overlaps_after_scaling(platypus):
    _, sets, records, _ = platypus
    stitched, info = workflow.stitch_sets(sets, records, manual=None, version="test", call="")
    factors = [f["factor"] for f in info["factors"]]
    assert factors[0] == 1.0
    # wider slits at higher angles: more intensity, factors below 1
    assert 0.05 < factors[1] < 0.5 and 0.005 < factors[2] < factors[1]
    for (a, ra), (b, rb) in (
        ((sets[0], factors[0]), (sets[1], factors[1])),
        ((sets[1], factors[1]), (sets[2], factors[2])),
    ):
        common, ia, ib = np.intersect1d(np.round(a.q, 10), np.round(b.q, 10), return_indices=True)
        assert common.size >= 3
        ratio = (b.r[ib] * rb) / (a.r[ia] * ra)
        assert np.median(ratio) == pytest.approx(1.0, abs=0.1)
    assert np.all(np.diff(stitched.q) > 0) and np.all(np.isfinite(stitched.r))


# refnx 0.1.x PlatypusReduce(711).reduce(70x, rebin_percent=5, λ 2.8-18): its beam centres
# (m_beampos, pixels; 711's after its gravity correction) and detector heights dz [mm]; its
# nominal ω = ½·atan((dz_R − dz_D + Δpixels × pitch)/dy) with dy = 2500.0073 mm is 0.5066°,
# 1.9771°, 6.4649° with its built-in pitch of 1.177 mm (these files carry no y_pixels_per_mm).
# The files' y_pixel_offset says 1.0407 mm, which the direct beam's fall confirms (below):
# refnx's ω with that pitch is what θ from the detector is held to.
REFNX_DIRECT_BEAM_PX = 115.381981
REFNX_BEAMS = {"PLP0000708": (43.637726, 115.87307958), "PLP0000709": (174.81754, 113.67705666)}
REFNX_BEAMS["PLP0000710"] = (577.17163, 112.64455999)


def refnx_omega_deg(run: str, pitch_mm: float) -> float:
    dz, px = REFNX_BEAMS[run]
    return math.degrees(0.5 * math.atan((dz - 3.1e-05 + (px - REFNX_DIRECT_BEAM_PX) * pitch_mm) / 2500.0073))


def test_platypus_detector_rows_count_upwards_gravity_pulls_the_direct_beam_down(platypus):
    """The sign of the pixel heights: long-λ neutrons of the direct beam, which fall most,
    land lower on the detector by the parabola's drop (1.5 mm more at 18 Å than at 3 Å)."""
    from panreduce_reflectometry import gravity

    db = platypus[3]
    rows = np.arange(105, 126)
    lam = workflow._wavelength_centres(db, rows)
    heights = [gravity.beam_height(db.counts, db.pixel_y_m, lam, (lo, lo + 2.0), rows=rows) for lo in (3.0, 16.0)]
    coll, to_sample = workflow.gravity_geometry(db)
    drop = gravity.drop_at(np.array([4.0, 17.0]), coll, to_sample + float(db.pixel_z_m[0]))
    assert heights[1] - heights[0] == pytest.approx(drop[1] - drop[0], rel=0.3)
    assert heights[1] < heights[0]


def test_platypus_pixel_pitch_from_the_direct_beams_fall_is_the_files(platypus):
    """The direct beam 711's Gaussian centre in 1 Å bands from 3 to 19 Å against the parabola's
    predicted drop (0.06-1.67 mm): the slope gives the pixel pitch, 1.06 mm, within 4 % of the
    file's y_pixel_offset spacing (1.0407 mm) and 10 % below refnx's built-in 1.177 mm."""
    from panreduce_reflectometry import gravity

    db = platypus[3]
    rows = np.arange(100, 131)
    lam = workflow._wavelength_centres(db, np.arange(112, 119))
    coll, to_sample = workflow.gravity_geometry(db)
    x = np.arange(rows.size, dtype=float)
    centres, drops = [], []
    for lo in np.arange(3.0, 19.0, 1.0):
        sel = (lam >= lo) & (lam < lo + 1.0)
        prof = db.counts[rows][:, sel].sum(axis=1)
        centres.append(gravity.gauss_fit(x, prof, np.sqrt(np.maximum(prof, 1.0)))[0])
        w = db.counts[rows][:, sel].sum(axis=0) + 1e-9
        drops.append(float(np.average(gravity.drop_at(lam[sel], coll, to_sample + float(db.pixel_z_m[0])), weights=w)))
    pitch = 1.0 / np.polyfit(drops, centres, 1)[0]  # m per pixel
    assert db.pixel_height_m == pytest.approx(1.0407e-3, rel=1e-3)
    assert pitch == pytest.approx(db.pixel_height_m, rel=0.04)
    assert pitch < 0.92 * 1.177e-3


@pytest.mark.parametrize("use_gravity", [False, True])
def test_platypus_theta_from_the_detector_matches_the_direct_beam_method_of_refnx(dataset, use_gravity):
    """θ = ½·atan((y_R − y_D)/L) against the direct beam 711, both beams' centres by the
    specular-ridge search, through the technique's load; θ from the detector is the default
    when the direct beam is given (no theta_from)."""
    from panreduce.storage import stage_paths
    from panreduce_reflectometry.technique import Technique

    files = [str(dataset(f"platypus-refnx/PLP0000{n}.nx.hdf")) for n in (708, 709, 710, 711)]
    t = Technique()
    p = t.validate_parameters({"transmission": "PLP0000711.nx.hdf", "gravity": use_gravity, "plots": False})
    units = t.units(stage_paths(files), p)
    plans = {u.run.run_number: workflow.plan_run(u.run, u.index, 3, p, u.loaded.direct_height_m) for u in units}
    assert all(pl.theta_source == "detector" for pl in plans.values())
    assert units[0].loaded.direct_height_m == pytest.approx(0.0049, abs=0.0005)  # 711's beam on the detector
    pitch_mm = 1000 * units[0].run.pixel_height_m
    # 708's reflected beam climbs with λ (it leaves the sample steeper, and gravity): refnx
    # takes its centre from the 19-21 Å tail; with gravity ours is that of an infinitely fast neutron
    for run in ("PLP0000709", "PLP0000710") if use_gravity else ("PLP0000708", "PLP0000709", "PLP0000710"):
        assert plans[run].theta_deg == pytest.approx(refnx_omega_deg(run, pitch_mm), abs=0.005)
    # and not the logged 2.0°/6.5°: the reflected beams sit 1.7 and 2.7 pixels off their nominal place
    assert abs(plans["PLP0000709"].theta_deg - 2.0) > 0.015 and abs(plans["PLP0000710"].theta_deg - 6.5) > 0.025
    assert plans["PLP0000708"].theta_deg == pytest.approx(0.5, abs=0.005)
    # theta_from=log keeps the logs
    p_log = t.validate_parameters({"transmission": "PLP0000711.nx.hdf", "theta_from": "log", "plots": False})
    units = t.units(stage_paths(files), p_log)
    assert units[0].loaded.direct_height_m is None
    assert workflow.plan_run(units[0].run, 0, 3, p_log, None).theta_source == "log"


def test_platypus_708_critical_edge_with_theta_from_the_detector(dataset):
    """Si's edge in 708 (direct-beam normalised, fitted with the slits' 2 % dQ/Q), θ from the
    detector: 0.01004 1/Å (1.6 % below Si's 0.0102; the log's 0.5° gives 0.01001); with the
    gravity correction of θ(λ) 0.01013 (0.7 % below). The same fit to refnx's 708 curve gives
    0.0102. The slits' 2 % is narrower than the data's resolution (6.7 % fitted, with the
    chopper's λ spread): with it fitted the edge is 1.36 % below Si's (``test_refl_si_edge.py``)."""
    from panreduce.storage import stage_paths
    from panreduce_reflectometry.technique import Technique

    files = [str(dataset(f"platypus-refnx/PLP0000{n}.nx.hdf")) for n in (708, 711)]
    t = Technique()
    qcs = {}
    for source, use_gravity in (("detector", False), ("log", False), ("detector", True)):
        p = t.validate_parameters(
            {"transmission": "PLP0000711.nx.hdf", "theta_from": source, "gravity": use_gravity, "plots": False}
        )
        (unit,) = t.units(stage_paths(files), p)
        plan = workflow.plan_run(unit.run, 0, 1, p, unit.loaded.direct_height_m)
        s, _ = workflow.reduce_one(
            unit.run, plan, p, transmission=unit.loaded.transmission, step=0.02, version="test", call=""
        )
        qcs[source, use_gravity] = critical_edge(s.q, s.r, s.dr, 0.02, 0.006, 0.02)
    assert qcs["detector", False] == pytest.approx(SI_QC, rel=0.02)
    assert abs(qcs["detector", False] - SI_QC) < abs(qcs["log", False] - SI_QC)
    assert qcs["detector", True] == pytest.approx(SI_QC, rel=0.01)


@pytest.fixture(scope="module")
def offspec(dataset):
    runs = [
        read_run(dataset(f"offspec-polymer/raw/OFFSPEC0004699{n}.nxs"), f"OFFSPEC0004699{n}.nxs") for n in (2, 3, 4)
    ]
    params = {
        "theta_deg": "0.5,1.5,2.5",
        "roi": "399-410,390-420,390-420",
        "summation": "q",
        "reduction_type": "non_flat_sample",
        "dq_q": 0.03,
    }
    return runs, _reduce(runs, params)


def test_offspec_reference_angles_and_q_range_match_the_isis_script(offspec):
    _, (_, sets, records) = offspec
    # 2θ_R of spectrum 404 at θ = 0.5° is 0.99607° (fact sheet); the ISIS script binned 46992
    # between 0.0085 and 0.055 1/Å, its data range
    assert records[0]["two_theta_r_deg"] == pytest.approx(0.99607, abs=2e-5)
    assert [r["two_theta_r_deg"] for r in records[1:]] == pytest.approx([3.004, 5.004], abs=0.002)
    assert 0.0075 < sets[0].q[0] < 0.0095 and 0.048 < sets[0].q[-1] < 0.056
    assert all(r["normalisation"] == "monitor" for r in records)


def test_offspec_kiessig_fringes_have_one_spacing_in_all_runs(dataset, offspec):
    runs, _ = offspec
    # finer bins (1 %) to resolve the fringes; each run where its fringes are strongest
    p = ReflectometryParameters.model_validate(
        {
            "theta_deg": "0.5,1.5,2.5",
            "roi": "399-410,390-420,390-420",
            "summation": "q",
            "reduction_type": "non_flat_sample",
            "dq_q": 0.01,
        }
    )
    windows = ((0.011, 0.05), (0.025, 0.06), (0.041, 0.08))
    periods = []
    for i, (run, window) in enumerate(zip(runs, windows, strict=True)):
        plan = workflow.plan_run(run, i, 3, p)
        s, _ = workflow.reduce_one(run, plan, p, transmission=None, step=0.01, version="t", call="")
        periods.append(fringe_period(s.q, s.r, *window))
    # ΔQ = 2π/d: a ~90 nm film; the three angles agree within 10 %
    assert all(0.0060 < per < 0.0078 for per in periods), periods
    assert max(periods) / min(periods) < 1.10
    assert 800 < 2 * math.pi / np.mean(periods) < 1050


def test_offspec_sum_in_q_and_sum_in_lambda_agree_on_the_total_counts(offspec):
    runs, _ = offspec
    run = runs[0]
    common = dict(
        theta_deg=0.5,
        roi=(399, 410),
        background_roi=None,
        reduction_type="non_flat_sample",
        wavelength_range=(2.0, 14.0),
        monitor_background=(15.0, 20.0),
        monitor_integration=(2.0, 14.0),
        transmission=None,
    )
    in_q = reduce_run(run, summation="q", **common)
    in_lambda = reduce_run(run, summation="lambda", **common)
    # summation in Q only moves counts between λ bins; its output range is cropped to the
    # projection of the λ range through the inner pixel corners, which loses a few per cent
    assert 0.9 * in_lambda.r.sum() < in_q.r.sum() <= in_lambda.r.sum()
    lam_v = 0.5 * (in_q.lambda_edges[1:] + in_q.lambda_edges[:-1])
    lam = 0.5 * (in_lambda.lambda_edges[1:] + in_lambda.lambda_edges[:-1])
    inside = (lam > lam_v[0] + 0.2) & (lam < lam_v[-1] - 0.2)
    inside_v = (lam_v > lam_v[0] + 0.2) & (lam_v < lam_v[-1] - 0.2)
    assert in_q.r[::-1][inside_v].sum() == pytest.approx(in_lambda.r[::-1][inside].sum(), rel=0.02)


def test_inter_61440_reduces_with_its_logged_angle_and_slit_resolution(dataset):
    run = read_run(dataset("inter-61440/INTER_61440_TOF_MantidSave.nxs"), "INTER_61440_TOF_MantidSave.nxs")
    assert run.theta_log_deg == pytest.approx(0.8, abs=1e-3)
    _, sets, records = _reduce(
        [run], {"roi": "70-90", "background_roi": "115-130", "wavelength_range": "1.2-17", "dq_q": 0.02}
    )
    rec, s = records[0], sets[0]
    assert rec["theta_source"] == "log" and rec["resolution_from"] == "slits"
    assert rec["resolution_dq_q"] == pytest.approx(0.079, abs=0.002)  # the title's "dq/q=0.08"
    # Mantid's reduction spanned 0.0103-0.1458 1/Å
    assert s.q[0] == pytest.approx(0.0103, rel=0.1) and s.q[-1] == pytest.approx(0.1458, rel=0.1)
    # D2O/air: R falls by > 2 decades over the range, and is positive where counts are
    assert s.r[:5].mean() / s.r[-5:].mean() > 100
