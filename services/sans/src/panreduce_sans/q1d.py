"""Reduction of per-pixel, per-wavelength counts to I(Q) and I(Qx, Qy).

Mantid Q1D v2 / Qxy as described in the fact sheet ``loq-sans.md`` §5.9–5.10. For pixel p and
wavelength bin n (centre lambda_n), ``Q = 4*pi*sin(theta_p)/lambda_n``; the numerator sums
``c*S(p,n)``, the variance ``c^2*E(p,n)^2`` and the denominator
``W(n)*Omega_p*F_p*(1 - m(p,n))`` with ``W`` the wavelength adjustment (direct-beam
efficiency x monitor x transmission), ``Omega`` the solid angle, ``F`` the flat cell and ``m``
the masked fraction of the bin. ``I = num/den``.

Errors (Q1D2 ``normalize``): ``sigma_I^2 = var/den^2 + I^2*var_den/den^2`` where
``var_den = sum[(sigma_W*Omega*F)^2 + (W*Omega*sigma_F)^2]*(1-m)^2``; with
``normalisation_errors=False`` only the counting term is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IQ", "IQxy", "q1d", "q_resolution_sigma", "qxy"]


@dataclass(frozen=True)
class IQ:
    q_edges: np.ndarray  # (nq+1,) 1/Å
    intensity: np.ndarray  # (nq,)
    error: np.ndarray  # (nq,)
    q_dev: np.ndarray  # (nq,) 1/Å, counts-weighted mean sigma_Q (zeros when not computed)
    numerator: np.ndarray
    denominator: np.ndarray
    counts: np.ndarray  # (nq,) raw counts (before the constant scale) per Q bin

    @property
    def q(self) -> np.ndarray:
        return 0.5 * (self.q_edges[1:] + self.q_edges[:-1])


@dataclass(frozen=True)
class IQxy:
    qx_edges: np.ndarray
    qy_edges: np.ndarray
    intensity: np.ndarray  # (nqy, nqx)
    error: np.ndarray


def _split_weights_cumulative(qa: np.ndarray, qb: np.ndarray, w: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Sum over elements of ``w`` spread uniformly over [qa, qb], integrated up to each edge.

    F(q) = sum_e w_e * (ramp(q - qa_e) - ramp(q - qb_e)) / (qb_e - qa_e), computed with sorted
    cumulative sums in O(N log N). Returns (nedges,).
    """
    width = qb - qa
    c = np.where(width > 0, w / np.where(width > 0, width, 1.0), 0.0)
    out = np.zeros(edges.size)
    for starts, sign in ((qa, 1.0), (qb, -1.0)):
        order = np.argsort(starts)
        s = starts[order]
        cs = np.concatenate([[0.0], np.cumsum(c[order])])
        csa = np.concatenate([[0.0], np.cumsum(c[order] * s)])
        k = np.searchsorted(s, edges, side="right")
        out += sign * (edges * cs[k] - csa[k])
    # zero-width elements (only possible for degenerate input) go wholly to their bin
    zero = width <= 0
    if zero.any():
        order = np.argsort(qa[zero])
        cs = np.concatenate([[0.0], np.cumsum(w[zero][order])])
        out += cs[np.searchsorted(qa[zero][order], edges, side="right")]
    return out


def q1d(
    counts: np.ndarray,
    variance: np.ndarray,
    masked_fraction: np.ndarray,
    wavelength_edges: np.ndarray,
    wavelength_adj: np.ndarray,
    wavelength_adj_err: np.ndarray,
    two_theta: np.ndarray,
    pixel_adj: np.ndarray,
    pixel_adj_err: np.ndarray,
    q_edges: np.ndarray,
    *,
    scale: float = 1.0,
    normalisation_errors: bool = True,
    split: bool = False,
    q_sigma: np.ndarray | None = None,
    pixel_wavelength_adj: np.ndarray | None = None,
) -> IQ:
    """I(Q) from counts ``(npix, nlam)`` of the unmasked pixels (see the module docstring).

    ``pixel_adj`` is ``Omega_p*F_p`` (solid angle x flat cell) with its error; ``scale`` the
    absolute-scale constant applied to the numerator. With ``split`` a wavelength bin is
    shared among the Q bins its Q range [Q(lambda_hi), Q(lambda_lo)] overlaps, in proportion;
    otherwise (Mantid Q1D2) it goes whole to the Q bin of its centre. ``q_sigma``
    ``(npix, nlam)`` gives per-element resolutions averaged with the counts as weights;
    ``pixel_wavelength_adj`` ``(npix, nlam)`` multiplies the denominator (WavePixelAdj, e.g.
    the wide-angle transmission correction). ``two_theta`` is per pixel ``(npix,)`` or, when
    it depends on wavelength (gravity), per element ``(npix, nlam)``.
    """
    s = np.asarray(counts, dtype=np.float64)
    v = np.asarray(variance, dtype=np.float64)
    keep = 1.0 - np.asarray(masked_fraction, dtype=np.float64)
    lam_edges = np.asarray(wavelength_edges, dtype=np.float64)
    lam_c = 0.5 * (lam_edges[1:] + lam_edges[:-1])
    two_theta = np.asarray(two_theta, dtype=np.float64)
    sin_t = np.sin(0.5 * (two_theta if two_theta.ndim == 2 else two_theta[:, None]))
    k_pix = np.asarray(pixel_adj, dtype=np.float64)[:, None]
    k_pix_e = np.asarray(pixel_adj_err, dtype=np.float64)[:, None]
    wav = np.asarray(wavelength_adj, dtype=np.float64)[None, :]
    wav_e = np.asarray(wavelength_adj_err, dtype=np.float64)[None, :]
    q_edges = np.asarray(q_edges, dtype=np.float64)
    nq = q_edges.size - 1

    den_el = wav * k_pix * keep
    den_var_el = ((wav_e * k_pix) ** 2 + (wav * k_pix_e) ** 2) * keep**2
    if pixel_wavelength_adj is not None:
        den_el = den_el * pixel_wavelength_adj
        den_var_el = den_var_el * np.asarray(pixel_wavelength_adj) ** 2
    weighted_sigma = None if q_sigma is None else np.asarray(q_sigma, dtype=np.float64) * s

    if not split:
        q = 4.0 * np.pi * sin_t / lam_c[None, :]
        idx = np.searchsorted(q_edges, q.ravel(), side="right") - 1
        ok = (idx >= 0) & (idx < nq) & (q.ravel() < q_edges[-1])
        ii = idx[ok]

        def acc(a: np.ndarray) -> np.ndarray:
            return np.bincount(ii, weights=np.broadcast_to(a, s.shape).ravel()[ok], minlength=nq)
    else:
        q_lo = np.broadcast_to(4.0 * np.pi * sin_t / lam_edges[None, 1:], s.shape).ravel()
        q_hi = np.broadcast_to(4.0 * np.pi * sin_t / lam_edges[None, :-1], s.shape).ravel()

        def acc(a: np.ndarray) -> np.ndarray:
            cum = _split_weights_cumulative(q_lo, q_hi, np.broadcast_to(a, s.shape).ravel(), q_edges)
            return np.diff(cum)

    raw = acc(s)
    num = scale * raw
    var = scale * scale * acc(v)
    den = acc(den_el)
    den_var = acc(den_var_el) if normalisation_errors else np.zeros(nq)
    with np.errstate(invalid="ignore", divide="ignore"):
        good = den > 0
        intensity = np.where(good, num / np.where(good, den, 1.0), 0.0)
        error = np.where(good, np.sqrt(var + intensity**2 * den_var) / np.where(good, den, 1.0), 0.0)
        if weighted_sigma is not None:
            q_dev = np.where(raw > 0, acc(weighted_sigma) / np.where(raw > 0, raw, 1.0), 0.0)
        else:
            q_dev = np.zeros(nq)
    return IQ(q_edges, intensity, error, q_dev, num, den, raw)


def qxy(
    counts: np.ndarray,
    variance: np.ndarray,
    masked_fraction: np.ndarray,
    wavelength_edges: np.ndarray,
    wavelength_adj: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    l2: np.ndarray,
    pixel_adj: np.ndarray,
    q_max: float,
    q_step: float,
    *,
    scale: float = 1.0,
    pixel_wavelength_adj: np.ndarray | None = None,
    y_aim: np.ndarray | None = None,
) -> IQxy:
    """I(Qx, Qy) on a square grid -q_max..q_max with step ``q_step`` (Mantid Qxy).

    ``Qx = (4*pi/lambda)*sin(theta)*cos(phi)``, ``Qy = ... sin(phi)``, with phi the azimuth of
    the pixel around the beam; bin-centre assignment of each wavelength bin; counting errors.
    ``y_aim`` ``(npix, nlam)``, when given, replaces ``y`` in Q: the height each neutron was
    aimed at (gravity).
    """
    if q_step <= 0:
        raise ValueError("only linear Qxy binning is implemented")
    n = round(2 * q_max / q_step)
    edges = np.linspace(-q_max, q_max, n + 1)
    lam_edges = np.asarray(wavelength_edges, dtype=np.float64)
    lam_c = 0.5 * (lam_edges[1:] + lam_edges[:-1])
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dz = np.sqrt(np.clip(np.asarray(l2, dtype=np.float64) ** 2 - x**2 - y**2, 0.0, None))
    x2, y2 = np.broadcast_arrays(x[:, None], y[:, None] if y_aim is None else np.asarray(y_aim, dtype=np.float64))
    radius = np.hypot(x2, y2)
    sin_t = np.sin(0.5 * np.arctan2(radius, dz[:, None]))
    with np.errstate(invalid="ignore", divide="ignore"):
        cos_phi = np.where(radius > 0, x2 / np.where(radius > 0, radius, 1.0), 0.0)
        sin_phi = np.where(radius > 0, y2 / np.where(radius > 0, radius, 1.0), 0.0)
    qmag = 4.0 * np.pi * sin_t / lam_c[None, :]
    qx = np.broadcast_to(qmag * cos_phi, (x.size, lam_c.size)).ravel()
    qy = np.broadcast_to(qmag * sin_phi, (x.size, lam_c.size)).ravel()
    ix = np.searchsorted(edges, qx, side="right") - 1
    iy = np.searchsorted(edges, qy, side="right") - 1
    ok = (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
    flat = (iy * n + ix)[ok]
    den_full = (
        np.asarray(wavelength_adj)[None, :] * np.asarray(pixel_adj)[:, None] * (1.0 - np.asarray(masked_fraction))
    )
    if pixel_wavelength_adj is not None:
        den_full = den_full * pixel_wavelength_adj
    den_el = den_full.ravel()[ok]
    num = np.bincount(flat, weights=np.asarray(counts).ravel()[ok], minlength=n * n) * scale
    var = np.bincount(flat, weights=np.asarray(variance).ravel()[ok], minlength=n * n) * scale**2
    den = np.bincount(flat, weights=den_el, minlength=n * n)
    with np.errstate(invalid="ignore", divide="ignore"):
        good = den > 0
        inten = np.where(good, num / np.where(good, den, 1.0), 0.0)
        err = np.where(good, np.sqrt(var) / np.where(good, den, 1.0), 0.0)
    return IQxy(edges, edges.copy(), inten.reshape(n, n), err.reshape(n, n))


def q_resolution_sigma(
    q: np.ndarray,
    wavelength: np.ndarray,
    wavelength_width: np.ndarray,
    *,
    l1: float,
    l2: np.ndarray,
    r1: float,
    r2: float,
    delta_r: float,
    sigma_moderator: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Mildner–Carpenter TOF-SANS resolution sigma_Q (1/Å) per element (§5.10).

    ``sigma_Q^2 = (4 pi^2/(12 lambda^2)) [3(R1/L1)^2 + 3(R2/L3)^2 + (dR/L2)^2]
    + Q^2 (sigma_lambda/lambda)^2``, ``1/L3 = 1/L1 + 1/L2``, ``sigma_lambda^2 =
    dlambda^2/12 + sigma_mod^2``. Lengths in m (R1, R2 aperture radii, dR ring width), lambda in Å.
    Arrays broadcast: ``q`` (npix, nlam), ``wavelength`` (nlam,), ``l2`` (npix,).
    """
    lam = np.asarray(wavelength, dtype=np.float64)[None, :]
    dlam = np.asarray(wavelength_width, dtype=np.float64)[None, :]
    l2 = np.asarray(l2, dtype=np.float64)[:, None]
    l3 = 1.0 / (1.0 / l1 + 1.0 / l2)
    geometric = (4.0 * np.pi**2 / (12.0 * lam**2)) * (3 * (r1 / l1) ** 2 + 3 * (r2 / l3) ** 2 + (delta_r / l2) ** 2)
    sigma_lam2 = dlam**2 / 12.0 + np.asarray(sigma_moderator, dtype=np.float64) ** 2
    return np.sqrt(geometric + np.asarray(q) ** 2 * sigma_lam2 / lam**2)
