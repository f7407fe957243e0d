"""Outputs: ``stem4d.nxs`` (NeXus: one NXdata per calibrated image, scan axes in nm,
detector patterns in mrad, the calibration) and PNG overviews; shard partials."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from panreduce import nexus
from panreduce_stem4d.pipeline import Calibration, Maps, Partial

# the order of the overview and of the NXdata groups
ORDER = (
    "bf",
    "adf",
    "haadf",
    "com_x",
    "com_y",
    "com_magnitude",
    "dpc_phase",
    "divergence",
    "curl",
    "strain_exx",
    "strain_eyy",
    "strain_exy",
    "lattice_rotation",
    "total_counts",
    "descan_x",
    "descan_y",
)


def _nxdata(
    parent: h5py.Group,
    name: str,
    signal: np.ndarray,
    units: str,
    axes: list[tuple[str, np.ndarray, str]],
    long_name: str = "",
    *,
    default: bool = False,
) -> h5py.Group:
    return nexus.write_nxdata(
        parent,
        name,
        signal="data",
        data=signal,
        axes=[(a, v) for a, v, _ in axes],
        units={"data": units, **{a: u for a, _, u in axes}},
        long_names={"data": long_name or (f"{name} ({units})" if units else name)},
        default=default,
        compression="gzip",
    )


def write_nexus(
    path: Path,
    maps: Maps,
    calib: Calibration,
    part: Partial,
    *,
    source: str,
    layout: str,
    step_nm: tuple[float, float] | None,
    energy_kev: float | None,
    shape: tuple[int, ...],
    parameters: dict[str, Any],
    program: str,
    version: str,
) -> None:
    """stem4d.nxs: one NXentry (no application definition covers reduced 4D-STEM maps)
    with one NXdata per image over the scan (y, x in nm; in scan steps, units "", when the
    step is unknown), the bright field the default; the sum/mean/max patterns over the
    detector (mrad); NXcollection ``detector_masks``; NXprocess ``calibration``."""
    ny, nx = next(iter(maps.images.values())).shape
    if step_nm is not None:
        scan_axes = [("y", np.arange(ny) * step_nm[0], "nm"), ("x", np.arange(nx) * step_nm[1], "nm")]
    else:  # scan steps: a count, dimensionless
        scan_axes = [("y", np.arange(ny, dtype=float), ""), ("x", np.arange(nx, dtype=float), "")]
    geo = calib.geometry
    dy, dx = part.sum_pattern.shape
    kx = (np.arange(dx) - geo.center_yx_px[1]) * geo.mrad_per_px
    ky = (np.arange(dy) - geo.center_yx_px[0]) * geo.mrad_per_px
    det_axes = [("ky", ky, "mrad"), ("kx", kx, "mrad")]
    with h5py.File(path, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = nexus.program_name(program)
        e = nexus.make_group(f, "entry", "NXentry")
        nexus.write_text(e, "title", f"4D-STEM reduction of {source}")
        names = [n for n in ORDER if n in maps.images] + sorted(set(maps.images) - set(ORDER))
        first = "bf" if "bf" in names else (names[0] if names else "")
        for name in names:
            unit = maps.units.get(name, "")
            # per scan step (no step size known): the step is a count, so the unit is the
            # numerator's, and the long name says "per scan step"
            per_step = unit.endswith("/step")
            g = _nxdata(
                e,
                name,
                maps.images[name],
                unit.removesuffix("/step"),
                scan_axes,
                default=name == first,
                long_name=f"{name} ({unit.removesuffix('/step')} per scan step)" if per_step else "",
            )
            if step_nm is None:
                for axis in ("y", "x"):
                    g[axis].attrs["long_name"] = f"{axis} (scan steps)"
        for name, pat, unit in (
            ("sum_pattern", part.sum_pattern, "counts"),
            ("mean_pattern", part.sum_pattern / max(ny * nx, 1), "counts"),
            ("max_pattern", part.max_pattern, "counts"),
        ):
            _nxdata(
                e,
                name,
                pat,
                unit,
                det_axes,
                default=not first and name == "sum_pattern",
                long_name=f"{name} (detector axes: mrad from the beam centre, uncorrected)",
            )
        m = nexus.make_group(e, "detector_masks", "NXcollection")
        for spec in calib.detectors:
            ds = m.create_dataset(spec.name, data=spec.render(geo, (dy, dx)).astype(np.uint8), compression="gzip")
            ds.attrs.update(
                {
                    "inner_mrad": spec.inner_mrad,
                    "outer_mrad": spec.outer_mrad,
                    "azimuth_deg": list(spec.azimuth_deg) if spec.azimuth_deg else [0.0, 360.0],
                }
            )
        c = nexus.write_nxprocess(
            e,
            "calibration",
            technique=program,
            version=version,
            parameters=parameters,
            notes={"input": f"{source} ({layout}), shape {list(shape)}"},
        )
        c.create_dataset("beam_center_px", data=list(geo.center_yx_px)).attrs.update(units="pixel", axes="row, column")
        c.create_dataset("mrad_per_px", data=geo.mrad_per_px).attrs["units"] = "mrad"
        c.create_dataset("affine_correction_xy", data=np.asarray(geo.affine_xy))
        c.create_dataset("disc_radius_px", data=calib.disc_radius_px).attrs["units"] = "pixel"
        if calib.ellipse is not None:
            el = calib.ellipse
            for k, v in (
                ("ellipse_x0_px", el.x0),
                ("ellipse_y0_px", el.y0),
                ("ellipse_a_px", el.a),
                ("ellipse_b_px", el.b),
                ("ellipse_axis_ratio", el.axis_ratio),
                ("ellipse_theta_deg", el.theta_deg),
                ("residual_ellipticity", calib.residual_ellipticity),
            ):
                c.create_dataset(k, data=float(v))
        for k, v in maps.fitted.items():
            if isinstance(v, bool | int | float | str):
                c.create_dataset(k, data=v)
            else:
                nexus.write_text(c, k, json.dumps(v))
        if energy_kev is not None:
            c.create_dataset("energy_kev", data=float(energy_kev)).attrs["units"] = "keV"


def write_png(path: Path, maps: Maps, calib: Calibration, part: Partial, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in ORDER if n in maps.images and not n.startswith("descan")][:11]
    n = len(names) + 1
    cols = 4
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    ax = axes.flat[0]
    ax.imshow(np.log1p(part.sum_pattern.astype(float)), cmap="magma")
    for spec in calib.detectors:
        for r in (spec.inner_mrad, spec.outer_mrad):
            if r > 0:
                ax.add_patch(
                    plt.Circle(
                        (calib.geometry.center_yx_px[1], calib.geometry.center_yx_px[0]),
                        r / calib.geometry.mrad_per_px,
                        fill=False,
                        lw=0.6,
                        color="cyan",
                    )
                )
    ax.set_title("sum pattern (log) + detectors", fontsize=8)
    for ax, name in zip(axes.flat[1:], names, strict=False):
        img = maps.images[name]
        cmap = "RdBu_r" if name.startswith(("com_", "strain", "curl", "divergence", "lattice")) else "gray"
        finite = img[np.isfinite(img)]
        lim = float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0
        kw = {"vmin": -lim, "vmax": lim} if cmap == "RdBu_r" and name != "com_magnitude" else {}
        ax.imshow(img, cmap="gray" if name == "com_magnitude" else cmap, **kw)
        ax.set_title(f"{name} ({maps.units.get(name, '')})", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- shard partials ------------------------------------------------------------------------------
def write_partial(path: Path, part: Partial, calib: Calibration, meta: dict[str, Any]) -> None:
    """One shard's rows, its calibration and the scan's metadata (JSON in ``meta``)."""
    with h5py.File(path, "w") as f:
        f.attrs["meta"] = json.dumps(meta, default=str)
        write_calibration(f.create_group("calibration"), calib)
        f.attrs.update({"row0": part.row0, "row1": part.row1, "virtual": json.dumps(list(part.virtual))})
        for k, v in part.virtual.items():
            f.create_dataset(f"virtual/{k}", data=v)
        f.create_dataset("com_raw_yx_px", data=part.com_raw_yx_px)
        f.create_dataset("total_counts", data=part.total_counts)
        f.create_dataset("sum_pattern", data=part.sum_pattern)
        f.create_dataset("max_pattern", data=part.max_pattern)
        if part.lattice is not None:
            f.create_dataset("lattice", data=part.lattice)
            f.create_dataset("n_discs", data=part.n_discs)


def read_partial(path: Path) -> tuple[Partial, Calibration, dict[str, Any]]:
    with h5py.File(path, "r") as f:
        names = json.loads(f.attrs["virtual"])
        calib = read_calibration(f["calibration"])
        meta = json.loads(f.attrs["meta"])
        return (
            Partial(
                int(f.attrs["row0"]),
                int(f.attrs["row1"]),
                {k: f[f"virtual/{k}"][()] for k in names},
                f["com_raw_yx_px"][()],
                f["total_counts"][()],
                f["sum_pattern"][()],
                f["max_pattern"][()],
                f["lattice"][()] if "lattice" in f else None,
                f["n_discs"][()] if "n_discs" in f else None,
            ),
            calib,
            meta,
        )


def write_calibration(group: h5py.Group, calib: Calibration) -> None:
    """Everything ``finish`` needs of the calibration, for a merge without the input."""
    geo = calib.geometry
    group.attrs.update(
        {
            "center_yx_px": list(geo.center_yx_px),
            "mrad_per_px": geo.mrad_per_px,
            "disc_radius_px": calib.disc_radius_px,
            "com_mrad": -1.0 if calib.com_mrad is None else calib.com_mrad,
            "detectors": json.dumps(
                [
                    [d.name, d.inner_mrad, d.outer_mrad, list(d.azimuth_deg) if d.azimuth_deg else None]
                    for d in calib.detectors
                ]
            ),
        }
    )
    group.create_dataset("affine_xy", data=np.asarray(geo.affine_xy))
    group.create_dataset("sample_mean", data=calib.sample_mean)
    if calib.ellipse is not None:
        el = calib.ellipse
        group.attrs["ellipse"] = [el.x0, el.y0, el.a, el.b, el.theta_deg, calib.residual_ellipticity]
    if calib.lattice_basis is not None:
        group.create_dataset("lattice_basis", data=calib.lattice_basis)
        group.create_dataset("lattice_origin_xy", data=calib.lattice_origin_xy)


def read_calibration(group: h5py.Group) -> Calibration:
    from panreduce_stem4d.calibration import Ellipse
    from panreduce_stem4d.detectors import Geometry, MaskSpec

    a = group.attrs
    geo = Geometry(tuple(float(v) for v in a["center_yx_px"]), float(a["mrad_per_px"]), group["affine_xy"][()])
    dets = [MaskSpec(n, lo, hi, tuple(az) if az else None) for n, lo, hi, az in json.loads(a["detectors"])]
    calib = Calibration(
        geo,
        float(a["disc_radius_px"]),
        group["sample_mean"][()],
        detectors=dets,
        com_mrad=None if a["com_mrad"] < 0 else float(a["com_mrad"]),
    )
    if "ellipse" in a:
        x0, y0, aa, bb, th, res = (float(v) for v in a["ellipse"])
        calib.ellipse, calib.residual_ellipticity = Ellipse(x0, y0, aa, bb, th), res
    if "lattice_basis" in group:
        calib.lattice_basis = group["lattice_basis"][()]
        calib.lattice_origin_xy = group["lattice_origin_xy"][()]
    return calib
