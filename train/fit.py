"""``fit``: data -> features -> the training loop -> a model artifact the engine loads.

Runs on one process, or on several under ``torchrun`` (DistributedDataParallel: gloo on CPU,
NCCL on CUDA); rank 0 evaluates, logs and writes the artifact.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from models.artifact import Artifact, save
from models.base import HeadSpec, SegmentModel
from models.segment_attention import JoinedEncoder
from models.windowing import hop_frames, window_starts
from train import metrics
from train.augment import Compose, GaussianNoise, Mixup, RandomGain, SpecAugment
from train.averaging import SWA
from train.calibration import fold_temperatures, sigmoid_windows
from train.features import FeatureCache, windows
from train.loop import (
    DivergedError,
    Example,
    MetricsLog,
    TrainState,
    crop_batches,
    load_checkpoint,
    predict_tracks,
    run_batches,
    save_checkpoint,
    train_step,
)
from train.losses import total_loss, two_output_loss
from train.recipes import Recipe
from train.schedules import make_optimizer


@dataclass
class Data:
    train: list[Example]
    val: list[Example]
    heads: dict[str, HeadSpec]  # the heads the data supervises (a subset of the model's)
    description: dict = field(default_factory=dict)


@dataclass
class OutOfFold:
    """What the folds' models said about the clips each held out, for the final fit on every clip:
    it holds nothing out, so its temperatures and tag thresholds are fitted on these instead."""

    # Per fold: head -> (window logits, labels), before the fold model's own calibration.
    windows: list[dict] = field(default_factory=list)
    targets: list[dict] = field(default_factory=list)  # per fold: head -> track targets
    predictions: list[dict] = field(default_factory=list)  # per fold: head -> calibrated track probabilities
    folds: list[dict] = field(default_factory=list)  # per fold: its best epoch and validation metrics
    final_epochs: int = 0  # the fit on every clip's

    def add_fold(self, validation: dict, best_epoch: int | None, targets: dict, predictions: dict) -> None:
        self.folds.append({"best_epoch": best_epoch, "validation": validation})
        self.targets.append(targets)
        self.predictions.append(predictions)

    def pooled_windows(self) -> dict:
        heads = {h for fold in self.windows for h in fold}
        return {
            h: tuple(np.concatenate([fold[h][i] for fold in self.windows if h in fold]) for i in (0, 1))
            for h in heads
        }

    def pooled_predictions(self) -> tuple[dict, dict]:
        targets, predictions = {}, {}
        for h in {h for fold in self.targets for h in fold}:
            have = [i for i, fold in enumerate(self.targets) if h in fold and len(fold[h])]
            if have:
                targets[h] = np.concatenate([self.targets[i][h] for i in have])
                predictions[h] = np.concatenate([self.predictions[i][h] for i in have])
        return targets, predictions

    def epochs(self) -> int:
        """The final fit's epochs: the median of the folds' best epochs."""
        return max(1, int(round(float(np.median([f["best_epoch"] for f in self.folds])))))

    @property
    def summary(self) -> dict:
        keys = sorted({k for f in self.folds for k in f["validation"]})
        stats = {}
        for key in keys:
            values = np.array([f["validation"][key] for f in self.folds if key in f["validation"]])
            stats[key] = {name: round(float(fn(values)), 4) for name, fn in
                          (("mean", np.mean), ("sd", np.std), ("min", np.min), ("max", np.max))}  # fmt: skip
        return {
            "folds": len(self.folds),
            "best_epochs": [f["best_epoch"] for f in self.folds],
            "epochs": self.final_epochs,
            "per_fold": [f["validation"] for f in self.folds],
            "validation": stats,
        }


def cross_validate(
    build: Callable[[], SegmentModel],
    model_name: str,
    overrides: dict,
    folds: list[Data],
    everything: Data,
    recipe: Recipe,
    out_dir: Path,
    command: str = "",
    quiet: bool = False,
) -> dict:
    """K fits, each validated on the fold it holds out (artifacts in ``OUT/folds/I``); then the
    shipped fit on every clip for the median of the folds' best epochs, its temperatures and
    thresholds fitted on the folds' out-of-fold outputs.  Returns the cross-validation summary."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("cross-validation runs on one process (each fold's fit is small); drop torchrun")
    oof = OutOfFold()
    for i, data in enumerate(folds, start=1):
        val = fit(build(), model_name, overrides, data, recipe, out_dir / "folds" / str(i),
                  command=f"{command}  # fold {i} of {len(folds)}", quiet=quiet, out_of_fold=oof)  # fmt: skip
        shown = {k.split("/")[-1]: round(v, 3) for k, v in val.items() if k.startswith("valence_arousal/")}
        print(f"fold {i}/{len(folds)}: best epoch {oof.folds[-1]['best_epoch']}, score {val['score']:.4f}"
              + "".join(f", {k} {v}" for k, v in shown.items()), file=sys.stderr)  # fmt: skip
    # Weight averaging runs its epochs out; otherwise the folds say when the model stopped improving.
    oof.final_epochs = recipe.epochs if recipe.swa_start_epoch else oof.epochs()
    print(f"fit on all {len(everything.train)} clips for {oof.final_epochs} epochs"
          + ("" if recipe.swa_start_epoch else " (the folds' median best epoch)"), file=sys.stderr)  # fmt: skip
    final = recipe.with_overrides({"epochs": str(oof.final_epochs), "patience": "0"})
    return fit(build(), model_name, overrides, everything, final, out_dir, command=command, quiet=quiet,
               settled=oof)  # fmt: skip


def is_embedded(model: SegmentModel) -> bool:
    """Frozen encoders are run once per window and their embeddings cached."""
    return model.frozen_encoder


def examples(model, tracks, cache: FeatureCache, recipe: Recipe, label: str, quiet: bool) -> list[Example]:
    """Mel (or, for frozen encoders, window embeddings) of every track, with its targets."""
    out = []
    hop = hop_frames(recipe.hop_s, model.frontend.frame_rate_hz)
    for track in tqdm(tracks, desc=f"features {label}", unit="track", disable=quiet, file=sys.stderr):
        mel = cache.mel(track.path)
        data = mel
        if is_embedded(model):
            data = embed_windows(model, mel, hop, cache, track.path)
        out.append(Example(track.key, track.group, data, dict(track.targets)))
    return out


@torch.no_grad()
def embed_windows(model: SegmentModel, mel: np.ndarray, hop: int, cache: FeatureCache, path) -> np.ndarray:
    """(n_windows, D) embeddings of the engine's windows of one track; cached beside the mels.

    The cache is keyed by the encoder's registered name (musicnn-msd and musicnn-mtt share one
    class but not their weights); an encoder without pretrained weights is never cached.  Joined
    encoders (``musicnn-msd+musicnn-mtt``) join their parts' cached embeddings.
    """
    name = model.embedding_cache_key
    if name is not None and isinstance(model.encoder, JoinedEncoder):
        parts = zip(model.encoder.names, model.encoder.parts, strict=True)
        return np.concatenate([_embed(part, key, mel, hop, cache, path) for key, part in parts], axis=1)
    return _embed(model.encoder, name, mel, hop, cache, path)


def _embed(encoder: SegmentModel, name: str | None, mel: np.ndarray, hop: int, cache: FeatureCache, path):
    key = cache.entry(path).with_suffix(f".emb-{name}-h{hop}.npy")
    if name is not None and key.is_file():
        return np.load(key, allow_pickle=False)
    encoder.eval()
    stream = encoder.streaming_encoder() if mel.shape[1] >= encoder.segment_frames else None
    if stream is not None:  # overlapping windows share their work, as in the engine (same numbers)
        frames = torch.from_numpy(mel).float()
        starts = window_starts(mel.shape[1], encoder.segment_frames, hop)
        ends = [start + encoder.segment_frames for start in starts]
        emb = torch.cat([stream.encode(frames, 0, ends[i : i + 8]) for i in range(0, len(ends), 8)]).numpy()
    else:
        patches = torch.from_numpy(windows(mel, encoder.segment_frames, hop, wrap_short=True)).float()
        emb = torch.cat([encoder.encode(patches[i : i + 64]) for i in range(0, len(patches), 64)]).numpy()
    if name is not None:
        tmp = key.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, emb)
        tmp.replace(key)
    return emb


def evaluate(
    heads: dict[str, HeadSpec], targets: dict[str, np.ndarray], predictions: dict[str, np.ndarray]
) -> dict:
    """Track-level metrics per head, and one ``score`` to select models by (higher is better)."""
    out: dict[str, float] = {}
    primary = []
    for name, spec in heads.items():
        if name not in targets or not len(targets[name]):
            continue
        y, p = targets[name], predictions[name]
        if spec.kind == "tags":
            binary = (
                y if set(np.unique(y)) <= {0.0, 1.0} else (y >= y.mean(axis=0, keepdims=True)).astype(float)
            )
            keep = binary.min(axis=0) != binary.max(axis=0)  # ROC needs both classes
            if keep.any():
                out[f"{name}/roc_auc_macro"] = float(metrics.roc_auc(binary[:, keep], p[:, keep], "macro"))
                out[f"{name}/pr_auc_macro"] = float(metrics.pr_auc(binary[:, keep], p[:, keep], "macro"))
                primary.append(out[f"{name}/roc_auc_macro"])
        elif spec.kind == "valence_arousal":
            binary = set(np.unique(y)) <= {0.0, 1.0}
            if binary:  # quadrant-style labels: published value > 0 means positive / high
                for i, dim in enumerate(spec.labels):
                    out[f"{name}/{dim}_balanced_accuracy"] = float(
                        metrics.balanced_accuracy(y[:, i].astype(int), (p[:, i] > 0).astype(int), 2)
                    )
                quadrant_true = y[:, 0].astype(int) * 2 + y[:, 1].astype(int)
                quadrant_pred = (p[:, 0] > 0).astype(int) * 2 + (p[:, 1] > 0).astype(int)
                out[f"{name}/quadrant_accuracy"] = float(metrics.accuracy(quadrant_true, quadrant_pred))
                primary.append(out[f"{name}/quadrant_accuracy"])
            else:
                for i, dim in enumerate(spec.labels):
                    out[f"{name}/{dim}_ccc"] = float(metrics.ccc(y[:, i], p[:, i]))
                    out[f"{name}/{dim}_r2"] = float(metrics.r2(y[:, i], p[:, i]))
                    out[f"{name}/{dim}_rmse"] = float(metrics.rmse(y[:, i], p[:, i]))
                    out[f"{name}/{dim}_pearson"] = float(metrics.pearson_r(y[:, i], p[:, i]))
                primary.append(np.mean([out[f"{name}/{d}_ccc"] for d in spec.labels]))
        else:
            truth, pred = y.argmax(axis=1), p.argmax(axis=1)
            out[f"{name}/accuracy"] = float(metrics.accuracy(truth, pred))
            out[f"{name}/balanced_accuracy"] = float(metrics.balanced_accuracy(truth, pred, len(spec.labels)))
            primary.append(out[f"{name}/balanced_accuracy"])
    out["score"] = float(np.mean(primary)) if primary else float("nan")
    return out


def stack_targets(heads: dict[str, HeadSpec], examples: list[Example]) -> tuple[dict, dict]:
    """Per head: the targets of the examples that have them, and those examples' indices."""
    targets, index = {}, {}
    for name in heads:
        idx = [i for i, ex in enumerate(examples) if name in ex.targets]
        index[name] = idx
        targets[name] = np.stack([examples[i].targets[name] for i in idx]) if idx else np.zeros((0, 0))
    return targets, index


def validate(model, data: Data, recipe: Recipe) -> tuple[dict, dict]:
    hop = hop_frames(recipe.hop_s, model.frontend.frame_rate_hz)
    preds = predict_tracks(model, data.val, is_embedded(model), recipe.context_segments, hop)
    targets, index = stack_targets(data.heads, data.val)
    per_head = {name: preds[name][index[name]] for name in data.heads}
    if not all(np.isfinite(p).all() for p in per_head.values()):
        # A finite loss can still leave inf weights behind (a huge step): that is divergence too.
        raise DivergedError("the model's outputs became NaN or infinite")
    return evaluate(data.heads, targets, per_head), per_head


def check_va_loss(data: Data, recipe: Recipe) -> None:
    """Refuse a valence/arousal loss that cannot learn the data's targets.

    ``mse``/``ccc`` compare the published 2p - 1 in [-1, 1] with the targets; binary low/high
    targets (4Q's quadrant halves, 0/1) need ``bce``, or the model learns to publish 0.5 for "high".
    """
    if recipe.va_loss == "bce":
        return
    for name, spec in data.heads.items():
        if spec.kind != "valence_arousal":
            continue
        values = {float(v) for ex in data.train if name in ex.targets for v in np.ravel(ex.targets[name])}
        if values and values <= {0.0, 1.0}:
            raise ValueError(
                f"va_loss={recipe.va_loss} compares values in [-1, 1], but the {name} targets are binary "
                "low/high (0/1, e.g. 4Q quadrants): use --set va_loss=bce"
            )


class _Forward(nn.Module):
    """What DDP wraps: the model's forward, or pool + predict over cached embedding runs."""

    def __init__(self, model: SegmentModel, embedded: bool):
        super().__init__()
        self.model = model
        self.embedded = embedded

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.predict(self.model.pool(x)) if self.embedded else self.model(x)


def fit(
    model: SegmentModel,
    model_name: str,
    overrides: dict,
    data: Data,
    recipe: Recipe,
    out_dir: Path,
    resume: bool = False,
    command: str = "",
    quiet: bool = False,
    out_of_fold: OutOfFold | None = None,
    settled: OutOfFold | None = None,
) -> dict:
    """Train, keep the best validation epoch, write the artifact; returns the final metrics.

    Cross-validation (``cross_validate``) uses the last two: a fold's fit adds its validation
    windows and predictions to ``out_of_fold``; the final fit, on every clip (``data.val``
    empty), runs its epochs out and takes its temperatures and thresholds from ``settled``.
    """
    if not data.val and settled is None:
        raise ValueError("fit needs validation tracks (or cross_validate's settled calibration)")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = 0
    if distributed:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank = dist.get_rank()
    check_va_loss(data, recipe)
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed + rank)
    embedded = is_embedded(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    forward = _Forward(model, embedded)
    if distributed:
        forward = nn.parallel.DistributedDataParallel(forward)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(recipe.optimizer, trainable, recipe.lr, weight_decay=recipe.weight_decay)
    world = dist.get_world_size() if distributed else 1
    # Each rank its own share of the tracks, all shares the same size: DDP needs every rank to
    # take the same number of steps, or the gradient all-reduce waits for ever.
    train_part = data.train[rank::world][: len(data.train) // world]
    steps_per_epoch = max(1, -(-len(train_part) // recipe.batch_size))
    schedule = recipe.schedule_for(steps_per_epoch)
    state = TrainState(
        model=model,
        optimizer=optimizer,
        loss_fn=_loss(recipe),
        lr_at=schedule.lr_at,
        augment=_augment(model, recipe, embedded),
        embedded=embedded,
        forward=forward,
        batch_rng=rng,
    )
    state.generator.manual_seed(recipe.seed + rank)
    checkpoint = out_dir / "checkpoint.pt"
    start_epoch, best = 0, {"score": -float("inf"), "epoch": -1}
    if resume and checkpoint.is_file():
        start_epoch, best = load_checkpoint(checkpoint, state)
        start_epoch += 1
    log = MetricsLog(out_dir, resume=resume) if rank == 0 else None
    swa = SWA(model) if recipe.swa_start_epoch else None
    # Epochs since the best one, as the interrupted run counted them (early stopping goes on alike).
    stale = start_epoch - best["epoch"] if best["epoch"] >= 1 else 0
    if recipe.patience and stale >= recipe.patience:
        if rank == 0:
            print(f"early stop: the run had already stopped ({stale} epochs without a better validation "
                  "score); nothing to resume", file=sys.stderr)  # fmt: skip
        start_epoch = recipe.epochs
    if swa is not None and start_epoch >= recipe.swa_start_epoch and rank == 0:
        print(f"warning: resuming at epoch {start_epoch + 1}, after SWA began (epoch {recipe.swa_start_epoch}): "
              "the average restarts from here (the checkpoint does not hold it)", file=sys.stderr)  # fmt: skip
    pretrained = [p for name, p in model.named_parameters() if name.startswith(model.pretrained_prefixes)]
    for epoch in range(start_epoch, recipe.epochs):
        # Amiriparian et al.: the pretrained encoder stays frozen for the first epochs.
        for p in pretrained:
            p.requires_grad_(epoch >= recipe.encoder_frozen_epochs)
        batches = (
            run_batches(train_part, recipe.context_segments, recipe.batch_size, rng, data.heads)
            if embedded
            else crop_batches(train_part, model.input_frames, recipe.batch_size, rng, data.heads)
        )
        losses = []
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{recipe.epochs}", unit="batch",
                   disable=quiet or rank != 0, file=sys.stderr, leave=False)  # fmt: skip
        try:
            for batch in bar:
                losses.append(train_step(state, batch))
                bar.set_postfix(loss=f"{losses[-1]['loss']:.4f}")
        except DivergedError as exc:
            if rank == 0:
                print(f"error: {exc}; stopping. The last good checkpoint is {checkpoint}", file=sys.stderr)
            raise
        if swa is not None and epoch + 1 >= recipe.swa_start_epoch:
            swa.update(model)
        if rank != 0:
            continue
        row = {
            "epoch": epoch + 1,
            "step": state.step,
            "train_loss": float(np.mean([r["loss"] for r in losses])),
        }
        if not data.val:  # the final fit of a cross-validation: no clip is held out to score
            log.append(row)
            save_checkpoint(checkpoint, state, epoch, best)
            continue
        try:
            val, _ = validate(model, data, recipe)
        except DivergedError as exc:
            print(
                f"error: {exc} (epoch {epoch + 1}); stopping. The last good checkpoint is {checkpoint}",
                file=sys.stderr,
            )
            raise
        row.update({f"val/{k}": v for k, v in val.items()})
        log.append(row)
        if not quiet:
            print(
                f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  val score {val['score']:.4f}",
                file=sys.stderr,
            )
        if val["score"] > best["score"]:
            best = {"score": val["score"], "epoch": epoch + 1, "metrics": val}
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out_dir / "best.pt")
            stale = 0
        else:
            stale += 1
        save_checkpoint(checkpoint, state, epoch, best)
        if recipe.patience and stale >= recipe.patience:
            print(f"early stop: no better validation score for {stale} epochs", file=sys.stderr)
            break
    if distributed:
        dist.barrier()
        if rank != 0:
            dist.destroy_process_group()
            return {}
    final = _finish(
        model, model_name, overrides, data, recipe, out_dir, best, swa, command, log, out_of_fold, settled
    )
    if distributed:
        dist.destroy_process_group()
    return final


def _finish(
    model,
    model_name,
    overrides,
    data,
    recipe,
    out_dir,
    best,
    swa,
    command,
    log,
    out_of_fold=None,
    settled=None,
) -> dict:
    """Best (or SWA) weights -> thresholds fitted on validation -> artifact + curves + metrics.json.

    With ``settled`` (the final fit of a cross-validation) the last epoch's weights are kept and
    the temperatures and thresholds come from the folds' out-of-fold windows and predictions.
    """
    chosen = "best epoch" if settled is None else f"last epoch ({recipe.epochs}) of a fit on every clip"
    if swa is not None and swa.n_averaged:
        if not is_embedded(model):  # batch-norm statistics of the averaged weights, over the data
            swa.update_bn(_bn_batches(model, data, recipe), input_of=lambda b: b.x)
        model.load_state_dict(swa.state_dict())
        chosen = f"SWA of {swa.n_averaged} epochs"
    elif settled is None and (out_dir / "best.pt").is_file():
        model.load_state_dict(torch.load(out_dir / "best.pt", map_location="cpu", weights_only=True))
    hop = hop_frames(recipe.hop_s, model.frontend.frame_rate_hz)
    calibration, val = {}, None
    if settled is not None:
        if recipe.calibrate:
            calibration = fold_temperatures(model, settled.pooled_windows())
        targets, per_head = settled.pooled_predictions()
    else:
        if recipe.calibrate or out_of_fold is not None:
            windows = sigmoid_windows(model, data.val, is_embedded(model), recipe.context_segments, hop)
            if out_of_fold is not None:  # this fold's model, before its own calibration
                out_of_fold.windows.append(windows)
            if recipe.calibrate:
                calibration = fold_temperatures(model, windows)
        val, per_head = validate(model, data, recipe)
        targets, _ = stack_targets(data.heads, data.val)
        if out_of_fold is not None:
            out_of_fold.add_fold(val, best.get("epoch"), targets, per_head)
    thresholds, silenced = _thresholds(data.heads, targets, per_head, recipe)
    provenance = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "data": data.description,
        "recipe": recipe.to_dict(),
        "weights": chosen,
        "best_epoch": best.get("epoch") if settled is None else None,
        "validation": val,
        "calibration": calibration,
        "never_active": silenced,
    }
    summary = settled.summary if settled is not None else None
    if summary is not None:
        provenance["cross_validation"] = summary
    external = ["encoder."] if is_embedded(model) else []
    # Heads the data did not supervise keep their thresholds at the engine's defaults.
    model_thresholds = {h: t for h, t in thresholds.items() if h in model.heads}
    save(model, out_dir, Artifact(model_name, overrides, external, model_thresholds, provenance))
    report = {"validation": val, "best_epoch": provenance["best_epoch"], "calibration": calibration}
    if summary is not None:
        report["cross_validation"] = summary
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    if log is not None and log.rows:
        plot_curves(log.rows, out_dir / "learning_curves.png")
    return val if summary is None else summary


def _thresholds(heads, targets, per_head, recipe) -> tuple[dict, dict]:
    """Per tag head: thresholds maximising F-beta on the given predictions, and the tags silenced."""
    thresholds, silenced = {}, {}
    for name, spec in heads.items():
        if spec.kind != "tags" or name not in targets or not len(targets[name]):
            continue
        y = _binarize(targets[name])
        t = metrics.fit_thresholds(y, per_head[name], beta=recipe.threshold_beta)
        if recipe.min_precision:
            # A tag that is wrong more often than min_precision allows, even at its best threshold,
            # never lights up: threshold 1.0 (a probability never exceeds it).
            decided = metrics.decisions(per_head[name], t)
            hits = (decided & (y > 0)).sum(axis=0)
            precision = np.where(decided.sum(axis=0) > 0, hits / np.maximum(decided.sum(axis=0), 1), 0.0)
            low = precision < recipe.min_precision
            t = np.where(low, 1.0, t)
            silenced[name] = [label for label, off in zip(spec.labels, low, strict=True) if off]
        thresholds[name] = [float(v) for v in t]
    return thresholds, silenced


def _binarize(y: np.ndarray) -> np.ndarray:
    return y if set(np.unique(y)) <= {0.0, 1.0} else (y >= y.mean(axis=0, keepdims=True)).astype(float)


def _bn_batches(model, data, recipe):
    rng = np.random.default_rng(recipe.seed)
    if is_embedded(model):
        return list(run_batches(data.train, recipe.context_segments, recipe.batch_size, rng, data.heads))
    return list(crop_batches(data.train, model.input_frames, recipe.batch_size, rng, data.heads))


def _loss(recipe: Recipe):
    """The recipe's loss over the supervised heads; with ``aux_weight`` the two-output loss for tags."""

    def loss_fn(heads, outputs, targets, masks):
        if recipe.aux_weight and "aux_segments" in outputs and "tags" in targets:
            rest = {k: v for k, v in targets.items() if k != "tags"}
            others = {k: v for k, v in heads.items() if k != "tags"}
            loss, parts = total_loss(others, outputs, rest, {k: v for k, v in masks.items() if k in rest},
                                     va_loss=recipe.va_loss) if rest else (0.0, {})  # fmt: skip
            tags_loss, tags_parts = two_output_loss(
                outputs, targets, aux_weight=recipe.aux_weight, masks=masks
            )
            return loss + tags_loss, {**parts, **tags_parts}
        return total_loss(heads, outputs, targets, masks, va_loss=recipe.va_loss)

    return loss_fn


def _augment(model: SegmentModel, recipe: Recipe, embedded: bool):
    if embedded:
        return None  # embedding runs are not spectrograms: no spectrogram augmentation
    transforms = []
    if recipe.gain_db:
        transforms.append(RandomGain.for_frontend(model.frontend, (-recipe.gain_db, recipe.gain_db)))
    if recipe.noise_std:
        transforms.append(GaussianNoise(recipe.noise_std))
    if recipe.specaugment:
        transforms.append(SpecAugment())
    if recipe.mixup_alpha:
        transforms.append(Mixup(recipe.mixup_alpha))
    return Compose(transforms) if transforms else None


def plot_curves(rows: list[dict], path: Path) -> None:
    """Training loss and validation score per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", title="training loss")
    scored = sorted(k for k in rows[-1] if k.startswith("val/"))
    for key in scored:
        ax2.plot(epochs, [r.get(key) for r in rows], marker=".", label=key[4:])
    ax2.set(xlabel="epoch", ylabel="validation", title="validation metrics" if scored else "no clip held out")
    if scored:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
