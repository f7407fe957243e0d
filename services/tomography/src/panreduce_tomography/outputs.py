"""The tomography outputs: the NXtomoproc volume (float32, or uint16 rescaled), PNG
previews (upscaled, with a colour bar and axes), an optional TIFF stack, the
time-of-flight tables and the quantification tables.

Every writer takes plain values (arrays, lists, the parameter models), never a scan
or the kit's context: ``out(name, format, role)`` is the path of an output.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import nexus
from panreduce_tomography import __version__, segment
from panreduce_tomography.io import Scan
from panreduce_tomography.params import Output, Segmentation, TimeOfFlight, TomographyParameters

OutputPath = Callable[..., Path]  # out(name, format=..., role=...) -> a path to write
VOLUME = "entry/data/data"


@dataclass
class Described:
    """What the writers need to know of the scans (JSON-able)."""

    sources: list[str]
    layout: str
    files: list[str]
    neutron: bool = False
    times: list[float] = field(default_factory=list)
    bands: list[list[float]] | None = None  # wavelength band limits per volume (ToF bands)
    band_bins: list[list[int]] | None = None

    @classmethod
    def of(cls, scans: Sequence[Scan], files: Sequence[str]) -> Described:
        bands = "band" in scans[0].meta
        return cls(
            [s.source for s in scans],
            scans[0].layout,
            list(files),
            any(s.layout == "fits-tof" for s in scans),
            [float(s.time) for s in scans],
            [list(s.meta["band_angstrom"]) for s in scans] if bands else None,
            [list(s.meta["band_bins"]) for s in scans] if bands else None,
        )


def quantisation(value_range: Sequence[float], dtype: str) -> tuple[float, float]:
    """(scale, offset) of a uint16 volume over ``value_range``; (1, 0) for float32."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if dtype != "uint16":
        return 1.0, 0.0
    return ((hi - lo) / 65535.0 if hi > lo else 1.0), lo


def write_volume(
    path: Path,
    volume: Any,
    *,
    rows: Sequence[int],
    described: Described,
    centres: Sequence[float],
    found: Sequence[bool],
    value_range: Sequence[float],
    backend: str,
    params: TomographyParameters,
    check: Callable[[], None] | None = None,
) -> tuple[float, float]:
    """``tomography.nxs`` (NXtomoproc) from a float32 ``volume`` (array-like, (z, y, x)
    or (t, z, y, x)), copied plane by plane (uint16: quantised on ``value_range``).
    The root's ``@default`` leads to ``entry/data``. Returns (scale, offset)."""
    nt = len(described.sources)
    shape = tuple(volume.shape)
    n = shape[-1]
    dtype = params.output.output_dtype
    scale, offset = quantisation(value_range, dtype)
    with h5py.File(path, "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry")
        nexus.write_text(entry, "definition", "NXtomoproc")
        nexus.write_text(entry, "title", f"tomographic reconstruction of {', '.join(described.sources)}")
        src = nexus.make_group(nexus.make_group(entry, "instrument", "NXinstrument"), "source", "NXsource")
        nexus.write_text(src, "type", "Spallation Neutron Source" if described.neutron else "Synchrotron X-ray Source")
        nexus.write_text(src, "name", "unknown")
        nexus.write_text(src, "probe", "neutron" if described.neutron else "x-ray")
        nexus.write_text(nexus.make_group(entry, "sample", "NXsample"), "name", described.sources[0])
        proc = nexus.write_nxprocess(entry, "reconstruction", technique="tomography", version=__version__)
        par = nexus.make_group(proc, "parameters", "NXparameters")
        par.create_dataset("raw_file", data=np.array(described.files, dtype=h5py.string_dtype()))
        rc = par.create_dataset("rotation_centre", data=np.asarray(centres, np.float64) if nt > 1 else centres[0])
        rc.attrs["units"] = "pixel"
        par.create_dataset("rotation_centre_found", data=np.asarray(found) if nt > 1 else found[0])
        nexus.write_text(
            par, "rotation_centre_method", "Vo et al. 2014 (Fourier double-wedge)" if any(found) else "parameter"
        )
        nexus.write_text(par, "algorithm", params.reconstruction.algorithm)
        nexus.write_text(par, "filter", params.reconstruction.filter)
        nexus.write_text(par, "backend", backend.split(":")[0])
        nexus.write_text(par, "parameters_json", json.dumps(params.model_dump(mode="json"), sort_keys=True))
        d = nexus.make_group(entry, "data", "NXdata", signal="data")
        nexus.set_default(d)  # written plane by plane below: too large for nexus.write_nxdata
        bands = described.bands is not None
        axes = ["z", "y", "x"] if nt == 1 else ["wavelength" if bands else "time", "z", "y", "x"]
        d.attrs["axes"] = axes
        for i, ax in enumerate(axes):
            d.attrs[f"{ax}_indices"] = i
        chunks = (1, n, n) if nt == 1 else (1, 1, n, n)
        vol = d.create_dataset("data", shape=shape, dtype=dtype, chunks=chunks)
        for i in range(shape[0]):
            if check is not None:
                check()
            plane = np.asarray(volume[i], np.float32)
            vol[i] = (
                plane if dtype == "float32" else np.clip(np.rint((plane - offset) / scale), 0, 65535).astype(np.uint16)
            )
        vol.attrs["units"] = "1/pixel"
        vol.attrs["long_name"] = "linear attenuation coefficient per pixel"
        if dtype == "uint16":
            vol.attrs["scale_factor"] = scale
            vol.attrs["add_offset"] = offset
            vol.attrs["description"] = "value = add_offset + scale_factor * data"
        c = np.arange(n, dtype=np.float64) - n // 2
        for ax in ("x", "y"):
            d.create_dataset(ax, data=c).attrs["units"] = "pixel"
        z = d.create_dataset("z", data=np.asarray(rows, np.float64))
        z.attrs["units"] = "pixel"
        z.attrs["long_name"] = "detector row"
        if bands:  # one volume per wavelength band: its centre, limits and time bins
            w = d.create_dataset("wavelength", data=np.asarray(described.times, np.float64))
            w.attrs["units"] = "angstrom"
            w.attrs["long_name"] = "band centre wavelength"
            lim = d.create_dataset("wavelength_band", data=np.asarray(described.bands))
            lim.attrs["units"] = "angstrom"
            lim.attrs["long_name"] = "band limits [lo, hi) per volume"
            d.create_dataset("time_bins", data=np.asarray(described.band_bins, np.int64))
        elif nt > 1:
            d.create_dataset("time", data=np.asarray(described.times, np.float64))
    return scale, offset


def read_volume(path: Path, index: int | tuple[int, int]) -> np.ndarray:
    """One slice (z index, or (t, z)) of a written volume, as values (uint16 undone)."""
    with h5py.File(path, "r") as f:
        ds = f[VOLUME]
        img = np.asarray(ds[index], np.float32)
        if ds.dtype == np.uint16:
            img = img * float(ds.attrs["scale_factor"]) + float(ds.attrs["add_offset"])
    return img


# -- quick looks ------------------------------------------------------------------------
def preview_picks(n_rows: int, k: int) -> list[int]:
    """``k`` slice indices spread over ``n_rows`` (away from the ends when there are more than 2)."""
    k = min(k, n_rows)
    if n_rows > 2:
        return sorted({round(x) for x in np.linspace(0, n_rows - 1, k + 2)[1:-1]})
    return list(range(n_rows))[:k]


def slice_figure(
    path: Path,
    img: np.ndarray,
    *,
    title: str,
    pixels: int,
    pixel_um: float | None = None,
    label: str = "attenuation (1/pixel)",
) -> None:
    """A PNG of one slice: nearest-neighbour upscaled to at least ``pixels`` across,
    grey scale over the 0.5-99.5 % percentiles with a colour bar, axes in micrometres
    from the rotation axis (``pixel_um`` given) or in pixels."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    ny, nx = img.shape
    lo, hi = (float(v) for v in np.percentile(img, [0.5, 99.5]))
    unit, s = ("µm", pixel_um) if pixel_um else ("pixel", 1.0)
    extent = (-(nx // 2) * s, (nx - nx // 2) * s, (ny - ny // 2) * s, -(ny // 2) * s)
    dpi = 100
    side = max(pixels, max(nx, ny)) / dpi  # the image area, inches
    fig = Figure(figsize=(side + 2.4, side * ny / nx + 1.2), dpi=dpi)
    ax = fig.add_axes(
        (1.0 / (side + 2.4), 0.8 / (side * ny / nx + 1.2), side / (side + 2.4), side * ny / nx / (side * ny / nx + 1.2))
    )
    im = ax.imshow(
        img,
        cmap="gray",
        vmin=lo,
        vmax=hi if hi > lo else lo + 1,
        extent=extent,
        interpolation="nearest",
        origin="upper",
    )
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    ax.set_title(title, fontsize=10)
    cax = fig.add_axes(
        (ax.get_position().x1 + 0.1 / (side + 2.4), ax.get_position().y0, 0.25 / (side + 2.4), ax.get_position().height)
    )
    fig.colorbar(im, cax=cax, label=label)
    fig.savefig(path, dpi=dpi)


def write_previews(
    volume_path: Path, out: OutputPath, *, rows: Sequence[int], nt: int, output: Output, pixel_um: float | None = None
) -> list[str]:
    """``preview_row<row>.png`` of ``output.previews`` slices (the last time point of a series)."""
    names = []
    for i in preview_picks(len(rows), output.previews):
        img = read_volume(volume_path, i if nt == 1 else (nt - 1, i))
        name = f"preview_row{rows[i]:05d}.png"
        slice_figure(
            out(name, format="png", role="preview"),
            img,
            title=f"detector row {rows[i]}",
            pixels=output.preview_pixels,
            pixel_um=pixel_um,
        )
        names.append(name)
    return names


def write_tiff_stack(volume_path: Path, out: OutputPath, *, nt: int) -> str | None:
    """``tomography.tiff``: the volume as stored (float32 or uint16), one page per slice
    (ImageJ hyperstack axes ZYX or TZYX). None when tifffile is not installed."""
    try:
        import tifffile
    except ImportError:
        return None
    with h5py.File(volume_path, "r") as f:
        ds = f[VOLUME]
        pages = (ds[idx] for idx in np.ndindex(*ds.shape[:-2]))  # one slice in memory at a time
        tifffile.imwrite(
            out("tomography.tiff", format="tiff", role="result"),
            pages,
            shape=ds.shape,
            dtype=ds.dtype,
            imagej=True,
            metadata={"axes": "ZYX" if nt == 1 else "TZYX"},
        )
    return "tomography.tiff"


# -- time of flight ---------------------------------------------------------------------
def tof_results(meta: dict, tof: TimeOfFlight, log: Callable[[str, str], None]) -> tuple[dict, dict, dict | None]:
    """The frame-averaged spectrum, the spectra of the pixel regions and their Bragg-edge
    fits of a time-of-flight scan (``meta`` its :attr:`Scan.meta`): (summary, tables
    {name: rows}, the ``entry/tof`` NXdata arrays or None)."""
    from panreduce_tomography import tof as tof_mod

    rows = tof_mod.transmission_spectrum(meta, tof.flight_path_m)
    summary: dict = {
        "bins": len(rows),
        "overlap_corrected": bool(meta.get("overlap_corrected")),
        "band": list(tof.tof_band) if tof.tof_band else None,
    }
    if not rows:
        return summary, {}, None
    tables: dict[str, list[dict]] = {"tof_spectrum.csv": rows}
    lam = np.array([r["wavelength_angstrom"] for r in rows])
    edge = tof.bragg_edge_angstrom
    fit_edges = edge is not None and bool(np.all(np.isfinite(lam)))
    near = np.abs(lam - edge) < 0.15 * edge if fit_edges else None
    if fit_edges and near.sum() < 8:
        log(f"fewer than 8 time bins within 15 % of {edge} angstrom: no Bragg-edge fit", "warning")
        fit_edges = False

    def fit(trans: np.ndarray) -> dict | None:
        try:
            r = tof_mod.fit_bragg_edge(lam[near], trans[near], guess=edge)
        except (RuntimeError, ValueError) as exc:
            log(f"Bragg edge fit failed: {exc}", "warning")
            return None
        return {k: r[k] for k in ("edge", "edge_error", "width", "width_error")}

    if fit_edges:
        whole = fit(np.array([r["transmission"] for r in rows]))
        if whole:
            summary["bragg_edge"] = whole
    boxes = meta.get("regions") or []
    trans = tof_mod.region_transmission(meta)
    if trans is None or not boxes:
        return summary, tables, None
    nan = float("nan")
    fits = [fit(t) if fit_edges else None for t in trans]
    region_rows = []
    for i, (b, fr) in enumerate(zip(boxes, fits, strict=True)):
        row = {"region": i, "row0": b[0], "row1": b[1], "col0": b[2], "col1": b[3]}
        for k in ("edge", "edge_error", "width", "width_error"):
            row[f"{k}_angstrom"] = fr[k] if fr else nan
        row["fitted"] = fr is not None
        region_rows.append(row)
    summary["regions"] = len(boxes)
    if fit_edges:
        summary["region_edges"] = [r["edge_angstrom"] if r["fitted"] else None for r in region_rows]
        summary["region_edge_errors"] = [r["edge_error_angstrom"] if r["fitted"] else None for r in region_rows]
    tables["tof_regions.csv"] = region_rows
    tables["tof_region_spectra.csv"] = [
        {
            "region": i,
            "bin": j,
            "tof_s": rows[j]["tof_s"],
            "wavelength_angstrom": float(lam[j]),
            "transmission": float(trans[i, j]),
        }
        for i in range(len(boxes))
        for j in range(len(lam))
    ]
    arrays = {
        "transmission": trans.astype(np.float64),
        "wavelength": lam,
        "time_of_flight": np.array([r["tof_s"] for r in rows]),
        "region_box": np.asarray(boxes, np.int64),
    }
    if fit_edges:
        for k in ("edge", "edge_error", "width", "width_error"):
            arrays[f"bragg_{k}"] = np.array([r[f"{k}_angstrom"] for r in region_rows])
    return summary, tables, arrays


def write_tof_nexus(path: Path, arrays: dict) -> None:
    """``entry/tof``: the region transmission spectra (and Bragg-edge fits) as NXdata."""
    with h5py.File(path, "a") as f:
        g = nexus.write_nxdata(
            f["entry"],
            "tof",
            signal="transmission",
            data=arrays["transmission"],
            axes=[("region", np.arange(len(arrays["region_box"]))), ("wavelength", arrays["wavelength"])],
            units={"wavelength": "angstrom"},
            default=False,
            long_names={"transmission": "(sample - dark) / (open beam - dark), mean over the region and projections"},
        )
        g.create_dataset("time_of_flight", data=arrays["time_of_flight"]).attrs["units"] = "s"
        bx = g.create_dataset("region_box", data=arrays["region_box"])
        bx.attrs["long_name"] = "[row0, row1, col0, col1) detector pixels"
        if "bragg_edge" in arrays:
            for k in ("edge", "edge_error", "width", "width_error"):
                g.create_dataset(f"bragg_{k}", data=arrays[f"bragg_{k}"]).attrs["units"] = "angstrom"
            g["bragg_edge"].attrs["method"] = "erfc edge between exponential backgrounds (Santisteban 2001)"


def write_tables(out: OutputPath, tables: dict[str, list[dict]]) -> None:
    for name, rows in tables.items():
        if rows:
            out(name, format="csv", role="table").write_text(segment.to_csv(rows))


# -- quantification ---------------------------------------------------------------------
def quantify(
    volume_path: Path,
    *,
    described: Described,
    mask: np.ndarray | None,
    segmentation: Segmentation,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[dict], dict[str, list[dict]]]:
    """Segment every time point of the written volume: (summaries, tables)."""
    summaries, objects, hist = [], [], []
    nt = len(described.sources)
    with h5py.File(volume_path, "r") as f:
        ds = f[VOLUME]
        scale, offset = float(ds.attrs.get("scale_factor", 1.0)), float(ds.attrs.get("add_offset", 0.0))
        for ti, (source, t) in enumerate(zip(described.sources, described.times, strict=True)):
            if progress is not None:
                progress(f"time point {ti}")
            vol = np.asarray(ds[()] if nt == 1 else ds[ti], np.float32)
            if ds.dtype == np.uint16:
                vol = vol * scale + offset
            m = None if mask is None else np.broadcast_to(mask, vol.shape)
            summ, objs = segment.quantify(vol, mask=m, **segmentation.kwargs())
            summaries.append({"time": t, "scan": source, **summ})
            objects += [{"time": t, **o} for o in objs]
            hist += [{"time": t, **h} for h in segment.size_histogram(objs)]
    tables = {"quantification.csv": summaries}
    if objects:
        tables.update({"objects.csv": objects, "size_distribution.csv": hist})
    return summaries, tables


# -- trial centres ----------------------------------------------------------------------
def write_trial_centres(
    path: Path,
    png: Path,
    stack: np.ndarray,
    centres: Sequence[float],
    *,
    row: int,
    described: Described,
    params: TomographyParameters,
) -> None:
    """``trial_centres.nxs`` (``entry/trial_centres``: NXdata (centre, y, x), the root's
    @default chain leading to it) and ``trial_centres.png`` (the slices side by side,
    8 to a row, one grey scale, each titled with its centre)."""
    n = stack.shape[-1]
    with h5py.File(path, "w") as f:
        entry = nexus.make_group(f, "entry", "NXentry")
        nexus.write_text(
            entry, "title", f"trial rotation centres, detector row {row} of {', '.join(described.sources)}"
        )
        nexus.write_nxprocess(
            entry,
            "reconstruction",
            technique="tomography",
            version=__version__,
            parameters=params.model_dump(mode="json"),
        )
        c = np.arange(n, dtype=np.float64) - n // 2
        d = nexus.write_nxdata(
            entry,
            "trial_centres",
            signal="data",
            data=stack.astype(np.float32),
            axes=[("centre", np.asarray(centres, np.float64)), ("y", c), ("x", c)],
            units={"data": "1/pixel", "centre": "pixel", "x": "pixel", "y": "pixel"},
            long_names={
                "data": f"detector row {row} reconstructed at each trial centre",
                "centre": "rotation axis position on the detector (column)",
            },
        )
        d.create_dataset("row", data=row).attrs["units"] = "pixel"
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    k = len(centres)
    cols = min(k, 8)
    lines = (k + cols - 1) // cols
    tile = max(2.0, 256 / 100)
    fig = Figure(figsize=(cols * tile, lines * (tile + 0.3)), dpi=100)
    lo, hi = (float(x) for x in np.percentile(stack, [0.5, 99.5]))
    for i, centre in enumerate(centres):
        ax = fig.add_subplot(lines, cols, i + 1)
        ax.imshow(stack[i], cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.set_title(f"centre {centre:.2f} px", fontsize=9)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.95, wspace=0.04, hspace=0.12)
    fig.savefig(png, dpi=100)
