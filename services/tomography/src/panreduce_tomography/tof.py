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
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.special

from panreduce import errors
from panreduce.kit.technique import StagedFile

H_OVER_MN = 3.956034e-7  # h / m_n in m^2/s: lambda[m] = H_OVER_MN * t[s] / L[m]


def wavelength_angstrom(tof_s: np.ndarray, flight_path_m: float) -> np.ndarray:
    """Neutron wavelength (angstrom) of time of flight ``tof_s`` (s) over ``flight_path_m``."""
    return H_OVER_MN * np.asarray(tof_s, np.float64) / flight_path_m * 1e10


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
    p0 = [guess, 0.01 * span, -np.log(max(t[lam > guess].mean(), 1e-6)) if np.any(lam > guess) else 0.1, 0.0,
          max(-np.log(max(t[lam < guess].mean(), 1e-6)) + np.log(max(t[lam > guess].mean(), 1e-6)), 0.01)
          if np.any(lam < guess) and np.any(lam > guess) else 0.1, 0.0]
    lo = [lam.min(), 1e-5, -5, -5, -5, -5]
    hi = [lam.max(), 0.5 * span, 10, 5, 10, 5]
    p0 = np.clip(p0, lo, hi)
    popt, pcov = scipy.optimize.curve_fit(edge_model, lam, t, p0=p0, bounds=(lo, hi), maxfev=20000)
    err = np.sqrt(np.clip(np.diag(pcov), 0, None))
    return {"edge": float(popt[0]), "edge_error": float(err[0]), "width": float(popt[1]),
            "width_error": float(err[1]), "params": popt.tolist()}


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
        rows.append({"bin": i, "tof_s": tt,
                     "wavelength_angstrom": float(wavelength_angstrom(tt, flight_path_m)) if tof is not None else tt,
                     "transmission": float(t)})
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


def read_fits_image(file: StagedFile) -> np.ndarray:
    from astropy.io import fits

    try:
        with fits.open(file.path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None and np.ndim(hdu.data) >= 2:
                    return np.asarray(hdu.data, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - astropy raises many types for damaged files
        raise errors.InvalidInput(file.name, f"is not a readable FITS image ({exc})") from None
    raise errors.InvalidInput(file.name, "holds no image")


def read_fits_stack(files: list[StagedFile]) -> tuple[np.ndarray, dict]:
    """One ToF stack (T, rows, cols) from the FITS files of one folder, sorted by name,
    with the overlap correction applied when ``*_ShutterCount.txt`` is present."""
    fits_files = sorted((f for f in files if Path(f.name).suffix.lower() in (".fits", ".fit", ".fts")),
                        key=lambda f: f.name)
    if not fits_files:
        raise errors.InvalidInput(files[0].name if files else "inputs", "no FITS images")
    stack = np.stack([read_fits_image(f) for f in fits_files])
    meta: dict = {"n_bins": len(fits_files)}
    spectra = [f for f in files if f.name.endswith("_Spectra.txt")]
    counts = [f for f in files if f.name.endswith("_ShutterCount.txt")]
    times = [f for f in files if f.name.endswith("_ShutterTimes.txt")]
    if spectra:
        tof = read_spectra(spectra[0].path)
        if len(tof) == len(stack):
            meta["tof_s"] = tof
    if counts and "tof_s" in meta:
        trig = read_shutter_counts(counts[0].path)
        st = np.loadtxt(times[0].path, ndmin=2)[:, -1] if times else None
        shut = shutter_of_bins(meta["tof_s"], st[: len(trig)] if st is not None else None, len(trig))
        stack = overlap_correction(stack, shut, trig).astype(np.float32)
        meta["overlap_corrected"] = True
    return stack, meta


def region_boxes(shape: tuple[int, int], regions: list | None = None,
                 grid: tuple[int, int] | None = None) -> list[tuple[int, int, int, int]]:
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
                raise errors.InvalidParameters([errors.FieldViolation(
                    "tof_regions", f"region {i} {[r0, r1, c0, c1]} is empty or outside the {rows} x {cols} detector")])
            out.append((r0, r1, c0, c1))
        return out
    if grid:
        gn, gm = grid
        if gn > rows or gm > cols:
            raise errors.InvalidParameters([errors.FieldViolation(
                "tof_region_grid", f"{gn} x {gm} regions do not fit the {rows} x {cols} detector")])
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
            raise errors.InvalidParameters([errors.FieldViolation(
                "tof_bands_angstrom", f"band {i} [{lo}, {hi}) holds no time bin (wavelengths "
                f"{lam.min():.3f}-{lam.max():.3f} angstrom)")])
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


def read_fits_tof(files: list[StagedFile], band: tuple[int, int] | None = None, *,
                  bands_angstrom: list | None = None, flight_path_m: float = 56.4,
                  regions: list | None = None, grid: tuple[int, int] | None = None) -> list:
    """A ToF tomography scan: one folder of FITS files per projection (sorted), open
    beam folders named ``ob*``/``open*``/``flat*``, dark folders ``dark*``; angles from a
    text file with 'angle' in its name (degrees), else evenly spaced over 180 degrees.

    Returns one :class:`~panreduce_tomography.io.Scan` per wavelength band: the
    projections are the counts summed over the band's time bins (``bands_angstrom``:
    bins whose wavelength is in ``[lo, hi)``; else the bins ``band``; else all bins).
    Each file is read once; only the band sums stay in memory. ``meta`` holds the
    frame-averaged spectra and the spectra of each pixel region (``regions`` boxes or a
    ``grid``; mean over the region and, for the sample, over the projections) of the
    sample, open beam and dark; with several bands, ``meta['centre_scan']`` is the
    all-bins scan the rotation centre is found on."""
    from panreduce_tomography.io import Scan, _angles_to_rad

    by_dir: dict[str, list[StagedFile]] = {}
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

    state: dict = {}

    def read(d: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict]:
        """Band sums, all-bin sum, frame spectrum and region spectra of one folder."""
        stack, meta = read_fits_stack(by_dir[d])
        if "bins" not in state:  # the first folder fixes the bins, bands and regions
            n_bins = len(stack)
            state["shape"] = stack.shape[1:]
            state["boxes"] = region_boxes(stack.shape[1:], regions, grid)
            if bands_angstrom:
                if meta.get("tof_s") is None:
                    raise errors.InvalidInput(d, "tof_bands_angstrom needs the time of flight per bin "
                                              "(a *_Spectra.txt file with one row per FITS image)")
                lam = wavelength_angstrom(meta["tof_s"], flight_path_m)
                state["bins"] = band_bins(lam, bands_angstrom)
                state["lam"] = [[float(lo), float(hi)] for lo, hi in bands_angstrom]
            elif band is not None:
                if not (0 <= band[0] < band[1] <= n_bins):
                    raise errors.InvalidInput(d, f"tof_band {band} is outside the {n_bins} time bins")
                state["bins"] = [np.arange(band[0], band[1])]
            else:
                state["bins"] = [np.arange(n_bins)]
            state["n_bins"] = n_bins
        elif len(stack) != state["n_bins"] or stack.shape[1:] != state["shape"]:
            raise errors.InvalidInput(d, f"{len(stack)} images of {stack.shape[1:]}, the first folder has "
                                      f"{state['n_bins']} of {state['shape']}")
        sums = [stack[idx].sum(0) for idx in state["bins"]]
        spec = stack.mean(axis=(1, 2))
        reg = np.stack([stack[:, r0:r1, c0:c1].mean(axis=(1, 2)) for r0, r1, c0, c1 in state["boxes"]])
        return sums, stack.sum(0), spec, reg, meta

    def read_role(dirs: list[str]) -> tuple[list[np.ndarray] | None, np.ndarray | None, np.ndarray | None,
                                            np.ndarray | None, list[dict]]:
        if not dirs:
            return None, None, None, None, []
        parts = [read(d) for d in dirs]
        bands_ = [np.stack([p[0][b] for p in parts]) for b in range(len(parts[0][0]))]
        total = np.stack([p[1] for p in parts])
        return (bands_, total, np.mean([p[2] for p in parts], axis=0), np.mean([p[3] for p in parts], axis=0),
                [p[4] for p in parts])

    p_bands, p_total, p_spec, p_reg, metas = read_role(proj_dirs)
    f_bands, f_total, f_spec, f_reg, _ = read_role(flat_dirs)
    d_bands, d_total, d_spec, d_reg, _ = read_role(dark_dirs)
    n_proj = len(proj_dirs)
    texts = [f for f in files if "angle" in Path(f.name).name.lower() and f.name.endswith(".txt")]
    if texts:
        angles = _angles_to_rad(np.loadtxt(texts[0].path, ndmin=1).ravel(), "deg", texts[0].name)
        if len(angles) != n_proj:
            raise errors.InvalidInput(texts[0].name, f"has {len(angles)} angles for {n_proj} projection folders")
    else:
        angles = np.linspace(0, np.pi, n_proj, endpoint=False)
    meta = {"tof_s": metas[0].get("tof_s"), "overlap_corrected": bool(metas[0].get("overlap_corrected")),
            "spectrum_sample": p_spec, "spectrum_open": f_spec, "spectrum_dark": 0.0 if d_spec is None else d_spec,
            "regions": state["boxes"], "region_sample": p_reg, "region_open": f_reg,
            "region_dark": 0.0 if d_reg is None else d_reg}

    def scan(proj: np.ndarray, darks: np.ndarray | None, flats: np.ndarray | None, extra: dict) -> Scan:
        return Scan(proj_dirs[0], "fits-tof", proj.shape, angles, "intensity", lambda r0, r1: proj[:, r0:r1, :],
                    darks, flats, meta={**meta, **extra})

    if not bands_angstrom:
        return [scan(p_bands[0], d_bands[0] if d_bands else None, f_bands[0] if f_bands else None, {})]
    centre = scan(p_total, d_total, f_total, {})
    out = []
    for b, idx in enumerate(state["bins"]):
        lo, hi = state["lam"][b]
        s = scan(p_bands[b], d_bands[b] if d_bands else None, f_bands[b] if f_bands else None,
                 {"band": b, "band_angstrom": [lo, hi], "band_bins": [int(idx[0]), int(idx[-1]) + 1],
                  "centre_scan": centre})
        s.time = 0.5 * (lo + hi)
        out.append(s)
    return out
