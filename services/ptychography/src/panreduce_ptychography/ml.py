"""Maximum likelihood for Poisson counts with conjugate gradients (P. Thibault &
M. Guizar-Sicairos, New J. Phys. 14, 063004 (2012))."""

from __future__ import annotations

import numpy as np

from panreduce_ptychography.backend import Array, Backend
from panreduce_ptychography.model import ML_FLOOR, Model, log


class ML:
    """Maximum likelihood for Poisson counts, preconditioned Polak-Ribiere conjugate
    gradients with a Newton step along each direction (Thibault & Guizar-Sicairos 2012),
    optional smoothness prior ``mu * sum |grad O|^2``."""

    def __init__(self, m: Model) -> None:
        self.m = m
        self.all = np.arange(m.n)
        self.prev: tuple | None = None  # (hO, hP, <g, z>, zO, zP) of the last iteration
        n_obj = float(np.prod(m.obj_shape))
        self.mu = m.opts.ml_regularisation * m.norm_data / n_obj
        self.n_good = max(float(np.asarray(m.B.to_numpy(m.mask)).sum()) * m.n, 1.0)

    def _reg_grad(self, o: Array) -> Array:
        B = self.m.B
        g = 0
        for ax in (0, 1):
            d = B.roll(o, -1, ax) - o
            g = g + (B.roll(d, 1, ax) - d)
        return g * self.mu

    def _reg_terms(self, o: Array, h: Array) -> tuple[float, float, float]:
        B = self.m.B
        r = r1 = r2 = 0.0
        for ax in (0, 1):
            do = B.roll(o, -1, ax) - o
            dh = B.roll(h, -1, ax) - h
            r += B.norm2(do)
            r1 += 2 * B.vdot(do, dh)
            r2 += 2 * B.norm2(dh)
        return self.mu * r, self.mu * r1, self.mu * r2

    def step(self, it: int) -> dict[str, float]:
        m, B, idx, o = self.m, self.m.B, self.all, self.m.opts
        update_probe = it >= o.probe_update_start
        ramps = m.ramps(idx) if m.shifted else None
        pv = m.probe_views(idx, ramps=ramps)
        ov = m.object_views(idx)
        spec = B.fft2(pv * ov)
        inten = B.sum(B.abs2(spec), 1) if m.k > 1 else B.abs2(spec[:, 0])
        inten += ML_FLOOR
        c = m.counts
        ratio = c / inten  # I_meas / I_model
        w = 1 - ratio
        if not m.mask_all_good:
            w *= m.mask
        # metrics: Fourier error and Poisson deviance per good pixel
        _, err = m.fourier_factor(inten, idx)
        dev_terms = inten - c
        dev_terms += c * log(B, ratio + 1e-30)
        if not m.mask_all_good:
            dev_terms *= m.mask
        deviance = 2 * B.scalar(B.sum(dev_terms)) / self.n_good
        # gradients (Wirtinger, d/d conj)
        chi = B.ifft2(spec * w[:, None])
        gO = m.scatter(pv.conj() * chi, idx)
        if self.mu > 0:
            gO = gO + self._reg_grad(m.obj)
        dO = m.illumination(idx, pv)
        dO += m.opts.object_inertia * B.max(dO)
        zO = gO / dO
        if update_probe:
            gP = m.back_shift_sum(ov.conj() * chi, idx, ramps)
            dP = B.sum(B.abs2(ov[:, 0]), 0)
            dP += m.opts.probe_inertia * B.max(dP)
            if m.opts.ml_probe_scale != 1.0:
                dP /= m.opts.ml_probe_scale
            zP = gP / dP
            gz = B.vdot(gO, zO) + B.vdot(gP, zP)
        else:
            gP = zP = None
            gz = B.vdot(gO, zO)
        del chi
        # Polak-Ribiere (preconditioned), restarted when the probe starts moving
        hO, hP = -zO, (-zP if zP is not None else None)
        if self.prev is not None and (self.prev[1] is not None) == (hP is not None):
            p_hO, p_hP, p_gz, p_zO, p_zP = self.prev
            num = gz - B.vdot(gO, p_zO) - (B.vdot(gP, p_zP) if hP is not None else 0.0)
            beta = max(0.0, num / p_gz) if p_gz > 0 else 0.0
            hO = hO + p_hO * beta
            if hP is not None:
                hP = hP + p_hP * beta
        self.prev = (hO, hP, gz, zO, zP)
        # line search along (hO, hP): the model intensity along the line to second order
        # in t, I(t) = I + a1 t + a2 t^2 (a2 = |A|^2 >= 0), and a safeguarded Newton
        # search for the minimum of the Poisson likelihood on it
        hov = m.object_views(idx, hO)
        if hP is not None and o.ml_separate_steps:
            AO = B.fft2(pv * hov)
            del hov
            AP = B.fft2(m.probe_views(idx, hP, ramps) * ov)
            t_obj, t_probe = self._two_steps(spec, AO, AP, inten, c, hO)
            del AO, AP, spec
            if t_obj <= 0 and t_probe <= 0:
                self.prev = None  # no descent along this direction: restart CG
            m.obj = m.obj + hO * t_obj
            m.probe = m.probe + hP * t_probe
            m.constrain_probe()
            if self.prev is not None and m.k > 1:
                self.prev = None  # orthogonalisation changes the basis: restart CG
            return self._finish(it, idx, err, deviance)
        if hP is not None:
            A = B.fft2(m.probe_views(idx, hP, ramps) * ov + pv * hov)
        else:
            A = B.fft2(pv * hov)
        del hov
        a1 = B.sum((spec.conj() * A).real, 1) * 2 if m.k > 1 else (spec[:, 0].conj() * A[:, 0]).real * 2
        a2 = B.sum(B.abs2(A), 1) if m.k > 1 else B.abs2(A[:, 0])
        del A, spec
        reg = self._reg_terms(m.obj, hO) if self.mu > 0 else (0.0, 0.0, 0.0)
        # the step length from an evenly spaced subset of the frames (at least
        # ML_LINE_SEARCH_FRAMES): on the whole scan it was half of an iteration
        every = max(1, m.n // ML_LINE_SEARCH_FRAMES)
        if every > 1:
            sub = B.index(np.arange(0, m.n, every))
            inten, a1, a2, c = inten[sub], a1[sub], a2[sub], c[sub]
        scale = m.n / inten.shape[0]
        step = _poisson_line_search(B, inten, a1, a2, c, None if m.mask_all_good else m.mask, reg, scale)
        if step <= 0:
            self.prev = None  # no descent along this direction: restart CG
        m.obj = m.obj + hO * step
        if hP is not None:
            m.probe = m.probe + hP * step
            m.constrain_probe()
            if self.prev is not None and m.k > 1:
                self.prev = None  # orthogonalisation changes the basis: restart CG
        return self._finish(it, idx, err, deviance)

    def _finish(self, it: int, idx: np.ndarray, err: float, deviance: float) -> dict[str, float]:
        m, o = self.m, self.m.opts
        out = {"fourier_error": err / m.norm_data, "poisson_deviance": deviance}
        if o.position_refinement and it >= o.position_start and (it - o.position_start) % o.position_every == 0:
            out["position_step_px"] = m.refine_positions(idx)
            self.prev = None
        return out

    def _two_steps(self, spec: Array, AO: Array, AP: Array, inten: Array, c: Array, hO: Array) -> tuple[float, float]:
        """The object's and the probe's step along (hO, hP): the exit waves along the two
        steps are psi + t_O A_O + t_P A_P (their product term left out, as in the common
        step), so the model intensity is quadratic in (t_O, t_P)."""
        m, B = self.m, self.m.B

        def re(a: Array, b: Array) -> Array:
            return B.sum((a.conj() * b).real, 1) if m.k > 1 else (a[:, 0].conj() * b[:, 0]).real

        def sq(a: Array) -> Array:
            return B.sum(B.abs2(a), 1) if m.k > 1 else B.abs2(a[:, 0])

        terms = [re(spec, AO) * 2, re(spec, AP) * 2, sq(AO), sq(AP), re(AO, AP) * 2]
        every = max(1, m.n // ML_LINE_SEARCH_FRAMES)
        if every > 1:
            sub = B.index(np.arange(0, m.n, every))
            inten, c = inten[sub], c[sub]
            terms = [t[sub] for t in terms]
        reg = self._reg_terms(m.obj, hO) if self.mu > 0 else (0.0, 0.0, 0.0)
        mask = None if m.mask_all_good else m.mask
        return _poisson_two_steps(B, inten, terms, c, mask, reg, m.n / inten.shape[0])


def _poisson_two_steps(
    B: Backend,
    inten: Array,
    terms: list[Array],
    c: Array,
    mask: Array | None,
    reg: tuple[float, float, float],
    scale: float,
) -> tuple[float, float]:
    """Steps (t_O, t_P) >= 0 minimising scale * sum(mask (q - c log q)) + reg(t_O) with
    q = inten + bO t_O + bP t_P + cOO t_O^2 + cPP t_P^2 + cOP t_O t_P (``terms`` = bO, bP,
    cOO, cPP, cOP): from the best common step (:func:`_poisson_line_search`), safeguarded
    2-D Newton steps, each taken only where the likelihood falls (halved up to 4 times)."""
    bO, bP, cOO, cPP, cOP = terms

    def q_of(to: float, tp: float) -> Array:
        return inten + bO * to + bP * tp + cOO * (to * to) + cPP * (tp * tp) + cOP * (to * tp)

    def value(to: float, tp: float) -> float:
        q = q_of(to, tp)
        if B.scalar(B.sum((q <= 0) * 1.0)) > 0:
            return float("inf")
        v = q - c * log(B, q)
        if mask is not None:
            v = v * mask
        return scale * B.scalar(B.sum(v)) + reg[1] * to + reg[2] * to * to / 2

    t = _poisson_line_search(B, inten, bO + bP, cOO + cPP + cOP, c, mask, reg, scale)
    to = tp = t
    best = value(to, tp)
    for _ in range(6):
        q = q_of(to, tp)
        d_o = bO + cOO * (2 * to) + cOP * tp
        d_p = bP + cPP * (2 * tp) + cOP * to
        r = c / q
        w = 1 - r
        rq = r / q
        parts = [w * d_o, w * d_p, rq * d_o * d_o + w * cOO * 2, rq * d_p * d_p + w * cPP * 2, rq * d_o * d_p + w * cOP]
        if mask is not None:
            parts = [p * mask for p in parts]
        g_o, g_p, h_oo, h_pp, h_op = (scale * B.scalar(B.sum(p)) for p in parts)
        g_o += reg[1] + reg[2] * to
        h_oo += reg[2]
        det = h_oo * h_pp - h_op * h_op
        if not (np.isfinite(det) and det > 0 and h_oo > 0):
            break
        s_o = -(h_pp * g_o - h_op * g_p) / det
        s_p = -(h_oo * g_p - h_op * g_o) / det
        for _ in range(4):
            n_o, n_p = max(to + s_o, 0.0), max(tp + s_p, 0.0)
            v = value(n_o, n_p)
            if np.isfinite(v) and v < best:
                break
            s_o, s_p = s_o / 2, s_p / 2
        else:
            break
        small = abs(n_o - to) <= 1e-3 * max(to, 1e-12) and abs(n_p - tp) <= 1e-3 * max(tp, 1e-12)
        to, tp, best = n_o, n_p, v
        if small:
            break
    return to, tp


def _poisson_line_search(
    B: Backend,
    inten: Array,
    a1: Array,
    a2: Array,
    c: Array,
    mask: Array | None,
    reg: tuple[float, float, float],
    scale: float = 1.0,
) -> float:
    """Step t >= 0 minimising scale * sum(mask (q - c log q)) + reg0 + reg1 t + reg2 t^2 / 2
    with q(t) = inten + a1 t + a2 t^2 (safeguarded Newton with bracketing); ``scale``
    extrapolates a subset of the frames to the whole scan."""

    def derivs(t: float) -> tuple[float, float]:
        q = inten + a1 * t + a2 * (t * t) if t else inten
        d = a1 + a2 * (2 * t) if t else a1
        r = c / q
        w = 1 - r
        g = w * d
        h = r / q * d * d
        h += w * a2 * 2
        if mask is not None:
            g *= mask
            h *= mask
        return (scale * B.scalar(B.sum(g)) + reg[1] + reg[2] * t, scale * B.scalar(B.sum(h)) + reg[2])

    g0, h0 = derivs(0.0)
    if not g0 < 0:
        return 0.0
    lo, hi = 0.0, None
    t = -g0 / h0 if h0 > 0 else 1e-3
    for _ in range(6):
        g, h = derivs(t)
        if not np.isfinite(g):
            hi = t
        elif g < 0:
            lo = t
        else:
            hi = t
        if np.isfinite(g) and abs(g) < 1e-3 * abs(g0):
            return t
        newton = t - g / h if (np.isfinite(g) and h > 0) else None
        if hi is None:
            t = newton if newton is not None and newton > t else 2 * t
        else:
            t = newton if newton is not None and lo < newton < hi else (lo + hi) / 2
    return lo if hi is None or lo > 0 else t


#: frames (at least) on which ML's line search evaluates the likelihood
ML_LINE_SEARCH_FRAMES = 32
