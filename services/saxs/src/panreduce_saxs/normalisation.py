"""Normalisation, absolute scale and background subtraction.

A frame's intensity is divided by ``N = monitor * transmission * exposure * thickness(cm)
/ absolute_scale``; the monitor is a counter of the frame's SPEC/NeXus record (``counter``:
``COUNTER``, ``COUNTER/NUMBER``, ``COUNTER*NUMBER``) or a fixed number. The absolute scale
is a given factor or the one that matches a standard (water, glassy carbon) reduced like
the sample to its known curve; a background (empty cell, solvent) is reduced like the
sample, with its own transmission, and subtracted with its errors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from panreduce import errors
from panreduce.errors import FieldViolation, InvalidParameters
from panreduce_saxs.inputs import Frame
from panreduce_saxs.integrate import Curve
from panreduce_saxs.io import parse_counter_expression

# X-ray differential scattering cross-section of water at 20 °C (293 K), cm^-1:
# Orthaber, Bergmann & Glatter (2000), J. Appl. Cryst. 33, 218-225.
WATER_DSIGMA_20C = 0.01632


def frame_norm(
    counters: dict[str, float],
    scale: float = 1.0,
    *,
    counter: str = "",
    monitor: float | None = None,
    transmission: float = 1.0,
    exposure_s: float | None = None,
    thickness_mm: float | None = None,
) -> float:
    """What a frame is divided by: monitor x transmission x exposure x thickness(cm) / scale."""
    value = 1.0
    if counter:
        name, factor = parse_counter_expression(counter)
        value *= counters[name] * factor
    elif monitor is not None:
        value *= monitor
    value *= transmission
    if thickness_mm is not None:
        value *= thickness_mm / 10.0
    if exposure_s is not None:
        value *= exposure_s
    return value / scale


def check_counters(frames: Iterable[Frame | None], counter: str, field: str = "counter") -> None:
    """Every frame records ``counter`` (InvalidParameters naming ``field`` if not) with a
    positive value (InvalidInput naming the frame's file if not)."""
    if not counter:
        return
    try:
        name, _ = parse_counter_expression(counter)
    except ValueError as exc:
        raise InvalidParameters([FieldViolation(field, str(exc))]) from None
    for fr in frames:
        if fr is None:
            continue
        if name not in fr.counters:
            known = ", ".join(sorted(fr.counters)) or "none: give a SPEC file or NeXus counters"
            raise InvalidParameters(
                [FieldViolation(field, f"frame {fr.label} has no counter {name!r} (known: {known})")]
            )
        if not fr.counters[name] > 0:
            raise errors.InvalidInput(
                fr.source, f"counter {name!r} is {fr.counters[name]} for frame {fr.label}: cannot normalise by it"
            )


def reference_of(text: str) -> tuple[np.ndarray, np.ndarray] | str:
    """A standard's reference: 'water' or a number (a flat curve in 1/cm), else the name
    of the input file holding it (returned as is, for the caller to read)."""
    text = text.strip()
    if text == "water":
        return np.array([0.0]), np.array([WATER_DSIGMA_20C])
    try:
        return np.array([0.0]), np.array([float(text)])
    except ValueError:
        return text


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


def absolute_scale_factor(
    measured: Curve, ref_q: np.ndarray, ref_i: np.ndarray, q_range: tuple[float, float] | None = None
) -> tuple[float, float]:
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
