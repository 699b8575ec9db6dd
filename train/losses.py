"""Losses per head kind, with per-example masks for heads an example's dataset does not label.

A mask is (batch,) bool, True where the example supervises the head.  Masked examples are
excluded from the mean (their targets may be anything, NaN included: they are replaced before
the loss so no NaN reaches the value or the gradient), and a head no example supervises
contributes exactly 0.  Losses take logits, as models return them (STYLE.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F

from models.base import HeadSpec

VA_LOSSES = ("mse", "bce", "ccc", "mse+ccc")
CCC_EPS = 1e-8  # keeps 1 − CCC finite when both sides are constant


def _weights(mask: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    """(batch,) float weights: 1 for supervised examples, 0 for masked ones."""
    if mask is None:
        return torch.ones(logits.shape[0], device=logits.device, dtype=logits.dtype)
    if mask.shape != (logits.shape[0],):
        raise ValueError(f"mask must be (batch,) = ({logits.shape[0]},), got {tuple(mask.shape)}")
    return mask.to(device=logits.device, dtype=logits.dtype)


def _masked_mean(per_example: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # clamp: a batch with no supervised example divides 0 by 1, not by 0.
    return (per_example * weights).sum() / weights.sum().clamp_min(1.0)


def _clean(target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Masked rows' targets set to 0, so garbage there cannot make NaN values or gradients."""
    keep = weights.reshape(-1, *([1] * (target.ndim - 1))) > 0
    return torch.where(keep, target, torch.zeros((), dtype=target.dtype, device=target.device))


def ccc(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Lin's concordance correlation per column of (batch, dims), over the weighted rows -> (dims,).

    CCC = 2·cov / (var_p + var_t + (mean_p − mean_t)²), population statistics.
    """
    if weights is None:
        weights = torch.ones(pred.shape[0], device=pred.device, dtype=pred.dtype)
    w = weights[:, None]  # (B, 1)
    n = weights.sum().clamp_min(1.0)
    mean_p, mean_t = (w * pred).sum(0) / n, (w * target).sum(0) / n  # (dims,)
    dp, dt = pred - mean_p, target - mean_t
    var_p, var_t, cov = (w * dp**2).sum(0) / n, (w * dt**2).sum(0) / n, (w * dp * dt).sum(0) / n
    return 2.0 * cov / (var_p + var_t + (mean_p - mean_t) ** 2 + CCC_EPS)


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 − CCC per dimension, averaged; 0 with fewer than 2 supervised rows (no CCC exists)."""
    loss = (1.0 - ccc(pred, target, weights)).mean()
    n = pred.shape[0] if weights is None else weights.sum()
    return torch.where(torch.as_tensor(n >= 2, device=loss.device), loss, torch.zeros_like(loss))


def _bce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    target = _clean(target.to(logits.dtype), weights)
    per_example = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(dim=-1)  # (B,)
    return _masked_mean(per_example, weights)


def head_loss(
    spec: HeadSpec,
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    va_loss: str = "mse",
) -> torch.Tensor:
    """Scalar loss of one head over its supervised examples.

    - ``tags``: binary cross-entropy with logits, targets in [0, 1] (soft targets allowed),
      mean over labels and examples.
    - ``valence_arousal``: by ``va_loss``: ``"mse"`` of the published 2·sigmoid − 1 against
      targets in [−1, 1]; ``"bce"`` for targets in {0, 1} (low/high, or soft); ``"ccc"``:
      1 − CCC per dimension, averaged; ``"mse+ccc"``: their sum.
    - ``classes``: cross-entropy; targets are class indices (batch,) or one-hot /
      probabilities (batch, n_classes).
    """
    if va_loss not in VA_LOSSES:
        raise ValueError(f"unknown va_loss {va_loss!r}; allowed: {', '.join(VA_LOSSES)}")
    weights = _weights(mask, logits)
    if spec.kind == "classes":
        if target.ndim == logits.ndim - 1:  # class indices
            per_example = F.cross_entropy(logits, _clean(target.long(), weights), reduction="none")
        else:
            _check_shape(spec, logits, target)
            per_example = F.cross_entropy(logits, _clean(target.to(logits.dtype), weights), reduction="none")
        return _masked_mean(per_example, weights)
    _check_shape(spec, logits, target)
    if spec.kind == "tags" or va_loss == "bce":
        return _bce(logits, target, weights)
    pred = 2.0 * torch.sigmoid(logits) - 1.0  # what the engine publishes
    target = _clean(target.to(logits.dtype), weights)
    loss = torch.zeros((), device=logits.device, dtype=logits.dtype)
    if "mse" in va_loss:
        loss = loss + _masked_mean(((pred - target) ** 2).mean(dim=-1), weights)
    if "ccc" in va_loss:
        loss = loss + ccc_loss(pred, target, weights)
    return loss


def _check_shape(spec: HeadSpec, logits: torch.Tensor, target: torch.Tensor) -> None:
    if target.shape != logits.shape:
        raise ValueError(
            f"{spec.kind} head: targets {tuple(target.shape)} do not match logits {tuple(logits.shape)}"
        )


def total_loss(
    heads: Mapping[str, HeadSpec],
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor] | None = None,
    weights: Mapping[str, float] | None = None,
    *,
    va_loss: str = "mse",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Σ weight·head_loss over the heads that have targets in this batch -> (loss, per-head floats).

    Heads without targets (no dataset in the batch labels them) are skipped; ``aux_*`` outputs
    are ignored (see ``two_output_loss``).  The floats are the unweighted head losses.
    """
    masks = masks or {}
    weights = weights or {}
    for name, mapping in (("targets", targets), ("masks", masks), ("weights", weights)):
        unknown = set(mapping) - set(heads)
        if unknown:
            raise ValueError(f"{name} for unknown heads {sorted(unknown)}; heads: {sorted(heads)}")
    device = next(iter(outputs.values())).device
    loss = torch.zeros((), device=device)
    parts: dict[str, torch.Tensor] = {}
    for name, spec in heads.items():
        if name not in targets:
            continue
        value = head_loss(spec, outputs[name], targets[name], masks.get(name), va_loss=va_loss)
        loss = loss + weights.get(name, 1.0) * value
        parts[name] = value.detach()
    return loss, _floats(parts)


def _floats(parts: dict[str, torch.Tensor]) -> dict[str, float]:
    if not parts:
        return {}
    return dict(zip(parts, torch.stack(list(parts.values())).float().tolist(), strict=True))  # one sync


def two_output_loss(
    outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, torch.Tensor],
    aux_weight: float = 1.0,
    masks: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """resnet34-attention's loss: bce(tags) + aux_weight·bce(aux_segments), both against ``targets["tags"]``.

    Dipani et al. train the attention path and the per-segment path together; the second is
    only a training signal, which the engine never publishes.
    """
    target = targets["tags"]
    weights = _weights(None if masks is None else masks.get("tags"), outputs["tags"])
    tags = _bce(outputs["tags"], target, weights)
    aux = _bce(outputs["aux_segments"], target, weights)
    parts = {"tags": tags.detach(), "aux_segments": aux.detach()}
    return tags + aux_weight * aux, _floats(parts)
