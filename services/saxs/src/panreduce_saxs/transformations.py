"""Detector geometry from NeXus ``NXtransformations`` (``depends_on`` chains) for pyFAI.

NeXus (NXtransformations; McStas frame: z along the beam, y up, x completing a
right-handed set) places a detector by a chain of transformations: the NXdetector's
``depends_on`` names the first, each one's ``depends_on`` attribute the next, up to
``"."``. A point ``p`` of the detector's own frame is at ``M_n ... M_2 M_1 p`` in the
laboratory, with for each step

* ``transformation_type="translation"``: ``x -> x + value * v + offset``;
* ``transformation_type="rotation"``: ``x -> R(value, v) x + offset`` (right-handed
  rotation by ``value`` about the unit vector ``v``),

``value`` in the dataset's ``units`` (lengths to metres; ``deg``/``rad``), ``offset`` in
``offset_units`` (default: the value's units for translations, metres for rotations).
A dataset with one value per frame gives its first value.

In the detector's frame pixel centres are at ``x_pixel_offset`` (columns) and
``y_pixel_offset`` (rows) when the NXdetector has them, else at ``((j + 0.5) p2,
(i + 0.5) p1)`` (the corner of pixel (0, 0) at the frame's origin).

pyFAI describes the same flat detector by ``dist``, ``poni1``, ``poni2`` and
``rot1..rot3``: the lab position of the point ``(d1, d2)`` of the pixel plane (d1 along
rows, d2 along columns, from the corner of pixel (0, 0)) is ``R(rot1, rot2, rot3) (d2 -
poni2, d1 - poni1, dist)`` in (x, y, z). With ``u``, ``v`` the lab directions of the
column and row axes, ``n = u x v`` and ``O`` the lab position of the corner of pixel
(0, 0), ``R = [u v n]``, ``dist = n . O``, ``poni1 = -v . O``, ``poni2 = -u . O``.
The angles are found by matching pyFAI's own rotation matrix (read from its pixel
positions, so whatever its sign conventions) to ``R``; the match is checked to 1e-9.
The azimuth χ is then pyFAI's in this frame: from +x towards +y of the laboratory.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import h5py
import numpy as np

from panreduce.nexus import read_text

ANGLE_TO_RAD = {
    "deg": math.pi / 180,
    "degree": math.pi / 180,
    "degrees": math.pi / 180,
    "rad": 1.0,
    "radian": 1.0,
    "radians": 1.0,
}
# length units (lower case) to metres: NXtransformations offsets and the NeXus geometry fields (io)
LENGTH_TO_M = {
    "m": 1.0,
    "metre": 1.0,
    "meter": 1.0,
    "mm": 1e-3,
    "millimetre": 1e-3,
    "millimeter": 1e-3,
    "cm": 1e-2,
    "um": 1e-6,
    "µm": 1e-6,
    "micron": 1e-6,
    "micrometre": 1e-6,
    "nm": 1e-9,
    "a": 1e-10,
    "å": 1e-10,
    "angstrom": 1e-10,
    "ang": 1e-10,
}


class TransformationError(ValueError):
    """A depends_on chain that cannot be followed or used."""


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Right-handed (active) rotation by ``angle_rad`` about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=float)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def step_matrix(kind: str, value: float, vector: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """The 4x4 matrix of one transformation (value in m or rad, offset in m)."""
    m = np.eye(4)
    v = np.asarray(vector, dtype=float)
    norm = np.linalg.norm(v)
    if not norm > 0:
        raise TransformationError("has a zero 'vector'")
    v = v / norm
    if kind == "translation":
        m[:3, 3] = value * v + offset
    elif kind == "rotation":
        m[:3, :3] = rotation_matrix(v, value)
        m[:3, 3] = offset
    else:
        raise TransformationError(f"has transformation_type {kind!r} (not translation/rotation)")
    return m


def _resolve(f: h5py.File, base: h5py.Group, target: str) -> h5py.Dataset:
    obj = f.get(target) if target.startswith("/") else base.get(target)
    if not isinstance(obj, h5py.Dataset):
        raise TransformationError(f"depends_on names {target!r}, which is not a dataset")
    return obj


def chain_matrix(f: h5py.File, detector: h5py.Group) -> tuple[np.ndarray, list[str]] | None:
    """The 4x4 detector-to-laboratory matrix of ``detector``'s depends_on chain and the
    paths followed, or None when it has no chain (no ``depends_on`` or ``"."``)."""
    dep = detector.get("depends_on")
    target = read_text(dep[()]) if isinstance(dep, h5py.Dataset) else read_text(detector.attrs.get("depends_on", "."))
    total = np.eye(4)
    seen: list[str] = []
    base = detector
    while target and target != ".":
        ds = _resolve(f, base, target)
        if ds.name in seen:
            raise TransformationError(f"depends_on chain loops at {ds.name}")
        seen.append(ds.name)
        kind = read_text(ds.attrs.get("transformation_type", "")).strip().lower()
        vals = np.asarray(ds[()], dtype=float).ravel()
        if not vals.size:
            raise TransformationError(f"{ds.name} is empty")
        units = read_text(ds.attrs.get("units", "")).strip().lower()
        if kind == "rotation":
            value = vals[0] * ANGLE_TO_RAD.get(units or "deg", math.pi / 180)
            off_units = read_text(ds.attrs.get("offset_units", "m")).strip().lower() or "m"
        else:
            value = vals[0] * LENGTH_TO_M.get(units or "m", 1.0)
            off_units = read_text(ds.attrs.get("offset_units", units or "m")).strip().lower() or "m"
        offset = np.asarray(ds.attrs.get("offset", np.zeros(3)), dtype=float).ravel()
        offset = (offset[:3] if offset.size >= 3 else np.zeros(3)) * LENGTH_TO_M.get(off_units, 1.0)
        vector = np.asarray(ds.attrs.get("vector", np.zeros(3)), dtype=float).ravel()[:3]
        try:
            total = step_matrix(kind, value, vector, offset) @ total  # outer steps act last
        except TransformationError as exc:
            raise TransformationError(f"{ds.name} {exc}") from None
        target = read_text(ds.attrs.get("depends_on", "."))
        base = ds.parent
    if not seen:
        return None
    return total, seen


@dataclass(frozen=True)
class PoniGeometry:
    dist_m: float
    poni1_m: float
    poni2_m: float
    rot1: float  # rad
    rot2: float
    rot3: float

    def as_tuple(self) -> tuple[float, float, float, float, float, float]:
        return (self.dist_m, self.poni1_m, self.poni2_m, self.rot1, self.rot2, self.rot3)


def pixel_frame(
    matrix: np.ndarray,
    pixel1_m: float,
    pixel2_m: float,
    x_offsets: np.ndarray | None = None,
    y_offsets: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(O, u, v): lab position of the corner of pixel (0, 0), lab directions of columns
    and rows."""
    r, t = matrix[:3, :3], matrix[:3, 3]
    sx = 1.0 if x_offsets is None or x_offsets.size < 2 or x_offsets[1] >= x_offsets[0] else -1.0
    sy = 1.0 if y_offsets is None or y_offsets.size < 2 or y_offsets[1] >= y_offsets[0] else -1.0
    x0 = 0.0 if x_offsets is None else float(x_offsets[0]) - sx * pixel2_m / 2
    y0 = 0.0 if y_offsets is None else float(y_offsets[0]) - sy * pixel1_m / 2
    u = r @ np.array([sx, 0.0, 0.0])
    v = r @ np.array([0.0, sy, 0.0])
    origin = r @ np.array([x0, y0, 0.0]) + t
    return origin, u, v


_D1 = np.array([-0.5, -0.5, 0.5])
_D2 = np.array([-0.5, 0.5, -0.5])
_UNIT: list = []


def _unit_geometry():
    if not _UNIT:
        from pyFAI.detectors import Detector
        from pyFAI.geometry import Geometry as _G

        _UNIT.append(_G(dist=1.0, detector=Detector(pixel1=1.0, pixel2=1.0)))
    return _UNIT[0]


def _pyfai_rotation(angles: np.ndarray) -> np.ndarray:
    """pyFAI's rotation matrix R(rot1, rot2, rot3) acting on (x, y, z), read from its own
    pixel positions (unit pixels, poni at 0, dist 1)."""
    # d1, d2 are pixel indices: -0.5 is the corner (coordinate 0)
    z, y, x = _unit_geometry().calc_pos_zyx(d1=_D1, d2=_D2, param=[1.0, 0.0, 0.0, *map(float, angles)])
    p = np.stack([np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)], axis=1)  # rows: points
    n = p[0]
    return np.column_stack([p[1] - n, p[2] - n, n])


def to_pyfai(origin: np.ndarray, u: np.ndarray, v: np.ndarray) -> PoniGeometry:
    """pyFAI's dist/poni1/poni2/rot1..3 of the pixel plane (O, u, v) (see the module)."""
    from scipy.optimize import least_squares

    u = u / np.linalg.norm(u)
    v = v / np.linalg.norm(v)
    n = np.cross(u, v)
    if abs(float(np.dot(u, v))) > 1e-9:
        raise TransformationError("the detector's row and column axes are not perpendicular")
    dist = float(np.dot(n, origin))
    if not dist > 0:
        raise TransformationError(
            "the detector faces away from the sample (mirrored pixel frame or "
            "normal pointing to the sample): not supported by pyFAI's geometry"
        )
    target = np.column_stack([u, v, n])
    best = None
    for start in itertools.product((-1.0, 0.0, 1.0), repeat=3):
        res = least_squares(
            lambda a: (_pyfai_rotation(a) - target).ravel(), np.array(start), xtol=1e-15, ftol=1e-15, gtol=1e-15
        )
        if best is None or res.cost < best.cost:
            best = res
        if best.cost < 1e-20:
            break
    assert best is not None
    if not best.cost < 1e-18:
        raise TransformationError(f"no pyFAI rotation reproduces the detector orientation (cost {best.cost:.2g})")
    a = [math.remainder(float(x), 2 * math.pi) for x in best.x]
    return PoniGeometry(dist, float(-np.dot(v, origin)), float(-np.dot(u, origin)), a[0], a[1], a[2])


@dataclass
class Placement:
    """An NXdetector's depends_on chain, read: the detector-to-lab matrix, the pixel offsets
    (m) when recorded, and the paths followed."""

    matrix: np.ndarray
    x_offsets: np.ndarray | None
    y_offsets: np.ndarray | None
    chain: list[str]

    def pixel_sizes(self, pixel1_m: float | None, pixel2_m: float | None) -> tuple[float | None, float | None]:
        """The given sizes, else the spacing of the pixel offsets."""
        if pixel2_m is None and self.x_offsets is not None and self.x_offsets.size > 1:
            pixel2_m = abs(float(self.x_offsets[1] - self.x_offsets[0]))
        if pixel1_m is None and self.y_offsets is not None and self.y_offsets.size > 1:
            pixel1_m = abs(float(self.y_offsets[1] - self.y_offsets[0]))
        return pixel1_m, pixel2_m

    def to_pyfai(self, pixel1_m: float, pixel2_m: float) -> PoniGeometry:
        origin, u, v = pixel_frame(self.matrix, pixel1_m, pixel2_m, self.x_offsets, self.y_offsets)
        return to_pyfai(origin, u, v)


def read_placement(f: h5py.File, detector: h5py.Group) -> Placement | None:
    """The depends_on chain of an NXdetector (None without one); TransformationError when
    it cannot be followed."""
    found = chain_matrix(f, detector)
    if found is None:
        return None
    matrix, chain = found

    def offsets(key: str) -> np.ndarray | None:
        ds = detector.get(key)
        if not isinstance(ds, h5py.Dataset):
            return None
        arr = np.asarray(ds[()], dtype=float)
        unit = read_text(ds.attrs.get("units", "m")).strip().lower() or "m"
        arr = arr * LENGTH_TO_M.get(unit, 1.0)
        if arr.ndim == 2:
            arr = arr[0, :] if key.startswith("x") else arr[:, 0]
        return arr.ravel()

    return Placement(matrix, offsets("x_pixel_offset"), offsets("y_pixel_offset"), chain)
