"""Difference Map (P. Thibault et al., Science 321, 379 (2008); Ultramicroscopy 109, 338
(2009))."""

from __future__ import annotations

import numpy as np

from panreduce_ptychography.backend import Array
from panreduce_ptychography.model import Model


class DM:
    """Difference Map (Thibault et al. 2008/2009) with one object/probe alternation of
    the overlap projection per iteration."""

    def __init__(self, m: Model) -> None:
        self.m = m
        self.all = np.arange(m.n)
        pv = m.probe_views(self.all)
        self.psi = pv * m.object_views(self.all)

    def step(self, it: int) -> dict[str, float]:
        m, B, idx, o = self.m, self.m.B, self.all, self.m.opts
        pv = m.probe_views(idx)
        phi = pv * m.object_views(idx)
        # Fourier projection of (1 + a) phi - a psi
        a = o.dm_alpha
        t = phi * (1 + a) if a != 1 else phi + phi
        t -= self.psi * a if a != 1 else self.psi
        spec = B.fft2(t, overwrite=True)
        if m.k > 1:
            fac, err = m.fourier_factor(B.sum(B.abs2(spec), 1), idx, eps=o.dm_fourier_eps)
        else:
            fac, err = m.fourier_factor(None, idx, amplitude=B.abs(spec[:, 0]), eps=o.dm_fourier_eps)
        spec *= fac[:, None]
        t = B.ifft2(spec, overwrite=True)
        # psi <- psi + P_F(...) - phi
        t -= phi
        change = B.total(B.abs2(t))
        self.psi += t
        del t, phi, spec
        # overlap projection: object, then probe (which needs the probe views only
        # without quantised shifts)
        self.update_object(pv, consume=m.cls is not None)
        if it >= o.probe_update_start:
            self.update_probe(pv)
        out = {"fourier_error": err / m.norm_data, "exit_wave_change": change / m.norm_data}
        if o.position_refinement and it >= o.position_start and (it - o.position_start) % o.position_every == 0:
            old_iy, old_ix = m.iy.copy(), m.ix.copy()
            out["position_step_px"] = m.refine_positions(idx)
            moved = np.nonzero((m.iy != old_iy) | (m.ix != old_ix))[0]
            if len(moved):  # their exit waves belong to other windows: restart them
                self.psi[m.B.index(moved)] = m.probe_views(moved) * m.object_views(moved)
        return out

    def update_object(self, pv: Array, *, consume: bool = False) -> None:
        """Closed-form object update; ``consume``: ``pv`` is a scratch copy that may be
        overwritten (saves a pass over the exit waves)."""
        m, B, idx = self.m, self.m.B, self.all
        den = m.illumination(idx, pv)
        if consume and pv.shape[0] > 1:
            cp = B.conj_inplace(pv)
            cp *= self.psi
            num = m.scatter(cp, idx)
            del cp
        else:
            num = m.scatter(pv.conj() * self.psi, idx)
        d = m.opts.object_inertia * B.max(den)
        num += m.obj * d
        den += d
        m.obj = num / den

    def update_probe(self, pv: Array) -> None:
        m, B, idx = self.m, self.m.B, self.all
        ov = m.object_views(idx)
        o2 = B.abs2(ov)
        den = B.sum(o2[:, 0], 0)
        d = m.opts.probe_inertia * B.max(den)
        if not m.shifted:
            num = B.sum(B.conj_inplace(ov) * self.psi, 0)
            num += m.probe * d
            m.probe = num / (den + d)
        elif m.cls is not None:
            # sum_j shift_-f_j(conj(O_j) (psi_j - P_q(j) O_j)) with one shifted probe per
            # class q: sum_q shift_-q(sum_{j in q} conj(O_j) psi_j - P_q sum_{j in q} |O_j|^2)
            co = B.conj_inplace(ov)
            co *= self.psi
            used = np.unique(m.cls)
            pq = m.class_probes(used)
            sums = B.zeros((len(used), m.k, m.h, m.w), "complex64")
            for i, q in enumerate(used.tolist()):
                sel = B.index(np.nonzero(m.cls == q)[0])
                sums[i] = B.sum(co[sel], 0) - pq[i] * B.sum(o2[sel], 0)
            del co, o2
            grad = m.class_back_shift_sum(sums, used)
            m.probe = m.probe + grad / (den + d)
        else:
            resid = self.psi - pv * ov
            grad = m.back_shift_sum(ov.conj() * resid, idx)
            m.probe = m.probe + grad / (den + d)
        u = m.constrain_probe()
        if u is not None:  # the exit waves follow the modes they belong to
            n = self.psi.shape[0]
            self.psi = B.matmul(u, self.psi.reshape(n, m.k, -1)).reshape(n, m.k, m.h, m.w)
