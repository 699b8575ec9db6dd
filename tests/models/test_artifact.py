"""Artifacts: config.json + safetensors rebuild the model; anything off is a clear error."""

from __future__ import annotations

import json

import pytest
import torch

import models
from models.artifact import Artifact, ArtifactError, load, resolve, save


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    overrides = {"tags": ["calm", "energetic", "sad"], "max_segments": 4}
    model = models.build("segment-attention", **overrides).eval()
    with torch.no_grad():  # stand-in for training: heads no longer at their initial values
        for p in model.outputs.parameters():
            p.add_(torch.randn_like(p))
    art = Artifact(
        model="segment-attention",
        overrides=overrides,
        external_prefixes=["encoder."],
        thresholds={"mood": [0.4, 0.5, 0.6]},
        provenance={"command": "python -m train fit ...", "date": "2026-11-21"},
    )
    return model, save(model, tmp_path / "art", art)


def test_round_trip_rebuilds_from_config_alone(trained):
    model, folder = trained
    config = json.loads((folder / "config.json").read_text())
    assert config["model"] == "segment-attention" and config["segment_frames"] == 187
    assert config["heads"]["mood"]["labels"] == ["calm", "energetic", "sad"]
    loaded, art = load(folder)
    assert art.thresholds["mood"] == [0.4, 0.5, 0.6] and art.provenance["date"] == "2026-11-21"
    x = torch.randn(2, 96, 187)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    # The frozen encoder is not stored: it comes from the musicnn weights.
    from safetensors.torch import load_file

    assert not any(k.startswith("encoder.") for k in load_file(str(folder / "weights.safetensors")))
    assert resolve(str(folder)).heads.keys() == model.heads.keys()
    # Readable as its config is (safetensors writes 0600: a service run as another user could not
    # load the weights it could list).
    modes = {name: (folder / name).stat().st_mode & 0o777 for name in ("config.json", "weights.safetensors")}
    assert modes["weights.safetensors"] == modes["config.json"], modes


def test_new_weights_leave_no_graph_of_the_old_ones_beside_them(trained):
    """A run saved into the folder of an earlier one (train fit's default --out, runs/latest)
    left that run's model.onnx, which then ran the old weights beside the new config."""
    model, folder = trained
    for name in ("model.onnx", "encoder.onnx", "pool_predict.onnx", "onnx.json"):
        (folder / name).write_bytes(b"the earlier weights' graph")
    save(model, folder, load(folder)[1])
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.safetensors"]


def test_bad_artifacts_are_clear_errors(trained, tmp_path):
    _, folder = trained
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "surprise": 1}))
    with pytest.raises(ArtifactError, match="unknown keys"):
        load(folder)
    (folder / "config.json").write_text(
        json.dumps({**config, "frontend": {**config["frontend"], "n_mels": 64}})
    )
    with pytest.raises(ArtifactError, match="frontend differs"):
        load(folder)
    (folder / "config.json").write_text(
        json.dumps({**config, "overrides": {"tags": ["a"], "max_segments": 4}})
    )
    with pytest.raises(ArtifactError, match="heads differ|does not fit"):
        load(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="cannot read"):
        load(folder)
    with pytest.raises(ArtifactError, match="not a model artifact"):
        resolve(str(tmp_path))
