"""The parameter model nested by step, and the quick looks: upscaled previews with a
colour bar, the root @default chain, TIFF stacks and trial-centre jobs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from tomo_synthetic import nrmse, phantom_scan, run, write_data_exchange

from panreduce import errors
from panreduce_tomography import recon
from panreduce_tomography.params import STEP_OF, STEPS
from panreduce_tomography.technique import Technique


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("scan")
    scan = phantom_scan(n=48, n_angles=90, n_rows=4, offset=2.3, seed=3)
    return write_data_exchange(d / "phantom.h5", scan), scan


def test_step_fields_nested_dotted_or_by_name_mean_the_same():
    nested = Technique.validate_parameters(
        {"reconstruction": {"algorithm": "sirt", "iterations": 7}, "corrections": {"ring_removal": "sorting"}}
    )
    dotted = Technique.validate_parameters(
        {"reconstruction.algorithm": "sirt", "reconstruction.iterations": 7, "corrections.ring_removal": "sorting"}
    )
    flat = Technique.validate_parameters({"algorithm": "sirt", "iterations": 7, "ring_removal": "sorting"})
    assert nested == dotted == flat
    assert flat.reconstruction.kwargs()["iterations"] == 7 and flat.corrections.ring_removal == "sorting"
    # every step field's name is unique across the steps (so a bare name means one field)
    assert len(STEP_OF) == sum(len(m.model_fields) for m in STEPS.values())
    assert all(field not in Technique.Parameters.model_fields for field in STEP_OF)


def test_step_fields_refused_with_their_dotted_name():
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"ring_size": 1})
    assert [v.field for v in err.value.violations] == ["corrections.ring_size"]
    assert "(allowed: 3 <= value <= 501)" in err.value.violations[0].description
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"algorithm": "sirt", "reconstruction": {"algorithm": "fbp"}})
    assert "given twice" in err.value.violations[0].description
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"reconstruction": {"no_such": 1}})
    assert [v.field for v in err.value.violations] == ["reconstruction.no_such"]
    assert "allowed: algorithm, circle, device" in err.value.violations[0].description  # the step's own fields
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"no_such": 1})
    assert [v.field for v in err.value.violations] == ["no_such"]


def test_previews_are_upscaled_with_a_colour_bar_and_the_root_default(scan_file, tmp_path):
    import matplotlib.image as mimage

    path, scan = scan_file
    _summary, outs, _ = run([path], tmp_path, center=scan["center"], previews=1, pixel_size_um=0.65)
    with h5py.File(outs["tomography.nxs"].path) as f:
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "data"
        assert f["entry/data"].attrs["signal"] == "data"
    (name,) = [n for n in outs if n.endswith(".png")]
    png = mimage.imread(outs[name].path)
    h, w = png.shape[:2]
    assert h >= 512 and w >= 512 + 100  # a 48 px slice upscaled to >= 512 px, plus the colour bar and labels
    grey = png[..., :3].mean(-1)

    # the colour bar: a column right of the slice whose grey level falls monotonically
    # (white on top) over >= 400 px, from near white to near black
    def is_bar(col: np.ndarray) -> bool:
        inside = col[(col > 0.02) & (col < 0.98)]
        return (
            inside.size >= 400 and bool(np.mean(np.diff(inside) <= 1e-3) > 0.97) and inside[5] - inside[-5] > 0.8
        )  # (its ends: the frame, anti-aliased)

    assert any(is_bar(col) for col in grey[:, w // 2 :].T)
    assert not any(is_bar(col) for col in grey[:, : w // 4].T)  # the slice and its axis are not one


def test_tiff_stack_equals_the_nexus_volume(scan_file, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    path, scan = scan_file
    _, outs, _ = run([path], tmp_path, center=scan["center"], previews=0, tiff_stack=True)
    assert outs["tomography.tiff"].format == "tiff"
    stack = tifffile.imread(outs["tomography.tiff"].path)
    with h5py.File(outs["tomography.nxs"].path) as f:
        np.testing.assert_array_equal(stack, f["entry/data/data"][()])


def test_trial_centres_are_best_at_the_true_centre(scan_file, tmp_path):
    path, scan = scan_file
    summary, outs, _ = run([path], tmp_path, name="trial", trial_centres=[3.0, 1.0], previews=0)
    assert summary["mode"] == "trial_centres" and len(summary["centres"]) == 7
    assert set(outs) == {"trial_centres.nxs", "trial_centres.png"}
    with h5py.File(outs["trial_centres.nxs"].path) as f:
        assert f.attrs["default"] == "entry" and f["entry"].attrs["default"] == "trial_centres"
        g = f["entry/trial_centres"]
        assert list(g.attrs["axes"]) == ["centre", "y", "x"]
        stack, centres = g["data"][()], g["centre"][()]
    assert stack.shape == (7, 48, 48)
    assert np.allclose(np.diff(centres), 1.0) and abs(centres[3] - summary["center"]) < 1e-5
    truth = scan["truth"][summary["row"]]
    errs = [nrmse(s, truth, recon.circle_mask(48, 20)) for s in stack]
    assert abs(centres[int(np.argmin(errs))] - scan["center"]) <= 0.5 + abs(summary["center"] - scan["center"])
    assert max(errs) > 2 * min(errs)
    with pytest.raises(errors.InvalidParameters) as err:
        run([path], tmp_path, name="many", trial_centres=[100.0, 0.5])
    assert err.value.violations[0].field == "axis.trial_centres"
