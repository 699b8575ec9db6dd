"""Averaging weights and predictions: SWA, snapshot averages of state dicts, late fusion.

CP-JKU (Koutini et al. 2019) averaged the weights of snapshots taken during the flat tail of
their schedule (stochastic weight averaging, Izmailov et al. 2018) and recomputed batch-norm
statistics for the averaged weights; Amiriparian et al. 2019 fused the predictions of
several models (late fusion).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim import swa_utils


def batch_input(batch: Any) -> torch.Tensor:
    """The model input of a loader's batch: the tensor itself, the first of a tuple, or ``batch["x"]``."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        return batch["x"]
    if isinstance(batch, (list, tuple)):
        return batch[0]
    raise TypeError(f"cannot find the model input in a batch of type {type(batch).__name__}")


class SWA:
    """Uniform running average of a model's weights (``torch.optim.swa_utils.AveragedModel``).

    Call ``update(model)`` at each snapshot; the averaged parameters are then the arithmetic
    mean of the snapshots seen.  Buffers are not averaged: batch-norm statistics of averaged
    weights must be recomputed with ``update_bn(loader)`` before the model is evaluated.
    """

    def __init__(self, model: nn.Module, device: torch.device | str | None = None):
        self.averaged = swa_utils.AveragedModel(model, device=device)

    @property
    def module(self) -> nn.Module:
        """The averaged model, a module of the same class as the one given."""
        return self.averaged.module

    @property
    def n_averaged(self) -> int:
        return int(self.averaged.n_averaged.item())

    def update(self, model: nn.Module) -> None:
        self.averaged.update_parameters(model)

    def update_bn(
        self,
        loader: Iterable[Any],
        device: torch.device | str | None = None,
        input_of: Callable[[Any], torch.Tensor] = batch_input,
    ) -> None:
        """Recompute every batch norm's running mean and variance over one pass of ``loader``.

        Each batch norm ends with the mean over batches of the batch means and of the unbiased
        batch variances (``momentum=None``, a cumulative average), as ``swa_utils.update_bn``.
        """
        swa_utils.update_bn((input_of(batch) for batch in loader), self.averaged.module, device=device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged model's state dict, loadable into a plain model of the same class."""
        return self.averaged.module.state_dict()


def snapshot_average(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Uniform average of floating-point entries; other entries (e.g. ``num_batches_tracked``) from the last.

    Accumulates in float64 and casts back; averaging identical snapshots returns them unchanged.
    """
    if not state_dicts:
        raise ValueError("snapshot_average needs at least one state dict")
    keys = list(state_dicts[-1])
    for i, sd in enumerate(state_dicts):
        if set(sd) != set(keys):
            raise ValueError(f"state dict {i} has different keys: {sorted(set(sd) ^ set(keys))}")
    out = {}
    for key in keys:
        last = state_dicts[-1][key]
        if not last.is_floating_point():
            out[key] = last.clone()
            continue
        first = state_dicts[0][key].to(device=last.device, dtype=torch.float64)
        offset = torch.zeros_like(first)
        for i, sd in enumerate(state_dicts):
            if sd[key].shape != last.shape:
                raise ValueError(
                    f"{key}: shape {tuple(sd[key].shape)} in state dict {i}, {tuple(last.shape)} last"
                )
            offset += sd[key].to(device=last.device, dtype=torch.float64) - first
        # first + mean offset, not sum / n: identical snapshots give offset 0, so exactly themselves.
        out[key] = (first + offset / len(state_dicts)).to(last.dtype)
    return out


def late_fusion(prediction_arrays: Sequence[Any], weights: Sequence[float] | None = None) -> Any:
    """(Weighted) mean of several models' probabilities for the same examples, same shape out.

    Tensors in give a tensor out, anything else a NumPy array; ``weights`` are normalised to
    sum to 1.  Average probabilities, not logits: that is what each model publishes.
    """
    if not prediction_arrays:
        raise ValueError("late_fusion needs at least one prediction array")
    n = len(prediction_arrays)
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {n} non-negative numbers with a positive sum, got {weights}")
    w = w / w.sum()
    if all(isinstance(p, torch.Tensor) for p in prediction_arrays):
        stacked = torch.stack(list(prediction_arrays))  # (models, ...) ; raises on shape mismatch
        scale = torch.as_tensor(w, dtype=stacked.dtype, device=stacked.device)
        return (scale.reshape(-1, *([1] * (stacked.ndim - 1))) * stacked).sum(dim=0)
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in prediction_arrays])
    return np.tensordot(w, stacked, axes=1)
