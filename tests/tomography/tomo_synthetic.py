"""Synthetic scans for the tomography tests: analytic ellipsoid phantoms with a known
off-centre rotation axis, written in the layouts the technique reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np

from panreduce import kit
from panreduce.kit import Inputs, StagedFile, StagedInput
from panreduce.storage import Stores
from panreduce_tomography import phantom as ph


def phantom_scan(
    n=64, n_angles=120, n_rows=4, offset=2.7, *, seed=0, rings=0.0, zingers=0.0, flux=2e4, ellipsoids=None, scale=0.02
):
    """Raw counts of an off-centre-axis scan of the 3-D Shepp-Logan head (or the given
    ellipsoids) and its ground truth. Returns a dict with data/darks/flats (counts),
    angles (rad), center (px), truth (n_rows, n, n) and line integrals."""
    rng = np.random.default_rng(seed)
    center = (n - 1) / 2 + offset
    ell = ellipsoids if ellipsoids is not None else ph.shepp_logan_3d(0.4 * n, scale=scale)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    li = ph.projections(ell, angles, n_rows, n, center)
    raw = ph.simulate_scan(li, rng=rng, flux=flux, ring_amplitude=rings, zinger_fraction=zingers)
    truth = ph.volume(ell, n, n_rows)
    return {**raw, "angles": angles, "center": center, "truth": truth, "line_integrals": li, "ellipsoids": ell}


def write_data_exchange(path: Path, scan: dict, *, degrees=True) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "exchange/data",
            data=scan["data"].astype(np.uint16) if scan["data"].max() < 65535 else scan["data"].astype(np.float32),
        )
        f.create_dataset("exchange/data_dark", data=scan["darks"].astype(np.float32))
        f.create_dataset("exchange/data_white", data=scan["flats"].astype(np.float32))
        th = f.create_dataset("exchange/theta", data=np.rad2deg(scan["angles"]) if degrees else scan["angles"])
        th.attrs["units"] = "degrees" if degrees else "radians"
        f.create_dataset("implements", data="exchange")
    return path


def write_nxtomo(path: Path, scan: dict) -> Path:
    """NXtomo with flats and darks before and after the projections (image_key 1, 2, 0)."""
    nf, nd = len(scan["flats"]), len(scan["darks"])
    h = nf // 2
    frames = np.concatenate([scan["flats"][:h], scan["darks"], scan["data"], scan["flats"][h:]])
    key = np.concatenate([np.ones(h), 2 * np.ones(nd), np.zeros(len(scan["data"])), np.ones(nf - h)]).astype(np.int32)
    ang = np.concatenate([np.zeros(h + nd), np.rad2deg(scan["angles"]), np.zeros(nf - h)])
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e.create_dataset("definition", data="NXtomo")
        det = e.create_group("instrument/detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", data=frames.astype(np.uint16))
        det.create_dataset("image_key", data=key)
        s = e.create_group("sample")
        s.attrs["NX_class"] = "NXsample"
        ra = s.create_dataset("rotation_angle", data=ang)
        ra.attrs["units"] = "degree"
    return path


def inputs(*groups) -> Inputs:
    """Inputs from paths: each argument one input (a file, or a folder of files)."""
    items = []
    for g in groups:
        g = Path(g)
        paths = sorted(p for p in g.rglob("*") if p.is_file()) if g.is_dir() else [g]
        files = tuple(
            StagedFile(
                path=p,
                uri=f"file://{p}",
                name=(p.relative_to(g).as_posix() if g.is_dir() else p.name),
                size=p.stat().st_size,
                sha256="",
            )
            for p in paths
        )
        items.append(StagedInput(uri=f"file://{g}", root=g, is_prefix=g.is_dir(), files=files))
    return Inputs(tuple(items))


def nrmse(rec, truth, mask):
    return float(np.linalg.norm((rec - truth)[..., mask]) / np.linalg.norm(truth[..., mask]))


def run(paths, tmp_path, split=None, name="job", **raw):
    """(summary, {output name: output}, progress events) of one job through ``kit.run``
    (``split``: that many shard jobs and their merge, as the gateway runs them); each
    output has ``path``, ``format`` and ``role``."""
    from panreduce_tomography.technique import Technique

    events = []
    args = dict(
        stores=Stores(tmp_path / name / "store"), progress=lambda stage, frac, msg: events.append((stage, frac, msg))
    )
    out = tmp_path / name / "out"
    result = (
        kit.run_split(Technique, [str(p) for p in paths], raw, out, split=split, **args)
        if split
        else kit.run(Technique, [str(p) for p in paths], raw, out, **args)
    )
    json.dumps(result.summary, allow_nan=False)
    outs = {
        o.uri.rsplit("/", 1)[1]: SimpleNamespace(path=Path(o.uri), format=o.format, role=o.role)
        for o in result.outputs
        if o.role != "provenance"
    }
    return result.summary, outs, events


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV output (its '#' provenance header lines skipped)."""
    lines = [line for line in Path(path).read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))
