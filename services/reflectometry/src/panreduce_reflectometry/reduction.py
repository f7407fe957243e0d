"""One run from time of flight to R(Q): the steps of Mantid's ReflectometryReductionOne
(summation in λ or in Q), on :class:`TofRun` data. Pure functions, no I/O.

Named intermediates: ``Spectrum`` (a λ histogram), ``Transmission`` T(λ) per Å,
``RunReflectivity`` (the unbinned R over Q edges plus what the header needs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from panreduce_reflectometry import core
from panreduce_reflectometry.gravity import elevation_at_sample
from panreduce_reflectometry.runs import TofRun, pixel_two_theta

Summation = Literal["lambda", "q"]
ReductionType = Literal["normal", "non_flat_sample", "divergent_beam"]


@dataclass(frozen=True)
class Transmission:
    """T(λ): the ROI-summed direct-beam spectrum divided by its own I0, per Å, on edges."""

    edges: np.ndarray  # Å
    value: np.ndarray  # per Å
    var: np.ndarray
    source: str  # run name(s) or table name

    def density_at(self, wavelength: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T and σ²_T at λ (bin centres), by linear interpolation; NaN outside its range."""
        centre = 0.5 * (self.edges[:-1] + self.edges[1:])
        t = np.interp(wavelength, centre, self.value, left=np.nan, right=np.nan)
        v = np.interp(wavelength, centre, self.var, left=np.nan, right=np.nan)
        return t, v


@dataclass(frozen=True)
class AlgorithmicCorrection:
    """Mantid's ``CorrectionAlgorithm`` when no transmission run is given
    (ReflectometryReductionOne, Operation = Divide): the monitor-normalised counts per λ
    bin are divided by f(λ) at the bin centre (λ in Å), errors by the same factor.

    * ``polynomial`` (PolynomialCorrection, ``Polynomial`` = C0, C1, C2, …):
      f(λ) = C0 + C1·λ + C2·λ² + …
    * ``exponential`` (ExponentialCorrection, ``C0``, ``C1``): f(λ) = C0·exp(−C1·λ)."""

    kind: Literal["polynomial", "exponential"]
    coefficients: tuple[float, ...]  # polynomial: C0, C1, ...; exponential: C0, C1

    def value_at(self, wavelength: np.ndarray) -> np.ndarray:
        lam = np.asarray(wavelength, dtype=float)
        if self.kind == "exponential":
            c0, c1 = self.coefficients
            return c0 * np.exp(-c1 * lam)
        return np.polynomial.polynomial.polyval(lam, np.asarray(self.coefficients, dtype=float))

    @property
    def source(self) -> str:
        if self.kind == "exponential":
            return f"ExponentialCorrection C0={self.coefficients[0]:g}, C1={self.coefficients[1]:g}"
        return "PolynomialCorrection " + ", ".join(f"C{i}={c:g}" for i, c in enumerate(self.coefficients))


def divide_by_correction(
    edges: np.ndarray, y: np.ndarray, v: np.ndarray, correction: AlgorithmicCorrection
) -> tuple[np.ndarray, np.ndarray]:
    """y/f(λ), v/f(λ)² at the bin centres of ``edges`` (1-D, or one row per pixel); NaN where f ≤ 0."""
    f = correction.value_at(0.5 * (edges[..., :-1] + edges[..., 1:]))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, y / f, np.nan), np.where(f > 0, v / f**2, np.nan)


@dataclass(frozen=True)
class RunReflectivity:
    run: str
    theta_deg: float  # incidence angle used for Q
    two_theta_r_deg: float  # reference angle of the summed pixels
    roi: tuple[int, int]  # spectrum numbers, inclusive
    background_roi: tuple[int, ...] | None
    wavelength_range: tuple[float, float]
    q_edges: np.ndarray  # ascending, unbinned (one bin per λ bin)
    r: np.ndarray
    var: np.ndarray
    lambda_edges: np.ndarray  # λ (or λ_V) edges the Q edges came from, ascending
    i0: float
    normalisation: str  # "transmission", "polynomial", "exponential" or "monitor"
    summation: Summation
    reduction_type: ReductionType
    notes: list[str] = field(default_factory=list)


def roi_rows(spectra: np.ndarray, roi: tuple[int, int], what: str) -> np.ndarray:
    """Rows of the spectra numbered roi[0]..roi[1] (inclusive); ValueError names what is missing."""
    lo, hi = roi
    rows = np.flatnonzero((spectra >= lo) & (spectra <= hi))
    if rows.size != hi - lo + 1:
        raise ValueError(f"{what} {lo}-{hi}: the detector holds spectra {spectra.min()}-{spectra.max()}")
    return rows


def background_rows(spectra: np.ndarray, background: tuple[int, ...]) -> np.ndarray:
    """Rows of a background region: one spectrum range (lo, hi), or two (lo, hi, lo2, hi2),
    one on each side of the beam, whose per-pixel average is the linear background's value
    midway between them."""
    if len(background) not in (2, 4):
        raise ValueError(f"background_roi {background}: one or two spectrum ranges")
    return np.concatenate(
        [roi_rows(spectra, (background[i], background[i + 1]), "background_roi") for i in range(0, len(background), 2)]
    )


def ranges_text(background: tuple[int, ...]) -> str:
    """'34-78' or '34-78 and 144-188'."""
    return " and ".join(f"{background[i]}-{background[i + 1]}" for i in range(0, len(background), 2))


def monitor_i0(
    run: TofRun, *, background_angstrom: tuple[float, float] | None, integration_angstrom: tuple[float, float] | None
) -> tuple[float, float]:
    """The I0 normalisation (value, variance): the integrated, background-subtracted
    monitor, or the file's scalar monitor count."""
    if run.monitor_counts is not None and run.monitor_flight_path_m:
        edges = core.tof_to_wavelength(run.tof_edges_us - run.tof_offset_us, run.monitor_flight_path_m)
        rng = integration_angstrom or run.instrument.wavelength_range_angstrom
        m = core.integrate_monitor(
            edges, run.monitor_counts, background_angstrom=background_angstrom, integration_angstrom=rng
        )
        return m.value, m.variance
    if run.monitor_total is not None:
        return float(run.monitor_total), float(run.monitor_total)
    raise ValueError("the run has no monitor to normalise by")


def _lambda_edges(run: TofRun, flight_path_m: np.ndarray) -> np.ndarray:
    return core.tof_to_wavelength(run.tof_edges_us - run.tof_offset_us, flight_path_m)


def transmission_from_run(
    run: TofRun,
    *,
    roi: tuple[int, int],
    background_roi: tuple[int, ...] | None,
    wavelength_range: tuple[float, float],
    monitor_background: tuple[float, float] | None,
    monitor_integration: tuple[float, float] | None,
) -> Transmission:
    """CreateTransmissionWorkspace: ROI summed in TOF (background subtracted when asked),
    converted to λ with the ROI centre's flight path, divided by the run's I0, per Å,
    cropped to the wavelength range."""
    counts, var = run.counts, run.variances
    if background_roi is not None:
        counts, var = core.subtract_background(counts, var, background_rows(run.spectra, background_roi))
    rows = roi_rows(run.spectra, roi, "transmission roi")
    y = counts[rows].sum(axis=0)
    v = var[rows].sum(axis=0)
    _, _, l2 = pixel_two_theta(run, theta_deg=0.0)
    centre = rows[len(rows) // 2]
    edges = _lambda_edges(run, np.asarray(run.source_to_sample_m + l2[centre]))
    i0, i0_var = monitor_i0(run, background_angstrom=monitor_background, integration_angstrom=monitor_integration)
    width = np.diff(edges)
    t = y / i0 / width
    tv = (v / i0**2 + (y / i0) ** 2 * i0_var / i0**2) / width**2
    keep = (edges[:-1] >= wavelength_range[0]) & (edges[1:] <= wavelength_range[1])
    idx = np.flatnonzero(keep)
    if idx.size < 2:
        raise ValueError("the transmission run has no bins inside the wavelength range")
    return Transmission(edges[idx[0] : idx[-1] + 2], t[idx], tv[idx], run.source)


def reduce_run(
    run: TofRun,
    *,
    theta_deg: float,
    roi: tuple[int, int],
    background_roi: tuple[int, ...] | None,
    summation: Summation,
    reduction_type: ReductionType,
    wavelength_range: tuple[float, float],
    monitor_background: tuple[float, float] | None,
    monitor_integration: tuple[float, float] | None,
    transmission: Transmission | None,
    correction: AlgorithmicCorrection | None = None,
    gravity: tuple[float, float] | None = None,
) -> RunReflectivity:
    """Reduce one run to R over unbinned Q edges.

    Order (Mantid ReflectometryReductionOne v2): background (per-detector average of the
    side pixels, in TOF) → TOF→λ per pixel → ÷ I0 → [sum in λ → crop → ÷ T(λ)] or
    [÷ T(λ) per pixel → sum along constant Q → crop] → Q = 4π sin θ/λ. With no
    transmission the result is counts/I0 per λ bin (no absolute scale), divided by the
    ``correction`` f(λ) when one is given (in place of T(λ), at the same step).
    ``gravity`` = (collimation slit distance, first slit → sample) [m]: Q uses the
    wavelength-dependent θ(λ) = θ − ε(λ) of :mod:`gravity` instead of one θ."""
    if transmission is not None and correction is not None:
        raise ValueError("transmission: give transmission runs/table or a correction_algorithm, not both")
    counts, var = run.counts, run.variances
    notes: list[str] = []
    if background_roi is not None:
        counts, var = core.subtract_background(counts, var, background_rows(run.spectra, background_roi))
    rows = roi_rows(run.spectra, roi, "roi")
    tt, tt_width, l2 = pixel_two_theta(run, theta_deg=theta_deg)
    ref = rows[(len(rows) - 1) // 2]  # f + (b − f)//2
    two_theta_r = float(tt[ref])
    i0, i0_var = monitor_i0(run, background_angstrom=monitor_background, integration_angstrom=monitor_integration)
    if not i0 > 0:
        raise ValueError("the I0 monitor holds no counts in its integration range")
    lam_lo, lam_hi = wavelength_range
    if summation == "lambda":
        y = counts[rows].sum(axis=0) / i0
        v = var[rows].sum(axis=0) / i0**2 + y**2 * i0_var / i0**2
        edges = _lambda_edges(run, np.asarray(run.source_to_sample_m + l2[ref]))
        keep = (edges[:-1] >= lam_lo) & (edges[1:] <= lam_hi)
        idx = np.flatnonzero(keep)
        if idx.size < 2:
            raise ValueError(f"no λ bins inside {lam_lo}–{lam_hi} Å")
        edges = edges[idx[0] : idx[-1] + 2]
        y, v = y[idx], v[idx]
        if transmission is not None:
            y, v = _divide_by_transmission(edges, y, v, transmission)
        elif correction is not None:
            y, v = divide_by_correction(edges, y, v, correction)
        theta = math.radians(theta_deg)
        if reduction_type != "normal":
            notes.append(f"reduction_type {reduction_type} has no effect with summation in λ")
    else:
        theta0 = math.radians(theta_deg) if reduction_type == "divergent_beam" else 0.0
        if reduction_type == "normal":
            notes.append(
                "summation in Q with reduction_type normal: lines of constant Q from θ0 = 0 (as non_flat_sample)"
            )
        pix = rows
        pedges = _lambda_edges(run, run.source_to_sample_m + l2[pix])
        y = counts[pix] / i0
        v = var[pix] / i0**2 + y**2 * i0_var / i0**2
        if transmission is not None:
            for k in range(pix.size):
                y[k], v[k] = _divide_by_transmission(pedges[k], y[k], v[k], transmission)
        elif correction is not None:
            y, v = divide_by_correction(pedges, y, v, correction)
        first, last = pix[0], pix[-1]
        if tt[first] > tt[last]:
            first, last = last, first
        vmin = lam_lo * math.sin(two_theta_r - theta0) / math.sin(tt[first] - 0.5 * tt_width[first] - theta0)
        vmax = lam_hi * math.sin(two_theta_r - theta0) / math.sin(tt[last] + 0.5 * tt_width[last] - theta0)
        # Mantid's IncludePartialBins=false uses the inner corners: the smaller λ_V at λ_min, the larger at λ_max
        vmin_in = lam_lo * math.sin(two_theta_r - theta0) / math.sin(tt[first] + 0.5 * tt_width[first] - theta0)
        vmax_in = lam_hi * math.sin(two_theta_r - theta0) / math.sin(tt[last] - 0.5 * tt_width[last] - theta0)
        vmin, vmax = max(vmin, vmin_in), min(vmax, vmax_in)
        w = float(np.mean(np.diff(pedges[len(pix) // 2])))
        n = max(math.ceil((vmax - vmin) / w), 1)
        edges = vmin + w * np.arange(n + 1)
        y, v = core.sum_in_q(
            pedges,
            y,
            v,
            two_theta=tt[pix],
            two_theta_width=tt_width[pix],
            two_theta_r=two_theta_r,
            theta0=theta0,
            output_edges=edges,
        )
        if reduction_type == "divergent_beam":
            two_theta_r = 0.5 * two_theta_r + theta0  # Mantid: the detector angle ConvertUnits then halves
        theta = 0.5 * two_theta_r
    if gravity is not None:
        eps = elevation_at_sample(edges, theta, collimation_m=gravity[0], slit_to_sample_m=gravity[1])
        q_edges = (4.0 * math.pi * np.sin(theta - eps) / edges)[::-1]
        notes.append(
            f"gravity: θ(λ) from {math.degrees(theta - eps[0]):.4f}° at {edges[0]:.2f} Å to "
            f"{math.degrees(theta - eps[-1]):.4f}° at {edges[-1]:.2f} Å"
        )
        if np.any(np.diff(q_edges) <= 0):
            raise ValueError("gravity: the corrected Q edges do not increase (slits or λ range implausible)")
    else:
        q_edges = core.wavelength_to_q(edges, theta)[::-1]
    return RunReflectivity(
        run=run.run_number,
        theta_deg=math.degrees(theta),
        two_theta_r_deg=math.degrees(two_theta_r),
        roi=roi,
        background_roi=background_roi,
        wavelength_range=wavelength_range,
        q_edges=q_edges,
        r=y[::-1].copy(),
        var=v[::-1].copy(),
        lambda_edges=edges,
        i0=i0,
        normalisation="transmission"
        if transmission is not None
        else correction.kind
        if correction is not None
        else "monitor",
        summation=summation,
        reduction_type=reduction_type,
        notes=notes,
    )


def _divide_by_transmission(
    edges: np.ndarray, y: np.ndarray, v: np.ndarray, t: Transmission
) -> tuple[np.ndarray, np.ndarray]:
    """R = (Y/Δλ) / T(λ): a dimensionless ratio per bin; NaN where T is missing or ≤ 0."""
    width = np.diff(edges)
    centre = 0.5 * (edges[:-1] + edges[1:])
    tv, tvar = t.density_at(centre)
    with np.errstate(divide="ignore", invalid="ignore"):
        dens = y / width
        r = np.where(tv > 0, dens / tv, np.nan)
        rv = np.where(tv > 0, v / width**2 / tv**2 + r**2 * tvar / tv**2, np.nan)
    return r, rv


def binned(
    result: RunReflectivity, *, dq_q: float, anchor: float, q_range: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R on aligned log bins anchor·(1 + dq_q)^k (width-averaged), cropped to ``q_range``
    (default: the data's range); empty bins dropped at both ends."""
    q = result.q_edges
    good = np.isfinite(result.r)
    if not good.any():
        raise ValueError(f"run {result.run}: no finite reflectivity")
    lo = float(q[:-1][good].min())
    hi = float(q[1:][good].max())
    if q_range is not None:
        lo, hi = max(lo, q_range[0]), min(hi, q_range[1])
        if not hi > lo:
            raise ValueError(f"run {result.run}: q_range {q_range[0]}–{q_range[1]} misses its data ({lo:.4g}–{hi:.4g})")
    edges = core.aligned_log_edges(lo, hi, dq_q, anchor)
    r, var = core.rebin_distribution(q, result.r, result.var, edges)
    centre = 0.5 * (edges[:-1] + edges[1:])
    r[(centre < lo) | (centre > hi)] = np.nan
    finite = np.flatnonzero(np.isfinite(r))
    if finite.size == 0:
        raise ValueError(f"run {result.run}: no Q bin holds data")
    a, b = finite[0], finite[-1]
    return edges[a : b + 2], r[a : b + 1], var[a : b + 1]


def find_specular(counts: np.ndarray, spectra: np.ndarray) -> tuple[tuple[int, int], tuple[int, ...] | None, float]:
    """The specular (or direct) beam on the detector: the pixel profile summed over time
    of flight, its maximum and full width at half maximum (pixels). Returns the ROI
    (centre ± FWHM, spectrum numbers), the background ROI (1 FWHM away, 2 FWHM wide) on
    both sides when both fit — their average is a sloping background's value under the
    beam, as refnx takes it from both sides — else on the side that fits (None when
    neither), and the centroid. The background is taken next to the beam because the
    diffuse background is not straight across the detector (Platypus 710: it falls by
    half from 10 to 60 px above the beam and rises again near the detector's edge), so
    farther regions misjudge it under the beam."""
    prof = np.asarray(counts, dtype=float).sum(axis=1)
    if not prof.max() > 0:
        raise ValueError("the detector holds no counts to find the beam in")
    k = int(np.argmax(prof))
    half = 0.5 * prof[k]
    lo = k
    while lo > 0 and prof[lo - 1] > half:
        lo -= 1
    hi = k
    while hi < prof.size - 1 and prof[hi + 1] > half:
        hi += 1
    fwhm = max(hi - lo + 1, 1)
    a, b = max(k - fwhm, 0), min(k + fwhm, prof.size - 1)
    sel = np.arange(a, b + 1)
    centroid = float(np.sum(sel * prof[sel]) / np.sum(prof[sel]))
    gap, width = fwhm, 2 * fwhm
    below = (a - gap - width, a - gap)
    above = (b + gap, b + gap + width)
    bg: tuple[int, ...] | None = None
    if above[1] < prof.size and below[0] >= 0:
        bg = (int(spectra[below[0]]), int(spectra[below[1]]), int(spectra[above[0]]), int(spectra[above[1]]))
    elif above[1] < prof.size and (prof.size - above[1]) >= below[0]:
        bg = (int(spectra[above[0]]), int(spectra[above[1]]))
    elif below[0] >= 0:
        bg = (int(spectra[below[0]]), int(spectra[below[1]]))
    elif above[1] < prof.size:
        bg = (int(spectra[above[0]]), int(spectra[above[1]]))
    return (int(spectra[a]), int(spectra[b])), bg, centroid


def transmission_from_table(
    wavelength: np.ndarray, value: np.ndarray, error: np.ndarray, *, source: str, wavelength_range: tuple[float, float]
) -> Transmission:
    """T(λ) from a table of bin centres λ [Å], T per Å and σT; it must cover the range."""
    lam = np.asarray(wavelength, dtype=float)
    t = np.asarray(value, dtype=float)
    e = np.asarray(error, dtype=float)
    if lam.size < 2 or not (np.all(np.isfinite(lam)) and np.all(np.isfinite(t)) and np.all(np.isfinite(e))):
        raise ValueError("needs at least two rows of finite λ, T, σT")
    if np.any(np.diff(lam) <= 0):
        raise ValueError("λ must increase from row to row")
    if np.any(t <= 0):
        raise ValueError("T must be positive")
    if lam[0] > wavelength_range[0] or lam[-1] < wavelength_range[1]:
        raise ValueError(
            f"covers {lam[0]:.3g}–{lam[-1]:.3g} Å, not the wavelength range "
            f"{wavelength_range[0]}–{wavelength_range[1]} Å"
        )
    mid = 0.5 * (lam[1:] + lam[:-1])
    edges = np.concatenate(([lam[0] - (mid[0] - lam[0])], mid, [lam[-1] + (lam[-1] - mid[-1])]))
    return Transmission(edges, t, e**2, source)


def join_transmissions(
    first: Transmission, second: Transmission, *, overlap: tuple[float, float] | None
) -> tuple[Transmission, float]:
    """Two transmission spectra as one (Stitch1D in λ): the second scaled onto the first by
    the ratio of their integrals over the overlap; their mean inside, each outside it."""
    lo = max(first.edges[0], second.edges[0])
    hi = min(first.edges[-1], second.edges[-1])
    if overlap is not None:
        lo, hi = max(lo, overlap[0]), min(hi, overlap[1])
    if not hi > lo:
        raise ValueError("the two transmission runs do not overlap in λ")
    edges = first.edges
    t2, v2 = second.density_at(0.5 * (edges[:-1] + edges[1:]))
    inside = (edges[:-1] >= lo) & (edges[1:] <= hi) & np.isfinite(t2)
    if not inside.any():
        raise ValueError("no common λ bin in the transmission overlap")
    f = float(np.sum(first.value[inside]) / np.sum(t2[inside]))
    above_edges = second.edges[second.edges >= edges[-1]]
    centre2 = 0.5 * (second.edges[:-1] + second.edges[1:])
    above = centre2 > edges[-1]
    value = np.where(inside, 0.5 * (first.value + f * np.nan_to_num(t2)), first.value)
    var = np.where(inside, 0.25 * (first.var + f * f * np.nan_to_num(v2)), first.var)
    if above.any() and above_edges.size:
        edges = np.concatenate((edges, second.edges[1:][above]))
        value = np.concatenate((value, f * second.value[above]))
        var = np.concatenate((var, f * f * second.var[above]))
    return Transmission(edges, value, var, f"{first.source}+{second.source}"), f
