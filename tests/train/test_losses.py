"""Losses against hand-computed values, and masks that exclude examples completely."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.base import HeadSpec
from train.losses import ccc, ccc_loss, head_loss, total_loss, two_output_loss

TAGS = HeadSpec("tags", ("happy", "sad", "epic"))
VA = HeadSpec("valence_arousal", ("valence", "arousal"))
CLASSES = HeadSpec("classes", ("q1", "q2", "q3", "q4"))
B = 6


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def hand_bce(logits: torch.Tensor, target: torch.Tensor) -> float:
    terms = [
        -(t * math.log(sigmoid(v)) + (1 - t) * math.log(1 - sigmoid(v)))
        for v, t in zip(logits.flatten().tolist(), target.flatten().tolist(), strict=True)
    ]
    return sum(terms) / len(terms)


def hand_ccc(p: np.ndarray, t: np.ndarray) -> np.ndarray:
    mp, mt = p.mean(0), t.mean(0)
    cov = ((p - mp) * (t - mt)).mean(0)
    return 2 * cov / (p.var(0) + t.var(0) + (mp - mt) ** 2)


def test_tags_is_bce_with_soft_targets():
    logits = torch.randn(B, 3, generator=gen(0), dtype=torch.float64)
    target = torch.rand(B, 3, generator=gen(1), dtype=torch.float64)  # soft, e.g. after mixup
    assert head_loss(TAGS, logits, target).item() == pytest.approx(hand_bce(logits, target), rel=1e-12)


def test_va_mse_is_on_the_published_values():
    logits = torch.randn(B, 2, generator=gen(0), dtype=torch.float64)
    target = torch.rand(B, 2, generator=gen(1), dtype=torch.float64) * 2 - 1
    pred = [2 * sigmoid(v) - 1 for v in logits.flatten().tolist()]
    hand = sum((p - t) ** 2 for p, t in zip(pred, target.flatten().tolist(), strict=True)) / (2 * B)
    assert head_loss(VA, logits, target, va_loss="mse").item() == pytest.approx(hand, rel=1e-12)


def test_va_bce_for_binary_targets():
    logits = torch.randn(B, 2, generator=gen(0), dtype=torch.float64)
    target = (torch.rand(B, 2, generator=gen(1)) > 0.5).double()
    assert head_loss(VA, logits, target, va_loss="bce").item() == pytest.approx(
        hand_bce(logits, target), rel=1e-12
    )


def test_ccc_matches_the_formula_and_is_one_for_identical_vectors():
    logits = torch.randn(50, 2, generator=gen(0), dtype=torch.float64)
    target = torch.rand(50, 2, generator=gen(1), dtype=torch.float64) * 2 - 1
    pred = 2 * torch.sigmoid(logits) - 1
    expected = hand_ccc(pred.numpy(), target.numpy())
    np.testing.assert_allclose(ccc(pred, target).numpy(), expected, rtol=1e-6)
    loss = head_loss(VA, logits, target, va_loss="ccc").item()
    assert loss == pytest.approx(float(np.mean(1 - expected)), rel=1e-6)
    # Logits whose published values are exactly the targets: CCC 1, loss 0.
    exact = torch.logit((target + 1) / 2)
    np.testing.assert_allclose(ccc(2 * torch.sigmoid(exact) - 1, target).numpy(), [1.0, 1.0], atol=1e-7)
    assert head_loss(VA, exact, target, va_loss="ccc").item() == pytest.approx(0.0, abs=1e-7)
    # Same spread, opposite direction: CCC −1, loss 2.
    centred = target - target.mean(0)
    assert ccc_loss(-centred, centred).item() == pytest.approx(2.0, abs=1e-7)
    both = head_loss(VA, logits, target, va_loss="mse+ccc").item()
    assert both == pytest.approx(head_loss(VA, logits, target, va_loss="mse").item() + loss, rel=1e-12)


def test_ccc_is_not_mse():
    # A prediction shifted by a constant keeps perfect correlation but loses concordance.
    t = torch.linspace(-0.5, 0.5, 20, dtype=torch.float64)[:, None].repeat(1, 2)
    shifted = hand_ccc(t.numpy() + 0.3, t.numpy())
    np.testing.assert_allclose(ccc(t + 0.3, t).numpy(), shifted, rtol=1e-6)
    assert (shifted < 0.9).all()


def test_classes_takes_indices_one_hot_or_probabilities():
    logits = torch.randn(B, 4, generator=gen(0), dtype=torch.float64)
    index = torch.tensor([0, 3, 1, 2, 2, 0])
    log_p = torch.log_softmax(logits, dim=1)
    hand = -sum(log_p[i, c].item() for i, c in enumerate(index.tolist())) / B
    assert head_loss(CLASSES, logits, index).item() == pytest.approx(hand, rel=1e-12)
    one_hot = torch.nn.functional.one_hot(index, 4).double()
    assert head_loss(CLASSES, logits, one_hot).item() == pytest.approx(hand, rel=1e-12)
    probs = torch.softmax(torch.randn(B, 4, generator=gen(1), dtype=torch.float64), dim=1)
    hand_soft = -(probs * log_p).sum(1).mean().item()
    assert head_loss(CLASSES, logits, probs).item() == pytest.approx(hand_soft, rel=1e-12)


CASES = [
    (TAGS, "mse", lambda g: (torch.rand(B, 3, generator=g) > 0.5).float()),
    (VA, "mse", lambda g: torch.rand(B, 2, generator=g) * 2 - 1),
    (VA, "bce", lambda g: (torch.rand(B, 2, generator=g) > 0.5).float()),
    (VA, "ccc", lambda g: torch.rand(B, 2, generator=g) * 2 - 1),
    (VA, "mse+ccc", lambda g: torch.rand(B, 2, generator=g) * 2 - 1),
    (CLASSES, "mse", lambda g: torch.randint(0, 4, (B,), generator=g)),
    (CLASSES, "mse", lambda g: torch.softmax(torch.randn(B, 4, generator=g), dim=1)),
]
IDS = ["tags", "va-mse", "va-bce", "va-ccc", "va-mse+ccc", "class-index", "class-probs"]


@pytest.mark.parametrize(("spec", "va_loss", "make_target"), CASES, ids=IDS)
def test_masked_examples_contribute_nothing(spec, va_loss, make_target):
    logits = torch.randn(B, len(spec.labels), generator=gen(0), requires_grad=True)
    target = make_target(gen(1))
    mask = torch.tensor([True, False, True, True, False, True])
    subset = head_loss(spec, logits[mask], target[mask], va_loss=va_loss)
    # Garbage where unlabelled (NaN for float targets, -1 for indices) changes nothing.
    garbage = target.clone()
    garbage[~mask] = -1 if not target.is_floating_point() else float("nan")
    masked = head_loss(spec, logits, garbage, mask, va_loss=va_loss)
    assert masked.item() == pytest.approx(subset.item(), rel=1e-5)
    masked.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask] != 0).any()


@pytest.mark.parametrize(("spec", "va_loss", "make_target"), CASES, ids=IDS)
def test_a_head_nobody_supervises_is_zero_without_nan(spec, va_loss, make_target):
    logits = torch.randn(B, len(spec.labels), generator=gen(0), requires_grad=True)
    loss = head_loss(spec, logits, make_target(gen(1)), torch.zeros(B, dtype=torch.bool), va_loss=va_loss)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_ccc_needs_two_supervised_examples():
    logits = torch.randn(B, 2, generator=gen(0))
    one = torch.zeros(B, dtype=torch.bool)
    one[2] = True
    assert head_loss(VA, logits, torch.zeros(B, 2), one, va_loss="ccc").item() == 0.0


def test_total_loss_weights_heads_and_reports_each():
    heads = {"tags": TAGS, "va": VA, "quadrant": CLASSES}
    outputs = {
        "tags": torch.randn(B, 3, generator=gen(0)),
        "va": torch.randn(B, 2, generator=gen(1)),
        "quadrant": torch.randn(B, 4, generator=gen(2)),
        "aux_segments": torch.randn(B, 3, generator=gen(3)),  # ignored
    }
    targets = {"tags": (torch.rand(B, 3, generator=gen(4)) > 0.5).float(), "va": torch.rand(B, 2) * 2 - 1}
    masks = {"va": torch.tensor([True, True, False, False, True, True])}
    loss, parts = total_loss(heads, outputs, targets, masks, weights={"tags": 1.0, "va": 0.5})
    tags = head_loss(TAGS, outputs["tags"], targets["tags"]).item()
    va = head_loss(VA, outputs["va"], targets["va"], masks["va"]).item()
    assert set(parts) == {"tags", "va"}  # no targets for "quadrant" in this batch
    assert parts["tags"] == pytest.approx(tags) and parts["va"] == pytest.approx(va)
    assert loss.item() == pytest.approx(tags + 0.5 * va)
    with pytest.raises(ValueError, match="unknown heads"):
        total_loss(heads, outputs, {"mood": targets["tags"]})


def test_two_output_loss_adds_the_weighted_segment_path():
    outputs = {
        "tags": torch.randn(B, 3, generator=gen(0)),
        "aux_segments": torch.randn(B, 3, generator=gen(1)),
    }
    targets = {"tags": (torch.rand(B, 3, generator=gen(2)) > 0.5).float()}
    loss, parts = two_output_loss(outputs, targets, aux_weight=0.3)
    tags = hand_bce(outputs["tags"], targets["tags"])
    aux = hand_bce(outputs["aux_segments"], targets["tags"])
    assert loss.item() == pytest.approx(tags + 0.3 * aux, rel=1e-5)
    assert parts == pytest.approx({"tags": tags, "aux_segments": aux}, rel=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="va_loss"):
        head_loss(VA, torch.zeros(B, 2), torch.zeros(B, 2), va_loss="mae")
    with pytest.raises(ValueError, match="do not match"):
        head_loss(TAGS, torch.zeros(B, 3), torch.zeros(B, 4))
    with pytest.raises(ValueError, match="mask"):
        head_loss(TAGS, torch.zeros(B, 3), torch.zeros(B, 3), torch.ones(B + 1, dtype=torch.bool))
