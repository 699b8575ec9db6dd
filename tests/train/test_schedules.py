"""Schedules: exact values at the boundaries, monotone pieces; optimisers by name."""

from __future__ import annotations

import pytest
import torch

from train.schedules import (
    Constant,
    FrozenEncoder,
    WarmupHoldDecay,
    constant_lr,
    make_optimizer,
    warmup_hold_decay_lr,
)

# Koutini et al.'s shape; the lengths are illustrative (in epochs).
SCHEDULE = WarmupHoldDecay(base_lr=1e-4, warmup=5, hold=45, decay=200, total=350, final_lr=1e-6)


def test_constant():
    assert [Constant().lr_at(s) for s in (0, 1, 10**6)] == [1e-4] * 3  # Dipani et al.: Adam 1e-4
    assert Constant(3e-3).lr_at(7) == 3e-3
    with pytest.raises(ValueError):
        constant_lr(-1, lr=1.0)


def test_warmup_hold_decay_boundaries():
    s = SCHEDULE
    assert s.lr_at(0) == 0.0
    assert s.lr_at(1) == pytest.approx(1e-4 / 5)
    assert s.lr_at(5) == 1e-4  # end of warm-up
    assert s.lr_at(50) == 1e-4  # end of hold, start of decay
    assert s.lr_at(150) == pytest.approx((1e-4 + 1e-6) / 2)  # half-way down
    assert s.decay_end == 250
    assert s.lr_at(249) == pytest.approx(1e-6 + (1e-4 - 1e-6) / 200)
    assert s.lr_at(250) == 1e-6  # the tail
    assert s.lr_at(349) == 1e-6 and s.lr_at(1000) == 1e-6


def test_warmup_hold_decay_pieces_are_monotone_and_linear():
    lrs = [SCHEDULE.lr_at(step) for step in range(350)]
    warm, hold, decay, tail = lrs[:6], lrs[5:51], lrs[50:251], lrs[250:]
    assert all(a < b for a, b in zip(warm, warm[1:], strict=False))
    assert set(hold) == {1e-4} and set(tail) == {1e-6}
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))
    steps = [a - b for a, b in zip(decay, decay[1:], strict=False)]
    assert max(steps) == pytest.approx(min(steps), rel=1e-6)  # linear: equal steps down


def test_no_warmup_starts_at_the_base_rate():
    assert warmup_hold_decay_lr(0, base_lr=1e-3, warmup=0, hold=0, decay=10) == 1e-3
    assert warmup_hold_decay_lr(10, base_lr=1e-3, warmup=0, hold=0, decay=10) == 1e-6


def test_epochs_to_steps_keeps_the_shape():
    steps = SCHEDULE.in_steps(100)
    assert (steps.warmup, steps.hold, steps.decay, steps.total) == (500, 4500, 20000, 35000)
    for epoch in (0, 1, 5, 50, 100, 150, 250, 300):
        assert steps.lr_at(epoch * 100) == pytest.approx(SCHEDULE.lr_at(epoch), abs=1e-15)
    assert steps.lr_at(150) == pytest.approx(1e-4 * 150 / 500)  # between epochs it interpolates


def test_invalid_schedules_raise():
    with pytest.raises(ValueError, match="exceeds total"):
        WarmupHoldDecay(base_lr=1e-4, warmup=10, hold=10, decay=10, total=29)
    with pytest.raises(ValueError):
        WarmupHoldDecay(base_lr=1e-4, warmup=-1, hold=10, decay=10, total=100)
    with pytest.raises(ValueError):
        SCHEDULE.in_steps(0)


def test_frozen_encoder_unfreezes_at_frozen_until():
    s = FrozenEncoder(lr=1e-3, frozen_until=100, encoder_lr=1e-4)
    assert [s.encoder_trainable(step) for step in (0, 99, 100, 500)] == [False, False, True, True]
    assert [s.encoder_lr_at(step) for step in (0, 99, 100, 500)] == [0.0, 0.0, 1e-4, 1e-4]
    assert s.lr_at(0) == s.lr_at(500) == 1e-3  # the layers trained from scratch never wait
    assert FrozenEncoder(lr=1e-3, frozen_until=0).encoder_lr_at(0) == 1e-3


def test_make_optimizer_by_name():
    model = torch.nn.Linear(3, 2)
    expected = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "sgd": torch.optim.SGD,
    }
    for name, cls in expected.items():
        opt = make_optimizer(name, model.parameters(), 1e-3)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 1e-3
    assert make_optimizer("sgd", model.parameters(), 0.1).param_groups[0]["momentum"] == 0.9
    rms = make_optimizer("rmsprop", model.parameters(), 1e-3, alpha=0.9, weight_decay=1e-5)
    assert rms.param_groups[0]["alpha"] == 0.9 and rms.param_groups[0]["weight_decay"] == 1e-5
    groups = [{"params": [model.weight], "lr": 0.0}, {"params": [model.bias]}]
    opt = make_optimizer("rmsprop", groups, 1e-3)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 1e-3]
    with pytest.raises(ValueError, match="adam, adamw, rmsprop, sgd"):
        make_optimizer("lion", model.parameters(), 1e-3)
