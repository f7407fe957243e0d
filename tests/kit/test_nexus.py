"""panreduce.nexus and panreduce.constants: the one NeXus layer and the one set of
physical constants (real HDF5 files, values checked against CODATA)."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from panreduce import constants, nexus


def test_read_text_of_every_form(tmp_path):
    assert nexus.read_text(b"caf\xc3\xa9") == "café"
    assert nexus.read_text(np.bytes_(b"NXentry")) == "NXentry"
    assert nexus.read_text(np.array(b"x")) == "x"
    assert nexus.read_text(np.array(["only"])) == "only"
    assert nexus.read_text(np.array([b"a", b"b"])) == "a b"
    assert nexus.read_text(np.array([], dtype="S1")) == ""
    assert nexus.read_text(None) == ""
    assert nexus.read_text("str") == "str"
    assert nexus.read_text(b"\xff") == "\ufffd"  # undecodable bytes never raise
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["fixed"] = np.bytes_(b"fixed-length")
        nexus.write_text(f, "vlen", "variable ✓")
        assert nexus.read_text(f["fixed"]) == "fixed-length"
        assert nexus.read_text(f["vlen"]) == "variable ✓"


def test_nx_class_and_make_group(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry", version="1", skipped=None, name="n")
        assert nexus.nx_class(entry) == "NXentry"
        assert entry.attrs["version"] == "1" and "skipped" not in entry.attrs
        assert entry.attrs["name"] == "n"  # an attribute may be called like a parameter
        f.create_group("plain")
        assert nexus.nx_class(f["plain"]) == ""
        f["plain"].attrs["NX_class"] = np.bytes_(b"NXcollection")  # fixed-length, as some writers do
        assert nexus.nx_class(f["plain"]) == "NXcollection"
        with pytest.raises(ValueError, match="NX"):
            nexus.make_group(f, "bad", "entry")
        with pytest.raises(ValueError):
            nexus.make_group(f, "entry", "NXentry")  # exists


def test_write_text_is_variable_length_utf8(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = nexus.write_text(f, "title", "Å and µ", units=None, note="n", name="x", text="y")
        assert (ds.attrs["name"], ds.attrs["text"]) == ("x", "y")
        assert h5py.check_string_dtype(ds.dtype).encoding == "utf-8"
        assert h5py.check_string_dtype(ds.dtype).length is None
        assert ds.shape == ()
        assert ds[()].decode() == "Å and µ"
        assert ds.attrs["note"] == "n" and "units" not in ds.attrs


def test_write_nxdata_signal_axes_errors_and_default_chain(tmp_path):
    q = np.linspace(0.01, 0.5, 20)
    intensity = 1.0 / q
    with h5py.File(tmp_path / "t.h5", "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry")
        g = nexus.write_nxdata(
            entry,
            "reduced",
            signal="I",
            data=intensity,
            axes=[("Q", q)],
            errors=np.sqrt(intensity),
            units={"I": "1/cm", "Q": "1/angstrom"},
            long_names={"Q": "Q (1/Å)"},
            title="I(Q)",
        )
        assert nexus.nx_class(g) == "NXdata"
        assert g.attrs["signal"] == "I"
        assert list(g.attrs["axes"]) == ["Q"]  # an array, also for one axis
        assert int(g.attrs["Q_indices"]) == 0
        np.testing.assert_allclose(g["I_errors"][()], np.sqrt(intensity), rtol=1e-12)
        assert g["I_errors"].attrs["units"] == "1/cm"  # the signal's units
        assert g["Q"].attrs["units"] == "1/angstrom" and g["Q"].attrs["long_name"] == "Q (1/Å)"
        assert nexus.read_text(g["title"]) == "I(Q)"
        # the chain: root -> entry -> reduced
        assert f.attrs["default"] == "entry" and entry.attrs["default"] == "reduced"
        # a second NXdata without default leaves the chain alone
        nexus.write_nxdata(entry, "other", signal="y", data=np.ones(3), default=False)
        assert entry.attrs["default"] == "reduced"


def test_write_nxdata_2d_with_missing_axis_bin_edges_and_compression(tmp_path):
    img = np.arange(12.0).reshape(3, 4)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry")
        proc = nexus.make_group(entry, "process", "NXprocess")
        g = nexus.write_nxdata(
            proc, "image", signal="data", data=img, axes=[(".", None), ("x", np.arange(5.0))], compression="gzip"
        )
        assert [nexus.read_text(a) for a in g.attrs["axes"]] == [".", "x"]
        assert int(g.attrs["x_indices"]) == 1 and "._indices" not in g.attrs
        assert g["data"].compression == "gzip"
        np.testing.assert_array_equal(g["data"][()], img)
        # deeper chain: root -> entry -> process -> image
        assert (f.attrs["default"], entry.attrs["default"], proc.attrs["default"]) == ("entry", "process", "image")
        g2 = nexus.write_nxdata(entry, "rows", signal="data", data=img, axes=[("y", [0, 1, 2])], default=False)
        assert [nexus.read_text(a) for a in g2.attrs["axes"]] == ["y", "."]


@pytest.mark.parametrize(
    "axes, match",
    [
        ([("x", np.arange(3))], "3 values for dimension 0 of length 4"),
        ([("x", np.zeros((4, 1)))], "one-dimensional"),
        ([("a", np.arange(4)), ("b", np.arange(4))], "2 axes for a signal of 1"),
        ([("y", np.arange(4))], "name of another dataset"),
    ],
)
def test_write_nxdata_refuses_inconsistent_axes(tmp_path, axes, match):
    with h5py.File(tmp_path / "t.h5", "w") as f, pytest.raises(ValueError, match=match):
        nexus.write_nxdata(f, "d", signal="y", data=np.zeros(4), axes=axes)


def test_write_nxdata_refuses_errors_of_another_shape(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f, pytest.raises(ValueError, match="errors of shape"):
        nexus.write_nxdata(f, "d", signal="y", data=np.zeros(4), errors=np.zeros(3))


def test_write_nxprocess_and_nxnote(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry")
        p = nexus.write_nxprocess(
            entry, technique="scan", version="0.1.0", parameters={"b": 2, "a": [1.5, "x"]}, notes={"reader": "took eta"}
        )
        assert p.name == "/entry/process" and nexus.nx_class(p) == "NXprocess"
        assert nexus.read_text(p["program"]) == "panreduce-scan"
        assert nexus.read_text(p["version"]) == "0.1.0"
        assert nexus.read_text(p["date"]).endswith("+00:00")
        params = p["parameters"]
        assert nexus.nx_class(params) == "NXnote"
        assert nexus.read_text(params["type"]) == "application/json"
        assert json.loads(nexus.read_text(params["data"])) == {"a": [1.5, "x"], "b": 2}
        assert nexus.read_text(p["reader/data"]) == "took eta"
        assert nexus.read_text(p["reader/type"]) == "text/plain" and "description" not in p["reader"]
        p2 = nexus.write_nxprocess(
            entry, "fit", technique="panreduce-saxs", version="1", date="2026-01-01T00:00:00+00:00"
        )
        assert nexus.read_text(p2["program"]) == "panreduce-saxs"  # never doubled
        assert nexus.read_text(p2["date"]) == "2026-01-01T00:00:00+00:00"
        assert "parameters" not in p2
        n = nexus.write_nxnote(entry, "log", data="line", type="text/x-log", description="what")
        assert nexus.read_text(n["description"]) == "what"


def test_program_name_convention():
    assert nexus.program_name("serial_crystallography") == "panreduce-serial_crystallography"
    assert nexus.program_name("thz") == "panreduce-thz"
    with pytest.raises(ValueError):
        nexus.program_name("  ")


def test_nexus_and_constants_import_without_grpc_or_scipy():
    code = (
        "import sys, panreduce.nexus, panreduce.constants; "
        "bad = [m for m in ('grpc', 'scipy') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_constants_against_codata():
    import scipy.constants as sc

    # h and c and e are exact in the 2019 SI; h c = 12.398419843320026 keV Angstrom
    assert constants.PLANCK == 6.62607015e-34
    assert constants.SPEED_OF_LIGHT == 299792458.0
    assert constants.ELEMENTARY_CHARGE == 1.602176634e-19
    assert constants.H_C_KEV_ANGSTROM == pytest.approx(12.398419843320026, rel=1e-15)
    assert constants.H_C_EV_ANGSTROM == pytest.approx(12398.419843320026, rel=1e-15)
    assert constants.H_C_EV_M == pytest.approx(1.2398419843320026e-6, rel=1e-15)
    assert constants.H_C_KEV_M == pytest.approx(1.2398419843320026e-9, rel=1e-15)
    assert constants.NEUTRON_MASS == sc.m_n
    assert constants.NEUTRON_MASS == pytest.approx(1.67492750e-27, rel=1e-8)
    # 1 Angstrom neutrons travel at 3956.03 m/s
    assert constants.NEUTRON_H_OVER_M == pytest.approx(3956.034e-6, rel=1e-6)
    assert constants.H_OVER_NEUTRON_MASS == pytest.approx(3956.034e-10, rel=1e-6)
    assert constants.STANDARD_GRAVITY == 9.80665
    with pytest.raises(AttributeError):
        constants.NOT_A_CONSTANT  # noqa: B018
    assert "H_C_KEV_ANGSTROM" in dir(constants)


def test_wavelength_helpers():
    assert constants.xray_wavelength_angstrom(12.398419843320026) == pytest.approx(1.0, rel=1e-14)
    assert constants.xray_energy_kev(np.array([1.0, 2.0])) == pytest.approx([12.3984198, 6.1992099])
    # 10 m in 2528 us is 1.0004 Angstrom
    assert constants.neutron_wavelength_angstrom(2528.0, 10.0) == pytest.approx(1.00009, rel=1e-5)
    # 200 kV electrons: 0.025079 Angstrom; 300 kV: 0.019687 Angstrom (tabulated)
    assert constants.electron_wavelength_angstrom(200e3) == pytest.approx(0.025079, rel=1e-4)
    assert constants.electron_wavelength_angstrom(300e3) == pytest.approx(0.019687, rel=1e-4)
    lam = constants.electron_wavelength_angstrom(np.array([100e3, 200e3]))
    assert lam.shape == (2,) and lam[0] == pytest.approx(0.037013, rel=1e-4)
