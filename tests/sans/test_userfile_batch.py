"""The ISIS user-file parser (every command of USER_LOQ_125B.txt, variants, bad lines) and the
batch CSV and RKH readers."""

import numpy as np
import pytest

from panreduce_sans.batch import BatchError, parse_batch, parse_rkh, parse_run_ref
from panreduce_sans.userfile import parse_user_file


@pytest.fixture(scope="module")
def loq_user_file(dataset):
    return parse_user_file(dataset("loq-gfp/mantid-files/USER_LOQ_125B.txt").read_text())


def test_every_command_of_the_gfp_user_file(loq_user_file):
    uf = loq_user_file
    assert uf.problems == []
    assert uf.instrument == "LOQ"
    assert uf.detector == "main"
    assert (uf.radius_min, uf.radius_max) == (35.0, 419.0)
    assert uf.wavelength_rebin == [2.2, -0.035, 10.0]
    assert uf.q_rebin == [0.008, 0.002, 0.08, -0.05, 0.285]
    assert (uf.qxy_max, uf.qxy_step) == (0.1, 0.002)
    assert uf.monitor_background == (31000.0, 39000.0)
    for which in ("sample", "can"):
        fit = uf.fit_for(which)
        assert (fit.method, fit.lambda_min, fit.lambda_max) == ("log", 2.2, 10.0)
    assert uf.direct_files == {"main": "DIRECT_LOQ_MAIN_124.txt", "hab": "DIRECT_LOQ_HAB_983.txt"}
    assert uf.flat_files == {"main": "FLAT_CELL_LOQ_MAIN_115.txt"}
    assert uf.mask_rows == [("main", 126), ("main", 127)]
    assert [(m.t_min, m.t_max, m.line) for m in uf.time_masks] == [(19711.5, 21228.5, 21), (39354.5, 41348.5, 22)]
    assert uf.sample_offset == -1.0
    assert uf.centre == (323.39, 330.748)
    assert uf.centre_hab == (322.19, 320.875)
    assert uf.scales == [1.4621, 1.179, 1.233, 1.244, 1.216]
    assert len(uf.prints) == 6
    # commented-out masks (!MASK S16641) are not applied
    assert uf.mask_spectra == []


def test_unknown_and_bad_lines_are_reported_by_line_number():
    text = "LOQ\nFOO/BAR 1 2\nL/WAV 2.2 ten .035/LOG\nMASK H3>Z7\nSET CENTRE 1\n! fine\nL/Q 0.01 0.2 0.01/SQRT\n"
    uf = parse_user_file(text)
    got = {(p.line, p.kind) for p in uf.problems}
    assert got == {(2, "unknown"), (3, "invalid"), (4, "invalid"), (5, "invalid"), (7, "invalid")}
    assert "line 2" in str(uf.problems[0]) and "FOO/BAR" in str(uf.problems[0])


def test_command_variants():
    uf = parse_user_file(
        "\n".join(
            [
                "SANS2D",
                "DET/REAR",
                "MASK/CLEAR",
                "MASK V3>V5",
                "MASK S10>S12",
                "MASK/REAR H0",
                "MASK/FRONT/T 100 200",
                "L/Q 0.01 0.2 0.01/LIN",
                "L/WAV 2 14 0.5",
                "FIT/TRANS/SAMPLE/LIN 3 9",
                "FIT/TRANS/CAN/POLYNOMIAL3",
                "FIT/MONITOR 17500 22000",
                "MON/SPECTRUM=1/INTERPOLATE",
                "MON/TRANS/SPECTRUM=4",
                "MON/LENGTH=17.9 1",
                "BACK/M1/TIMES 85000 98000",
                "BACK/TRANS 30000 40000",
                "SAMPLE/PATH/ON",
                "GRAVITY ON",
                "GRAVITY/LEXTRA=2.0",
                "QRESOL/ON",
                "QRESOL/A1=20",
                "QRESOL/A2=8",
                "QRESOL/LCOLLIM=4",
                "QRESOL/DELTAR=5",
                "L/Q/RCUT 100",
                "L/Q/WCUT 8",
                "L/EVENTSTIME 7000,500,60000",
                "SET CENTRE/HAB 1 2",
                "MASK/LINE 30 170",
                "L/PHI -30 30",
                "MASK H10>H12+V20>V22",
                "MASK/REAR V5+H7",
                "MASK/LINE 20 45 1.5 -2",
                "DET/CORR/FRONT/X 2",
            ]
        )
    )
    assert uf.instrument == "SANS2D" and uf.detector == "main"
    assert uf.mask_columns == [("main", 3), ("main", 4), ("main", 5)]
    assert uf.mask_spectra == [10, 11, 12]
    assert uf.mask_rows == [("main", 0)]
    assert uf.time_masks[0].detector == "hab"
    assert uf.q_rebin == [0.01, 0.01, 0.2] and uf.wavelength_rebin == [2.0, 0.5, 14.0]
    assert uf.fit_for("sample").method == "linear" and uf.fit_for("sample").lambda_min == 3.0
    assert uf.fit_for("can").method == "polynomial" and uf.fit_for("can").order == 3
    assert uf.prompt_peak == (17500.0, 22000.0)
    assert (uf.incident_monitor, uf.incident_monitor_interpolate, uf.transmission_monitor) == (1, True, 4)
    assert uf.monitor_lengths == {1: 17.9}
    assert uf.monitor_background_by_spectrum == {1: (85000.0, 98000.0)}
    assert uf.transmission_background == (30000.0, 40000.0)
    assert uf.sample_path and uf.gravity and uf.gravity_extra_length == 2.0
    assert uf.qresol.on and (uf.qresol.a1, uf.qresol.a2, uf.qresol.collimation_length, uf.qresol.delta_r) == (
        20,
        8,
        4,
        5,
    )
    assert (uf.radius_cut, uf.wave_cut) == (100.0, 8.0)
    assert uf.events_binning == [7000.0, 500.0, 60000.0]
    assert uf.mask_lines == [(20.0, 45.0, 1.5, -2.0)]  # one arm: the later MASK/LINE replaces the earlier
    assert uf.phi == (-30.0, 30.0, True)
    assert uf.mask_boxes == [("main", (10, 12), (20, 22)), ("main", (7, 7), (5, 5))]
    # understood but not implemented: reported, not silently dropped
    assert [(p.line, p.kind) for p in uf.problems] == [(35, "unsupported")]


def test_merge_and_sector_commands():
    uf = parse_user_file(
        "DET/MERGED\nDET/RESCALE 1.5\nDET/SHIFT -0.02\nDET/OVERLAP 0.1 0.25\nL/PHI/NOMIRROR 170 -170\n"
    )
    assert uf.detector == "merged"
    m = uf.merge
    assert (m.rescale, m.shift, m.overlap, m.fit_rescale, m.fit_shift) == (1.5, -0.02, (0.1, 0.25), False, False)
    assert uf.phi == (170.0, -170.0, False)
    uf = parse_user_file("DET/BOTH\nDET/RESCALE/FIT 0.12 0.2\nDET/SHIFT/FIT\nDET/FRONT\n")
    assert uf.detector == "hab" and uf.problems == []
    assert (uf.merge.fit_rescale, uf.merge.fit_shift, uf.merge.fit_range) == (True, True, (0.12, 0.2))


@pytest.mark.parametrize(
    "line, fragment",
    [
        ("DET/RESCALE 0", "must be positive"),
        ("DET/RESCALE/FIT 0.2", "no range or a range"),
        ("DET/SHIFT/FIT 0.3 0.2", "no range or a range"),
        ("DET/OVERLAP 0.3", "expected 2"),
        ("DET/OVERLAP 0.3 0.1", "q1 < q2"),
        ("DET/SHIFT/WIGGLE 1", "unknown qualifier"),
        ("L/PHI 10 200", "-180..180"),
        ("MASK/LINE 0 45", "width must be positive"),
        ("MASK/LINE 10 45 3", "both x and y"),
        ("MASK H1+H2", "one H and one V"),
        ("MASK H1+S2", "cannot read box mask"),
        ("MASK/FRONT/LINE 20 90", "main (rear) bank only"),
        ("SAMPLE/OFFSET x", "not a number"),
    ],
)
def test_bad_merge_sector_and_mask_lines_are_named(line, fragment):
    uf = parse_user_file(f"LOQ\n{line}\n")
    assert [(p.line, p.kind) for p in uf.problems] == [(2, "invalid")]
    assert fragment in str(uf.problems[0])


def test_mask_clear_resets_earlier_masks():
    uf = parse_user_file("MASK H1\nMASK/T 1 2\nMASK/CLEAR\nMASK/CLEAR/TIME\nMASK H5")
    assert uf.mask_rows == [("main", 5)] and uf.time_masks == []


def test_the_gfp_batch_file(dataset):
    rows, header = parse_batch(dataset("loq-gfp/mantid-files/reduce-gfp.csv").read_text())
    assert header["for_instrument"] == "LOQ"
    assert [r.output_as for r in rows] == ["GFP_1mgml", "GFP_5mgml", "GFP_10mgml"]
    assert [r.sample_sans.label for r in rows] == ["75965-add", "75964-add", "75963-add"]
    assert all(r.can_sans.label == "75962-add" and r.can_trans.number == 75873 for r in rows)
    assert all(r.sample_direct_beam.number == r.can_direct_beam.number == 75869 for r in rows)
    assert [r.line for r in rows] == [2, 3, 4]


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("sample_sans,1,colour,red\n", "line 1: unknown key 'colour'"),
        ("sample_sans,1,output_as\n", "line 1: expected key,value pairs"),
        ("output_as,x\n", "line 1: no sample_sans"),
        ("sample_sans,abc\n", "line 1: 'abc' is not a run number"),
        ("sample_sans,1,sample_trans,2\n", "line 1: sample_trans and sample_direct_beam go together"),
        ("sample_sans,1,output_as,a\nsample_sans,2,output_as,a\n", "used by more than one row"),
        ("sample_sans,1,output_as,../x\n", "plain file name"),
        ("# only a comment\n", "no batch rows"),
    ],
)
def test_bad_batch_lines_are_named(text, fragment):
    with pytest.raises(BatchError, match=None) as err:
        parse_batch(text)
    assert fragment in str(err.value)


def test_run_references():
    assert parse_run_ref("75965-add").label == "75965-add"
    assert parse_run_ref("LOQ00075884").number == 75884
    assert not parse_run_ref("75884.nxs").added


def test_rkh_files(dataset):
    d = parse_rkh(dataset("loq-gfp/mantid-files/DIRECT_LOQ_MAIN_124.txt").read_text())
    assert d.x.size == 175 and d.x[0] == 0.85 and d.x[-1] == pytest.approx(18.25)
    assert np.allclose(np.diff(d.x), 0.1)
    assert d.y[0] == pytest.approx(1.055422) and d.e[0] == pytest.approx(9.942084e-02)
    f = parse_rkh(dataset("loq-gfp/mantid-files/FLAT_CELL_LOQ_MAIN_115.txt").read_text())
    assert f.x.size == 17792 and f.y[2] == pytest.approx(0.8883596)
    main = f.y[2:16386]
    assert 0.8 < np.median(main) < 1.4
    with pytest.raises(BatchError, match="line 6"):
        parse_rkh("t\n\n1\n0\n3 (F12.5,2E16.6)\n  1.0 x 2\n")


def test_rkh_and_text_readers_take_paths_and_name_the_callers_file(tmp_path):
    """``inputs.rkh``/``read_text`` take plain paths; messages name the caller's file, not the scratch path."""
    from panreduce import errors
    from panreduce_sans.inputs import read_text, rkh

    good = tmp_path / "scratch-1.bin"
    good.write_text("t\n\n1\n0\n3 (F12.5,2E16.6)\n  1.0 2.0 0.5\n  2.0 4.0 0.25\n")
    d = rkh(str(good), name="mantid/DIRECT.txt")
    assert d.x.tolist() == [1.0, 2.0] and d.y.tolist() == [2.0, 4.0] and d.e.tolist() == [0.5, 0.25]
    bad = tmp_path / "scratch-2.bin"
    bad.write_text("t\n\n1\n0\n3 (F12.5,2E16.6)\n  1.0 x 2\n")
    with pytest.raises(errors.InvalidInput, match=r"mantid/FLAT\.txt") as err:
        rkh(bad, name="mantid/FLAT.txt")
    assert "line 6" in str(err.value) and "scratch" not in str(err.value)
    empty = tmp_path / "scratch-3.bin"
    empty.write_text("  \n")
    with pytest.raises(errors.InvalidInput, match=r"batch\.csv.*is empty") as err:
        read_text(empty, name="batch.csv")
    assert "scratch" not in str(err.value)
    with pytest.raises(errors.InvalidInput, match=r"scratch-3\.bin.*is empty"):
        read_text(empty)  # no name: the path's file name
