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
