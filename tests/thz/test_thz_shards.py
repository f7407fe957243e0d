"""Sharded by stage position through a real gateway: the combine adds the shards'
per-bin statistics and analyses once, giving the waveform of one unsplit job."""

from __future__ import annotations

import h5py
import numpy as np
from thz_sim import make_run

from panreduce.client import Client


def test_split_by_position_equals_the_whole(gateway_for, tmp_path):
    run = make_run(tmp_path / "run", pulses=200, step_ps=0.2, span_ps=2.0)
    inputs = [str(run.folder) + "/"]
    params = {"pixel_to_ps": 0.0115, "bin_ps": 0.02, "fundamental_thz": 0.7, "plots": False}
    with Client(gateway_for("thz"), timeout=300) as c:
        whole = c.reduce("thz", inputs, params, str(tmp_path / "s1"), split=1).summary
        split = c.reduce("thz", inputs, params, str(tmp_path / "s3"), split=3).summary
    assert split.get("shards", 3) == 3 and "partial" not in split
    assert split["pulses"] == whole["pulses"] == 21 * 200 and split["positions"] == 21
    assert split["jitter_rms_fs"] == whole["jitter_rms_fs"]
    for a, b in zip(split["harmonics"], whole["harmonics"], strict=True):
        assert a["amplitude"] == b["amplitude"] or abs(a["amplitude"] - b["amplitude"]) < 1e-12
    with h5py.File(tmp_path / "s1" / "thz.nxs") as a, h5py.File(tmp_path / "s3" / "thz.nxs") as b:
        for key in ("delay", "signal", "signal_errors", "pulses"):
            np.testing.assert_allclose(
                b[f"entry/waveform/{key}"][()], a[f"entry/waveform/{key}"][()], rtol=1e-10, atol=1e-15
            )
    assert not (tmp_path / "s3" / "thz_partial.h5").exists()
