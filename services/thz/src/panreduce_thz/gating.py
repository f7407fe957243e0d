"""Per-pulse signal from the ADC traces: gated signal minus gated background."""

from __future__ import annotations

import numpy as np


def gated_signal(
    traces: np.ndarray, *, signal_gate: tuple[int, int] = (0, 48), background_gate: tuple[int, int] = (48, 96)
) -> np.ndarray:
    """Sum of samples ``signal_gate[0]:signal_gate[1]`` minus the sum of samples
    ``background_gate[0]:background_gate[1]`` of each trace (pulses × samples, ADC volts
    or arbitrary units); float64 per pulse. Gates of unequal length are used as given
    (the facility's default gates are the two halves of a 96-sample trace)."""
    t = np.asarray(traces, dtype=np.float32)
    s0, s1 = signal_gate
    b0, b1 = background_gate
    return t[:, s0:s1].sum(axis=1, dtype=np.float64) - t[:, b0:b1].sum(axis=1, dtype=np.float64)


def pair_indices(n_camera: int, n_adc: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera and ADC pulse indices paired with a shift of ``offset`` pulses (camera pulse
    i ↔ ADC pulse i − offset, the facility's ``np.roll`` direction). Pulses with no
    partner are dropped rather than wrapped around as ``np.roll`` does."""
    cam = np.arange(max(0, offset), min(n_camera, n_adc + offset))
    return cam, cam - offset
