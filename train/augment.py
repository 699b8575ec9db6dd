"""Batched mel-patch augmentations: seeded parameter sampling, then a deterministic apply.

Each transform is a frozen dataclass of hyper-parameters with two steps, as audiotools'
``BaseTransform.instantiate`` / ``transform``:

- ``sample(batch_size, generator, *, n_mels, frames) -> params`` draws every random number
  from ``generator`` (a ``torch.Generator``, normally on the CPU) into a dict of tensors;
- ``apply(x, targets, params) -> (x, targets)`` is a pure function of its arguments, batched
  over ``x: (batch, n_mels, frames)``, on whatever device ``x`` lives (params are moved there).

So the same seed gives the same augmented batch on the CPU and on a GPU, and a logged
``params`` dict replays a batch exactly.  ``apply_masks(masks, params)`` updates the per-head
"this example is labelled" masks (only ``Mixup`` changes them); ``transform(x, targets,
generator, masks)`` does all three.  ``targets`` maps head name -> (batch, n_labels) float
tensor; class heads must be one-hot (or probabilities) to be mixed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.special import betaincinv

from models.frontend import SCALINGS, FrontendConfig

Params = dict[str, torch.Tensor]
Targets = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]


def _uniform_int(high: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One integer in [0, high) per element of ``high`` (int64, high >= 1)."""
    high = high.to(generator.device)
    u = torch.rand(high.shape, generator=generator, dtype=torch.float64, device=generator.device)
    return torch.minimum((u * high).long(), high - 1)  # min(): guards u·high rounding up to high


def _on(params: Params, device: torch.device) -> Params:
    return {k: v.to(device) for k, v in params.items()}


class Transform:
    """The two-step interface every augmentation implements."""

    def sample(self, batch_size: int, generator: torch.Generator, *, n_mels: int, frames: int) -> Params:
        raise NotImplementedError

    def apply(self, x: torch.Tensor, targets: Targets, params: Params) -> tuple[torch.Tensor, Targets]:
        raise NotImplementedError

    def apply_masks(self, masks: Masks, params: Params) -> Masks:
        """Which examples still supervise each head; unchanged unless examples are mixed."""
        return masks

    def output_frames(self, frames: int) -> int:
        """Frames of the output for ``frames`` input frames."""
        return frames

    def transform(
        self,
        x: torch.Tensor,
        targets: Targets,
        generator: torch.Generator,
        masks: Masks | None = None,
    ) -> tuple[torch.Tensor, Targets, Masks | None]:
        """Sample for this batch's shape, then apply to inputs, targets and masks."""
        batch, n_mels, frames = x.shape
        params = self.sample(batch, generator, n_mels=n_mels, frames=frames)
        x, targets = self.apply(x, targets, params)
        return x, targets, None if masks is None else self.apply_masks(masks, params)


@dataclass(frozen=True)
class Mixup(Transform):
    """Zhang et al. 2018, "mixup": x ← λ·x + (1−λ)·x[perm], every head's targets with the same λ.

    λ ~ Beta(alpha, alpha) per example.  ``major=True`` takes max(λ, 1−λ), as CP-JKU's
    ``my_mixup`` does, so each example stays the larger part of its own mix.  A mixed
    example supervises a head only if both of its sources did (masks are ANDed): a missing
    label mixed in would be a wrong target.
    """

    alpha: float = 0.3
    major: bool = False

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"mixup alpha must be positive, got {self.alpha}")

    def sample(self, batch_size: int, generator: torch.Generator, *, n_mels: int, frames: int) -> Params:
        perm = torch.randperm(batch_size, generator=generator, device=generator.device)
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64, device=generator.device)
        # Inverse CDF: torch's Beta sampler takes no generator, and this keeps one random stream.
        lam = torch.from_numpy(betaincinv(self.alpha, self.alpha, u.cpu().numpy())).float()
        if self.major:
            lam = torch.maximum(lam, 1.0 - lam)
        return {"perm": perm, "lam": lam.to(generator.device)}

    def apply(self, x: torch.Tensor, targets: Targets, params: Params) -> tuple[torch.Tensor, Targets]:
        p = _on(params, x.device)
        perm, lam = p["perm"], p["lam"]
        if perm.shape[0] != x.shape[0]:
            raise ValueError(f"params are for a batch of {perm.shape[0]}, x has {x.shape[0]}")
        return _mix(x, lam, perm), {head: _mix(t, lam, perm) for head, t in targets.items()}

    def apply_masks(self, masks: Masks, params: Params) -> Masks:
        out = {}
        for head, m in masks.items():
            perm = params["perm"].to(m.device)
            out[head] = m & m[perm]
        return out


def _mix(t: torch.Tensor, lam: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    if not t.is_floating_point():
        raise TypeError(f"mixup needs float tensors (one-hot class targets), got {t.dtype}")
    lam = lam.to(t.dtype).reshape(-1, *([1] * (t.ndim - 1)))  # (B, 1, ...)
    return lam * t + (1.0 - lam) * t[perm]


@dataclass(frozen=True)
class SpecAugment(Transform):
    """Park et al. 2019, "SpecAugment": optional time warp, then frequency and time masks.

    Each of ``freq_masks`` bands has a width drawn uniformly from 0..``freq_width`` bins and a
    uniform start; likewise ``time_masks`` spans of 0..``time_width`` frames.  Masked cells get
    ``fill``: ``"mean"`` (default) is each example's own mean over all its cells (after the
    warp), which for zero-mean normalised inputs is the paper's 0 and for dB features stays
    inside the example's level range (a literal 0 dB would be a loud, unnatural block); or a
    number.  ``time_warp`` W > 0 moves a frame c in [W+1, T−2−W] to c+w, w uniform in [−W, W],
    stretching both sides linearly (piecewise-linear resampling, frames 0 and T−1 fixed).
    """

    freq_masks: int = 2
    freq_width: int = 8
    time_masks: int = 2
    time_width: int = 20
    time_warp: int = 0
    fill: str | float = "mean"

    def __post_init__(self) -> None:
        if min(self.freq_masks, self.freq_width, self.time_masks, self.time_width, self.time_warp) < 0:
            raise ValueError(f"SpecAugment counts and widths must be >= 0: {self}")
        if isinstance(self.fill, str) and self.fill != "mean":
            raise ValueError(f"fill is 'mean' or a number, got {self.fill!r}")

    def sample(self, batch_size: int, generator: torch.Generator, *, n_mels: int, frames: int) -> Params:
        params = {}
        for axis, count, width, size in (
            ("freq", self.freq_masks, self.freq_width, n_mels),
            ("time", self.time_masks, self.time_width, frames),
        ):
            widths = _uniform_int(torch.full((batch_size, count), min(width, size) + 1), generator)
            params[f"{axis}_width"] = widths
            params[f"{axis}_start"] = _uniform_int(size - widths + 1, generator)  # start + width <= size
        if self.time_warp > 0:
            w = self.time_warp
            if frames < 2 * w + 3:
                raise ValueError(f"time_warp {w} needs at least {2 * w + 3} frames, got {frames}")
            params["warp_center"] = (
                w + 1 + _uniform_int(torch.full((batch_size,), frames - 2 * w - 2), generator)
            )
            params["warp_shift"] = _uniform_int(torch.full((batch_size,), 2 * w + 1), generator) - w
        return params

    def apply(self, x: torch.Tensor, targets: Targets, params: Params) -> tuple[torch.Tensor, Targets]:
        p = _on(params, x.device)
        if "warp_center" in p:
            x = time_warp(x, p["warp_center"], p["warp_shift"])
        band = _spans(p["freq_start"], p["freq_width"], x.shape[1])  # (B, n_mels)
        span = _spans(p["time_start"], p["time_width"], x.shape[2])  # (B, frames)
        masked = band[:, :, None] | span[:, None, :]  # (B, n_mels, frames)
        fill = x.mean(dim=(1, 2), keepdim=True) if self.fill == "mean" else x.new_tensor(float(self.fill))
        return torch.where(masked, fill, x), targets


def _spans(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K) starts and widths -> (B, size) bool, True inside any of the K spans."""
    idx = torch.arange(size, device=start.device)
    inside = (idx >= start[..., None]) & (idx < (start + width)[..., None])  # (B, K, size)
    return inside.any(dim=1)


def time_warp(x: torch.Tensor, center: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move frame ``center`` to ``center + shift`` per example, resampling both sides linearly.

    (B, n_mels, T) -> (B, n_mels, T); output frame t reads input position s(t), piecewise
    linear through (0, 0), (center + shift, center), (T−1, T−1); shift 0 returns x exactly.
    """
    batch, n_mels, frames = x.shape
    last = frames - 1
    t = torch.arange(frames, device=x.device, dtype=torch.float64)[None, :]  # (1, T)
    c = center.to(device=x.device, dtype=torch.float64)[:, None]  # (B, 1)
    moved = c + shift.to(device=x.device, dtype=torch.float64)[:, None]
    source = torch.where(
        t < moved, t * (c / moved), c + (t - moved) * ((last - c) / (last - moved))
    )  # (B, T)
    i0 = source.floor().clamp(0, last).long()
    i1 = (i0 + 1).clamp(max=last)
    frac = (source - i0).to(x.dtype)[:, None, :]  # (B, 1, T)
    g0 = x.gather(2, i0[:, None, :].expand(batch, n_mels, frames))
    g1 = x.gather(2, i1[:, None, :].expand(batch, n_mels, frames))
    return g0 + frac * (g1 - g0)


@dataclass(frozen=True)
class RandomGain(Transform):
    """Scale the audio by a gain in dB drawn uniformly from ``db_range``, applied to its mels.

    A gain of g dB multiplies the amplitude by 10^(g/20), so a mel of |X|^power by
    k = 10^(g·power/20).  Exact per frontend scaling (``FrontendConfig.scaling``):

    - ``"db"`` (db_scale·log10 mel): adds db_scale·power·g/20, i.e. g for power dB with
      db_scale 10, 2g for Essentia's doubled dB (db_scale 20).  Cells at ``db_floor`` stay
      there: they are (near) digital silence, which no gain lifts.
    - ``"log10_1p"`` (log10(1 + G·mel)): y ← log10(1 + k·(10^y − 1)); G cancels, and
      expm1/log1p keep quiet cells exact.  Not a shift: it is why the scaling matters.
    - ``"power"``: multiplies by k.

    ``RandomGain.for_frontend(config, db_range)`` copies the scaling from a frontend config.
    """

    db_range: tuple[float, float] = (-6.0, 6.0)
    scaling: str = "db"
    power: float = 2.0
    db_scale: float = 10.0
    db_floor: float = -200.0

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}; allowed: {', '.join(SCALINGS)}")
        if self.db_range[0] > self.db_range[1]:
            raise ValueError(f"db_range must be (low, high), got {self.db_range}")

    @classmethod
    def for_frontend(
        cls, frontend: FrontendConfig, db_range: tuple[float, float] = (-6.0, 6.0)
    ) -> RandomGain:
        return cls(
            db_range=tuple(db_range),
            scaling=frontend.scaling,
            power=frontend.power,
            db_scale=frontend.db_scale,
            db_floor=frontend.db_floor,
        )

    def sample(self, batch_size: int, generator: torch.Generator, *, n_mels: int, frames: int) -> Params:
        low, high = self.db_range
        u = torch.rand(batch_size, generator=generator, device=generator.device)
        return {"gain_db": low + (high - low) * u}

    def apply(self, x: torch.Tensor, targets: Targets, params: Params) -> tuple[torch.Tensor, Targets]:
        gain_db = params["gain_db"].to(device=x.device, dtype=x.dtype)[:, None, None]  # (B, 1, 1)
        mel_db = gain_db * (self.power / 2.0)  # the gain in 10·log10 units of the mel
        if self.scaling == "db":
            shifted = (x + mel_db * (self.db_scale / 10.0)).clamp_min(self.db_floor)
            return torch.where(x <= self.db_floor, x, shifted), targets
        factor = torch.pow(10.0, mel_db / 10.0)
        if self.scaling == "power":
            return x * factor, targets
        ln10 = math.log(10.0)
        return torch.log1p(factor * torch.expm1(x * ln10)) / ln10, targets


@dataclass(frozen=True)
class GaussianNoise(Transform):
    """Add N(0, std²) noise to every cell, in feature units (dB for dB frontends).

    ``sample`` draws one seed; ``apply`` draws the noise from a generator on ``x``'s device
    seeded with it, so the batch-sized noise tensor is never made on the CPU and copied.  The
    same params give the same noise on the same device type; CPU and CUDA generators differ.
    """

    std: float = 0.1

    def __post_init__(self) -> None:
        if self.std < 0:
            raise ValueError(f"noise std must be >= 0, got {self.std}")

    def sample(self, batch_size: int, generator: torch.Generator, *, n_mels: int, frames: int) -> Params:
        return {"seed": torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)}

    def apply(self, x: torch.Tensor, targets: Targets, params: Params) -> tuple[torch.Tensor, Targets]:
        noise_generator = torch.Generator(device=x.device)
        noise_generator.manual_seed(int(params["seed"].item()))
        noise = torch.randn(x.shape, generator=noise_generator, device=x.device, dtype=x.dtype)
        return x + self.std * noise, targets


@dataclass(frozen=True)
class RandomCrop(Transform):
    """Cut ``frames`` consecutive frames at a uniform offset per example from a longer batch."""

    frames: int

    def __post_init__(self) -> None:
        if self.frames <= 0:
            raise ValueError(f"crop frames must be positive, got {self.frames}")

    def sample(self, batch_size: int, generator: torch.Generator, *, n_mels: int, frames: int) -> Params:
        if frames < self.frames:
            raise ValueError(f"cannot crop {self.frames} frames from {frames}")
        return {"start": _uniform_int(torch.full((batch_size,), frames - self.frames + 1), generator)}

    def apply(self, x: torch.Tensor, targets: Targets, params: Params) -> tuple[torch.Tensor, Targets]:
        start = params["start"].to(x.device)
        if int(start.max()) + self.frames > x.shape[2]:
            raise ValueError(f"params crop past the end of {x.shape[2]} frames")
        idx = start[:, None] + torch.arange(self.frames, device=x.device)  # (B, frames)
        return x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1)), targets

    def output_frames(self, frames: int) -> int:
        return self.frames


@dataclass(frozen=True)
class Compose(Transform):
    """Several transforms in order; params are one flat dict keyed ``"{index}.{name}"``."""

    transforms: tuple[Transform, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))

    def sample(self, batch_size: int, generator: torch.Generator, *, n_mels: int, frames: int) -> Params:
        params = {}
        for i, t in enumerate(self.transforms):
            for name, value in t.sample(batch_size, generator, n_mels=n_mels, frames=frames).items():
                params[f"{i}.{name}"] = value
            frames = t.output_frames(frames)  # a crop changes what the next transform sees
        return params

    def _own(self, params: Params, i: int) -> Params:
        prefix = f"{i}."
        return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

    def apply(self, x: torch.Tensor, targets: Targets, params: Params) -> tuple[torch.Tensor, Targets]:
        for i, t in enumerate(self.transforms):
            x, targets = t.apply(x, targets, self._own(params, i))
        return x, targets

    def apply_masks(self, masks: Masks, params: Params) -> Masks:
        for i, t in enumerate(self.transforms):
            masks = t.apply_masks(masks, self._own(params, i))
        return masks

    def output_frames(self, frames: int) -> int:
        for t in self.transforms:
            frames = t.output_frames(frames)
        return frames
