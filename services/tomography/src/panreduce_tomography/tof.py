"""Neutron time-of-flight imaging (IMAT-style MCP/Timepix detectors).

- Event-overlap correction (A. S. Tremsin et al., "Optimization of Timepix count rate
  capabilities for the applications with a periodic input signal", J. Instrum. 9
  (2014) C05026): a pixel that counted an event earlier in the same shutter window is
  dead for the rest of it, so the counts of time bin ``i`` are divided by the
  probability that the pixel was still live, ``1 - sum_{j<i, same shutter} N_j / S``
  with ``S`` the number of triggers (frames) of that shutter window.
- Wavelength from time of flight: ``lambda = h t / (m_n L)``.
- Transmission spectra per region and Bragg-edge fitting (the edge profile of
  J. R. Santisteban et al., J. Appl. Cryst. 34 (2001) 289, simplified to an erfc
  step with linear backgrounds on both sides).
- Reading a FITS stack per projection (one image per time bin) with its
  ``*_Spectra.txt`` (time of flight per bin) and ``*_ShutterCount.txt`` files.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from panreduce import constants, errors, lazy
from panreduce_tomography.io import NamedPath, PathArg, named_paths

if TYPE_CHECKING:  # imported on first use (panreduce.lazy): the declaration stays light
    import scipy.optimize
    import scipy.special
else:
    scipy = lazy.module("scipy", "optimize", "special")


def wavelength_angstrom(tof_s: np.ndarray, flight_path_m: float) -> np.ndarray:
    """Neutron wavelength (angstrom) of time of flight ``tof_s`` (s) over ``flight_path_m``."""
    return constants.H_OVER_NEUTRON_MASS * np.asarray(tof_s, np.float64) / flight_path_m * 1e10


def overlap_correction(counts: np.ndarray, shutter_of_bin: np.ndarray, triggers: np.ndarray) -> np.ndarray:
    """Tremsin et al. (2014) overlap (dead-pixel) correction of a ToF stack.

    ``counts`` (T, ...) events per time bin and pixel, summed over ``triggers[s]``
    frames for shutter window ``s``; ``shutter_of_bin`` (T,) the window of each bin.
    Returns the corrected counts (float64)."""
    c = np.asarray(counts, np.float64)
    shutter_of_bin = np.asarray(shutter_of_bin, int)
    trig = np.asarray(triggers, np.float64)
    out = np.empty_like(c)
    for s in np.unique(shutter_of_bin):
        idx = np.nonzero(shutter_of_bin == s)[0]
        block = c[idx]
        before = np.cumsum(block, axis=0) - block  # events in earlier bins of this window
        live = 1.0 - before / max(trig[s], 1.0)
        out[idx] = block / np.clip(live, 1e-3, None)
    return out


def edge_model(lam: np.ndarray, edge: float, width: float, a0: float, b0: float, a1: float, b1: float) -> np.ndarray:
    """Transmission around a Bragg edge: ``exp(-(a0 + b0 lam))`` far above the edge,
    ``exp(-(a0 + b0 lam)) exp(-(a1 + b1 lam))`` below it, joined by an erfc step at
    ``edge`` of width ``width`` (angstrom)."""
    step = 0.5 * scipy.special.erfc(-(lam - edge) / (np.sqrt(2) * max(width, 1e-6)))
    far = np.exp(-(a0 + b0 * lam))
    near = np.exp(-(a1 + b1 * lam))
    return far * (near + (1 - near) * step)


def fit_bragg_edge(lam: np.ndarray, transmission: np.ndarray, *, guess: float | None = None) -> dict:
    """Fit :func:`edge_model` to one spectrum; returns the edge position and width with
    their standard errors (angstrom) and the fitted parameters."""
    lam = np.asarray(lam, np.float64)
    t = np.asarray(transmission, np.float64)
    ok = np.isfinite(t) & (t > 0)
    lam, t = lam[ok], t[ok]
    if guess is None:
        d = np.gradient(np.convolve(t, np.ones(5) / 5, mode="same"))
        guess = float(lam[2:-2][np.argmax(d[2:-2])])
    span = float(np.ptp(lam))
    p0 = [
        guess,
        0.01 * span,
        -np.log(max(t[lam > guess].mean(), 1e-6)) if np.any(lam > guess) else 0.1,
        0.0,
        max(-np.log(max(t[lam < guess].mean(), 1e-6)) + np.log(max(t[lam > guess].mean(), 1e-6)), 0.01)
        if np.any(lam < guess) and np.any(lam > guess)
        else 0.1,
        0.0,
    ]
    lo = [lam.min(), 1e-5, -5, -5, -5, -5]
    hi = [lam.max(), 0.5 * span, 10, 5, 10, 5]
    p0 = np.clip(p0, lo, hi)
    popt, pcov = scipy.optimize.curve_fit(edge_model, lam, t, p0=p0, bounds=(lo, hi), maxfev=20000)
    err = np.sqrt(np.clip(np.diag(pcov), 0, None))
    return {
        "edge": float(popt[0]),
        "edge_error": float(err[0]),
        "width": float(popt[1]),
        "width_error": float(err[1]),
        "params": popt.tolist(),
    }


def transmission_spectrum(meta: dict, flight_path_m: float) -> list[dict]:
    """Rows (bin, tof_s, wavelength_angstrom, transmission) of the frame-averaged
    transmission ``(sample - dark) / (open - dark)`` of a ToF scan."""
    sample, open_, dark = meta.get("spectrum_sample"), meta.get("spectrum_open"), meta.get("spectrum_dark", 0.0)
    if sample is None or open_ is None:
        return []
    trans = (np.asarray(sample) - dark) / np.maximum(np.asarray(open_) - dark, 1e-12)
    tof = meta.get("tof_s")
    rows = []
    for i, t in enumerate(trans):
        tt = float(tof[i]) if tof is not None else float("nan")
        rows.append(
            {
                "bin": i,
                "tof_s": tt,
                "wavelength_angstrom": float(wavelength_angstrom(tt, flight_path_m)) if tof is not None else tt,
                "transmission": float(t),
            }
        )
    return rows


def read_spectra(path: Path) -> np.ndarray:
    """The time of flight (s) per bin from an IMAT ``*_Spectra.txt`` (first column)."""
    vals = np.loadtxt(path, ndmin=2)
    return vals[:, 0]


def read_shutter_counts(path: Path) -> np.ndarray:
    """Triggers per shutter window from an IMAT ``*_ShutterCount.txt`` (second column)."""
    vals = np.loadtxt(path, ndmin=2)
    return vals[:, -1][vals[:, -1] > 0]


def shutter_of_bins(tof: np.ndarray, shutter_times: np.ndarray | None, n_windows: int) -> np.ndarray:
    """Shutter window of each time bin, from the windows' end times (s) when known,
    else the bins split evenly over ``n_windows``."""
    if shutter_times is not None and len(shutter_times):
        return np.clip(np.searchsorted(np.cumsum(shutter_times), tof), 0, len(shutter_times) - 1)
    return (np.arange(len(tof)) * n_windows) // max(len(tof), 1)


_BITPIX = {
    8: np.dtype("u1"),
    16: np.dtype(">i2"),
    32: np.dtype(">i4"),
    64: np.dtype(">i8"),
    -32: np.dtype(">f4"),
    -64: np.dtype(">f8"),
}


@dataclass
class FitsImage:
    """Where one FITS image's pixels lie in its file (read from the headers only)."""

    file: NamedPath
    hdu: int
    shape: tuple[int, int]  # (rows, cols)
    offset: int | None  # first data byte; None for tile-compressed images (read through astropy)
    dtype: np.dtype
    bscale: float = 1.0
    bzero: float = 0.0


def fits_image_info(path: PathArg, *, name: str | None = None) -> FitsImage:
    """The first 2-D image of a FITS file, from its headers (no pixel is read); damaged,
    truncated or image-less files raise InvalidInput naming the file (``name``: the
    caller's name for it, default the file name of ``path``)."""

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "File may have been truncated", UserWarning)  # checked below
        return _fits_image_info(NamedPath(Path(path), name or Path(path).name))


def _fits_image_info(file: NamedPath) -> FitsImage:
    from astropy.io import fits

    try:
        with fits.open(file.path, memmap=False) as hdul:
            for i, hdu in enumerate(hdul):
                hdr = hdu.header
                compressed = isinstance(hdu, fits.CompImageHDU)
                if not (compressed or isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU))):
                    continue
                naxis = int(hdr.get("ZNAXIS" if compressed else "NAXIS", 0))
                if naxis < 2:
                    continue
                dims = [int(hdr[f"{'Z' if compressed else ''}NAXIS{k}"]) for k in range(naxis, 0, -1)]
                if int(np.prod(dims[:-2])) != 1:
                    raise errors.InvalidInput(
                        file.name, f"holds a {naxis}-D image {dims}; one 2-D image per time bin is expected"
                    )
                shape = (dims[-2], dims[-1])
                if compressed:
                    return FitsImage(file, i, shape, None, np.dtype("f4"))
                dtype = _BITPIX.get(int(hdr["BITPIX"]))
                if dtype is None:
                    raise errors.InvalidInput(file.name, f"has an unknown BITPIX {hdr['BITPIX']}")
                offset = int(hdul.fileinfo(i)["datLoc"])
                need = offset + shape[0] * shape[1] * dtype.itemsize
                if file.path.stat().st_size < need:
                    raise errors.InvalidInput(
                        file.name, f"is truncated ({file.path.stat().st_size} bytes, the image needs {need})"
                    )
                return FitsImage(
                    file, i, shape, offset, dtype, float(hdr.get("BSCALE", 1.0)), float(hdr.get("BZERO", 0.0))
                )
    except errors.PanReduceError:
        raise
    except Exception as exc:
        raise errors.InvalidInput(file.name, f"is not a readable FITS image ({exc})") from None
    raise errors.InvalidInput(file.name, "holds no image")


def read_fits_rows(img: FitsImage, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of a FITS image as float64 (BSCALE/BZERO applied): for plain images
    only those rows' bytes are read from the file (one seek, one read)."""
    _rows, cols = img.shape
    if img.offset is None:
        from astropy.io import fits

        with fits.open(img.file.path, memmap=False) as hdul:
            return np.asarray(hdul[img.hdu].section[r0:r1, :], dtype=np.float64)
    row_bytes = cols * img.dtype.itemsize
    with open(img.file.path, "rb", buffering=0) as fh:
        fh.seek(img.offset + r0 * row_bytes)
        buf = fh.read((r1 - r0) * row_bytes)
    if len(buf) != (r1 - r0) * row_bytes:
        raise errors.InvalidInput(img.file.name, f"is truncated (rows {r0}:{r1} cannot be read)")
    out = np.frombuffer(buf, img.dtype).reshape(r1 - r0, cols).astype(np.float64)
    if img.bscale != 1.0:
        out *= img.bscale
    if img.bzero != 0.0:
        out += img.bzero
    return out


class FitsStack:
    """The FITS files of one folder (one image per time bin, sorted by name) with its
    ``*_Spectra.txt`` (time of flight per bin) and ``*_ShutterCount.txt`` /
    ``*_ShutterTimes.txt`` (overlap correction). Only the headers are read here; pixels
    are read by row range and corrected bin by bin (:meth:`bins`)."""

    def __init__(self, name: str, files: list[NamedPath]) -> None:
        fits_files = sorted(
            (f for f in files if Path(f.name).suffix.lower() in (".fits", ".fit", ".fts")), key=lambda f: f.name
        )
        if not fits_files:
            raise errors.InvalidInput(files[0].name if files else name, "no FITS images")
        self.name = name
        self.images = [fits_image_info(f.path, name=f.name) for f in fits_files]
        self.shape = self.images[0].shape
        for img in self.images[1:]:
            if img.shape != self.shape:
                raise errors.InvalidInput(
                    img.file.name, f"image of {img.shape}, {self.images[0].file.name} has {self.shape}"
                )
        self.n_bins = len(self.images)
        self.meta: dict = {"n_bins": self.n_bins}
        self.shutter: np.ndarray | None = None
        self.triggers: np.ndarray | None = None
        spectra = [f for f in files if f.name.endswith("_Spectra.txt")]
        counts = [f for f in files if f.name.endswith("_ShutterCount.txt")]
        times = [f for f in files if f.name.endswith("_ShutterTimes.txt")]
        if spectra:
            tof = read_spectra(spectra[0].path)
            if len(tof) == self.n_bins:
                self.meta["tof_s"] = tof
        if counts and "tof_s" in self.meta:
            trig = read_shutter_counts(counts[0].path)
            st = np.loadtxt(times[0].path, ndmin=2)[:, -1] if times else None
            self.shutter = shutter_of_bins(self.meta["tof_s"], st[: len(trig)] if st is not None else None, len(trig))
            self.triggers = np.asarray(trig, np.float64)
            self.meta["overlap_corrected"] = True

    def bins(self, r0: int, r1: int, first: int = 0, last: int | None = None):
        """Yield ``(bin, counts)`` for bins ``first..last`` of rows ``r0:r1`` (float64,
        overlap-corrected when shutter counts are known: the correction of a bin needs the
        earlier bins of its shutter window, which are read from the window's start, so
        exactly the result of :func:`overlap_correction` on those rows)."""
        last = self.n_bins - 1 if last is None else last
        start = first
        if self.shutter is not None:
            start = int(np.nonzero(self.shutter == self.shutter[first])[0][0])
        before = None
        for b in range(start, last + 1):
            raw = read_fits_rows(self.images[b], r0, r1)
            if self.shutter is None:
                if b >= first:
                    yield b, raw
                continue
            if before is None or self.shutter[b] != self.shutter[b - 1]:
                before = np.zeros_like(raw)
            live = 1.0 - before / max(self.triggers[self.shutter[b]], 1.0)
            before += raw
            if b >= first:
                yield b, raw / np.clip(live, 1e-3, None)

    def band_sums(self, r0: int, r1: int, bands: list[np.ndarray]) -> list[np.ndarray]:
        """The corrected counts of rows ``r0:r1`` summed over each band's bins."""
        lo = min(int(idx.min()) for idx in bands)
        hi = max(int(idx.max()) for idx in bands)
        member = [np.isin(np.arange(self.n_bins), idx) for idx in bands]
        out = [np.zeros((r1 - r0, self.shape[1])) for _ in bands]
        for b, counts in self.bins(r0, r1, lo, hi):
            for k, m in enumerate(member):
                if m[b]:
                    out[k] += counts
        return [o.astype(np.float32) for o in out]


def region_boxes(
    shape: tuple[int, int], regions: list | None = None, grid: tuple[int, int] | None = None
) -> list[tuple[int, int, int, int]]:
    """Pixel regions ``(row0, row1, col0, col1)`` (half-open) of a ``shape`` detector:
    the given boxes, else an ``N x M`` grid of equal regions, else the whole frame.
    Raises InvalidParameters naming ``tof_regions``/``tof_region_grid`` when a box
    lies outside the detector or is empty."""
    rows, cols = shape
    if regions:
        out = []
        for i, b in enumerate(regions):
            r0, r1, c0, c1 = (int(v) for v in b)
            if not (0 <= r0 < r1 <= rows and 0 <= c0 < c1 <= cols):
                raise errors.InvalidParameters(
                    [
                        errors.FieldViolation(
                            "tof.tof_regions",
                            f"region {i} {[r0, r1, c0, c1]} is empty or outside the {rows} x {cols} detector",
                        )
                    ]
                )
            out.append((r0, r1, c0, c1))
        return out
    if grid:
        gn, gm = grid
        if gn > rows or gm > cols:
            raise errors.InvalidParameters(
                [
                    errors.FieldViolation(
                        "tof.tof_region_grid", f"{gn} x {gm} regions do not fit the {rows} x {cols} detector"
                    )
                ]
            )
        re_, ce = np.linspace(0, rows, gn + 1).astype(int), np.linspace(0, cols, gm + 1).astype(int)
        return [(int(re_[i]), int(re_[i + 1]), int(ce[j]), int(ce[j + 1])) for i in range(gn) for j in range(gm)]
    return [(0, rows, 0, cols)]


def band_bins(lam: np.ndarray, bands_angstrom: list) -> list[np.ndarray]:
    """Time bins whose wavelength lies in each band ``[lo, hi)`` (angstrom); raises
    InvalidParameters naming ``tof_bands_angstrom`` for an empty or inverted band."""
    out = []
    for i, (lo, hi) in enumerate(bands_angstrom):
        idx = np.nonzero((lam >= lo) & (lam < hi))[0]
        if not hi > lo or idx.size == 0:
            raise errors.InvalidParameters(
                [
                    errors.FieldViolation(
                        "tof.tof_bands_angstrom",
                        f"band {i} [{lo}, {hi}) holds no time bin (wavelengths "
                        f"{lam.min():.3f}-{lam.max():.3f} angstrom)",
                    )
                ]
            )
        out.append(idx)
    return out


def region_transmission(meta: dict) -> np.ndarray | None:
    """(regions, bins) transmission ``(sample - dark) / (open - dark)`` of the region
    spectra in ``meta`` (sample averaged over the projections), None without open beam."""
    sample, open_ = meta.get("region_sample"), meta.get("region_open")
    if sample is None or open_ is None:
        return None
    dark = meta.get("region_dark", 0.0)
    return (np.asarray(sample) - dark) / np.maximum(np.asarray(open_) - dark, 1e-12)


def read_fits_tof(
    paths: Sequence[PathArg],
    band: tuple[int, int] | None = None,
    *,
    names: Sequence[str] | None = None,
    bands_angstrom: list | None = None,
    flight_path_m: float = 56.4,
    regions: list | None = None,
    grid: tuple[int, int] | None = None,
) -> list:
    """A ToF tomography scan: one folder of FITS files per projection (sorted), open
    beam folders named ``ob*``/``open*``/``flat*``, dark folders ``dark*``; angles from a
    text file with 'angle' in its name (degrees), else evenly spaced over 180 degrees.

    Returns one :class:`~panreduce_tomography.io.Scan` per wavelength band: the
    projections are the counts summed over the band's time bins (``bands_angstrom``:
    bins whose wavelength is in ``[lo, hi)``; else the bins ``band``; else all bins).
    Only the headers are read at first; one pass over every file, image by image,
    gives the spectra (and the band sums of the open beams and darks, kept in memory);
    the projections are then read by detector-row range (``Scan.reader``), each FITS
    file's rows read by one seek and one read and overlap-corrected on those rows
    only (bin by bin, from the start of each shutter window). ``meta`` holds the
    frame-averaged spectra and the spectra of each pixel region (``regions`` boxes or a
    ``grid``; mean over the region and, for the sample, over the projections) of the
    sample, open beam and dark; with several bands, ``meta['centre_scan']`` is the
    all-bins scan the rotation centre is found on. ``names``: the caller's name of each
    path (default: its file name); the folders are the parents of the names."""
    from panreduce_tomography.io import Scan, _angles_to_rad

    files = named_paths(paths, names)
    by_dir: dict[str, list[NamedPath]] = {}
    for f in files:
        by_dir.setdefault(str(Path(f.name).parent), []).append(f)
    proj_dirs, flat_dirs, dark_dirs = [], [], []
    for d in sorted(by_dir):
        if not any(Path(f.name).suffix.lower() in (".fits", ".fit", ".fts") for f in by_dir[d]):
            continue
        low = Path(d).name.lower()
        if re.match(r"(ob|open|flat)", low):
            flat_dirs.append(d)
        elif low.startswith("dark"):
            dark_dirs.append(d)
        else:
            proj_dirs.append(d)
    if not proj_dirs:
        raise errors.InvalidInput(files[0].name if files else "inputs", "no projection folders of FITS images")

    stacks = {d: FitsStack(d, by_dir[d]) for d in proj_dirs + flat_dirs + dark_dirs}
    first = stacks[proj_dirs[0]]
    n_bins, shape = first.n_bins, first.shape
    for d, st in stacks.items():  # the first folder fixes the bins, bands and regions
        if st.n_bins != n_bins or st.shape != shape:
            raise errors.InvalidInput(d, f"{st.n_bins} images of {st.shape}, the first folder has {n_bins} of {shape}")
    boxes = region_boxes(shape, regions, grid)
    lam_bands: list[list[float]] = []
    if bands_angstrom:
        if first.meta.get("tof_s") is None:
            raise errors.InvalidInput(
                proj_dirs[0],
                "tof_bands_angstrom needs the time of flight per bin "
                "(a *_Spectra.txt file with one row per FITS image)",
            )
        lam = wavelength_angstrom(first.meta["tof_s"], flight_path_m)
        bins = band_bins(lam, bands_angstrom)
        lam_bands = [[float(lo), float(hi)] for lo, hi in bands_angstrom]
    elif band is not None:
        if not (0 <= band[0] < band[1] <= n_bins):
            raise errors.InvalidInput(proj_dirs[0], f"tof_band {band} is outside the {n_bins} time bins")
        bins = [np.arange(band[0], band[1])]
    else:
        bins = [np.arange(n_bins)]
    member = [np.isin(np.arange(n_bins), idx) for idx in bins]

    def spectra(d: str, keep: bool) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray | None]:
        """One pass over a folder, bin by bin (one image in memory): the frame spectrum,
        the region spectra and (``keep``: darks/flats) the band and all-bin sums."""
        spec = np.zeros(n_bins)
        reg = np.zeros((len(boxes), n_bins))
        sums = [np.zeros(shape) for _ in bins] if keep else []
        total = np.zeros(shape) if keep else None
        for b, counts in stacks[d].bins(0, shape[0]):
            spec[b] = counts.mean()
            for k, (r0, r1, c0, c1) in enumerate(boxes):
                reg[k, b] = counts[r0:r1, c0:c1].mean()
            if keep:
                total += counts
                for k, m in enumerate(member):
                    if m[b]:
                        sums[k] += counts
        return spec, reg, sums, total

    def read_role(
        dirs: list[str], keep: bool
    ) -> tuple[list[np.ndarray] | None, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        if not dirs:
            return None, None, None, None
        parts = [spectra(d, keep) for d in dirs]
        bands_ = [np.stack([p[2][k] for p in parts]).astype(np.float32) for k in range(len(bins))] if keep else None
        total = np.stack([p[3] for p in parts]).astype(np.float32) if keep else None
        return bands_, total, np.mean([p[0] for p in parts], axis=0), np.mean([p[1] for p in parts], axis=0)

    _, _, p_spec, p_reg = read_role(proj_dirs, False)
    f_bands, f_total, f_spec, f_reg = read_role(flat_dirs, True)
    d_bands, d_total, d_spec, d_reg = read_role(dark_dirs, True)
    n_proj = len(proj_dirs)
    texts = [f for f in files if "angle" in Path(f.name).name.lower() and f.name.endswith(".txt")]
    if texts:
        angles = _angles_to_rad(np.loadtxt(texts[0].path, ndmin=1).ravel(), "deg", texts[0].name)
        if len(angles) != n_proj:
            raise errors.InvalidInput(texts[0].name, f"has {len(angles)} angles for {n_proj} projection folders")
    else:
        angles = np.linspace(0, np.pi, n_proj, endpoint=False)
    meta = {
        "tof_s": first.meta.get("tof_s"),
        "overlap_corrected": bool(first.meta.get("overlap_corrected")),
        "spectrum_sample": p_spec,
        "spectrum_open": f_spec,
        "spectrum_dark": 0.0 if d_spec is None else d_spec,
        "regions": boxes,
        "region_sample": p_reg,
        "region_open": f_reg,
        "region_dark": 0.0 if d_reg is None else d_reg,
    }

    def reader(idx: np.ndarray):
        def read(r0: int, r1: int) -> np.ndarray:
            """Rows r0:r1 of every projection: only those rows of each FITS file are read."""
            return np.stack([stacks[d].band_sums(r0, r1, [idx])[0] for d in proj_dirs])

        return read

    def scan(idx: np.ndarray, darks: np.ndarray | None, flats: np.ndarray | None, extra: dict) -> Scan:
        return Scan(
            proj_dirs[0],
            "fits-tof",
            (n_proj, *shape),
            angles,
            "intensity",
            reader(idx),
            darks,
            flats,
            meta={**meta, **extra},
        )

    if not bands_angstrom:
        return [scan(bins[0], d_bands[0] if d_bands else None, f_bands[0] if f_bands else None, {})]
    centre = scan(np.arange(n_bins), d_total, f_total, {})
    out = []
    for b, idx in enumerate(bins):
        lo, hi = lam_bands[b]
        s = scan(
            idx,
            d_bands[b] if d_bands else None,
            f_bands[b] if f_bands else None,
            {"band": b, "band_angstrom": [lo, hi], "band_bins": [int(idx[0]), int(idx[-1]) + 1], "centre_scan": centre},
        )
        s.time = 0.5 * (lo + hi)
        out.append(s)
    return out
