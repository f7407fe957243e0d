"""The saxs parameters: nested by step, each step's model the keywords of its science
function; dotted keys; one unit-suffix convention; every field bounded; the errors name
the nested field; names of inputs cannot reach outside the job's inputs."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
from conftest import run_saxs
from synthetic import Geo, guinier_sphere, write_tiff

from panreduce import errors
from panreduce.kit import Parameters
from panreduce_saxs import geometry, masks, normalisation, series
from panreduce_saxs.integrate import IntegrationSetup
from panreduce_saxs.params import SaxsParameters
from panreduce_saxs.technique import Technique

GEO = Geo(shape=(60, 70), pixel_um=172.0, distance_mm=1000.0, wavelength_A=1.0, cx=35.3, cy=30.6)


def _keywords(func) -> set[str]:
    if dataclasses.is_dataclass(func):
        return {f.name for f in dataclasses.fields(func)}
    return {p.name for p in inspect.signature(func).parameters.values() if p.kind is p.KEYWORD_ONLY}


@pytest.mark.parametrize(
    ("group", "func", "resolved"),
    [
        ("geometry", geometry.resolve_geometry, {"poni_file"}),
        ("masks", masks.job_masks, {"file"}),
        ("integration", IntegrationSetup, set()),
        ("normalisation", normalisation.frame_norm, set()),
        ("kinetics", series.kinetic_table, {"frame_time_s"}),
    ],
)
def test_each_step_maps_onto_its_function(group, func, resolved):
    """httomo's way: ``func(..., **params.<group>.model_dump())``; the fields a glue
    resolves first (file names) are the only ones that are not keywords."""
    fields = set(SaxsParameters.model_fields[group].annotation.model_fields)
    assert fields - resolved <= _keywords(func), fields - resolved - _keywords(func)
    defaults = SaxsParameters().model_dump()[group]
    if not dataclasses.is_dataclass(func):
        sig = inspect.signature(func).parameters
        for name in fields - resolved:  # the model's default is the function's
            assert sig[name].default == defaults[name], name


def _leaves(model: type[Parameters], prefix: str = ""):
    for name, info in model.model_fields.items():
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, Parameters):
            yield from _leaves(sub, f"{prefix}{name}.")
        else:
            yield prefix + name, info


UNIT_SUFFIX = {
    "mm": "_mm",
    "s": "_s",
    "keV": "_kev",
    "eV": "_ev",
    "m": "_m",
    "µm": "_um",
    "Å": "_angstrom",
    "degrees": "_deg",
}


def test_unit_suffixes_are_lower_case_and_every_field_is_bounded():
    """A field whose unit its description gives in brackets ("(mm)", "(degrees, ...") ends
    with that unit's lower-case suffix; q values (1/Å) carry none. Every string has a
    maximum length and every number a range (the polarisation factor is in [-1, 1])."""
    leaves = dict(_leaves(SaxsParameters))
    assert len(leaves) > 20 and len(SaxsParameters.model_fields) <= 12
    for name, info in leaves.items():
        assert name == name.lower(), name
        assert info.description, name
        unit = re.search(r"\((mm|s|keV|eV|m|µm|Å|degrees)\b", info.description)
        if unit:
            assert name.endswith(UNIT_SUFFIX[unit.group(1)]), (name, unit.group(1))
        kinds = {m.__class__.__name__ for m in info.metadata}
        annotation = str(info.annotation)
        if annotation in ("<class 'str'>", "str"):
            assert "MaxLen" in kinds, f"{name}: a string without max_length"
        if annotation in ("<class 'float'>", "float | None", "<class 'int'>"):
            assert kinds & {"Ge", "Gt"} and kinds & {"Le", "Lt"}, f"{name}: an unbounded number"


def test_dotted_keys_are_the_nested_groups():
    a = SaxsParameters.model_validate(
        {"geometry.distance_mm": 1500, "integration.q_range": "0.01,0.2", "geometry": {"pixel_um": 172}}
    )
    b = SaxsParameters.model_validate(
        {"geometry": {"distance_mm": 1500, "pixel_um": 172}, "integration": {"q_range": [0.01, 0.2]}}
    )
    assert a == b
    raw = {"geometry": {"pixel_um": 172}, "geometry.distance_mm": 1}
    SaxsParameters.model_validate(raw)
    assert raw == {"geometry": {"pixel_um": 172}, "geometry.distance_mm": 1}  # the caller's dict untouched


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"integration": {"q_bins": -1}}, "integration.q_bins"),
        ({"integration.q_range": "0.3,0.1"}, "integration.q_range"),
        ({"geometry": {"wavelength_angstrom": 1, "energy_kev": 12}}, "geometry.energy_kev"),
        ({"absolute": {"factor": 2, "standard_file": "w.tiff"}}, "absolute.standard_file"),
        ({"geometry.nope": 1}, "geometry.nope"),
        ({"mode.x": 1}, "mode"),
        ({"wavelength_A": 1.0}, "wavelength_A"),  # the old flat names are gone
        ({"background": {"file": "x" * 5000}}, "background.file"),
        ({"normalisation": {"monitor": float("inf")}}, "normalisation.monitor"),
    ],
)
def test_errors_name_the_nested_field(raw, field):
    with pytest.raises(errors.InvalidParameters) as err:
        Technique.validate_parameters(raw)  # the kit's edge validation
    assert field in [v.field for v in err.value.violations]


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "/etc/passwd", "a.tiff/../../b.tiff"])
def test_an_input_name_cannot_reach_outside_the_inputs(tmp_path, name):
    """A parameter names an input by its staged name only: a path to anywhere else is
    refused naming the parameter, before anything is read."""
    img = write_tiff(tmp_path / "a.tiff", GEO.image(guinier_sphere))
    for key in (
        "background.file",
        "masks.file",
        "corrections.dark_file",
        "absolute.standard_file",
        "geometry.poni_file",
    ):
        with pytest.raises(errors.InvalidParameters) as err:
            run_saxs([img], {**GEO.params(), key: name}, tmp_path / key)
        assert [v.field for v in err.value.violations] == [key]
