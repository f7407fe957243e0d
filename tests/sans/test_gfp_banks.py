"""The high-angle bank, merged banks, gravity and sectors on the real LOQ GFP data.

The user file is the GFP one with DET/MERGED (HAB rescale and shift fitted to the main bank)
and L/Q extended to 1 1/Å so that the HAB's Q range is kept."""

import dataclasses

import h5py
import numpy as np
import pytest
from sans_helpers import run_sans

from panreduce_sans.instrument import LOQ, LOQ_HAB_LAYOUT_NOTE, ModularBank, pixel_geometry

ONE_ROW = (
    "sample_sans,75963-add,sample_trans,75874,sample_direct_beam,75869,"
    "can_sans,75962-add,can_trans,75873,can_direct_beam,75869,output_as,GFP_10mgml\n"
)
ROWS = ("GFP_1mgml", "GFP_5mgml", "GFP_10mgml")
Q_TO_1 = "L/Q .008,0.002,0.08,-0.05,1.0"


def _inputs(gfp, tmp_path, user_text, batch_text=None):
    raw, mantid = gfp
    m = tmp_path / "mantid"
    m.mkdir(parents=True)
    for f in mantid.iterdir():
        (m / f.name).write_bytes(f.read_bytes())
    (m / "USER.txt").write_text(user_text)
    if batch_text is not None:
        (m / "reduce-gfp.csv").write_text(batch_text)
    return [raw, m]


def _user(dataset, det="DET/MAIN", extra=""):
    text = dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text()
    return text.replace("DET/MAIN", det).replace("L/Q .008,0.002,0.08,-0.05,0.285", Q_TO_1) + "\n" + extra


def _curve(path):
    with h5py.File(path) as f:
        d = f["sasentry01/sasdata01"]
        return d["Q"][()], d["I"][()], d["Idev"][()]


def _run(gfp, tmp_path, user_text, batch_text=None, **params):
    inputs = _inputs(gfp, tmp_path, user_text, batch_text)
    return run_sans(
        inputs, {"user_file": "USER.txt", "batch_file": "reduce-gfp.csv", "plots": False, **params}, tmp_path / "out"
    )


@pytest.fixture(scope="module")
def merged(gfp, dataset, tmp_path_factory):
    text = _user(dataset, "DET/MERGED\nDET/RESCALE/FIT\nDET/SHIFT/FIT")
    summary, outputs, logs = _run(gfp, tmp_path_factory.mktemp("merged"), text, plots=True)
    return summary, outputs, logs


@pytest.fixture(scope="module")
def main_only(gfp, dataset, tmp_path_factory):
    summary, outputs, _ = _run(gfp, tmp_path_factory.mktemp("main"), _user(dataset), ONE_ROW)
    return summary, _curve(outputs["GFP_10mgml.h5"])


def test_merged_writes_the_merge_and_each_bank(merged):
    summary, outputs, _ = merged
    assert summary["detector"] == "merged"
    for row in ROWS:
        for suffix in ("", "_main", "_hab"):
            assert f"{row}{suffix}.h5" in outputs and f"{row}{suffix}.png" in outputs
    assert summary["pixels_used_by_bank"] == {"main": 15784, "hab": 1392}
    # the HAB layout is provisional, and the service says so
    assert LOQ_HAB_LAYOUT_NOTE in summary["warnings"]


def test_main_bank_of_the_merge_is_the_main_only_reduction(merged, main_only):
    _, outputs, _ = merged
    q, i, e = _curve(outputs["GFP_10mgml_main.h5"])
    q0, i0, e0 = main_only[1]
    assert np.array_equal(q, q0) and np.array_equal(i, i0) and np.array_equal(e, e0)


def test_hab_covers_wide_angles_and_orders_the_concentrations(merged):
    _, outputs, _ = merged
    curves = {row: _curve(outputs[f"{row}_hab.h5"]) for row in ROWS}
    q = curves["GFP_10mgml"][0]
    has = curves["GFP_10mgml"][2] > 0
    # 2theta 10.5-30 degrees at 0.58 m and 2.2-10 Å: from Q = 0.11 up past the end of L/Q at 1 1/Å
    assert 0.10 < q[has].min() < 0.12 and q[has].max() > 0.9
    low = (q > 0.11) & (q < 0.16)
    mean = {row: curves[row][1][low].mean() for row in ROWS}
    assert mean["GFP_10mgml"] > mean["GFP_5mgml"] > mean["GFP_1mgml"] > 0
    assert mean["GFP_10mgml"] / mean["GFP_5mgml"] == pytest.approx(2.0, rel=0.25)


def _overlap_chi2(summary, outputs, row):
    """chi2/dof of the main bank against the rescaled and shifted HAB where both have data."""
    r = next(x for x in summary["rows"] if x["output"] == row)
    s, c = r["merge_rescale"], r["merge_shift"]
    _, i_m, e_m = _curve(outputs[f"{row}_main.h5"])
    _, i_h, e_h = _curve(outputs[f"{row}_hab.h5"])
    both = (e_m > 0) & (e_h > 0)
    assert both.sum() >= 15
    return np.sum(((i_m - s * i_h - c) ** 2 / (e_m**2 + s * s * e_h**2))[both]) / (both.sum() - 2), s


def test_hab_and_main_banks_agree_in_shape_where_they_overlap(merged):
    """After the fitted rescale and shift the two banks agree within their errors."""
    summary, outputs, _ = merged
    rescale = {}
    for row in ("GFP_5mgml", "GFP_10mgml"):
        chi2, rescale[row] = _overlap_chi2(summary, outputs, row)
        assert chi2 < 2.0
    # the rescale is a property of the instrument, not of the sample
    assert rescale["GFP_5mgml"] == pytest.approx(rescale["GFP_10mgml"], rel=0.1)
    assert 1.0 < rescale["GFP_10mgml"] < 3.0


def test_a_wrong_hab_layout_is_rejected_by_the_data(gfp, dataset, tmp_path, monkeypatch):
    """Rows counted from the other end of each module put the point nearest the beam at row 8
    instead of 20: the two banks then disagree in shape (chi2/dof > 4)."""
    from panreduce_sans import instrument

    flipped = []
    for m in LOQ.hab.modules:
        slow = np.array(m.slow)
        origin = np.array([m.x0, m.y0]) + slow * (m.ny - 1) * m.dy
        flipped.append(dataclasses.replace(m, x0=float(origin[0]), y0=float(origin[1]), slow=tuple(-slow)))
    wrong = dataclasses.replace(LOQ, hab=ModularBank("HAB", tuple(flipped)))
    monkeypatch.setitem(instrument.INSTRUMENTS, "LOQ", wrong)
    batch = ONE_ROW + ONE_ROW.replace("75963-add", "75964-add").replace("75874", "75875").replace("GFP_10", "GFP_5")
    summary, outputs, _ = _run(gfp, tmp_path, _user(dataset, "DET/MERGED\nDET/RESCALE/FIT\nDET/SHIFT/FIT"), batch)
    chi2 = [_overlap_chi2(summary, outputs, row)[0] for row in ("GFP_5mgml", "GFP_10mgml")]
    assert min(chi2) > 4.0


def test_merged_curve_is_main_below_the_overlap_and_rescaled_hab_above(merged):
    summary, outputs, _ = merged
    r = next(x for x in summary["rows"] if x["output"] == "GFP_10mgml")
    lo, hi = r["merge_range"]
    q, i, e = _curve(outputs["GFP_10mgml.h5"])
    _, i_m, _ = _curve(outputs["GFP_10mgml_main.h5"])
    _, i_h, e_h = _curve(outputs["GFP_10mgml_hab.h5"])
    s, c = r["merge_rescale"], r["merge_shift"]
    below, above = q < lo, q > hi
    assert np.allclose(i[below], i_m[below], rtol=1e-12, atol=1e-15)
    assert np.allclose(i[above], s * (i_h[above] + c)) and np.allclose(e[above], s * e_h[above])
    # inside, the merge agrees with both banks, and is better determined than either
    inside = (q >= lo) & (q <= hi)
    _, _, e_m = _curve(outputs["GFP_10mgml_main.h5"])
    assert np.all(np.abs(i - i_m)[inside] < 3 * e_m[inside])
    assert np.all(np.abs(i - s * (i_h + c))[inside] < 3 * s * e_h[inside])
    assert np.all(e[inside] < np.minimum(e_m, s * e_h)[inside])
    assert np.all(i[q < 0.5] > 0)


def test_merged_nxcansas_reads_back_with_sasdata_and_records_the_merge(merged):
    from sasdata.dataloader.loader import Loader

    _, outputs, _ = merged
    data = Loader().load(str(outputs["GFP_10mgml.h5"]))
    assert len(data) == 1 and data[0].x.size == _curve(outputs["GFP_10mgml.h5"])[0].size
    with h5py.File(outputs["GFP_10mgml.h5"]) as f:
        terms = {
            d.attrs["name"]: d[()].decode()
            for d in f["sasentry01/sasprocess"].values()
            if isinstance(d, h5py.Dataset) and "name" in d.attrs
        }
        assert terms["detector"] == "merged" and "(fitted)" in terms["merge"]
        assert "provisional" in terms["hab_geometry"]
        assert f["sasentry01/sasinstrument/sasdetector/name"][()].decode() == "main-detector-bank + HAB"
    with h5py.File(outputs["GFP_10mgml_hab.h5"]) as f:
        assert f["sasentry01/sasinstrument/sasdetector/SDD"][()] == pytest.approx(0.581)
        assert f["sasentry01/sasinstrument/sasdetector/x_pixel_size"][()] == pytest.approx(12.0)


def test_det_hab_alone_and_det_both(gfp, dataset, tmp_path, merged):
    _, outputs_m, _ = merged
    summary, outputs, _ = _run(gfp, tmp_path / "hab", _user(dataset, "DET/FRONT"), ONE_ROW)
    assert summary["outputs"] == ["GFP_10mgml"] and summary["pixels_used"] == 1392
    assert np.array_equal(_curve(outputs["GFP_10mgml.h5"])[1], _curve(outputs_m["GFP_10mgml_hab.h5"])[1])
    summary, outputs, _ = _run(gfp, tmp_path / "both", _user(dataset, "DET/BOTH"), ONE_ROW)
    assert summary["outputs"] == ["GFP_10mgml_main", "GFP_10mgml_hab"]


def test_fixed_rescale_and_overlap_from_the_user_file(gfp, dataset, tmp_path):
    text = _user(dataset, "DET/MERGED\nDET/RESCALE 2.0\nDET/SHIFT 0.001\nDET/OVERLAP 0.15 0.25")
    summary, outputs, _ = _run(gfp, tmp_path, text, ONE_ROW)
    row = summary["rows"][0]
    assert (row["merge_rescale"], row["merge_shift"]) == (2.0, 0.001)
    assert row["merge_range"] == [0.15, 0.25]
    q, i, _ = _curve(outputs["GFP_10mgml.h5"])
    _, i_m, _ = _curve(outputs["GFP_10mgml_main.h5"])
    _, i_h, _e_h = _curve(outputs["GFP_10mgml_hab.h5"])
    assert np.allclose(i[q < 0.15], i_m[q < 0.15])  # the HAB has data from 0.11, but the range starts at 0.15
    assert np.allclose(i[q > 0.25], 2.0 * (i_h[q > 0.25] + 0.001))


def test_gravity_changes_the_main_bank_curve_slightly(gfp, dataset, tmp_path, main_only):
    _, outputs, _ = _run(gfp, tmp_path, _user(dataset, extra="GRAVITY ON\n"), ONE_ROW)
    _q, i, _e = _curve(outputs["GFP_10mgml.h5"])
    _, i0, e0 = main_only[1]
    good = (e0 > 0) & (e0 < 0.05 * np.abs(i0))
    rel = np.abs(i[good] / i0[good] - 1)
    # a drop of at most 0.54 mm (10 Å over 4.15 m) on 5 mm pixels: a change, but well below 1 %
    assert 0 < rel.max() < 0.01


def test_a_sector_of_isotropic_scattering_agrees_with_the_full_average(gfp, dataset, tmp_path, main_only):
    summary, outputs, _ = _run(gfp, tmp_path, _user(dataset, extra="L/PHI -45 45\n"), ONE_ROW)
    full_pixels = main_only[0]["pixels_used"]
    # two opposite 90-degree sectors: about half the pixels
    assert summary["pixels_used"] == pytest.approx(full_pixels / 2, rel=0.05)
    q, i, e = _curve(outputs["GFP_10mgml.h5"])
    _, i0, e0 = main_only[1]
    ok = (e > 0) & (q < 0.28)
    z = (i[ok] - i0[ok]) / np.sqrt(np.maximum(e[ok] ** 2 - e0[ok] ** 2, 1e-30))
    assert np.mean(np.abs(z) < 3) > 0.9
    assert np.std(e[ok] / e0[ok]) < 0.5 and np.median(e[ok] / e0[ok]) == pytest.approx(np.sqrt(2), rel=0.15)


def test_a_beam_stop_arm_mask_removes_a_strip_of_pixels(gfp, dataset, tmp_path, main_only):
    summary, _, _ = _run(gfp, tmp_path, _user(dataset, extra="MASK/LINE 20 90\nMASK H20>H25+V90>V99\n"), ONE_ROW)
    removed = main_only[0]["pixels_used"] - summary["pixels_used"]
    # by hand: pixels of the radius band 35-419 mm (rows 126-127 masked) whose centre lies within
    # 10 mm of the arm going up from the beam axis, or in rows 20-25 and columns 90-99
    geo = pixel_geometry(LOQ.main, sample_z=10.999, shift=LOQ.beam_centre_shift((0.32339, 0.330748)))
    ix, iy = LOQ.main.indices()
    band = (geo.radius >= 0.035) & (geo.radius <= 0.419) & (iy < 126)
    arm = (np.abs(geo.x) <= 0.010) & (geo.y >= 0)
    box = (iy >= 20) & (iy <= 25) & (ix >= 90) & (ix <= 99)
    assert np.sum(band & box) == 60 and np.sum(band & arm) > 200  # the box lies wholly inside the band
    assert removed == int(np.sum(band & (arm | box)))
