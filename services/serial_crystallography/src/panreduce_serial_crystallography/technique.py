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
from panreduce_serial_crystallography import pipeline, results
from panreduce_serial_crystallography.frames import FrameError, FrameSource, open_frames
from panreduce_serial_crystallography.geometry import Detector, GeometryError, parse_geometry
from panreduce_serial_crystallography.index import real_basis
from panreduce_serial_crystallography.integrate import parse_int_radius
from panreduce_serial_crystallography.params import SerialParameters
from panreduce_serial_crystallography.results import HitPart, SerialPart, StreamPart
from panreduce_serial_crystallography.stream import (
    StreamError,
    TargetCell,
    cell_file_text,
    parse_cell_file,
    read_stream_file,
)

VERSION = "0.1.0"
FRAME_SUFFIXES = (".cxi", ".h5", ".hdf5", ".nxs", ".nx5", ".cbf")
MAX_GEOM_BYTES = 10_000_000
MAX_CELL_BYTES = 100_000


@dataclass(frozen=True)
class Unit:
    kind: str  # "frame" (an index over every frame of the inputs) or "stream" (a stream file)
    index: int


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

    # -- outputs (results.py) --------------------------------------------------------
    def write(self, result: SerialPart, params: SerialParameters, ctx: Context) -> Mapping[str, Any]:
        def progress(f: float, msg: str) -> None:
            ctx.progress(f, "merge", msg)

        if result.stream is not None:
            return results.write_merge(result.stream, params, ctx.output_path, version=VERSION, progress=progress)
        assert result.hits is not None
        return results.write_hits(result.hits, params, ctx.output_path, version=VERSION, progress=progress)


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


def _streams(inputs: Inputs) -> list[StagedFile]:
    return [f for f in inputs.files if f.path.suffix == ".stream"]
