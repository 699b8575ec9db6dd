"""Learning-rate schedules as pure functions of the step, and the optimisers the papers used.

The training loop asks ``schedule.lr_at(step)`` each step and writes it into the optimiser's
param groups; nothing here holds state, so a resumed run only needs its step counter.

- Dipani et al. 2020 (resnet34-attention): Adam at a constant 1e-4 -> ``Constant(1e-4)``.
- Koutini et al. 2019 (CP-ResNet family): Adam with linear warm-up, a constant stretch, a
  linear decay to 1e-6 and a flat tail (where CP-JKU's SWA averages) -> ``WarmupHoldDecay``.
- Amiriparian et al. 2019 (CRNN, DeepSpectrum): RMSprop, the pretrained encoder frozen at
  first and trained after -> ``FrozenEncoder``.
- The small models: Adam at a constant rate -> ``Constant(lr)``.

Lengths are counted in whatever unit ``lr_at`` is given: epochs if the loop sets the rate
once per epoch, steps otherwise; ``WarmupHoldDecay.in_steps`` converts epochs to steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch

OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


def constant_lr(step: int, *, lr: float) -> float:
    """The same rate at every step."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    return lr


def warmup_hold_decay_lr(
    step: int,
    *,
    base_lr: float,
    warmup: int,
    hold: int,
    decay: int,
    final_lr: float = 1e-6,
) -> float:
    """0 → base_lr linearly over ``warmup`` steps, base_lr for ``hold``, → final_lr over ``decay``, then final_lr.

    lr(0) = 0 when warmup > 0 (as HuggingFace's linear warm-up), lr(warmup) = base_lr,
    lr(warmup + hold) = base_lr, lr(warmup + hold + decay) = final_lr and after.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup:
        return base_lr * step / warmup
    step -= warmup
    if step <= hold:
        return base_lr
    step -= hold
    if step < decay:
        return base_lr + (final_lr - base_lr) * step / decay
    return final_lr


@dataclass(frozen=True)
class Constant:
    """Constant rate (Dipani et al.: Adam 1e-4; the small models)."""

    lr: float = 1e-4

    def lr_at(self, step: int) -> float:
        return constant_lr(step, lr=self.lr)


@dataclass(frozen=True)
class WarmupHoldDecay:
    """Koutini et al.'s shape: linear warm-up, hold, linear decay to ``final_lr``, flat tail to ``total``.

    The tail (``decay_end`` .. ``total``) is where snapshots are averaged (SWA).  ``lr_at``
    past ``total`` keeps returning ``final_lr``.
    """

    base_lr: float
    warmup: int
    hold: int
    decay: int
    total: int
    final_lr: float = 1e-6

    def __post_init__(self) -> None:
        if min(self.warmup, self.hold, self.decay) < 0:
            raise ValueError(f"warmup, hold and decay must be >= 0: {self}")
        if self.decay_end > self.total:
            raise ValueError(f"warmup + hold + decay = {self.decay_end} exceeds total {self.total}")

    @property
    def decay_end(self) -> int:
        """First step of the flat tail."""
        return self.warmup + self.hold + self.decay

    def lr_at(self, step: int) -> float:
        return warmup_hold_decay_lr(
            step,
            base_lr=self.base_lr,
            warmup=self.warmup,
            hold=self.hold,
            decay=self.decay,
            final_lr=self.final_lr,
        )

    def in_steps(self, steps_per_epoch: int) -> WarmupHoldDecay:
        """The same schedule with lengths given in epochs converted to optimiser steps."""
        if steps_per_epoch <= 0:
            raise ValueError(f"steps_per_epoch must be positive, got {steps_per_epoch}")
        k = steps_per_epoch
        return replace(
            self, warmup=self.warmup * k, hold=self.hold * k, decay=self.decay * k, total=self.total * k
        )


@dataclass(frozen=True)
class FrozenEncoder:
    """Amiriparian et al.'s fine-tuning: the encoder is frozen for steps [0, frozen_until), then trains.

    ``lr_at`` is the rate of everything that always trains (RNN, dense, heads);
    ``encoder_lr_at`` is 0 while frozen, then ``encoder_lr`` (``lr`` if None).  The loop also
    sets ``requires_grad`` from ``encoder_trainable`` so a frozen encoder costs no gradients
    (and RMSprop's square averages do not move for it).
    """

    lr: float
    frozen_until: int
    encoder_lr: float | None = None

    def __post_init__(self) -> None:
        if self.frozen_until < 0:
            raise ValueError(f"frozen_until must be >= 0, got {self.frozen_until}")

    def lr_at(self, step: int) -> float:
        return constant_lr(step, lr=self.lr)

    def encoder_trainable(self, step: int) -> bool:
        return step >= self.frozen_until

    def encoder_lr_at(self, step: int) -> float:
        if not self.encoder_trainable(step):
            return 0.0
        return constant_lr(step, lr=self.lr if self.encoder_lr is None else self.encoder_lr)


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor] | Iterable[dict],
    lr: float,
    **kwargs,
) -> torch.optim.Optimizer:
    """A torch optimiser by name: "adam", "adamw", "rmsprop" or "sgd"; ``kwargs`` go to its constructor.

    Defaults are torch's (AdamW's weight decay 0.01 included), except SGD's momentum 0.9
    (0 would be plain SGD).  Keras's RMSprop averages squares with rho 0.9 where torch's
    ``alpha`` is 0.99: pass ``alpha=0.9`` to follow a Keras recipe.  ``params`` may be param
    groups (e.g. encoder and head, each with its own lr).
    """
    classes = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "sgd": torch.optim.SGD,
    }
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(OPTIMIZERS)}")
    if name == "sgd":
        kwargs.setdefault("momentum", 0.9)
    return classes[name](params, lr=lr, **kwargs)
