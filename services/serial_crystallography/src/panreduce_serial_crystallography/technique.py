"""The serial crystallography technique: glue between the kit and the algorithms.

Two kinds of job, by their inputs: detector frames with a CrystFEL geometry → hit finding
(peakfinder8), the per-frame table, hits.cxi + hits.lst and the previews; a CrystFEL
stream → merging to merged.mtz with the figures of merit."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gemmi
import h5py
import numpy as np

from panreduce.errors import FieldViolation, InvalidInput, InvalidParameters, InvalidRequest
from panreduce.kit import Context, Inputs
from panreduce.kit import Technique as _Technique
from panreduce.kit.technique import EmptyShard
from panreduce_serial_crystallography.frames import FrameError, FrameSource, open_frames
from panreduce_serial_crystallography.geometry import (
    Detector,
    GeometryError,
    PixelMaps,
    bad_pixel_mask,
    parse_geometry,
    pixel_maps,
)
from panreduce_serial_crystallography.hits import Powder, find_hits, rolling_hit_rate
from panreduce_serial_crystallography.merge import (
    MergeError,
    figures_of_merit,
    merge_intensities,
    point_group_ops,
    space_group_for,
    write_mtz,
)
from panreduce_serial_crystallography.output import (
    CxiHitWriter,
    plot_foms,
    plot_hit_rate,
    plot_powder,
    write_frames_csv,
)
from panreduce_serial_crystallography.params import SerialParameters
from panreduce_serial_crystallography.peakfinder8 import PeakfinderLayout, layout
from panreduce_serial_crystallography.stream import Stream, StreamError, read_stream

VERSION = "0.1.0"
FRAME_SUFFIXES = (".cxi", ".h5", ".hdf5", ".nxs", ".nx5", ".cbf")
MAX_GEOM_BYTES = 10_000_000


@dataclass
class HitJob:
    detector: Detector
    geometry_text: str
    source: FrameSource
    maps: PixelMaps
    lay: PeakfinderLayout
    start: int
    stop: int


@dataclass
class MergeJob:
    stream: Stream
    names: list[str]
    inputs: list[str]


class Technique(_Technique[SerialParameters, HitJob | MergeJob]):
    name = "serial_crystallography"
    version = VERSION
    title = "Serial crystallography: hit finding, hits-only export, merging to MTZ"
    description = (
        "peakfinder8 hit finding on detector frames described by a CrystFEL geometry "
        "(HDF5/CXI/NeXus stacks, Eiger master files, CBF), a per-frame table, hit-rate and "
        "powder previews and a hits-only CXI file with the peak lists; or the merging of a "
        "CrystFEL stream in a point group (process_hkl's mean and sigma) to an MTZ file with "
        "CC1/2, CC*, Rsplit, completeness, multiplicity and <I/sigma> per resolution shell."
    )
    Parameters = SerialParameters
    input_kinds = ("hdf5/cxi-frames", "hdf5/eiger-master", "cbf", "crystfel/geom", "crystfel/stream")
    output_formats = ("cxi", "csv", "png", "mtz", "hdf5")
    shardable = True
    shard_unit = "frame"

    # -- load --------------------------------------------------------------------------
    def load(self, inputs: Inputs, params: SerialParameters, ctx: Context) -> HitJob | MergeJob:
        files = inputs.files
        streams = [f for f in files if f.path.suffix == ".stream"]
        if streams:
            if ctx.shard is not None and ctx.shard.index > 0:
                raise EmptyShard("a stream is merged once, by the first shard")
            chunks: list = []
            geometry, cell = None, None
            for f in streams:
                ctx.progress(0.1, "load", f"reading {f.name}")
                try:
                    with open(f.path, errors="strict") as fh:
                        st = read_stream(fh)
                except (StreamError, UnicodeDecodeError) as exc:
                    raise InvalidInput(f.name, str(exc)) from exc
                chunks.extend(st.chunks)
                geometry, cell = geometry or st.geometry, cell or st.cell
            stream = Stream(geometry=geometry, cell=cell, chunks=chunks)
            if not stream.crystals:
                raise InvalidInput(streams[0].name, "the stream holds no indexed crystals")
            return MergeJob(stream, [f.name for f in streams],
                            [f"{f.name} sha256={f.sha256}" for f in streams])

        geoms = [f for f in files if f.path.suffix == ".geom"]
        if params.geometry is not None:
            g = inputs.find(params.geometry)
            if g is None or g.path.suffix != ".geom":
                raise InvalidParameters([FieldViolation("geometry", f"no input .geom file named {params.geometry!r}")])
        elif len(geoms) == 1:
            g = geoms[0]
        else:
            raise InvalidParameters([FieldViolation("geometry", f"{len(geoms)} .geom inputs: name one")])
        if g.size > MAX_GEOM_BYTES:
            raise InvalidInput(g.name, f"a geometry of {g.size} bytes is too large")
        try:
            text = g.path.read_text()
            detector = parse_geometry(text)
        except (GeometryError, UnicodeDecodeError) as exc:
            raise InvalidInput(g.name, str(exc)) from exc
        frame_files = [f for f in files if f.path.suffix.lower() in FRAME_SUFFIXES]
        if not frame_files:
            raise InvalidRequest("no frame files (.cxi, .h5, .nxs, .cbf) among the inputs")
        try:
            source = open_frames([(f.path, f.name) for f in frame_files], detector, data_path=params.data_path)
        except FrameError as exc:
            raise InvalidInput(exc.source, exc.problem) from exc
        n = source.n_frames
        start, stop = 0, n
        if ctx.shard is not None:
            sel = ctx.shard.select(list(range(n)))
            start, stop = sel[0], sel[-1] + 1
        maps = pixel_maps(detector)
        bad = source.mask_bad | bad_pixel_mask(detector, maps)
        slices = [(slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1)) for p in detector.panels]
        lay = layout(maps.r_px, maps.panel_id, bad, slices, min_res=params.min_res, max_res=params.max_res)
        ctx.progress(1.0, "load", f"{n} frame(s); this job: {start}..{stop - 1}")
        return HitJob(detector, text, source, maps, lay, start, stop)

    # -- reduce ------------------------------------------------------------------------
    def reduce(self, data: HitJob | MergeJob, params: SerialParameters, ctx: Context) -> Mapping[str, Any]:
        if isinstance(data, MergeJob):
            return self._merge_stream(data, params, ctx)
        return self._find_hits(data, params, ctx)

    def _find_hits(self, job: HitJob, params: SerialParameters, ctx: Context) -> dict[str, Any]:
        src = job.source
        powder = Powder.empty(src.shape)
        rows: list[dict] = []
        writer = None
        lst: list[str] = []
        if params.export_hits:
            energy_path = job.detector.photon_energy if isinstance(job.detector.photon_energy, str) else None
            clen_path = job.detector.clen if isinstance(job.detector.clen, str) else None
            writer = CxiHitWriter(ctx.output_path("hits.cxi", format="cxi"), shape=src.shape,
                                  max_peaks=params.max_peaks, dtype=src.dtype, mask_bad=~job.lay.valid,
                                  energy_path=energy_path, clen_path=clen_path)
        try:
            for b0 in range(job.start, job.stop, params.block_frames):
                b1 = min(b0 + params.block_frames, job.stop)
                ctx.progress((b0 - job.start) / max(job.stop - job.start, 1), "peakfinder8", f"frames {b0}..{b1 - 1}")
                frames = src.read(b0, b1)
                results = find_hits(
                    frames, job.lay, job.maps, first_index=b0, photon_energy_ev=src.photon_energy_ev[b0:b1],
                    clen_m=src.clen_m[b0:b1], threshold=params.threshold, min_snr=params.min_snr,
                    min_pix_count=params.min_pix_count, max_pix_count=params.max_pix_count,
                    local_bg_radius=params.local_bg_radius, min_peaks=params.min_peaks,
                    max_peaks=params.max_hit_peaks, max_n_peaks=params.max_peaks, powder=powder)
                for r in results:
                    name, event = src.events[r.index]
                    rows.append({"frame": r.index, "file": name, "event": event, "n_peaks": len(r.peaks),
                                 "hit": int(r.hit), "resolution_angstrom": round(r.resolution_angstrom, 4),
                                 "photon_energy_ev": round(r.photon_energy_ev, 4)})
                if writer is not None:
                    before = writer.count
                    writer.add(frames, results, b0, src.clen_m[b0:b1])
                    lst.extend(f"hits.cxi //{i}" for i in range(before, writer.count))
        finally:
            if writer is not None:
                writer.close()
        write_frames_csv(ctx.output_path("frames.csv", format="csv", role="table"), rows)
        if writer is not None:
            ctx.output_path("hits.lst", format="lst", role="table").write_text("\n".join(lst) + ("\n" if lst else ""))
            (ctx.output_path("hits.geom", format="geom", role="result")
             .write_text(job.geometry_text.rstrip("\n") + "\n\n; added by panreduce: peaks from hits.cxi\n"
                         "peak_list = /entry_1/result_1\npeak_list_type = cxi\n"))
        _write_powder(ctx.output_path("powder.h5", format="hdf5"), powder, job.lay.valid)
        self._previews(rows, powder, job.maps, job.lay.valid, params, ctx)
        n_hits = sum(r["hit"] for r in rows)
        return {"mode": "hit_finding", "n_frames": len(rows), "n_hits": n_hits,
                "hit_rate": n_hits / len(rows) if rows else 0.0,
                "first_frame": job.start, "last_frame": job.stop - 1,
                "mean_peaks_per_hit": float(np.mean([r["n_peaks"] for r in rows if r["hit"]])) if n_hits else 0.0}

    def _previews(self, rows, powder, maps, valid, params, ctx) -> None:
        frame = np.array([r["frame"] for r in rows])
        hits = np.array([r["hit"] for r in rows])
        plot_hit_rate(ctx.output_path("hit_rate.png", format="png", role="preview"), frame,
                      rolling_hit_rate(hits, params.hit_rate_window), np.array([r["n_peaks"] for r in rows]),
                      params.min_peaks)
        plot_powder(ctx.output_path("powder_max.png", format="png", role="preview"), powder, maps, valid, kind="max")
        plot_powder(ctx.output_path("powder_sum.png", format="png", role="preview"), powder, maps, valid, kind="sum")

    def _merge_stream(self, job: MergeJob, params: SerialParameters, ctx: Context) -> dict[str, Any]:
        crystals = job.stream.crystals
        try:
            point_group_ops(params.point_group)
            centering = job.stream.cell.centering if job.stream.cell else crystals[0].centering
            sg = (gemmi.find_spacegroup_by_name(params.space_group) if params.space_group
                  else space_group_for(params.point_group, centering))
        except MergeError as exc:
            raise InvalidParameters([FieldViolation("point_group", str(exc))]) from exc
        if sg is None:
            raise InvalidParameters([FieldViolation("space_group", f"unknown space group {params.space_group!r}")])
        cell_params = (job.stream.cell.parameters if job.stream.cell
                       else tuple(np.mean([c.cell for c in crystals], axis=0)))
        cell = gemmi.UnitCell(*cell_params)

        def observations(sel):
            hkl = np.concatenate([c.hkl for c in sel]) if sel else np.zeros((0, 3), np.int32)
            inten = np.concatenate([c.intensity for c in sel]) if sel else np.zeros(0)
            if params.d_min_angstrom is not None and len(hkl):
                keep = np.sqrt(cell.calculate_1_d2_array(hkl.astype(np.int32))) <= 1 / params.d_min_angstrom
                hkl, inten = hkl[keep], inten[keep]
            return hkl, inten

        ctx.progress(0.2, "merge", f"merging {len(crystals)} crystal(s) in {params.point_group}")
        hkl, inten = observations(crystals)
        kw = {"point_group": params.point_group, "min_measurements": params.min_measurements}
        merged = merge_intensities(hkl, inten, **kw)
        laue = merge_intensities(hkl, inten, friedel_merge=True, **kw)
        half1 = merge_intensities(*observations(crystals[0::2]), **kw)
        half2 = merge_intensities(*observations(crystals[1::2]), **kw)
        ctx.progress(0.6, "figures of merit", "")
        rows = figures_of_merit(merged, half1, half2, cell=cell, space_group=sg, n_shells=params.n_shells,
                                d_min_angstrom=params.d_min_angstrom)
        if not len(merged.intensity):
            raise InvalidInput(job.names[0], f"no reflection measured {params.min_measurements} times or more")
        write_mtz(ctx.output_path("merged.mtz", format="mtz"), merged, laue, cell=cell, space_group=sg,
                  title=f"panreduce serial_crystallography {VERSION}: {' '.join(job.inputs)}"[:70])
        _write_hkl(ctx.output_path("merged.hkl", format="hkl"), merged, params.point_group)
        with open(ctx.output_path("foms.csv", format="csv", role="table"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        plot_foms(ctx.output_path("foms.png", format="png", role="preview"), rows)
        overall = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in rows[-1].items()}
        return {"mode": "merge", "n_chunks": len(job.stream.chunks), "n_crystals": len(crystals),
                "n_observations": int(len(inten)), "n_unique": int(len(merged.intensity)),
                "point_group": params.point_group, "space_group": sg.hm,
                "cell": [round(float(v), 4) for v in cell_params], "overall": overall}

    # -- shards ------------------------------------------------------------------------
    def merge(self, inputs: Inputs, params: SerialParameters, ctx: Context) -> Mapping[str, Any]:
        """Combine frame-range shards: the tables and hits.cxi files are concatenated in
        frame order, the powders added, the previews drawn anew; a stream job (done by the
        first shard) is kept as it is."""
        folders = sorted({f.path.parent for f in inputs.files if f.path.name == "summary.json"})
        parts = [(json.loads((d / "summary.json").read_text()), d) for d in folders]
        parts = [(s, d) for s, d in parts if not s.get("empty_shard")]
        if not parts:
            raise InvalidRequest("the shards hold no results to combine")
        if any(s.get("mode") == "merge" for s, _ in parts):
            summary, folder = next((s, d) for s, d in parts if s.get("mode") == "merge")
            for f in folder.iterdir():
                if f.name not in ("summary.json", "provenance.json"):
                    fmt = f.suffix.lstrip(".")
                    role = "preview" if fmt == "png" else "table" if fmt == "csv" else "result"
                    shutil.copyfile(f, ctx.output_path(f.name, format=fmt, role=role))
            return summary
        parts.sort(key=lambda p: p[0]["first_frame"])
        rows: list[dict] = []
        for _, d in parts:
            with open(d / "frames.csv") as fh:
                rows.extend(r for r in csv.DictReader(line for line in fh if not line.startswith("#")))
        for r in rows:
            for k in ("frame", "event", "n_peaks", "hit"):
                r[k] = int(r[k])
        ctx.progress(0.2, "combine", f"{len(rows)} frames from {len(parts)} shard(s)")
        write_frames_csv(ctx.output_path("frames.csv", format="csv", role="table"), rows)
        powder = _read_powder(parts[0][1] / "powder.h5")
        for _, d in parts[1:]:
            powder.combine(_read_powder(d / "powder.h5"))
        with h5py.File(parts[0][1] / "powder.h5", "r") as f:
            valid = f["valid"][()].astype(bool)
        _write_powder(ctx.output_path("powder.h5", format="hdf5"), powder, valid)
        if all((d / "hits.cxi").exists() for _, d in parts):
            n = _concat_cxi([d / "hits.cxi" for _, d in parts], ctx.output_path("hits.cxi", format="cxi"))
            ctx.output_path("hits.lst", format="lst", role="table").write_text(
                "".join(f"hits.cxi //{i}\n" for i in range(n)))
            shutil.copyfile(parts[0][1] / "hits.geom", ctx.output_path("hits.geom", format="geom"))
        maps_src = parts[0][1] / "hits.geom"
        if maps_src.exists():
            det = parse_geometry(maps_src.read_text())
            maps = pixel_maps(det)
            self._previews(rows, powder, maps, valid, params, ctx)
        n_hits = sum(r["hit"] for r in rows)
        return {"mode": "hit_finding", "n_frames": len(rows), "n_hits": n_hits,
                "hit_rate": n_hits / len(rows) if rows else 0.0, "first_frame": parts[0][0]["first_frame"],
                "last_frame": parts[-1][0]["last_frame"], "shards": len(parts),
                "mean_peaks_per_hit": float(np.mean([r["n_peaks"] for r in rows if r["hit"]])) if n_hits else 0.0}


def _write_powder(path, powder: Powder, valid: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("sum", data=powder.total, compression="gzip")
        entry.create_dataset("max", data=np.where(np.isfinite(powder.maximum), powder.maximum, 0), compression="gzip")
        entry.create_dataset("n_hits", data=powder.n)
        f["valid"] = valid.astype(np.uint8)


def _read_powder(path) -> Powder:
    with h5py.File(path, "r") as f:
        mx = f["entry/max"][()].astype(np.float32)
        valid = f["valid"][()].astype(bool)
        n = int(f["entry/n_hits"][()])
        return Powder(f["entry/sum"][()], np.where(valid & (n > 0), mx, -np.inf).astype(np.float32), n)


def _concat_cxi(parts, out_path) -> int:
    """hits.cxi files one after the other (every dataset of entry_1 with a frame axis)."""
    with h5py.File(parts[0], "r") as first:
        names = []
        first.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        staged = [n for n in names if not n.startswith("entry_1/provenance")]
        n_hits = first["entry_1/result_1/nPeaks"].shape[0]
        stacked = [n for n in staged if first[n].ndim >= 1 and first[n].shape[0] == n_hits
                   and n != "entry_1/data_1/mask"]
    total = 0
    with h5py.File(out_path, "w") as out:
        for i, p in enumerate(parts):
            with h5py.File(p, "r") as src:
                k = src["entry_1/result_1/nPeaks"].shape[0]
                if i == 0:
                    for n in staged:
                        if n in stacked:
                            d = src[n]
                            out.create_dataset(n, shape=(0, *d.shape[1:]), maxshape=(None, *d.shape[1:]),
                                               dtype=d.dtype, chunks=(1, *d.shape[1:]) if d.ndim == 3 else True)
                            out[n].attrs.update(dict(d.attrs))
                        else:
                            src.copy(src[n], out, name=n)
                    for g in ("entry_1", "entry_1/data_1"):
                        out[g].attrs.update({a: v for a, v in src[g].attrs.items()})
                    out.attrs.update(dict(src.attrs))
                for n in stacked:
                    out[n].resize(total + k, axis=0)
                    for j in range(0, k, 16):
                        out[n][total + j:total + min(j + 16, k)] = src[n][j:min(j + 16, k)]
                total += k
    return total


def _write_hkl(path, merged, point_group: str) -> None:
    """CrystFEL reflection list (process_hkl's output format)."""
    lines = ["CrystFEL reflection list version 2.0", f"Symmetry: {point_group}",
             "   h    k    l          I    phase   sigma(I)   nmeas"]
    for (h, k, l), i, s, n in zip(merged.hkl.tolist(), merged.intensity, merged.sigma,  # noqa: E741
                                  merged.n_measurements, strict=True):
        lines.append(f"{h:4d} {k:4d} {l:4d} {i:10.2f} {'-':>8s} {s:10.2f} {n:7d}")
    lines.append("End of reflections")
    path.write_text("\n".join(lines) + "\n")
