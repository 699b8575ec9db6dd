"""Smoothing in seconds and hysteresis."""

from __future__ import annotations

import math

import numpy as np
import pytest

from realtime.smoothing import Hysteresis, Smoother


def test_time_constant_is_independent_of_the_hop():
    # After tau seconds of a unit step, an exponential smoother reaches 1 - 1/e, whatever the hop.
    for hop_s in (0.1, 0.5, 1.0):
        s = Smoother(tau_s=2.0)
        s.update(np.zeros(1), hop_s)
        for _ in range(round(2.0 / hop_s)):
            value = s.update(np.ones(1), hop_s)
        assert value[0] == pytest.approx(1 - math.exp(-1), abs=1e-9)


def test_zero_tau_means_no_smoothing():
    s = Smoother(0.0)
    s.update(np.array([0.2]), 1.0)
    assert s.update(np.array([0.9]), 1.0)[0] == pytest.approx(0.9)


def test_hysteresis_switches_on_high_and_off_low():
    h = Hysteresis(1, on=0.5, off=0.4)
    seq = [0.45, 0.55, 0.45, 0.41, 0.39, 0.45, 0.5]
    assert [bool(h.update(np.array([p]))[0]) for p in seq] == [False, True, True, True, False, False, True]


def test_bad_thresholds_are_rejected():
    with pytest.raises(ValueError):
        Hysteresis(3, on=0.4, off=0.5)
    with pytest.raises(ValueError):
        Smoother(-1)


def test_the_mood_state_waits_for_a_clear_lead_held_for_the_dwell():
    from realtime.smoothing import MoodState, state_probabilities

    p = state_probabilities(0.6, 0.6)  # energetic and positive
    assert max(p, key=p.get) == "energetic-happy" and abs(sum(p.values()) - 1) < 1e-12
    state = MoodState(dwell_s=4.0, margin=0.1)
    assert state.update(p, 0.0) == "energetic-happy"  # the first state: at once
    # On the boundary (valence near 0) the lead flips back and forth: the state holds.
    for t, valence in enumerate([-0.05, 0.05, -0.08, 0.04, -0.06, 0.07], start=1):
        assert state.update(state_probabilities(valence, 0.6), float(t)) == "energetic-happy"
    # A clear lead for less than the dwell: still held; for the dwell: taken.
    sad = state_probabilities(-0.6, -0.6)
    assert state.update(sad, 10.0) == "energetic-happy"
    assert state.update(sad, 13.0) == "energetic-happy"
    assert state.update(sad, 14.0) == "sad-dark"
    # Silence at once, and out of it at once, to whatever leads.
    assert state.update(None, 15.0) == "silent"
    assert state.update(p, 16.0) == "energetic-happy"
    with pytest.raises(ValueError):
        MoodState(dwell_s=-1)


def test_adaptive_smoothing_follows_a_step_and_smooths_jitter():
    """follow > 0 (the 1-euro filter's idea): a real change is followed within a fraction of the
    time constant; jitter around a steady value (of the size windows a quarter second apart
    show in steady music) is still halved, if less than without it."""
    rng = np.random.default_rng(0)
    hop_s, tau_s = 0.25, 2.0
    steady = 0.02 * rng.standard_normal(240)  # a minute of jitter around 0
    step = np.r_[np.zeros(40), np.ones(40)]  # then a real change, 0 -> 1
    out = {}
    for follow in (0.0, 20.0):
        smoother = Smoother(tau_s, follow)
        out[follow] = np.array([smoother.update(np.array([x]), hop_s)[0] for x in np.r_[steady, step]])
    plain, adaptive = out[0.0], out[20.0]
    settled = slice(40, 240)
    assert plain[settled].std() < adaptive[settled].std() < 0.6 * steady[settled].std()
    half = lambda y: (np.argmax(y[280:] >= 0.5) + 1) * hop_s  # noqa: E731 - seconds after the step
    assert half(adaptive) <= 0.5 < 1.25 <= half(plain), (half(adaptive), half(plain))
    assert Smoother(tau_s, 20.0).update(np.ones(1), hop_s) == 1.0  # the first value passes
    with pytest.raises(ValueError):
        Smoother(1.0, -1.0)
