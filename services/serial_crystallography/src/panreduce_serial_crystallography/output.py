"""Outputs: the hits-only CXI file (streamed, block by block), the per-frame table, the
event list, and the PNG previews (hit rate, powder; merging figures of merit)."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np

from panreduce import constants, nexus
from panreduce_serial_crystallography.geometry import PixelMaps
from panreduce_serial_crystallography.hits import FrameResult, Powder

__all__ = ["FRAME_COLUMNS", "CxiHitWriter", "plot_foms", "plot_hit_rate", "plot_powder", "write_frames_csv"]

PEAK_FIELDS = ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity", "peakNPixels", "peakMaximumValue", "peakSNR")
FRAME_COLUMNS = ("frame", "file", "event", "n_peaks", "hit", "resolution_angstrom", "photon_energy_ev")


class CxiHitWriter:
    """``entry_1/data_1/data`` (n_hits, ss, fs) with the Cheetah/OM peak lists in
    ``entry_1/result_1`` (nPeaks, peakXPosRaw = fs, peakYPosRaw = ss, peakTotalIntensity,
    peakNPixels, peakMaximumValue, peakSNR; padded to ``max_peaks`` per frame), written as
    the hits arrive. Per-hit photon energy and camera length go to the dataset paths the
    geometry names (so the same geometry reads this file), and to CXI's own places."""

    def __init__(
        self,
        path: Path,
        *,
        shape: tuple[int, int],
        max_peaks: int,
        dtype: np.dtype,
        mask_bad: np.ndarray,
        energy_path: str | None,
        clen_path: str | None,
    ) -> None:
        self.f = h5py.File(path, "w")
        self.max_peaks = max_peaks
        f = self.f
        f.attrs["cxi_version"] = 150
        f.attrs["NX_class"] = "NXroot"
        entry = nexus.make_group(f, "entry_1", "NXentry")
        # CXI's groups carry NeXus classes too, so that NeXus tools read (and validate) it
        data = nexus.make_group(entry, "data_1", "NXdata", signal="data", axes=[".", ".", "."])
        nexus.set_default(data)
        self.data = data.create_dataset(
            "data", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, chunks=(1, *shape)
        )
        data.create_dataset("mask", data=mask_bad.astype(np.uint16))
        res = nexus.make_group(entry, "result_1", "NXcollection")
        self.n_peaks = res.create_dataset("nPeaks", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=(1024,))
        self.fields = {
            k: res.create_dataset(
                k,
                shape=(0, max_peaks),
                maxshape=(None, max_peaks),
                dtype=np.float32,
                chunks=(64, max_peaks),
                fillvalue=0,
            )
            for k in PEAK_FIELDS
        }
        self.source_frame = entry.create_dataset(
            "source_frame", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,)
        )
        source = nexus.make_group(nexus.make_group(entry, "instrument_1", "NXinstrument"), "source_1", "NXsource")
        self.energy = source.create_dataset("energy", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
        self.energy.attrs["units"] = "J"
        self.extra = {}
        for p, unit in ((energy_path, "eV"), (clen_path, "mm")):
            if p and p.startswith("/") and p not in f:
                ds = f.create_dataset(p, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
                ds.attrs["units"] = unit
                self.extra[p] = ds
                _classify_parents(ds)
        self.energy_path, self.clen_path = energy_path, clen_path
        self.count = 0

    def add(self, frames: np.ndarray, results: list[FrameResult], block_start: int, clen_m: np.ndarray) -> None:
        hits = [r for r in results if r.hit]
        if not hits:
            return
        n0, n1 = self.count, self.count + len(hits)
        self.data.resize(n1, axis=0)
        for d in (self.n_peaks, self.source_frame, self.energy, *self.extra.values()):
            d.resize(n1, axis=0)
        for ds in self.fields.values():
            ds.resize(n1, axis=0)
        # one chunk a frame, no filter: each frame converted once to the stored type and
        # handed to HDF5 as its chunk's bytes (no type conversion or selection in HDF5)
        dtype = self.data.dtype
        buf = np.empty(self.data.shape[1:], dtype)
        for j, r in enumerate(hits):
            np.copyto(buf, frames[r.index - block_start], casting="unsafe")
            self.data.id.write_direct_chunk((n0 + j, 0, 0), buf)
        self.n_peaks[n0:n1] = [min(len(r.peaks), self.max_peaks) for r in hits]
        self.source_frame[n0:n1] = [r.index for r in hits]
        self.energy[n0:n1] = [r.photon_energy_ev * constants.ELEMENTARY_CHARGE for r in hits]
        if self.energy_path in self.extra:
            self.extra[self.energy_path][n0:n1] = [r.photon_energy_ev for r in hits]
        if self.clen_path in self.extra:
            self.extra[self.clen_path][n0:n1] = [clen_m[r.index - block_start] * 1e3 for r in hits]
        table = np.zeros((len(PEAK_FIELDS), len(hits), self.max_peaks), np.float32)
        for j, r in enumerate(hits):
            p = r.peaks
            k = min(len(p), self.max_peaks)
            for i, v in enumerate((p.fs, p.ss, p.intensity, p.n_pixels, p.max_value, p.snr)):
                table[i, j, :k] = v[:k]
        for i, name in enumerate(PEAK_FIELDS):
            self.fields[name][n0:n1] = table[i]
        self.count = n1

    def close(self) -> None:
        self.f.close()


def _classify_parents(obj: h5py.HLObject) -> None:
    """Groups made on the way to a dataset the geometry names (e.g. ``/LCLS/...``) are
    NXcollections: every group of the file has a NeXus class."""
    group = obj.parent
    while group.name != "/":
        if not nexus.nx_class(group):
            group.attrs["NX_class"] = "NXcollection"
        group = group.parent


def write_frames_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(FRAME_COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_hit_rate(path: Path, frame: np.ndarray, rate: np.ndarray, n_peaks: np.ndarray, min_peaks: int) -> None:
    plt = _figure()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    a1.plot(frame, 100 * rate, "-o", ms=3)
    a1.set_ylabel("hit rate (%)")
    a1.set_ylim(0, 105)
    a2.plot(frame, n_peaks, ".", ms=4)
    a2.axhline(min_peaks, color="r", lw=0.8, label="min_peaks")
    a2.set_ylabel("peaks per frame")
    a2.set_xlabel("frame")
    a2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def assemble(image: np.ndarray, maps: PixelMaps, valid: np.ndarray) -> np.ndarray:
    """The raw (ss, fs) image placed on a lab grid of one-pixel cells (max per cell)."""
    x = np.rint(maps.x_px[valid]).astype(np.int64)
    y = np.rint(maps.y_px[valid]).astype(np.int64)
    if x.size == 0:
        return np.zeros((1, 1))
    x0, y0 = x.min(), y.min()
    out = np.full((int(y.max() - y0 + 1), int(x.max() - x0 + 1)), np.nan)
    np.fmax.at(out, (y - y0, x - x0), image[valid].astype(np.float64))
    return out[::-1]  # +y up


def plot_powder(path: Path, powder: Powder, maps: PixelMaps, valid: np.ndarray, *, kind: str) -> None:
    plt = _figure()
    img = powder.maximum if kind == "max" else powder.total
    asm = assemble(np.where(np.isfinite(img), img, 0), maps, valid)
    fig, ax = plt.subplots(figsize=(6, 6))
    finite = asm[np.isfinite(asm)]
    lo, hi = np.percentile(finite, [1, 99.8]) if finite.size else (0, 1)
    ax.imshow(asm, vmin=lo, vmax=hi, cmap="gray_r", interpolation="nearest")
    ax.set_title(f"powder ({kind}) of {powder.n} hit(s)")
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_foms(path: Path, rows: list[dict]) -> None:
    plt = _figure()
    shells = [r for r in rows if r["shell"] != "overall"]
    s = [1 / r["d_min_angstrom"] for r in shells]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    axes[0].plot(s, [r["cc_half"] for r in shells], "-o", label="CC½")
    axes[0].plot(s, [r["cc_star"] for r in shells], "-s", label="CC*")
    axes[0].legend()
    axes[1].plot(s, [r["r_split"] for r in shells], "-o")
    axes[1].set_title("Rsplit")
    axes[2].plot(s, [r["completeness"] * 100 for r in shells], "-o", label="completeness (%)")
    axes[2].plot(s, [r["mean_i_over_sigma"] for r in shells], "-s", label="⟨I/σ⟩")
    axes[2].legend()
    for a in axes:
        a.set_xlabel("1/d (Å⁻¹)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
