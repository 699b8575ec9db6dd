"""attention-cnn: genre and valence mood from 128×128 mel slices, with attention pooling (Li, KTH)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models import attention_cnn  # noqa: F401  (registers attention-cnn)
from models.attention_cnn import AttentionPool


def test_builds_with_the_papers_shapes():
    model = models.build("attention-cnn")
    assert model.pretrained is False
    fe = model.frontend
    assert (fe.sample_rate_hz, fe.n_mels, fe.hop_length) == (22050, 128, 512)
    assert model.input_shape == (128, 128) and abs(model.segment_seconds - 2.97) < 0.01
    assert model.heads["genre"].kind == "classes" and model.heads["genre"].labels == (
        "blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock",
    )  # fmt: skip
    assert model.heads["valence_class"].labels == ("sad", "neutral", "happy")
    assert [b.conv.out_channels for b in model.blocks] == [64, 128, 256, 512]
    assert all(b.conv.kernel_size == (2, 2) for b in model.blocks)
    assert model.embedding_dim == 1536
    assert sum(p.numel() for p in model.parameters()) == 711758
    assert next(model.named_parameters())[0] == "blocks.0.conv.weight"
    assert model.receptive_field() == {"frequency": 31, "time": 31}


def test_forward_gradients_and_a_training_step():
    torch.manual_seed(0)
    model = models.build("attention-cnn").train()
    x = torch.randn(4, 128, 128) * 20 - 40
    out = model(x)
    assert out["genre"].shape == (4, 10) and out["valence_class"].shape == (4, 3)
    assert all(torch.isfinite(v).all() for v in out.values())
    genre, mood = torch.tensor([0, 3, 5, 9]), torch.tensor([0, 1, 2, 1])
    ce = torch.nn.functional.cross_entropy
    loss = ce(out["genre"], genre) + ce(out["valence_class"], mood)
    loss.backward()
    first = model.blocks[0].conv.weight
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert model.attention.score.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.05).step()
    out = model(x)
    assert not torch.isclose(ce(out["genre"], genre) + ce(out["valence_class"], mood), loss.detach())


def test_attention_is_a_softmax_weighted_sum_over_positions():
    pool = AttentionPool(4)
    maps = torch.randn(2, 4, 7)
    with torch.no_grad():
        pool.score.weight.zero_()
        pool.score.bias.zero_()
        assert torch.allclose(pool(maps), maps.mean(dim=2), atol=1e-6)  # equal scores: the mean
        pool.score.weight.copy_(torch.tensor([[50.0, 0, 0, 0]]))  # channel 0 picks its max
        picked = maps[torch.arange(2), :, maps[:, 0].argmax(dim=1)]
        assert torch.allclose(pool(maps), picked, atol=1e-4)
        lo, hi = maps.amin(dim=2), maps.amax(dim=2)
        assert ((pool(maps) >= lo - 1e-5) & (pool(maps) <= hi + 1e-5)).all()


def test_any_length_from_31_frames_and_clear_errors():
    model = models.build("attention-cnn").eval()
    with torch.inference_mode():
        for frames in (31, 130, 300):
            assert model.encode(torch.randn(1, 128, frames)).shape == (1, 1536)
    assert models.build("attention-cnn", segment_frames=130).input_shape == (128, 130)
    with pytest.raises(ValueError, match=">= 31 for 4 blocks"):
        models.build("attention-cnn", segment_frames=30)
    with pytest.raises(ValueError, match="channels must be positive integers"):
        models.build("attention-cnn", channels=(64, 0))
    assert models.build("attention-cnn", channels=(8, 16)).embedding_dim == 48


def test_onnx_matches_pytorch_at_another_batch_size(tmp_path):
    import onnxruntime as ort

    model = models.build("attention-cnn").eval()
    path = tmp_path / "attention.onnx"
    torch.onnx.export(
        model, (torch.randn(2, 128, 128),), str(path), input_names=["mel"], output_names=["genre", "valence_class"],
        dynamic_axes={"mel": {0: "batch"}, "genre": {0: "batch"}, "valence_class": {0: "batch"}},
        opset_version=17, dynamo=False,
    )  # fmt: skip
    x = torch.randn(3, 128, 128, generator=torch.Generator().manual_seed(1)) * 20 - 40
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"mel": x.numpy()})
    with torch.inference_mode():
        expected = model(x)
    for name, g in zip(("genre", "valence_class"), got, strict=True):
        np.testing.assert_allclose(g, expected[name].numpy(), atol=1e-4, rtol=0, err_msg=name)
