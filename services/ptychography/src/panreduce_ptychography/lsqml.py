"""LSQML: least-squares maximum likelihood (M. Odstrcil, A. Menzel & M. Guizar-Sicairos,
Opt. Express 26, 3108 (2018))."""

from __future__ import annotations

import numpy as np

from panreduce_ptychography.model import Model


class LSQML:
    """Least-squares maximum likelihood (Odstrcil et al. 2018), Gaussian (amplitude) noise
    model, sparse mini-batches, per-position optimal step lengths for object and probe."""

    def __init__(self, m: Model) -> None:
        self.m = m
        self.rng = np.random.default_rng(m.opts.seed)

    def step(self, it: int) -> dict[str, float]:
        m, B, o = self.m, self.m.B, self.m.opts
        nb = max(1, min(o.lsqml_batches, m.n))
        order = self.rng.permutation(m.n)
        batches = [np.sort(order[i::nb]) for i in range(nb)]
        err = 0.0
        steps = []
        refine = o.position_refinement and it >= o.position_start and (it - o.position_start) % o.position_every == 0
        for idx in batches:
            ramps = m.ramps(idx) if m.shifted else None
            pv = m.probe_views(idx, ramps=ramps)
            ov = m.object_views(idx)
            phi = pv * ov
            spec = B.fft2(phi)
            del phi
            inten = B.sum(B.abs2(spec), 1) if m.k > 1 else B.abs2(spec[:, 0])
            pos_steps = m.position_steps(idx, pv, spec, inten) if refine else None
            fac, e = m.fourier_factor(inten, idx)
            del inten
            err += e
            fac -= 1
            spec *= fac[:, None]
            chi = B.ifft2(spec, overwrite=True)
            del spec
            # update directions
            pchi = pv.conj() * chi
            num_o = m.scatter(pchi, idx)
            den_o = m.illumination(idx, pv)
            den_o += o.object_inertia * B.max(den_o)
            d_obj = num_o / den_o
            del num_o
            update_probe = it >= o.probe_update_start
            dov = m.object_views(idx, d_obj)
            a = pv * dov
            aa = B.to_numpy(B.real_dot_per_frame(a, a))
            ac = B.to_numpy(B.real_dot_per_frame(a, chi))
            if update_probe:
                num_p = m.back_shift_sum(ov.conj() * chi, idx, ramps)
                den_p = B.sum(B.abs2(ov[:, 0]), 0)
                den_p += o.probe_inertia * B.max(den_p)
                d_probe = num_p / den_p
                b = m.probe_views(idx, d_probe, ramps) * ov
                bb = B.to_numpy(B.real_dot_per_frame(b, b))
                ab = B.to_numpy(B.real_dot_per_frame(a, b))
                bc = B.to_numpy(B.real_dot_per_frame(b, chi))
                del b
                alpha_o, alpha_p = _solve_steps(aa, ab, bb, ac, bc)
                # the probe is shared: one step for the batch, least squares over all
                # its positions given their object steps
                alpha_p = np.array([np.clip(np.sum(bc - alpha_o * ab) / max(np.sum(bb), 1e-30), 0, 2)])
            else:
                alpha_o = np.clip(ac / np.maximum(aa, 1e-30 + 1e-9 * aa.max()), 0, 1)
                alpha_p = None
            del a, dov
            # object: each position's contribution weighted by its own step
            wgt = B.asarray(alpha_o.astype(np.float32))[:, None, None, None]
            pchi *= wgt
            m.obj = m.obj + m.scatter(pchi, idx) / den_o
            del pchi
            if alpha_p is not None:
                m.probe = m.probe + d_probe * float(np.mean(alpha_p))
                m.constrain_probe()
            if pos_steps is not None:
                steps.append(m.move_positions(idx, pos_steps))
        out = {"fourier_error": err / m.norm_data}
        if steps:
            out["position_step_px"] = float(np.sqrt(np.mean(np.square(steps))))
        return out


def _solve_steps(aa, ab, bb, ac, bc):
    """Per-position least-squares steps (alpha_O, alpha_P) minimising
    || chi - alpha_O a - alpha_P b ||^2, bounded to [0, 1]."""
    reg = 1e-6 * (aa + bb) + 1e-30
    a11, a22 = aa + reg, bb + reg
    det = a11 * a22 - ab * ab
    ok = det > 1e-12 * a11 * a22
    ao = np.where(ok, (a22 * ac - ab * bc) / np.where(ok, det, 1), ac / a11)
    ap = np.where(ok, (a11 * bc - ab * ac) / np.where(ok, det, 1), 0.0)
    return np.clip(ao, 0, 1), np.clip(ap, 0, 1)
