"""Every registered model: builds, trains a step, exports to ONNX and matches ONNX Runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from models.export import example_input, export_onnx, export_streaming, session

REPO = Path(__file__).resolve().parents[2]
# Overrides that keep a model's structure but let the generic checks see every part train, or
# keep the heaviest ones within CI time (their own test files check the default size once).
OVERRIDES = {
    "segment-attention": {"freeze_encoder": False, "encoder_pretrained": False},
    "resnet34-attention": {"n_segments": 2},
    "deepspectrum-rnn": {"width": 1 / 16},
    **{name: {"width": 32, "segment_frames": 256} for name in ("cp-resnet", "fa-resnet", "shake-fa-resnet")},
}


def build(name: str) -> models.SegmentModel:
    overrides = OVERRIDES.get(name, {})
    if "pretrained" in models.entry(name).overrides():
        overrides = {**overrides, "pretrained": False}
    return models.build(name, **overrides)


@pytest.mark.parametrize("name", models.available())
def test_forward_gradients_and_one_training_step(name):
    torch.manual_seed(0)
    model = build(name).train()
    x = example_input(model, batch=2)
    out = model(x)
    for head, spec in model.heads.items():
        assert out[head].shape == (2, len(spec.labels)), head
    assert all(torch.isfinite(v).all() for v in out.values())
    loss = sum(v.float().pow(2).mean() for v in out.values())
    loss.backward()
    first = next(p for p in model.parameters() if p.requires_grad)
    assert first.grad is not None and first.grad.abs().sum() > 0, "no gradient reached the first layer"
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    optimizer.step()
    with torch.no_grad():
        after = sum(v.float().pow(2).mean() for v in model(x).values())
    assert not torch.isclose(after, loss.detach()), "one step did not change the loss"


@pytest.mark.parametrize("name", models.available())
def test_onnx_runtime_matches_pytorch(name, tmp_path):
    model = build(name).eval()
    names = export_onnx(model, tmp_path / "model.onnx")
    x = example_input(model, batch=3, seed=1)  # exported at batch 2: the batch axis is dynamic
    with torch.inference_mode():
        expected = model(x)
    got = session(tmp_path / "model.onnx").run(None, {"mel": x.numpy()})
    for n, g in zip(names, got, strict=True):
        np.testing.assert_allclose(g, expected[n].numpy(), atol=1e-4, rtol=0, err_msg=n)


@pytest.mark.parametrize("name", models.available())
def test_streaming_graphs_match_pytorch(name, tmp_path):
    """The engine's ONNX backend: encoder, then pooling + heads over K cached segments."""
    model = build(name).eval()
    encoder, head = export_streaming(model, tmp_path)
    patches = torch.randn(4, model.frontend.n_mels, model.segment_frames)
    with torch.inference_mode():
        embeddings = model.encode(patches)
        expected = model.predict(model.pool(embeddings.unsqueeze(0)))  # K = 4
    got_embeddings = session(encoder).run(None, {"mel": patches.numpy()})[0]
    np.testing.assert_allclose(got_embeddings, embeddings.numpy(), atol=1e-4, rtol=0)
    got = session(head).run(None, {"embeddings": embeddings.unsqueeze(0).numpy()})
    for n, g in zip(model.heads, got, strict=True):
        np.testing.assert_allclose(g, expected[n].numpy(), atol=1e-4, rtol=0, err_msg=n)


def test_musicnn_encoder_graph_pools_straight_off_the_convolutions(tmp_path):
    """The exported encoder is the folded one (see Musicnn.encode) and still the TF-order function."""
    import onnx

    model = models.build("musicnn-msd")
    encoder, _ = export_streaming(model, tmp_path)
    graph = onnx.load(str(encoder)).graph
    producer = {out: node for node in graph.node for out in node.output}
    pooled = [producer[n.input[0]].op_type for n in graph.node if n.op_type == "ReduceMax"]
    assert pooled.count("Conv") == len(model.front)
    patches = 4.0 * torch.rand(3, 96, model.segment_frames, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        layers = model.encode(patches, folded=False)
    got = session(encoder).run(None, {"mel": patches.numpy()})[0]
    np.testing.assert_allclose(got, layers.numpy(), atol=1e-4, rtol=1e-5)


def test_export_with_the_frontend_inside_takes_audio(tmp_path):
    model = models.build("musicnn-msd")
    out = tmp_path / "musicnn.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "models", "export", "musicnn-msd", str(out), "--with-frontend", "--check"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "input 'audio' (47616,)" in proc.stdout
    worst = float(proc.stdout.rsplit("difference", 1)[1])
    assert worst <= 1e-4
    sess = session(out)
    assert [i.name for i in sess.get_inputs()] == ["audio"] and sess.get_inputs()[0].shape[0] == "batch"
    del model


def test_models_list_shows_default_and_real_parameter_counts_without_converting_weights(tmp_path):
    cache = tmp_path / "cache"  # an empty weights cache: listing must not fill it
    proc = subprocess.run(
        [sys.executable, "-m", "models", "list", "--json", str(REPO / "models" / "default")],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MOODSTREAM_CACHE": str(cache)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert not cache.exists() or not any(cache.rglob("*.*")), list(cache.rglob("*"))
    listed = json.loads(proc.stdout)
    rows = {row["name"]: row for row in listed}
    assert listed[0]["name"] == "default" and set(rows) == {
        "default",
        str(REPO / "models" / "default"),
        *models.available(),
    }
    assert set(rows["default"]["heads"]) == {"mood", "gems", "valence_arousal", "tags"}
    assert rows["musicnn-msd"]["parameters"] == sum(
        p.numel() for p in models.build("musicnn-msd").parameters()
    )
    assert rows["musicnn-msd"]["input_shape"] == [96, 187] and rows["musicnn-msd"]["pretrained"] is True
    from models.__main__ import _table, show  # the same rows, as the table `python -m models list` prints

    table = _table(list(rows.values()))
    assert table.splitlines()[0].split()[:3] == ["name", "params", "input"]
    assert any(line.startswith("musicnn-msd") and "0.79M" in line for line in table.splitlines())
    assert table.splitlines()[1].startswith("default ")
    # `models show`: each head's vocabulary, and which tags can turn active.
    shown = show("default")
    assert "mood (tags, 100 tags, feed vocabulary: moods)" in shown
    assert "gems (tags, 9 tags, feed vocabulary: emotions)" in shown
    assert "tags (tags, 50 tags, feed vocabulary: descriptors)" in shown
    assert "can turn active (17): Angry >= 0.49" in shown and "never active" in shown
    assert "feed vocabulary: descriptors" in show("musicnn-msd") and "--on (0.3)" in show("musicnn-msd")


def test_export_errors_are_clear(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "models", "export", "nope", str(tmp_path / "x.onnx")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "available:" in proc.stderr
