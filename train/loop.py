"""The training loop: a flat ``train_step``, a pure ``lr_at``, and ``fit``.

Two data paths, one loop:
- mel crops: each batch is (B, n_mels, input_frames) crops of the tracks' mels (computed by
  the shared frontend through ``train.features.FeatureCache``), through ``model.forward``;
- cached embeddings, for a model whose segment encoder is frozen (segment-attention over
  musicnn): every track's windows are encoded once, exactly as the engine encodes them, and
  batches are runs of K consecutive window embeddings through ``pool`` and ``predict``.
Validation always scores whole tracks by averaging their windows, as ``realtime.analyze``
does (the same windowing rule, ``models.windowing``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.base import HeadSpec, SegmentModel, probabilities
from train.features import random_crop, windows


@dataclass
class Example:
    """One track: its mel (or window embeddings), targets per head, and which heads it supervises."""

    key: str
    group: str
    data: np.ndarray  # (n_mels, frames) or (n_windows, D)
    targets: dict[str, np.ndarray]


@dataclass
class Batch:
    x: torch.Tensor  # (B, n_mels, frames) or (B, K, D)
    targets: dict[str, torch.Tensor]  # head -> (B, L)
    masks: dict[str, torch.Tensor]  # head -> (B,) bool: which examples the head is supervised on


def collate(examples: list[Example], arrays: list[np.ndarray], heads: dict[str, HeadSpec]) -> Batch:
    """Stack crops/runs with their targets; a head an example's dataset lacks is masked out."""
    x = torch.from_numpy(np.stack(arrays)).float()
    targets, masks = {}, {}
    for name, spec in heads.items():
        present = [name in ex.targets for ex in examples]
        if not any(present):
            continue
        width = len(spec.labels)
        rows = [ex.targets[name] if name in ex.targets else np.zeros(width, np.float32) for ex in examples]
        targets[name] = torch.from_numpy(np.stack(rows).astype(np.float32))
        masks[name] = torch.tensor(present)
    return Batch(x, targets, masks)


def crop_batches(
    examples: list[Example],
    frames: int,
    batch_size: int,
    rng: np.random.Generator,
    heads: dict[str, HeadSpec],
) -> Iterator[Batch]:
    """One epoch of random crops (``features.random_crop``), one per track, shuffled; short
    tracks are looped, from a random start."""
    order = rng.permutation(len(examples))
    for i in range(0, len(order), batch_size):
        chosen = [examples[j] for j in order[i : i + batch_size]]
        yield collate(chosen, [random_crop(ex.data, frames, rng) for ex in chosen], heads)


def run_batches(
    examples: list[Example], k: int, batch_size: int, rng: np.random.Generator, heads: dict[str, HeadSpec]
) -> Iterator[Batch]:
    """One epoch of runs of up to K consecutive window embeddings ending at a random window."""
    order = rng.permutation(len(examples))
    for i in range(0, len(order), batch_size):
        chosen = [examples[j] for j in order[i : i + batch_size]]
        runs = []
        for ex in chosen:
            n = ex.data.shape[0]
            end = int(rng.integers(0, n)) + 1
            run = ex.data[max(0, end - k) : end]
            if run.shape[0] < k:  # the engine's first windows see fewer segments: repeat the oldest
                run = np.concatenate([np.repeat(run[:1], k - run.shape[0], axis=0), run])
            runs.append(run)
        yield collate(chosen, runs, heads)


@dataclass
class TrainState:
    model: SegmentModel
    optimizer: torch.optim.Optimizer
    loss_fn: Callable  # (heads, outputs, targets, masks) -> (loss tensor, {head: float})
    lr_at: Callable[[int], float]
    step: int = 0
    augment: object | None = None  # a train.augment transform (sample + apply), on mel batches
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    batch_rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))  # order, crops
    embedded: bool = False  # batches are embedding runs (pool + predict) rather than mel crops
    forward: nn.Module | None = None  # what computes outputs from batch.x (DDP-wrapped when distributed)
    clip_grad: float | None = 5.0


class DivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def train_step(state: TrainState, batch: Batch) -> dict[str, float]:
    """One optimisation step; returns the loss and its parts."""
    model = state.model
    model.train()
    for group in state.optimizer.param_groups:
        group["lr"] = state.lr_at(state.step)
    if state.augment is not None:
        x, targets, masks = state.augment.transform(batch.x, batch.targets, state.generator, batch.masks)
        batch = Batch(x, targets, masks)
    if state.forward is not None:
        outputs = state.forward(batch.x)
    else:
        outputs = model.predict(model.pool(batch.x)) if state.embedded else model(batch.x)
    loss, parts = state.loss_fn(model.heads, outputs, batch.targets, batch.masks)
    if not torch.isfinite(loss):
        raise DivergedError(f"loss became {loss.item()} at step {state.step}")
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if state.clip_grad:
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], state.clip_grad)
    state.optimizer.step()
    state.step += 1
    return {
        "loss": float(loss.detach()),
        **{f"loss_{k}": float(v) for k, v in parts.items()},
        "lr": state.lr_at(state.step - 1),
    }


@torch.no_grad()
def window_logits(
    model: SegmentModel, ex: Example, embedded: bool, k: int, hop: int
) -> dict[str, torch.Tensor]:
    """One track's windows as the engine cuts them: head -> logits (n_windows, L).

    Each window pools the last K window embeddings (fewer at the start), like the engine.
    """
    if embedded:
        embeddings = torch.from_numpy(ex.data).float()
    else:
        patches = torch.from_numpy(windows(ex.data, model.segment_frames, hop, wrap_short=True)).float()
        embeddings = model.encode(patches)
    runs = [embeddings[max(0, i - k + 1) : i + 1] for i in range(embeddings.shape[0])]
    # Group runs of equal length so each K is one batched pooling call.
    out: dict[str, list[torch.Tensor]] = {name: [None] * len(runs) for name in model.heads}
    for length in sorted({r.shape[0] for r in runs}):
        idx = [i for i, r in enumerate(runs) if r.shape[0] == length]
        logits = model.predict(model.pool(torch.stack([runs[i] for i in idx])))
        for name in model.heads:
            for j, i in enumerate(idx):
                out[name][i] = logits[name][j]
    return {name: torch.stack(rows) for name, rows in out.items()}


@torch.no_grad()
def predict_tracks(model: SegmentModel, examples: list[Example], embedded: bool, k: int, hop: int) -> dict:
    """Per-track predictions (head -> (n_tracks, L)), averaging windows as ``realtime.analyze`` does."""
    model.eval()
    per_head: dict[str, list[np.ndarray]] = {name: [] for name in model.heads}
    for ex in examples:
        logits = window_logits(model, ex, embedded, k, hop)
        for name, spec in model.heads.items():
            per_head[name].append(probabilities(spec, logits[name]).mean(dim=0).numpy())
    return {name: np.stack(rows) for name, rows in per_head.items()}


def save_checkpoint(path: Path, state: TrainState, epoch: int, best: dict) -> None:
    """Everything to resume: weights, optimiser, step, epoch and every random state the loop draws
    from (augmentation, batch order and crops, dropout), so a resumed run continues exactly as an
    uninterrupted one; tensors and strings only (no pickled objects)."""
    tmp = path.with_suffix(".tmp")
    data = {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "step": state.step,
        "epoch": epoch,
        "generator": state.generator.get_state(),
        "batch_rng": json.dumps(state.batch_rng.bit_generator.state),
        "torch_rng": torch.get_rng_state(),
        "best": json.dumps(best),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        data["cuda_rng"] = torch.stack(torch.cuda.get_rng_state_all())
    torch.save(data, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, state: TrainState) -> tuple[int, dict]:
    data = torch.load(path, map_location="cpu", weights_only=True)
    state.model.load_state_dict(data["model"])
    state.optimizer.load_state_dict(data["optimizer"])
    state.step = int(data["step"])
    state.generator.set_state(data["generator"])
    # Checkpoints written before these were saved resume with fresh batch and dropout draws.
    if "batch_rng" in data:
        state.batch_rng.bit_generator.state = json.loads(data["batch_rng"])
    if "torch_rng" in data:
        torch.set_rng_state(data["torch_rng"])
    if (
        "cuda_rng" in data
        and torch.cuda.is_available()
        and len(data["cuda_rng"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(list(data["cuda_rng"]))
    return int(data["epoch"]), json.loads(data["best"])


class MetricsLog:
    """One JSON object per line (metrics.jsonl) and the same rows as CSV (metrics.csv)."""

    def __init__(self, folder: Path, resume: bool = False):
        self.jsonl = folder / "metrics.jsonl"
        self.csv = folder / "metrics.csv"
        self.rows: list[dict] = []
        if resume and self.jsonl.is_file():
            self.rows = [json.loads(line) for line in self.jsonl.read_text().splitlines() if line.strip()]

    def append(self, row: dict) -> None:
        self.rows.append(row)
        with self.jsonl.open("a") as f:
            f.write(json.dumps(row) + "\n")
        columns = sorted({k for r in self.rows for k in r})
        lines = [",".join(columns)] + [",".join(_cell(r.get(c)) for c in columns) for r in self.rows]
        self.csv.write_text("\n".join(lines) + "\n")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)
