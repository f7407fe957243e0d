"""Ptychographic reconstruction engines: Difference Map, Maximum Likelihood and LSQML.

All three are written once against :class:`~panreduce_ptychography.backend.Backend`, so
the same code runs with numpy on the CPU and with torch on a GPU.

Model: the exit wave of probe mode ``k`` at scan position ``j`` is
``psi_jk = P_k(r - f_j) * O(r + i_j)``, with ``i_j`` the integer and ``f_j`` the
sub-pixel part of the position (the probe is shifted by a Fourier phase ramp when
``subpixel``); the expected intensity is ``I_j = sum_k |F psi_jk|^2`` (incoherent
mixed states, Thibault & Menzel 2013).

References
- Difference Map: P. Thibault et al., Science 321, 379 (2008); Ultramicroscopy 109,
  338 (2009).
- Maximum likelihood with conjugate gradients: P. Thibault & M. Guizar-Sicairos,
  New J. Phys. 14, 063004 (2012).
- LSQML: M. Odstrcil, A. Menzel & M. Guizar-Sicairos, Opt. Express 26, 3108 (2018).
- Position refinement: the same paper (gradient of the exit wave along the object's
  spatial derivative), cf. A. Tripathi et al., Opt. Express 22, 1452 (2014).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panreduce_ptychography.backend import Array, Backend
from panreduce_ptychography.problem import Problem

ENGINES = ("dm", "ml", "lsqml")

Callback = Callable[[int, int, dict[str, Any]], None]

#: sqrt(photons) added to the model amplitude in the modulus projection: where the model
#: is dark (below ~0.01 photon) the projection is damped instead of amplifying round-off
FOURIER_EPS = 0.1
#: DM's default damping of the modulus projection, sqrt(photons): Poisson noise makes the
#: measured amplitude sqrt(n) uncertain by ~0.5 whatever n, so the projection is softened
#: where the model amplitude is within a few noise widths of 0 (the noisy, weak pixels
#: at high q); measured 0.025 -> 0.019 rad after 100 iterations at 1e8 photons/frame,
#: 0.13 -> 0.09 at 1e6 and 0.37 -> 0.13 at 1e5 (benchmark's small case)
DM_FOURIER_EPS = 3.0


@dataclass(frozen=True)
class Options:
    """Engine options (see the technique's parameters for their meaning)."""

    probe_update_start: int = 1
    probe_support: float = 0.0  # radius as a fraction of the frame side; 0 = none
    subpixel: bool = True
    # sub-pixel shifts rounded to 1/grid px, one shifted probe per class (fewer FFTs);
    # 0 = exact; ignored (exact) with position refinement
    subpixel_grid: int = 0
    dm_alpha: float = 1.0
    dm_fourier_eps: float = DM_FOURIER_EPS  # damping of DM's modulus projection, sqrt(photons)
    object_inertia: float = 1e-3  # regularisation of the object update, relative
    probe_inertia: float = 1e-3
    ml_regularisation: float = 0.0
    lsqml_batches: int = 4
    position_refinement: bool = False
    position_start: int = 10
    position_every: int = 1
    position_max_step: float = 0.5
    seed: int = 0


@dataclass
class State:
    """A reconstruction on the host: object (rows, cols), probe modes (K, H, W),
    positions (N, 2) window corners in object pixels, and the error history."""

    obj: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)


# -----------------------------------------------------------------------------------------
# initial guesses
def initial_probe(problem: Problem, probe: np.ndarray | None, modes: int, *, seed: int = 0,
                  diameter_px: float | None = None) -> np.ndarray:
    """(K, H, W) complex64 probe: the given one (its first modes), else the inverse
    Fourier transform of the mean diffraction amplitude (a focused probe), or a
    Gaussian of FWHM ``diameter_px``; extra modes are the first mode times low-order
    polynomials at 5 % of its power each. Scaled to the mean photons per frame."""
    h, w = problem.frame_shape
    if probe is not None:
        p = np.asarray(probe, np.complex64)
        if p.ndim == 2:
            p = p[None]
    elif diameter_px:
        y = np.arange(h) - h / 2
        x = np.arange(w) - w / 2
        r2 = y[:, None] ** 2 + x[None, :] ** 2
        p = np.exp(-4 * np.log(2) * r2 / diameter_px**2)[None].astype(np.complex64)
    else:
        amp = np.sqrt(np.maximum((problem.counts * problem.mask).mean(axis=0), 0))
        p = np.fft.fftshift(np.fft.ifft2(amp, norm="ortho"))[None].astype(np.complex64)
    out = np.zeros((modes, h, w), np.complex64)
    k0 = min(modes, p.shape[0])
    out[:k0] = p[:k0]
    if modes > k0:
        rng = np.random.default_rng(seed)
        y = (np.arange(h) - h / 2) / (h / 4)
        x = (np.arange(w) - w / 2) / (w / 4)
        basis = [y[:, None] + 0 * x[None, :], 0 * y[:, None] + x[None, :], y[:, None] * x[None, :],
                 y[:, None] ** 2 - x[None, :] ** 2]
        power0 = np.sum(np.abs(out[0]) ** 2)
        for k in range(k0, modes):
            b = basis[(k - k0) % len(basis)] * np.exp(2j * np.pi * rng.random())
            m = out[0] * b
            m *= np.sqrt(0.05 * power0 / max(np.sum(np.abs(m) ** 2), 1e-30))
            out[k] = m
    # scale to the measured photons per frame (object of unit amplitude)
    good = max(float(problem.mask.mean()), 1e-6)
    photons = float(problem.counts.sum(axis=(1, 2)).mean()) / good
    power = float(np.sum(np.abs(out) ** 2))
    if power > 0:
        out *= np.sqrt(photons / power)
    return out


def support_mask(shape: tuple[int, int], radius: float) -> np.ndarray:
    """A real-space probe support: 1 inside ``radius`` (fraction of the frame side),
    falling to 0 over a few pixels outside."""
    h, w = shape
    y = (np.arange(h) - h / 2)[:, None]
    x = (np.arange(w) - w / 2)[None, :]
    r = np.sqrt(y**2 + x**2)
    r0 = radius * min(h, w)
    edge = max(2.0, 0.05 * r0)
    return np.clip(1 - (r - r0) / edge, 0, 1).astype(np.float32)


# -----------------------------------------------------------------------------------------
class _Model:
    """The forward model on a backend: object, probe modes, positions and data."""

    def __init__(self, B: Backend, problem: Problem, state: State, opts: Options) -> None:
        self.B = B
        self.opts = opts
        self.n, self.h, self.w = problem.counts.shape
        self.obj_shape = tuple(state.obj.shape)
        self.counts = B.asarray(problem.counts)
        self._amplitudes: Array | None = None
        self._masked: Array | None = None
        self.mask = B.asarray(problem.mask)
        self.mask_all_good = bool(np.all(problem.mask > 0))
        self.obj = B.asarray(state.obj, complex_=True)
        self.probe = B.asarray(state.probe, complex_=True)
        self.k = self.probe.shape[0]
        self.support = (B.asarray(support_mask((self.h, self.w), opts.probe_support))
                        if opts.probe_support > 0 else None)
        ky = np.fft.fftfreq(self.h)
        kx = np.fft.fftfreq(self.w)
        self.ky, self.kx = ky, kx
        self.norm_data = float((problem.counts * problem.mask).sum())
        self.set_positions(state.positions)

    # -- data ---------------------------------------------------------------------------
    @property
    def amplitudes(self) -> Array:
        if self._amplitudes is None:
            self._amplitudes = self.B.sqrt(self.counts)
        return self._amplitudes

    @property
    def masked_amplitudes(self) -> Array:
        """sqrt(counts) at good pixels, 0 at bad ones."""
        if self._masked is None:
            self._masked = self.amplitudes if self.mask_all_good else self.amplitudes * self.mask
            self.bad = 1 - self.mask
        return self._masked

    # -- positions --------------------------------------------------------------------
    def set_positions(self, positions: np.ndarray) -> None:
        hi = np.array([self.obj_shape[0] - self.h, self.obj_shape[1] - self.w], float)
        pos = np.clip(np.asarray(positions, np.float64), 0, hi)
        self.positions = pos
        ipos = np.floor(pos + 0.5).astype(np.int64)
        ipos = np.clip(ipos, 0, hi.astype(np.int64))
        self.iy, self.ix = ipos[:, 0], ipos[:, 1]
        self.frac = pos - ipos if self.opts.subpixel else np.zeros_like(pos)
        self.cls = None  # (n,) shift class of each position when shifts are quantised
        grid = self.opts.subpixel_grid
        if self.opts.subpixel and grid > 0 and not self.opts.position_refinement:
            q = np.round(self.frac * grid).astype(np.int64)
            uq, self.cls = np.unique(q, axis=0, return_inverse=True)
            self.cls = self.cls.reshape(-1)
            self.frac = uq / grid  # one shift per class
        self.shifted = self.opts.subpixel and bool(np.any(np.abs(self.frac) > 1e-6))
        self._ramps = None

    def ramps(self, idx: np.ndarray) -> Array:
        """(n, 1, H, W) Fourier phase ramps that shift the probe by the sub-pixel parts
        (cached for the whole scan until the positions change); with quantised shifts,
        the (Q, 1, H, W) ramps of the shift classes whatever ``idx``."""
        B = self.B
        if self._ramps is None:
            f = self.frac
            ry = np.exp(-2j * np.pi * f[:, 0:1] * self.ky[None, :]).astype(np.complex64)
            rx = np.exp(-2j * np.pi * f[:, 1:2] * self.kx[None, :]).astype(np.complex64)
            self._ramps = B.asarray(ry, complex_=True)[:, None, :, None] * B.asarray(rx, complex_=True)[:, None, None, :]
        if len(idx) == self.n or self.cls is not None:
            return self._ramps
        return self._ramps[B.asarray_index(idx)]

    # -- views ------------------------------------------------------------------------
    def probe_views(self, idx: np.ndarray, probe: Array | None = None, ramps: Array | None = None) -> Array:
        """Probe modes at the positions ``idx``: (n, K, H, W), or (1, K, H, W) when no
        position has a sub-pixel part."""
        p = self.probe if probe is None else probe
        if not self.shifted:
            return p[None]
        if ramps is None:
            ramps = self.ramps(idx)
        if self.cls is not None:  # one shifted probe per class, gathered per position
            cls = self.cls[idx]
            used = np.unique(cls)
            pq = self.class_probes(used, p)
            where = np.zeros(len(self.frac), np.int64)
            where[used] = np.arange(len(used))
            return pq[self.B.asarray_index(where[cls])]
        return self.B.ifft2(self.B.fft2(p)[None] * ramps, overwrite=True)

    def class_probes(self, classes: np.ndarray, probe: Array | None = None) -> Array:
        """(Q, K, H, W) probe modes shifted by the sub-pixel shifts of ``classes``
        (quantised shifts only)."""
        B = self.B
        p = self.probe if probe is None else probe
        ramps = self.ramps(np.arange(self.n))
        return B.ifft2(B.fft2(p)[None] * ramps[B.asarray_index(classes)], overwrite=True)

    def class_back_shift_sum(self, sums: Array, classes: np.ndarray) -> Array:
        """sum_q of the (K, H, W) frames of ``sums`` (one per class of ``classes``)
        shifted back by -f_q (quantised shifts only; ``sums`` is consumed)."""
        B = self.B
        spec = B.fft2(sums, overwrite=True)
        spec *= self.ramps(np.arange(self.n))[B.asarray_index(classes)].conj()
        return B.ifft2(B.sum(spec, 0))

    def back_shift_sum(self, stack: Array, idx: np.ndarray, ramps: Array | None = None) -> Array:
        """sum_j of each (K, H, W) frame of ``stack`` shifted back by -f_j -> (K, H, W)."""
        B = self.B
        if not self.shifted:
            return B.sum(stack, 0)
        if ramps is None:
            ramps = self.ramps(idx)
        if self.cls is not None:  # sum each class first: one FFT per class
            cls = self.cls[idx]
            used = np.unique(cls)
            sums = B.zeros((len(used), *stack.shape[1:]), complex_=True)
            for i, q in enumerate(used.tolist()):
                sums[i] = B.sum(stack[B.asarray_index(np.nonzero(cls == q)[0])], 0)
            return self.class_back_shift_sum(sums, used)
        spec = B.fft2(stack)
        spec *= ramps.conj()
        return B.ifft2(B.sum(spec, 0))

    def object_views(self, idx: np.ndarray, obj: Array | None = None) -> Array:
        """(n, 1, H, W) object patches under the probe windows ``idx``."""
        o = self.obj if obj is None else obj
        return self.B.gather(o, self.iy[idx], self.ix[idx], self.h, self.w)[:, None]

    def scatter(self, stack: Array, idx: np.ndarray) -> Array:
        """Object-sized sum of (n, K, H, W) or (n, H, W) patches placed at ``idx``."""
        if stack.ndim == 4:
            stack = self.B.sum(stack, 1) if stack.shape[1] > 1 else stack[:, 0]
        return self.B.scatter(self.obj_shape, stack, self.iy[idx], self.ix[idx])

    def illumination(self, idx: np.ndarray, pv: Array) -> Array:
        """sum_j sum_k |P_jk|^2 on the object grid."""
        B = self.B
        if pv.shape[0] == 1:
            return B.scatter_same(self.obj_shape, B.sum(B.abs2(pv[0]), 0), self.iy[idx], self.ix[idx])
        return self.scatter(B.sum(B.abs2(pv), 1), idx)

    # -- Fourier constraint --------------------------------------------------------------
    def fourier_factor(self, intensity: Array | None, idx: np.ndarray, *,
                       amplitude: Array | None = None, eps: float = FOURIER_EPS) -> tuple[Array, float]:
        """Modulus-replacement factor sqrt(I_meas) / (sqrt(I_model) + ``eps``) (1 at bad
        pixels) and the error sum(mask (|Psi| - A)^2) (relative to sum(mask A^2) once
        divided by ``norm_data``), from the model ``intensity`` or its square root
        ``amplitude`` (consumed)."""
        B = self.B
        amp = self.masked_amplitudes if len(idx) == self.n else self.masked_amplitudes[B.asarray_index(idx)]
        model = B.sqrt(intensity) if amplitude is None else amplitude
        diff = model - amp
        if not self.mask_all_good:
            diff *= self.mask
        err = B.norm2(diff)
        del diff
        model += eps
        fac = amp / model
        if not self.mask_all_good:
            fac += self.bad  # 1 at bad pixels: the model is kept there
        return fac, err

    # -- probe constraints --------------------------------------------------------------
    def constrain_probe(self) -> Array | None:
        """Apply the probe support and orthogonalise the modes (largest first); returns
        the (K, K) matrix that mixed the modes (new_m = sum_k U[m, k] old_k), or None."""
        B = self.B
        if self.support is not None:
            self.probe = self.probe * self.support
        if self.k > 1:
            flat = self.probe.reshape(self.k, -1)
            gram = B.to_numpy(B.matmul(flat.conj(), flat.T))
            vals, vecs = np.linalg.eigh(gram)
            order = np.argsort(vals)[::-1]
            v = vecs[:, order]
            u = B.asarray(np.ascontiguousarray(v.T), complex_=True)
            self.probe = B.matmul(u, flat).reshape(self.k, self.h, self.w)
            return u
        return None

    # -- position refinement ------------------------------------------------------------
    def position_steps(self, idx: np.ndarray, pv: Array, spec: Array, inten: Array) -> np.ndarray:
        """Gauss-Newton steps (n, 2) of the positions ``idx`` that best explain the
        amplitude residual sqrt(I_meas) - |Psi| by the derivative of the model amplitude
        with respect to each position (object gradient under the probe, taken to the
        detector), bounded by ``position_max_step``; their affine part is removed."""
        B = self.B
        o = self.obj
        amp = self.amplitudes[idx] if len(idx) != self.n else self.amplitudes
        model = B.sqrt(inten)
        resid = amp - model
        model += FOURIER_EPS
        if not self.mask_all_good:
            resid *= self.mask
        steps = np.zeros((len(idx), 2))
        for a, shift_axis in enumerate((0, 1)):
            grad = (B.roll(o, -1, shift_axis) - B.roll(o, 1, shift_axis)) * 0.5
            d = B.fft2(pv * self.object_views(idx, grad), overwrite=True)
            d_amp = B.sum((spec.conj() * d).real, 1) if self.k > 1 else (spec[:, 0].conj() * d[:, 0]).real
            del d
            d_amp /= model
            if not self.mask_all_good:
                d_amp *= self.mask
            num = B.to_numpy(B.real_dot_per_frame(d_amp, resid))
            den = B.to_numpy(B.real_dot_per_frame(d_amp, d_amp))
            den = den + 1e-3 * max(float(np.median(den)), 1e-30)
            steps[:, a] = num / den
        lim = self.opts.position_max_step
        return _remove_affine(np.clip(steps, -lim, lim), self.positions[idx])

    def move_positions(self, idx: np.ndarray, steps: np.ndarray) -> float:
        """Apply ``steps`` to the positions ``idx``; returns the RMS step (pixels)."""
        new = self.positions.copy()
        new[idx] += steps
        self.set_positions(new)
        return float(np.sqrt((steps**2).sum(axis=1).mean()))

    def refine_positions(self, idx: np.ndarray) -> float:
        """One position-refinement step at the current model (costs 3 FFT stacks)."""
        B = self.B
        pv = self.probe_views(idx)
        spec = B.fft2(pv * self.object_views(idx))
        inten = B.sum(B.abs2(spec), 1) if self.k > 1 else B.abs2(spec[:, 0])
        return self.move_positions(idx, self.position_steps(idx, pv, spec, inten))

    def to_state(self, history: list[dict[str, Any]]) -> State:
        B = self.B
        return State(obj=B.to_numpy(self.obj).astype(np.complex64),
                     probe=B.to_numpy(self.probe).astype(np.complex64),
                     positions=self.positions.copy(), history=history)


# -----------------------------------------------------------------------------------------
class _DM:
    """Difference Map (Thibault et al. 2008/2009) with one object/probe alternation of
    the overlap projection per iteration."""

    def __init__(self, m: _Model) -> None:
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
        change = B.norm2(t)
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
                self.psi[m.B.asarray_index(moved)] = m.probe_views(moved) * m.object_views(moved)
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
            sums = B.zeros((len(used), m.k, m.h, m.w), complex_=True)
            for i, q in enumerate(used.tolist()):
                sel = B.asarray_index(np.nonzero(m.cls == q)[0])
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


# -----------------------------------------------------------------------------------------
class _ML:
    """Maximum likelihood for Poisson counts, preconditioned Polak-Ribiere conjugate
    gradients with a Newton step along each direction (Thibault & Guizar-Sicairos 2012),
    optional smoothness prior ``mu * sum |grad O|^2``."""

    def __init__(self, m: _Model) -> None:
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
            r1 += 2 * B.vdot_real(do, dh)
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
        dev_terms += c * _log(B, ratio + 1e-30)
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
            zP = gP / dP
            gz = B.vdot_real(gO, zO) + B.vdot_real(gP, zP)
        else:
            gP = zP = None
            gz = B.vdot_real(gO, zO)
        del chi
        # Polak-Ribiere (preconditioned), restarted when the probe starts moving
        hO, hP = -zO, (-zP if zP is not None else None)
        if self.prev is not None and (self.prev[1] is not None) == (hP is not None):
            p_hO, p_hP, p_gz, p_zO, p_zP = self.prev
            num = gz - B.vdot_real(gO, p_zO) - (B.vdot_real(gP, p_zP) if hP is not None else 0.0)
            beta = max(0.0, num / p_gz) if p_gz > 0 else 0.0
            hO = hO + p_hO * beta
            if hP is not None:
                hP = hP + p_hP * beta
        self.prev = (hO, hP, gz, zO, zP)
        # line search along (hO, hP): the model intensity along the line to second order
        # in t, I(t) = I + a1 t + a2 t^2 (a2 = |A|^2 >= 0), and a safeguarded Newton
        # search for the minimum of the Poisson likelihood on it
        hov = m.object_views(idx, hO)
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
            sub = B.asarray_index(np.arange(0, m.n, every))
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
        out = {"fourier_error": err / m.norm_data, "poisson_deviance": deviance}
        if o.position_refinement and it >= o.position_start and (it - o.position_start) % o.position_every == 0:
            out["position_step_px"] = m.refine_positions(idx)
            self.prev = None
        return out


def _poisson_line_search(B: Backend, inten: Array, a1: Array, a2: Array, c: Array, mask: Array | None,
                         reg: tuple[float, float, float], scale: float = 1.0) -> float:
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

#: photons added to the model intensity in the Poisson likelihood (keeps it finite
#: where the model is dark and the data are not)
ML_FLOOR = 0.1


def _log(B: Backend, a: Array) -> Array:
    if B.name == "torch":
        return B.torch.log(a)
    return np.log(a)


# -----------------------------------------------------------------------------------------
class _LSQML:
    """Least-squares maximum likelihood (Odstrcil et al. 2018), Gaussian (amplitude) noise
    model, sparse mini-batches, per-position optimal step lengths for object and probe."""

    def __init__(self, m: _Model) -> None:
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


def _remove_affine(steps: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``steps`` minus their least-squares affine function of ``positions``: a common
    shift, scale, rotation or shear of all positions is not refined (it is degenerate
    with the object's placement and pixel size, and drifts otherwise)."""
    n = len(steps)
    if n < 4:
        return steps - steps.mean(axis=0)
    a = np.c_[positions - positions.mean(axis=0), np.ones(n)]
    coef, *_ = np.linalg.lstsq(a, steps, rcond=None)
    return steps - a @ coef


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


# -----------------------------------------------------------------------------------------
def reconstruct(
    problem: Problem,
    state: State,
    *,
    engine: str,
    iterations: int,
    backend: Backend,
    options: Options | None = None,
    callback: Callback | None = None,
    start_iteration: int = 0,
) -> State:
    """Run ``iterations`` of ``engine`` ("dm", "ml" or "lsqml") from ``state``.

    ``callback(i, iterations, metrics)`` is called after each iteration with the error
    metrics (``fourier_error``: relative modulus error; ``poisson_deviance`` for ML;
    ``position_step_px`` when positions were refined); it may raise to stop. Returns the
    new state, its history extended by one record per iteration.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r} (known: {', '.join(ENGINES)})")
    opts = options or Options()
    m = _Model(backend, problem, state, opts)
    eng = {"dm": _DM, "ml": _ML, "lsqml": _LSQML}[engine](m)
    history = list(state.history)
    t0 = time.perf_counter()
    for i in range(iterations):
        it = start_iteration + i
        metrics = eng.step(it)
        record = {"iteration": len(history) + 1, "engine": engine,
                  "time_s": time.perf_counter() - t0, **{k: float(v) for k, v in metrics.items()}}
        history.append(record)
        if callback is not None:
            callback(i + 1, iterations, record)
    return m.to_state(history)


# -----------------------------------------------------------------------------------------
def initial_object(problem: Problem, probe: np.ndarray | None = None, *, smoothing: float | None = None) -> np.ndarray:
    """Initial object: unit amplitude and the low-frequency phase from differential phase
    contrast (DPC).

    The centre of mass of a far-field pattern moves by ``<grad phi> / (2 pi)`` cycles per
    object pixel, ``<.>`` the average over the illuminated area weighted by the probe
    intensity. The shifts of all frames (minus their mean, which is only a phase ramp)
    sample the object's phase gradient at the probe positions; they are spread over the
    object grid by a normalised Gaussian convolution of width ``smoothing`` (default:
    the mean distance between neighbouring positions) and integrated by Fourier
    (Frankot-Chellappa) least squares on a padded grid. The engines are slow to build
    up phase at spatial periods longer than the probe; this map gives them a start
    (the detail is then recovered by the engine).
    """
    from scipy import fft as sfft
    from scipy import ndimage

    n, h, w = problem.counts.shape
    shape = problem.object_shape
    flat = np.ones(shape, np.complex64)
    if n < 3:
        return flat
    c = np.fft.fftshift(problem.counts * problem.mask, axes=(-2, -1))
    ky = np.fft.fftshift(np.fft.fftfreq(h))
    kx = np.fft.fftshift(np.fft.fftfreq(w))
    tot = c.sum(axis=(1, 2), dtype=np.float64)
    if np.any(tot <= 0):
        return flat
    gy = 2 * np.pi * (c.sum(axis=2, dtype=np.float64) @ ky) / tot
    gx = 2 * np.pi * (c.sum(axis=1, dtype=np.float64) @ kx) / tot
    del c
    gy -= gy.mean()
    gx -= gx.mean()
    # where each measurement sits: the centroid of the probe intensity in its window
    cy, cx = h / 2, w / 2
    if probe is not None:
        p2 = (np.abs(np.asarray(probe).reshape(-1, h, w)) ** 2).sum(0)
        total = float(p2.sum())
        if total > 0:
            cy = float(p2.sum(1) @ np.arange(h)) / total
            cx = float(p2.sum(0) @ np.arange(w)) / total
    pts = problem.positions + np.array([cy, cx])
    if smoothing is None:
        d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        smoothing = float(np.mean(np.sqrt(d2.min(axis=1))))
    smoothing = max(smoothing, 1.0)
    # normalised convolution on a grid padded by a quarter on each side (the periodic
    # integration must not wrap around)
    pad = (shape[0] // 4 + 1, shape[1] // 4 + 1)
    big = (shape[0] + 2 * pad[0], shape[1] + 2 * pad[1])
    iy = np.clip(np.round(pts[:, 0]).astype(int), 0, shape[0] - 1) + pad[0]
    ix = np.clip(np.round(pts[:, 1]).astype(int), 0, shape[1] - 1) + pad[1]
    flat_idx = iy * big[1] + ix
    size = big[0] * big[1]
    fields = []
    for vals in (np.ones(n), gy, gx):
        acc = np.bincount(flat_idx, vals, size).reshape(big).astype(np.float32)
        fields.append(ndimage.gaussian_filter(acc, smoothing, mode="constant", truncate=3.0))
    wgt, sy, sx = fields
    ok = wgt > 0.2 * wgt.max()
    safe = np.where(ok, wgt, 1)
    gyf = np.where(ok, sy / safe, 0).astype(np.float32)
    gxf = np.where(ok, sx / safe, 0).astype(np.float32)
    fy = np.fft.fftfreq(big[0]).astype(np.float32)[:, None]
    fx = np.fft.fftfreq(big[1]).astype(np.float32)[None, :]
    k2 = fy**2 + fx**2
    k2[0, 0] = 1.0
    spec = fy * sfft.fft2(gyf, workers=1)
    spec += fx * sfft.fft2(gxf, workers=1)
    spec *= -1j / (2 * np.pi * k2)
    spec[0, 0] = 0
    phase = sfft.ifft2(spec, workers=1, overwrite_x=True).real[pad[0]:pad[0] + shape[0], pad[1]:pad[1] + shape[1]]
    return np.exp(1j * phase).astype(np.complex64)
