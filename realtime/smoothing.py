"""Smoothing in seconds, tag hysteresis and silence: what keeps the lights from flickering."""

from __future__ import annotations

import math

import numpy as np

SPEED_TAU_S = 0.5  # how long the speed estimate of an adaptive smoother averages over


class Smoother:
    """Exponential smoothing with a time constant: alpha = 1 - exp(-dt / tau).

    Expressed in seconds rather than hops, so changing the hop does not change the feel.

    ``follow`` > 0 makes it adaptive, after the 1-euro filter (Casiez, Roussel & Vogel 2012,
    "1 € filter: a simple speed-based low-pass filter for noisy input in interactive systems"):
    the time constant shrinks while the signal moves, tau = 1 / (1 / tau_s + follow * speed), with
    speed the size of the averaged rate of change (units per second, over ``SPEED_TAU_S``).  Jitter
    around a steady value moves it little and is smoothed with ``tau_s``; a real change keeps
    moving it one way, and is followed within a fraction of ``tau_s``.  Per element.
    """

    def __init__(self, tau_s: float, follow: float = 0.0):
        if tau_s < 0 or follow < 0:
            raise ValueError("the smoothing time constant and follow must be >= 0")
        self.tau_s = tau_s
        self.follow = follow
        self.value: np.ndarray | None = None
        self._speed: np.ndarray | None = None  # the averaged signed rate of change

    def update(self, x: np.ndarray, dt_s: float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        dt_s = max(dt_s, 0.0)
        if self.value is None or self.tau_s == 0:
            self.value = x.copy()
            self._speed = np.zeros_like(x)
        elif self.follow == 0:
            alpha = 1.0 - math.exp(-dt_s / self.tau_s)
            self.value += alpha * (x - self.value)
        else:
            # The signed rate, averaged before its size is taken: jitter cancels out, a change
            # that keeps going one way adds up.
            rate = (x - self.value) / dt_s if dt_s > 0 else np.zeros_like(x)
            self._speed += (1.0 - math.exp(-dt_s / SPEED_TAU_S)) * (rate - self._speed)
            tau = 1.0 / (1.0 / self.tau_s + self.follow * np.abs(self._speed))
            self.value += (1.0 - np.exp(-dt_s / tau)) * (x - self.value)
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


# The mood states a lighting designer binds scenes to: the four quadrants of the valence/arousal
# plane, in plain words, plus silence.  Valence is negative (-1) .. positive (+1), arousal calm
# (-1) .. energetic (+1); Russell's circumplex, the plane the 4Q dataset is labelled in.
STATES = ("energetic-happy", "tense-angry", "sad-dark", "calm-tender")
SILENT = "silent"
MOOD_STATES = (*STATES, SILENT)  # every state a mood message can carry


def state_probabilities(valence: float, arousal: float) -> dict[str, float]:
    """The four quadrants' probabilities from the (smoothed) valence and arousal.

    valence = 2 p_v - 1 and arousal = 2 p_a - 1 of the model's calibrated probabilities that the
    music is positive and energetic; taken as independent, each quadrant's probability is the
    product of its two sides.
    """
    p_v, p_a = (valence + 1.0) / 2.0, (arousal + 1.0) / 2.0
    return {
        "energetic-happy": p_v * p_a,
        "tense-angry": (1.0 - p_v) * p_a,
        "sad-dark": (1.0 - p_v) * (1.0 - p_a),
        "calm-tender": p_v * (1.0 - p_a),
    }


class MoodState:
    """One state at a time, changed only when another has led by ``margin`` for ``dwell_s``.

    So a scene never flips back and forth while the music sits on a quadrant boundary.  Silence
    is entered at once (the lights should follow a stop) and left at once for the leading state.
    """

    def __init__(self, dwell_s: float, margin: float = 0.1):
        if dwell_s < 0 or not 0 <= margin < 1:
            raise ValueError("need dwell_s >= 0 and 0 <= margin < 1")
        self.dwell_s, self.margin = dwell_s, margin
        self.state: str | None = None
        self._challenger: str | None = None
        self._since_s = 0.0

    def update(self, p: dict[str, float] | None, t_s: float) -> str | None:
        """``p``: the states' probabilities (None in silence); ``t_s``: stream time in seconds."""
        if p is None:
            self.state, self._challenger = SILENT, None
            return self.state
        best = max(p, key=p.get)
        if self.state in (None, SILENT):
            self.state, self._challenger = best, None
        elif best != self.state and p[best] - p[self.state] >= self.margin:
            if self._challenger != best:
                self._challenger, self._since_s = best, t_s
            if t_s - self._since_s >= self.dwell_s:
                self.state, self._challenger = best, None
        else:
            self._challenger = None
        return self.state


def rms_dbfs(mean_square: float) -> float:
    """Level of a signal with the given mean square, in dB relative to full scale (sine-free)."""
    return 10.0 * math.log10(max(mean_square, 1e-20))
