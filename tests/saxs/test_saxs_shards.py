"""saxs on the kit's shard contract, in-process (kit.run / kit.run_split): a job split into
more shards than it has frames (the real BioCAT frame at split 4: three empty shards), and
split = N equal to split = 1 for every N, whatever each shard holds (the mode is chosen on
the frames written, never on a shard's)."""

from __future__ import annotations

import numpy as np
import pytest
from compare import assert_same_h5, body, same
from conftest import read_table, run_saxs, stage
from contract_example import BIOCAT_PARAMS
from synthetic import Geo, guinier_sphere, write_nexus_stack

from panreduce_saxs.technique import Technique

GEO = Geo(shape=(120, 140), pixel_um=172.0, distance_mm=1000.0, wavelength_A=1.0, cx=70.3, cy=60.6)


def _same_outputs(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        if name.endswith((".h5", ".nxs")):
            assert_same_h5(a[name], b[name])
        elif name.endswith((".csv", ".txt")):
            assert body(a[name]) == body(b[name]), name


def test_one_frame_at_split_four_is_the_unsharded_job(biocat, tmp_path):
    """The real frame alone over 4 shards: 3 find no frame and publish only their marker;
    the merge writes from the one part what the unsharded job writes."""
    tiff, spec = biocat
    whole, whole_out = run_saxs([tiff, spec], BIOCAT_PARAMS, tmp_path / "whole")
    split, split_out = run_saxs([tiff, spec], BIOCAT_PARAMS, tmp_path / "split", split=4)
    assert split.pop("shards") == 1 and split["frames"] == 1 and split["mode"] == "azimuthal"
    same(whole, split, "summary")
    _same_outputs(whole_out, split_out)
    # still the calibrated physics: absolute units, one-pixel bins from the beamstop out
    q, i, _ = read_table(split_out["GI2_A9_19_001_0000_iq.csv"]).T
    assert split["intensity_units"] == "1/cm" and 0.005 < q[0] < 0.012
    high = (q > 0.2) & (q < 0.28)
    assert 0.0163 < float(np.mean(i[high])) < 0.035  # water and a little more (1/cm)


@pytest.fixture(scope="module")
def kinetic_series(tmp_path_factory):
    """Five frames of particles growing from Rg 20 to 32 Å in one NeXus stack."""
    rgs = np.linspace(20.0, 32.0, 5)
    i0s = 2000.0 * (rgs / 20.0) ** 3
    rng = np.random.default_rng(3)
    frames = [
        rng.poisson(GEO.image(lambda q, rg=rg, i0=i0: guinier_sphere(q, i0=i0, rg=rg, background=1.0)) * 50) / 50
        for rg, i0 in zip(rgs, i0s, strict=True)
    ]
    path = write_nexus_stack(tmp_path_factory.mktemp("kin") / "kin.nxs", frames, 10.0 + 2.5 * np.arange(5))
    params = {
        "geometry": GEO.params_nested(),
        "integration": {"q_bins": 80},
        "masks": {"beamstop": "none"},
        "kinetics": {"guinier_q_max": 0.1},
    }
    return path, params, rgs


@pytest.mark.parametrize("split", [2, 5, 7])
def test_split_n_equals_split_one(kinetic_series, tmp_path, split):
    """mode 'auto' at any split: kinetics over the five frames (a shard holding one frame
    does not make it 'azimuthal'); with 7 shards two are empty."""
    path, params, rgs = kinetic_series
    whole, whole_out = run_saxs([path], params, tmp_path / "whole")
    parts, parts_out = run_saxs([path], params, tmp_path / "split", split=split)
    assert parts.pop("shards") == min(split, 5)
    same(whole, parts, "summary")
    _same_outputs(whole_out, parts_out)
    assert parts["mode"] == "kinetics" and parts["time_s"] == pytest.approx([0, 2.5, 5, 7.5, 10])
    assert np.allclose(parts["rg_A"], rgs, rtol=0.03)


def test_blocks_carry_no_offsets(kinetic_series, tmp_path):
    """reduce_block of a later block alone gives the frames the whole job gives them (the
    masks and scale come from the job's first frame, not the block's)."""
    from panreduce.kit import Context

    path, params, _ = kinetic_series
    technique = Technique()
    p = technique.validate_parameters({**params, "masks": {"beamstop": "auto"}})
    inputs = stage([path])
    units = list(technique.units(inputs, p))
    assert [u.number for u in units] == [0, 1, 2, 3, 4]
    whole = technique.reduce_block(units, inputs, p, Context(job_id="w", scratch=tmp_path / "w"))
    tail = technique.reduce_block(units[3:], inputs, p, Context(job_id="t", scratch=tmp_path / "t"))
    assert tail.labels == whole.labels[3:] and tail.mask_info == whole.mask_info
    for a, b in zip(whole.curves[3:], tail.curves, strict=True):
        np.testing.assert_array_equal(a.q, b.q)
        np.testing.assert_array_equal(a.i, b.i)
