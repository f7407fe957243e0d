"""The two reductions of a serial crystallography job, without the kit (no transport,
no output names): hit finding over a block of frames, and the merging of the crystals
of CrystFEL streams."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gemmi
import numpy as np

from panreduce import constants
from panreduce_serial_crystallography.frames import FrameSource
from panreduce_serial_crystallography.geometry import Detector, PixelMaps, bad_pixel_mask, pixel_maps
from panreduce_serial_crystallography.hits import FrameResult, Powder, find_hits
from panreduce_serial_crystallography.index import index_peaks, peak_lab_positions, scattering_vectors
from panreduce_serial_crystallography.integrate import integrate_rings
from panreduce_serial_crystallography.merge import (
    Merged,
    Scaling,
    figures_of_merit,
    merge_intensities,
    point_group_ops,
    scale_crystals,
    space_group_for,
)
from panreduce_serial_crystallography.output import CxiHitWriter
from panreduce_serial_crystallography.peakfinder8 import PeakfinderLayout, layout
from panreduce_serial_crystallography.predict import predict_reflections
from panreduce_serial_crystallography.stream import CrystalRecord, Stream, TargetCell, chunk_text

Progress = Callable[[float, str], None]


# -- hit finding ---------------------------------------------------------------------------
@dataclass
class HitSetup:
    detector: Detector
    source: FrameSource
    maps: PixelMaps
    lay: PeakfinderLayout


def hit_setup(detector: Detector, source: FrameSource, *, min_res: float, max_res: float) -> HitSetup:
    maps = pixel_maps(detector)
    bad = source.mask_bad | bad_pixel_mask(detector, maps)
    slices = [(slice(p.min_ss, p.max_ss + 1), slice(p.min_fs, p.max_fs + 1)) for p in detector.panels]
    return HitSetup(
        detector, source, maps, layout(maps.r_px, maps.panel_id, bad, slices, min_res=min_res, max_res=max_res)
    )


@dataclass
class HitBlock:
    rows: list[dict[str, Any]]  # per frame: frame, file, event, n_peaks, hit, resolution, photon energy
    powder: Powder
    n_exported: int  # hits written to the block's CXI file


@dataclass(frozen=True)
class IndexSetup:
    """What indexing, prediction and integration of the hits need besides the frames."""

    cell: TargetCell
    radii: tuple[int, int, int]
    profile_radius: float | None  # Å⁻¹; None: estimated per crystal
    min_fraction: float
    adu_per_photon: float


@dataclass
class Indexed:
    n_indexed_peaks: int  # 0: not indexed
    n_reflections: int
    orientation: np.ndarray | None  # U·B (Å⁻¹) when indexed
    chunk: str  # the frame's chunk of the stream


def _profile_radius(basis: np.ndarray, hkl: np.ndarray, k: float) -> float:
    """CrystFEL-like estimate: a margin over the excitation errors of the indexed peaks."""
    q = hkl @ basis.T
    q[:, 2] += k
    e = np.abs(np.linalg.norm(q, axis=1) - k)
    return float(np.clip(1.5 * np.percentile(e, 80), 2e-4, 0.02))


def index_hit(
    frame: np.ndarray, r: FrameResult, setup: HitSetup, ix: IndexSetup, *, clen_m: float, name: str, event: int
) -> Indexed:
    """Index one hit with the known cell, predict its reflections, integrate them by ring
    summation and render its stream chunk (peaks always; the crystal when indexed)."""
    det, pk = setup.detector, r.peaks
    wl = constants.H_C_EV_ANGSTROM / r.photon_energy_ev
    xyz = peak_lab_positions(det, pk.fs.astype(np.float64), pk.ss.astype(np.float64), pk.panel, clen_m=clen_m)
    q = scattering_vectors(xyz, wl)
    names = [p.name for p in det.panels]
    peaks = (pk.fs, pk.ss, np.linalg.norm(q, axis=1), pk.intensity, [names[i] for i in pk.panel])
    res = index_peaks(
        q, ix.cell.parameters, centering=ix.cell.centering, wavelength_angstrom=wl, min_fraction=ix.min_fraction
    )
    crystals: list[CrystalRecord] = []
    n_refl = 0
    if res is not None:
        radius = ix.profile_radius or _profile_radius(res.basis, res.hkl[res.indexed].astype(np.float64), 1 / wl)
        pred = predict_reflections(
            res.basis, det, clen_m=clen_m, wavelength_angstrom=wl, profile_radius=radius, centering=ix.cell.centering
        )
        integ = integrate_rings(
            frame,
            setup.lay.valid,
            setup.maps.panel_id,
            pred.fs,
            pred.ss,
            pred.panel,
            radii=ix.radii,
            adu_per_photon=ix.adu_per_photon,
        )
        k = integ.keep
        n_refl = int(k.sum())
        crystals.append(
            CrystalRecord(
                basis=res.basis,
                lattice_type=ix.cell.lattice_type,
                centering=ix.cell.centering,
                unique_axis=ix.cell.unique_axis,
                profile_radius=radius,
                hkl=pred.hkl[k],
                intensity=integ.intensity,
                sigma=integ.sigma,
                peak=integ.peak,
                background=integ.background,
                fs=pred.fs[k],
                ss=pred.ss[k],
                panel=[names[i] for i in pred.panel[k]],
                resolution_limit=float(pred.one_over_d[k].max()) if n_refl else float("nan"),
            )
        )
    text = chunk_text(
        filename=name,
        event=f"//{event}",
        serial=r.index + 1,
        hit=r.hit,
        indexed_by="pairs-nolatt-cell",
        photon_energy_ev=r.photon_energy_ev,
        clen_m=clen_m,
        peaks=peaks,
        crystals=crystals,
    )
    return Indexed(res.n_indexed if res else 0, n_refl, res.basis if res else None, text)


def find_hits_in(
    setup: HitSetup,
    start: int,
    stop: int,
    p: Any,
    *,
    cxi: Path | None,
    progress: Progress,
    index: IndexSetup | None = None,
    stream: Path | None = None,
) -> HitBlock:
    """peakfinder8 on frames [start, stop) in blocks of ``p.block_frames``; hits go to
    ``cxi`` (a hits-only CXI file) when given. With ``index``, each hit is indexed,
    predicted and integrated, and its chunk appended to ``stream`` (no header: the
    combine writes one)."""
    src, det = setup.source, setup.detector
    powder = Powder.empty(src.shape)
    rows: list[dict[str, Any]] = []
    writer = None
    if cxi is not None:
        writer = CxiHitWriter(
            cxi,
            shape=src.shape,
            max_peaks=p.max_peaks,
            dtype=src.dtype,
            mask_bad=~setup.lay.valid,
            energy_path=det.photon_energy if isinstance(det.photon_energy, str) else None,
            clen_path=det.clen if isinstance(det.clen, str) else None,
        )
    out = open(stream, "w") if stream is not None else None
    try:
        for b0 in range(start, stop, p.block_frames):
            b1 = min(b0 + p.block_frames, stop)
            progress((b0 - start) / max(stop - start, 1), f"frames {b0}..{b1 - 1}")
            frames = src.read(b0, b1)
            results = find_hits(
                frames,
                setup.lay,
                setup.maps,
                first_index=b0,
                photon_energy_ev=src.photon_energy_ev[b0:b1],
                clen_m=src.clen_m[b0:b1],
                threshold=p.threshold,
                min_snr=p.min_snr,
                min_pix_count=p.min_pix_count,
                max_pix_count=p.max_pix_count,
                local_bg_radius=p.local_bg_radius,
                min_peaks=p.min_peaks,
                max_peaks=p.max_hit_peaks,
                max_n_peaks=p.max_peaks,
                powder=powder,
            )
            for r in results:
                name, event = src.events[r.index]
                row: dict[str, Any] = {
                    "frame": r.index,
                    "file": name,
                    "event": event,
                    "n_peaks": len(r.peaks),
                    "hit": int(r.hit),
                    "resolution_angstrom": round(r.resolution_angstrom, 4),
                    "photon_energy_ev": round(r.photon_energy_ev, 4),
                }
                if index is not None:
                    done = None
                    if r.hit:
                        done = index_hit(
                            frames[r.index - b0],
                            r,
                            setup,
                            index,
                            clen_m=float(src.clen_m[r.index]),
                            name=name,
                            event=event,
                        )
                        if out is not None:
                            out.write(done.chunk)
                    row["indexed"] = int(done is not None and done.orientation is not None)
                    row["n_indexed_peaks"] = done.n_indexed_peaks if done else 0
                    row["n_reflections"] = done.n_reflections if done else 0
                rows.append(row)
            if writer is not None:
                writer.add(frames, results, b0, src.clen_m[b0:b1])
    finally:
        if writer is not None:
            writer.close()
        if out is not None:
            out.close()
    return HitBlock(rows, powder, writer.count if writer is not None else 0)


def combine_powders(powders: Sequence[Powder]) -> Powder:
    out = Powder(powders[0].total.copy(), powders[0].maximum.copy(), powders[0].n)
    for other in powders[1:]:
        out.combine(other)
    return out


# -- merging streams ------------------------------------------------------------------------
@dataclass
class Crystals:
    """The indexed crystals of streams, columnar: crystal ``i`` holds observations
    ``offsets[i]:offsets[i + 1]`` of ``hkl`` and ``intensity``."""

    cells: np.ndarray  # (n, 6) Å, deg
    centerings: list[str]
    offsets: np.ndarray  # (n + 1,)
    hkl: np.ndarray  # (N, 3) int32
    intensity: np.ndarray  # (N,)
    n_chunks: int
    geometry: str | None
    cell: TargetCell | None

    @classmethod
    def of(cls, stream: Stream) -> Crystals:
        xs = stream.crystals
        sizes = [len(c.intensity) for c in xs]
        return cls(
            np.array([c.cell for c in xs], float).reshape(-1, 6),
            [c.centering for c in xs],
            np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            np.concatenate([c.hkl for c in xs]).astype(np.int32) if xs else np.zeros((0, 3), np.int32),
            np.concatenate([c.intensity for c in xs]).astype(float) if xs else np.zeros(0),
            len(stream.chunks),
            stream.geometry,
            stream.cell,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Crystals]) -> Crystals:
        offsets = [parts[0].offsets]
        for p in parts[1:]:
            offsets.append(p.offsets[1:] + offsets[-1][-1])
        return cls(
            np.concatenate([p.cells for p in parts]),
            [c for p in parts for c in p.centerings],
            np.concatenate(offsets),
            np.concatenate([p.hkl for p in parts]),
            np.concatenate([p.intensity for p in parts]),
            sum(p.n_chunks for p in parts),
            next((p.geometry for p in parts if p.geometry), None),
            next((p.cell for p in parts if p.cell), None),
        )

    @property
    def n(self) -> int:
        return len(self.centerings)

    def observations(self, which: slice) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(self.n)[which]
        take = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx])
            if len(idx)
            else np.zeros(0, np.int64)
        )
        return self.hkl[take], self.intensity[take]


@dataclass
class MergeOutcome:
    merged: Merged
    laue: Merged
    foms: list[dict[str, Any]]
    space_group: gemmi.SpaceGroup
    cell: gemmi.UnitCell
    cell_parameters: tuple[float, ...]
    n_observations: int
    scaling: Scaling | None = None


def merge_crystals(
    xs: Crystals,
    *,
    point_group: str,
    space_group: str | None,
    min_measurements: int,
    n_shells: int,
    d_min_angstrom: float | None,
    progress: Progress,
    scale: bool = False,
    iterations: int = 10,
    bscale: bool = True,
) -> MergeOutcome:
    """process_hkl's merge of every crystal (and of the even/odd halves for CC1/2 and
    Rsplit), with the figures of merit per resolution shell. ValueError (MergeError)
    names a point group that cannot be used; None space group: unknown name."""
    point_group_ops(point_group)
    centering = xs.cell.centering if xs.cell else xs.centerings[0]
    sg = gemmi.find_spacegroup_by_name(space_group) if space_group else space_group_for(point_group, centering)
    if sg is None:
        raise LookupError(space_group)
    cell_params = xs.cell.parameters if xs.cell else tuple(np.mean(xs.cells, axis=0))
    cell = gemmi.UnitCell(*cell_params)

    scaling = None
    if scale:
        progress(0.1, f"scaling {xs.n} crystal(s)")
        crystal = np.repeat(np.arange(xs.n), np.diff(xs.offsets))
        inside = np.ones(len(xs.intensity), bool)
        if d_min_angstrom is not None and len(xs.hkl):
            inside = np.sqrt(cell.calculate_1_d2_array(xs.hkl.astype(np.int32))) <= 1 / d_min_angstrom
        scaling = scale_crystals(
            xs.hkl[inside],
            xs.intensity[inside],
            crystal[inside],
            point_group=point_group,
            cell=cell,
            iterations=iterations,
            bscale=bscale,
        )
        corrected = np.full(len(xs.intensity), np.nan)
        corrected[inside] = scaling.corrected
        xs = dataclasses.replace(xs, intensity=corrected)

    def obs(which: slice) -> tuple[np.ndarray, np.ndarray]:
        hkl, inten = xs.observations(which)
        if d_min_angstrom is not None and len(hkl):
            keep = np.sqrt(cell.calculate_1_d2_array(hkl.astype(np.int32))) <= 1 / d_min_angstrom
            hkl, inten = hkl[keep], inten[keep]
        if scaling is not None:  # rejected crystals: NaN
            keep = np.isfinite(inten)
            hkl, inten = hkl[keep], inten[keep]
        return hkl, inten

    progress(0.2, f"merging {xs.n} crystal(s) in {point_group}")
    hkl, inten = obs(slice(None))
    kw = {"point_group": point_group, "min_measurements": min_measurements}
    merged = merge_intensities(hkl, inten, **kw)
    laue = merge_intensities(hkl, inten, friedel_merge=True, **kw)
    half1 = merge_intensities(*obs(slice(0, None, 2)), **kw)
    half2 = merge_intensities(*obs(slice(1, None, 2)), **kw)
    progress(0.6, "figures of merit")
    foms = figures_of_merit(
        merged, half1, half2, cell=cell, space_group=sg, n_shells=n_shells, d_min_angstrom=d_min_angstrom
    )
    return MergeOutcome(merged, laue, foms, sg, cell, tuple(float(v) for v in cell_params), len(inten), scaling)
