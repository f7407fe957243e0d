"""The serial crystallography job's parts and outputs: what a block of frames (or stream
files) becomes, and the writers that render one part or a combined one — the per-frame
table, hits.cxi with its event list and geometry, the powder, the previews, indexed.stream,
and the merge (merged.mtz, merged.hkl, foms.csv/png). ``out(name, format=, role=)`` is the
kit's output-path callback (the job's ``ctx.output_path``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from panreduce.errors import FieldViolation, InvalidInput, InvalidParameters
from panreduce.kit.parts import Attachment
from panreduce_serial_crystallography import pipeline
from panreduce_serial_crystallography.export import (
    concat_cxi,
    write_foms_csv,
    write_hits_geometry,
    write_hkl,
    write_powder,
)
from panreduce_serial_crystallography.geometry import parse_geometry, pixel_maps
from panreduce_serial_crystallography.hits import Powder, rolling_hit_rate
from panreduce_serial_crystallography.merge import MergeError, write_mtz
from panreduce_serial_crystallography.output import plot_foms, plot_hit_rate, plot_powder, write_frames_csv
from panreduce_serial_crystallography.params import SerialParameters
from panreduce_serial_crystallography.stream import parse_cell_file, read_stream_file, stream_header

Output = Callable[..., Path]
Progress = Callable[[float, str], None]


@dataclass
class HitPart:
    rows: list[dict[str, Any]]
    powder: Powder
    valid: np.ndarray  # pixels peakfinder8 uses
    hits: list[Attachment]  # the blocks' hits-only CXI files (none without export_hits)
    geometry_text: str
    first_frame: int
    last_frame: int
    chunks: list[Attachment] = field(default_factory=list)  # the blocks' stream chunks (with indexing)
    cell_text: str = ""  # the target cell (CrystFEL cell file) when indexing


@dataclass
class StreamPart:
    crystals: pipeline.Crystals
    names: list[str]  # the stream files
    inputs: list[str]  # "<name> sha256=<hex>", for the MTZ title


@dataclass
class SerialPart:
    hits: HitPart | None = None
    stream: StreamPart | None = None


def write_hits(
    part: HitPart, params: SerialParameters, out: Output, *, version: str, progress: Progress
) -> dict[str, Any]:
    """frames.csv, hits.cxi/.lst/.geom (with export_hits), powder.h5 and the PNGs; with indexing
    the stream and its merge (:func:`write_indexed`). Returns the summary."""
    rows = part.rows
    write_frames_csv(out("frames.csv", format="csv", role="table"), rows)
    if params.export_hits:
        n = concat_cxi([a.path for a in part.hits], out("hits.cxi", format="cxi"))
        out("hits.lst", format="lst", role="table").write_text("".join(f"hits.cxi //{i}\n" for i in range(n)))
        write_hits_geometry(out("hits.geom", format="geom", role="result"), part.geometry_text)
    write_powder(out("powder.h5", format="hdf5"), part.powder, part.valid)
    maps = pixel_maps(parse_geometry(part.geometry_text))
    frame = np.array([r["frame"] for r in rows])
    hits = np.array([r["hit"] for r in rows])
    plot_hit_rate(
        out("hit_rate.png", format="png", role="preview"),
        frame,
        rolling_hit_rate(hits, params.hit_rate_window),
        np.array([r["n_peaks"] for r in rows]),
        params.min_peaks,
    )
    for kind in ("max", "sum"):
        plot_powder(out(f"powder_{kind}.png", format="png", role="preview"), part.powder, maps, part.valid, kind=kind)
    n_hits = sum(r["hit"] for r in rows)
    summary: dict[str, Any] = {}
    if params.indexing != "none":
        summary = write_indexed(part, params, out, version=version, progress=progress)
    return {
        **summary,
        "mode": "hit_finding" if params.indexing == "none" else "indexing",
        "n_frames": len(rows),
        "n_hits": n_hits,
        "hit_rate": n_hits / len(rows) if rows else 0.0,
        "first_frame": part.first_frame,
        "last_frame": part.last_frame,
        "mean_peaks_per_hit": float(np.mean([r["n_peaks"] for r in rows if r["hit"]])) if n_hits else 0.0,
    }


def write_indexed(
    part: HitPart, params: SerialParameters, out: Output, *, version: str, progress: Progress
) -> dict[str, Any]:
    """indexed.stream (header + every block's chunks, in frame order), read back and
    merged to merged.mtz when it holds crystals."""
    path = out("indexed.stream", format="stream", role="result")
    with open(path, "w") as fh_out:
        fh_out.write(
            stream_header(
                geometry_text=part.geometry_text,
                cell=parse_cell_file(part.cell_text),
                command=f"panreduce serial_crystallography {version} --indexing={params.indexing} "
                f"--int-radius={params.int_radius}",
            )
        )
        for a in part.chunks:
            with open(a.path) as fh:
                while block := fh.read(1 << 20):
                    fh_out.write(block)
    stream = StreamPart(pipeline.Crystals.of(read_stream_file(path)), ["indexed.stream"], ["indexed.stream"])
    n_indexed = sum(int(r.get("indexed", 0)) for r in part.rows)
    n_hits = sum(r["hit"] for r in part.rows)
    info: dict[str, Any] = {
        "n_indexed": n_indexed,
        "indexing_rate": n_indexed / n_hits if n_hits else 0.0,
        "n_reflections": len(stream.crystals.intensity),
    }
    if stream.crystals.n:
        try:
            info["merge"] = write_merge(stream, params, out, version=version, progress=progress)
        except InvalidInput as exc:  # too few crystals for a merge: the stream is still the result
            info["merge"] = {"skipped": exc.problem}
    return info


def write_merge(
    part: StreamPart, params: SerialParameters, out: Output, *, version: str, progress: Progress
) -> dict[str, Any]:
    """merged.mtz, merged.hkl, foms.csv and foms.png of the crystals; returns the summary."""
    xs = part.crystals
    if not xs.n:
        raise InvalidInput(part.names[0], "the stream holds no indexed crystals")
    try:
        res = pipeline.merge_crystals(
            xs,
            point_group=params.point_group,
            space_group=params.space_group,
            min_measurements=params.min_measurements,
            n_shells=params.n_shells,
            d_min_angstrom=params.d_min_angstrom,
            progress=progress,
            scale=params.scale,
            iterations=params.iterations,
            bscale=not params.no_bscale,
        )
    except MergeError as exc:
        raise InvalidParameters([FieldViolation("point_group", str(exc))]) from exc
    except LookupError:
        raise InvalidParameters(
            [FieldViolation("space_group", f"unknown space group {params.space_group!r}")]
        ) from None
    if not len(res.merged.intensity):
        raise InvalidInput(part.names[0], f"no reflection measured {params.min_measurements} times or more")
    write_mtz(
        out("merged.mtz", format="mtz"),
        res.merged,
        res.laue,
        cell=res.cell,
        space_group=res.space_group,
        title=f"panreduce serial_crystallography {version}: {' '.join(part.inputs)}"[:70],
    )
    write_hkl(out("merged.hkl", format="hkl"), res.merged, params.point_group)
    write_foms_csv(out("foms.csv", format="csv", role="table"), res.foms)
    plot_foms(out("foms.png", format="png", role="preview"), res.foms)
    overall = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in res.foms[-1].items()}
    return {
        "mode": "merge",
        "n_chunks": xs.n_chunks,
        "n_crystals": xs.n,
        "n_observations": res.n_observations,
        "n_unique": len(res.merged.intensity),
        "point_group": params.point_group,
        "space_group": res.space_group.hm,
        "cell": [round(float(v), 4) for v in res.cell_parameters],
        "overall": overall,
        **({"scaling": _scaling_summary(res.scaling)} if res.scaling is not None else {}),
    }


def _scaling_summary(sc: Any) -> dict[str, Any]:
    g, b = sc.g[sc.ok], sc.b_angstrom2[sc.ok]
    return {
        "n_rejected": sc.n_rejected,
        "g_range": [round(float(g.min()), 4), round(float(g.max()), 4)] if g.size else None,
        "b_range_angstrom2": [round(float(b.min()), 3), round(float(b.max()), 3)] if b.size else None,
    }
