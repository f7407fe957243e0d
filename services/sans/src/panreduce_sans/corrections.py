"""The corrections of a TOF SANS reduction, as pure functions on numpy arrays.

Time in µs, wavelength in Å, lengths in m unless stated. Section numbers refer to the fact
sheet ``loq-sans.md``, which follows the ISIS SANS reducer in Mantid (algorithms RemoveBins,
CalculateFlatBackground, MaskBins, ConvertUnits, CalculateTransmission, LoadRKH,
SANSNormalizeToMonitor, SANSCreateWavelengthAndPixelAdjustment).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from panreduce import constants
from panreduce_sans.binning import bin_centres, rebin_counts, rebin_distribution

__all__ = [
    "FitResult",
    "absolute_scale",
    "direct_beam_histogram",
    "fit_transmission",
    "flat_background",
    "monitor_spectrum",
    "radius_wave_cut",
    "remove_bins_linear",
    "sample_volume",
    "time_mask_bins",
    "tof_to_wavelength",
    "transmission_ratio",
    "wide_angle_transmission",
]


def tof_to_wavelength(tof: np.ndarray, path_length: float | np.ndarray) -> np.ndarray:
    """Wavelength (Å) of a neutron with time of flight ``tof`` (µs) over ``path_length`` (m)."""
    return constants.NEUTRON_H_OVER_M * np.asarray(tof, dtype=np.float64) / path_length


def _bins_touching(edges: np.ndarray, t_min: float, t_max: float) -> tuple[int, int]:
    """First and last (inclusive) bin index of ``edges`` that overlap [t_min, t_max]."""
    first = int(np.searchsorted(edges, t_min, side="right") - 1)
    last = int(np.searchsorted(edges, t_max, side="left") - 1)
    return max(first, 0), min(last, edges.size - 2)


def remove_bins_linear(
    edges: np.ndarray, counts: np.ndarray, errors: np.ndarray, t_min: float, t_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the bins holding [t_min, t_max] by a straight line between their neighbours.

    Mantid RemoveBins with Interpolation=Linear (prompt-pulse removal, §5.5 step 1): the
    removed bins ``a..b`` become ``y_{a-1} + (y_{b+1} - y_{a-1}) * (j - a + 1)/(b - a + 2)``,
    linear in bin index, and their errors the mean of the two neighbours' errors.
    A window touching the first or last bin is left as is (nothing to interpolate from).
    """
    y = np.asarray(counts, dtype=np.float64).copy()
    e = np.asarray(errors, dtype=np.float64).copy()
    a, b = _bins_touching(np.asarray(edges), t_min, t_max)
    if a > b or a < 1 or b > y.size - 2:
        return y, e
    left, right = y[a - 1], y[b + 1]
    steps = np.arange(1, b - a + 2)
    y[a : b + 1] = left + (right - left) * steps / (b - a + 2)
    e[a : b + 1] = 0.5 * (e[a - 1] + e[b + 1])
    return y, e


def flat_background(
    edges: np.ndarray, counts: np.ndarray, errors: np.ndarray, t_min: float, t_max: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Subtract a flat (per µs) background: Mantid CalculateFlatBackground, Mode=Mean (§5.5).

    bg = mean of ``counts/width`` over the bins overlapping [t_min, t_max];
    sigma_bg^2 = sum((E/width)^2)/n^2. Every bin loses ``bg*width`` and gains ``sigma_bg``
    in quadrature (per µs); bins that would go negative become 0 with error
    ``max(E, bg*width)``. Returns (counts, errors, bg per µs).
    """
    edges = np.asarray(edges, dtype=np.float64)
    width = np.diff(edges)
    y = np.asarray(counts, dtype=np.float64) / width
    e = np.asarray(errors, dtype=np.float64) / width
    a, b = _bins_touching(edges, t_min, t_max)
    if a > b:
        raise ValueError(f"background window {t_min}-{t_max} µs lies outside the TOF range")
    n = b - a + 1
    bg = float(y[a : b + 1].mean())
    sigma_bg = float(np.sqrt(np.sum(e[a : b + 1] ** 2)) / n)
    y = y - bg
    e = np.sqrt(e * e + sigma_bg * sigma_bg)
    negative = y < 0
    y[negative] = 0.0
    e[negative] = np.maximum(e[negative], bg)
    return y * width, e * width, bg


def time_mask_bins(edges: np.ndarray, intervals: list[tuple[float, float]]) -> np.ndarray:
    """Bool per bin: True where the bin lies even partly inside one of ``intervals`` (MaskBins)."""
    edges = np.asarray(edges, dtype=np.float64)
    masked = np.zeros(edges.size - 1, dtype=bool)
    for t_min, t_max in intervals:
        masked |= (edges[1:] > t_min) & (edges[:-1] < t_max)
    return masked


def monitor_spectrum(
    tof_edges: np.ndarray,
    counts: np.ndarray,
    path_length: float,
    wavelength_edges: np.ndarray,
    *,
    prompt_peak: tuple[float, float] | None,
    background: tuple[float, float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """A monitor as counts per wavelength bin (SANSNormalizeToMonitor, §5.5).

    Prompt-peak removal (linear), flat background, conversion to wavelength over
    ``path_length`` and proportional rebinning onto ``wavelength_edges``.
    Returns (counts, errors) per wavelength bin.
    """
    y = np.asarray(counts, dtype=np.float64)
    e = np.sqrt(y)
    if prompt_peak is not None:
        y, e = remove_bins_linear(tof_edges, y, e, *prompt_peak)
    if background is not None:
        y, e, _ = flat_background(tof_edges, y, e, *background)
    lam = tof_to_wavelength(tof_edges, path_length)
    y_l, v_l, _ = rebin_counts(lam, y, e * e, wavelength_edges)
    return y_l, np.sqrt(v_l)


def transmission_ratio(
    sample_incident: tuple[np.ndarray, np.ndarray],
    sample_transmitted: tuple[np.ndarray, np.ndarray],
    direct_incident: tuple[np.ndarray, np.ndarray],
    direct_transmitted: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Unfitted transmission ``T = (S3/S2)/(D3/D2)`` with relative errors in quadrature.

    Each argument is (values, errors) on the same wavelength grid. Bins where any value is
    zero get T = 0 with error 0.
    """
    (s2, s2e), (s3, s3e), (d2, d2e), (d3, d3e) = (
        (np.asarray(v, dtype=np.float64), np.asarray(err, dtype=np.float64))
        for v, err in (sample_incident, sample_transmitted, direct_incident, direct_transmitted)
    )
    ok = (s2 > 0) & (s3 > 0) & (d2 > 0) & (d3 > 0)
    t = np.zeros_like(s2)
    te = np.zeros_like(s2)
    t[ok] = (s3[ok] / s2[ok]) / (d3[ok] / d2[ok])
    rel2 = sum((ee[ok] / vv[ok]) ** 2 for vv, ee in ((s2, s2e), (s3, s3e), (d2, d2e), (d3, d3e)))
    te[ok] = t[ok] * np.sqrt(rel2)
    return t, te


@dataclass(frozen=True)
class FitResult:
    method: str
    coefficients: np.ndarray  # polynomial coefficients, lowest order first (of ln T for "log")
    covariance: np.ndarray
    values: np.ndarray  # the fitted T at the requested wavelengths
    errors: np.ndarray  # 1-sigma of the fitted T there
    n_points: int


def fit_transmission(
    wavelength: np.ndarray,
    transmission: np.ndarray,
    errors: np.ndarray,
    evaluate_at: np.ndarray,
    *,
    method: Literal["log", "linear", "polynomial", "off"] = "log",
    order: int = 1,
    lambda_min: float | None = None,
    lambda_max: float | None = None,
) -> FitResult:
    """Fit T(lambda) and evaluate it at ``evaluate_at`` (CalculateTransmission, §5.6).

    * ``log``: weighted straight line ``ln T = a + b*lambda`` with weights ``(T/sigma_T)^2``;
      ``T_fit = exp(a + b*lambda)``, ``sigma = T_fit*sigma_line``;
    * ``linear``: ``T = a + b*lambda``; ``polynomial``: ``T = sum c_k lambda^k`` up to ``order``;
    * ``off``: the unfitted values (``evaluate_at`` must then be ``wavelength``).

    Only points with ``lambda_min <= lambda <= lambda_max``, T > 0 and sigma > 0 are fitted.
    """
    lam = np.asarray(wavelength, dtype=np.float64)
    t = np.asarray(transmission, dtype=np.float64)
    te = np.asarray(errors, dtype=np.float64)
    x_eval = np.asarray(evaluate_at, dtype=np.float64)
    if method == "off":
        if lam.shape != x_eval.shape or not np.allclose(lam, x_eval):
            raise ValueError("an unfitted transmission must be on the reduction's wavelength grid")
        return FitResult("off", np.zeros(0), np.zeros((0, 0)), t.copy(), te.copy(), int(lam.size))
    lo = -np.inf if lambda_min is None else lambda_min
    hi = np.inf if lambda_max is None else lambda_max
    use = (lam >= lo - 1e-9) & (lam <= hi + 1e-9) & (t > 0) & (te > 0)
    deg = 1 if method in ("log", "linear") else int(order)
    if use.sum() < deg + 1:
        raise ValueError(f"only {int(use.sum())} usable transmission points for a degree-{deg} fit")
    if method == "log":
        y = np.log(t[use])
        sy = te[use] / t[use]
    else:
        y = t[use]
        sy = te[use]
    x = lam[use]
    design = np.vander(x, deg + 1, increasing=True)
    w = 1.0 / sy**2
    normal = design.T @ (design * w[:, None])
    cov = np.linalg.inv(normal)
    coef = cov @ (design.T @ (w * y))
    basis = np.vander(x_eval, deg + 1, increasing=True)
    line = basis @ coef
    line_sigma = np.sqrt(np.einsum("ij,jk,ik->i", basis, cov, basis))
    if method == "log":
        values = np.exp(line)
        errs = values * line_sigma
    else:
        values = line
        errs = line_sigma
    return FitResult(method, coef, cov, values, errs, int(use.sum()))


def direct_beam_histogram(
    points: np.ndarray, values: np.ndarray, errors: np.ndarray, wavelength_edges: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Direct-beam efficiency D(lambda) rebinned onto ``wavelength_edges`` (§5.7).

    The RKH points are a distribution; their histogram edges are the midpoints between
    points, the outer ones half a spacing outside. The result is the width-weighted average
    over each new bin.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.size < 2 or not np.all(np.diff(x) > 0):
        raise ValueError("the direct-beam file needs at least two increasing wavelengths")
    mid = 0.5 * (x[1:] + x[:-1])
    edges = np.concatenate([[x[0] - (mid[0] - x[0])], mid, [x[-1] + (x[-1] - mid[-1])]])
    lo, hi = float(np.min(wavelength_edges)), float(np.max(wavelength_edges))
    if lo < edges[0] - 1e-9 or hi > edges[-1] + 1e-9:
        raise ValueError(
            f"the direct-beam file covers {edges[0]:.3f}-{edges[-1]:.3f} Å, not the reduction range {lo}-{hi} Å"
        )
    return rebin_distribution(edges, values, errors, wavelength_edges)


def radius_wave_cut(radius: np.ndarray, wavelength_edges: np.ndarray, radius_cut: float, wave_cut: float) -> np.ndarray:
    """Bool (npix, nlam): bins dropped by Q1D's RadiusCut/WaveCut (§5.9).

    For a pixel at ``radius < radius_cut`` (m), wavelength bins whose lower edge lies below
    ``wave_cut*(radius_cut - radius)/radius_cut`` (Å) are dropped. Zero cuts drop nothing.
    """
    radius = np.asarray(radius, dtype=np.float64)
    lam_lo = np.asarray(wavelength_edges, dtype=np.float64)[:-1]
    if radius_cut <= 0 or wave_cut <= 0:
        return np.zeros((radius.size, lam_lo.size), dtype=bool)
    cutoff = np.where(radius < radius_cut, wave_cut * (radius_cut - radius) / radius_cut, 0.0)
    return lam_lo[None, :] < cutoff[:, None]


def wide_angle_transmission(two_theta: np.ndarray, transmission: np.ndarray) -> np.ndarray:
    """Wide-angle transmission correction C(2theta, lambda) (SANSWideAngleCorrection, §5.7).

    ``C = (T0^A - 1)/(A ln T0)`` with ``A = 1/cos(2theta) - 1`` and ``T0`` the (fitted)
    transmission: the path through a flat sample grows as 1/cos(2theta). It multiplies the
    normalisation of each pixel and wavelength bin (Q1D's WavePixelAdj). C -> 1 as A -> 0.
    Returns (npix, nlam).
    """
    a = (1.0 / np.cos(np.asarray(two_theta, dtype=np.float64)) - 1.0)[:, None]
    log_t = np.log(np.clip(np.asarray(transmission, dtype=np.float64), 1e-300, None))[None, :]
    x = a * log_t
    small = np.abs(x) < 1e-8
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.where(small, 1.0 + 0.5 * x, np.expm1(x) / np.where(small, 1.0, x))
    return c


def sample_volume(shape: str, thickness: float, width: float, height: float) -> float:
    """Sample volume (mm^3) from the ISIS sample block (§5.8).

    Disc: ``t*pi*w^2/4``; Cylinder: ``h*pi*(w/2)^2``; FlatPlate/cuboid: ``w*h*t``.
    """
    s = shape.strip().lower()
    if s in ("disc", "disk", "3"):
        return thickness * np.pi * width * width / 4.0
    if s in ("cylinder", "cylinder axis up", "cylinder axis along", "1", "2"):
        return height * np.pi * (width / 2.0) ** 2
    if s in ("flatplate", "flat plate", "cuboid"):
        return width * height * thickness
    raise ValueError(f"unknown sample shape {shape!r} (Disc, Cylinder, FlatPlate)")


def absolute_scale(scale: float, volume_mm3: float, instrument_factor: float) -> float:
    """Constant multiplying the counts: ``scale*instrument_factor/V`` (LOQ: ``a*100/pi/V``)."""
    if volume_mm3 <= 0:
        raise ValueError("the sample volume must be positive")
    return scale * instrument_factor / volume_mm3


def wavelength_centres(edges: np.ndarray) -> np.ndarray:
    return bin_centres(edges)


# Gravity: the vertical drop of a neutron of wavelength lambda over a flight path L,
# d = g*m_n^2*lambda^2*L^2/(2*h^2) (panreduce.constants: m_n, h and the standard g).
def gravity_drop_per_a2_m2() -> float:
    """g m_n^2 / (2 h^2) in m of drop per (Å^2 m^2)."""
    return constants.STANDARD_GRAVITY * constants.NEUTRON_MASS**2 / (2.0 * constants.PLANCK**2) * 1e-20


def gravity_drop(wavelength: np.ndarray, l2: np.ndarray, *, extra_length: float = 0.0) -> np.ndarray:
    """Gravitational drop (m) at the detector, ``(npix, nlam)``, for pixels at ``l2`` (m) from
    the sample and wavelengths ``wavelength`` (Å).

    ``d = g m_n^2 lambda^2 (L2 + L_extra)^2 / (2 h^2)`` (Mantid's GravitySANSHelper, with
    ``extra_length`` the GRAVITY/LEXTRA flight path before the sample); about 0.54 mm at 10 Å
    over 4.15 m.
    """
    lam = np.asarray(wavelength, dtype=np.float64)[None, :]
    path = np.asarray(l2, dtype=np.float64)[:, None] + extra_length
    return gravity_drop_per_a2_m2() * lam**2 * path**2


def gravity_aim(y: np.ndarray, l2: np.ndarray, wavelength: np.ndarray, *, extra_length: float = 0.0) -> np.ndarray:
    """Height (m) each neutron was aimed at, ``(npix, nlam)``: a neutron detected at ``y`` fell
    by :func:`gravity_drop` on its way, so it left the sample aimed at ``y + d``."""
    return np.asarray(y, dtype=np.float64)[:, None] + gravity_drop(wavelength, l2, extra_length=extra_length)


def gravity_two_theta(
    x: np.ndarray, y: np.ndarray, dz: float, wavelength: np.ndarray, *, extra_length: float = 0.0
) -> np.ndarray:
    """Scattering angle 2theta (rad), ``(npix, nlam)``, corrected for gravity.

    A neutron detected at height ``y`` left the sample aimed at ``y + d(lambda)``, with ``d`` its
    drop (:func:`gravity_drop`); 2theta is the angle of that straight line to the beam.
    ``x``, ``y`` are pixel positions relative to the beam axis and ``dz`` the sample-to-plane
    distance (m).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    l2 = np.sqrt(x * x + y * y + dz * dz)
    y_aim = gravity_aim(y, l2, wavelength, extra_length=extra_length)
    return np.arctan2(np.hypot(x[:, None], y_aim), dz)


def sector_mask(x: np.ndarray, y: np.ndarray, phi_min: float, phi_max: float, *, mirror: bool = True) -> np.ndarray:
    """Bool per pixel: inside the azimuthal sector ``phi_min..phi_max`` (degrees, L/PHI).

    phi is ``atan2(y, x)`` about the beam axis (0° along +x, 90° up). A sector with
    ``phi_min > phi_max`` wraps through ±180°. ``mirror`` also keeps the opposite sector
    (phi + 180°), the L/PHI default; L/PHI/NOMIRROR turns it off.
    """
    phi = np.degrees(np.arctan2(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64)))

    def inside(p: np.ndarray) -> np.ndarray:
        if phi_min <= phi_max:
            return (p >= phi_min) & (p <= phi_max)
        return (p >= phi_min) | (p <= phi_max)

    keep = inside(phi)
    if mirror:
        keep |= inside(np.where(phi > 0, phi - 180.0, phi + 180.0))
    return keep


def line_mask(
    x: np.ndarray, y: np.ndarray, width: float, angle: float, *, x0: float = 0.0, y0: float = 0.0
) -> np.ndarray:
    """Bool per pixel: a beam-stop arm (MASK/LINE). The arm starts at ``(x0, y0)`` (m, by
    default the beam axis) and runs outwards at ``angle`` (degrees from +x); a pixel is masked
    when its centre lies at or beyond the start along the arm and within ``width/2`` (m) of
    its axis (Mantid's finite cylinder from the start point)."""
    a = np.radians(angle)
    dx = np.asarray(x, dtype=np.float64) - x0
    dy = np.asarray(y, dtype=np.float64) - y0
    along = dx * np.cos(a) + dy * np.sin(a)
    across = -dx * np.sin(a) + dy * np.cos(a)
    return (along >= 0) & (np.abs(across) <= 0.5 * width)
