"""Smoothing in seconds, tag hysteresis and silence: what keeps the lights from flickering."""

from __future__ import annotations

import math

import numpy as np


class Smoother:
    """Exponential smoothing with a time constant: alpha = 1 - exp(-dt / tau).

    Expressed in seconds rather than hops, so changing the hop does not change the feel.
    """

    def __init__(self, tau_s: float):
        if tau_s < 0:
            raise ValueError("the smoothing time constant must be >= 0 seconds")
        self.tau_s = tau_s
        self.value: np.ndarray | None = None

    def update(self, x: np.ndarray, dt_s: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.value is None or self.tau_s == 0:
            self.value = x.copy()
        else:
            alpha = 1.0 - math.exp(-max(dt_s, 0.0) / self.tau_s)
            self.value += alpha * (x - self.value)
        return self.value


class Hysteresis:
    """Per-tag on/off: on at ``on`` or above, off below ``off`` (off < on); scalars or per-tag arrays."""

    def __init__(self, n_tags: int, on: float | np.ndarray = 0.5, off: float | np.ndarray = 0.4):
        on = np.broadcast_to(np.asarray(on, dtype=np.float64), (n_tags,))
        off = np.broadcast_to(np.asarray(off, dtype=np.float64), (n_tags,))
        if not ((0.0 <= off) & (off < on) & (on <= 1.0)).all():
            raise ValueError(f"need 0 <= off < on <= 1 for tag hysteresis, got on={on}, off={off}")
        self.on, self.off = on, off
        self.state = np.zeros(n_tags, dtype=bool)

    def update(self, p: np.ndarray) -> np.ndarray:
        self.state = np.where(self.state, p >= self.off, p >= self.on)
        return self.state

    def reset(self) -> None:
        self.state[:] = False


def rms_dbfs(mean_square: float) -> float:
    """Level of a signal with the given mean square, in dB relative to full scale (sine-free)."""
    return 10.0 * math.log10(max(mean_square, 1e-20))
