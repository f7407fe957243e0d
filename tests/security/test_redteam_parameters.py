"""Red team (issue 12): every field of every technique's parameters, given values of the
wrong kind (NaN, infinities, huge and negative numbers, nested and ragged lists, dicts,
NUL, long strings, deep nesting), is the caller's mistake: InvalidParameters naming the
field, never another exception (which the servers report as INTERNAL). Before the kit
caught what technique validators raise besides ValueError, reflectometry's ranges turned
``[[1, 2], [3]]``, ``[None, 1]`` or ``[inf, 1]`` into TypeError/OverflowError: INTERNAL
through a real service."""

from __future__ import annotations

import json

import pytest

from panreduce import errors, registry
from panreduce.client import Client
from panreduce.kit.server import start_technique
from panreduce.serving import start_server
from panreduce.storage import Stores
from panreduce_gateway.gateway import GatewayService

TECHNIQUES = [
    "scan",
    "saxs",
    "sans",
    "tomography",
    "ptychography",
    "reflectometry",
    "serial_crystallography",
    "stem4d",
    "thz",
]


def _deep(n: int) -> object:
    v: object = 1
    for _ in range(n):
        v = [v]
    return v


BAD = [
    float("nan"),
    float("inf"),
    -float("inf"),
    -1,
    0,
    1e308,
    2**70,
    -(2**70),
    "",
    "x" * 10_000,
    [],
    {},
    _deep(150),
    True,
    None,
    "nan",
    "1e999-2",
    "\x00",
    [float("nan")] * 3,
    [float("inf"), 1],
    [[1, 2], [3]],
    [None, 1],
    [{}, 1],
    [-1, -1],
    [2**70] * 2,
    {"a": {"b": {"c": 1}}},
]


def _fields(schema: dict, defs: dict, prefix: str = "") -> list[str]:
    out = []
    for name, prop in schema.get("properties", {}).items():
        ref = prop.get("$ref") or next((p.get("$ref") for p in prop.get("allOf", []) if "$ref" in p), None)
        if ref:
            out += _fields(defs.get(ref.rsplit("/", 1)[-1], {}), defs, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def _nested(dotted: str, value: object) -> dict:
    out: object = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out  # type: ignore[return-value]


@pytest.mark.parametrize("name", TECHNIQUES)
def test_every_field_given_the_wrong_kind_is_the_callers_mistake(name):
    cls = registry.load(name)
    schema = cls.Parameters.model_json_schema()
    fields = _fields(schema, schema.get("$defs", {}))
    assert fields, name
    wrong = []
    for field in fields:
        for value in BAD:
            for raw in (_nested(field, value), {field: value}):
                try:
                    cls.validate_parameters(raw)
                except errors.InvalidParameters as exc:
                    assert exc.violations and all(len(v.field) <= 120 for v in exc.violations)
                except Exception as exc:  # what the assertion below reports
                    wrong.append(f"{field}={str(value)[:30]}: {type(exc).__name__}: {str(exc)[:80]}")
    assert not wrong, f"{len(wrong)} not InvalidParameters, e.g. {wrong[:5]}"


def test_a_value_a_validator_chokes_on_is_invalid_argument_through_a_real_service(tmp_path):
    """Reflectometry's range validator raised TypeError/OverflowError: INTERNAL."""
    run = tmp_path / "run.nxs"
    run.write_bytes(b"not read: the parameters are refused first")
    stores = Stores(tmp_path / "store2")
    service = start_technique(registry.load("reflectometry"), stores=stores)
    gateway = GatewayService({"reflectometry": service.address}, stores=stores)
    gw = start_server(gateway, name="gateway", manager=gateway.manager)
    gw.set_serving(True)
    try:
        with Client(gw.address, timeout=30) as c, Client(service.address, timeout=30) as direct:
            for value in ([[1, 2], [3]], [None, 1], [float("inf"), 1], "1e999-2"):
                for client in (c, direct):
                    with pytest.raises(errors.PanReduceError) as info:
                        client.reduce("reflectometry", [str(run)], {"transmission_roi": value})
                    exc = info.value
                    assert exc.code.name == "INVALID_ARGUMENT", f"{json.dumps(value)}: {exc.code}: {exc}"
                    assert "transmission_roi" in str(exc)
    finally:
        gw.drain_and_stop(2)
        gateway.close()
        service.drain_and_stop(2)
