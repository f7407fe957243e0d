"""The thz technique end to end on a simulated TELBE run with known jitter (250 fs rms)
and known χ3: jitter recovered, the corrected waveform on the truth, the third harmonic
within its reported uncertainties, and the stage-only waveform far off at 3f0."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
from thz_sim import axis_offset_ps, bin_averaged_truth, reduce

from panreduce_thz import spectra


@pytest.fixture(scope="module")
def reduced(sim_run, tmp_path_factory):
    summary, ctx = reduce(
        sim_run.folder, tmp_path_factory.mktemp("thz-out"), pixel_to_ps=0.0115, bin_ps=0.02, fundamental_thz=0.7
    )
    json.dumps(summary, allow_nan=False)
    return summary, ctx


def _nxdata(f, path):
    g = f[path]
    assert g.attrs["NX_class"] == "NXdata"
    return g


def test_outputs_nexus_csv_png(reduced):
    summary, ctx = reduced
    outputs = {o.name: o for o in ctx.outputs}
    assert set(outputs) == {"thz.nxs", "waveform.csv", "waveform.png", "spectrum.png", "jitter.png"}
    with h5py.File(outputs["thz.nxs"].path) as f:
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "waveform"
        w = _nxdata(f, "entry/waveform")
        assert w.attrs["signal"] == "signal" and list(w.attrs["axes"]) == ["delay"]
        assert w["delay"].attrs["units"] == "ps"
        assert {"signal", "signal_errors", "pulses"} <= set(w)
        s = _nxdata(f, "entry/spectrum")
        assert s["frequency"].attrs["units"] == "THz" and {"amplitude", "power"} <= set(s)
        assert f["entry/start_time"][()].decode() == "2018-06-13T05:35:02"
        delay, count = w["delay"][()], w["pulses"][()]
    # bin centres on the 0.02 ps grid, every pulse binned once
    np.testing.assert_allclose((delay / 0.02 - 0.5) % 1, 0, atol=1e-6)
    assert count.sum() == summary["pulses"] == 81 * 800
    with open(outputs["waveform.csv"].path) as fh:
        rows = list(csv.reader(line for line in fh if not line.startswith("#")))
    assert rows[0] == ["delay_ps", "signal", "error", "pulses"] and len(rows) == delay.size + 1
    assert summary["positions"] == 81 and summary["pulses_outside_grid"] == 0


def test_jitter_is_recovered(reduced):
    summary, _ = reduced
    # 64 800 pulses of 250 fs rms: the sample rms scatters by 0.3 %; timing error adds ~1 fs
    assert summary["jitter_rms_fs"] == pytest.approx(250.0, rel=0.015)


def test_corrected_waveform_matches_truth_and_beats_stage_only(reduced, sim_run):
    summary, ctx = reduced
    offset = axis_offset_ps(sim_run, summary["arrival_mean_px"])
    with h5py.File(ctx.out_dir / "thz.nxs") as f:
        w, u = f["entry/waveform"], f["entry/waveform_uncorrected"]
        t, y, e, n = (w[k][()] for k in ("delay", "signal", "signal_errors", "pulses"))
        tu, yu, eu, nu = (u[k][()] for k in ("delay", "signal", "signal_errors", "pulses"))
    truth = bin_averaged_truth(sim_run, t, 0.02, offset)
    ok = n >= 20
    chi2 = np.mean(((y - truth) / e)[ok] ** 2)
    assert 0.8 < chi2 < 1.25  # residuals are noise: the standard errors are honest
    filled = nu > 0
    chi2_stage = np.mean(((yu - sim_run.sample.response(tu - offset)) / eu)[filled] ** 2)
    assert chi2_stage > 20  # the stage-only waveform is smeared by the jitter


def test_third_harmonic_within_its_uncertainty(reduced, sim_run):
    summary, ctx = reduced
    offset = axis_offset_ps(sim_run, summary["arrival_mean_px"])
    with h5py.File(ctx.out_dir / "thz.nxs") as f:
        t = f["entry/waveform/delay"][()]
    truth = bin_averaged_truth(sim_run, t, 0.02, offset)
    ref = summary["phase_reference_ps"]
    expected = spectra.harmonic(spectra.prepare(t, truth, np.ones_like(t)), 2.1, reference_ps=ref)
    third = summary["harmonics"][2]
    assert third["order"] == 3 and third["frequency_thz"] == pytest.approx(2.1)
    assert abs(third["amplitude"] - expected.amplitude) < 3 * third["amplitude_err"]
    assert abs(third["phase_rad"] - expected.phase_rad) < 3 * third["phase_err_rad"]
    assert third["significance"] > 15
    # the phase referred to the pulse centre is the simulated phi3 = 0.6 rad
    at_centre = third["phase_rad"] - 2 * np.pi * 2.1 * (ref - sim_run.sample.centre_ps - offset)
    assert np.angle(np.exp(1j * (at_centre - 0.6))) == pytest.approx(0, abs=3 * third["phase_err_rad"] + 0.01)
    # no second harmonic in the model: consistent with zero
    assert summary["harmonics"][1]["amplitude"] < 3.5 * summary["harmonics"][1]["amplitude_err"]
    # stage only: the 250 fs jitter washes 3f0 out (exp(-(2π·2.1·0.25)²/2) ≈ 0.4 %)
    stage3 = summary["harmonics_uncorrected"][2]
    assert stage3["amplitude"] < 0.15 * expected.amplitude


def test_fundamental_found_from_the_data(sim_run, tmp_path):
    summary, _ = reduce(sim_run.folder, tmp_path, plots=False)
    # the spectral peak of a 1 ps Gaussian-enveloped 0.7 THz pulse
    assert summary["fundamental_thz"] == pytest.approx(0.7, abs=0.01)
    assert [h["order"] for h in summary["harmonics"]] == [1, 2, 3]


def test_integer_timing_gives_the_same_waveform_within_noise(sim_run, tmp_path):
    sub, _ = reduce(sim_run.folder, tmp_path / "a", plots=False, fundamental_thz=0.7)
    integer, _ = reduce(sim_run.folder, tmp_path / "b", plots=False, fundamental_thz=0.7, timing_method="integer")
    # 0.3 px (3.5 fs) quantisation hardly matters at 2.1 THz: both agree within errors
    a, b = sub["harmonics"][2], integer["harmonics"][2]
    assert abs(a["amplitude"] - b["amplitude"]) < 2 * a["amplitude_err"]


def test_pulse_table_on_request(sim_run, tmp_path):
    summary, ctx = reduce(sim_run.folder, tmp_path, plots=False, pulse_table=True, bin_ps=0.05)
    with h5py.File(ctx.out_dir / "thz.nxs") as f:
        g = f["entry/pulses"]
        assert g["delay"].shape == (summary["pulses"],) and g["delay"].attrs["units"] == "ps"
        px = g["arrival_pixel"][()]
    truth = np.concatenate(sim_run.truth.arrival_px)
    err = px - truth
    assert np.std(err) < 0.15  # px: the sub-pixel timing of every pulse


def test_offset_drops_unpaired_pulses(sim_run, tmp_path):
    summary, _ = reduce(sim_run.folder, tmp_path, plots=False, offset=3)
    assert summary["pulses"] == 81 * (800 - 3)
