"""Training recipes of the papers, by name; every knob can be overridden (``--set key=value``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import models
from train.schedules import Constant, WarmupHoldDecay


@dataclass(frozen=True)
class Recipe:
    """Everything ``fit`` needs besides the model and the data."""

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 30
    schedule: str = "constant"  # "constant" | "warmup_hold_decay"
    warmup_epochs: int = 0
    hold_epochs: int = 0
    decay_epochs: int = 0
    final_lr: float = 1e-6
    encoder_frozen_epochs: int = 0  # Amiriparian: encoder frozen first, then trained
    mixup_alpha: float = 0.0  # 0: off
    specaugment: bool = False
    gain_db: float = 0.0  # random gain in ±gain_db; 0: off
    noise_std: float = 0.0
    va_loss: str = "mse"  # "mse" | "bce" | "ccc" | "mse+ccc"
    aux_weight: float = 0.0  # resnet34-attention's per-segment path (two-output loss); 0: off
    swa_start_epoch: int = 0  # 0: off; else average weights from this epoch on (BN stats updated)
    patience: int = 0  # early stopping on the validation score; 0: off
    context_segments: int = 4  # embedding runs (frozen encoders): segments pooled, as --context
    hop_s: float = 1.0  # windows for validation and embedding caches, as the engine's --hop
    calibrate: bool = True  # temperature-scale the sigmoid heads on validation (train/calibration.py)
    threshold_beta: float = 1.0  # `active` thresholds maximise F-beta on validation; < 1 favours precision
    min_precision: float = 0.0  # a tag below this validation precision at its threshold never turns active
    seed: int = 0

    def with_overrides(self, overrides: dict[str, str]) -> Recipe:
        known = {f.name: f for f in fields(self)}
        values = {}
        for key, text in overrides.items():
            if key not in known:
                raise ValueError(f"unknown recipe setting {key!r}; settings: {', '.join(sorted(known))}")
            kind = type(getattr(self, key))
            try:
                values[key] = (text.lower() in ("1", "true", "yes")) if kind is bool else kind(text)
            except ValueError:
                raise ValueError(f"recipe setting {key}={text!r} is not a {kind.__name__}") from None
        return replace(self, **values)

    def schedule_for(self, steps_per_epoch: int):
        """The learning rate as a pure function of the step."""
        if self.schedule == "constant":
            return Constant(self.lr)
        if self.schedule == "warmup_hold_decay":
            k = steps_per_epoch
            warmup, hold, decay = (
                round(e * k) for e in (self.warmup_epochs, self.hold_epochs, self.decay_epochs)
            )
            return WarmupHoldDecay(
                base_lr=self.lr,
                warmup=warmup,
                hold=hold,
                decay=decay,
                total=max(self.epochs * k, warmup + hold + decay),
                final_lr=self.final_lr,
            )
        raise ValueError(f"unknown schedule {self.schedule!r}; schedules: constant, warmup_hold_decay")

    def to_dict(self) -> dict:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    # Dipani, Iyer & Baths 2020: Adam 1e-4, both outputs trained.
    "dipani": Recipe(optimizer="adam", lr=1e-4, batch_size=8, epochs=40, aux_weight=1.0),
    # Koutini et al. 2019: Adam with warm-up, constant, linear decay to 1e-6 and a flat tail;
    # mixup; SWA over the tail.
    "koutini": Recipe(
        optimizer="adam",
        lr=1e-4,
        batch_size=16,
        epochs=60,
        schedule="warmup_hold_decay",
        warmup_epochs=5,
        hold_epochs=15,
        decay_epochs=30,
        mixup_alpha=0.3,
        swa_start_epoch=50,
    ),
    # Amiriparian et al. 2019: RMSprop, the pretrained encoder frozen first, then unfrozen.
    "amiriparian": Recipe(optimizer="rmsprop", lr=1e-4, batch_size=16, epochs=30, encoder_frozen_epochs=5),
    # The small models (va-cnn, attention-cnn) and our heads: Adam.
    "small": Recipe(optimizer="adam", lr=1e-3, batch_size=32, epochs=30, specaugment=True, gain_db=6.0),
    # Heads over a frozen encoder's cached embeddings (segment-attention over musicnn).
    # Windows every 3 s (non-overlapping musicnn segments) keep the one-off encoding affordable;
    # K = 2 of them cover about the engine's default 6 s context.
    "heads": Recipe(
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-2,
        batch_size=64,
        epochs=60,
        patience=15,
        va_loss="bce",
        hop_s=3.0,
        context_segments=2,
    ),
}


def recipe_for(model_name: str, name: str | None) -> Recipe:
    """``--recipe NAME``, or without one the recipe ``model_name`` was registered with (its paper's)."""
    if name is None:
        name = models.entry(model_name).recipe
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; recipes: {', '.join(RECIPES)}")
    return RECIPES[name]
