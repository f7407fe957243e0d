"""The technique end to end: a NeXus 4-D scan, a Merlin .mib with its .hdr, shards by scan
rows through a real gateway equal to one job, and requests that must be refused."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from stem4d_helpers import corr, run_stem4d

from panreduce import errors
from panreduce.client import Client
from panreduce_stem4d import synthetic
from panreduce_stem4d.params import STEPS
from panreduce_stem4d.technique import Technique


@pytest.fixture(scope="module")
def nexus_scan(tmp_path_factory):
    sim = synthetic.make_scan(
        12,
        10,
        48,
        disc_radius_px=4,
        ring_radius_px=14,
        rotation_deg=-30.0,
        axis_ratio=1.05,
        ellipse_theta_deg=30.0,
        counts=3000,
    )
    path = tmp_path_factory.mktemp("nx") / "scan.nxs"
    synthetic.write_nexus(path, sim.frames, step_nm=0.4, energy_kev=300.0)
    return sim, path


PARAMS = {
    "mrad_per_px": 0.5,
    "bf_mrad": 3.5,
    "adf_mrad": "5,11",
    "haadf_mrad": [11, 16],
    "ellipse_ring_mrad": "4.5,10",
    "masks": {"east": "sector:5,11,-45,45"},
}


def test_nexus_scan_reduced_with_calibration_and_provenance_ready_outputs(nexus_scan, tmp_path):
    sim, path = nexus_scan
    summary, files, logs = run_stem4d([path], {**PARAMS, "chunk_mb": 8}, tmp_path)
    assert summary["ellipse_axis_ratio"] == pytest.approx(1.05, abs=0.005)
    assert summary["ellipse_theta_deg"] == pytest.approx(30.0, abs=2.0)
    assert abs(summary["residual_ellipticity"]) < 0.003
    assert summary["rotation_deg"] == pytest.approx(-30.0, abs=0.5)
    assert any("ellipse" in line for line in logs)
    with h5py.File(files["stem4d.nxs"]) as f:
        e = f["entry"]
        assert f.attrs["default"] == "entry"
        for name in ("bf", "adf", "haadf", "east", "com_x", "com_y", "dpc_phase", "divergence", "curl"):
            assert e[name].attrs["NX_class"] == "NXdata", name
            assert e[name]["y"].attrs["units"] == "nm"
        assert e["dpc_phase/data"].attrs["units"] == "rad"
        assert corr(e["adf/data"][()], sim.thickness) > 0.99
        assert corr(e["bf/data"][()], 1 - sim.thickness) > 0.99
        # the sector sees part of the ring: less than the full annulus, same contrast
        assert np.all(e["east/data"][()] < e["adf/data"][()])
        assert e["calibration/ellipse_axis_ratio"][()] == pytest.approx(1.05, abs=0.005)
        assert e["detector_masks/east"].attrs["azimuth_deg"].tolist() == [-45.0, 45.0]


def test_the_same_scan_as_mib_with_its_hdr(nexus_scan, tmp_path):
    sim, _ = nexus_scan
    frames = np.rint(sim.frames).astype(">u2").reshape(-1, 48, 48)
    path = tmp_path / "scan.mib"
    with open(path, "wb") as fh:
        for i, fr in enumerate(frames):
            head = (
                f"MQ1,{i + 1:06d},00384,01,0048,0048,U16,   1x1,01,2024-01-01 00:00:00,0.001000,0,0,0,"
                "1.0E+1,5.11E+2,0,0,0,0,0,0,3RX,MQ1A,2024-01-01T00:00:00Z,1000000ns,12,"
            )
            fh.write(head.encode().ljust(384, b" ") + fr.tobytes())
    (tmp_path / "scan.hdr").write_text(
        "HDR,\nFrames in Acquisition (Number):\t120\nFrames per Trigger (Number):\t10\nEnd\n"
    )
    summary, files, _ = run_stem4d([path, tmp_path / "scan.hdr"], {**PARAMS, "scan_step_nm": 0.4}, tmp_path / "o")
    assert summary["shape"] == [12, 10, 48, 48]
    with h5py.File(files["stem4d.nxs"]) as f:
        assert corr(f["entry/adf/data"][()], sim.thickness) > 0.99


def test_shards_by_scan_rows_equal_one_job(gateway_for, nexus_scan, tmp_path):
    _, path = nexus_scan
    with Client(gateway_for("stem4d"), timeout=300) as c:
        one = c.reduce("stem4d", [str(path)], PARAMS, str(tmp_path / "s1"), split=1)
        three = c.reduce("stem4d", [str(path)], PARAMS, str(tmp_path / "s3"), split=3)
    assert three.summary["shards"] == 3
    assert three.summary["rotation_deg"] == pytest.approx(one.summary["rotation_deg"], abs=1e-9)
    assert sorted(p.name for p in (tmp_path / "s3").iterdir() if not p.name.startswith("stem4d_rows")) == sorted(
        p.name for p in (tmp_path / "s1").iterdir()
    )
    with h5py.File(tmp_path / "s1" / "stem4d.nxs") as a, h5py.File(tmp_path / "s3" / "stem4d.nxs") as b:
        for name in ("bf", "adf", "haadf", "com_x", "com_y", "dpc_phase", "total_counts", "sum_pattern"):
            np.testing.assert_allclose(
                b[f"entry/{name}/data"][()], a[f"entry/{name}/data"][()], rtol=1e-9, atol=1e-12, err_msg=name
            )


@pytest.mark.parametrize(
    "params,field",
    [
        ({"adf_mrad": "8,3"}, "virtual"),
        ({"masks": {"Bad-Name": "disc:2"}}, "virtual.masks"),
        ({"masks": {f"m{i}": "disc:1" for i in range(17)}}, "virtual.masks"),
        ({"masks": {"m": "donut:1,2"}}, "virtual.masks"),
        ({"masks": {"bf": "disc:1"}}, "virtual.masks"),
        ({"dataset": "../../etc/passwd\n"}, "dataset"),
        ({"center_px": [500, 10]}, "calibration.center_px"),
        ({"vacuum_position": [99, 0]}, "strain.vacuum_position"),
        ({"chunk_mb": 10**6}, "chunk_mb"),
        ({"scan_shape": [0, 4]}, "scan_shape.0"),
        ({"virtual.bf_mrad": -1}, "virtual.bf_mrad"),
        ({"strain_reference": "4,2,0,3"}, "strain"),
        ({"bf_mrad": 2.0, "virtual.bf_mrad": 3.0}, "parameters"),
        ({"virtual.bf_radius": 2.0}, "virtual.bf_radius"),
    ],
)
def test_bad_requests_are_the_callers_and_named(nexus_scan, tmp_path, params, field):
    _, path = nexus_scan
    with pytest.raises(errors.InvalidParameters) as err:
        run_stem4d([path], {"mrad_per_px": 0.5, **params}, tmp_path)
    assert any(v.field == field or v.field.startswith(field + ".") for v in err.value.violations), [
        v.field for v in err.value.violations
    ]


def test_a_dataset_that_is_not_4d_is_named(nexus_scan, tmp_path):
    _, path = nexus_scan
    with pytest.raises(errors.InvalidInput, match=r"scan.nxs.*4-D"):
        run_stem4d([path], {"mrad_per_px": 0.5, "dataset": "/entry/data/scan_x"}, tmp_path)


def test_two_scans_in_one_request_are_refused(nexus_scan, tmp_path):
    _, path = nexus_scan
    other = tmp_path / "other.nxs"
    other.write_bytes(path.read_bytes())
    with pytest.raises(errors.InvalidRequest, match="one scan per request"):
        run_stem4d([path, other], {"mrad_per_px": 0.5}, tmp_path / "o")


def test_gpu_without_a_gpu_is_a_precondition_not_internal(nexus_scan, tmp_path):
    from panreduce_stem4d.technique import _backend

    try:
        backend = _backend("auto")
    except errors.FailedPrecondition:  # pragma: no cover - auto never refuses
        raise
    if backend[0] == "torch":
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(errors.FailedPrecondition):
        run_stem4d([nexus_scan[1]], {"mrad_per_px": 0.5, "device": "gpu"}, tmp_path)


def test_describe_names_the_units():
    schema = Technique.parameters_schema()
    props, defs = schema["properties"], schema["$defs"]
    assert set(STEPS) <= set(props)
    virtual = defs[STEPS["virtual"].__name__]["properties"]
    assert "mrad" in virtual["bf_mrad"]["description"]
    assert virtual["masks"]["maxProperties"] == 16
    assert "calibration" in schema["required"]


def test_bare_names_route_into_their_steps_and_equal_dotted_keys():
    bare = Technique.validate_parameters(
        {"mrad_per_px": 0.0827, "bf_mrad": 0.5, "adf_mrad": "1.7,8.3", "strain": "true", "strain_reference": "0,2,0,2"}
    )
    dotted = Technique.validate_parameters(
        {
            "calibration.mrad_per_px": 0.0827,
            "virtual.bf_mrad": 0.5,
            "virtual.adf_mrad": "1.7,8.3",
            "strain.enabled": True,
            "strain.reference": [0, 2, 0, 2],
        }
    )
    assert bare == dotted
    assert bare.calibration.mrad_per_px == 0.0827
    assert bare.virtual.adf_mrad == (1.7, 8.3)
    assert bare.strain.enabled is True and bare.strain.reference == (0, 2, 0, 2)
    assert bare.com.descan == "plane" and bare.output.plots is True
    nested = Technique.validate_parameters({"calibration": {"mrad_per_px": 0.1}, "com": {"flip": True}, "plots": False})
    assert nested.com.flip is True and nested.output.plots is False


def test_a_missing_calibration_is_named_by_its_field():
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters({"bf_mrad": 0.5})
    assert [v.field for v in err.value.violations] == ["calibration.mrad_per_px"]
