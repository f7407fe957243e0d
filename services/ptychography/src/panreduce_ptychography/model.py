"""The forward model shared by the engines: engine options, the reconstruction state, and
:class:`Model` (object, probe modes, positions and data on a backend, with the views,
Fourier constraint, probe constraints and position refinement every engine uses).

Model: the exit wave of probe mode ``k`` at scan position ``j`` is
``psi_jk = P_k(r - f_j) * O(r + i_j)``, with ``i_j`` the integer and ``f_j`` the
sub-pixel part of the position (the probe is shifted by a Fourier phase ramp when
``subpixel``); the expected intensity is ``I_j = sum_k |F psi_jk|^2`` (incoherent
mixed states, Thibault & Menzel 2013).

Position refinement: M. Odstrcil, A. Menzel & M. Guizar-Sicairos, Opt. Express 26, 3108
(2018) (gradient of the exit wave along the object's spatial derivative), cf.
A. Tripathi et al., Opt. Express 22, 1452 (2014).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from panreduce_ptychography.backend import Array, Backend
from panreduce_ptychography.problem import Problem

#: sqrt(photons) added to the model amplitude in the modulus projection: where the model
#: is dark (below ~0.01 photon) the projection is damped instead of amplifying round-off
FOURIER_EPS = 0.1
#: DM's default damping of the modulus projection, sqrt(photons): Poisson noise makes the
#: measured amplitude sqrt(n) uncertain by ~0.5 whatever n, so the projection is softened
#: where the model amplitude is within a few noise widths of 0 (the noisy, weak pixels
#: at high q); measured 0.025 -> 0.019 rad after 100 iterations at 1e8 photons/frame,
#: 0.13 -> 0.09 at 1e6 and 0.37 -> 0.13 at 1e5 (benchmark's small case)
DM_FOURIER_EPS = 3.0
#: photons added to the model intensity in the Poisson likelihood (keeps it finite
#: where the model is dark and the data are not)
ML_FLOOR = 0.1
#: frames (at most) on which the per-iteration error metric is computed
METRIC_FRAMES = 32


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
    # ML: one step length each for the object and the probe part of the direction (a 2-D
    # Newton search) instead of one common step; the probe's preconditioner (sum |O|^2)
    # divided by ml_probe_scale (see plan.stages: the DM -> ML hand-over sets both)
    ml_separate_steps: bool = False
    ml_probe_scale: float = 1.0
    lsqml_batches: int = 4
    position_refinement: bool = False
    position_start: int = 10
    position_every: int = 1
    position_max_step_px: float = 0.5
    seed: int = 0


@dataclass
class State:
    """A reconstruction on the host: object (rows, cols), probe modes (K, H, W),
    positions (N, 2) window corners in object pixels, and the error history."""

    obj: np.ndarray
    probe: np.ndarray
    positions: np.ndarray
    history: list[dict[str, Any]] = field(default_factory=list)
    #: why the last engine run ended: levelled_off, iteration_cap or diverged
    stop_reason: str = ""


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


class Model:
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
        self.obj = B.asarray(state.obj, "complex64")
        self.probe = B.asarray(state.probe, "complex64")
        self.k = self.probe.shape[0]
        self.support = B.asarray(support_mask((self.h, self.w), opts.probe_support)) if opts.probe_support > 0 else None
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
            self._ramps = B.asarray(ry, "complex64")[:, None, :, None] * B.asarray(rx, "complex64")[:, None, None, :]
        if len(idx) == self.n or self.cls is not None:
            return self._ramps
        return self._ramps[B.index(idx)]

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
            return pq[self.B.index(where[cls])]
        return self.B.ifft2(self.B.fft2(p)[None] * ramps, overwrite=True)

    def class_probes(self, classes: np.ndarray, probe: Array | None = None) -> Array:
        """(Q, K, H, W) probe modes shifted by the sub-pixel shifts of ``classes``
        (quantised shifts only)."""
        B = self.B
        p = self.probe if probe is None else probe
        ramps = self.ramps(np.arange(self.n))
        return B.ifft2(B.fft2(p)[None] * ramps[B.index(classes)], overwrite=True)

    def class_back_shift_sum(self, sums: Array, classes: np.ndarray) -> Array:
        """sum_q of the (K, H, W) frames of ``sums`` (one per class of ``classes``)
        shifted back by -f_q (quantised shifts only; ``sums`` is consumed)."""
        B = self.B
        spec = B.fft2(sums, overwrite=True)
        spec *= self.ramps(np.arange(self.n))[B.index(classes)].conj()
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
            sums = B.zeros((len(used), *stack.shape[1:]), "complex64")
            for i, q in enumerate(used.tolist()):
                sums[i] = B.sum(stack[B.index(np.nonzero(cls == q)[0])], 0)
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
    def fourier_factor(
        self, intensity: Array | None, idx: np.ndarray, *, amplitude: Array | None = None, eps: float = FOURIER_EPS
    ) -> tuple[Array, float]:
        """Modulus-replacement factor sqrt(I_meas) / (sqrt(I_model) + ``eps``) (1 at bad
        pixels) and the error sum(mask (|Psi| - A)^2) (relative to sum(mask A^2) once
        divided by ``norm_data``), from the model ``intensity`` or its square root
        ``amplitude`` (consumed)."""
        B = self.B
        amp = self.masked_amplitudes if len(idx) == self.n else self.masked_amplitudes[B.index(idx)]
        model = B.sqrt(intensity) if amplitude is None else amplitude
        diff = model - amp
        if not self.mask_all_good:
            diff *= self.mask
        err = B.total(B.abs2(diff))  # float64 accumulation, no double-precision copy
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
            u = B.asarray(np.ascontiguousarray(v.T), "complex64")
            self.probe = B.matmul(u, flat).reshape(self.k, self.h, self.w)
            return u
        return None

    # -- position refinement ------------------------------------------------------------
    def position_steps(self, idx: np.ndarray, pv: Array, spec: Array, inten: Array) -> np.ndarray:
        """Gauss-Newton steps (n, 2) of the positions ``idx`` that best explain the
        amplitude residual sqrt(I_meas) - |Psi| by the derivative of the model amplitude
        with respect to each position (object gradient under the probe, taken to the
        detector), bounded by ``position_max_step_px``; their affine part is removed."""
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
        lim = self.opts.position_max_step_px
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

    # -- the error metric of the current estimate ------------------------------------------
    def metric_frames(self) -> np.ndarray:
        """The frames the per-iteration metric is computed on: all of them, or
        METRIC_FRAMES evenly spaced ones (the same every iteration)."""
        every = max(1, -(-self.n // METRIC_FRAMES))
        return np.arange(0, self.n, every)

    def estimate_metrics(self, idx: np.ndarray | None = None, *, expected: bool = False) -> dict[str, float]:
        """Error metrics of the current object, probe and positions (not of an engine's
        auxiliary waves) on the frames ``idx`` (default :meth:`metric_frames`), the same
        for every engine: ``fourier_error`` sum mask (|F psi| - sqrt(n))^2 / sum mask n,
        and ``poisson_deviance`` 2 sum mask (I - n + n log(n / I)) per good pixel, the
        model floored at ML_FLOOR photons; with ``expected`` also
        ``expected_deviance`` (per good pixel, the deviance's mean if the counts were
        Poisson draws of the model) and ``reduced_deviance`` (their ratio, ~1 for a
        model that explains the data to the noise)."""
        B = self.B
        idx = self.metric_frames() if idx is None else np.asarray(idx)
        err = dev = exp_dev = 0.0
        data = 0.0
        for s in range(0, len(idx), METRIC_FRAMES):
            sub = idx[s : s + METRIC_FRAMES]
            spec = B.fft2(self.probe_views(sub) * self.object_views(sub), overwrite=True)
            inten = B.sum(B.abs2(spec), 1) if self.k > 1 else B.abs2(spec[:, 0])
            del spec
            inten += ML_FLOOR
            counts = self.counts[B.index(sub)] if len(sub) != self.n else self.counts
            amp = B.sqrt(counts)
            diff = B.sqrt(inten) - amp
            if not self.mask_all_good:
                diff *= self.mask
            err += B.total(B.abs2(diff))
            del diff
            data += B.scalar(B.sum(counts * self.mask))
            terms = inten - counts
            terms += counts * log(B, (counts + 1e-30) / inten)
            if not self.mask_all_good:
                terms *= self.mask
            dev += 2 * B.scalar(B.sum(terms))
            if expected:
                e = expected_deviance(B.to_numpy(inten))
                exp_dev += float((e * B.to_numpy(self.mask)).sum())
        good = max(float(B.to_numpy(self.mask).sum()) * len(idx), 1.0)
        out = {"fourier_error": err / max(data, 1e-30), "poisson_deviance": dev / good}
        if expected:
            out["expected_deviance"] = exp_dev / good
            out["reduced_deviance"] = dev / max(exp_dev, 1e-30)
        return out

    def to_state(self, history: list[dict[str, Any]]) -> State:
        B = self.B
        return State(
            obj=B.to_numpy(self.obj).astype(np.complex64),
            probe=B.to_numpy(self.probe).astype(np.complex64),
            positions=self.positions.copy(),
            history=history,
        )


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


def log(B: Backend, a: Array) -> Array:
    """Natural logarithm on the backend."""
    if B.name == "torch":
        return B.torch.log(a)
    return np.log(a)


def _expected_deviance_table() -> tuple[np.ndarray, np.ndarray]:
    lam = np.logspace(-4, 4, 321)
    n = np.arange(0, 12000)[:, None].astype(np.float64)
    from scipy.special import gammaln

    logp = n * np.log(lam)[None] - lam[None] - gammaln(n + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        term = np.where(n > 0, n * np.log(n / lam[None]), 0.0)
    d = 2 * (lam[None] - n + term)
    return np.log(lam), (np.exp(logp) * d).sum(0)


_TABLE: tuple[np.ndarray, np.ndarray] | None = None


def expected_deviance(intensity: np.ndarray) -> np.ndarray:
    """E[2 (I - n + n log(n / I))] for counts n ~ Poisson(I), per pixel: ~2 I log(1/I) for
    I << 1, 1 + 1/(6 I) for I >> 1 (interpolated in log I from a table)."""
    global _TABLE
    if _TABLE is None:
        _TABLE = _expected_deviance_table()
    x, y = _TABLE
    lam = np.maximum(np.asarray(intensity, np.float64), 1e-4)
    out = np.interp(np.log(lam), x, y)
    big = lam > 1e4
    out[big] = 1 + 1 / (6 * lam[big])
    return out
