"""Bin edges from rebin strings, and count-conserving rebinning of histograms.

Conventions follow Mantid's ``Rebin`` v1 (``Framework/Kernel/src/VectorHelper.cpp``,
``createAxisFromRebinParams``) as described in the fact sheet ``loq-sans.md`` §5.0:

* a rebin string ``x0, d1, x1, d2, x2, ...`` gives, in each range, steps of ``d`` when
  ``d > 0`` or of ``x*|d|`` (logarithmic) when ``d < 0``, where ``x`` is the current edge;
* the edge ``x + step`` is added while ``x + 1.25*step <= range end``; otherwise the range end
  is appended, so the last bin of a range is 0.25 to 1.25 steps wide.

Rebinning of counts is proportional: a new bin receives ``Y_old * overlap / width_old`` of
every old bin it overlaps, and ``E_old**2 * overlap / width_old`` of its variance. The
masked fraction of a new bin is the fraction of its width covered by masked old bins.

Everything here is pure numpy on arrays; no file or unit handling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["bin_centres", "rebin_counts", "rebin_distribution", "rebin_edges"]


def rebin_edges(params: Sequence[float]) -> np.ndarray:
    """Bin edges from a Mantid-style rebin string ``x0, d1, x1[, d2, x2 ...]``.

    ``d > 0`` is a linear step, ``d < 0`` a logarithmic step ``x*|d|``. Raises ``ValueError``
    for an even-length list, a zero step, a non-increasing range or a logarithmic step
    starting at ``x <= 0``.
    """
    p = [float(v) for v in params]
    if len(p) < 3 or len(p) % 2 == 0:
        raise ValueError(f"a rebin string needs x0,step,x1[,step,x2...] (odd length >= 3); got {p}")
    edges = [p[0]]
    for k in range(1, len(p), 2):
        step, end = p[k], p[k + 1]
        x = edges[-1]
        if end <= x:
            raise ValueError(f"rebin range {x} -> {end} is not increasing")
        if step == 0:
            raise ValueError("rebin step must not be zero")
        if step < 0 and x <= 0:
            raise ValueError(f"a logarithmic step needs a positive start; got {x}")
        while True:
            width = step if step > 0 else x * -step
            if x + 1.25 * width <= end:
                x = x + width
                edges.append(x)
            else:
                edges.append(end)
                break
    return np.asarray(edges, dtype=np.float64)


def bin_centres(edges: np.ndarray) -> np.ndarray:
    """Centres ``(x_k + x_{k+1})/2`` of histogram bins with the given edges."""
    edges = np.asarray(edges, dtype=np.float64)
    return 0.5 * (edges[..., 1:] + edges[..., :-1])


def _cumulative_at(
    edges_in: np.ndarray, scale: np.ndarray | None, values: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """Integral of a piecewise-constant histogram (``values`` per bin) from the first edge to
    each of ``points``; rows may have their input edges multiplied by ``scale[row]``.

    ``values``: (nrow, nbin); ``edges_in``: (nbin+1,) increasing; ``points``: (nout,).
    Returns (nrow, nout).
    """
    nrow, nbin = values.shape
    cum = np.zeros((nrow, nbin + 1), dtype=np.float64)
    np.cumsum(values, axis=1, out=cum[:, 1:])
    if scale is None:
        pts = np.broadcast_to(points, (nrow, points.size))
    else:
        pts = points[None, :] / scale[:, None]  # points expressed in the unscaled input coordinate
    idx = np.searchsorted(edges_in, pts, side="right") - 1
    np.clip(idx, 0, nbin - 1, out=idx)
    lo = edges_in[idx]
    width = edges_in[idx + 1] - lo
    frac = np.clip((pts - lo) / width, 0.0, 1.0)
    rows = np.arange(nrow)[:, None]
    return cum[rows, idx] + frac * values[rows, idx]


def rebin_counts(
    edges_in: np.ndarray,
    counts: np.ndarray,
    variance: np.ndarray,
    edges_out: np.ndarray,
    *,
    scale: np.ndarray | None = None,
    masked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Proportionally rebin histogram counts (not distributions) onto ``edges_out``.

    Parameters
    ----------
    edges_in : (nbin+1,) increasing input edges, shared by every row.
    counts, variance : (nrow, nbin) or (nbin,) counts and their variances (``E**2``).
    edges_out : (nout+1,) increasing output edges.
    scale : optional (nrow,) factor multiplying the input edges of each row (e.g. the TOF ->
        wavelength factor ``K/L`` of each pixel), so each row may live on its own axis.
    masked : optional bool (nbin,) or (nrow, nbin): masked input bins.

    Returns
    -------
    (counts_out, variance_out, masked_fraction), each (nrow, nout) (or (nout,) for 1-D input).
    ``counts_out[j] = sum_i counts[i] * overlap(i, j) / width(i)``; the variance is rebinned
    with the same weights; ``masked_fraction[j]`` is the fraction of output bin ``j``'s width
    covered by masked input bins.
    """
    edges_in = np.asarray(edges_in, dtype=np.float64)
    edges_out = np.asarray(edges_out, dtype=np.float64)
    one_d = np.ndim(counts) == 1
    y = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    v = np.atleast_2d(np.asarray(variance, dtype=np.float64))
    if y.shape != v.shape or y.shape[1] != edges_in.size - 1:
        raise ValueError(f"counts {y.shape} and variance {v.shape} must have {edges_in.size - 1} bins")
    if scale is not None:
        scale = np.asarray(scale, dtype=np.float64).reshape(-1)
        if scale.size != y.shape[0]:
            raise ValueError("scale needs one value per row")
    y_out = np.diff(_cumulative_at(edges_in, scale, y, edges_out), axis=1)
    v_out = np.diff(_cumulative_at(edges_in, scale, v, edges_out), axis=1)
    if masked is None:
        m_out = np.zeros_like(y_out)
    else:
        w_in = np.diff(edges_in)
        mw = np.broadcast_to(np.asarray(masked, dtype=np.float64) * w_in, y.shape)
        covered = np.diff(_cumulative_at(edges_in, scale, np.ascontiguousarray(mw), edges_out), axis=1)
        w_out = np.diff(edges_out)[None, :]
        if scale is not None:
            w_out = w_out / scale[:, None]  # output widths in the unscaled coordinate
        m_out = np.clip(covered / w_out, 0.0, 1.0)
    if one_d:
        return y_out[0], v_out[0], m_out[0]
    return y_out, v_out, m_out


def rebin_distribution(
    edges_in: np.ndarray, values: np.ndarray, errors: np.ndarray, edges_out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rebin a distribution (values per unit x) onto ``edges_out``: width-weighted average.

    The distribution is turned into counts (``y*w``, ``e*w``), rebinned proportionally and
    divided by the new widths, as Mantid's Rebin does for distribution workspaces. Parts of an
    output bin outside the input range contribute zero.
    Returns (values_out, errors_out), each (nout,).
    """
    edges_in = np.asarray(edges_in, dtype=np.float64)
    w_in = np.diff(edges_in)
    y = np.asarray(values, dtype=np.float64) * w_in
    v = (np.asarray(errors, dtype=np.float64) * w_in) ** 2
    y_out, v_out, _ = rebin_counts(edges_in, y, v, edges_out)
    w_out = np.diff(np.asarray(edges_out, dtype=np.float64))
    return y_out / w_out, np.sqrt(v_out) / w_out
