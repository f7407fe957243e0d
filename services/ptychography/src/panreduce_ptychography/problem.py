"""From a measured scan to what the engines work on: cropped, binned, masked frames in
photons, positions in object pixels, the object and probe grids.

Far-field geometry: a detector of ``n`` pixels of size ``p`` at distance ``z`` samples the
exit wave on an object-plane grid of pixel size ``dx = wavelength * z / (n * p)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: h * c in eV * m
HC_EV_M = 1.239841984e-6


def wavelength_m(energy_ev: float) -> float:
    """Photon wavelength (m) for a photon energy (eV)."""
    return HC_EV_M / energy_ev


@dataclass
class Scan:
    """One ptychographic scan (one projection) as read from a file.

    frames: (N, H, W) detector counts, centred diffraction patterns (zero frequency in
    the middle); positions_m: (N, 2) probe positions on the sample (y, x) in metres;
    energy_ev: photon energy (eV); distance_m: sample-detector distance (m);
    pixel_size_m: detector pixel size (y, x) in metres; mask: (H, W) True where a pixel
    is good; dark: (H, W) counts to subtract, or None; probe: initial probe
    (K, h, w) complex on the object grid of the reconstruction, or None;
    center: (row, col) of the zero frequency on the detector, or None (found).
    """

    frames: np.ndarray
    positions_m: np.ndarray
    energy_ev: float
    distance_m: float
    pixel_size_m: tuple[float, float]
    mask: np.ndarray | None = None
    dark: np.ndarray | None = None
    probe: np.ndarray | None = None
    center: tuple[float, float] | None = None
    name: str = "scan"
    source: str = ""
    metadata: dict = field(default_factory=dict)


@dataclass
class Problem:
    """What the engines reconstruct from.

    counts: (N, H, W) float32 photons, zero frequency at [0, 0] (``ifftshift``-ed);
    mask: (H, W) float32, 1 for good pixels and 0 for bad ones, same layout;
    positions: (N, 2) float64 (y, x) of each probe window's top-left corner in object
    pixels; object_shape: (rows, cols) of the object array; pixel_size_m: object pixel
    size (m); origin_m: (y, x) position in metres of object pixel [0, 0].
    """

    counts: np.ndarray
    mask: np.ndarray
    positions: np.ndarray
    object_shape: tuple[int, int]
    pixel_size_m: float
    origin_m: tuple[float, float] = (0.0, 0.0)
    wavelength_m: float = 0.0

    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.counts.shape[1], self.counts.shape[2]

    def positions_m(self, positions_px: np.ndarray | None = None) -> np.ndarray:
        """Window centres in metres for positions in object pixels (default: the data's)."""
        pos = self.positions if positions_px is None else positions_px
        h, w = self.frame_shape
        centre = np.asarray(pos, float) + np.array([h / 2, w / 2])
        return centre * self.pixel_size_m + np.asarray(self.origin_m)


def find_center(frames: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Zero-frequency position (row, col) of centred diffraction patterns: the centre of
    mass of the mean frame (bad pixels excluded), in pixels."""
    mean = np.asarray(frames, np.float64).mean(axis=0)
    if mask is not None:
        mean = mean * mask
    mean = np.clip(mean, 0, None)
    total = mean.sum()
    if total <= 0:
        return (frames.shape[1] / 2, frames.shape[2] / 2)
    rows = np.arange(mean.shape[0])
    cols = np.arange(mean.shape[1])
    return (float((mean.sum(1) * rows).sum() / total), float((mean.sum(0) * cols).sum() / total))


def crop_and_bin(
    frames: np.ndarray, mask: np.ndarray, *, center: tuple[float, float], size: int, binning: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``size * binning`` detector pixels around ``center`` (zero frequency at index
    ``size*binning // 2`` of the cut, pixels beyond the detector are masked), then sum
    ``binning`` x ``binning`` blocks. A binned pixel is good only if all its pixels are.
    Returns (frames (N, size, size), mask (size, size) bool)."""
    n_det = size * binning
    h0, w0 = frames.shape[1:]
    r0 = round(center[0]) - n_det // 2
    c0 = round(center[1]) - n_det // 2
    out = np.zeros((frames.shape[0], n_det, n_det), np.float32)
    good = np.zeros((n_det, n_det), bool)
    rs, re = max(r0, 0), min(r0 + n_det, h0)
    cs, ce = max(c0, 0), min(c0 + n_det, w0)
    if rs < re and cs < ce:
        out[:, rs - r0 : re - r0, cs - c0 : ce - c0] = frames[:, rs:re, cs:ce]
        good[rs - r0 : re - r0, cs - c0 : ce - c0] = mask[rs:re, cs:ce]
    out *= good
    if binning > 1:
        out = out.reshape(-1, size, binning, size, binning).sum(axis=(2, 4))
        good = good.reshape(size, binning, size, binning).all(axis=(1, 3))
    return out, good


def prepare(
    scan: Scan,
    *,
    frame_size: int = 0,
    binning: int = 1,
    center: tuple[float, float] | None = None,
    counts_per_photon: float = 1.0,
    padding: int = 8,
    saturation: float | None = None,
) -> Problem:
    """Dark-subtract, mask, centre, crop and bin the frames of ``scan``, convert counts to
    photons, and place the positions on the object pixel grid.

    frame_size: side (binned pixels) of the square frames the engines use; 0 takes the
    largest square that fits the detector around the centre (even). center: detector
    (row, col) of the zero frequency; None takes the scan's, else (whole square
    detector kept) its middle, else the centre of mass of the mean frame. padding: object pixels around the scanned area.
    saturation: counts at or above which a pixel is treated as bad in that frame's
    mask (None: no limit).
    """
    frames = np.asarray(scan.frames, np.float32)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (N, H, W), got shape {frames.shape}")
    _, h0, w0 = frames.shape
    mask = np.ones((h0, w0), bool) if scan.mask is None else np.asarray(scan.mask, bool).copy()
    if scan.dark is not None:
        frames = frames - np.asarray(scan.dark, np.float32)
    mask &= np.all(np.isfinite(frames), axis=0)
    if saturation is not None:
        mask &= np.all(frames < saturation, axis=0)
    frames = np.where(np.isfinite(frames), frames, 0).astype(np.float32)
    np.clip(frames, 0, None, out=frames)
    if center is None:
        if scan.center is not None:
            center = scan.center
        elif frame_size <= 0 and h0 == w0 and h0 % 2 == 0:
            center = (h0 // 2, w0 // 2)  # the whole detector, zero frequency in its middle
        else:
            center = find_center(frames, mask)
    if frame_size <= 0:
        half = min(center[0], h0 - center[0], center[1], w0 - center[1])
        frame_size = max(int(2 * half) // binning // 2 * 2, 2)
    frames, good = crop_and_bin(frames, mask, center=center, size=frame_size, binning=binning)
    if counts_per_photon != 1.0:
        frames = frames / np.float32(counts_per_photon)
    counts = np.fft.ifftshift(frames, axes=(-2, -1)).astype(np.float32)
    mask_f = np.fft.ifftshift(good).astype(np.float32)

    lam = wavelength_m(scan.energy_ev)
    p_y = scan.pixel_size_m[0] * binning
    p_x = scan.pixel_size_m[1] * binning
    dy = lam * scan.distance_m / (frame_size * p_y)
    dx = lam * scan.distance_m / (frame_size * p_x)
    if not np.isclose(dy, dx, rtol=1e-6):
        raise ValueError(f"non-square object pixels ({dy:.4g} m x {dx:.4g} m) are not supported")
    pos_px = np.asarray(scan.positions_m, np.float64) / dx
    # window top-left corners: the position is the window centre
    corner = pos_px - frame_size / 2
    lo = np.floor(corner.min(axis=0)) - padding  # whole pixels: grids stay aligned
    positions = corner - lo
    shape = tuple(int(np.ceil(positions[:, i].max())) + frame_size + padding + 1 for i in (0, 1))
    origin = lo * dx
    return Problem(
        counts=counts,
        mask=mask_f,
        positions=positions,
        object_shape=shape,  # type: ignore[arg-type]
        pixel_size_m=float(dx),
        origin_m=(float(origin[0]), float(origin[1])),
        wavelength_m=lam,
    )
