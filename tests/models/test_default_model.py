"""The shipped default model: rebuilt from its config.json alone, outputs as stored, provenance filled."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

from models.artifact import DEFAULT, load
from realtime.analyzer import Analyzer, Windowing

EXPECTED = json.loads((Path(__file__).with_name("default_model_expected.json")).read_text())


def test_the_committed_artifact_gives_the_stored_outputs(shared_data):
    model, artifact = load(DEFAULT)
    audio, rate = sf.read(shared_data / EXPECTED["clip"], dtype="float32")
    analyzer = Analyzer(model, rate, Windowing(hop_s=EXPECTED["hop_s"], context_s=EXPECTED["context_s"]))
    windows = analyzer.feed(audio[:, None]) + analyzer.finish()
    for got, want in zip(windows, EXPECTED["windows"], strict=False):
        assert abs(got.t_stream - want["t_stream"]) < 1e-9
        for head in ("valence_arousal", "gems"):
            np.testing.assert_allclose(got.outputs[head], want[head], atol=1e-4)
    mean = np.mean([w.outputs["valence_arousal"] for w in windows], axis=0)
    np.testing.assert_allclose(mean, EXPECTED["clip_mean_valence_arousal"], atol=1e-4)
    assert mean[1] > 0  # a Q2 clip (high arousal): the model hears it as aroused


def test_provenance_comes_from_the_real_training_run():
    config = json.loads((DEFAULT / "config.json").read_text())
    prov = config["provenance"]
    assert prov["command"].startswith("python -m train fit --model segment-attention")
    # Cross-validated on five artist-disjoint folds, then fitted on every clip of both sets.
    assert "--folds 5" in prov["command"] and prov["validation"] is None
    assert set(prov["data"]) == {"4q", "emotify"} and prov["data"]["4q"]["train"] == 737
    assert prov["data"]["emotify"]["train"] == 400
    cv = prov["cross_validation"]
    assert cv["folds"] == 5 and len(cv["per_fold"]) == 5 and cv["epochs"] == int(np.median(cv["best_epochs"]))
    assert cv["validation"]["valence_arousal/arousal_balanced_accuracy"]["mean"] > 0.85
    assert prov["weights"] == f"last epoch ({cv['epochs']}) of a fit on every clip"
    assert prov["date"].startswith("20") and config["external_prefixes"] == ["encoder."]
    assert set(config["thresholds"]) == {"mood", "gems"}
    # Temperatures fitted on the folds' out-of-fold windows (every clip held out once), folded into
    # the heads, with the calibration error.
    calibration = prov["calibration"]
    assert set(calibration) == {"mood", "gems", "valence_arousal"}
    assert all(0.0 <= c["ece_after"] < 0.05 and c["windows"] > 7000 for c in calibration.values())
    assert prov["recipe"]["threshold_beta"] == 0.5 and "--set threshold_beta=0.5" in prov["command"]
    # Tags unreliable on validation never turn active: threshold 1.0, named in the provenance.
    never = prov["never_active"]["mood"]
    assert 0 < len(never) < 100 and not prov["never_active"]["gems"]
    labels = config["heads"]["mood"]["labels"]
    assert all(
        (t == 1.0) == (label in never) for label, t in zip(labels, config["thresholds"]["mood"], strict=True)
    )
