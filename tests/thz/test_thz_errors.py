"""Malformed runs are refused with errors naming the position or the file."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from thz_sim import make_run, reduce

from panreduce.errors import InvalidInput, InvalidParameters
from panreduce_thz.technique import Technique


@pytest.fixture
def small(tmp_path):
    return make_run(tmp_path / "src", pulses=100, step_ps=0.5, span_ps=1.0).folder


def _adc(folder, token):
    return next(folder.glob(f"*Experiment_{token}mm*"))


def test_pulse_count_mismatch_names_the_position(small, tmp_path):
    adc = _adc(small, "50.000")
    data = adc.read_bytes()
    adc.write_bytes(data[: len(data) - 2 * 96 * 4])  # two pulses short
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path)
    msg = str(err.value)
    assert "50.000 mm" in msg and "100 pulses" in msg and "98 in the ADC file" in msg


def test_adc_not_whole_pulses(small, tmp_path):
    adc = _adc(small, "50.000")
    adc.write_bytes(adc.read_bytes()[:-5])
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path)
    assert adc.name in str(err.value) and "whole number of pulses" in str(err.value)


def test_wrong_samples_per_pulse_is_caught_by_the_count(small, tmp_path):
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path, samples_per_pulse=48, signal_gate=[0, 24], background_gate=[24, 48])
    assert "mm" in str(err.value) and "48 samples" in str(err.value)


def test_corrupt_tiff_names_the_file(small, tmp_path):
    image = sorted(small.glob("*50.000mm*/*.tif"))[0]
    image.write_bytes(b"not a tiff" * 50)
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path)
    assert image.name in str(err.value) and "TIFF" in str(err.value)


def test_image_width_must_match_the_background(small, tmp_path):
    import tifffile

    image = sorted(small.glob("*50.000mm*/*.tif"))[0]
    tifffile.imwrite(image, np.zeros((50, 100), np.uint16))
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path)
    assert image.name in str(err.value) and "100 pixels" in str(err.value)


def test_missing_background_and_missing_adc(small, tmp_path):
    bg = next(small.glob("*_BG_*"))
    moved = tmp_path / bg.name
    shutil.move(bg, moved)
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path)
    assert "_BG_" in str(err.value)
    shutil.move(moved, bg)
    _adc(small, "49.925").unlink()
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path)
    assert "49.925 mm has no ADC file" in str(err.value)


def test_background_not_numeric(small, tmp_path):
    bg = next(small.glob("*_BG_*"))
    bg.write_text("dark row\n")
    with pytest.raises(InvalidInput) as err:
        reduce(small, tmp_path)
    assert bg.name in str(err.value)


@pytest.mark.parametrize(
    "raw, field",
    [
        ({"bandpass": [0.04, 0.01]}, "bandpass"),
        ({"signal_gate": [0, 200]}, "signal_gate"),
        ({"ps_per_mm": 0}, "ps_per_mm"),
        ({"bin_ps": 0}, "bin_ps"),
        ({"harmonics": 100}, "harmonics"),
        ({"timing_window_px": [300, 200]}, "timing_window_px"),
        ({"timing_window_px": [0, 5]}, "timing_window_px"),  # fewer pixels than the parabola's 7
    ],
)
def test_bad_parameters_are_named(raw, field):
    with pytest.raises(InvalidParameters) as err:
        Technique.validate_parameters(raw)
    assert field in [v.field for v in err.value.violations]


def test_too_many_bins_is_refused(small, tmp_path):
    # a 512-px row at 10 ps/px spans 5 ns: 51 million bins of 0.1 fs
    with pytest.raises(InvalidParameters) as err:
        reduce(small, tmp_path, bin_ps=1e-4, pixel_to_ps=10.0)
    assert "bin_ps" in [v.field for v in err.value.violations]


def test_timing_window_beyond_the_row_is_refused(small, tmp_path):
    with pytest.raises(InvalidParameters) as err:
        reduce(small, tmp_path, timing_window_px=[100, 600])  # the rows have 512 px
    assert [v.field for v in err.value.violations] == ["timing_window_px"]
    assert "512" in err.value.violations[0].description
