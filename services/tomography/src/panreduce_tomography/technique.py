"""The tomography technique: corrections, centre, reconstruction, NXtomoproc output."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import h5py
import numpy as np

from panreduce import errors
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as Base
from panreduce_tomography import __version__, pipeline, recon, segment
from panreduce_tomography.backend import get_backend
from panreduce_tomography.io import Scan, read_scans
from panreduce_tomography.params import TomographyParameters


@dataclass
class TomoInputs:
    scans: list[Scan]
    rows: list[int]  # detector rows to reconstruct (this shard's)
    all_rows: list[int]  # every row of the request (the centre is found on these)
    files: list[str]


class Technique(Base[TomographyParameters, TomoInputs]):
    name = "tomography"
    version = __version__
    title = "Full-field tomography: corrections, rotation centre, reconstruction (CPU/GPU), quantification"
    description = (
        "Reads Data Exchange HDF5, NXtomo (image_key), TIFF stacks, sinograms (.mat/HDF5) and FITS "
        "time-of-flight stacks; dark/flat (conventional or dynamic eigen flats), zinger and ring removal, "
        "Paganin phase retrieval, automatic rotation centre (Vo 2014); gridrec-class NUFFT, FBP, SIRT or "
        "CGLS reconstruction on numpy or torch; slab-wise NXtomoproc output, PNG previews, segmentation "
        "tables. A series of scans gives one volume per time point."
    )
    Parameters = TomographyParameters
    input_kinds = ("hdf5/dataexchange", "nexus/nxtomo", "tiff/stack", "mat/sinogram", "hdf5/sinogram", "fits/tof")
    output_formats = ("nexus", "png", "csv")
    wants_gpu = True
    shardable = True
    shard_unit = "slice range (detector rows)"

    def warm_up(self) -> None:
        import finufft  # noqa: F401 - import the heavy libraries before SERVING
        import scipy.fft  # noqa: F401

    # -- load -----------------------------------------------------------------------------
    def load(self, inputs: Inputs, params: TomographyParameters, ctx: Context) -> TomoInputs:
        groups = [list(item.files) for item in inputs.items]
        if params.tof_band is not None and params.tof_bands_angstrom is not None:
            raise errors.InvalidParameters([errors.FieldViolation(
                "tof_bands_angstrom", "give either tof_band (time bins) or tof_bands_angstrom, not both")])
        if params.tof_bands_angstrom is not None and len(groups) > 1:
            raise errors.InvalidParameters([errors.FieldViolation(
                "tof_bands_angstrom", "wavelength bands need a single time-of-flight scan (one input)")])
        tof_options = {"bands_angstrom": params.tof_bands_angstrom, "flight_path_m": params.flight_path_m,
                       "regions": params.tof_regions, "grid": params.tof_region_grid}
        scans = read_scans(groups, angles_unit=params.angles_unit, band=params.tof_band, tof_options=tof_options)
        for field in ("tof_band", "bragg_edge_angstrom", "tof_bands_angstrom", "tof_regions", "tof_region_grid"):
            if getattr(params, field) is not None and not any(s.layout == "fits-tof" for s in scans):
                raise errors.InvalidParameters([errors.FieldViolation(field, "only applies to FITS time-of-flight inputs")])
        first = scans[0]
        for s in scans[1:]:
            if s.shape[1:] != first.shape[1:]:
                raise errors.InvalidInput(s.source, f"detector {s.shape[1:]} differs from {first.source}'s "
                                          f"{first.shape[1:]}: a series needs one detector size")
        stop = first.n_rows if params.slice_stop is None else min(params.slice_stop, first.n_rows)
        if params.slice_start >= stop:
            raise errors.InvalidParameters([errors.FieldViolation(
                "slice_start", f"must be below slice_stop/the number of detector rows ({stop})")])
        all_rows = list(range(params.slice_start, stop, params.slice_step))
        rows = ctx.shard.select(all_rows) if ctx.shard else all_rows
        if params.center is not None and not (-first.n_cols <= params.center <= 2 * first.n_cols):
            raise errors.InvalidParameters([errors.FieldViolation(
                "center", f"{params.center} is far outside the detector (0..{first.n_cols - 1} pixels)")])
        for s in scans:
            ctx.log(f"{s.source}: {s.layout}, {s.shape[0]} projections of {s.shape[1]} x {s.shape[2]}, "
                    f"{0 if s.darks is None else len(s.darks)} darks, {0 if s.flats is None else len(s.flats)} flats")
        return TomoInputs(scans, rows, all_rows, [f.name for f in inputs.files])

    # -- reduce ---------------------------------------------------------------------------
    def reduce(self, data: TomoInputs, params: TomographyParameters, ctx: Context) -> dict:
        p = params
        bk = get_backend(p.backend)
        scans, rows = data.scans, data.rows
        n_det = scans[0].n_cols
        n = p.size or n_det
        nt = len(scans)
        if not rows:
            return {"slices": 0, "note": "this shard holds no slices"}
        name = "tomography.nxs" if not ctx.shard else f"tomography_rows{rows[0]:05d}-{rows[-1]:05d}.nxs"
        out_path = ctx.output_path(name, format="nexus")
        work_path = ctx.work_dir / "volume_float32.h5"
        as_uint16 = p.output_dtype == "uint16"
        shape = (len(rows), n, n) if nt == 1 else (nt, len(rows), n, n)
        chunks = (1, n, n) if nt == 1 else (1, 1, n, n)
        mask = recon.circle_mask(n, n / 2) if p.circle else None

        t_start = time.perf_counter()
        centres, found = [], []
        lo, hi = np.inf, -np.inf
        total_slabs = sum((len(rows) + p.slab_rows - 1) // p.slab_rows for _ in scans)
        done = 0
        with h5py.File(work_path if as_uint16 else out_path, "w") as fvol:
            dset = fvol.create_dataset("data", shape=shape, dtype="float32", chunks=chunks)
            for ti, scan in enumerate(scans):
                ctx.progress(done / total_slabs, "prepare", f"{scan.source}: dark/flat")
                prep = pipeline.prepare(scan, p, lambda f, m: ctx.check_cancelled())
                if p.center is None and ti > 0 and "band" in scan.meta:
                    c = centres[0]  # wavelength bands of one scan: one axis, found on all the bins
                    found.append(True)
                elif p.center is None:
                    ctx.progress(done / total_slabs, "centre", f"{scan.source}: finding the rotation axis")
                    cscan = scan.meta.get("centre_scan", scan)
                    cprep = prep if cscan is scan else pipeline.prepare(cscan, p, lambda f, m: ctx.check_cancelled())
                    c = pipeline.find_centre(cscan, cprep, data.all_rows, p)
                    found.append(True)
                    ctx.log(f"{scan.source}: rotation centre found at {c:.2f} px (Vo 2014)")
                else:
                    c = float(p.center)
                    found.append(False)
                centres.append(c)
                plan = None
                if p.algorithm == "gridrec":  # finufft on numpy, gridding on torch (CPU or GPU)
                    plan = recon.gridrec_plan(scan.angles, c, n_det, n=n, filter=p.filter, cutoff=p.filter_cutoff,
                                              backend=bk)
                for s0 in range(0, len(rows), p.slab_rows):
                    slab = rows[s0 : s0 + p.slab_rows]
                    ctx.progress(done / total_slabs, "reconstruct",
                                 f"{scan.source}: rows {slab[0]}-{slab[-1]} ({len(rows)} slices)")
                    sino = pipeline.sinograms(scan, prep, slab, p)
                    if plan is not None:
                        vol = plan(sino)
                    else:
                        vol = recon.reconstruct(sino, scan.angles, c, algorithm=p.algorithm, n=n, filter=p.filter,
                                                cutoff=p.filter_cutoff, iterations=p.iterations, backend=bk,
                                                callback=lambda _it: ctx.check_cancelled(),
                                                check=ctx.check_cancelled)
                    vol = np.asarray(vol, np.float32).reshape(len(slab), n, n)
                    if mask is not None:
                        vol = vol * mask
                    if not np.all(np.isfinite(vol)):
                        raise errors.InternalError(f"reconstruction of rows {slab[0]}-{slab[-1]} produced NaN/inf")
                    inside = vol[:, mask] if mask is not None else vol
                    lo, hi = min(lo, float(inside.min())), max(hi, float(inside.max()))
                    if nt == 1:
                        dset[s0 : s0 + len(slab)] = vol
                    else:
                        dset[ti, s0 : s0 + len(slab)] = vol
                    done += 1
        elapsed = time.perf_counter() - t_start
        ctx.progress(1.0, "write", "NeXus output")
        scale, offset = 1.0, 0.0
        if as_uint16:
            scale = (hi - lo) / 65535.0 if hi > lo else 1.0
            offset = lo
        with h5py.File(out_path, "a" if not as_uint16 else "w") as f:
            if as_uint16:
                with h5py.File(work_path, "r") as fw:
                    src = fw["data"]
                    dst = f.create_dataset("entry/data/data", shape=shape, dtype="uint16", chunks=chunks)
                    for i in range(shape[0]):
                        ctx.check_cancelled()
                        dst[i] = np.clip(np.rint((src[i] - offset) / scale), 0, 65535).astype(np.uint16)
            else:
                f.create_group("entry/data")
                f.move("data", "entry/data/data")
            self._write_nexus(f, data, p, centres, found, rows, n, nt, scale, offset, as_uint16, bk.name)

        summary: dict = {
            "scans": [s.source for s in scans],
            "layout": scans[0].layout,
            "slices": len(rows),
            "rows": [rows[0], rows[-1]],
            "size": n,
            "algorithm": p.algorithm,
            "backend": f"{bk.name}:{bk.device}",
            "center": centres[0] if nt == 1 else centres,
            "center_found": found[0] if nt == 1 else found,
            "value_range": [lo, hi],
            "seconds": round(elapsed, 3),
            "seconds_per_slice": round(elapsed / (len(rows) * nt), 4),
        }
        self._previews(out_path, ctx, p, rows, nt)
        tof_scans = [s for s in scans if s.layout == "fits-tof"]
        if tof_scans:
            summary["tof"] = self._tof(tof_scans[0], ctx, p, out_path)
            if "band" in tof_scans[0].meta:
                summary["tof"]["bands_angstrom"] = [s.meta["band_angstrom"] for s in tof_scans]
                summary["tof"]["band_bins"] = [s.meta["band_bins"] for s in tof_scans]
        if p.segment:
            summary["quantification"] = self._quantify(out_path, ctx, p, scans, rows, n, nt, mask, scale, offset,
                                                       as_uint16)
        return summary

    def merge(self, inputs: Inputs, params: TomographyParameters, ctx: Context) -> dict:
        """Stack the shards' slice ranges into one volume (see merge.py)."""
        from panreduce_tomography.merge import merge_shards

        return merge_shards(sorted({f.path.parent for f in inputs.files}), ctx)

    # -- outputs --------------------------------------------------------------------------
    def _write_nexus(self, f: h5py.File, data: TomoInputs, p: TomographyParameters, centres: list[float],
                     found: list[bool], rows: list[int], n: int, nt: int, scale: float, offset: float,
                     as_uint16: bool, backend: str) -> None:
        entry = f["entry"]
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "data"
        entry.create_dataset("definition", data="NXtomoproc")
        entry.create_dataset("title", data=f"tomographic reconstruction of {', '.join(s.source for s in data.scans)}")
        inst = entry.create_group("instrument")
        inst.attrs["NX_class"] = "NXinstrument"
        src = inst.create_group("source")
        src.attrs["NX_class"] = "NXsource"
        neutron = any(s.layout == "fits-tof" for s in data.scans)
        src.create_dataset("type", data="Spallation Neutron Source" if neutron else "Synchrotron X-ray Source")
        src.create_dataset("name", data="unknown")
        src.create_dataset("probe", data="neutron" if neutron else "x-ray")
        sample = entry.create_group("sample")
        sample.attrs["NX_class"] = "NXsample"
        sample.create_dataset("name", data=data.scans[0].source)
        proc = entry.create_group("reconstruction")
        proc.attrs["NX_class"] = "NXprocess"
        proc.create_dataset("program", data="panreduce-tomography")
        proc.create_dataset("version", data=__version__)
        proc.create_dataset("date", data=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        par = proc.create_group("parameters")
        par.attrs["NX_class"] = "NXparameters"
        par.create_dataset("raw_file", data=np.array(data.files, dtype=h5py.string_dtype()))
        rc = par.create_dataset("rotation_centre", data=np.asarray(centres, np.float64) if nt > 1 else centres[0])
        rc.attrs["units"] = "pixel"
        par.create_dataset("rotation_centre_found", data=np.asarray(found) if nt > 1 else found[0])
        par.create_dataset("rotation_centre_method", data="Vo et al. 2014 (Fourier double-wedge)" if any(found)
                           else "parameter")
        par.create_dataset("algorithm", data=p.algorithm)
        par.create_dataset("filter", data=p.filter)
        par.create_dataset("backend", data=backend)
        par.create_dataset("parameters_json", data=json.dumps(p.model_dump(mode="json"), sort_keys=True))
        d = entry["data"]
        d.attrs["NX_class"] = "NXdata"
        d.attrs["signal"] = "data"
        bands = "band" in data.scans[0].meta
        axes = ["z", "y", "x"] if nt == 1 else ["wavelength" if bands else "time", "z", "y", "x"]  # bands: one volume each
        d.attrs["axes"] = axes
        for i, ax in enumerate(axes):
            d.attrs[f"{ax}_indices"] = i
        vol = d["data"]
        vol.attrs["units"] = "1/pixel"
        vol.attrs["long_name"] = "linear attenuation coefficient per pixel"
        if as_uint16:
            vol.attrs["scale_factor"] = scale
            vol.attrs["add_offset"] = offset
            vol.attrs["description"] = "value = add_offset + scale_factor * data"
        c = np.arange(n, dtype=np.float64) - n // 2
        for ax in ("x", "y"):
            ds = d.create_dataset(ax, data=c)
            ds.attrs["units"] = "pixel"
        z = d.create_dataset("z", data=np.asarray(rows, np.float64))
        z.attrs["units"] = "pixel"
        z.attrs["long_name"] = "detector row"
        if bands:  # one volume per wavelength band: its centre, limits and time bins
            w = d.create_dataset("wavelength", data=np.asarray([s.time for s in data.scans], np.float64))
            w.attrs["units"] = "angstrom"
            w.attrs["long_name"] = "band centre wavelength"
            lim = d.create_dataset("wavelength_band", data=np.asarray([s.meta["band_angstrom"] for s in data.scans]))
            lim.attrs["units"] = "angstrom"
            lim.attrs["long_name"] = "band limits [lo, hi) per volume"
            d.create_dataset("time_bins", data=np.asarray([s.meta["band_bins"] for s in data.scans], np.int64))
        elif nt > 1:
            d.create_dataset("time", data=np.asarray([s.time for s in data.scans], np.float64))

    def _previews(self, out_path, ctx: Context, p: TomographyParameters, rows: list[int], nt: int) -> None:  # noqa: ANN001
        if p.previews == 0:
            return
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import image as mimage

        k = min(p.previews, len(rows))
        picks = sorted({int(round(x)) for x in np.linspace(0, len(rows) - 1, k + 2)[1:-1]}) if len(rows) > 2 else \
            list(range(len(rows)))[:k]
        with h5py.File(out_path, "r") as f:
            ds = f["entry/data/data"]
            for i in picks:
                img = np.asarray(ds[i] if nt == 1 else ds[nt - 1, i], np.float32)
                lo, hi = np.percentile(img, [0.5, 99.5])
                path = ctx.output_path(f"preview_row{rows[i]:05d}.png", format="png", role="preview")
                mimage.imsave(path, img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)

    def _tof(self, scan: Scan, ctx: Context, p: TomographyParameters, out_path) -> dict:  # noqa: ANN001
        """The frame-averaged spectrum (``tof_spectrum.csv``), the spectra of the pixel
        regions and their Bragg-edge fits (``tof_regions.csv``, ``tof_region_spectra.csv``,
        ``entry/tof`` in the NeXus file). Shards after the first skip the tables (the
        merge concatenates them)."""
        from panreduce_tomography import tof

        rows = tof.transmission_spectrum(scan.meta, p.flight_path_m)
        out: dict = {"bins": len(rows), "overlap_corrected": bool(scan.meta.get("overlap_corrected")),
                     "band": list(p.tof_band) if p.tof_band else None}
        if not rows:
            return out
        tables = not ctx.shard or ctx.shard.index == 0
        if tables:
            ctx.output_path("tof_spectrum.csv", format="csv", role="table").write_text(segment.to_csv(rows))
        lam = np.array([r["wavelength_angstrom"] for r in rows])
        fit_edges = p.bragg_edge_angstrom is not None and bool(np.all(np.isfinite(lam)))
        near = np.abs(lam - p.bragg_edge_angstrom) < 0.15 * p.bragg_edge_angstrom if fit_edges else None
        if fit_edges and near.sum() < 8:
            ctx.log(f"fewer than 8 time bins within 15 % of {p.bragg_edge_angstrom} angstrom: no Bragg-edge fit",
                    "warning")
            fit_edges = False

        def fit(trans: np.ndarray) -> dict | None:
            try:
                r = tof.fit_bragg_edge(lam[near], trans[near], guess=p.bragg_edge_angstrom)
            except (RuntimeError, ValueError) as exc:
                ctx.log(f"Bragg edge fit failed: {exc}", "warning")
                return None
            return {k: r[k] for k in ("edge", "edge_error", "width", "width_error")}

        if fit_edges:
            whole = fit(np.array([r["transmission"] for r in rows]))
            if whole:
                out["bragg_edge"] = whole
        boxes = scan.meta.get("regions") or []
        trans = tof.region_transmission(scan.meta)
        if trans is None or not boxes:
            return out
        nan = float("nan")
        fits = [fit(t) if fit_edges else None for t in trans]
        region_rows = []
        for i, (b, fr) in enumerate(zip(boxes, fits, strict=True)):
            row = {"region": i, "row0": b[0], "row1": b[1], "col0": b[2], "col1": b[3]}
            for k in ("edge", "edge_error", "width", "width_error"):
                row[f"{k}_angstrom"] = fr[k] if fr else nan
            row["fitted"] = fr is not None
            region_rows.append(row)
        out["regions"] = len(boxes)
        if fit_edges:
            out["region_edges"] = [r["edge_angstrom"] if r["fitted"] else None for r in region_rows]
            out["region_edge_errors"] = [r["edge_error_angstrom"] if r["fitted"] else None for r in region_rows]
        if tables:
            ctx.output_path("tof_regions.csv", format="csv", role="table").write_text(segment.to_csv(region_rows))
            spec_rows = [{"region": i, "bin": j, "tof_s": rows[j]["tof_s"], "wavelength_angstrom": float(lam[j]),
                          "transmission": float(trans[i, j])} for i in range(len(boxes)) for j in range(len(lam))]
            ctx.output_path("tof_region_spectra.csv", format="csv", role="table").write_text(segment.to_csv(spec_rows))
        with h5py.File(out_path, "a") as f:
            g = f["entry"].create_group("tof")
            g.attrs["NX_class"] = "NXdata"
            g.attrs["signal"] = "transmission"
            g.attrs["axes"] = ["region", "wavelength"]
            g.attrs["region_indices"] = 0
            g.attrs["wavelength_indices"] = 1
            t = g.create_dataset("transmission", data=trans.astype(np.float64))
            t.attrs["long_name"] = "(sample - dark) / (open beam - dark), mean over the region and projections"
            g.create_dataset("region", data=np.arange(len(boxes)))
            w = g.create_dataset("wavelength", data=lam)
            w.attrs["units"] = "angstrom"
            tt = g.create_dataset("time_of_flight", data=np.array([r["tof_s"] for r in rows]))
            tt.attrs["units"] = "s"
            bx = g.create_dataset("region_box", data=np.asarray(boxes, np.int64))
            bx.attrs["long_name"] = "[row0, row1, col0, col1) detector pixels"
            if fit_edges:
                for k in ("edge", "edge_error", "width", "width_error"):
                    ds = g.create_dataset(f"bragg_{k}", data=np.array([r[f"{k}_angstrom"] for r in region_rows]))
                    ds.attrs["units"] = "angstrom"
                g["bragg_edge"].attrs["method"] = "erfc edge between exponential backgrounds (Santisteban 2001)"
        return out

    def _quantify(self, out_path, ctx: Context, p: TomographyParameters, scans: list[Scan], rows: list[int],  # noqa: ANN001
                  n: int, nt: int, mask, scale: float, offset: float, as_uint16: bool) -> list[dict]:  # noqa: ANN001
        limit = 2 * 1024**3
        if len(rows) * n * n * 4 > limit:
            ctx.log("volume too large to segment in memory: quantification skipped", "warning")
            return []
        summaries, objects, hist = [], [], []
        with h5py.File(out_path, "r") as f:
            ds = f["entry/data/data"]
            for ti, scan in enumerate(scans):
                ctx.progress(1.0, "quantify", f"time point {ti}")
                vol = np.asarray(ds[()] if nt == 1 else ds[ti], np.float32)
                if as_uint16:
                    vol = vol * scale + offset
                m = None if mask is None else np.broadcast_to(mask, vol.shape)
                summ, objs = segment.quantify(vol, threshold=p.threshold, mask=m, min_voxels=p.min_object_voxels)
                summaries.append({"time": scan.time, "scan": scan.source, **summ})
                objects += [{"time": scan.time, **o} for o in objs]
                hist += [{"time": scan.time, **h} for h in segment.size_histogram(objs)]
        ctx.output_path("quantification.csv", format="csv", role="table").write_text(segment.to_csv(summaries))
        if objects:
            ctx.output_path("objects.csv", format="csv", role="table").write_text(segment.to_csv(objects))
            ctx.output_path("size_distribution.csv", format="csv", role="table").write_text(segment.to_csv(hist))
        return summaries
