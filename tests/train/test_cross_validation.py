"""``fit --folds K``: cross-validation, then the shipped fit on every clip (its own module, so
that it runs beside test_fit's long shared fit rather than after it)."""

from __future__ import annotations

import json

import numpy as np
import torch

import models
from models.base import HeadSpec
from tests.train.test_fit import VA_HEADS, refused
from train.fit import Data, cross_validate
from train.loop import Example
from train.recipes import Recipe


def test_cross_validation_scores_every_fold_then_fits_every_clip(tmp_path):
    """fit --folds K: K fits each validated on the fold it holds out, then the shipped model on
    every clip for the folds' median best epoch, calibrated and thresholded on what the folds'
    models said about the clips they held out (the final model holds nothing out)."""
    rng = np.random.default_rng(0)
    heads = {"valence_arousal": VA_HEADS["valence_arousal"], "mood": HeadSpec("tags", ("up", "down"))}
    examples = []
    for i in range(36):  # window embeddings whose first two dimensions carry valence and arousal
        va = np.array([i % 2, (i // 2) % 2], np.float32)
        data = rng.standard_normal((4, 200)).astype(np.float32)
        data[:, :2] += 3.0 * (2 * va - 1)
        examples.append(
            Example(str(i), str(i), data, {"valence_arousal": va, "mood": np.array([va[1], 1 - va[1]])})
        )
    folds = [Data([e for j, e in enumerate(examples) if j % 3 != i], examples[i::3], heads) for i in range(3)]
    recipe = Recipe(lr=1e-2, batch_size=4, epochs=12, context_segments=1, patience=4, va_loss="bce",
                    threshold_beta=0.5)  # fmt: skip

    overrides = {"max_segments": 1, "valence_arousal": True, "tag_heads": {"mood": ["up", "down"]}}

    def build():
        torch.manual_seed(0)
        return models.build("segment-attention", **overrides)

    out = tmp_path / "cv"
    summary = cross_validate(
        build, "segment-attention", overrides, folds, Data(examples, [], heads), recipe, out, quiet=True
    )
    assert summary["folds"] == 3 and len(summary["per_fold"]) == 3
    for i, fold in enumerate(summary["per_fold"], start=1):  # each fold's own artifact and metrics
        config = json.loads((out / "folds" / str(i) / "config.json").read_text())
        assert config["provenance"]["validation"] == fold
    best = summary["best_epochs"]
    assert summary["epochs"] == int(np.median(best)) and all(1 <= b <= 12 for b in best)
    quadrants = summary["validation"]["valence_arousal/quadrant_accuracy"]
    assert quadrants["min"] <= quadrants["mean"] <= quadrants["max"]
    assert quadrants["mean"] > 0.6, quadrants  # chance is 0.25
    # The final fit: every clip, the chosen epochs run out, nothing validated.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, summary["epochs"] + 1))
    assert not any(k.startswith("val/") for r in rows for k in r)
    provenance = json.loads((out / "config.json").read_text())["provenance"]
    assert provenance["validation"] is None and provenance["cross_validation"] == summary
    assert provenance["weights"].startswith("last epoch")
    # Temperatures from the out-of-fold windows of all 36 clips (4 windows each), not of one fold.
    assert provenance["calibration"]["valence_arousal"]["windows"] == 36 * 4
    model, artifact = models.artifact.load(out)
    assert len(artifact.thresholds["mood"]) == 2 and all(0 < t <= 1 for t in artifact.thresholds["mood"])
    with torch.no_grad():  # it learned the rule from every clip
        z = model.predict(model.pool(torch.from_numpy(np.stack([e.data for e in examples]))))[
            "valence_arousal"
        ]
    truth = np.stack([e.targets["valence_arousal"] for e in examples])
    assert ((z.numpy() > 0) == (truth > 0.5)).mean() > 0.8


def test_cross_validation_refuses_what_it_cannot_do(capsys, shared_data):
    base = ["fit", "--model", "segment-attention", "--dataset", "4q", "--data", str(shared_data / "4q")]
    assert "--folds takes K >= 2" in refused(capsys, *base, "--folds", "1")
    assert "without --fold" in refused(capsys, *base, "--folds", "3", "--fold", "1/3")
    assert "without --fold or --resume" in refused(capsys, *base, "--folds", "3", "--resume")
    jamendo = [
        "fit",
        "--model",
        "segment-attention",
        "--dataset",
        "jamendo",
        "--data",
        str(shared_data / "jamendo"),
    ]
    assert "official splits" in refused(capsys, *jamendo, "--folds", "5")
