"""``python -m train fit`` on real data, and what the loop promises: resume, divergence, DDP, freezing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models.base import HeadSpec
from train.fit import Data, fit
from train.loop import Example
from train.recipes import Recipe

REPO = Path(__file__).resolve().parents[2]
# The module's first test also pays for the shared fit (mels and embeddings of 120 clips): its
# subprocess may take run()'s 900 s on a busy machine, more than the suite's default 300 s.
pytestmark = pytest.mark.timeout(900)


def run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "train", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def refused(capsys, *args: str) -> str:
    """``python -m train ARGS`` run in this process (no torch start-up to pay) for an argument it
    refuses: exit 2; returns what it printed on stderr."""
    from train.__main__ import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        code = main(list(args))
        raise SystemExit(code)
    assert exit_.value.code == 2, capsys.readouterr().err[-2000:]
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(shared_data, tmp_path_factory):
    """segment-attention over frozen musicnn, trained on 60 4Q clips, validated on 60 clips of other artists."""
    root = tmp_path_factory.mktemp("fit")
    out, cache = root / "artifact", root / "cache"
    proc = run(
        "fit", "--model", "segment-attention", "--dataset", "4q", "--data", str(shared_data / "4q"),
        "--limit", "60", "--epochs", "25", "--set", "patience=0", "--out", str(out), "--cache", str(cache), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cache, json.loads(proc.stdout)


def test_fit_learns_arousal_for_artists_it_never_heard(trained):
    out, _, result = trained
    val = result["validation"]
    # Chance is 0.5; musicnn embeddings carry arousal well even from 60 clips.
    assert val["valence_arousal/arousal_balanced_accuracy"] > 0.7, val
    assert val["score"] > 0.3
    for name in ("config.json", "weights.safetensors", "metrics.jsonl", "metrics.csv", "learning_curves.png"):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    provenance = config["provenance"]
    assert provenance["command"].startswith("python -m train fit --model segment-attention")
    assert provenance["data"]["4q"]["validation"] == 60 and provenance["validation"] == val
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 26))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]


def test_artifact_runs_in_analyze_and_evaluate_and_exports(trained, shared_data):
    out, cache, _ = trained
    clip = shared_data / "4q" / "audio" / "Q2" / "MT0000011357.ogg"
    proc = subprocess.run(
        [sys.executable, "-m", "realtime.analyze", str(clip), "--model", str(out), "--json", "--hop", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines and all(-1 <= ln["valence"] <= 1 and -1 <= ln["arousal"] <= 1 for ln in lines)
    assert "Gloomy" in lines[0]["tags"] and "rock" in lines[0]["tags"]  # 4Q moods and the MSD tags
    proc = run(
        "evaluate", str(out), "--dataset", "4q", "--data", str(shared_data / "4q"), "--split", "validation",
        "--limit", "10", "--cache", str(cache), "--quiet",  # a few clips: it runs and reports (fit scored all 60)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "valence_arousal/arousal_balanced_accuracy" in proc.stdout
    proc = run("export", str(out))
    assert proc.returncode == 0 and (out / "model.onnx").is_file(), proc.stderr


def test_resume_and_divergence_keep_the_last_good_checkpoint(trained, shared_data, tmp_path):
    out, cache, _ = trained
    work = tmp_path / "run"
    shutil.copytree(out, work)
    before = (work / "checkpoint.pt").read_bytes()
    args = ["fit", "--model", "segment-attention", "--dataset", "4q", "--data", str(shared_data / "4q"),
            "--limit", "60", "--out", str(work), "--cache", str(cache), "--quiet", "--resume"]  # fmt: skip
    proc = run(*args, "--epochs", "27", "--set", "lr=inf")  # the first step already blows up
    assert proc.returncode == 3 and ("loss became" in proc.stderr or "became NaN or infinite" in proc.stderr)
    assert "last good checkpoint" in proc.stderr
    # The diverged epoch 26 never overwrote the good epoch-25 state.
    assert (work / "checkpoint.pt").read_bytes() == before
    kept = torch.load(work / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert kept["epoch"] + 1 == 25
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())
    proc = run(*args, "--epochs", "27")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 28))


def quadrant_examples(n: int, shape: tuple[int, int]) -> list[Example]:
    """``n`` random inputs of ``shape`` (mels or window embeddings), valence/arousal cycling
    through the four quadrants."""
    rng = np.random.default_rng(0)
    return [
        Example(str(i), str(i), rng.standard_normal(shape).astype(np.float32),
                {"valence_arousal": np.array([i % 2, (i // 2) % 2], np.float32)})
        for i in range(n)
    ]  # fmt: skip


VA_HEADS = {"valence_arousal": HeadSpec("valence_arousal", ("valence", "arousal"))}


def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(tmp_path):
    """--resume restores every random state the loop draws from (batch order, window choice,
    dropout) and the early-stopping count: it used to restart the batch order from the seed."""
    examples = quadrant_examples(24, (6, 200))
    data = Data(examples[:16], examples[16:], VA_HEADS)

    def run_to(epochs: int, out: Path, resume: bool = False, patience: int = 0) -> dict:
        torch.manual_seed(1)
        model = models.build("segment-attention", encoder="musicnn-msd", max_segments=2)  # frozen: embeddings
        recipe = Recipe(lr=3e-3, batch_size=4, epochs=epochs, context_segments=2, patience=patience,
                        va_loss="bce", calibrate=False)  # fmt: skip
        fit(model, "segment-attention", {}, data, recipe, out, resume=resume, quiet=True)
        return torch.load(out / "checkpoint.pt", weights_only=True)

    def rows(out: Path) -> list[str]:
        return (out / "metrics.jsonl").read_text().splitlines()

    whole = run_to(8, tmp_path / "whole")
    run_to(3, tmp_path / "parts")
    resumed = run_to(8, tmp_path / "parts", resume=True)
    for name, value in whole["model"].items():
        assert torch.equal(resumed["model"][name], value), name
    assert rows(tmp_path / "whole") == rows(tmp_path / "parts")
    # Early stopping counts the epochs before the interruption too, and a run that had already
    # stopped early resumes to nothing.
    run_to(8, tmp_path / "stopped", patience=3)
    stopped_at = len(rows(tmp_path / "stopped"))
    assert stopped_at < 8
    run_to(2, tmp_path / "early")
    assert run_to(8, tmp_path / "early", resume=True, patience=3)["epoch"] + 1 == stopped_at
    run_to(8, tmp_path / "early", resume=True, patience=3)
    assert rows(tmp_path / "early") == rows(tmp_path / "stopped")


def test_two_processes_with_torchrun_gloo(trained, shared_data, tmp_path):
    _, cache, _ = trained
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29631", "-m", "train", "fit",
         "--model", "segment-attention", "--dataset", "4q", "--data", str(shared_data / "4q"), "--limit", "60",
         "--epochs", "2", "--out", str(tmp_path / "ddp"), "--cache", str(cache), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert models.artifact.load(tmp_path / "ddp")[0] is not None


def synthetic(n: int, frames: int, n_mels: int, seed: int) -> list[Example]:
    """Random mels whose tag is whether the upper half of the spectrum is louder (a learnable rule)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        mel = rng.standard_normal((n_mels, frames)).astype(np.float32)
        label = float(i % 2)
        mel[n_mels // 2 :] += 2.0 * label
        out.append(Example(str(i), str(i), mel, {"tags": np.full(56, label, np.float32)}))
    return out


def test_frozen_then_unfrozen_encoder_and_early_stopping(tmp_path):
    torch.manual_seed(0)
    model = models.build("crnn-gru")
    first = model.features[0].weight.detach().clone()
    data = Data(synthetic(8, 192, 64, 0), synthetic(4, 192, 64, 1), {"tags": model.heads["tags"]})
    recipe = Recipe(optimizer="rmsprop", lr=1e-3, batch_size=4, epochs=1, encoder_frozen_epochs=1)
    fit(model, "crnn-gru", {}, data, recipe, tmp_path / "a", quiet=True)
    assert torch.equal(model.features[0].weight, first), "the encoder trained while frozen"
    dense_before = model.dense.weight.detach().clone()
    recipe = Recipe(optimizer="rmsprop", lr=1e-3, batch_size=4, epochs=3, encoder_frozen_epochs=1)
    model2 = models.build("crnn-gru")
    model2.load_state_dict({**model.state_dict()})
    fit(model2, "crnn-gru", {}, data, recipe, tmp_path / "b", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert not torch.equal(model2.dense.weight, dense_before)
    # Early stopping: with lr 0 nothing improves after the first epoch.
    model3 = models.build("va-cnn")
    ex = quadrant_examples(8, (80, 469))
    recipe = Recipe(lr=0.0, batch_size=4, epochs=20, patience=2, va_loss="bce")
    fit(model3, "va-cnn", {}, Data(ex, ex, VA_HEADS), recipe, tmp_path / "c", quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3  # epoch 1 is the best; two epochs without improvement stop it


def test_a_fine_tuned_pretrained_encoder_is_held_for_encoder_frozen_epochs(tmp_path):
    """segment-attention over unfrozen musicnn: the recipe's encoder_frozen_epochs hold the
    pretrained encoder first (they were ignored: the model named no pretrained parameters)."""
    examples = quadrant_examples(8, (96, 187))
    data = Data(examples[:6], examples[6:], VA_HEADS)

    def tuned(epochs: int):
        torch.manual_seed(0)
        model = models.build("segment-attention", encoder="musicnn-msd", freeze_encoder=False, max_segments=1)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        recipe = Recipe(
            lr=1e-3, batch_size=3, epochs=epochs, encoder_frozen_epochs=1, va_loss="bce", calibrate=False
        )
        fit(model, "segment-attention", {}, data, recipe, tmp_path / str(epochs), quiet=True)
        # The last epoch's weights (fit itself ends on the best epoch's).
        last = torch.load(tmp_path / str(epochs) / "checkpoint.pt", weights_only=True)["model"]
        moved = {n for n in before if not torch.equal(last[n], before[n])}
        return {n for n in moved if n.startswith("encoder.")}, moved

    encoder_moved, moved = tuned(1)
    assert moved and not encoder_moved, f"the encoder trained while held: {sorted(encoder_moved)[:3]}"
    encoder_moved, _ = tuned(2)
    assert encoder_moved, "the encoder never trained after its frozen epochs"
    frozen = models.build("segment-attention", encoder="musicnn-msd")  # the default: frozen for good
    assert not getattr(frozen, "pretrained_prefixes", ())  # so encoder_frozen_epochs cannot unfreeze it


def test_a_regression_loss_on_binary_valence_arousal_is_refused():
    """mse/ccc compare 2p - 1 with the targets: 4Q's 0/1 halves would teach the model to publish 0.5."""
    from train.fit import check_va_loss

    binary = [Example("a", "a", np.zeros((3, 4), np.float32), {"valence_arousal": np.array([0.0, 1.0])})]
    data = Data(binary, binary, VA_HEADS)
    for loss in ("mse", "ccc", "mse+ccc"):
        with pytest.raises(ValueError, match="va_loss=bce"):
            check_va_loss(data, Recipe(va_loss=loss))
    check_va_loss(data, Recipe(va_loss="bce"))
    continuous = [Example("a", "a", np.zeros((3, 4), np.float32), {"valence_arousal": np.array([-0.4, 0.7])})]
    check_va_loss(Data(continuous, continuous, VA_HEADS), Recipe(va_loss="mse"))


def probe_data(shared_data: Path, cache: Path) -> list[str]:
    """The 60 + 60 4Q clips of the ``trained`` fixture, whose cache holds their embeddings."""
    return [
        "--dataset",
        "4q",
        "--data",
        str(shared_data / "4q"),
        "--limit",
        "60",
        "--cache",
        str(cache),
        "--quiet",
    ]


def test_probe_concatenates_encoders_and_their_tag_logits(trained, shared_data, capsys):
    _, cache, _ = trained  # holds musicnn-msd's window embeddings of the same 60 + 60 clips
    data = probe_data(shared_data, cache)
    one = run("probe", *data)
    # A second encoder's embeddings are computed here: on 10 + 10 of the clips (a subset), so the
    # test pays for 20 clips' worth, not 120 (the accuracy is checked on the 60 above).
    few = [a if a != "60" else "10" for a in data]
    both = run("probe", *few, "--encoder", "musicnn-msd,musicnn-mtt", "--features", "embedding,tags")
    for proc, width, clips in ((one, 200, 60), (both, 2 * (200 + 50), 10)):
        assert proc.returncode == 0, proc.stderr[-3000:]
        val = json.loads(proc.stdout)["validation"]
        assert val["features_per_window"] == width and val["clips_validation"] == clips
    assert json.loads(one.stdout)["validation"]["arousal_balanced_accuracy"] > 0.7  # chance is 0.5
    assert "embedding + tags of musicnn-msd + musicnn-mtt" in json.loads(both.stdout)["probe"]
    assert "--features takes embedding, tags" in refused(capsys, "probe", *data, "--features", "pooled")
    assert "different frontends" in refused(capsys, "probe", *data, "--encoder", "musicnn-msd,va-cnn")


def test_probe_cross_validates_over_artist_disjoint_folds(trained, shared_data, capsys):
    _, cache, _ = trained
    data = probe_data(shared_data, cache)
    proc = run("probe", *data, "--folds", "3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    folds, summary = out["folds"], out["cross_validation"]
    assert len(folds) == 3
    assert sum(f["clips_validation"] for f in folds) == 120  # every clip held out exactly once
    assert all(f["clips_train"] + f["clips_validation"] == 120 for f in folds)
    # (Folds never share an artist: datasets.k_fold, tested in test_datasets.)
    quadrant = [f["quadrant_accuracy"] for f in folds]
    assert summary["quadrant_accuracy"]["mean"] == pytest.approx(np.mean(quadrant))
    assert summary["quadrant_accuracy"]["min"] == min(quadrant)
    assert summary["arousal_balanced_accuracy"]["mean"] > 0.7  # chance is 0.5
    assert [f["fold"] for f in folds] == ["1/3", "2/3", "3/3"]
    for bad in ("1", "-2"):
        assert "--folds takes 0" in refused(capsys, "probe", *data, "--folds", bad)
    few = [a if a != "60" else "3" for a in data]  # 6 clips cannot fill 5 folds
    assert "leave a fold empty" in refused(capsys, "probe", *few, "--folds", "5")


def test_fold_option_holds_out_one_fold_of_k(shared_data, capsys):
    """--fold I/K (fit, evaluate, probe) validates on the I-th of K artist-disjoint folds: the
    clips that fold I of ``probe --folds K`` holds out."""
    import argparse

    from train import datasets
    from train.__main__ import split_name, two_parts

    fourq = datasets.load_4q(shared_data / "4q")
    args = argparse.Namespace(fold=(2, 5), split_seed=0, val_fraction=0.2)
    train, val = two_parts(fourq, args)
    assert [t.key for t in val.tracks] == [t.key for t in fourq.k_fold(5, seed=0)[1][1].tracks]
    assert len(train) + len(val) == len(fourq)
    assert not {t.group for t in train.tracks} & {t.group for t in val.tracks}  # no artist in both
    assert split_name(args) == "grouped, fold 2 of 5, seed 0"
    args.fold = None
    assert [t.key for t in two_parts(fourq, args)[1].tracks] == [
        t.key for t in fourq.split((0.8, 0.2), seed=0)[1].tracks
    ]
    for bad in ("0/5", "6/5", "1/1", "2", "a/b"):
        assert "takes I/K" in refused(
            capsys, "probe", "--dataset", "4q", "--data", str(shared_data / "4q"), "--fold", bad
        )
