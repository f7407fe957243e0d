"""The NeXus layout of the saxs outputs (through panreduce.nexus): an @default chain from
the root to an NXdata with its signal, axes and errors; one NXprocess named
panreduce-saxs with the parameters; no application definition claimed that the file does
not follow; intensity units that parse (1/cm, or none for arbitrary units)."""

from __future__ import annotations

import json

import h5py
import pytest
from conftest import run_saxs
from synthetic import Geo, guinier_sphere, write_nexus_stack

from panreduce import nexus

GEO = Geo(shape=(80, 90), pixel_um=172.0, distance_mm=1000.0, wavelength_A=1.0, cx=45.3, cy=40.6)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    frames = [GEO.image(lambda q, rg=rg: guinier_sphere(q, rg=rg)) for rg in (20.0, 25.0, 30.0)]
    path = write_nexus_stack(tmp / "s.nxs", frames, [0.0, 1.0, 2.0], positions={"tx": [0.0, 0.1, 0.2]})
    common = {**GEO.params(), "integration.q_bins": 50, "masks.beamstop": "none", "outputs.cake": True}
    _, kin = run_saxs([path], common, tmp / "kin")
    _, scan = run_saxs([path], {**common, "map.peak_q_range": "0.01,0.09", "absolute.factor": 2.0}, tmp / "map")
    return {"kinetics.nxs": kin["kinetics.nxs"], "cake.nxs": kin["cake.nxs"], "map.nxs": scan["map.nxs"]}


@pytest.mark.parametrize(
    ("name", "plotted", "units"),
    [("kinetics.nxs", "entry/kinetics", None), ("cake.nxs", "entry/cake", None), ("map.nxs", "entry/position", "1/cm")],
)
def test_default_chain_process_and_units(outputs, name, plotted, units):
    with h5py.File(outputs[name], "r") as f:
        g = f
        while "default" in g.attrs:  # the chain from the root
            g = g[nexus.read_text(g.attrs["default"])]
        assert g.name == "/" + plotted and nexus.nx_class(g) == "NXdata"
        signal = g[nexus.read_text(g.attrs["signal"])]
        axes = g.attrs["axes"]
        axes = [axes] if isinstance(axes, str) else list(axes)
        for dim, axis in enumerate(axes):
            assert g[axis].shape[0] == signal.shape[dim] and g.attrs[f"{axis}_indices"] == dim
        entry = f["entry"]
        assert "definition" not in entry  # NXsas needs an instrument these files do not hold
        process = entry["reduction"]
        assert nexus.nx_class(process) == "NXprocess" and nexus.read_text(process["program"]) == "panreduce-saxs"
        params = json.loads(nexus.read_text(process["parameters/data"]))
        assert params["integration"]["q_bins"] == 50
        intensity = {"kinetics.nxs": "intensity/I", "cake.nxs": "cake/I", "map.nxs": "frames/I"}[name]
        assert nexus.read_text(entry[intensity].attrs.get("units")) == (units or "")
        if name == "map.nxs":
            assert signal.shape == (1, 3)  # three frames on three nodes of one row (no peak: NaN)
