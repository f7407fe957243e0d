"""The technique through real servers on loopback: the acceptance reductions, ORSO read
back by orsopy, shards stitched by the merge, and requests that must be refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from orsopy import fileio

from panreduce.client import Client
from panreduce.errors import InvalidInput, InvalidParameters, InvalidRequest
from panreduce_reflectometry.output import MONITOR_ONLY_WARNING

pytestmark = pytest.mark.data

OFFSPEC = {
    "theta_deg": "0.5,1.5,2.5",
    "roi": "399-410,390-420,390-420",
    "summation": "q",
    "reduction_type": "non_flat_sample",
    "dq_q": 0.03,
}


@pytest.fixture(scope="module")
def client(gateway_for):
    with Client(gateway_for("reflectometry"), timeout=300) as c:
        yield c


def _offspec(dataset):
    return [str(dataset(f"offspec-polymer/raw/OFFSPEC0004699{n}.nxs")) for n in (2, 3, 4)]


def _platypus(dataset, runs=(708, 709, 710, 711)):
    return [str(dataset(f"platypus-refnx/PLP0000{n}.nx.hdf")) for n in runs]


def test_offspec_writes_per_run_and_stitched_orso_with_the_monitor_only_warning(client, dataset, tmp_path):
    out = tmp_path / "off"
    res = client.reduce("reflectometry", _offspec(dataset), OFFSPEC, str(out), split=1)
    s = res.summary
    assert s["stitched"] == "46992_46994_stitched.ort"
    assert s["absolute_scale"] is False and s["warnings"] == [MONITOR_ONLY_WARNING]
    assert next(f["factor"] for f in s["scale_factors"]) == 1.0
    names = sorted(p.name for p in out.iterdir())
    assert {"46992.ort", "46993.ort", "46994.ort", "46992_46994_stitched.ort", "reflectivity.png"} <= set(names)
    for name in ("46992.ort", "46992_46994_stitched.ort"):
        text = (out / name).read_text()
        assert text.startswith("# # ORSO reflectivity data file")
        assert "# # provenance_id:" in text  # the kit's provenance, as ORSO comments
        ds = fileio.load_orso(str(out / name))
        assert len(ds) == 1 and ds[0].data.shape[1] == 4
        assert "not absolute reflectivity" in ds[0].info.reduction.comment
        assert ds[0].info.data_source.experiment.instrument == "OFFSPEC"
        assert [c.name for c in ds[0].info.columns[:2]] == ["Qz", "R"]
    stitched = fileio.load_orso(str(out / "46992_46994_stitched.ort"))[0]
    q = stitched.data[:, 0]
    assert np.all(np.diff(q) > 0) and q[0] < 0.0095 and q[-1] > 0.25
    assert stitched.info.data_source.measurement.instrument_settings.incident_angle.max == 2.5


def test_platypus_with_its_direct_beam_is_absolute(client, dataset, tmp_path):
    params = {"transmission": "PLP0000711.nx.hdf", "orb": True}
    res = client.reduce("reflectometry", _platypus(dataset), params, str(tmp_path / "plp"), split=1)
    s = res.summary
    assert s["absolute_scale"] is True and s["warnings"] == []
    assert [r["run"] for r in s["runs"]] == ["PLP0000708", "PLP0000709", "PLP0000710"]
    st = fileio.load_orso(str(tmp_path / "plp" / "PLP0000708_PLP0000710_stitched.ort"))[0].data
    plateau = (st[:, 0] > 0.0065) & (st[:, 0] < 0.009)
    assert np.median(st[plateau, 1]) == pytest.approx(1.0, abs=0.05)
    orb = fileio.load_nexus(str(tmp_path / "plp" / "PLP0000708.orb"))
    assert orb[0].data.shape[0] > 10


def test_a_direct_beam_among_the_inputs_is_found_when_none_is_named(client, dataset, tmp_path):
    res = client.reduce("reflectometry", _platypus(dataset), {"plots": False}, str(tmp_path / "auto"), split=1)
    assert res.summary["absolute_scale"] is True
    assert any("direct beam" in n for n in res.summary["notes"])


def test_split_by_run_stitches_in_the_merge_like_the_whole(client, dataset, tmp_path):
    whole = client.reduce("reflectometry", _offspec(dataset), OFFSPEC, str(tmp_path / "w"), split=1).summary
    split = client.reduce("reflectometry", _offspec(dataset), OFFSPEC, str(tmp_path / "s"), split=3).summary
    assert split["shards"] == 3 and split["n_runs"] == 3
    fw = [f["factor"] for f in whole["scale_factors"]]
    fs = [f["factor"] for f in split["scale_factors"]]
    np.testing.assert_allclose(fs, fw, rtol=1e-9)
    a = fileio.load_orso(str(tmp_path / "w" / "46992_46994_stitched.ort"))[0].data
    b = fileio.load_orso(str(tmp_path / "s" / "46992_46994_stitched.ort"))[0].data
    np.testing.assert_allclose(b, a, rtol=1e-9)


def test_inter_single_run_from_a_folder_with_other_files(client, dataset, tmp_path):
    folder = tmp_path / "inter"
    folder.mkdir()
    shutil.copy(dataset("inter-61440/INTER_61440_TOF_MantidSave.nxs"), folder)
    (folder / "README.md").write_text("not a run\n")
    params = {"theta_deg": 0.8, "roi": "70-90", "background_roi": "115-130", "wavelength_range": "1.2-17", "dq_q": 0.02}
    res = client.reduce("reflectometry", [str(folder) + "/"], params, str(tmp_path / "out"), split=1)
    assert res.summary["n_runs"] == 1 and "stitched" not in res.summary
    ds = fileio.load_orso(str(tmp_path / "out" / "61440.ort"))[0]
    assert ds.info.data_source.experiment.instrument == "INTER"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"transmission": "PLP0000999.nx.hdf"}, "transmission"),  # a location not among the inputs
        ({"transmission": "../../etc/passwd"}, "transmission"),  # a path, not a name
        ({"theta_deg": "0.5,1.5"}, "theta_deg"),  # two angles for three runs
        ({"theta_deg": 45}, "theta_deg"),  # outside 0.01-30°
        ({"roi": "5000-5010"}, "roi"),  # outside the detector
        ({"roi": "410-399"}, "roi"),  # reversed
        ({"dq_q": 0.9}, "dq_q"),
        ({"wavelength_range": "14-2"}, "wavelength_range"),
        ({"scale": "1,2"}, "scale"),  # one factor per run
        ({"theta_deg": list(range(1, 100))}, "theta_deg"),  # over the list limit
    ],
)
def test_bad_requests_are_the_callers_fault_naming_the_field(client, dataset, tmp_path, params, field):
    inputs = _offspec(dataset)
    full = {**OFFSPEC, **params}
    if field == "roi" and "theta_deg" not in params:
        full["roi"] = params["roi"]
    with pytest.raises(InvalidParameters) as err:
        client.reduce("reflectometry", inputs, full, str(tmp_path / "bad"), split=1)
    assert field in str(err.value)


def test_offspec_without_theta_is_refused(client, dataset, tmp_path):
    with pytest.raises(InvalidParameters, match="theta_deg"):
        client.reduce("reflectometry", _offspec(dataset), {"roi": "399-410"}, str(tmp_path / "x"), split=1)


def test_a_damaged_run_is_invalid_input_naming_it(client, dataset, tmp_path):
    bad = tmp_path / "OFFSPEC00046992.nxs"
    bad.write_bytes(dataset("offspec-polymer/raw/OFFSPEC00046992.nxs").read_bytes()[:4096])
    with pytest.raises(InvalidInput, match=r"OFFSPEC00046992.nxs"):
        client.reduce(
            "reflectometry", [str(bad)], {**OFFSPEC, "theta_deg": 0.5, "roi": "399-410"}, str(tmp_path / "x"), split=1
        )


def test_no_runs_is_an_invalid_request(client, tmp_path):
    table = tmp_path / "notes.txt"
    table.write_text("nothing\n")
    with pytest.raises(InvalidRequest):
        client.reduce("reflectometry", [str(table)], {}, str(tmp_path / "x"), split=1)


def test_a_transmission_table_normalises_and_one_that_misses_the_range_is_refused(client, dataset, tmp_path):
    lam = np.linspace(1.5, 15.0, 200)
    table = tmp_path / "T.csv"
    np.savetxt(
        table,
        np.column_stack([lam, np.full_like(lam, 2e-3), np.full_like(lam, 1e-5)]),
        delimiter=",",
        header="lambda_angstrom,T_per_angstrom,sigma_T",
    )
    inputs = [*_offspec(dataset), str(table)]
    res = client.reduce(
        "reflectometry", inputs, {**OFFSPEC, "transmission": "T.csv", "plots": False}, str(tmp_path / "t"), split=1
    )
    assert res.summary["absolute_scale"] is True
    short = tmp_path / "short.csv"
    np.savetxt(short, np.column_stack([lam[:50], np.full(50, 2e-3), np.full(50, 1e-5)]), delimiter=",")
    with pytest.raises(InvalidInput, match=r"short.csv"):
        client.reduce(
            "reflectometry",
            [*_offspec(dataset), str(short)],
            {**OFFSPEC, "transmission": "short.csv", "wavelength_range": "2-14"},
            str(tmp_path / "t2"),
            split=1,
        )


def test_offspec_offspecular_map_is_nxdata_with_a_png(client, dataset, tmp_path):
    import h5py

    params = {**OFFSPEC, "theta_deg": 0.5, "roi": "399-410", "offspecular": True}
    client.reduce("reflectometry", _offspec(dataset)[:1], params, str(tmp_path / "m"), split=1)
    with h5py.File(tmp_path / "m" / "46992_offspecular.nxs") as f:
        d = f["entry/offspecular"]
        assert d.attrs["signal"] == "intensity"
        i = d["intensity"][()]
        qx = d["Qx"][()]
        assert i.shape == (d["Qz"].size - 1, qx.size - 1)
        # the specular ridge at Qx ≈ 0
        ridge = 0.5 * (qx[1:] + qx[:-1])[np.argmax(i.sum(axis=0))]
        assert abs(ridge) < 5 * np.diff(qx)[0]
        assert "provenance" in f["entry"]
    assert (tmp_path / "m" / "46992_offspecular.png").stat().st_size > 1000
