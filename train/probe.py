"""The floor a trained model must beat: a linear probe on clip-averaged frozen embeddings.

For each clip, the encoder's window embeddings (the same cached windows ``fit`` uses) are
averaged; one L2-regularised logistic regression per binary target (valence, arousal) is
fitted on the training clips and scored on the validation clips exactly as ``fit`` scores a
model (balanced accuracy per dimension, quadrant accuracy).
"""

from __future__ import annotations

import numpy as np
import torch

from train import metrics
from train.loop import Example


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-2, steps: int = 200
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """Weights, bias and the standardisation (mean, std) of a logistic regression fitted with L-BFGS."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).double()
    yt = torch.from_numpy(y).double()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(xt @ w + b, yt) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach().numpy(), float(b.detach()), mean, std


def probe_valence_arousal(train: list[Example], val: list[Example], l2: float = 1e-2) -> dict[str, float]:
    """Balanced accuracies and quadrant accuracy of the linear probe on held-out clips."""

    def xy(examples):
        chosen = [ex for ex in examples if "valence_arousal" in ex.targets]
        return np.stack([ex.data.mean(axis=0) for ex in chosen]), np.stack(
            [ex.targets["valence_arousal"] for ex in chosen]
        )

    x_train, y_train = xy(train)
    x_val, y_val = xy(val)
    decided = np.zeros_like(y_val)
    out = {}
    for i, dim in enumerate(("valence", "arousal")):
        w, b, mean, std = fit_logistic(x_train, y_train[:, i], l2)
        decided[:, i] = (((x_val - mean) / std) @ w + b > 0).astype(float)
        out[f"{dim}_balanced_accuracy"] = float(
            metrics.balanced_accuracy(y_val[:, i].astype(int), decided[:, i].astype(int), 2)
        )
    truth = y_val[:, 0].astype(int) * 2 + y_val[:, 1].astype(int)
    pred = decided[:, 0].astype(int) * 2 + decided[:, 1].astype(int)
    out["quadrant_accuracy"] = float(metrics.accuracy(truth, pred))
    out["clips_train"], out["clips_validation"] = len(x_train), len(x_val)
    return out
