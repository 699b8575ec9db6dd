"""Temperature scaling on validation windows, folded into the heads, and its calibration error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from train.calibration import expected_calibration_error, fit_temperature, fold_temperatures, sigmoid_windows
from train.loop import Example, window_logits


def test_ece_by_hand():
    assert expected_calibration_error([0.1, 0.9], [0, 0]) == pytest.approx(0.5)
    assert expected_calibration_error([0.7] * 10, [1] * 7 + [0] * 3) == pytest.approx(0.0)
    # Soft labels: a bin's mean label is the listeners' mean fraction.
    assert expected_calibration_error([0.25, 0.26], [0.5, 0.5]) == pytest.approx(0.245)
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [0.5, 0.5])


def test_fit_temperature_recovers_the_temperature_of_the_labels():
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 3.0, 200_000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z / 2.5))).astype(float)  # labels drawn at T = 2.5
    assert fit_temperature(z, y) == pytest.approx(2.5, rel=0.03)
    p = 1 / (1 + np.exp(-z))
    calibrated = 1 / (1 + np.exp(-z / fit_temperature(z, y)))
    assert expected_calibration_error(calibrated, y) < 0.01 < expected_calibration_error(p, y)


def test_calibrate_folds_the_temperatures_into_the_heads():
    """Overconfident heads (logits x 3) on labels drawn from the unscaled model: T comes out near 3."""
    torch.manual_seed(0)
    model = models.build("segment-attention", tag_heads={"mood": ["a", "b", "c"]}, max_segments=1).eval()
    rng = np.random.default_rng(0)
    # Each track: one embedding, a little different in each of its 5 windows.
    base = rng.normal(0, 1, (600, 1, model.embedding_dim))
    runs = (base + rng.normal(0, 0.05, (600, 5, model.embedding_dim))).astype(np.float32)
    tracks = [Example(f"t{i}", f"g{i}", run, {}) for i, run in enumerate(runs)]
    with torch.no_grad():  # a head with spread logits, then labels sampled from its probabilities
        for name in ("mood", "valence_arousal"):
            model.outputs[name].weight.normal_(0, 0.15)
        for ex in tracks:
            out = window_logits(model, ex, True, 1, 1)
            # one label per track, from its mean probability (every window carries its track's labels)
            for name in ("mood", "valence_arousal"):
                p = torch.sigmoid(out[name]).mean(0).numpy()
                ex.targets[name] = (rng.random(p.shape) < p).astype(np.float32)
        for name in ("mood", "valence_arousal"):
            model.outputs[name].weight.mul_(3.0)
            model.outputs[name].bias.mul_(3.0)
    before = {
        name: window_logits(model, tracks[0], True, 1, 1)[name].clone()
        for name in ("mood", "valence_arousal")
    }
    report = fold_temperatures(model, sigmoid_windows(model, tracks, True, 1, 1))
    assert set(report) == {"mood", "valence_arousal"}  # musicnn's own tags have no labels here
    assert 2.0 < report["mood"]["temperature"] < 4.5
    assert all(2.0 < t < 4.5 for t in report["valence_arousal"]["temperature"])
    for name, r in report.items():
        assert r["ece_after"] < r["ece_before"], r
        after = window_logits(model, tracks[0], True, 1, 1)[name]
        t = torch.tensor(r["temperature"], dtype=after.dtype)
        torch.testing.assert_close(after, before[name] / t, atol=1e-4, rtol=1e-4)
