"""Merging the shards of a sharded reconstruction (one slice range each) into one
NXtomoproc volume: the slabs are stacked along z in row order, a uint16 volume is
re-quantised on the common value range, previews are kept and tables concatenated."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from panreduce import errors
from panreduce.kit import Context

VOLUME = "entry/data/data"


def _first_row(path: Path) -> float:
    with h5py.File(path, "r") as f:
        return float(f["entry/data/z"][0])


def merge_shards(folders: list[Path], ctx: Context) -> dict:
    """Stack every shard's volume (files ``tomography_rows*.nxs``) into ``tomography.nxs``."""
    parts = sorted((p for folder in folders for p in folder.glob("tomography_rows*.nxs")), key=_first_row)
    if not parts:
        raise errors.InvalidRequest("the shards hold no reconstructed slices to merge")
    summaries = [json.loads((p.parent / "summary.json").read_text()) for p in parts
                 if (p.parent / "summary.json").is_file()]
    with h5py.File(parts[0], "r") as first:
        vol0 = first[VOLUME]
        four_d = vol0.ndim == 4
        z_axis = 1 if four_d else 0
        dtype = vol0.dtype
        shape = list(vol0.shape)
        chunks = vol0.chunks
    counts, ranges = [], []
    for p in parts:
        with h5py.File(p, "r") as f:
            v = f[VOLUME]
            if v.ndim != len(shape) or [s for i, s in enumerate(v.shape) if i != z_axis] != \
                    [s for i, s in enumerate(shape) if i != z_axis] or v.dtype != dtype:
                raise errors.InvalidInput(p.name, f"volume {v.shape} {v.dtype} does not stack with {parts[0].name}")
            counts.append(v.shape[z_axis])
            scale = float(v.attrs.get("scale_factor", 1.0))
            offset = float(v.attrs.get("add_offset", 0.0))
            ranges.append((offset, offset + 65535 * scale))
    shape[z_axis] = sum(counts)
    out_path = ctx.output_path("tomography.nxs", format="nexus")
    uint16 = dtype == np.uint16
    lo = min(r[0] for r in ranges)
    hi = max(r[1] for r in ranges)
    scale = (hi - lo) / 65535.0 if hi > lo else 1.0
    with h5py.File(out_path, "w") as out, h5py.File(parts[0], "r") as first:
        for name in first:  # root-level groups other than the entry (none, normally)
            if name != "entry":
                first.copy(first[name], out, name=name)
        entry = out.create_group("entry")
        for k, v in first["entry"].attrs.items():
            entry.attrs[k] = v
        for name, obj in first["entry"].items():
            if name not in ("data", "provenance"):
                first.copy(obj, entry, name=name)
        data = entry.create_group("data")
        for k, v in first["entry/data"].attrs.items():
            data.attrs[k] = v
        for name, obj in first["entry/data"].items():
            if name not in ("data", "z"):
                first.copy(obj, data, name=name)
        dset = data.create_dataset("data", shape=tuple(shape), dtype=dtype, chunks=chunks)
        for k, v in first[VOLUME].attrs.items():
            dset.attrs[k] = v
        if uint16:
            dset.attrs["scale_factor"] = scale
            dset.attrs["add_offset"] = lo
        z_values = []
        pos = 0
        for i, p in enumerate(parts):
            ctx.progress(i / len(parts), "merge", f"stacking {p.name}")
            with h5py.File(p, "r") as f:
                src = f[VOLUME]
                z_values.append(f["entry/data/z"][()])
                s_scale = float(src.attrs.get("scale_factor", 1.0))
                s_offset = float(src.attrs.get("add_offset", 0.0))
                for j in range(counts[i]):
                    plane = src[:, j] if four_d else src[j]
                    if uint16:  # back to values, then onto the common scale
                        values = s_offset + s_scale * plane.astype(np.float64)
                        plane = np.clip(np.rint((values - lo) / scale), 0, 65535).astype(np.uint16)
                    if four_d:
                        dset[:, pos + j] = plane
                    else:
                        dset[pos + j] = plane
            pos += counts[i]
        z = data.create_dataset("z", data=np.concatenate(z_values))
        for k, v in first["entry/data/z"].attrs.items():
            z.attrs[k] = v
    # previews as the shards made them; tables concatenated (one header)
    tables: dict[str, list[dict]] = {}
    for p in parts:
        for png in sorted(p.parent.glob("preview_row*.png")):
            shutil.copyfile(png, ctx.output_path(png.name, format="png", role="preview"))
        for table in sorted(p.parent.glob("*.csv")):
            lines = [line for line in table.read_text().splitlines() if not line.startswith("#")]
            tables.setdefault(table.name, []).extend(csv.DictReader(io.StringIO("\n".join(lines))))
    for name, rows in tables.items():
        if rows:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            ctx.output_path(name, format="csv", role="table").write_text(buf.getvalue())
    ctx.progress(1.0, "merge", f"stacked {shape[z_axis]} slices from {len(parts)} shards")
    z_all = np.concatenate(z_values)
    summary = dict(summaries[0]) if summaries else {}
    summary.pop("provenance", None)
    summary.update(
        slices=int(shape[z_axis]), rows=[int(z_all.min()), int(z_all.max())], shards=len(parts),
        value_range=[float(min(s.get("value_range", [lo])[0] for s in summaries)) if summaries else lo,
                     float(max(s.get("value_range", [hi, hi])[1] for s in summaries)) if summaries else hi],
        seconds=round(sum(float(s.get("seconds", 0)) for s in summaries), 3),
    )
    if "quantification" in summary:
        summary["quantification"] = [s.get("quantification") for s in summaries]
        summary["quantification_note"] = "per shard (slice range); the tables are concatenated"
    return summary
