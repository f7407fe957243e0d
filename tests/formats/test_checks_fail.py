"""The format checks find what they look for: each is run on a file built with the
defect it must report, and on the same file without it (real HDF5, the real validator)."""

from __future__ import annotations

import formats_support as fs
import h5py
import numpy as np
import pytest

from panreduce import nexus, nxcansas


def _canSAS(path, *, radiation="Synchrotron X-ray Source", sample_name=True, q_units="1/angstrom"):
    with h5py.File(path, "w") as f:
        nxcansas.set_file_attributes(f, "sasentry01")
        meta = nxcansas.SasMetadata(title="t", sample_name="lysozyme" if sample_name else "")
        nxcansas.write_entry(f, "sasentry01", np.linspace(0.01, 0.3, 30), np.ones(30), 0.1 * np.ones(30), meta=meta)
        if radiation != "Synchrotron X-ray Source":
            del f["sasentry01/sasinstrument/sassource/radiation"]
            nexus.write_text(f["sasentry01/sasinstrument/sassource"], "radiation", radiation)
        if not sample_name:
            del f["sasentry01/sassample/name"]
        f["sasentry01/sasdata/Q"].attrs["units"] = q_units
    return path


def test_a_good_nxcansas_file_passes_every_check(tmp_path):
    path = _canSAS(tmp_path / "good.h5")
    assert fs.application_findings(path) == []
    assert fs.base_class_findings(path) == []
    assert fs.default_chain_findings(path) == []
    assert fs.unit_findings(path) == []
    assert fs.nxcansas_findings(path) == []


def test_radiation_outside_the_enumeration_is_found(tmp_path):
    path = _canSAS(tmp_path / "bad.h5", radiation="X-ray synchrotron radiation")
    assert any("radiation" in x and "not one of" in x for x in fs.nxcansas_findings(path))
    # and the validator says so too
    assert any("sassource/radiation" in x and "enumerated" in x for x in fs.application_findings(path))


def test_missing_sample_name_is_found(tmp_path):
    path = _canSAS(tmp_path / "bad.h5", sample_name=False)
    assert fs.nxcansas_findings(path) == ["/sasentry01/sassample: SASsample without 'name'"]
    assert any("sassample/name" in x and "required" in x for x in fs.application_findings(path))


@pytest.mark.parametrize(
    ("unit", "match"),
    [
        ("1/A", "per ampere"),
        ("counts per monitor count", "do not parse"),
        ("a.u.", "atomic mass"),
        ("nm", "not 1/[length]"),
    ],
)
def test_bad_units_are_found(tmp_path, unit, match):
    path = _canSAS(tmp_path / "bad.h5", q_units=unit)
    found = fs.unit_findings(path)
    assert len(found) == 1 and match in found[0] and found[0].startswith("/sasentry01/sasdata/Q")


def test_writer_refuses_radiation_it_cannot_map():
    assert nxcansas.radiation_value("X-ray synchrotron radiation") == "Synchrotron X-ray Source"
    assert nxcansas.radiation_value("NEUTRON") == "neutron"
    with pytest.raises(ValueError, match="not one of NXcanSAS"):
        nxcansas.radiation_value("sunlight")


def test_default_chain_defects_are_found(tmp_path):
    path = tmp_path / "chain.nxs"
    with h5py.File(path, "w") as f:
        e = nexus.make_group(f, "entry", "NXentry")
        g = nexus.write_nxdata(e, "data", signal="y", data=np.arange(3.0), axes=[("x", np.arange(3.0))])
    assert fs.default_chain_findings(path) == []
    with h5py.File(path, "a") as f:
        del f["entry/data/x"]
    assert fs.default_chain_findings(path) == ["/entry/data: @axes names 'x', which is not a dataset of it"]
    with h5py.File(path, "a") as f:
        f["entry"].attrs["default"] = "nothing"
    assert "names 'nothing'" in fs.default_chain_findings(path)[0]
    with h5py.File(path, "a") as f:
        del f.attrs["default"]
    assert fs.default_chain_findings(path) == ["/: no @default (class none)"]
    del g


def test_the_validator_reports_a_false_application_definition(tmp_path):
    path = tmp_path / "def.nxs"
    with h5py.File(path, "w") as f:
        e = nexus.make_group(f, "entry", "NXentry")
        nexus.write_text(e, "definition", "NXdata")  # a base class, not an application definition
    assert any("does not exist" in x for x in fs.application_findings(path))


def test_the_transmission_spectrum_limit_is_narrow(tmp_path):
    """Only the validator's Q/I finding on a group that declares itself a transmission
    spectrum is set aside; the same finding on a SASdata stays."""
    path = _canSAS(tmp_path / "t.h5")
    with h5py.File(path, "a") as f:
        nxcansas.write_transmission_spectrum(
            f["sasentry01"],
            "sastransmission_spectrum01",
            "sample",
            np.linspace(2, 10, 5),
            np.ones(5),
            0.01 * np.ones(5),
        )
    assert fs.application_findings(path) == []
    with h5py.File(path, "a") as f:
        f["sasentry01/sastransmission_spectrum01"].attrs["canSAS_class"] = "SASdata"
    assert any("sastransmission_spectrum01/Q" in x for x in fs.application_findings(path))


def test_udunits_spellings_and_nxcansas_tokens_are_accepted():
    ureg = fs._registry()
    assert fs.check_unit(ureg, "/e/sasdata/I", "cm2/g") == []  # UDUNITS exponent
    assert fs.check_unit(ureg, "/e/sasdata/I", "arbitrary") == []  # NXcanSAS's enumerated token
    assert fs.check_unit(ureg, "/e/sasdata/Q", "m-1") == []
    assert "not 1/[length]" in fs.check_unit(ureg, "/e/sasdata/Q", "m2")[0]
