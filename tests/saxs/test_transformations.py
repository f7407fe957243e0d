"""Detector geometry from NeXus NXtransformations (depends_on chains): a tilted, rotated,
offset detector placed by a chain of rotations and translations; the pixels' 2θ and χ
computed here with scipy's rotations (independently of the service's chain code) must be
pyFAI's after conversion, and silver behenate rings drawn on that detector come out at
their orders in I(q) through the whole technique."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import run_saxs  # at import: the saxs conftest (a later folder's would shadow it)
from scipy.spatial.transform import Rotation
from synthetic import AGBEH_Q1, agbeh

from panreduce import errors
from panreduce_saxs.geometry import Geometry, make_integrator, resolve_geometry
from panreduce_saxs.io import inspect_nexus

SHAPE = (260, 280)
PIX = 172e-6
LAM = 1.0  # Å
# the chain, from the detector outwards (NeXus order): name, type, value, units, vector, offset (m)
CHAIN = [
    ("beam_x", "translation", -22.0, "mm", (1, 0, 0), None),
    ("beam_y", "translation", -0.021, "m", (0, 1, 0), None),
    ("tilt_x", "rotation", -4.0, "deg", (1, 0, 0), None),
    ("tilt_y", "rotation", 0.14, "rad", (0, 1, 0), (0.004, 0.0, 0.0)),
    ("twist", "rotation", 3.0, "deg", (0, 0, 1), None),
    ("distance", "translation", 250.0, "mm", (0, 0, 1), None),
]
UNIT = {"mm": 1e-3, "m": 1.0}


def _lab_positions() -> tuple[np.ndarray, np.ndarray]:
    """Lab (x, y, z) of every pixel centre, and the detector normal, from CHAIN."""
    i, j = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    p = np.stack([(j + 0.5) * PIX, (i + 0.5) * PIX, np.zeros(SHAPE)], axis=-1).reshape(-1, 3)
    normal = np.array([0.0, 0.0, 1.0])
    for _name, kind, value, units, vector, offset in CHAIN:  # innermost first
        v = np.asarray(vector, float) / np.linalg.norm(vector)
        off = np.zeros(3) if offset is None else np.asarray(offset, float)
        if kind == "translation":
            p = p + value * UNIT[units] * v + off
        else:
            angle = np.deg2rad(value) if units == "deg" else value
            rot = Rotation.from_rotvec(angle * v)
            p = rot.apply(p) + off
            normal = rot.apply(normal)
    return p.reshape(*SHAPE, 3), normal


def _write(path, frames: np.ndarray, chain=CHAIN) -> None:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        mono = inst.create_group("monochromator")
        mono.attrs["NX_class"] = "NXmonochromator"
        mono.create_dataset("wavelength", data=LAM).attrs["units"] = "angstrom"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", data=frames.astype(np.float32))
        for key in ("x_pixel_size", "y_pixel_size"):
            det.create_dataset(key, data=PIX * 1e3).attrs["units"] = "mm"
        # a plain NXdetector distance, which the chain overrides
        det.create_dataset("distance", data=0.9).attrs["units"] = "m"
        tr = det.create_group("transformations")
        tr.attrs["NX_class"] = "NXtransformations"
        det.create_dataset("depends_on", data=f"transformations/{chain[0][0]}")
        for k, (name, kind, value, units, vector, offset) in enumerate(chain):
            ds = tr.create_dataset(name, data=np.array([value]))
            ds.attrs.update(transformation_type=kind, units=units, vector=np.asarray(vector, float))
            if offset is not None:
                ds.attrs.update(offset=np.asarray(offset, float) * 1e3, offset_units="mm")
            # alternately relative and absolute paths to the next step
            nxt = chain[k + 1][0] if k + 1 < len(chain) else "."
            ds.attrs["depends_on"] = nxt if (nxt == "." or k % 2) else f"{tr.name}/{nxt}"


def _q_of(p: np.ndarray) -> np.ndarray:
    two_theta = np.arccos(p[..., 2] / np.linalg.norm(p, axis=-1))
    return 4 * np.pi * np.sin(two_theta / 2) / LAM


def test_chain_gives_pyfai_the_pixels_two_theta_and_chi(tmp_path):
    path = tmp_path / "det.nxs"
    _write(path, np.ones((1, *SHAPE)))
    info = inspect_nexus(path)
    placement = info.geometry["placement"]
    assert placement.chain[0].endswith("/beam_x") and len(placement.chain) == len(CHAIN)
    assert placement.pixel_sizes(info.geometry["pixel1_m"], None) == (pytest.approx(PIX), None)
    poni = placement.to_pyfai(PIX, PIX).as_tuple()
    geo = Geometry(
        distance_m=0.25, wavelength_m=LAM * 1e-10, center_x_px=0, center_y_px=0, pixel1_m=PIX, pixel2_m=PIX, poni=poni
    )
    ai = make_integrator(geo, SHAPE)
    p, normal = _lab_positions()
    tth_ref = np.arccos(p[..., 2] / np.linalg.norm(p, axis=-1))
    chi_ref = np.arctan2(p[..., 1], p[..., 0])
    tth = ai.center_array(SHAPE, unit="2th_rad", scale=False)
    chi = ai.center_array(SHAPE, unit="chi_rad", scale=False)
    assert np.abs(tth - tth_ref).max() < 1e-7
    assert np.abs(np.angle(np.exp(1j * (chi - chi_ref)))).max() < 1e-6
    # pyFAI's dist is the perpendicular sample-plane distance: corner of pixel (0, 0) . normal
    corner = p[0, 0] - placement.matrix[:3, :3] @ np.array([PIX / 2, PIX / 2, 0])
    assert poni[0] == pytest.approx(float(np.dot(normal, corner)), rel=1e-9)
    # the tilt matters: the same beam centre and distance without it is far off
    flat = make_integrator(
        Geometry(
            distance_m=0.25,
            wavelength_m=LAM * 1e-10,
            center_x_px=0,
            center_y_px=0,
            pixel1_m=PIX,
            pixel2_m=PIX,
            poni=(*poni[:3], 0, 0, 0),
        ),
        SHAPE,
    )
    assert np.abs(flat.center_array(SHAPE, unit="2th_rad", scale=False) - tth_ref).max() > 1e-3


def test_rings_on_a_tilted_detector_from_nexus_transformations(tmp_path):
    p, normal = _lab_positions()
    q = _q_of(p)
    dist = float(np.dot(normal, p[0, 0]))
    cos_incidence = dist / np.linalg.norm(p, axis=-1)  # solid angle relative to normal incidence: cos^3
    img = agbeh(q, width=0.002) * cos_incidence**3 * 50
    path = tmp_path / "agbeh_tilted.nxs"
    _write(path, np.stack([img, 2 * img]))
    summary, outputs = run_saxs(
        [path], {"mode": "azimuthal", "integration.q_bins": 600, "masks.beamstop": "none"}, tmp_path / "job"
    )
    assert summary["frames"] == 2
    with h5py.File(outputs["saxs_iq.h5"]) as f:
        entry = f[sorted(k for k in f if k.startswith("sasentry"))[0]]
        qq, ii = entry["sasdata/Q"][()], entry["sasdata/I"][()]
        assert entry["sasinstrument/sasdetector/SDD"][()] == pytest.approx(0.25, rel=0.05)
    orders = [n for n in range(1, 6) if q.min() + 0.01 < n * AGBEH_Q1 < q.max() - 0.01]
    assert len(orders) >= 3
    for n in orders:
        win = np.abs(qq - n * AGBEH_Q1) < 0.006
        w = np.clip(ii[win] - 50 * 20, 0, None)
        centroid = float(np.sum(qq[win] * w) / np.sum(w))
        assert centroid == pytest.approx(n * AGBEH_Q1, abs=2e-4), n
        # the ring is sharp and as high as drawn (a wrong tilt smears it)
        assert ii[win].max() == pytest.approx(50 * (20 + 1000 / n), rel=0.12), n
    # off the rings, the flat background: solid angle applied with the tilt
    far = np.all([np.abs(qq - n * AGBEH_Q1) > 0.012 for n in range(1, 8)], axis=0)
    assert np.median(ii[far]) == pytest.approx(50 * 20, rel=0.01)


def test_parameters_override_the_chain_and_bad_chains_are_named(tmp_path):
    path = tmp_path / "det.nxs"
    _write(path, np.ones((1, *SHAPE)))
    s0, _ = run_saxs([path], {"integration.q_bins": 50, "masks.beamstop": "none"}, tmp_path / "j0")
    s1, _ = run_saxs(
        [path], {"integration.q_bins": 50, "masks.beamstop": "none", "geometry.distance_mm": 400.0}, tmp_path / "j1"
    )
    # a longer distance: the same pixels see smaller angles
    assert s1["q_max"] < 0.75 * s0["q_max"]
    bad = [*CHAIN[:-1], ("distance", "shear", 1.0, "mm", (0, 0, 1), None)]
    path2 = tmp_path / "bad.nxs"
    _write(path2, np.ones((1, *SHAPE)), chain=bad)
    with pytest.raises(errors.InvalidInput, match=r"bad\.nxs.*shear"):
        run_saxs([path2], {"integration.q_bins": 50}, tmp_path / "j2")
    # a chain that cannot be used does not matter when the parameters give the geometry
    s3, _ = run_saxs(
        [path2],
        {
            "integration.q_bins": 50,
            "masks.beamstop": "none",
            "geometry.beam_center_px": [140, 130],
            "geometry.distance_mm": 250,
        },
        tmp_path / "j3",
    )
    assert s3["frames"] == 1


def test_a_poni_files_rot3_is_kept(tmp_path):
    """A PONI file's rot3 turns χ (not 2θ); Fit2D terms cannot hold it, so the integrator
    takes the PONI's six numbers: χ and 2θ of every pixel as pyFAI's own loader gives."""
    import pyFAI

    poni = tmp_path / "rot3.poni"
    poni.write_text(
        "poni_version: 2\n"
        f'Detector: Detector\nDetector_config: {{"pixel1": {PIX}, "pixel2": {PIX}, "max_shape": {list(SHAPE)}}}\n'
        "Distance: 0.25\nPoni1: 0.02\nPoni2: 0.025\nRot1: 0.05\nRot2: -0.03\nRot3: 0.4\nWavelength: 1e-10\n"
    )
    ref = pyFAI.load(str(poni))
    ai = make_integrator(resolve_geometry(SHAPE, poni=poni), SHAPE)
    for unit in ("chi_rad", "2th_rad"):
        a, b = ai.center_array(SHAPE, unit=unit, scale=False), ref.center_array(SHAPE, unit=unit, scale=False)
        assert np.abs(np.angle(np.exp(1j * (a - b)))).max() < 1e-9, unit
    # with a distance given, the Fit2D equivalent: 2θ changes, as asked
    ai2 = make_integrator(resolve_geometry(SHAPE, poni=poni, distance_mm=500), SHAPE)
    assert ai2.getFit2D()["directDist"] == pytest.approx(500)
