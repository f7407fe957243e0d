"""Azimuthal integration with pyFAI: geometry, corrections, 1-D curves and 2-D cakes.

pyFAI (Kieffer & Karkoulis 2013, J. Phys. Conf. Ser. 425 202012; Kieffer et al. 2020,
J. Appl. Cryst. 53 949) does the integration; this module sets it up once per
reduction (geometry, mask, dark, flat, solid angle, polarisation, binning), then
integrates frame after frame with the per-frame normalisation, keeping pyFAI's
sparse-matrix engine cached so that the per-frame cost is pyFAI's alone.

Conventions
-----------
* Pixel coordinates are pyFAI's (= Fit2D's): column ``x`` and row ``y`` of the array
  as stored (row 0 first), the corner of pixel (0, 0) at (0, 0) and its centre at
  (0.5, 0.5).
* ``q = 4 pi sin(theta) / lambda`` in 1/Å; ``chi`` in degrees, pyFAI's azimuth.
* Intensities: ``I = (raw - dark) / (flat * solid_angle * polarisation) / norm`` where
  ``norm = monitor * transmission * exposure * thickness / absolute_scale``; the solid
  angle is relative to the pixel at the point of normal incidence (cos^3 2θ for a flat
  untilted detector), as in pyFAI.
* Poisson errors: the variance of each pixel is its raw count (plus the dark's),
  propagated through the same weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

HC_KEV_A = 12.398419843320026  # h c in keV Å
DUMMY = -1.0e9  # value of pixels masked frame by frame (exact in float32; below every threshold)

Splitting = Literal["no", "bbox", "full"]
ErrorModel = Literal["poisson", "azimuthal", "none"]


@dataclass(frozen=True)
class Geometry:
    """A flat detector's geometry in Fit2D-like terms (pyFAI pixel convention)."""

    distance_m: float  # sample to point of normal incidence
    wavelength_m: float
    center_x_px: float  # column of the direct beam (pyFAI/Fit2D convention)
    center_y_px: float  # row of the direct beam
    pixel1_m: float  # pixel height (rows)
    pixel2_m: float  # pixel width (columns)
    tilt_deg: float = 0.0
    tilt_plane_deg: float = 0.0
    # pyFAI's (dist, poni1, poni2, rot1, rot2, rot3) (m, rad) when the geometry comes from
    # NeXus transformations: used as is (it keeps rot3, which Fit2D terms drop); the
    # Fit2D fields above are then its equivalent (beam centre, direct distance, tilt)
    poni: tuple[float, float, float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.poni is not None:
            object.__setattr__(self, "poni", tuple(float(v) for v in self.poni))

    @property
    def wavelength_A(self) -> float:
        return self.wavelength_m * 1e10

    def q_of_radius(self, r_m: np.ndarray | float) -> np.ndarray:
        """q (1/Å) of a distance from the beam centre on an untilted detector (m)."""
        two_theta = np.arctan(np.asarray(r_m, dtype=float) / self.distance_m)
        return 4 * np.pi * np.sin(two_theta / 2) / self.wavelength_A


def make_integrator(geometry: Geometry, shape: tuple[int, int]):  # -> AzimuthalIntegrator
    """A pyFAI AzimuthalIntegrator for ``geometry`` and a detector of ``shape`` pixels."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    det = Detector(pixel1=geometry.pixel1_m, pixel2=geometry.pixel2_m, max_shape=tuple(shape))
    if geometry.poni is not None:
        dist, poni1, poni2, rot1, rot2, rot3 = geometry.poni
        ai = AzimuthalIntegrator(dist=dist, poni1=poni1, poni2=poni2, rot1=rot1, rot2=rot2, rot3=rot3,
                                 detector=det, wavelength=geometry.wavelength_m)
        return ai
    ai = AzimuthalIntegrator(detector=det)
    ai.setFit2D(geometry.distance_m * 1e3, geometry.center_x_px, geometry.center_y_px,
                tilt=geometry.tilt_deg, tiltPlanRotation=geometry.tilt_plane_deg,
                pixelX=geometry.pixel2_m * 1e6, pixelY=geometry.pixel1_m * 1e6)
    ai.wavelength = geometry.wavelength_m
    return ai


def geometry_of(ai) -> Geometry:  # noqa: ANN001
    """The Fit2D-like geometry of a pyFAI integrator (e.g. one loaded from a PONI file)."""
    f2d = ai.getFit2D()
    return Geometry(
        distance_m=f2d["directDist"] * 1e-3, wavelength_m=float(ai.wavelength),
        center_x_px=f2d["centerX"], center_y_px=f2d["centerY"],
        pixel1_m=float(ai.detector.pixel1), pixel2_m=float(ai.detector.pixel2),
        tilt_deg=f2d["tilt"], tilt_plane_deg=f2d["tiltPlanRotation"],
    )


def fit2d_of_poni(poni: tuple[float, ...], pixel1_m: float, pixel2_m: float) -> dict[str, float]:
    """Fit2D-like terms (direct distance m, beam centre px, tilt and its plane, degrees) of
    pyFAI's (dist, poni1, poni2, rot1, rot2, rot3)."""
    from pyFAI.detectors import Detector
    from pyFAI.integrator.azimuthal import AzimuthalIntegrator

    dist, poni1, poni2, rot1, rot2, rot3 = poni
    ai = AzimuthalIntegrator(dist=dist, poni1=poni1, poni2=poni2, rot1=rot1, rot2=rot2, rot3=rot3,
                             detector=Detector(pixel1=pixel1_m, pixel2=pixel2_m))
    f2d = ai.getFit2D()
    return {"distance_m": f2d["directDist"] * 1e-3, "center_x_px": f2d["centerX"], "center_y_px": f2d["centerY"],
            "tilt_deg": f2d["tilt"], "tilt_plane_deg": f2d["tiltPlanRotation"]}


@dataclass
class Curve:
    """A 1-D curve: I(q) with standard deviations, in the integrator's units."""

    q: np.ndarray  # 1/Å
    i: np.ndarray
    sigma: np.ndarray
    count: np.ndarray | None = None  # (weighted) pixels per bin

    def __len__(self) -> int:
        return int(self.q.size)


@dataclass
class Cake:
    """A 2-D regrouping I(chi, q) (rows: chi, columns: q)."""

    q: np.ndarray  # (nq,)
    chi: np.ndarray  # (nchi,) degrees
    i: np.ndarray  # (nchi, nq); NaN where no pixel contributes
    sigma: np.ndarray


@dataclass
class IntegrationSetup:
    """Everything fixed for a reduction: what pyFAI needs besides the frame."""

    mask: np.ndarray | None = None  # True = masked
    dark: np.ndarray | None = None
    flat: np.ndarray | None = None
    solid_angle: bool = True
    polarization: float | None = None  # pyFAI factor in [-1, 1]; None = no correction
    splitting: Splitting = "no"
    error_model: ErrorModel = "poisson"
    q_bins: int = 0  # 0: one bin per pixel of radius
    q_range: tuple[float, float] | None = None  # 1/Å
    chi_range: tuple[float, float] | None = None  # degrees (sector integration)
    chi_bins: int = 360
    extra: dict = field(default_factory=dict)


def _method(splitting: Splitting):
    return (splitting, "csr", "cython")


class Integrator:
    """Integrates frames of one detector with fixed geometry and corrections.

    The first call builds pyFAI's sparse integration matrix; later calls reuse it.
    """

    def __init__(self, ai, shape: tuple[int, int], setup: IntegrationSetup) -> None:  # noqa: ANN001
        self.ai = ai
        self.shape = tuple(shape)
        self.setup = setup
        mask = np.zeros(self.shape, dtype=bool) if setup.mask is None else np.asarray(setup.mask, dtype=bool)
        if mask.shape != self.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the frames' {self.shape}")
        self.mask = mask
        self._mask_i8 = mask.astype(np.int8)
        # an integrator whose detector carries this very mask: let pyFAI take it from there
        # (its checksum is kept) rather than passing it, and checksumming it, every frame
        det_mask = getattr(ai.detector, "mask", None)
        self._mask_arg = None if det_mask is not None and det_mask.shape == mask.shape and \
            np.array_equal(np.asarray(det_mask, dtype=bool), mask) else self._mask_i8
        self._radial_unit, self._radial_range, self._npt = self._binning()
        self._error_model = None if setup.error_model == "none" else setup.error_model

    # -- binning -------------------------------------------------------------------------
    def _binning(self) -> tuple[str, tuple[float, float] | None, int]:
        s = self.setup
        if s.q_bins > 0:
            return "q_A^-1", s.q_range, s.q_bins
        # one bin per pixel of radius, centred on whole-pixel radii (as SAXS beamline
        # software bins): integrate in r (mm) and convert the bin centres to q.
        pix = float(self.ai.detector.pixel2)
        r = self.ai.array_from_unit(self.shape, "center", "r_mm", scale=True)
        good = r[~self.mask] if (~self.mask).any() else r.ravel()
        rmin_px, rmax_px = float(good.min()) * 1e-3 / pix, float(good.max()) * 1e-3 / pix
        if s.q_range is not None:
            geo = geometry_of(self.ai)
            lam = geo.wavelength_A
            rs = [math.tan(2 * math.asin(min(q * lam / (4 * math.pi), 1.0))) * geo.distance_m / pix
                  for q in s.q_range]
            rmin_px, rmax_px = max(rmin_px, rs[0]), min(rmax_px, rs[1])
        k0, k1 = max(int(round(rmin_px)), 0), int(round(rmax_px))
        k1 = max(k1, k0 + 1)
        pix_mm = pix * 1e3
        return "r_mm", ((k0 - 0.5) * pix_mm, (k1 + 0.5) * pix_mm), k1 - k0 + 1

    def _radial_to_q(self, radial: np.ndarray) -> np.ndarray:
        if self._radial_unit == "q_A^-1":
            return np.asarray(radial, dtype=float)
        geo = geometry_of(self.ai)
        return geo.q_of_radius(np.asarray(radial, dtype=float) * 1e-3)

    # -- integration ---------------------------------------------------------------------
    @staticmethod
    def _dummies(frame: np.ndarray, extra_mask: np.ndarray | None) -> tuple[np.ndarray, dict]:
        """The frame with ``extra_mask``'s pixels set to a dummy value pyFAI skips: a mask
        per frame without rebuilding pyFAI's sparse matrix (built for the fixed mask)."""
        if extra_mask is None or not extra_mask.any():
            return frame, {}
        frame = np.where(extra_mask, np.float32(DUMMY), frame)
        return frame, {"dummy": DUMMY, "delta_dummy": 0.5}

    def integrate1d(self, frame: np.ndarray, normalization: float = 1.0, *,
                    chi_range: tuple[float, float] | None = None, extra_mask: np.ndarray | None = None) -> Curve:
        """I(q) of one frame divided by ``normalization``; empty bins dropped. Pixels of
        ``extra_mask`` (this frame's own mask) are left out as well as the fixed mask."""
        s = self.setup
        frame, dummies = self._dummies(frame, extra_mask)
        res = self.ai.integrate1d(
            frame, self._npt, unit=self._radial_unit, method=_method(s.splitting), **dummies,
            correctSolidAngle=s.solid_angle, polarization_factor=s.polarization,
            mask=self._mask_arg, dark=s.dark, flat=s.flat, radial_range=self._radial_range,
            azimuth_range=chi_range or s.chi_range, error_model=self._error_model,
            normalization_factor=float(normalization),
        )
        count = res.count if res.count is not None else res.sum_normalization
        good = np.asarray(count) > 0 if count is not None else np.isfinite(res.intensity)
        sigma = res.sigma if res.sigma is not None else np.zeros_like(res.intensity)
        return Curve(
            q=self._radial_to_q(res.radial[good]), i=np.asarray(res.intensity[good], dtype=float),
            sigma=np.asarray(sigma[good], dtype=float),
            count=np.asarray(count[good], dtype=float) if count is not None else None,
        )

    def integrate2d(self, frame: np.ndarray, normalization: float = 1.0, *,
                    extra_mask: np.ndarray | None = None) -> Cake:
        """I(chi, q) of one frame (caking), empty cells NaN."""
        s = self.setup
        npt = s.q_bins if s.q_bins > 0 else self._npt
        frame, dummies = self._dummies(frame, extra_mask)
        res = self.ai.integrate2d(
            frame, npt, s.chi_bins, unit="q_A^-1", method=_method(s.splitting), **dummies,
            correctSolidAngle=s.solid_angle, polarization_factor=s.polarization,
            mask=self._mask_arg, dark=s.dark, flat=s.flat, radial_range=s.q_range,
            azimuth_range=s.chi_range, error_model=self._error_model,
            normalization_factor=float(normalization),
        )
        i = np.array(res.intensity, dtype=float)
        sig = np.array(res.sigma if res.sigma is not None else np.zeros_like(i), dtype=float)
        count = getattr(res, "count", None)
        if count is not None:
            empty = np.asarray(count) <= 0
            i[empty] = np.nan
            sig[empty] = np.nan
        return Cake(q=np.asarray(res.radial, float), chi=np.asarray(res.azimuthal, float), i=i, sigma=sig)


# -- curve arithmetic ------------------------------------------------------------------------
def subtract(sample: Curve, background: Curve, scale: float = 1.0) -> Curve:
    """``sample - scale * background`` on the sample's q (background interpolated when
    the grids differ); errors added in quadrature."""
    if sample.q.shape == background.q.shape and np.allclose(sample.q, background.q, rtol=1e-9, atol=0):
        bi, bs = background.i, background.sigma
    else:
        bi = np.interp(sample.q, background.q, background.i, left=np.nan, right=np.nan)
        bs = np.interp(sample.q, background.q, background.sigma, left=np.nan, right=np.nan)
    i = sample.i - scale * bi
    sigma = np.sqrt(sample.sigma**2 + (scale * bs) ** 2)
    good = np.isfinite(i)
    return Curve(sample.q[good], i[good], sigma[good], None if sample.count is None else sample.count[good])


def scale_curve(curve: Curve, factor: float) -> Curve:
    return Curve(curve.q, curve.i * factor, curve.sigma * abs(factor), curve.count)


# X-ray differential scattering cross-section of water at 20 °C (293 K), cm^-1:
# Orthaber, Bergmann & Glatter (2000), J. Appl. Cryst. 33, 218-225.
WATER_DSIGMA_20C = 0.01632


def absolute_scale_factor(measured: Curve, ref_q: np.ndarray, ref_i: np.ndarray,
                          q_range: tuple[float, float] | None = None) -> tuple[float, float]:
    """Factor F (and its standard error) with ``F * measured ≈ reference`` over ``q_range``.

    ``ref_i`` is the standard's known absolute curve (e.g. NIST SRM 3600 glassy carbon) on
    ``ref_q``, or one number for a flat standard (water). F is the inverse-variance
    weighted least-squares ratio sum(w m r) / sum(w m²) with w = 1/σ_m²."""
    q = measured.q
    sel = np.isfinite(measured.i) & (measured.sigma > 0)
    if q_range is not None:
        sel &= (q >= q_range[0]) & (q <= q_range[1])
    ref_q = np.atleast_1d(np.asarray(ref_q, dtype=float))
    ref_i = np.atleast_1d(np.asarray(ref_i, dtype=float))
    if ref_i.size == 1:
        ref = np.full(q.shape, float(ref_i[0]))
    else:
        order = np.argsort(ref_q)
        ref = np.interp(q, ref_q[order], ref_i[order], left=np.nan, right=np.nan)
        sel &= np.isfinite(ref)
    if sel.sum() < 3:
        raise ValueError("fewer than 3 points where the standard and its reference overlap")
    m, r, s = measured.i[sel], ref[sel], measured.sigma[sel]
    w = 1.0 / s**2
    denom = float(np.sum(w * m * m))
    factor = float(np.sum(w * m * r) / denom)
    # scatter-based error (the reference has its own errors; use the residual scatter)
    resid = r - factor * m
    dof = max(int(sel.sum()) - 1, 1)
    chi2 = float(np.sum(w * resid**2) / dof)
    err = math.sqrt(max(chi2, 1.0) / denom)
    return factor, err
