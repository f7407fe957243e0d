"""The full LOQ GFP batch (28 scattering runs summed into 3 samples and 1 can) on the real
ExPaNDS data, with physical checks, the sasdata round trip and the technique's options."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from sans_helpers import run_sans
from scipy.signal import savgol_filter

from panreduce import errors
from panreduce_sans.binning import bin_centres, rebin_edges

PARAMS = {"user_file": "USER_LOQ_125B.txt", "batch_file": "reduce-gfp.csv"}
SUMS = {  # fact sheet §1.1
    "GFP_1mgml": [75884, 75892, 75921, 75932, 75943, 75954, 75965],
    "GFP_5mgml": [75883, 75891, 75920, 75931, 75942, 75953, 75964],
    "GFP_10mgml": [75882, 75890, 75919, 75930, 75941, 75952, 75963],
}
CAN = [75881, 75889, 75918, 75929, 75940, 75951, 75962]


@pytest.fixture(scope="module")
def batch(gfp, tmp_path_factory):
    summary, outputs, logs = run_sans(
        list(gfp), {**PARAMS, "cansas_xml": True, "qxy": True}, tmp_path_factory.mktemp("gfp")
    )
    curves = {}
    for name in SUMS:
        with h5py.File(outputs[f"{name}.h5"]) as f:
            d = f["sasentry01/sasdata01"]
            curves[name] = (d["Q"][()], d["I"][()], d["Idev"][()])
    return summary, outputs, curves, logs


def test_one_output_per_row_named_by_the_batch(batch):
    summary, outputs, _, _ = batch
    assert summary["outputs"] == list(SUMS)
    for name in SUMS:
        for suffix in (".h5", ".png", ".xml", "_2d.h5"):
            assert Path(outputs[f"{name}{suffix}"]).stat().st_size > 0


def test_runs_are_summed_as_the_add_sets(batch):
    summary, _, _, logs = batch
    for row in summary["rows"]:
        assert row["sample_runs"] == SUMS[row["output"]]
        assert row["can_runs"] == CAN
        assert row["scale"] == pytest.approx(0.462943, abs=1e-6)
    assert any("75965-add: summed runs 75884, 75892" in line for line in logs)


def test_q_grid_is_the_user_files(batch):
    _, _, curves, _ = batch
    q = curves["GFP_1mgml"][0]
    assert q == pytest.approx(bin_centres(rebin_edges([0.008, 0.002, 0.08, -0.05, 0.285])))


def test_intensity_positive_and_smooth_within_its_errors(batch):
    _, _, curves, _ = batch
    for name, (_q, i, e) in curves.items():
        assert np.all(np.isfinite(i)) and np.all(e > 0)
        assert np.all(i > 0), name
        residual = (i - savgol_filter(i, 9, 2)) / e
        # a smooth curve through the points leaves residuals of the size of the error bars
        assert 0.2 < np.mean(residual**2) < 2.0, name
        assert np.abs(residual).max() < 4.0, name


def test_concentrations_ordered_and_scaling_at_low_q(batch):
    _, _, curves, _ = batch
    q, i1, _ = curves["GFP_1mgml"]
    i5, i10 = curves["GFP_5mgml"][1], curves["GFP_10mgml"][1]
    mid = q < 0.1
    assert np.all(i10[mid] > i5[mid]) and np.all(i5[mid] > i1[mid])
    low = q < 0.03
    assert i10[low].mean() / i5[low].mean() == pytest.approx(2.0, rel=0.15)
    assert i5[low].mean() / i1[low].mean() == pytest.approx(5.0, rel=0.3)


def test_guinier_radius_of_gfp(batch):
    _, _, curves, _ = batch
    q, i, e = curves["GFP_10mgml"]
    g = q < 0.05
    slope, _ = np.polyfit(q[g] ** 2, np.log(i[g]), 1, w=i[g] / e[g])
    rg = np.sqrt(-3 * slope)
    # GFP (27 kDa beta-barrel, ~24 x 42 Å): Rg about 20 Å; Guinier range q*Rg < 1.1
    assert 17.0 < rg < 25.0
    assert q[g].max() * rg < 1.3


def test_can_subtraction_leaves_little_at_high_q(batch):
    _, outputs, curves, _ = batch
    with h5py.File(outputs["GFP_1mgml.h5"]) as f:
        assert f["sasentry01/sasprocess/term01"][()].decode().split() == [str(r) for r in CAN]
    q, i1, _ = curves["GFP_1mgml"]
    # the buffer's flat background (~0.14 1/cm) is gone: 1 mg/ml leaves < 0.01 1/cm at Q > 0.2
    assert np.all(np.abs(i1[q > 0.2]) < 0.01)


def test_transmissions_between_zero_and_one(batch):
    summary, outputs, _, _ = batch
    for row in summary["rows"]:
        assert 0.7 < row["sample_transmission_mean"] < 0.95
        assert 0.7 < row["can_transmission_mean"] < 0.95
        assert row["sample_transmission_fit"][1] < 0  # T falls with wavelength
    with h5py.File(outputs["GFP_10mgml.h5"]) as f:
        e = f["sasentry01"]
        spectra = [e[k] for k in e if k.startswith("sastransmission_spectrum")]
        assert [s.attrs["name"] for s in spectra] == ["sample", "can"]
        for s in spectra:
            t, lam = s["T"][()], s["lambda"][()]
            assert lam[0] == pytest.approx(2.2 * (1 + 1.035) / 2, rel=1e-6) and lam.size == 44
            assert np.all((t > 0) & (t < 1))


def test_nxcansas_round_trip_through_sasdata(batch):
    from sasdata.dataloader.loader import Loader

    _, outputs, curves, _ = batch
    for name, (q, i, e) in curves.items():
        (data,) = Loader().load(str(outputs[f"{name}.h5"]))
        assert np.allclose(data.x, q) and np.allclose(data.y, i) and np.allclose(data.dy, e)
        assert data.title == name and data.run == [str(SUMS[name][0])]
        assert data.sample.thickness == pytest.approx(2.0) and data.sample.thickness_unit == "mm"
        assert data.instrument == "LOQ"
        assert data.detector[0].distance == pytest.approx(4.151)
        assert len(data.trans_spectrum) == 2
        assert all(np.all((t.transmission > 0) & (t.transmission < 1)) for t in data.trans_spectrum)
        assert "SET SCALES 1.4621" in str(data.meta_data)  # the user file travels with the result
        assert "provenance" not in name  # provenance is the kit's (embedded on publication)


def test_cansas_xml_round_trip_through_sasdata(batch):
    from sasdata.dataloader.loader import Loader

    _, outputs, curves, _ = batch
    q, i, e = curves["GFP_5mgml"]
    (data,) = Loader().load(str(outputs["GFP_5mgml.xml"]))
    assert np.allclose(data.x, q) and np.allclose(data.y, i) and np.allclose(data.dy, e)
    assert len(data.trans_spectrum) == 2


def test_two_dimensional_output(batch):
    from sasdata.dataloader.loader import Loader

    _, outputs, curves, _ = batch
    with h5py.File(outputs["GFP_10mgml_2d.h5"]) as f:
        d = f["sasentry01/sasdata01"]
        i, qx, qy = d["I"][()], d["Qx"][()], d["Qy"][()]
    assert i.shape == (100, 100) and qx.shape == i.shape
    # the azimuthal average of I(Qx,Qy) in a ring agrees with I(Q) there
    qr = np.hypot(qx, qy)
    ring = (qr > 0.03) & (qr < 0.05) & (i != 0)
    q1, i1, _ = curves["GFP_10mgml"]
    assert i[ring].mean() == pytest.approx(i1[(q1 > 0.03) & (q1 < 0.05)].mean(), rel=0.1)
    (data,) = Loader().load(str(outputs["GFP_10mgml_2d.h5"]))
    assert data.data.size == i.size


def test_explicit_add_runs_shards_and_options(gfp, tmp_path, batch):
    """A batch split by row gives the same row; explicit add_runs give the same sums."""
    _, _, curves, _ = batch
    add = {"75963-add": SUMS["GFP_10mgml"], "75962-add": CAN}
    summary, outputs, _ = run_sans(list(gfp), {**PARAMS, "add_runs": add, "plots": False}, tmp_path / "s", split=3)
    assert summary["shards"] == 3 and "GFP_10mgml" in summary["outputs"]
    with h5py.File(outputs["GFP_10mgml.h5"]) as f:
        i = f["sasentry01/sasdata01/I"][()]
        e = f["sasentry01/sasdata01/Idev"][()]
    assert np.array_equal(i, curves["GFP_10mgml"][1])
    # counting statistics alone: smaller error bars, identical intensities
    _, out2, _ = run_sans(
        list(gfp), {**PARAMS, "add_runs": add, "plots": False, "normalisation_errors": False}, tmp_path / "t", split=3
    )
    with h5py.File(out2["GFP_10mgml.h5"]) as f:
        assert np.array_equal(f["sasentry01/sasdata01/I"][()], i)
        e2 = f["sasentry01/sasdata01/Idev"][()]
    assert np.all(e2 <= e) and np.any(e2 < e)
    # splitting wavelength bins over Q bins changes I(Q) by much less than its errors on average
    _, out3, _ = run_sans(
        list(gfp), {**PARAMS, "add_runs": add, "plots": False, "q_assignment": "split"}, tmp_path / "u", split=3
    )
    with h5py.File(out3["GFP_10mgml.h5"]) as f:
        i3 = f["sasentry01/sasdata01/I"][()]
    assert not np.array_equal(i3, i)
    assert np.mean(np.abs(i3 - i) / e) < 1.0


def _copy_inputs(gfp, tmp_path, user_text=None, batch_text=None):
    raw, mantid = gfp
    m = tmp_path / "mantid"
    m.mkdir()
    for f in mantid.iterdir():
        (m / f.name).write_bytes(f.read_bytes())
    if user_text is not None:
        (m / "USER_LOQ_125B.txt").write_text(user_text)
    if batch_text is not None:
        (m / "reduce-gfp.csv").write_text(batch_text)
    return [raw, m]


def test_unknown_user_file_commands_refused_by_line(gfp, tmp_path, dataset):
    text = dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text() + "\nFROBNICATE 3\n"
    inputs = _copy_inputs(gfp, tmp_path, user_text=text)
    with pytest.raises(errors.InvalidInput) as err:
        run_sans(inputs, PARAMS, tmp_path / "x")
    line = len(text.splitlines())
    assert "USER_LOQ_125B.txt" in str(err.value) and f"line {line}: unknown command: 'FROBNICATE 3'" in str(err.value)


def test_unknown_commands_can_be_downgraded_to_warnings(gfp, tmp_path, dataset):
    text = dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text() + "\nFROBNICATE 3\n"
    batch_text = "sample_sans,75884,sample_trans,75876,sample_direct_beam,75869,output_as,one\n"
    inputs = _copy_inputs(gfp, tmp_path, user_text=text, batch_text=batch_text)
    summary, outputs, _logs = run_sans(inputs, {**PARAMS, "unknown_commands": "warn", "plots": False}, tmp_path / "x")
    assert summary["outputs"] == ["one"] and "one.h5" in outputs
    assert any(f"line {len(text.splitlines())}" in w for w in summary["warnings"])


def test_missing_run_is_not_found(gfp, tmp_path):
    inputs = _copy_inputs(gfp, tmp_path, batch_text="sample_sans,12345,output_as,x\n")
    with pytest.raises(errors.InputNotFound, match="12345"):
        run_sans(inputs, PARAMS, tmp_path / "x")


def test_unimplemented_user_file_settings_are_refused(gfp, tmp_path, dataset):
    text = dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text() + "\nDET/CORR/REAR/X 2\n"
    inputs = _copy_inputs(gfp, tmp_path, user_text=text)
    with pytest.raises(errors.InvalidInput, match=r"line 38: detector position corrections \(DET/CORR\) is not"):
        run_sans(inputs, PARAMS, tmp_path / "x")


def test_row_masks_on_the_modular_hab_are_refused(gfp, tmp_path, dataset):
    text = dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text().replace("DET/MAIN", "DET/HAB")
    inputs = _copy_inputs(gfp, tmp_path, user_text=text + "\nMASK/FRONT H3\n")
    with pytest.raises(errors.InvalidInput, match="not defined on the modular HAB"):
        run_sans(inputs, PARAMS, tmp_path / "x")


def test_acceptance_command_through_the_cli(gfp, tmp_path):
    raw, mantid = gfp
    out = tmp_path / "out"
    cli = Path(sys.executable).with_name("panreduce")
    proc = subprocess.run(
        [
            str(cli),
            "reduce",
            "sans",
            f"{raw}/",
            f"{mantid}/",
            "-p",
            "user_file=USER_LOQ_125B.txt",
            "-p",
            "batch_file=reduce-gfp.csv",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} >= {"GFP_1mgml.h5", "GFP_5mgml.h5", "GFP_10mgml.h5", "provenance.json"}


def test_wide_angle_correction_changes_high_q_slightly(gfp, tmp_path, dataset, batch):
    _, _, curves, _ = batch
    text = dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text() + "\nSAMPLE/PATH/ON\n"
    batch_text = (
        "sample_sans,75963-add,sample_trans,75874,sample_direct_beam,75869,"
        "can_sans,75962-add,can_trans,75873,can_direct_beam,75869,output_as,GFP_10mgml\n"
    )
    inputs = _copy_inputs(gfp, tmp_path, user_text=text, batch_text=batch_text)
    _, outputs, _ = run_sans(inputs, {**PARAMS, "plots": False}, tmp_path / "x")
    with h5py.File(outputs["GFP_10mgml.h5"]) as f:
        i = f["sasentry01/sasdata01/I"][()]
    ref = curves["GFP_10mgml"][1]
    # at 2theta <= 5.8 deg and T ~ 0.8 the correction is below 0.2 %: C ~ 1 + A ln(T)/2 < 1
    rel = i / ref - 1
    assert np.all(np.abs(rel[:20]) < 2e-4) and np.all(np.abs(rel) < 0.05)
    assert not np.array_equal(i, ref)


def test_q_resolution_when_the_collimation_is_given(gfp, tmp_path, dataset):
    text = dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text()
    text += "\nQRESOL/ON\nQRESOL/A1=20\nQRESOL/A2=8\nQRESOL/LCOLLIM=4\nQRESOL/DELTAR=5\n"
    batch_text = "sample_sans,75884,sample_trans,75876,sample_direct_beam,75869,output_as,one\n"
    inputs = _copy_inputs(gfp, tmp_path, user_text=text, batch_text=batch_text)
    _, outputs, _ = run_sans(inputs, {**PARAMS, "plots": False}, tmp_path / "x")
    with h5py.File(outputs["one.h5"]) as f:
        q = f["sasentry01/sasdata01/Q"][()]
        dq = f["sasentry01/sasdata01/Qdev"][()]
    # geometric floor at low Q: 2 pi/(sqrt(12) lambda) * sqrt(3(R1/L1)^2 + ...) ~ 1e-3 1/Å at 5 Å
    assert np.all(dq > 0)
    assert 5e-4 < dq[0] < 3e-3
    # at high Q the wavelength-bin width (3.5 %/sqrt(12) ~ 1 %) and geometry give a few per cent
    assert 0.005 < dq[-1] / q[-1] < 0.05
    assert dq[-1] > 2 * dq[q > 0.05][0]  # grows with Q (counts-weighted means scatter a little)


def test_batch_thickness_override_scales_inversely(gfp, tmp_path, batch):
    """sample_thickness in the batch row replaces the sample block's 2 mm for sample and can:
    a Disc of 4 mm has twice the volume, so I halves exactly."""
    _, _, curves, _ = batch
    batch_text = (
        "sample_sans,75963-add,sample_trans,75874,sample_direct_beam,75869,can_sans,75962-add,"
        "can_trans,75873,can_direct_beam,75869,output_as,GFP_10mgml,sample_thickness,4.0\n"
    )
    inputs = _copy_inputs(gfp, tmp_path, batch_text=batch_text)
    summary, outputs, _ = run_sans(inputs, {**PARAMS, "plots": False}, tmp_path / "x")
    with h5py.File(outputs["GFP_10mgml.h5"]) as f:
        i = f["sasentry01/sasdata01/I"][()]
        assert f["sasentry01/sassample/thickness"][()] == pytest.approx(4.0)
    assert i == pytest.approx(curves["GFP_10mgml"][1] / 2, rel=1e-12)
    assert summary["rows"][0]["volume_mm3"] == pytest.approx(2 * 100.531, abs=1e-3)
