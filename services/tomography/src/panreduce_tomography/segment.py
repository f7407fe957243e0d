"""Segmentation and quantification of reconstructed volumes (scikit-image).

Threshold (given, or Otsu's), connected-component labelling (26-connectivity in 3-D),
volume fraction (and porosity = 1 - fraction), object count and the size of every
object, as table rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from skimage import filters, measure
else:
    filters = lazy.module("skimage.filters")
    measure = lazy.module("skimage.measure")


def otsu_threshold(volume: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Otsu's threshold of the voxels (inside ``mask`` when given)."""
    v = np.asarray(volume)
    vals = v[mask] if mask is not None else v.ravel()
    vals = vals[np.isfinite(vals)]
    return float(filters.threshold_otsu(vals))


def quantify(
    volume: np.ndarray,
    *,
    threshold: float | None = None,
    mask: np.ndarray | None = None,
    min_voxels: int = 1,
    voxel_size: float = 1.0,
) -> tuple[dict, list[dict]]:
    """Segment ``volume`` (z, y, x) at ``threshold`` (default Otsu) inside ``mask``
    (default everywhere) and measure it.

    Returns the summary (threshold, volume fraction, porosity, object count, mean and
    median object volume) and one row per object (label, voxels, volume, equivalent
    diameter, centroid z/y/x), objects under ``min_voxels`` left out of both."""
    v = np.asarray(volume, dtype=np.float32)
    m = np.ones(v.shape, bool) if mask is None else np.broadcast_to(mask, v.shape)
    t = otsu_threshold(v, m) if threshold is None else float(threshold)
    solid = (v > t) & m
    labels = measure.label(solid, connectivity=v.ndim)
    areas = np.bincount(labels.ravel())
    big = areas >= min_voxels
    big[0] = False
    kept = big[labels]
    rows: list[dict] = []
    for p in measure.regionprops(labels):
        if not big[p.label]:
            continue
        cz = p.centroid
        rows.append(
            {
                "label": len(rows) + 1,
                "voxels": int(p.area),
                "volume": float(p.area * voxel_size**3),
                "equivalent_diameter": float((6 * p.area / np.pi) ** (1 / 3) * voxel_size)
                if v.ndim == 3
                else float(2 * np.sqrt(p.area / np.pi) * voxel_size),
                **{f"centroid_{ax}": float(c) for ax, c in zip("zyx"[-v.ndim :], cz, strict=True)},
            }
        )
    n_in = int(m.sum())
    frac = float(kept.sum() / n_in) if n_in else 0.0
    sizes = np.array([r["volume"] for r in rows]) if rows else np.zeros(0)
    summary = {
        "threshold": t,
        "volume_fraction": frac,
        "porosity": 1.0 - frac,
        "object_count": len(rows),
        "mean_object_volume": float(sizes.mean()) if sizes.size else 0.0,
        "median_object_volume": float(np.median(sizes)) if sizes.size else 0.0,
        "voxels_analysed": n_in,
    }
    return summary, rows


def size_histogram(rows: list[dict], bins: int = 20) -> list[dict]:
    """The object size distribution: counts in logarithmic volume bins."""
    if not rows:
        return []
    vol = np.array([r["volume"] for r in rows], dtype=np.float64)
    lo, hi = vol.min(), vol.max()
    edges = np.geomspace(lo, hi * 1.0001, bins + 1) if hi > lo else np.array([lo, lo + 1.0])
    counts, edges = np.histogram(vol, edges)
    return [
        {"volume_min": float(a), "volume_max": float(b), "count": int(c)}
        for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]


def to_csv(rows: list[dict]) -> str:
    """Rows of dicts (same keys) as CSV text."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = [",".join(keys)]
    for r in rows:
        lines.append(",".join(f"{r[k]:.6g}" if isinstance(r[k], float) else str(r[k]) for k in keys))
    return "\n".join(lines) + "\n"
