"""The saxs technique: glue between the kit and the algorithms."""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import errors, nxcansas
from panreduce.errors import FieldViolation, InvalidParameters
from panreduce.kit import Context, Inputs, StagedFile
from panreduce.kit import Technique as _Technique
from panreduce.kit.readers import open_checked
from panreduce_saxs import analysis, masks, plots
from panreduce_saxs.integrate import (
    HC_KEV_A,
    WATER_DSIGMA_20C,
    Cake,
    Curve,
    Geometry,
    IntegrationSetup,
    Integrator,
    absolute_scale_factor,
    fit2d_of_poni,
    geometry_of,
    make_integrator,
    subtract,
)
from panreduce_saxs.io import (
    HDF5_SUFFIXES,
    NexusFrames,
    SpecScan,
    frame_scan_point,
    inspect_nexus,
    parse_counter_expression,
    read_image,
    read_nexus_frame,
    read_spec,
)
from panreduce_saxs.params import SaxsParameters

VERSION = "0.1.0"
PRELOAD_IMAGES = 200  # image files read at load (and validated) when there are at most this many
SUMMARY_SERIES_MAX = 1000  # per-frame lists in the summary up to this many frames
TIME_COUNTERS = ("Time", "time", "Epoch", "epoch", "elapsed_time", "Seconds")
KINETIC_COLUMNS = ("rg", "rg_err", "i0", "i0_err", "guinier_q_min", "guinier_q_max", "guinier_ok",
                   "invariant", "invariant_err")
SHARD_FILE = "saxs_shard.h5"  # what a shard writes for the merge (per frame: label, counters, curve, fits)


@dataclass
class Frame:
    """One detector frame to reduce: where it is and what was recorded with it."""

    label: str
    source: str  # file name (for errors)
    path: Path
    index: int  # frame index in a stack (0 for single images)
    nexus: NexusFrames | None = None
    data: np.ndarray | None = None  # preloaded pixels
    counters: dict[str, float] = field(default_factory=dict)


@dataclass
class SaxsData:
    frames: list[Frame]
    geometry: Geometry
    shape: tuple[int, int]
    ai: Any  # pyFAI integrator
    mask_file: np.ndarray | None = None
    dark: np.ndarray | None = None
    flat: np.ndarray | None = None
    background: Frame | None = None
    standard: Frame | None = None
    standard_background: Frame | None = None
    reference: tuple[np.ndarray, np.ndarray] | None = None  # standard's reference curve
    first: Frame | None = None  # the job's first frame (masks, 2-D outputs): a shard's too
    offset: int = 0  # index of frames[0] among all the job's frames (a shard's start)
    total: int = 0  # frames of the whole job (every shard)

    @property
    def first_frame(self) -> Frame:
        return self.first if self.first is not None else self.frames[0]


def _violation(field_name: str, why: str) -> InvalidParameters:
    return InvalidParameters([FieldViolation(field_name, why)])


def _find(inputs: Inputs, name: str, param: str) -> StagedFile:
    staged = inputs.find(name) or inputs.find(Path(name).name)
    if staged is None:
        raise _violation(param, f"no input named {name!r} (inputs: {', '.join(f.name for f in inputs.files)})")
    return staged


def _single_frame(staged: StagedFile, frames_path: str = "") -> np.ndarray:
    if staged.path.suffix.lower() in HDF5_SUFFIXES:
        return read_nexus_frame(inspect_nexus(staged.path, staged.name, frames_path), 0)
    data = read_image(staged.path, staged.name)
    return data[0] if data.ndim == 3 else data


def _read_reference(staged: StagedFile) -> tuple[np.ndarray, np.ndarray]:
    try:
        arr = np.loadtxt(staged.path, comments="#", ndmin=2, usecols=(0, 1))
    except (ValueError, OSError) as exc:
        raise errors.InvalidInput(staged.name, f"is not a two-column q, I text file ({exc})") from None
    if arr.shape[0] < 3 or not np.all(np.isfinite(arr)):
        raise errors.InvalidInput(staged.name, "needs at least 3 finite (q, I) rows")
    return arr[:, 0], arr[:, 1]


class Technique(_Technique[SaxsParameters, SaxsData]):
    name = "saxs"
    version = VERSION
    title = "SAXS/WAXS azimuthal integration, scanning maps and kinetics"
    description = (
        "Integrates 2-D detector frames with pyFAI (geometry from a PONI file, explicit parameters "
        "or NeXus metadata; masks from files, thresholds, module gaps and the beamstop shadow; dark, "
        "flat, solid-angle and polarisation corrections; normalisation by monitor, transmission, "
        "exposure and thickness; absolute scale from a factor or a standard; background subtraction "
        "with errors) into I(q) with Poisson or azimuthal errors, sectors and 2-D cakes; fits a "
        "Gaussian peak per frame of a scan and maps it on the motor grid; follows kinetic series "
        "with Guinier Rg, I(0) and the invariant. Writes NXcanSAS 1.1, NeXus maps, ASCII images, "
        "CSV and PNG plots."
    )
    Parameters = SaxsParameters
    input_kinds = ("image/tiff", "image/edf", "image/cbf", "nexus/nxdetector", "spec/counters", "pyfai/poni")
    output_formats = ("nxcansas", "nexus", "csv", "png", "text-image")
    shardable = True
    shard_unit = "frame range"

    def warm_up(self) -> None:
        import pyFAI.integrator.azimuthal  # noqa: F401  (a few seconds: before SERVING)

    # -- load ------------------------------------------------------------------------------
    def load(self, inputs: Inputs, params: SaxsParameters, ctx: Context) -> SaxsData:
        named = {n for n in (params.poni_file, params.mask_file, params.dark_file, params.flat_file,
                             params.background_file, params.standard_file, params.standard_background_file)
                 if n}
        if params.standard_reference and not _is_number(params.standard_reference) \
                and params.standard_reference != "water" and params.standard_file:
            named.add(params.standard_reference)
        aux_files = {f.path for n in named for f in [_find(inputs, n, _param_of(params, n))]}
        spec_scans: dict[int, SpecScan] = {}
        poni: StagedFile | None = _find(inputs, params.poni_file, "poni_file") if params.poni_file else None
        frame_files: list[StagedFile] = []
        for f in inputs.files:
            if f.path in aux_files:
                continue
            suffix = f.path.suffix.lower()
            if suffix == ".spec" or (suffix in ("", ".dat", ".txt") and _looks_like_spec(f.path)):
                spec_scans.update(read_spec(f.path, f.name))
            elif suffix == ".poni":
                if poni is None:
                    poni = f
            elif suffix in (".json", ".md", ".txt", ".log", ".dat"):
                continue
            else:
                frame_files.append(f)
        if not frame_files:
            raise errors.InvalidRequest("no detector frames among the inputs (TIFF, EDF, CBF or NeXus)")
        ctx.progress(0.0, "load", f"{len(frame_files)} frame file(s)")
        frames: list[Frame] = []
        nexus_geometry: dict[str, Any] = {}
        shape: tuple[int, int] | None = None
        preload = len(frame_files) <= PRELOAD_IMAGES
        for k, f in enumerate(frame_files):
            ctx.check_cancelled()
            if f.path.suffix.lower() in HDF5_SUFFIXES:
                info = inspect_nexus(f.path, f.name, params.frames_path)
                nexus_geometry = nexus_geometry or {**info.geometry, "source": f.name}
                fshape = info.shape
                for j in range(info.n_frames):
                    counters = {key: float(v[j]) for key, v in info.positioners.items()}
                    if info.times is not None:
                        counters.setdefault("time", float(info.times[j]))
                    frames.append(Frame(f"{Path(f.name).stem}_{j:05d}" if info.n_frames > 1 else Path(f.name).stem,
                                        f.name, f.path, j, nexus=info, counters=counters))
            else:
                data = read_image(f.path, f.name) if (preload or k == 0) else None
                if data is not None:
                    fshape = data.shape[-2:]
                    stack = data if data.ndim == 3 else data[None]
                    for j, img in enumerate(stack):
                        label = Path(f.name).stem + (f"_{j:05d}" if len(stack) > 1 else "")
                        frames.append(Frame(label, f.name, f.path, j, data=img,
                                            counters=_spec_counters(spec_scans, f.name, j)))
                else:
                    frames.append(Frame(Path(f.name).stem, f.name, f.path, 0,
                                        counters=_spec_counters(spec_scans, f.name, 0)))
            if shape is None:
                shape = tuple(fshape)  # type: ignore[assignment]
            elif tuple(fshape) != shape:
                raise errors.InvalidInput(f.name, f"frames of shape {tuple(fshape)} differ from the first "
                                          f"input's {shape}")
        assert shape is not None
        first, total, offset = frames[0], len(frames), 0
        if ctx.shard is not None:
            # a shard integrates its frame range, with the masks of the job's first frame
            offset = ctx.shard.bounds(total)[0]
            frames = ctx.shard.select(frames)
        geometry, ai = self._geometry(params, poni, nexus_geometry, shape)
        data = SaxsData(frames=frames, geometry=geometry, shape=shape, ai=ai, first=first, offset=offset,
                        total=total)
        if params.mask_file:
            data.mask_file = masks.read_mask_file(_find(inputs, params.mask_file, "mask_file").path,
                                                  params.mask_file, shape)
        for attr, pname in (("dark", "dark_file"), ("flat", "flat_file")):
            name = getattr(params, pname)
            if name:
                img = _single_frame(_find(inputs, name, pname), params.frames_path)
                if img.shape != shape:
                    raise errors.InvalidInput(name, f"shape {img.shape} differs from the frames' {shape}")
                if attr == "flat":
                    img = np.where(img > 0, img, np.nan).astype(np.float32)
                setattr(data, attr, img)
        for attr, pname in (("background", "background_file"), ("standard", "standard_file"),
                            ("standard_background", "standard_background_file")):
            name = getattr(params, pname)
            if name:
                staged = _find(inputs, name, pname)
                img = _single_frame(staged, params.frames_path)
                if img.shape != shape:
                    raise errors.InvalidInput(name, f"shape {img.shape} differs from the frames' {shape}")
                setattr(data, attr, Frame(Path(name).stem, name, staged.path, 0, data=img,
                                          counters=_spec_counters(spec_scans, staged.name, 0)))
        if params.standard_file:
            ref = params.standard_reference.strip()
            if ref == "water":
                data.reference = (np.array([0.0]), np.array([WATER_DSIGMA_20C]))
            elif _is_number(ref):
                data.reference = (np.array([0.0]), np.array([float(ref)]))
            else:
                data.reference = _read_reference(_find(inputs, ref, "standard_reference"))
        self._check_counters(params, data)
        ctx.progress(1.0, "load", f"{len(frames)} frame(s) of {shape[0]} x {shape[1]} pixels")
        return data

    def _geometry(self, params: SaxsParameters, poni: StagedFile | None, nexus: dict[str, Any],
                  shape: tuple[int, int]) -> tuple[Geometry, Any]:
        base: dict[str, float] = {}
        placed = None
        if poni is not None:
            from pyFAI import load as load_poni

            try:
                ai_poni = load_poni(str(poni.path))
                g = geometry_of(ai_poni)
            except Exception as exc:  # noqa: BLE001 - any parse failure is the file's
                raise errors.InvalidInput(poni.name, f"is not a readable PONI file ({exc})") from None
            base = dict(distance_m=g.distance_m, wavelength_m=g.wavelength_m, center_x_px=g.center_x_px,
                        center_y_px=g.center_y_px, pixel1_m=g.pixel1_m, pixel2_m=g.pixel2_m,
                        tilt_deg=g.tilt_deg, tilt_plane_deg=g.tilt_plane_deg)
            if abs(ai_poni.rot3) > 1e-12:  # Fit2D terms cannot hold rot3 (it turns χ): keep pyFAI's own
                placed = (ai_poni.dist, ai_poni.poni1, ai_poni.poni2, ai_poni.rot1, ai_poni.rot2, ai_poni.rot3)
                if _overrides(params, pixel_from_file=True):
                    placed = None
        else:
            base = {k: v for k, v in nexus.items() if k in ("distance_m", "wavelength_m", "center_x_px",
                                                             "center_y_px", "pixel1_m", "pixel2_m")}
        placement = nexus.get("placement") if poni is None else None
        if placement is not None:
            # the NXdetector's depends_on chain places the detector: pyFAI's geometry as is,
            # unless a parameter overrides one of its terms (then its Fit2D equivalent)
            p1, p2 = placement.pixel_sizes(nexus.get("pixel1_m"), nexus.get("pixel2_m"))
            from_params = p1 is None or p2 is None
            if params.pixel_um is not None and from_params:  # the file lacks it: the parameter's
                p2, p1 = params.pixel_um * 1e-6, (params.pixel_y_um or params.pixel_um) * 1e-6
            if p1 is not None and p2 is not None:
                try:
                    placed = placement.to_pyfai(p1, p2).as_tuple()
                except ValueError as exc:
                    raise errors.InvalidInput(nexus["source"], f"its detector's depends_on chain cannot be "
                                              f"used: {exc}") from None
                base.update(fit2d_of_poni(placed, p1, p2), pixel1_m=p1, pixel2_m=p2)
                if _overrides(params, pixel_from_file=not from_params):
                    placed = None
        if params.distance_mm is not None:
            base["distance_m"] = params.distance_mm * 1e-3
        if params.wavelength_A is not None:
            base["wavelength_m"] = params.wavelength_A * 1e-10
        if params.energy_keV is not None:
            base["wavelength_m"] = HC_KEV_A / params.energy_keV * 1e-10
        if params.beam_center_px is not None:
            base["center_x_px"], base["center_y_px"] = params.beam_center_px
        if params.pixel_um is not None:
            base["pixel2_m"] = params.pixel_um * 1e-6
            base["pixel1_m"] = (params.pixel_y_um or params.pixel_um) * 1e-6
        elif params.pixel_y_um is not None:
            base["pixel1_m"] = params.pixel_y_um * 1e-6
        if params.tilt_deg or "tilt_deg" not in base:
            base["tilt_deg"] = params.tilt_deg
        if params.tilt_plane_deg or "tilt_plane_deg" not in base:
            base["tilt_plane_deg"] = params.tilt_plane_deg
        needed = {"distance_m": "distance_mm", "wavelength_m": "wavelength_A", "center_x_px": "beam_center_px",
                  "center_y_px": "beam_center_px", "pixel1_m": "pixel_um", "pixel2_m": "pixel_um"}
        missing = sorted({p for k, p in needed.items() if k not in base})
        if missing and poni is None and nexus.get("placement_error"):
            raise errors.InvalidInput(nexus["source"], nexus["placement_error"])
        if missing:
            raise InvalidParameters([FieldViolation(m, "needed: give it, a PONI file, or NeXus frames that "
                                                       "record it") for m in missing])
        geometry = Geometry(**base, poni=placed)
        return geometry, _integrator_for(geometry, shape)

    def _check_counters(self, params: SaxsParameters, data: SaxsData) -> None:
        if not params.normalise_by:
            return
        try:
            counter, _ = parse_counter_expression(params.normalise_by)
        except ValueError as exc:
            raise _violation("normalise_by", str(exc)) from None
        for fr in [*data.frames, data.background, data.standard, data.standard_background]:
            if fr is None:
                continue
            if counter not in fr.counters:
                known = ", ".join(sorted(fr.counters)) or "none: give a SPEC file or NeXus counters"
                raise _violation("normalise_by", f"frame {fr.label} has no counter {counter!r} (known: {known})")
            if not fr.counters[counter] > 0:
                raise errors.InvalidInput(fr.source, f"counter {counter!r} is {fr.counters[counter]} for "
                                          f"frame {fr.label}: cannot normalise by it")

    # -- reduce ----------------------------------------------------------------------------
    def reduce(self, data: SaxsData, params: SaxsParameters, ctx: Context) -> Mapping[str, Any]:
        mode = params.mode
        if mode == "auto":  # on the job's frame count, so that every shard takes the same mode
            mode = "map" if params.peak_q_range else ("kinetics" if max(data.total, len(data.frames)) > 1
                                                      else "azimuthal")
        if mode == "map" and params.peak_q_range is None:
            raise _violation("peak_q_range", "a map needs the q window of the peak fit")
        if mode == "map" and ctx.shard is not None:
            _check_motor_names(data.frames, params)  # before the integration; the map is the merge's
        ctx.progress(0.0, "setup", "masks and integrator")
        first = _frame_pixels(data.first_frame)
        mask, mask_info, fixed = self._mask(data, params, first)
        per_frame = params.mask_per_frame
        integ_mask = fixed[0] if per_frame else mask
        integ = Integrator(_integrator_for(data.geometry, data.shape, integ_mask), data.shape, IntegrationSetup(
            mask=integ_mask, dark=data.dark, flat=data.flat, solid_angle=params.solid_angle,
            polarization=params.polarization, splitting=params.pixel_splitting,
            error_model=params.error_model, q_bins=params.q_bins, q_range=params.q_range,
            chi_range=params.chi_range, chi_bins=params.chi_bins))

        def own_mask(pixels: np.ndarray) -> np.ndarray | None:
            """The frame's own threshold/hot-pixel mask (``mask_per_frame``), else None."""
            return self._frame_mask(pixels, params, fixed) if per_frame else None

        scale, scale_err = self._absolute_scale(data, params, integ, own_mask)
        background = None
        if data.background is not None:
            bg = _frame_pixels(data.background)
            background = integ.integrate1d(bg, self._norm(data.background, params, scale, background=True),
                                           extra_mask=own_mask(bg))
        image_2d = _Image2D(self, data, params, integ, scale, ctx) if params.image_2d else None
        curves: list[Curve] = []
        n = len(data.frames)
        handle: tuple[Path, h5py.File] | None = None
        try:
            for k, fr in enumerate(data.frames):
                if k % max(1, n // 100) == 0:
                    ctx.progress(0.05 + 0.8 * k / n, "integrate", f"frame {k + 1}/{n}")
                else:
                    ctx.check_cancelled()  # every frame: a cancelled job stops within one frame
                if fr.nexus is not None:
                    if handle is None or handle[0] != fr.path:
                        if handle is not None:
                            handle[1].close()
                        handle = (fr.path, open_checked(fr.path))
                    pixels = read_nexus_frame(fr.nexus, fr.index, handle[1])
                else:
                    pixels = _frame_pixels(fr)
                frame_mask = own_mask(pixels)
                curve = integ.integrate1d(pixels, self._norm(fr, params, scale), extra_mask=frame_mask)
                if image_2d is not None:
                    image_2d.add(data.offset + k, fr, pixels, frame_mask)
                if background is not None:
                    curve = subtract(curve, background, params.background_scale)
                curves.append(curve)
        finally:
            if handle is not None:
                handle[1].close()
            if image_2d is not None:
                image_2d.close()
        ctx.progress(0.85, "write", "outputs")
        summary: dict[str, Any] = {
            "mode": mode, "frames": n, "q_min": float(curves[0].q.min()), "q_max": float(curves[0].q.max()),
            "q_points": len(curves[0]), "masked_pixels": int(mask.sum()), **mask_info,
            "absolute_scale": scale, "intensity_units": "1/cm" if (params.absolute_scale or data.standard) else "a.u.",
        }
        if scale_err is not None:
            summary["absolute_scale_error"] = scale_err
        meta = self._meta(data.geometry, params, scale)
        units = summary["intensity_units"]
        counters = [fr.counters for fr in data.frames]
        if ctx.shard is not None:
            # a shard's results are per frame; the merge makes the outputs over every frame
            self._write_shard(data, params, mode, curves, scale, units, ctx)
        elif mode == "map":
            q, stack, sig, fits = _map_fits(curves, params, data.frames[0].source)
            summary.update(self._write_map(params, counters, q, stack, sig, fits, meta, units, ctx))
        else:
            kinetics = mode == "kinetics"
            summary.update(self._write_curves(
                [fr.label for fr in data.frames], params, curves, meta, units, ctx,
                kinetics=(_frame_times(counters, params), _kinetic_rows(curves, params)) if kinetics else None))
        if params.cake and data.offset == 0:  # the first frame's: one shard writes it
            self._write_cake(data, params, integ, first, own_mask(first), scale, units, ctx)
        ctx.progress(1.0, "write", "done")
        return summary

    # -- pieces ----------------------------------------------------------------------------
    def _mask(self, data: SaxsData, params: SaxsParameters, first: np.ndarray
              ) -> tuple[np.ndarray, dict, np.ndarray]:
        """(the first frame's whole mask, its counts, the fixed part: file, gaps, rectangles,
        beamstop shadow — without the first frame's thresholds and hot pixels)."""
        fixed = base = self._fixed_mask(data, params)
        mask = masks.threshold_mask(first, params.mask_below, params.mask_above)
        info: dict[str, Any] = {"masked_threshold": int(mask.sum())}
        mask |= fixed
        if params.hot_pixel_sigma > 0:
            hot = masks.hot_pixel_mask(first, mask, params.hot_pixel_sigma)
            info["masked_hot"] = int(hot.sum())
            mask |= hot
        if params.beamstop == "auto":
            g = data.geometry
            shadow = masks.beamstop_mask(first, mask, g.center_x_px, g.center_y_px)
            info["masked_beamstop"] = int(shadow.sum())
            if shadow.any():
                rows, cols = np.nonzero(shadow)
                info["beamstop_box"] = [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())]
            mask |= shadow
            fixed = fixed | shadow
        if mask.all():
            raise errors.InvalidInput(data.first_frame.source, "every pixel is masked")
        return mask, info, (fixed, base)

    def _frame_mask(self, pixels: np.ndarray, params: SaxsParameters, fixed: tuple[np.ndarray, np.ndarray]
                    ) -> np.ndarray:
        """One frame's own mask (``mask_per_frame``): its thresholds and hot pixels (found with
        the fixed mask but not the beamstop, as for the first frame)."""
        mask = masks.threshold_mask(pixels, params.mask_below, params.mask_above)
        if params.hot_pixel_sigma > 0:
            mask |= masks.hot_pixel_mask(pixels, mask | fixed[1], params.hot_pixel_sigma)
        return mask

    def _fixed_mask(self, data: SaxsData, params: SaxsParameters) -> np.ndarray:
        mask = np.zeros(data.shape, dtype=bool)
        if data.mask_file is not None:
            mask |= data.mask_file
        if params.detector:
            try:
                mask |= masks.detector_gap_mask(params.detector, data.shape)
            except ValueError as exc:
                raise _violation("detector", str(exc)) from None
        if params.mask_rectangles:
            try:
                mask |= masks.rectangles_mask(data.shape, masks.parse_rectangles(params.mask_rectangles))
            except ValueError as exc:
                raise _violation("mask_rectangles", str(exc)) from None
        return mask

    def _norm(self, fr: Frame, params: SaxsParameters, scale: float, *, background: bool = False,
              standard: bool = False) -> float:
        """What the frame is divided by: monitor x transmission x exposure x thickness(cm) / scale."""
        value = 1.0
        if params.normalise_by:
            counter, factor = parse_counter_expression(params.normalise_by)
            value *= fr.counters[counter] * factor
        elif params.monitor is not None:
            value *= params.monitor
        if standard:
            value *= params.standard_transmission
            if params.standard_thickness_mm is not None:
                value *= params.standard_thickness_mm / 10.0
        else:
            value *= params.background_transmission if background else params.transmission
            if params.thickness_mm is not None:
                value *= params.thickness_mm / 10.0
        if params.exposure_s is not None:
            value *= params.exposure_s
        return value / scale

    def _absolute_scale(self, data: SaxsData, params: SaxsParameters, integ: Integrator,
                        own_mask: Any = lambda _pixels: None) -> tuple[float, float | None]:
        if data.standard is None:
            return (params.absolute_scale or 1.0), None
        pixels = _frame_pixels(data.standard)
        std = integ.integrate1d(pixels, self._norm(data.standard, params, 1.0, standard=True),
                                extra_mask=own_mask(pixels))
        if data.standard_background is not None:
            pixels = _frame_pixels(data.standard_background)
            sb = integ.integrate1d(pixels, self._norm(data.standard_background, params, 1.0, standard=True),
                                   extra_mask=own_mask(pixels))
            std = subtract(std, sb)
        assert data.reference is not None
        try:
            return absolute_scale_factor(std, data.reference[0], data.reference[1], params.standard_q_range)
        except ValueError as exc:
            raise errors.InvalidInput(params.standard_file, f"cannot be matched to its reference: {exc}") from None

    def _meta(self, g: Geometry, params: SaxsParameters, scale: float) -> nxcansas.SasMetadata:
        terms = {k: v for k, v in params.model_dump().items() if v not in (None, "", False)}
        terms["absolute_scale_applied"] = scale
        return nxcansas.SasMetadata(
            thickness_mm=params.thickness_mm, transmission=params.transmission, wavelength_A=g.wavelength_A,
            distance_m=g.distance_m, pixel_x_m=g.pixel2_m, pixel_y_m=g.pixel1_m,
            beam_center_x_px=g.center_x_px, beam_center_y_px=g.center_y_px, detector=params.detector,
            process_name=f"panreduce saxs {VERSION} (pyFAI {_pyfai_version()})", process_terms=terms,
        )

    def _write_curves(self, labels: list[str], params: SaxsParameters, curves: list[Curve],
                      meta: nxcansas.SasMetadata, units: str, ctx: Context, *,
                      kinetics: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
        """The frame series' outputs; ``kinetics`` = (times, per-frame table) adds the kinetics."""
        out: dict[str, Any] = {}
        path = ctx.output_path("saxs_iq.h5", format="nxcansas")
        names = [_entry_name(label, k) for k, label in enumerate(labels)]
        with h5py.File(path, "w") as f:
            nxcansas.set_file_attributes(f, names[0], creator="PaNReduce saxs")
            share = None  # every frame's instrument and process: the first entry's, hard-linked
            for name, label, c in zip(names, labels, curves, strict=True):
                m = nxcansas.SasMetadata(**{**meta.__dict__, "title": label, "run": label, "sample_id": label})
                entry = nxcansas.write_entry(f, name, c.q, c.i, c.sigma, meta=m, i_units=_units_str(units),
                                             share=share)
                share = share or entry
        for k, (label, c) in enumerate(zip(labels, curves, strict=True)):
            if k >= 50:
                break
            table = ctx.output_path(f"{_safe(label)}_iq.csv", format="csv", role="table")
            _savetxt(table, np.column_stack([c.q, c.i, c.sigma]), f"q (1/A),I ({units}),sigma ({units})")
        plots.plot_curves(ctx.output_path("iq.png", format="png", role="preview"),
                          list(zip(labels, curves, strict=True))[:20], units)
        out["i_first"] = float(curves[0].i[0])
        if kinetics is not None:
            out.update(self._kinetics(params, curves, *kinetics, units, ctx))
        return out

    def _kinetics(self, params: SaxsParameters, curves: list[Curve], times: np.ndarray, table: np.ndarray,
                  units: str, ctx: Context) -> dict:
        cols = list(KINETIC_COLUMNS)
        csv = ctx.output_path("kinetics.csv", format="csv", role="table")
        np.savetxt(csv, np.column_stack([np.arange(len(curves)), times, table]), delimiter=",",
                   header=",".join(["frame", "time_s", *cols]), comments="", fmt="%.8g")
        common = _common_q(curves)
        path = ctx.output_path("kinetics.nxs", format="nexus")
        with h5py.File(path, "w") as f:
            entry = f.create_group("entry")
            entry.attrs.update(NX_class="NXentry", default="kinetics")
            entry.create_dataset("definition", data="NXsas")
            _process(entry, params)
            if common is not None:
                q, stack, sig = common
                d = entry.create_group("intensity")
                d.attrs.update(NX_class="NXdata", signal="I", axes=["time", "Q"], time_indices=0, Q_indices=1)
                d.create_dataset("I", data=stack).attrs["units"] = _units_str(units)
                d.create_dataset("I_errors", data=sig).attrs["units"] = _units_str(units)
                d.create_dataset("Q", data=q).attrs["units"] = "1/angstrom"
                d.create_dataset("time", data=times).attrs["units"] = "s"
            k = entry.create_group("kinetics")
            k.attrs.update(NX_class="NXdata", signal="rg", axes="time", auxiliary_signals=["i0", "invariant"])
            k.create_dataset("time", data=times).attrs["units"] = "s"
            for j, name in enumerate(cols):
                ds = k.create_dataset(name, data=table[:, j])
                ds.attrs["units"] = {"rg": "angstrom", "rg_err": "angstrom", "guinier_q_min": "1/angstrom",
                                     "guinier_q_max": "1/angstrom"}.get(name, "")
            k["rg"].attrs["uncertainties"] = "rg_err"
        plots.plot_kinetics(ctx.output_path("kinetics.png", format="png", role="preview"), times, table, units)
        ok = table[:, 6] > 0
        out: dict[str, Any] = {
            "rg_mean_A": _json(float(np.mean(table[ok, 0]))) if ok.any() else None,
            "guinier_fits_ok": int(ok.sum()),
        }
        if len(curves) <= SUMMARY_SERIES_MAX:  # longer series: kinetics.csv / kinetics.nxs
            out.update({"time_s": [float(t) for t in times],
                        "rg_A": [_json(v) for v in table[:, 0]], "i0": [_json(v) for v in table[:, 2]],
                        "invariant": [_json(v) for v in table[:, 7]]})
        return out

    def _write_map(self, params: SaxsParameters, counters: list[dict[str, float]], q: np.ndarray,
                   stack: np.ndarray, sig: np.ndarray, fits: analysis.PeakFits, meta: nxcansas.SasMetadata,
                   units: str, ctx: Context) -> dict:
        n = stack.shape[0]
        xname, yname, x, y = _motors(counters, params)
        grid = analysis.map_grid(x, y, params.map_step_x, params.map_step_y)
        quantities = {"position": ("1/angstrom", fits.position, fits.position_err),
                      "fwhm": ("1/angstrom", fits.fwhm, fits.fwhm_err),
                      "height": (_units_str(units), fits.height, fits.height_err)}
        maps = {}
        for key, (_u, val, err) in quantities.items():
            good = fits.ok
            maps[key] = grid.image(np.where(good, val, np.nan))
            maps[key + "_errors"] = grid.image(np.where(good, err, np.nan))
        path = ctx.output_path("map.nxs", format="nexus")
        with h5py.File(path, "w") as f:
            entry = f.create_group("entry")
            entry.attrs.update(NX_class="NXentry", default="position")
            entry.create_dataset("definition", data="NXsas")
            _process(entry, params)
            for key, (u, _val, _err) in quantities.items():
                g = entry.create_group(key)
                g.attrs.update(NX_class="NXdata", signal=key, axes=[yname, xname],
                               **{f"{yname}_indices": 0, f"{xname}_indices": 1})
                ds = g.create_dataset(key, data=maps[key])
                ds.attrs.update(units=u, long_name=f"peak {key}")
                g.create_dataset(key + "_errors", data=maps[key + "_errors"]).attrs["units"] = u
                g.create_dataset(xname, data=grid.x)
                g.create_dataset(yname, data=grid.y)
            fr = entry.create_group("frames")
            fr.attrs.update(NX_class="NXdata", signal="I", axes=["frame", "Q"], frame_indices=0, Q_indices=1)
            fr.create_dataset("I", data=stack, compression="gzip", compression_opts=1).attrs["units"] = _units_str(units)
            fr.create_dataset("I_errors", data=sig, compression="gzip", compression_opts=1)
            fr.create_dataset("Q", data=q).attrs["units"] = "1/angstrom"
            fr.create_dataset("frame", data=np.arange(n))
            fr.create_dataset(xname, data=x)
            fr.create_dataset(yname, data=y)
            fits_g = entry.create_group("peak_fits")
            fits_g.attrs["NX_class"] = "NXcollection"
            for key, arr in fits.as_dict().items():
                fits_g.create_dataset(key, data=arr)
            fits_g.create_dataset("grid_column", data=grid.ix)
            fits_g.create_dataset("grid_row", data=grid.iy)
        cs = ctx.output_path("scan_iq.h5", format="nxcansas")
        with h5py.File(cs, "w") as f:
            nxcansas.set_file_attributes(f, "scan", creator="PaNReduce saxs")
            nxcansas.write_entry(f, "scan", q, stack, sig, meta=meta, i_units=_units_str(units),
                                 frame_axis=("Frame", np.arange(n), ""),
                                 extra={xname: (x, ""), yname: (y, "")})
        for key in ("position", "fwhm", "height"):
            analysis.write_ascii_image(ctx.output_path(f"map_{key}.txt", format="text-image", role="table"), maps[key])
            plots.plot_map(ctx.output_path(f"map_{key}.png", format="png", role="preview"), grid, maps[key],
                           f"peak {key}", quantities[key][0], xname, yname)
        table = ctx.output_path("peak_fits.csv", format="csv", role="table")
        d = fits.as_dict()
        np.savetxt(table, np.column_stack([np.arange(n), x, y, *[d[k] for k in d]]), delimiter=",",
                   header=",".join(["frame", xname, yname, *d]), comments="", fmt="%.8g")
        good = fits.ok
        return {"map_shape": [int(grid.y.size), int(grid.x.size)], "motor_x": xname, "motor_y": yname,
                "map_step": [grid.step_x, grid.step_y], "peaks_fitted": int(good.sum()),
                "position_median": _json(float(np.nanmedian(fits.position[good]))) if good.any() else None}

    def _write_cake(self, data: SaxsData, params: SaxsParameters, integ: Integrator, first: np.ndarray,
                    first_mask: np.ndarray | None, scale: float, units: str, ctx: Context) -> None:
        norm = self._norm(data.first_frame, params, scale)
        cake = integ.integrate2d(first, norm, extra_mask=first_mask)
        path = ctx.output_path("cake.nxs", format="nexus")
        with h5py.File(path, "w") as f:
            entry = f.create_group("entry")
            entry.attrs.update(NX_class="NXentry", default="cake")
            _process(entry, params)
            g = entry.create_group("cake")
            g.attrs.update(NX_class="NXdata", signal="I", axes=["chi", "Q"], chi_indices=0, Q_indices=1)
            g.create_dataset("I", data=cake.i).attrs["units"] = _units_str(units)
            g.create_dataset("I_errors", data=cake.sigma)
            g.create_dataset("Q", data=cake.q).attrs["units"] = "1/angstrom"
            g.create_dataset("chi", data=cake.chi).attrs["units"] = "degree"
        plots.plot_cake(ctx.output_path("cake.png", format="png", role="preview"), cake, units)

    # -- shards ----------------------------------------------------------------------------
    def _write_shard(self, data: SaxsData, params: SaxsParameters, mode: str, curves: list[Curve],
                     scale: float, units: str, ctx: Context) -> None:
        """A shard's results, per frame, for the merge: labels, counters (times, motors), the
        curves as integrated, and per mode the kinetic table rows or the peak fits."""
        path = ctx.output_path(SHARD_FILE, format="hdf5", role="result")
        bounds = np.zeros(len(curves) + 1, dtype=np.int64)
        bounds[1:] = np.cumsum([len(c) for c in curves])
        with h5py.File(path, "w") as f:
            f.attrs.update(offset=data.offset, total=data.total, mode=mode, scale=scale, units=units,
                           source=data.frames[0].source, geometry=json.dumps(asdict(data.geometry)))
            f.create_dataset("label", data=[fr.label for fr in data.frames], dtype=h5py.string_dtype())
            f.create_dataset("counters", data=json.dumps([fr.counters for fr in data.frames]),
                             dtype=h5py.string_dtype())
            g = f.create_group("curves")
            g.create_dataset("bounds", data=bounds)
            for key in ("q", "i", "sigma"):
                g.create_dataset(key, data=np.concatenate([getattr(c, key) for c in curves]).astype(float))
            if mode == "kinetics":
                f.create_dataset("kinetics", data=_kinetic_rows(curves, params))
            elif mode == "map":
                q, _stack, _sig, fits = _map_fits(curves, params, data.frames[0].source)
                m = f.create_group("map")
                m.create_dataset("q", data=q)
                for key, arr in fits.as_dict().items():
                    m.create_dataset(key, data=arr)

    def merge(self, inputs: Inputs, params: SaxsParameters, ctx: Context) -> Mapping[str, Any]:
        """The shards' frame ranges as one job: the outputs an unsharded job writes, made by
        the same writers from every frame's results in frame order (the time axis, the map
        grid from every frame's motor positions, plots); the cake and 2-D image come from
        the shard that holds the first frame."""
        ctx.progress(0.0, "merge", "reading the shards' results")
        folders = sorted({f.path.parent for f in inputs.files if f.path.name in ("summary.json", SHARD_FILE)})
        parts = sorted((_read_shard(folder / SHARD_FILE) for folder in folders if (folder / SHARD_FILE).is_file()),
                       key=lambda part: part.offset)
        if not parts:
            raise errors.InvalidRequest("the shards hold no saxs results to merge")
        total, mode = parts[0].total, parts[0].mode
        start = 0
        for part in parts:
            if part.offset != start or part.total != total or part.mode != mode:
                raise errors.InternalError(f"saxs shards do not tile the {total} frames: one starts at frame "
                                           f"{part.offset} (expected {start}), mode {part.mode} ({mode})")
            start += len(part.labels)
        if start != total:
            raise errors.InternalError(f"the saxs shards hold {start} of the job's {total} frames")
        first = parts[0]
        summary: dict[str, Any] = {k: v for k, v in json.loads((first.folder / "summary.json").read_text()).items()
                                   if k != "provenance"}
        summary["frames"] = total
        labels = [label for part in parts for label in part.labels]
        counters = [c for part in parts for c in part.counters]
        curves = [c for part in parts for c in part.curves]
        units = first.units
        meta = self._meta(first.geometry, params, first.scale)
        ctx.progress(0.3, "merge", f"{total} frame(s) from {len(parts)} shard(s)")
        if mode == "map":
            common = _common_q(curves)
            if common is None:
                raise errors.InvalidInput(first.source, "the frames' q grids differ (masks per frame?)")
            q, stack, sig = common
            if all(part.map_q is not None and np.array_equal(part.map_q, q) for part in parts):
                fits = analysis.PeakFits(**{key: np.concatenate([part.fits[key] for part in parts])
                                            for key in analysis.PeakFits.__dataclass_fields__})
            else:  # the shards fitted on other q grids than the whole job's: fit again on its grid
                assert params.peak_q_range is not None
                fits = analysis.fit_gaussian_peaks(q, stack, sig, params.peak_q_range)
            summary.update(self._write_map(params, counters, q, stack, sig, fits, meta, units, ctx))
        else:
            kinetics = None
            if mode == "kinetics":
                kinetics = (_frame_times(counters, params), np.concatenate([part.kinetics for part in parts]))
            summary.update(self._write_curves(labels, params, curves, meta, units, ctx, kinetics=kinetics))
        ctx.progress(0.9, "merge", "2-D outputs")
        if (first.folder / "cake.nxs").is_file():
            shutil.copyfile(first.folder / "cake.nxs", ctx.output_path("cake.nxs", format="nexus"))
        images = [part.folder / "image_2d.h5" for part in parts if (part.folder / "image_2d.h5").is_file()]
        if images:  # every shard's frames, one SASentry each, numbered over the job
            with h5py.File(ctx.output_path("image_2d.h5", format="nxcansas"), "w") as out:
                shared: h5py.Group | None = None
                for src_path in images:
                    with h5py.File(src_path, "r") as src:
                        for key, obj in src.items():
                            if isinstance(obj, h5py.Group) and obj.attrs.get("canSAS_class") == "SASentry":
                                if shared is None:
                                    nxcansas.set_file_attributes(out, key, creator="PaNReduce saxs")
                                    src.copy(obj, out, name=key)
                                    shared = out[key]
                                else:
                                    _copy_sharing(obj, out, key, shared)
        if (first.folder / "cake.nxs").is_file():
            with h5py.File(first.folder / "cake.nxs", "r") as f:
                g = f["entry/cake"]
                cake = Cake(q=g["Q"][()], chi=g["chi"][()], i=g["I"][()], sigma=g["I_errors"][()])
            plots.plot_cake(ctx.output_path("cake.png", format="png", role="preview"), cake, units)
        summary["shards"] = len(folders)
        ctx.progress(1.0, "merge", "merged")
        return summary


@dataclass
class _ShardPart:
    """What one shard wrote (``SHARD_FILE``), read back for the merge."""

    folder: Path
    offset: int
    total: int
    mode: str
    scale: float
    units: str
    source: str
    geometry: Geometry
    labels: list[str]
    counters: list[dict[str, float]]
    curves: list[Curve]
    kinetics: np.ndarray | None = None
    map_q: np.ndarray | None = None
    fits: dict[str, np.ndarray] = field(default_factory=dict)


def _read_shard(path: Path) -> _ShardPart:
    with h5py.File(path, "r") as f:
        a = f.attrs
        g = f["curves"]
        bounds, q, i, sigma = (g[key][()] for key in ("bounds", "q", "i", "sigma"))
        curves = [Curve(q[lo:hi], i[lo:hi], sigma[lo:hi]) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        part = _ShardPart(
            folder=path.parent, offset=int(a["offset"]), total=int(a["total"]), mode=str(a["mode"]),
            scale=float(a["scale"]), units=str(a["units"]), source=str(a["source"]),
            geometry=Geometry(**json.loads(a["geometry"])), labels=list(f["label"].asstr()[()]),
            counters=json.loads(f["counters"].asstr()[()]), curves=curves)
        if "kinetics" in f:
            part.kinetics = f["kinetics"][()]
        if "map" in f:
            part.map_q = f["map/q"][()]
            part.fits = {key: f["map"][key][()] for key in f["map"] if key != "q"}
    if len(part.labels) != len(curves) or len(part.counters) != len(curves):
        raise errors.InternalError(f"{path}: labels, counters and curves of a saxs shard differ in number")
    return part


def _map_fits(curves: list[Curve], params: SaxsParameters, source: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, analysis.PeakFits]:
    """The frames on one q grid and their Gaussian peak fits."""
    common = _common_q(curves)
    if common is None:
        raise errors.InvalidInput(source, "the frames' q grids differ (masks per frame?)")
    q, stack, sig = common
    assert params.peak_q_range is not None
    return q, stack, sig, analysis.fit_gaussian_peaks(q, stack, sig, params.peak_q_range)


def _kinetic_rows(curves: list[Curve], params: SaxsParameters) -> np.ndarray:
    """(frames, KINETIC_COLUMNS): Guinier fit and invariant of each frame."""
    rows = []
    for c in curves:
        g = analysis.guinier_fit(c.q, c.i, c.sigma, q_min=params.guinier_q_min,
                                 qrg_max=params.guinier_qrg_max, q_max=params.guinier_q_max)
        inv, inv_err = analysis.invariant(c.q, c.i, c.sigma)
        rows.append((g.rg, g.rg_err, g.i0, g.i0_err, g.q_min, g.q_max, float(g.ok), inv, inv_err))
    return np.array(rows, dtype=float).reshape(len(curves), len(KINETIC_COLUMNS))


# -- helpers ---------------------------------------------------------------------------------
_INTEGRATORS: dict[tuple[Geometry, tuple[int, int]], Any] = {}
_INTEGRATORS_LOCK = threading.Lock()


def _integrator_for(geometry: Geometry, shape: tuple[int, int], mask: np.ndarray | None = None) -> Any:
    """pyFAI integrators kept across jobs of the service: the sparse integration matrix
    pyFAI builds on first use (a second for a 4M detector) is reused by the next job with
    the same geometry, binning and mask. With ``mask``, one whose detector carries that
    mask: pyFAI then takes the mask and its checksum from the detector instead of
    checksumming a mask passed with every frame (1-2 ms per 4M frame; same result)."""
    key = (geometry, tuple(shape), None if mask is None else hashlib.sha1(np.packbits(mask)).hexdigest())
    with _INTEGRATORS_LOCK:
        ai = _INTEGRATORS.get(key)
        if ai is None:
            if len(_INTEGRATORS) >= 8:
                _INTEGRATORS.pop(next(iter(_INTEGRATORS)))
            ai = make_integrator(geometry, shape)
            if mask is not None:
                ai.detector.mask = np.asarray(mask, dtype=np.int8)
            _INTEGRATORS[key] = ai
        return ai


def _overrides(params: SaxsParameters, *, pixel_from_file: bool) -> bool:
    """Whether a parameter changes a term of a geometry given by a PONI file or NeXus
    transformations (then its Fit2D equivalent is used, with that term changed)."""
    return any(v is not None for v in (params.distance_mm, params.beam_center_px)) \
        or (pixel_from_file and (params.pixel_um is not None or params.pixel_y_um is not None)) \
        or bool(params.tilt_deg) or bool(params.tilt_plane_deg)


def _frame_pixels(fr: Frame) -> np.ndarray:
    if fr.data is not None:
        return fr.data
    if fr.nexus is not None:
        return read_nexus_frame(fr.nexus, fr.index)
    data = read_image(fr.path, fr.source)
    return data[fr.index] if data.ndim == 3 else data


def _spec_counters(scans: dict[int, SpecScan], filename: str, index: int) -> dict[str, float]:
    if not scans:
        return {}
    sp = frame_scan_point(Path(filename).name)
    if sp is not None and sp[0] in scans:
        scan, point = scans[sp[0]], sp[1] + index
    elif len(scans) == 1:
        scan, point = next(iter(scans.values())), index
    else:
        return {}
    if point >= scan.data.shape[0]:
        return {}
    return {label: float(scan.data[point, j]) for j, label in enumerate(scan.labels)}


def _looks_like_spec(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.startswith(b"#F ") or b"\n#S " in head


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _param_of(params: SaxsParameters, name: str) -> str:
    for key in ("poni_file", "mask_file", "dark_file", "flat_file", "background_file", "standard_file",
                "standard_background_file", "standard_reference"):
        if getattr(params, key) == name:
            return key
    return "inputs"


def _frame_times(counters: list[dict[str, float]], params: SaxsParameters) -> np.ndarray:
    """Time of each frame (s) from the first: ``frame_time_s``, else a time counter."""
    n = len(counters)
    if params.frame_time_s is not None:
        return np.arange(n) * params.frame_time_s
    for key in TIME_COUNTERS:
        if all(key in c for c in counters):
            t = np.array([c[key] for c in counters], dtype=float)
            return t - t[0]
    return np.arange(n, dtype=float)


def _check_motor_names(frames: list[Frame], params: SaxsParameters) -> None:
    keys = set.intersection(*(set(fr.counters) for fr in frames)) if frames else set()
    for name, pname in ((params.motor_x, "motor_x"), (params.motor_y, "motor_y")):
        if name and name not in keys:
            raise _violation(pname, f"no positioner {name!r} (known: {', '.join(sorted(keys)) or 'none'})")


def _motors(counters: list[dict[str, float]], params: SaxsParameters) -> tuple[str, str, np.ndarray, np.ndarray]:
    # per-frame positioners/counters (NeXus positioners or the frames' SPEC row)
    keys = set.intersection(*(set(c) for c in counters)) if counters else set()
    pos = {k: np.array([c[k] for c in counters]) for k in keys}
    for name, pname in ((params.motor_x, "motor_x"), (params.motor_y, "motor_y")):
        if name and name not in pos:
            raise _violation(pname, f"no positioner {name!r} (known: {', '.join(sorted(pos)) or 'none'})")
    moving = [k for k, v in pos.items() if np.ptp(v) > 0 and k not in TIME_COUNTERS and k != "time"]
    xname = params.motor_x
    yname = params.motor_y
    if not xname or not yname:
        # fast axis: its grid node changes most often between consecutive frames
        def changes(v: np.ndarray) -> float:
            nodes, step = analysis._axis_nodes(v, None)
            if not step:
                return 0.0
            idx = np.rint((v - nodes[0]) / step)
            return float((np.diff(idx) != 0).mean()) if v.size > 1 else 0.0

        ranked = sorted((k for k in moving if k not in (xname, yname)), key=lambda k: -changes(pos[k]))
        if not xname:
            if not ranked:
                raise _violation("motor_x", "no moving positioner found for the map")
            xname = ranked.pop(0)
        if not yname:
            ranked = [k for k in ranked if k != xname]
            yname = ranked[-1] if ranked else ""
    x = pos[xname]
    y = pos[yname] if yname else np.zeros_like(x)
    return xname, (yname or "y"), x, y


def _common_q(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    q = curves[0].q
    if any(c.q.shape != q.shape or not np.allclose(c.q, q) for c in curves):
        # bins empty in some frames only: put every curve on the union grid with NaNs
        allq = np.unique(np.concatenate([c.q for c in curves]))
        if allq.size > 4 * max(c.q.size for c in curves):
            return None
        stack = np.full((len(curves), allq.size), np.nan)
        sig = np.full_like(stack, np.nan)
        for k, c in enumerate(curves):
            idx = np.searchsorted(allq, c.q)
            stack[k, idx], sig[k, idx] = c.i, c.sigma
        return allq, stack, sig
    return q, np.stack([c.i for c in curves]), np.stack([c.sigma for c in curves])


def _copy_sharing(src: h5py.Group, out: h5py.File, key: str, shared: h5py.Group) -> None:
    """Copy a 2-D SASentry, hard-linking what every frame shares (instrument, process, Qx,
    Qy) to ``shared``'s, as the writer does."""
    g = out.create_group(key)
    g.attrs.update(src.attrs)
    for name, child in src.items():
        if name in ("sasinstrument", "sasprocess"):
            g[name] = shared[name]
        elif name == "sasdata":
            d = g.create_group(name)
            d.attrs.update(child.attrs)
            for n2, c2 in child.items():
                if n2 in ("Qx", "Qy"):
                    d[n2] = shared[name][n2]
                else:
                    src.file.copy(c2, d, name=n2)
        else:
            src.file.copy(child, g, name=name)


def _savetxt(path: Path, table: np.ndarray, header: str, fmt: str = "%.8g") -> None:
    """``np.savetxt(path, table, delimiter=",", header=header, comments="", fmt=fmt)``, byte for
    byte, formatted in one operation rather than row by row."""
    rows, cols = table.shape
    line = ",".join([fmt] * cols) + "\n"
    with open(path, "w") as fh:
        fh.write(header + "\n")
        fh.write((line * rows) % tuple(table.ravel().tolist()))


def _process(entry: h5py.Group, params: SaxsParameters) -> None:
    p = entry.create_group("reduction")
    p.attrs["NX_class"] = "NXprocess"
    p.create_dataset("program", data="panreduce saxs")
    p.create_dataset("version", data=VERSION)
    p.create_dataset("pyfai_version", data=_pyfai_version())
    p.create_dataset("parameters", data=json.dumps(params.model_dump(), default=str))


def _pyfai_version() -> str:
    import pyFAI

    return str(pyFAI.version)


def _entry_name(label: str, k: int) -> str:
    return f"sasentry{k + 1:02d}_" + _safe(label)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "frame"


def _units_str(units: str) -> str:
    return "1/cm" if units == "1/cm" else "arbitrary"


def _json(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


class _Image2D:
    """``image_2d.h5``: every frame's corrected, normalised image as NXcanSAS 2-D data (one
    SASentry per frame, numbered over the job), written as the frames are integrated."""

    def __init__(self, technique: Technique, data: SaxsData, params: SaxsParameters, integ: Integrator,
                 scale: float, ctx: Context) -> None:
        ai = data.ai
        self.technique, self.data, self.params, self.integ, self.scale = technique, data, params, integ, scale
        self.units = _units_str("1/cm" if (params.absolute_scale or data.standard) else "a.u.")
        q = ai.center_array(data.shape, unit="q_A^-1")
        chi = ai.center_array(data.shape, unit="chi_rad")
        self.qx, self.qy = q * np.cos(chi), q * np.sin(chi)
        corr = np.ones(data.shape)
        if params.solid_angle:
            corr = corr * ai.solidAngleArray(data.shape)
        if params.polarization is not None:
            corr = corr * ai.polarization(data.shape, params.polarization)
        self.weight = corr * (data.flat if data.flat is not None else 1.0)
        self.meta = technique._meta(data.geometry, params, scale)
        self.file = h5py.File(ctx.output_path("image_2d.h5", format="nxcansas"), "w")
        self.first = True
        self.share: h5py.Group | None = None

    def add(self, number: int, fr: Frame, pixels: np.ndarray, frame_mask: np.ndarray | None) -> None:
        norm = self.technique._norm(fr, self.params, self.scale)
        dark = self.data.dark if self.data.dark is not None else 0
        raw = pixels - dark
        mask = self.integ.mask | ~np.isfinite(raw)
        if frame_mask is not None:
            mask = mask | frame_mask
        with np.errstate(invalid="ignore", divide="ignore"):
            img = raw / self.weight / norm
            err = np.sqrt(np.clip(pixels, 0, None) + dark) / self.weight / norm
        img = np.where(mask, 0.0, img)
        err = np.where(mask, 0.0, err)
        name = _entry_name(fr.label, number)
        if self.first:
            nxcansas.set_file_attributes(self.file, name, creator="PaNReduce saxs")
            self.first = False
        m = nxcansas.SasMetadata(**{**self.meta.__dict__, "title": fr.label, "run": fr.label, "sample_id": fr.label})
        entry = nxcansas.write_entry_2d(self.file, name, self.qx, self.qy, img, err, meta=m, i_units=self.units,
                                        mask=mask, share=self.share)
        self.share = self.share or entry

    def close(self) -> None:
        self.file.close()
