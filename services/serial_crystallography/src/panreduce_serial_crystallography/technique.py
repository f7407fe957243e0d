"""The serial crystallography technique: glue between the kit and the algorithms.

Two kinds of job, by their inputs: detector frames with a CrystFEL geometry → hit finding
(peakfinder8), the per-frame table, hits.cxi + hits.lst and the previews; CrystFEL
streams → merging to merged.mtz with the figures of merit. Both follow the kit's shard
contract: frames (or stream files) are the units; a block's part is its table rows,
powder and hits file (or its crystals); the writers render one part or a combined one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from panreduce.errors import FieldViolation, InvalidInput, InvalidParameters, InvalidRequest
from panreduce.kit import Context, Inputs, StagedFile
from panreduce.kit import Technique as _Technique
from panreduce.kit.parts import Attachment
from panreduce_serial_crystallography import pipeline
from panreduce_serial_crystallography.export import (
    concat_cxi,
    write_foms_csv,
    write_hits_geometry,
    write_hkl,
    write_powder,
)
from panreduce_serial_crystallography.frames import FrameError, open_frames
from panreduce_serial_crystallography.geometry import Detector, GeometryError, parse_geometry, pixel_maps
from panreduce_serial_crystallography.hits import Powder, rolling_hit_rate
from panreduce_serial_crystallography.merge import MergeError, write_mtz
from panreduce_serial_crystallography.output import plot_foms, plot_hit_rate, plot_powder, write_frames_csv
from panreduce_serial_crystallography.params import SerialParameters
from panreduce_serial_crystallography.stream import read_stream_file

VERSION = "0.1.0"
FRAME_SUFFIXES = (".cxi", ".h5", ".hdf5", ".nxs", ".nx5", ".cbf")
MAX_GEOM_BYTES = 10_000_000


@dataclass(frozen=True)
class Unit:
    kind: str  # "frame" (an index over every frame of the inputs) or "stream" (a stream file)
    index: int


@dataclass
class HitPart:
    rows: list[dict[str, Any]]
    powder: Powder
    valid: np.ndarray  # pixels peakfinder8 uses
    hits: list[Attachment]  # the blocks' hits-only CXI files (none without export_hits)
    geometry_text: str
    first_frame: int
    last_frame: int


@dataclass
class StreamPart:
    crystals: pipeline.Crystals
    names: list[str]  # the stream files
    inputs: list[str]  # "<name> sha256=<hex>", for the MTZ title


@dataclass
class SerialPart:
    hits: HitPart | None = None
    stream: StreamPart | None = None


class Technique(_Technique[SerialParameters, SerialPart]):
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
    Part = SerialPart
    input_kinds = ("hdf5/cxi-frames", "hdf5/eiger-master", "cbf", "crystfel/geom", "crystfel/stream")
    output_formats = ("cxi", "csv", "png", "mtz", "hdf5")
    shardable = True
    shard_unit = "frame"

    # -- units --------------------------------------------------------------------------
    def units(self, inputs: Inputs, params: SerialParameters) -> list[Unit]:
        streams = _streams(inputs)
        if streams:
            return [Unit("stream", i) for i in range(len(streams))]
        detector, _ = self._geometry(inputs, params)
        source = self._frames(inputs, params, detector)
        return [Unit("frame", i) for i in range(source.n_frames)]

    def _geometry(self, inputs: Inputs, params: SerialParameters) -> tuple[Detector, str]:
        geoms = [f for f in inputs.files if f.path.suffix == ".geom"]
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
            return parse_geometry(text), text
        except (GeometryError, UnicodeDecodeError) as exc:
            raise InvalidInput(g.name, str(exc)) from exc

    @staticmethod
    def _frames(inputs: Inputs, params: SerialParameters, detector: Detector):
        frame_files = [f for f in inputs.files if f.path.suffix.lower() in FRAME_SUFFIXES]
        if not frame_files:
            raise InvalidRequest("no frame files (.cxi, .h5, .nxs, .cbf) among the inputs")
        try:
            return open_frames([(f.path, f.name) for f in frame_files], detector, data_path=params.data_path)
        except FrameError as exc:
            raise InvalidInput(exc.source, exc.problem) from exc

    # -- a block --------------------------------------------------------------------------
    def reduce_block(self, block: Sequence[Unit], inputs: Inputs, params: SerialParameters, ctx: Context) -> SerialPart:
        if block[0].kind == "stream":
            return SerialPart(stream=self._read_streams([_streams(inputs)[u.index] for u in block], ctx))
        detector, text = self._geometry(inputs, params)
        setup = pipeline.hit_setup(
            detector, self._frames(inputs, params, detector), min_res=params.min_res, max_res=params.max_res
        )
        start, stop = block[0].index, block[-1].index + 1
        ctx.progress(0.0, "peakfinder8", f"{setup.source.n_frames} frame(s); this block: {start}..{stop - 1}")
        cxi = ctx.work_dir / f"hits-{start:08d}.cxi" if params.export_hits else None
        found = pipeline.find_hits_in(
            setup, start, stop, params, cxi=cxi, progress=lambda f, msg: ctx.progress(f, "peakfinder8", msg)
        )
        return SerialPart(
            hits=HitPart(
                found.rows,
                found.powder,
                setup.lay.valid,
                [Attachment(cxi)] if cxi is not None else [],
                text,
                start,
                stop - 1,
            )
        )

    @staticmethod
    def _read_streams(files: list[StagedFile], ctx: Context) -> StreamPart:
        parts = []
        for f in files:
            ctx.progress(0.1, "load", f"reading {f.name}")
            parts.append(pipeline.Crystals.of(read_stream_file(f.path, name=f.name)))
        return StreamPart(
            pipeline.Crystals.concatenate(parts),
            [f.name for f in files],
            [f"{f.name} sha256={f.sha256}" for f in files],
        )

    def combine(self, parts: Sequence[SerialPart], params: SerialParameters) -> SerialPart:
        if parts[0].stream is not None:
            ss = [p.stream for p in parts if p.stream is not None]
            return SerialPart(
                stream=StreamPart(
                    pipeline.Crystals.concatenate([s.crystals for s in ss]),
                    [n for s in ss for n in s.names],
                    [i for s in ss for i in s.inputs],
                )
            )
        hs = [p.hits for p in parts if p.hits is not None]
        return SerialPart(
            hits=HitPart(
                [r for h in hs for r in h.rows],
                pipeline.combine_powders([h.powder for h in hs]),
                hs[0].valid,
                [a for h in hs for a in h.hits],
                hs[0].geometry_text,
                hs[0].first_frame,
                hs[-1].last_frame,
            )
        )

    # -- outputs --------------------------------------------------------------------------
    def write(self, result: SerialPart, params: SerialParameters, ctx: Context) -> Mapping[str, Any]:
        if result.stream is not None:
            return self._write_merge(result.stream, params, ctx)
        assert result.hits is not None
        return self._write_hits(result.hits, params, ctx)

    def _write_hits(self, part: HitPart, params: SerialParameters, ctx: Context) -> dict[str, Any]:
        rows = part.rows
        write_frames_csv(ctx.output_path("frames.csv", format="csv", role="table"), rows)
        if params.export_hits:
            n = concat_cxi([a.path for a in part.hits], ctx.output_path("hits.cxi", format="cxi"))
            ctx.output_path("hits.lst", format="lst", role="table").write_text(
                "".join(f"hits.cxi //{i}\n" for i in range(n))
            )
            write_hits_geometry(ctx.output_path("hits.geom", format="geom", role="result"), part.geometry_text)
        write_powder(ctx.output_path("powder.h5", format="hdf5"), part.powder, part.valid)
        maps = pixel_maps(parse_geometry(part.geometry_text))
        frame = np.array([r["frame"] for r in rows])
        hits = np.array([r["hit"] for r in rows])
        plot_hit_rate(
            ctx.output_path("hit_rate.png", format="png", role="preview"),
            frame,
            rolling_hit_rate(hits, params.hit_rate_window),
            np.array([r["n_peaks"] for r in rows]),
            params.min_peaks,
        )
        for kind in ("max", "sum"):
            plot_powder(
                ctx.output_path(f"powder_{kind}.png", format="png", role="preview"),
                part.powder,
                maps,
                part.valid,
                kind=kind,
            )
        n_hits = sum(r["hit"] for r in rows)
        return {
            "mode": "hit_finding",
            "n_frames": len(rows),
            "n_hits": n_hits,
            "hit_rate": n_hits / len(rows) if rows else 0.0,
            "first_frame": part.first_frame,
            "last_frame": part.last_frame,
            "mean_peaks_per_hit": float(np.mean([r["n_peaks"] for r in rows if r["hit"]])) if n_hits else 0.0,
        }

    def _write_merge(self, part: StreamPart, params: SerialParameters, ctx: Context) -> dict[str, Any]:
        xs = part.crystals
        if not xs.n:
            raise InvalidInput(part.names[0], "the stream holds no indexed crystals")
        try:
            out = pipeline.merge_crystals(
                xs,
                point_group=params.point_group,
                space_group=params.space_group,
                min_measurements=params.min_measurements,
                n_shells=params.n_shells,
                d_min_angstrom=params.d_min_angstrom,
                progress=lambda f, msg: ctx.progress(f, "merge", msg),
            )
        except MergeError as exc:
            raise InvalidParameters([FieldViolation("point_group", str(exc))]) from exc
        except LookupError:
            raise InvalidParameters(
                [FieldViolation("space_group", f"unknown space group {params.space_group!r}")]
            ) from None
        if not len(out.merged.intensity):
            raise InvalidInput(part.names[0], f"no reflection measured {params.min_measurements} times or more")
        write_mtz(
            ctx.output_path("merged.mtz", format="mtz"),
            out.merged,
            out.laue,
            cell=out.cell,
            space_group=out.space_group,
            title=f"panreduce serial_crystallography {VERSION}: {' '.join(part.inputs)}"[:70],
        )
        write_hkl(ctx.output_path("merged.hkl", format="hkl"), out.merged, params.point_group)
        write_foms_csv(ctx.output_path("foms.csv", format="csv", role="table"), out.foms)
        plot_foms(ctx.output_path("foms.png", format="png", role="preview"), out.foms)
        overall = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.foms[-1].items()}
        return {
            "mode": "merge",
            "n_chunks": xs.n_chunks,
            "n_crystals": xs.n,
            "n_observations": out.n_observations,
            "n_unique": len(out.merged.intensity),
            "point_group": params.point_group,
            "space_group": out.space_group.hm,
            "cell": [round(float(v), 4) for v in out.cell_parameters],
            "overall": overall,
        }


def _streams(inputs: Inputs) -> list[StagedFile]:
    return [f for f in inputs.files if f.path.suffix == ".stream"]
