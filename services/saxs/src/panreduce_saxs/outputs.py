"""The saxs writers: NXcanSAS curves, kinetics and maps (NeXus through ``panreduce.nexus``),
the cake, 2-D images, CSV tables, text images and plots.

Every writer takes ``out``, a function ``out(name, *, format, role="result") -> Path``
giving the scratch path of an output (the kit's ``Context.output_path``), and returns
its part of the summary. The same writers render an unsharded job and a combined one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import nexus, nxcansas
from panreduce_saxs import analysis, plots
from panreduce_saxs.geometry import Geometry
from panreduce_saxs.integrate import Cake, Curve
from panreduce_saxs.series import KINETIC_COLUMNS

OutputPath = Callable[..., Path]
TECHNIQUE = "saxs"
CREATOR = "PaNReduce saxs"
SUMMARY_SERIES_MAX = 1000  # per-frame lists in the summary up to this many frames
CSV_FRAMES = 50  # per-frame CSV tables for the first this many frames
PLOTTED_FRAMES = 20
Q_UNITS = "1/angstrom"


def pyfai_version() -> str:
    import pyFAI

    return str(pyFAI.version)


def units_str(units: str) -> str:
    """NXcanSAS's name of the intensity units (its enumeration has ``arbitrary``)."""
    return "1/cm" if units == "1/cm" else "arbitrary"


def nexus_units(units: str) -> str | None:
    """The intensity's ``@units`` in a NeXus file: 1/cm, or none for arbitrary units (no
    unit string means that; "arbitrary" is no unit)."""
    return "1/cm" if units == "1/cm" else None


def json_number(v: float) -> float | None:
    return None if not math.isfinite(v) else float(v)


def safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:80] or "frame"


def entry_name(label: str, k: int) -> str:
    """The SASentry of frame ``k`` of the job (numbered over the job)."""
    return f"sasentry{k + 1:02d}_" + safe(label)


def flat_terms(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Parameters as ``{"group.name": value}``, leaving out unset ones (None, "", False)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            out.update(flat_terms(value, f"{prefix}{key}."))
        elif value not in (None, "", False):
            out[prefix + key] = value
    return out


def sas_metadata(
    g: Geometry,
    params: Mapping[str, Any],
    scale: float,
    version: str,
    *,
    thickness_mm: float | None = None,
    transmission: float = 1.0,
    detector: str = "",
) -> nxcansas.SasMetadata:
    """The NXcanSAS instrument, sample and process of the job (``params``: model_dump())."""
    terms = flat_terms(params)
    terms["absolute_scale_applied"] = scale
    return nxcansas.SasMetadata(
        thickness_mm=thickness_mm,
        transmission=transmission,
        wavelength_A=g.wavelength_angstrom,
        distance_m=g.distance_m,
        pixel_x_m=g.pixel2_m,
        pixel_y_m=g.pixel1_m,
        beam_center_x_px=g.center_x_px,
        beam_center_y_px=g.center_y_px,
        detector=detector,
        process_name=f"{nexus.program_name(TECHNIQUE)} {version} (pyFAI {pyfai_version()})",
        process_terms=terms,
    )


def savetxt(path: Path, table: np.ndarray, header: str, fmt: str = "%.8g") -> None:
    """``np.savetxt(path, table, delimiter=",", header=header, comments="", fmt=fmt)``, byte for
    byte, formatted in one operation rather than row by row."""
    rows, cols = table.shape
    line = ",".join([fmt] * cols) + "\n"
    with open(path, "w") as fh:
        fh.write(header + "\n")
        fh.write((line * rows) % tuple(table.ravel().tolist()))


def _nexus_entry(f: h5py.File, params: Mapping[str, Any], version: str) -> h5py.Group:
    entry = nexus.make_group(f, "entry", "NXentry")  # no application definition: none fits
    nexus.write_nxprocess(
        entry,
        "reduction",
        technique=TECHNIQUE,
        version=version,
        parameters=params,
        notes={"pyfai_version": pyfai_version()},
    )
    return entry


def _frame_meta(meta: nxcansas.SasMetadata, label: str) -> nxcansas.SasMetadata:
    return nxcansas.SasMetadata(**{**meta.__dict__, "title": label, "run": label, "sample_id": label})


# -- frame series ----------------------------------------------------------------------------
def write_curves(
    out: OutputPath, labels: Sequence[str], curves: Sequence[Curve], meta: nxcansas.SasMetadata, units: str
) -> dict[str, Any]:
    """``saxs_iq.h5`` (one SASentry per frame), the first frames' CSVs and ``iq.png``."""
    names = [entry_name(label, k) for k, label in enumerate(labels)]
    with h5py.File(out("saxs_iq.h5", format="nxcansas"), "w") as f:
        nxcansas.set_file_attributes(f, names[0], creator=CREATOR)
        share = None  # every frame's instrument and process: the first entry's, hard-linked
        for name, label, c in zip(names, labels, curves, strict=True):
            entry = nxcansas.write_entry(
                f, name, c.q, c.i, c.sigma, meta=_frame_meta(meta, label), i_units=units_str(units), share=share
            )
            share = share or entry
    for label, c in list(zip(labels, curves, strict=True))[:CSV_FRAMES]:
        savetxt(
            out(f"{safe(label)}_iq.csv", format="csv", role="table"),
            np.column_stack([c.q, c.i, c.sigma]),
            f"q (1/A),I ({units}),sigma ({units})",
        )
    plots.plot_curves(
        out("iq.png", format="png", role="preview"), list(zip(labels, curves, strict=True))[:PLOTTED_FRAMES], units
    )
    return {"i_first": float(curves[0].i[0])}


def write_kinetics(
    out: OutputPath,
    curves: Sequence[Curve],
    times: np.ndarray,
    table: np.ndarray,
    units: str,
    params: Mapping[str, Any],
    version: str,
) -> dict[str, Any]:
    """``kinetics.csv``, ``kinetics.nxs`` (I(t, q) and the kinetic table) and the plot."""
    from panreduce_saxs.series import common_q

    cols = list(KINETIC_COLUMNS)
    np.savetxt(
        out("kinetics.csv", format="csv", role="table"),
        np.column_stack([np.arange(len(curves)), times, table]),
        delimiter=",",
        header=",".join(["frame", "time_s", *cols]),
        comments="",
        fmt="%.8g",
    )
    common = common_q(curves)
    with h5py.File(out("kinetics.nxs", format="nexus"), "w") as f:
        entry = _nexus_entry(f, params, version)
        if common is not None:
            q, stack, sig = common
            nexus.write_nxdata(
                entry,
                "intensity",
                signal="I",
                data=stack,
                errors=sig,
                axes=[("time", times), ("Q", q)],
                units={"I": nexus_units(units), "Q": Q_UNITS, "time": "s"},
                default=False,
            )
        k = nexus.write_nxdata(
            entry,
            "kinetics",
            signal="rg",
            data=table[:, 0],
            axes=[("time", times)],
            units={"time": "s", "rg": "angstrom"},
        )
        k.attrs["auxiliary_signals"] = ["i0", "invariant"]
        for j, name in enumerate(cols[1:], start=1):
            k.create_dataset(name, data=table[:, j]).attrs["units"] = {
                "rg_err": "angstrom",
                "guinier_q_min": Q_UNITS,
                "guinier_q_max": Q_UNITS,
            }.get(name, "")
        k["rg"].attrs["uncertainties"] = "rg_err"
    plots.plot_kinetics(out("kinetics.png", format="png", role="preview"), times, table, units)
    ok = table[:, 6] > 0
    summary: dict[str, Any] = {
        "rg_mean_A": json_number(float(np.mean(table[ok, 0]))) if ok.any() else None,
        "guinier_fits_ok": int(ok.sum()),
    }
    if len(curves) <= SUMMARY_SERIES_MAX:  # longer series: kinetics.csv / kinetics.nxs
        summary.update(
            {
                "time_s": [float(t) for t in times],
                "rg_A": [json_number(v) for v in table[:, 0]],
                "i0": [json_number(v) for v in table[:, 2]],
                "invariant": [json_number(v) for v in table[:, 7]],
            }
        )
    return summary


# -- scanning maps ---------------------------------------------------------------------------
def write_map(
    out: OutputPath,
    motors: tuple[str, str, np.ndarray, np.ndarray],
    q: np.ndarray,
    stack: np.ndarray,
    sig: np.ndarray,
    fits: analysis.PeakFits,
    meta: nxcansas.SasMetadata,
    units: str,
    params: Mapping[str, Any],
    version: str,
    *,
    step_x: float | None = None,
    step_y: float | None = None,
) -> dict[str, Any]:
    """``map.nxs``, ``scan_iq.h5``, text images, ``peak_fits.csv`` and the map plots."""
    n = stack.shape[0]
    xname, yname, x, y = motors
    grid = analysis.map_grid(x, y, step_x, step_y)
    quantities = {
        "position": (Q_UNITS, fits.position, fits.position_err),
        "fwhm": (Q_UNITS, fits.fwhm, fits.fwhm_err),
        "height": (nexus_units(units), fits.height, fits.height_err),
    }
    maps = {}
    for key, (_u, val, err) in quantities.items():
        maps[key] = grid.image(np.where(fits.ok, val, np.nan))
        maps[key + "_errors"] = grid.image(np.where(fits.ok, err, np.nan))
    with h5py.File(out("map.nxs", format="nexus"), "w") as f:
        entry = _nexus_entry(f, params, version)
        for key, (u, _val, _err) in quantities.items():
            nexus.write_nxdata(
                entry,
                key,
                signal=key,
                data=maps[key],
                errors=maps[key + "_errors"],
                axes=[(yname, grid.y), (xname, grid.x)],
                units={key: u},
                long_names={key: f"peak {key}"},
                default=key == "position",
            )
        frames = nexus.write_nxdata(
            entry,
            "frames",
            signal="I",
            data=stack,
            errors=sig,
            axes=[("frame", np.arange(n)), ("Q", q)],
            units={"I": nexus_units(units), "Q": Q_UNITS},
            default=False,
            compression="gzip",
        )
        frames.create_dataset(xname, data=x)
        frames.create_dataset(yname, data=y)
        fits_g = nexus.make_group(entry, "peak_fits", "NXcollection")
        for key, arr in fits.as_dict().items():
            fits_g.create_dataset(key, data=arr)
        fits_g.create_dataset("grid_column", data=grid.ix)
        fits_g.create_dataset("grid_row", data=grid.iy)
    with h5py.File(out("scan_iq.h5", format="nxcansas"), "w") as f:
        nxcansas.set_file_attributes(f, "scan", creator=CREATOR)
        nxcansas.write_entry(
            f,
            "scan",
            q,
            stack,
            sig,
            meta=meta,
            i_units=units_str(units),
            frame_axis=("Frame", np.arange(n), ""),
            extra={xname: (x, ""), yname: (y, "")},
        )
    for key in ("position", "fwhm", "height"):
        analysis.write_ascii_image(out(f"map_{key}.txt", format="text-image", role="table"), maps[key])
        plots.plot_map(
            out(f"map_{key}.png", format="png", role="preview"),
            grid,
            maps[key],
            f"peak {key}",
            quantities[key][0] or units_str(units),
            xname,
            yname,
        )
    d = fits.as_dict()
    np.savetxt(
        out("peak_fits.csv", format="csv", role="table"),
        np.column_stack([np.arange(n), x, y, *d.values()]),
        delimiter=",",
        header=",".join(["frame", xname, yname, *d]),
        comments="",
        fmt="%.8g",
    )
    good = fits.ok
    return {
        "map_shape": [int(grid.y.size), int(grid.x.size)],
        "motor_x": xname,
        "motor_y": yname,
        "map_step": [grid.step_x, grid.step_y],
        "peaks_fitted": int(good.sum()),
        "position_median": json_number(float(np.nanmedian(fits.position[good]))) if good.any() else None,
    }


# -- 2-D outputs -----------------------------------------------------------------------------
def write_cake(out: OutputPath, cake: Cake, units: str, params: Mapping[str, Any], version: str) -> None:
    """``cake.nxs`` (I(χ, q) of the first frame) and ``cake.png``."""
    with h5py.File(out("cake.nxs", format="nexus"), "w") as f:
        entry = _nexus_entry(f, params, version)
        nexus.write_nxdata(
            entry,
            "cake",
            signal="I",
            data=cake.i,
            errors=cake.sigma,
            axes=[("chi", cake.chi), ("Q", cake.q)],
            units={"I": nexus_units(units), "Q": Q_UNITS, "chi": "degree"},
        )
    plots.plot_cake(out("cake.png", format="png", role="preview"), cake, units)


class Image2D:
    """``image_2d.h5``: frames' corrected, normalised images as NXcanSAS 2-D data (one
    SASentry per frame, numbered over the job; Qx, Qy and the instrument hard-linked to
    the first entry's), written frame by frame."""

    def __init__(self, out: OutputPath, qx: np.ndarray, qy: np.ndarray, meta: nxcansas.SasMetadata, units: str) -> None:
        self.qx, self.qy, self.meta, self.units = qx, qy, meta, units_str(units)
        self.file = h5py.File(out("image_2d.h5", format="nxcansas"), "w")
        self.share: h5py.Group | None = None

    def add(self, number: int, label: str, img: np.ndarray, err: np.ndarray, mask: np.ndarray) -> None:
        name = entry_name(label, number)
        if self.share is None:
            nxcansas.set_file_attributes(self.file, name, creator=CREATOR)
        entry = nxcansas.write_entry_2d(
            self.file,
            name,
            self.qx,
            self.qy,
            img,
            err,
            meta=_frame_meta(self.meta, label),
            i_units=self.units,
            mask=mask,
            share=self.share,
        )
        self.share = self.share or entry

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Image2D:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
