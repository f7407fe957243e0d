"""Outputs: ORSO text (.ort) and binary (.orb) through orsopy, and the log R vs Q plot."""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MONITOR_ONLY_WARNING = (
    "not normalised by a direct-beam/transmission run: arbitrary, wavelength-dependent "
    "scale; not absolute reflectivity (monitor-only normalisation)"
)


@dataclass
class OrtSet:
    """One ORSO data set: R(Q) on bins plus what the header says about it."""

    name: str  # data set id (run number, or "stitched")
    q: np.ndarray  # bin centres, 1/Å
    r: np.ndarray
    dr: np.ndarray
    dq: np.ndarray  # resolution, FWHM, 1/Å
    instrument: str
    facility: str
    title: str
    sample: str
    start_time: str
    theta_deg: list[float]
    wavelength_range: tuple[float, float]
    data_files: list[str]
    corrections: list[str]
    call: str
    comment: str
    software_version: str
    extra: dict = field(default_factory=dict)  # kept as user data in the header


def _date(text: str) -> _dt.datetime:
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%H:%M:%S"):
        try:
            d = _dt.datetime.strptime(text.strip()[:19], fmt)
            return d if d.year > 1900 else d.replace(year=1970)
        except ValueError:
            continue
    return _dt.datetime(1970, 1, 1)


def orso_dataset(s: OrtSet):
    from orsopy import fileio

    angles = s.theta_deg
    angle = fileio.Value(angles[0], "deg") if len(angles) == 1 else fileio.ValueRange(min(angles), max(angles), "deg")
    header = fileio.Orso(
        data_source=fileio.DataSource(
            owner=fileio.Person(name="unknown", affiliation="unknown"),
            experiment=fileio.Experiment(
                title=s.title or s.name,
                instrument=s.instrument,
                start_date=_date(s.start_time),
                probe="neutron",
                facility=s.facility,
            ),
            sample=fileio.Sample(name=s.sample or "unknown"),
            measurement=fileio.Measurement(
                instrument_settings=fileio.InstrumentSettings(
                    incident_angle=angle,
                    wavelength=fileio.ValueRange(s.wavelength_range[0], s.wavelength_range[1], "angstrom"),
                ),
                data_files=list(s.data_files),
                scheme="angle- and energy-dispersive",
            ),
        ),
        reduction=fileio.Reduction(
            software=fileio.Software(name="panreduce-reflectometry", version=s.software_version),
            timestamp=_dt.datetime.now().replace(microsecond=0),
            corrections=list(s.corrections),
            call=s.call,
            comment=s.comment,
        ),
        columns=[
            fileio.Column("Qz", "1/angstrom"),
            fileio.Column("R"),
            fileio.ErrorColumn("R", "uncertainty", "sigma"),
            fileio.ErrorColumn("Qz", "resolution", "FWHM"),
        ],
        data_set=s.name,
        **s.extra,
    )
    data = np.column_stack([s.q, s.r, s.dr, s.dq])
    return fileio.OrsoDataset(header, data)


def write_ort(path: Path, sets: list[OrtSet], *, comment: str) -> None:
    """ORSO text with orsopy (one data set per entry of ``sets``), via a temporary name."""
    from orsopy import fileio

    tmp = path.with_name(path.name + ".part")
    fileio.save_orso([orso_dataset(s) for s in sets], str(tmp), comment=comment)
    tmp.replace(path)


def write_orb(path: Path, sets: list[OrtSet]) -> None:
    from orsopy import fileio

    tmp = path.with_name(path.name + ".part")
    fileio.save_nexus([orso_dataset(s) for s in sets], str(tmp))
    tmp.replace(path)


def read_ort(path: Path):
    """Data sets of an ORSO text file (orsopy)."""
    from orsopy import fileio

    return fileio.load_orso(str(path))


def plot(
    path: Path,
    curves: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]],
    *,
    stitched: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    title: str,
    absolute: bool,
) -> None:
    """log R vs Q with error bars, one colour per run; the stitched curve in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    for label, q, r, dr in curves:
        ok = np.isfinite(r) & (r > 0)
        ax.errorbar(
            q[ok], r[ok], yerr=np.minimum(dr[ok], 0.999 * r[ok]), fmt="o", ms=3, capsize=1.5, label=label, alpha=0.8
        )
    if stitched is not None:
        q, r, dr = stitched
        ok = np.isfinite(r) & (r > 0)
        ax.plot(q[ok], r[ok], "-", color="k", lw=1, label="stitched")
    ax.set_yscale("log")
    ax.set_xlabel("Q (1/Å)")
    ax.set_ylabel("R" if absolute else "R (monitor-normalised, arbitrary scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".part.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def resolution_fwhm(q: np.ndarray, dq_q: float) -> np.ndarray:
    return np.asarray(q) * float(dq_q)


def finite_or_nan(x: float | None) -> float:
    return float("nan") if x is None or not math.isfinite(x) else float(x)


def _nx_name(axis: str) -> str:
    return axis.replace("+", "_plus_").replace("-", "_minus_")


def _label(axis: str) -> str:
    return {"Qx": "$Q_x$", "Qz": "$Q_z$", "pi-pf": "$p_i - p_f$", "pi+pf": "$p_i + p_f$"}.get(axis, axis)


def write_offspecular(path: Path, png: Path | None, m, *, run: str, instrument: str, theta_deg: float) -> None:
    """The off-specular map as NXdata (intensity over Qz, Qx bin edges, or over pi+pf, pi-pf
    saved as ``pi_plus_pf``/``pi_minus_pf``) in an NXentry, and a PNG."""
    import h5py

    from panreduce import nexus

    tmp = path.with_name(path.name + ".part")
    with h5py.File(tmp, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        e = nexus.make_group(f, "entry", "NXentry")
        nexus.write_text(e, "title", f"{instrument} {run} off-specular map, θ = {theta_deg:g}°")
        # counts per monitor count: a ratio, dimensionless; Qz, Qx are bin edges
        xname, yname = (_nx_name(a) for a in m.axes)
        nexus.write_nxdata(
            e,
            "offspecular",
            signal="intensity",
            data=m.intensity,
            errors=np.sqrt(m.variance),
            axes=[(yname, m.qz_edges), (xname, m.qx_edges)],
            units={"intensity": "", yname: "1/angstrom", xname: "1/angstrom"},
            long_names={
                "intensity": "counts per monitor count",
                xname: f"{m.axes[0]} (1/Å)",
                yname: f"{m.axes[1]} (1/Å)",
            },
        )
    tmp.replace(path)
    if png is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    fig, ax = plt.subplots(figsize=(7, 5), dpi=100)
    z = np.where(m.intensity > 0, m.intensity, np.nan)
    positive = z[np.isfinite(z)]
    norm = LogNorm(vmin=float(positive.min()), vmax=float(positive.max())) if positive.size else None
    mesh = ax.pcolormesh(m.qx_edges, m.qz_edges, z, norm=norm, shading="flat")
    fig.colorbar(mesh, ax=ax, label="counts / monitor")
    ax.set_xlabel(f"{_label(m.axes[0])} (1/Å)")
    ax.set_ylabel(f"{_label(m.axes[1])} (1/Å)")
    ax.set_title(f"{instrument} {run}: off-specular, θ = {theta_deg:g}°")
    fig.tight_layout()
    tmp_png = png.with_name(png.name + ".part.png")
    fig.savefig(tmp_png)
    plt.close(fig)
    tmp_png.replace(png)
