"""Probability calibration on validation: temperature scaling folded into the heads, and its error.

The feed publishes probabilities (and valence/arousal as 2p - 1); the lights trust them as
probabilities, so they should be calibrated.  Each sigmoid head gets a temperature fitted on
the validation windows (every window carries its track's labels; soft labels such as
Emotify's listener fractions are fine): one temperature per tag head, one per valence /
arousal output.  A temperature only rescales logits, so no decision at p = 0.5 changes:
balanced accuracies and ROC-AUCs stay what they were.  It is folded into the head's final
linear layer (weights and bias divided by T), so the artifact, ONNX export and the engine
need nothing new.

The error reported is the expected calibration error (ECE): windows binned by predicted
probability (15 equal-width bins, all of a head's outputs pooled), the mean |mean p - mean y|
weighted by bin size.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import minimize_scalar
from torch import nn

from models.base import SegmentModel
from train.loop import window_logits

BINS = 15


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """ECE of probabilities ``p`` against labels ``y`` in [0, 1] (same shape; flattened)."""
    p, y = np.asarray(p, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    if p.shape != y.shape or not p.size:
        raise ValueError(f"need probabilities and labels of one non-empty shape, got {p.shape} and {y.shape}")
    which = np.minimum((p * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.sum() * abs(p[inside].mean() - y[inside].mean())
    return float(error / p.size)


def _bce(z: np.ndarray, y: np.ndarray) -> float:
    # mean of -[y log s(z) + (1 - y) log(1 - s(z))] = mean of softplus(z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The T > 0 minimising the binary cross-entropy of sigmoid(logits / T) against ``y``.

    The loss is convex in 1/T (a logistic regression on one scaled feature), so a bounded
    scalar search finds the optimum; T is kept within [0.05, 20].
    """
    z, y = np.asarray(logits, np.float64).ravel(), np.asarray(y, np.float64).ravel()
    result = minimize_scalar(lambda a: _bce(a * z, y), bounds=(0.05, 20.0), method="bounded")
    return float(1.0 / result.x)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def validation_windows(model: SegmentModel, examples, embedded: bool, k: int, hop: int, heads) -> dict:
    """head -> (window logits (N, L), labels (N, L)) over the validation tracks that have that head."""
    model.eval()
    logits: dict[str, list[np.ndarray]] = {h: [] for h in heads}
    labels: dict[str, list[np.ndarray]] = {h: [] for h in heads}
    for ex in examples:
        supervised = [h for h in heads if h in ex.targets]
        if not supervised:
            continue
        out = window_logits(model, ex, embedded, k, hop)
        for h in supervised:
            z = out[h].numpy().astype(np.float64)
            logits[h].append(z)
            labels[h].append(np.broadcast_to(np.asarray(ex.targets[h], np.float64), z.shape))
    return {h: (np.concatenate(logits[h]), np.concatenate(labels[h])) for h in heads if logits[h]}


def sigmoid_windows(model: SegmentModel, examples, embedded: bool, k: int, hop: int) -> dict:
    """``validation_windows`` of the model's sigmoid heads (tags, valence/arousal): what a
    temperature is fitted on.  Cross-validation pools these over the folds' models."""
    heads = {name: spec for name, spec in model.heads.items() if spec.kind in ("tags", "valence_arousal")}
    return validation_windows(model, examples, embedded, k, hop, heads)


def fold_temperatures(model: SegmentModel, windows: dict) -> dict:
    """Fit each sigmoid head's temperature on ``windows`` (head -> (logits, labels): a model's
    ``sigmoid_windows`` of its validation tracks, or the folds' pooled out-of-fold windows) and
    fold it into the head's final linear layer; returns the report.

    Only sigmoid heads (tags, valence/arousal) whose output is a final ``nn.Linear`` (the model's
    ``head_layer``) are calibrated; others are listed as skipped, with the reason.
    """
    report: dict[str, dict] = {}
    for name, spec in model.heads.items():
        if spec.kind not in ("tags", "valence_arousal") or name not in windows:
            continue  # no validation labels for this head (e.g. an encoder's own tags)
        layer = model.head_layer(name)
        if not isinstance(layer, nn.Linear):
            report[name] = {"skipped": "its output is not a final linear layer to fold a temperature into"}
            continue
        z, y = windows[name]
        if spec.kind == "valence_arousal":  # one temperature per output: valence and arousal
            temperatures = np.array([fit_temperature(z[:, i], y[:, i]) for i in range(z.shape[1])])
        else:
            temperatures = np.full(z.shape[1], fit_temperature(z, y))
        before = expected_calibration_error(_sigmoid(z), y)
        after = expected_calibration_error(_sigmoid(z / temperatures), y)
        with torch.no_grad():
            scale = torch.as_tensor(1.0 / temperatures, dtype=layer.weight.dtype)
            layer.weight.mul_(scale[:, None])
            if layer.bias is not None:
                layer.bias.mul_(scale)
        report[name] = {
            "temperature": [round(float(t), 4) for t in temperatures]
            if spec.kind == "valence_arousal"
            else round(float(temperatures[0]), 4),
            "ece_before": round(before, 4),
            "ece_after": round(after, 4),
            "windows": int(z.shape[0]),
        }
    return report
