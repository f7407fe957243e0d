"""One naming convention for every technique's parameters (docs/techniques.md, "Parameter
names and units"): lower-case snake case, units as lower-case suffixes from one list."""

from __future__ import annotations

import importlib.metadata as md
import re
import typing

import pydantic
import pytest

# unit suffixes a parameter name may end with (the last part after "_")
UNITS = {"kev", "ev", "kv", "m", "mm", "um", "nm", "angstrom", "deg", "mrad", "rad", "s", "ms", "ps", "fs", "px", "thz"}
# spellings that would be the same unit in another case or form
FORBIDDEN = re.compile(r"(keV|eV|kV|Angstrom|_A$|_degrees?$|_microns?$|_sec(onds)?$)")


def _models(model: type[pydantic.BaseModel], prefix: str = ""):
    for name, field in model.model_fields.items():
        yield prefix + name, field
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
                yield from _models(arg, prefix + name + ".")


def _techniques():
    return sorted((ep.name, ep) for ep in md.entry_points(group="panreduce.techniques"))


@pytest.mark.parametrize("name, ep", _techniques(), ids=[n for n, _ in _techniques()])
def test_parameter_names_follow_the_convention(name, ep):
    params = ep.load().Parameters
    names = [n for n, _ in _models(params)]
    assert names, f"{name}: no parameters found"
    for full in names:
        leaf = full.rsplit(".", 1)[-1]
        assert re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", leaf), f"{name}: {full} is not lower-case snake case"
        assert not FORBIDDEN.search(leaf), f"{name}: {full} spells a unit another way (use one of {sorted(UNITS)})"


def test_the_convention_catches_a_mixed_case_unit():
    assert FORBIDDEN.search("energy_keV") and FORBIDDEN.search("exposure_seconds")
    assert not re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", "energy_keV")
