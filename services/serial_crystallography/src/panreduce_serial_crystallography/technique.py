"""The serial crystallography technique: glue between the kit and the algorithms.

Two kinds of job, by their inputs: detector frames with a CrystFEL geometry → hit finding
(peakfinder8), the per-frame table, hits.cxi + hits.lst and the previews; CrystFEL
streams → merging to merged.mtz with the figures of merit. Both follow the kit's shard
contract: frames (or stream files) are the units; a block's part is its table rows,
powder and hits file (or its crystals); the writers render one part or a combined one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from panreduce_serial_crystallography.frames import FrameError, FrameSource, open_frames
from panreduce_serial_crystallography.geometry import Detector, GeometryError, parse_geometry, pixel_maps
from panreduce_serial_crystallography.hits import Powder, rolling_hit_rate
from panreduce_serial_crystallography.index import real_basis
from panreduce_serial_crystallography.integrate import parse_int_radius
from panreduce_serial_crystallography.merge import MergeError, write_mtz
from panreduce_serial_crystallography.output import plot_foms, plot_hit_rate, plot_powder, write_frames_csv
from panreduce_serial_crystallography.params import SerialParameters
from panreduce_serial_crystallography.stream import (
    StreamError,
    TargetCell,
    cell_file_text,
    parse_cell_file,
    read_stream_file,
    stream_header,
)

VERSION = "0.1.0"
FRAME_SUFFIXES = (".cxi", ".h5", ".hdf5", ".nxs", ".nx5", ".cbf")
MAX_GEOM_BYTES = 10_000_000
MAX_CELL_BYTES = 100_000


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
        index = self._index_setup(inputs, params, detector, setup.source) if params.indexing != "none" else None
        chunks = ctx.work_dir / f"chunks-{start:08d}.stream" if index is not None else None
        found = pipeline.find_hits_in(
            setup,
            start,
            stop,
            params,
            cxi=cxi,
            progress=lambda f, msg: ctx.progress(f, "peakfinder8", msg),
            index=index,
            stream=chunks,
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
                [Attachment(chunks)] if chunks is not None else [],
                cell_file_text(index.cell) if index is not None else "",
            )
        )

    def _cell(self, inputs: Inputs, params: SerialParameters) -> TargetCell:
        """The known cell: the ``cell`` parameter's six numbers, or a CrystFEL cell file."""
        spec = params.cell
        if spec is not None and spec.count(",") == 5:
            values = tuple(float(v) for v in spec.split(","))
            cell = TargetCell(*values, lattice_type=_lattice_type(values), centering=params.centering or "P")
        else:
            files = [f for f in inputs.files if f.path.suffix == ".cell"]
            if spec is not None:
                g = inputs.find(spec)
                if g is None or g.path.suffix != ".cell":
                    raise InvalidParameters([FieldViolation("cell", f"no input .cell file named {spec!r}")])
            elif len(files) == 1:
                g = files[0]
            else:
                raise InvalidParameters(
                    [FieldViolation("cell", "indexing needs the cell: 'a,b,c,al,be,ga' or one .cell input")]
                )
            if g.size > MAX_CELL_BYTES:
                raise InvalidInput(g.name, f"a cell file of {g.size} bytes is too large")
            try:
                cell = parse_cell_file(g.path.read_text())
            except (StreamError, UnicodeDecodeError) as exc:
                raise InvalidInput(g.name, str(exc)) from exc
            if params.centering is not None:
                cell = TargetCell(*cell.parameters, cell.lattice_type, params.centering, cell.unique_axis)
        if cell.centering not in ("P", "A", "B", "C", "I", "F", "R", "H"):
            raise InvalidParameters([FieldViolation("centering", f"unknown centering {cell.centering!r}")])
        try:
            real_basis(cell.parameters)
        except ValueError as exc:
            raise InvalidParameters([FieldViolation("cell", str(exc))]) from None
        return cell

    def _index_setup(
        self, inputs: Inputs, params: SerialParameters, detector: Detector, source: FrameSource
    ) -> pipeline.IndexSetup:
        try:
            radii = parse_int_radius(params.int_radius)
        except ValueError as exc:
            raise InvalidParameters([FieldViolation("int_radius", str(exc))]) from None
        panel = detector.panels[0]
        energy = float(np.mean(source.photon_energy_ev))
        gain = panel.adu_per_photon or (panel.adu_per_ev * energy if panel.adu_per_ev else None) or 1.0
        return pipeline.IndexSetup(
            cell=self._cell(inputs, params),
            radii=radii,
            profile_radius=params.fix_profile_radius * 1e-10 if params.fix_profile_radius else None,
            min_fraction=params.min_indexed_fraction,
            adu_per_photon=float(gain) if np.isfinite(gain) and gain > 0 else 1.0,
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
                [a for h in hs for a in h.chunks],
                hs[0].cell_text,
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
        summary: dict[str, Any] = {}
        if params.indexing != "none":
            summary = self._write_indexed(part, params, ctx)
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

    def _write_indexed(self, part: HitPart, params: SerialParameters, ctx: Context) -> dict[str, Any]:
        """indexed.stream (header + every block's chunks, in frame order), read back and
        merged to merged.mtz when it holds crystals."""
        path = ctx.output_path("indexed.stream", format="stream", role="result")
        with open(path, "w") as out:
            out.write(
                stream_header(
                    geometry_text=part.geometry_text,
                    cell=parse_cell_file(part.cell_text),
                    command=f"panreduce serial_crystallography {VERSION} --indexing={params.indexing} "
                    f"--int-radius={params.int_radius}",
                )
            )
            for a in part.chunks:
                with open(a.path) as fh:
                    while block := fh.read(1 << 20):
                        out.write(block)
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
                info["merge"] = self._write_merge(stream, params, ctx)
            except InvalidInput as exc:  # too few crystals for a merge: the stream is still the result
                info["merge"] = {"skipped": exc.problem}
        return info

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
            **({"scaling": _scaling_summary(out.scaling)} if out.scaling is not None else {}),
        }


def _lattice_type(cell: tuple[float, ...]) -> str:
    """The lattice type a cell's metric suggests (for the stream's cell; CrystFEL's names)."""
    a, b, c, al, be, ga = cell
    right = [abs(v - 90) < 1e-3 for v in (al, be, ga)]

    def eq(x: float, y: float) -> bool:
        return abs(x - y) < 1e-3 * max(x, y)

    if all(right):
        if eq(a, b) and eq(b, c):
            return "cubic"
        return "tetragonal" if eq(a, b) else "orthorhombic"
    if right[0] and right[1] and abs(ga - 120) < 1e-3 and eq(a, b):
        return "hexagonal"
    if eq(a, b) and eq(b, c) and eq(al, be) and eq(be, ga):
        return "rhombohedral"
    if sum(right) == 2:
        return "monoclinic"
    return "triclinic"


def _scaling_summary(sc: Any) -> dict[str, Any]:
    g, b = sc.g[sc.ok], sc.b_angstrom2[sc.ok]
    return {
        "n_rejected": sc.n_rejected,
        "g_range": [round(float(g.min()), 4), round(float(g.max()), 4)] if g.size else None,
        "b_range_angstrom2": [round(float(b.min()), 3), round(float(b.max()), 3)] if b.size else None,
    }


def _streams(inputs: Inputs) -> list[StagedFile]:
    return [f for f in inputs.files if f.path.suffix == ".stream"]
