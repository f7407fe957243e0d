"""Writers of the serial crystallography outputs that the technique used to hold: the
powder file, the hits-only CXI file of several blocks, the CrystFEL reflection list,
the figures-of-merit table and the hits geometry."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from panreduce import nexus
from panreduce_serial_crystallography.hits import Powder
from panreduce_serial_crystallography.merge import Merged


def write_powder(path: Path, powder: Powder, valid: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.create_dataset("sum", data=powder.total, compression="gzip")
        entry.create_dataset("max", data=np.where(np.isfinite(powder.maximum), powder.maximum, 0), compression="gzip")
        entry.create_dataset("n_hits", data=powder.n)
        f["valid"] = valid.astype(np.uint8)
        # what a NeXus viewer opens: the sum over the hits (the same datasets, linked)
        plot = nexus.make_group(entry, "powder", "NXdata", signal="sum", auxiliary_signals=["max"])
        plot["sum"], plot["max"] = entry["sum"], entry["max"]
        nexus.write_text(plot, "title", f"powder sum of {powder.n} hit(s), raw detector layout")
        nexus.set_default(plot)


def write_hits_geometry(path: Path, geometry_text: str) -> None:
    """The input geometry, reading its peaks from hits.cxi."""
    path.write_text(
        geometry_text.rstrip("\n") + "\n\n; added by panreduce: peaks from hits.cxi\n"
        "peak_list = /entry_1/result_1\npeak_list_type = cxi\n"
    )


def concat_cxi(parts: Sequence[Path], out_path: Path) -> int:
    """hits.cxi files one after the other (every dataset of entry_1 with a frame axis);
    one file is copied as it is. Returns the number of hits."""
    if len(parts) == 1:
        shutil.copyfile(parts[0], out_path)
        with h5py.File(out_path, "r") as f:
            return int(f["entry_1/result_1/nPeaks"].shape[0])
    with h5py.File(parts[0], "r") as first:
        names: list[str] = []
        first.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
        staged = [n for n in names if not n.startswith("entry_1/provenance")]
        n_hits = first["entry_1/result_1/nPeaks"].shape[0]
        stacked = [
            n for n in staged if first[n].ndim >= 1 and first[n].shape[0] == n_hits and n != "entry_1/data_1/mask"
        ]
    total = 0
    with h5py.File(out_path, "w") as out:
        for i, p in enumerate(parts):
            with h5py.File(p, "r") as src:
                k = src["entry_1/result_1/nPeaks"].shape[0]
                if i == 0:
                    for n in staged:
                        if n in stacked:
                            d = src[n]
                            out.create_dataset(
                                n,
                                shape=(0, *d.shape[1:]),
                                maxshape=(None, *d.shape[1:]),
                                dtype=d.dtype,
                                chunks=(1, *d.shape[1:]) if d.ndim == 3 else True,
                            )
                            out[n].attrs.update(dict(d.attrs))
                        else:
                            src.copy(src[n], out, name=n)
                    for g in _groups(src):  # every group's NX_class, @default, @signal ...
                        if g in out:
                            out[g].attrs.update({a: v for a, v in src[g].attrs.items()})
                    out.attrs.update(dict(src.attrs))
                for n in stacked:
                    out[n].resize(total + k, axis=0)
                    for j in range(0, k, 16):
                        out[n][total + j : total + min(j + 16, k)] = src[n][j : min(j + 16, k)]
                total += k
    return total


def _groups(f: h5py.File) -> list[str]:
    found: list[str] = []
    f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Group) else None)
    return found


def write_hkl(path: Path, merged: Merged, point_group: str) -> None:
    """CrystFEL reflection list (process_hkl's output format)."""
    lines = [
        "CrystFEL reflection list version 2.0",
        f"Symmetry: {point_group}",
        "   h    k    l          I    phase   sigma(I)   nmeas",
    ]
    for (h, k, l_), i, s, n in zip(
        merged.hkl.tolist(), merged.intensity, merged.sigma, merged.n_measurements, strict=True
    ):
        lines.append(f"{h:4d} {k:4d} {l_:4d} {i:10.2f} {'-':>8s} {s:10.2f} {n:7d}")
    lines.append("End of reflections")
    path.write_text("\n".join(lines) + "\n")


def write_foms_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
