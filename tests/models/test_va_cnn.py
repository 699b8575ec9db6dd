"""va-cnn: the one-convolution valence/arousal regressor (Stoltenberg, Tran & Zoller 2019)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models import va_cnn  # noqa: F401  (registers va-cnn)
from models.base import probabilities


def test_builds_with_the_papers_shapes():
    model = models.build("va-cnn")
    assert model.pretrained is False
    fe = model.frontend
    assert (fe.sample_rate_hz, fe.n_mels, fe.n_fft, fe.hop_length, fe.scaling) == (16000, 80, 2048, 512, "db")
    assert model.input_shape == (80, 469) and abs(model.segment_seconds - 15.0) < 0.01
    assert model.heads["valence_arousal"].kind == "valence_arousal"
    assert model.conv.out_channels == 16 and model.conv.kernel_size == (3, 3)
    assert model.maxpool.kernel_size == 3 and model.dense.out_features == 8
    assert model.dense.in_features == 16 * 26 * 155 and model.dropout.p == 0.2
    assert sum(p.numel() for p in model.parameters()) == 516042
    assert next(model.named_parameters())[0] == "conv.weight"
    assert model.receptive_field() == {"frequency": 5, "time": 5}


def test_forward_gradients_and_a_training_step():
    torch.manual_seed(0)
    model = models.build("va-cnn").train()
    x = torch.randn(4, 80, 469) * 20 - 40
    target = torch.rand(4, 2)
    out = model(x)["valence_arousal"]
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    assert model.encode(x).shape == (4, 8)
    loss = torch.nn.functional.mse_loss(torch.sigmoid(out), target)
    loss.backward()
    assert model.conv.weight.grad is not None and model.conv.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    after = torch.nn.functional.mse_loss(torch.sigmoid(model(x)["valence_arousal"]), target)
    assert not torch.isclose(after, loss.detach())


def test_published_values_are_in_minus_one_to_one():
    model = models.build("va-cnn").eval()
    with torch.inference_mode():
        logits = model(torch.randn(3, 80, 469) * 30)["valence_arousal"]
    values = probabilities(model.heads["valence_arousal"], logits)
    assert ((values > -1) & (values < 1)).all()


def test_wrong_length_and_bad_overrides_are_clear_errors():
    model = models.build("va-cnn")
    with pytest.raises(ValueError, match=r"takes \(batch, 80, 469\)"):
        model(torch.randn(1, 80, 400))
    with pytest.raises(ValueError, match="dropout must be in"):
        models.build("va-cnn", dropout=1.5)
    with pytest.raises(ValueError, match="filters must be a positive integer"):
        models.build("va-cnn", filters=0)
    assert models.build("va-cnn", units=4).embedding_dim == 4


def test_onnx_matches_pytorch_at_another_batch_size(tmp_path):
    import onnxruntime as ort

    model = models.build("va-cnn").eval()
    path = tmp_path / "va.onnx"
    torch.onnx.export(
        model, (torch.randn(2, 80, 469),), str(path), input_names=["mel"], output_names=["valence_arousal"],
        dynamic_axes={"mel": {0: "batch"}, "valence_arousal": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    x = torch.randn(5, 80, 469, generator=torch.Generator().manual_seed(1)) * 20 - 40
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"mel": x.numpy()})
    with torch.inference_mode():
        expected = model(x)["valence_arousal"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
