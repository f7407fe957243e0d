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

import hashlib
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from panreduce_saxs.geometry import Geometry, geometry_of, make_integrator

DUMMY = -1.0e9  # value of pixels masked frame by frame (exact in float32; below every threshold)
CACHED_INTEGRATORS = 8  # pyFAI integrators kept across the jobs of a service

Splitting = Literal["no", "bbox", "full"]
ErrorModel = Literal["poisson", "azimuthal", "none"]

_INTEGRATORS: dict[tuple, Any] = {}
_INTEGRATORS_LOCK = threading.Lock()


def integrator_for(geometry: Geometry, shape: tuple[int, int], mask: np.ndarray | None = None) -> Any:
    """pyFAI integrators kept across jobs of the service: the sparse integration matrix
    pyFAI builds on first use (a second for a 4M detector) is reused by the next job with
    the same geometry, binning and mask. With ``mask``, one whose detector carries that
    mask: pyFAI then takes the mask and its checksum from the detector instead of
    checksumming a mask passed with every frame (1-2 ms per 4M frame; same result)."""
    key = (geometry, tuple(shape), None if mask is None else hashlib.sha1(np.packbits(mask)).hexdigest())
    with _INTEGRATORS_LOCK:
        ai = _INTEGRATORS.get(key)
        if ai is None:
            if len(_INTEGRATORS) >= CACHED_INTEGRATORS:
                _INTEGRATORS.pop(next(iter(_INTEGRATORS)))
            ai = make_integrator(geometry, shape)
            if mask is not None:
                ai.detector.mask = np.asarray(mask, dtype=np.int8)
            _INTEGRATORS[key] = ai
        return ai


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
    pixel_splitting: Splitting = "no"
    error_model: ErrorModel = "poisson"
    q_bins: int = 0  # 0: one bin per pixel of radius
    q_range: tuple[float, float] | None = None  # 1/Å
    chi_range_deg: tuple[float, float] | None = None  # degrees (sector integration)
    chi_bins: int = 360
    extra: dict = field(default_factory=dict)


def _method(splitting: Splitting):
    return (splitting, "csr", "cython")


class Integrator:
    """Integrates frames of one detector with fixed geometry and corrections.

    The first call builds pyFAI's sparse integration matrix; later calls reuse it.
    """

    def __init__(self, ai, shape: tuple[int, int], setup: IntegrationSetup) -> None:
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
        self._mask_arg = (
            None
            if det_mask is not None
            and det_mask.shape == mask.shape
            and np.array_equal(np.asarray(det_mask, dtype=bool), mask)
            else self._mask_i8
        )
        self._radial_unit, self._radial_range, self._npt = self._binning()
        self._error_model = None if setup.error_model == "none" else setup.error_model

    # -- binning -------------------------------------------------------------------------
    def _binning(self) -> tuple[str, tuple[float, float] | None, int]:
        """(pyFAI unit, radial range, bins). ``q_bins=0``: one bin per pixel of radius.

        This and :meth:`_radial_to_q` convert between pyFAI's radius ``r`` and q by
        q = 4π sin(½ atan(r/d))/λ themselves: pyFAI gives every *pixel's* r and q
        (``array_from_unit``) but no conversion of 1-D bin positions from one radial unit to
        another, and the bins must be centred on whole-pixel radii (as beamline software
        bins), which only integrating in r gives. The formula is pyFAI's own definition of
        r (``units.eq_r``: distance from the beam in the plane normal to it) for the
        direct-beam distance d; the tests check the q axis against pyFAI's pixel q."""
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
            rs = [math.tan(2 * math.asin(min(q * lam / (4 * math.pi), 1.0))) * geo.distance_m / pix for q in s.q_range]
            rmin_px, rmax_px = max(rmin_px, rs[0]), min(rmax_px, rs[1])
        k0, k1 = max(round(rmin_px), 0), round(rmax_px)
        k1 = max(k1, k0 + 1)
        pix_mm = pix * 1e3
        return "r_mm", ((k0 - 0.5) * pix_mm, (k1 + 0.5) * pix_mm), k1 - k0 + 1

    def _radial_to_q(self, radial: np.ndarray) -> np.ndarray:
        if self._radial_unit == "q_A^-1":
            return np.asarray(radial, dtype=float)
        geo = geometry_of(self.ai)
        return geo.q_of_radius(np.asarray(radial, dtype=float) * 1e-3)

    # -- corrected images ----------------------------------------------------------------
    def q_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """(Qx, Qy) of every pixel centre (1/Å): pyFAI's q and χ."""
        q = self.ai.center_array(self.shape, unit="q_A^-1")
        chi = self.ai.center_array(self.shape, unit="chi_rad")
        return q * np.cos(chi), q * np.sin(chi)

    def corrected_image(
        self, frame: np.ndarray, normalization: float = 1.0, *, extra_mask: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(I, σ, mask) of every pixel: the frame corrected as pyFAI corrects it before
        integrating (pyFAI's own ``preproc``: dark, flat, solid angle, polarisation, the
        normalisation factor; Poisson variance max(raw, 1) + dark), 0 where masked."""
        from pyFAI.containers import ErrorModel as PyFAIErrorModel
        from pyFAI.engines.preproc import preproc

        s = self.setup
        ai = self.ai
        mask = self.mask if extra_mask is None else (self.mask | extra_mask)
        res = preproc(
            np.asarray(frame),
            dark=s.dark,
            flat=s.flat,
            mask=mask,
            normalization_factor=float(normalization),
            solidangle=ai.solidAngleArray(self.shape) if s.solid_angle else None,
            polarization=ai.polarization(self.shape, s.polarization) if s.polarization is not None else None,
            split_result=4,
            error_model=PyFAIErrorModel.POISSON,
            dtype=np.float64,
        )
        signal, variance, norm, count = (res[..., k] for k in range(4))
        valid = count > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            img = np.where(valid, signal / norm, 0.0)
            err = np.where(valid, np.sqrt(variance) / norm, 0.0)
        return img, err, ~valid

    # -- integration ---------------------------------------------------------------------
    @staticmethod
    def _dummies(frame: np.ndarray, extra_mask: np.ndarray | None) -> tuple[np.ndarray, dict]:
        """The frame with ``extra_mask``'s pixels set to a dummy value pyFAI skips: a mask
        per frame without rebuilding pyFAI's sparse matrix (built for the fixed mask)."""
        if extra_mask is None or not extra_mask.any():
            return frame, {}
        frame = np.where(extra_mask, np.float32(DUMMY), frame)
        return frame, {"dummy": DUMMY, "delta_dummy": 0.5}

    def integrate1d(
        self,
        frame: np.ndarray,
        normalization: float = 1.0,
        *,
        chi_range_deg: tuple[float, float] | None = None,
        extra_mask: np.ndarray | None = None,
    ) -> Curve:
        """I(q) of one frame divided by ``normalization``; empty bins dropped. Pixels of
        ``extra_mask`` (this frame's own mask) are left out as well as the fixed mask."""
        s = self.setup
        frame, dummies = self._dummies(frame, extra_mask)
        res = self.ai.integrate1d(
            frame,
            self._npt,
            unit=self._radial_unit,
            method=_method(s.pixel_splitting),
            **dummies,
            correctSolidAngle=s.solid_angle,
            polarization_factor=s.polarization,
            mask=self._mask_arg,
            dark=s.dark,
            flat=s.flat,
            radial_range=self._radial_range,
            azimuth_range=chi_range_deg or s.chi_range_deg,
            error_model=self._error_model,
            normalization_factor=float(normalization),
        )
        count = res.count if res.count is not None else res.sum_normalization
        good = np.asarray(count) > 0 if count is not None else np.isfinite(res.intensity)
        sigma = res.sigma if res.sigma is not None else np.zeros_like(res.intensity)
        return Curve(
            q=self._radial_to_q(res.radial[good]),
            i=np.asarray(res.intensity[good], dtype=float),
            sigma=np.asarray(sigma[good], dtype=float),
            count=np.asarray(count[good], dtype=float) if count is not None else None,
        )

    def integrate2d(
        self, frame: np.ndarray, normalization: float = 1.0, *, extra_mask: np.ndarray | None = None
    ) -> Cake:
        """I(chi, q) of one frame (caking), empty cells NaN."""
        s = self.setup
        npt = s.q_bins if s.q_bins > 0 else self._npt
        frame, dummies = self._dummies(frame, extra_mask)
        res = self.ai.integrate2d(
            frame,
            npt,
            s.chi_bins,
            unit="q_A^-1",
            method=_method(s.pixel_splitting),
            **dummies,
            correctSolidAngle=s.solid_angle,
            polarization_factor=s.polarization,
            mask=self._mask_arg,
            dark=s.dark,
            flat=s.flat,
            radial_range=s.q_range,
            azimuth_range=s.chi_range_deg,
            error_model=self._error_model,
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
