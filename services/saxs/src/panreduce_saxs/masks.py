"""Detector masks: thresholds, module gaps, rectangles, hot pixels and the beamstop shadow.

All masks are boolean arrays, True where a pixel is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from panreduce import lazy

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    from scipy import ndimage
else:
    ndimage = lazy.module("scipy.ndimage")


def threshold_mask(frame: np.ndarray, below: float | None = 0.0, above: float | None = None) -> np.ndarray:
    """Pixels with ``value < below`` (Pilatus/Eiger mark dead pixels and gaps with -1/-2
    or negative numbers) or ``value > above`` (saturated/overflow), and non-finite ones."""
    frame = np.asarray(frame)
    mask = ~np.isfinite(frame)
    if below is not None:
        mask |= frame < below
    if above is not None:
        mask |= frame > above
    return mask


def detector_gap_mask(detector: str, shape: tuple[int, int]) -> np.ndarray:
    """The module gaps of a named detector (pyFAI's detector database, e.g. "Eiger4M",
    "Pilatus1M"); ValueError if unknown or of another shape."""
    from pyFAI.detectors import detector_factory

    try:
        det = detector_factory(detector)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise ValueError(f"unknown detector {detector!r} ({exc})") from None
    if tuple(det.shape) != tuple(shape):
        raise ValueError(
            f"detector {detector!r} has {det.shape[0]} x {det.shape[1]} pixels, the frames {shape[0]} x {shape[1]}"
        )
    mask = det.mask
    return np.zeros(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)


def rectangles_mask(shape: tuple[int, int], rectangles: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Mask of inclusive pixel rectangles ``(row_min, row_max, col_min, col_max)``."""
    mask = np.zeros(shape, dtype=bool)
    for r0, r1, c0, c1 in rectangles:
        mask[max(r0, 0) : r1 + 1, max(c0, 0) : c1 + 1] = True
    return mask


def parse_rectangles(text: str) -> list[tuple[int, int, int, int]]:
    """``"51:134:473:486; 0:5:0:486"`` -> [(51, 134, 473, 486), (0, 5, 0, 486)]."""
    out = []
    for part in text.replace(",", ";").split(";"):
        part = part.strip()
        if not part:
            continue
        values = [int(v) for v in part.split(":")]
        if len(values) != 4:
            raise ValueError(f"{part!r} is not row_min:row_max:col_min:col_max")
        r0, r1, c0, c1 = values
        if r1 < r0 or c1 < c0:
            raise ValueError(f"{part!r}: a maximum is below its minimum")
        out.append((r0, r1, c0, c1))
    return out


def hot_pixel_mask(frame: np.ndarray, mask: np.ndarray, nsigma: float, size: int = 5) -> np.ndarray:
    """Isolated pixels above their neighbourhood's median by ``nsigma`` Poisson deviations
    (sqrt(median + 1)) and twice the median: hot pixels and zingers."""
    data = np.where(mask, 0.0, np.asarray(frame, dtype=float))
    med = ndimage.median_filter(data, size=size, mode="nearest")
    return (~mask) & (data > med + nsigma * np.sqrt(med + 1.0)) & (data > 2 * med + 1)


def radius_px(shape: tuple[int, int], center_x: float, center_y: float) -> np.ndarray:
    """Distance of every pixel centre from the beam centre (pixels, pyFAI convention)."""
    rows = np.arange(shape[0], dtype=float)[:, None] + 0.5
    cols = np.arange(shape[1], dtype=float)[None, :] + 0.5
    return np.hypot(rows - center_y, cols - center_x)


def beamstop_mask(
    frame: np.ndarray,
    mask: np.ndarray,
    center_x: float,
    center_y: float,
    *,
    threshold: float = 0.25,
    smooth: int = 5,
    min_pixels: int = 20,
    grow: int = 2,
) -> np.ndarray:
    """The beamstop (and its arm) shadow, found on the frame itself.

    Each pixel is compared with the median of the unmasked pixels at its own radius from
    the beam (the isotropic expectation); the ratio is averaged over ``smooth`` x
    ``smooth`` pixels (ignoring masked pixels and radii with too few counts to judge);
    connected regions where it stays below ``threshold`` and that reach to within
    max(30 px, 15% of the detector's extent) of the beam are the shadow, grown by
    ``grow`` pixels to cover the penumbra.  A strip along an edge and a disc on an arm
    are found alike; nothing is masked on a frame without a shadow.
    """
    frame = np.asarray(frame, dtype=float)
    shape = frame.shape
    r = radius_px(shape, center_x, center_y)
    ring = np.rint(r).astype(np.int64)
    valid = ~mask & np.isfinite(frame)
    nring = int(ring.max()) + 1
    # median per ring via sorting (exact): group valid pixels by ring
    idx = ring[valid]
    vals = frame[valid]
    order = np.lexsort((vals, idx))
    idx_s, vals_s = idx[order], vals[order]
    counts = np.bincount(idx_s, minlength=nring)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    expected = np.full(nring, np.nan)
    has = counts > 0
    expected[has] = vals_s[starts[has] + (counts[has] - 1) // 2]
    # the innermost rings can lie wholly in the shadow (median ~ 0): they are judged
    # against the first ring outside with enough counts (a lower bound for SAXS)
    judgeable = np.nonzero(np.nan_to_num(expected) >= 2.0)[0]
    if judgeable.size:
        first = int(judgeable[0])
        expected[:first] = expected[first]
    exp_img = expected[ring]
    judge = valid & np.isfinite(exp_img) & (exp_img >= 2.0)
    ratio = np.where(judge, frame / np.where(judge, exp_img, 1.0), 0.0)
    w = ndimage.uniform_filter(judge.astype(float), size=smooth, mode="constant")
    avg = ndimage.uniform_filter(ratio, size=smooth, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = np.where(w > 0.2, avg / w, np.nan)
    low = np.isfinite(avg) & (avg < threshold) & ~mask
    labels, n = ndimage.label(low)
    if n == 0:
        return np.zeros(shape, dtype=bool)
    near = max(30.0, 0.15 * max(shape))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    dmin = ndimage.minimum(r, labels, index=np.arange(1, n + 1))
    keep = [k + 1 for k in range(n) if sizes[k + 1] >= min_pixels and dmin[k] <= near]
    if not keep:
        return np.zeros(shape, dtype=bool)
    shadow = np.isin(labels, keep)
    shadow = ndimage.binary_fill_holes(shadow)
    # rings around the beam that are mostly in the shadow cannot be judged pixel by
    # pixel (their median is the shadow's): they go with it
    in_shadow = np.bincount(ring[valid & shadow], minlength=nring)
    mostly = in_shadow >= 0.5 * np.maximum(counts, 1)
    shadow |= mostly[ring] & valid & (r <= near)
    if grow > 0:
        shadow = ndimage.binary_dilation(shadow, structure=np.ones((3, 3), bool), iterations=grow)
    return shadow & ~mask


def read_mask_file(path, source: str, shape: tuple[int, int]) -> np.ndarray:
    """A mask image (EDF/TIFF/Fit2D .msk/.npy/HDF5 first 2-D dataset): non-zero = masked."""
    from pathlib import Path

    from panreduce import errors
    from panreduce_saxs.io import HDF5_SUFFIXES, inspect_nexus, read_image, read_nexus_frame

    path = Path(path)
    if path.suffix.lower() in HDF5_SUFFIXES:
        info = inspect_nexus(path, source)
        data = read_nexus_frame(info, 0)
    else:
        data = read_image(path, source)
        if data.ndim == 3:
            data = data[0]
    if data.shape != tuple(shape):
        raise errors.InvalidInput(source, f"mask of shape {data.shape} does not fit frames of shape {tuple(shape)}")
    return np.asarray(data) != 0


# -- a job's masks ----------------------------------------------------------------------------
@dataclass
class JobMasks:
    """A job's masks, found on its first frame.

    ``mask`` is the first frame's whole mask; ``fixed`` what every frame shares (mask file,
    detector gaps, rectangles, beamstop shadow) and ``base`` the same without the shadow.
    With ``per_frame``, each frame's thresholds and hot pixels are found on that frame
    (:meth:`own`) and the integrator holds ``fixed`` only."""

    mask: np.ndarray
    fixed: np.ndarray
    base: np.ndarray
    info: dict[str, Any]
    per_frame: bool = False
    below: float | None = 0.0
    above: float | None = None
    hot_pixel_sigma: float = 0.0

    @property
    def integrator_mask(self) -> np.ndarray:
        return self.fixed if self.per_frame else self.mask

    def own(self, pixels: np.ndarray) -> np.ndarray | None:
        """A frame's own threshold and hot-pixel mask (``per_frame``), else None. Hot pixels
        are found with the fixed mask but not the beamstop, as for the first frame."""
        if not self.per_frame:
            return None
        mask = threshold_mask(pixels, self.below, self.above)
        if self.hot_pixel_sigma > 0:
            mask |= hot_pixel_mask(pixels, mask | self.base, self.hot_pixel_sigma)
        return mask


def job_masks(
    first: np.ndarray,
    center_x_px: float,
    center_y_px: float,
    *,
    file_mask: np.ndarray | None = None,
    source: str = "",
    field_prefix: str = "",
    below: float | None = 0.0,
    above: float | None = None,
    rectangles: str = "",
    detector: str = "",
    beamstop: str = "auto",
    hot_pixel_sigma: float = 0.0,
    per_frame: bool = False,
) -> JobMasks:
    """The masks of a job whose first frame is ``first`` (see :class:`JobMasks`);
    InvalidParameters names (``field_prefix`` + keyword) a detector or rectangles that
    cannot be used, InvalidInput the frame's ``source`` when every pixel is masked."""
    from panreduce import errors
    from panreduce.errors import FieldViolation, InvalidParameters

    shape = first.shape
    base = np.zeros(shape, dtype=bool)
    if file_mask is not None:
        base |= file_mask
    try:
        if detector:
            base |= detector_gap_mask(detector, shape)
    except ValueError as exc:
        raise InvalidParameters([FieldViolation(field_prefix + "detector", str(exc))]) from None
    try:
        if rectangles:
            base |= rectangles_mask(shape, parse_rectangles(rectangles))
    except ValueError as exc:
        raise InvalidParameters([FieldViolation(field_prefix + "rectangles", str(exc))]) from None
    fixed = base
    mask = threshold_mask(first, below, above)
    info: dict[str, Any] = {"masked_threshold": int(mask.sum())}
    mask |= base
    if hot_pixel_sigma > 0:
        hot = hot_pixel_mask(first, mask, hot_pixel_sigma)
        info["masked_hot"] = int(hot.sum())
        mask |= hot
    if beamstop == "auto":
        shadow = beamstop_mask(first, mask, center_x_px, center_y_px)
        info["masked_beamstop"] = int(shadow.sum())
        if shadow.any():
            rows, cols = np.nonzero(shadow)
            info["beamstop_box"] = [int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())]
        mask |= shadow
        fixed = fixed | shadow
    if mask.all():
        raise errors.InvalidInput(source, "every pixel is masked")
    return JobMasks(mask, fixed, base, info, per_frame, below, above, hot_pixel_sigma)
