"""CrystFEL detector geometry (``.geom``): parsing and per-pixel maps.

Pure functions on text and arrays (no file access). Conventions as in CrystFEL: the
data array is indexed (ss, fs); each panel covers ``min_fs..max_fs`` × ``min_ss..max_ss``
(inclusive) of it, and a pixel (fs, ss) of a panel lies at lab position
``corner + (fs - min_fs)·fs_vec + (ss - min_ss)·ss_vec`` in pixel units (x, y), the beam
along +z through (0, 0). ``res`` is pixels per metre, ``clen`` (m) the camera length —
a value or an HDF5 dataset path (the reader resolves it), ``coffset`` (m) is added to it.
Global keys are defaults for every panel; ``panel/key`` overrides them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from panreduce import constants

__all__ = [
    "BadRegion",
    "Detector",
    "GeometryError",
    "Panel",
    "bad_pixel_mask",
    "parse_geometry",
    "parse_vector",
    "pixel_maps",
]


class GeometryError(ValueError):
    """A geometry text that cannot be understood (line and reason in the message)."""


@dataclass(frozen=True)
class Panel:
    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    fs: tuple[float, float, float]  # lab direction of +fs (x, y, z), pixel units
    ss: tuple[float, float, float]
    corner_x: float  # pixels
    corner_y: float
    res_px_per_m: float
    clen: float | str | None  # metres, or an HDF5 path (values there in mm... as CrystFEL: see reader)
    coffset_m: float
    adu_per_ev: float | None
    adu_per_photon: float | None
    data: str | None
    mask: str | None
    mask_file: str | None
    mask_good: int
    mask_bad: int
    no_index: bool

    @property
    def width(self) -> int:
        return self.max_fs - self.min_fs + 1

    @property
    def height(self) -> int:
        return self.max_ss - self.min_ss + 1


@dataclass(frozen=True)
class BadRegion:
    name: str
    # either pixel ranges (fs/ss, optionally on one panel) or lab ranges (x/y in pixels)
    min_fs: int | None = None
    max_fs: int | None = None
    min_ss: int | None = None
    max_ss: int | None = None
    panel: str | None = None
    min_x: float | None = None
    max_x: float | None = None
    min_y: float | None = None
    max_y: float | None = None

    @property
    def in_lab(self) -> bool:
        return self.min_x is not None


@dataclass(frozen=True)
class Detector:
    panels: tuple[Panel, ...]
    bad_regions: tuple[BadRegion, ...] = ()
    photon_energy: float | str | None = None  # eV, or an HDF5 path
    dims: tuple[str, ...] = ()  # e.g. ("%", "ss", "fs")
    rigid_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def data_path(self) -> str | None:
        return self.panels[0].data if self.panels else None

    @property
    def mask_path(self) -> str | None:
        return self.panels[0].mask if self.panels else None

    @property
    def shape(self) -> tuple[int, int]:
        """(ss, fs) size of the data array the panels cover."""
        return (max(p.max_ss for p in self.panels) + 1, max(p.max_fs for p in self.panels) + 1)

    @property
    def clen(self) -> float | str | None:
        return self.panels[0].clen if self.panels else None


_VEC = re.compile(r"([+-]?\s*\d*\.?\d*(?:[eE][+-]?\d+)?)\s*([xyz])")


def parse_vector(text: str) -> tuple[float, float, float]:
    """A CrystFEL direction such as ``-0.003632x +0.999993y`` or ``x`` → (x, y, z)."""
    out = {"x": 0.0, "y": 0.0, "z": 0.0}
    s = text.replace(" ", "")
    pos = 0
    for m in _VEC.finditer(s):
        if m.start() != pos:
            raise GeometryError(f"cannot read the direction {text!r}")
        coef = m.group(1)
        if coef in ("", "+"):
            value = 1.0
        elif coef == "-":
            value = -1.0
        else:
            value = float(coef)
        out[m.group(2)] += value
        pos = m.end()
    if pos != len(s) or pos == 0:
        raise GeometryError(f"cannot read the direction {text!r}")
    return (out["x"], out["y"], out["z"])


def _value_or_path(text: str, unit_scale: dict[str, float], default_scale: float) -> float | str:
    """A number with an optional unit, or an HDF5 path (starting with '/')."""
    t = text.strip()
    if t.startswith("/"):
        return t
    parts = t.split()
    try:
        value = float(parts[0])
    except (ValueError, IndexError) as exc:
        raise GeometryError(f"not a number or a dataset path: {text!r}") from exc
    scale = unit_scale.get(parts[1], None) if len(parts) > 1 else default_scale
    if scale is None:
        raise GeometryError(f"unknown unit in {text!r}")
    return value * scale


def _int(text: str, key: str) -> int:
    try:
        return round(float(text))
    except ValueError as exc:
        raise GeometryError(f"{key}: not a number: {text!r}") from exc


def _float(text: str, key: str) -> float:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError) as exc:
        raise GeometryError(f"{key}: not a number: {text!r}") from exc


_PANEL_KEYS = {
    "min_fs",
    "max_fs",
    "min_ss",
    "max_ss",
    "fs",
    "ss",
    "corner_x",
    "corner_y",
    "res",
    "clen",
    "coffset",
    "adu_per_eV",
    "adu_per_photon",
    "data",
    "mask",
    "mask_file",
    "mask_good",
    "mask_bad",
    "no_index",
    "dim0",
    "dim1",
    "dim2",
    "dim3",
    "max_adu",
    "saturation_map",
    "saturation_map_file",
    "flag_lessthan",
    "flag_morethan",
    "flag_equal",
    "badrow_direction",
    "photon_energy",
    "mask0_data",
    "mask0_goodbits",
    "mask0_badbits",
    "mask0_file",
    "mask1_data",
    "mask1_goodbits",
    "mask1_badbits",
    "mask1_file",
    "bandwidth",
    "detector_shift_x",
    "detector_shift_y",
    "peak_list",
    "peak_list_type",
    "wavelength",
    "electron_voltage",
}
_BAD_KEYS = {"min_fs", "max_fs", "min_ss", "max_ss", "panel", "min_x", "max_x", "min_y", "max_y"}
_MAX_LINES = 200_000


def parse_geometry(text: str) -> Detector:
    """Parse CrystFEL geometry text into a :class:`Detector`.

    Raises :class:`GeometryError` for unreadable lines, panels without ranges or
    directions, or unknown panel keys."""
    lines = text.splitlines()
    if len(lines) > _MAX_LINES:
        raise GeometryError(f"more than {_MAX_LINES} lines")
    globals_: dict[str, str] = {}
    panels: dict[str, dict[str, str]] = {}
    bads: dict[str, dict[str, str]] = {}
    rigid: dict[str, tuple[str, ...]] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise GeometryError(f"line {n}: expected 'key = value': {raw.strip()!r}")
        key, value = (s.strip() for s in line.split("=", 1))
        if key.startswith("rigid_group"):
            rigid[key] = tuple(v.strip() for v in value.split(",") if v.strip())
            continue
        if "/" in key:
            owner, sub = key.split("/", 1)
            if owner.startswith("bad"):
                if sub not in _BAD_KEYS:
                    raise GeometryError(f"line {n}: unknown bad-region key {sub!r}")
                bads.setdefault(owner, {})[sub] = value
            else:
                if sub not in _PANEL_KEYS:
                    raise GeometryError(f"line {n}: unknown panel key {sub!r}")
                panels.setdefault(owner, {})[sub] = value
        else:
            globals_[key] = value
    if not panels:
        raise GeometryError("no panels defined")

    length_units = {"m": 1.0, "mm": 1e-3}
    photon_energy: float | str | None = None
    if "photon_energy" in globals_:
        photon_energy = _value_or_path(globals_["photon_energy"], {"eV": 1.0, "keV": 1e3}, 1.0)
    elif "wavelength" in globals_:
        wl = _value_or_path(globals_["wavelength"], {"m": 1.0, "A": 1e-10}, 1.0)
        photon_energy = wl if isinstance(wl, str) else constants.H_C_EV_ANGSTROM / (wl * 1e10)

    dims = tuple(globals_[f"dim{i}"] for i in range(4) if f"dim{i}" in globals_)
    out: list[Panel] = []
    for name, own in panels.items():
        kv = {**globals_, **own}
        for k in ("min_fs", "max_fs", "min_ss", "max_ss"):
            if k not in kv:
                raise GeometryError(f"panel {name}: missing {k}")
        clen_text = kv.get("clen")
        clen = _value_or_path(clen_text, length_units, 1.0) if clen_text is not None else None
        res = _float(kv.get("res", "nan"), f"{name}/res")
        panel = Panel(
            name=name,
            min_fs=_int(kv["min_fs"], f"{name}/min_fs"),
            max_fs=_int(kv["max_fs"], f"{name}/max_fs"),
            min_ss=_int(kv["min_ss"], f"{name}/min_ss"),
            max_ss=_int(kv["max_ss"], f"{name}/max_ss"),
            fs=parse_vector(kv.get("fs", "x")),
            ss=parse_vector(kv.get("ss", "y")),
            corner_x=_float(kv.get("corner_x", "0"), f"{name}/corner_x"),
            corner_y=_float(kv.get("corner_y", "0"), f"{name}/corner_y"),
            res_px_per_m=res,
            clen=clen,
            coffset_m=_float(kv.get("coffset", "0"), f"{name}/coffset"),
            adu_per_ev=_float(kv["adu_per_eV"], "adu_per_eV") if "adu_per_eV" in kv else None,
            adu_per_photon=_float(kv["adu_per_photon"], "adu_per_photon") if "adu_per_photon" in kv else None,
            data=kv.get("data"),
            mask=kv.get("mask"),
            mask_file=kv.get("mask_file"),
            mask_good=int(kv.get("mask_good", "0"), 0),
            mask_bad=int(kv.get("mask_bad", "0"), 0),
            no_index=kv.get("no_index", "0").strip() in ("1", "true"),
        )
        if panel.max_fs < panel.min_fs or panel.max_ss < panel.min_ss or panel.min_fs < 0 or panel.min_ss < 0:
            raise GeometryError(f"panel {name}: empty or negative pixel range")
        if not math.isfinite(res) or res <= 0:
            raise GeometryError(f"panel {name}: 'res' (pixels per metre) missing or not positive")
        out.append(panel)

    regions: list[BadRegion] = []
    for name, kv in bads.items():
        if "min_x" in kv or "max_x" in kv:
            try:
                regions.append(
                    BadRegion(
                        name,
                        min_x=float(kv["min_x"]),
                        max_x=float(kv["max_x"]),
                        min_y=float(kv["min_y"]),
                        max_y=float(kv["max_y"]),
                    )
                )
            except KeyError as exc:
                raise GeometryError(f"{name}: needs min_x, max_x, min_y and max_y") from exc
        else:
            try:
                regions.append(
                    BadRegion(
                        name,
                        min_fs=_int(kv["min_fs"], name),
                        max_fs=_int(kv["max_fs"], name),
                        min_ss=_int(kv["min_ss"], name),
                        max_ss=_int(kv["max_ss"], name),
                        panel=kv.get("panel"),
                    )
                )
            except KeyError as exc:
                raise GeometryError(f"{name}: needs min_fs, max_fs, min_ss and max_ss") from exc
            if regions[-1].panel is not None and regions[-1].panel not in panels:
                raise GeometryError(f"{name}: unknown panel {regions[-1].panel!r}")
    return Detector(
        panels=tuple(out), bad_regions=tuple(regions), photon_energy=photon_energy, dims=dims, rigid_groups=rigid
    )


@dataclass(frozen=True)
class PixelMaps:
    """Per-pixel maps of the data array (ss, fs)."""

    x_px: np.ndarray  # lab x of each pixel centre-ish position (CrystFEL: pixel corner + 0.5), pixels
    y_px: np.ndarray
    r_px: np.ndarray  # distance from the beam in the detector plane, pixels
    panel_id: np.ndarray  # int16: index into Detector.panels; -1 where no panel covers the pixel
    res_px_per_m: np.ndarray  # per pixel


def pixel_maps(detector: Detector) -> PixelMaps:
    """Lab (x, y) in pixels of every pixel of the data array, its radius from the beam and
    the panel it belongs to. Positions are those of pixel centres: CrystFEL places the
    corner at the pixel's edge, so the centre of (fs, ss) is at offset (fs + 0.5, ss + 0.5)."""
    shape = detector.shape
    x = np.zeros(shape, np.float32)
    y = np.zeros(shape, np.float32)
    res = np.ones(shape, np.float32)
    pid = np.full(shape, -1, np.int16)
    for i, p in enumerate(detector.panels):
        fs = np.arange(p.width, dtype=np.float64) + 0.5
        ss = np.arange(p.height, dtype=np.float64)[:, None] + 0.5
        sl = (slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1))
        x[sl] = p.corner_x + fs * p.fs[0] + ss * p.ss[0]
        y[sl] = p.corner_y + fs * p.fs[1] + ss * p.ss[1]
        res[sl] = p.res_px_per_m
        pid[sl] = i
    return PixelMaps(x_px=x, y_px=y, r_px=np.hypot(x, y), panel_id=pid, res_px_per_m=res)


def bad_pixel_mask(detector: Detector, maps: PixelMaps) -> np.ndarray:
    """True where a ``bad_*`` region of the geometry (or no panel) covers the pixel."""
    bad = maps.panel_id < 0
    names = [p.name for p in detector.panels]
    for region in detector.bad_regions:
        if region.in_lab:
            bad |= (
                (maps.x_px >= region.min_x)
                & (maps.x_px <= region.max_x)
                & (maps.y_px >= region.min_y)
                & (maps.y_px <= region.max_y)
            )
            continue
        sub = np.zeros_like(bad)
        sub[region.min_ss : region.max_ss + 1, region.min_fs : region.max_fs + 1] = True
        if region.panel is not None:
            sub &= maps.panel_id == names.index(region.panel)
        bad |= sub
    return bad


def resolution_map(maps: PixelMaps, *, clen_m: float, wavelength_angstrom: float) -> np.ndarray:
    """1/d (Å⁻¹) of every pixel: 2 sin θ / λ, with 2θ from the pixel's lab position at
    camera length ``clen_m`` (m)."""
    x_m = maps.x_px / maps.res_px_per_m
    y_m = maps.y_px / maps.res_px_per_m
    two_theta = np.arctan2(np.hypot(x_m, y_m), clen_m)
    return (2.0 * np.sin(two_theta / 2.0) / wavelength_angstrom).astype(np.float32)
