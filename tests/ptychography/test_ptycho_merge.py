"""PXCT through the gateway: a scan of several projections split one projection per
shard gives the same reconstructions as one unsplit job (the kit's default merge of
independent outputs)."""

from __future__ import annotations

import h5py
import numpy as np
from ptycho_helpers import small_sim

from panreduce.client import Client
from panreduce_ptychography.io import write_nexus
from panreduce_ptychography.problem import Scan


def test_projections_split_over_shards_equal_the_whole(gateway_for, tmp_path):
    small = small_sim(frame_size=32, n_positions=25, photons=1e6)
    scans = [Scan(**{**small.scan.__dict__, "metadata": {"rotation_angle_deg": a}}) for a in (0.0, 45.0, 90.0)]
    path = tmp_path / "pxct.nxs"
    write_nexus(path, scans, entries=["proj_000", "proj_001", "proj_002"])
    with Client(gateway_for("ptychography"), timeout=300) as c:
        done = {
            split: c.reduce(
                "ptychography",
                [str(path)],
                {"iterations": 5, "ml_iterations": 0},
                str(tmp_path / f"s{split}"),
                split=split,
            )
            for split in (1, 3)
        }
    whole, split = done[1].summary, done[3].summary
    assert split["shards"] == 3
    assert [p["projection"] for p in split["projections"]] == [p["projection"] for p in whole["projections"]]
    assert [p["rotation_angle_deg"] for p in split["projections"]] == [0.0, 45.0, 90.0]
    names = sorted(p.name for p in (tmp_path / "s1").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "s3").iterdir())
    for name in (n for n in names if n.endswith(".nxs")):
        with h5py.File(tmp_path / "s1" / name) as a, h5py.File(tmp_path / "s3" / name) as b:
            np.testing.assert_allclose(first_complex(b), first_complex(a), rtol=1e-6, atol=1e-9)


def first_complex(f: h5py.File) -> np.ndarray:
    """The first complex dataset in the file (the reconstructed object)."""
    found: list[np.ndarray] = []
    f.visititems(
        lambda _name, o: (
            found.append(o[()]) if isinstance(o, h5py.Dataset) and o.dtype.kind == "c" and not found else None
        )
    )
    assert found, "no complex dataset"
    return found[0]
