"""resnet34-attention: the contract, both training paths, pooling over K segments, ONNX parity."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

import models
import models.resnet34_attention  # noqa: F401  (registers resnet34-attention)
from models.resnet34_attention import mean_probability_logit
from models.vocab import JAMENDO_MOODTHEME

NAME = "resnet34-attention"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return models.build(NAME)


@pytest.fixture(scope="module")
def default_run(model):
    """One example through the default model (16 ResNet-34 passes), shared by the tests that need it."""
    x = _mel(1, 96, 4096, seed=1)
    with torch.inference_mode():
        return x, model(x)


@pytest.fixture(scope="module")
def small():
    """Two segments instead of 16: the same network at an eighth of the cost, for training tests."""
    torch.manual_seed(1)
    return models.build(NAME, n_segments=2)


def _mel(*shape: int, seed: int = 0) -> torch.Tensor:
    # dB-like values: the model reads unnormalised Essentia-style mels
    return -40.0 + 20.0 * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_declares_the_paper_setup(model):
    assert NAME in models.available()
    fe = model.frontend  # the MTG-Jamendo mels (Essentia's normalisation details may be refined)
    assert (fe.sample_rate_hz, fe.n_fft, fe.hop_length, fe.n_mels) == (12000, 512, 256, 96)
    assert (fe.f_min_hz, fe.f_max_hz, fe.scaling) == (0.0, 6000.0, "db")
    assert model.segment_frames == 256 and model.input_frames == 4096 and model.input_shape == (96, 4096)
    assert model.heads == {"tags": models.HeadSpec("tags", JAMENDO_MOODTHEME)}
    assert len(model.heads["tags"].labels) == 56 and model.embedding_dim == 256
    assert model.pretrained is False and not model.training
    assert model.receptive_field() == {"frequency": 96, "time": 256}  # the whole segment


def test_parameter_count(model):
    # The backbone is exactly torchvision's resnet34 without fc (21,797,672 - 513,000).
    assert sum(p.numel() for p in model.resnet.parameters()) == 21_284_672
    assert sum(p.numel() for p in model.parameters()) == 23_155_943


def test_overrides_are_validated():
    m = models.build(
        NAME, tags=("calm", "dark"), n_segments=3, embedding_dim=64, attention_heads=2, attention_layers=1
    )
    assert m.input_frames == 768 and len(m.attention) == 1 and m.embedding_dim == 64
    assert m(_mel(1, 96, 768))["tags"].shape == (1, 2)
    with pytest.raises(ValueError, match="multiple of attention_heads"):
        models.build(NAME, embedding_dim=250, attention_heads=4)
    with pytest.raises(ValueError, match="n_segments"):
        models.build(NAME, n_segments=0)
    with pytest.raises(ValueError, match="distinct"):
        models.build(NAME, tags=("calm", "calm"))
    with pytest.raises(ValueError, match=r"allowed: tags=.*n_segments=16"):
        models.build(NAME, depth=50)
    with pytest.raises(ValueError, match=r"expected input \(batch, 96, 768\)"):
        m(_mel(1, 96, 256))


def test_forward_gives_both_paths_and_equals_the_streaming_path(model, default_run):
    x, out = default_run
    with torch.inference_mode():
        assert set(out) == {"tags", "aux_segments"}
        assert all(v.shape == (1, 56) and torch.isfinite(v).all() for v in out.values())
        # What the engine does: encode each 256-frame segment once, then pool the cached ones.
        embeddings = torch.stack([model.encode(s) for s in x.split(256, dim=2)], dim=1)  # (1, 16, 256)
        torch.testing.assert_close(model.predict(model.pool(embeddings))["tags"], out["tags"])
        # The auxiliary path is the mean over segments of each segment's probabilities.
        per_segment = torch.sigmoid(model.segment_classifier(embeddings)).mean(dim=1)
        torch.testing.assert_close(torch.sigmoid(out["aux_segments"]), per_segment)


def test_pool_takes_any_k(model):
    embeddings = torch.rand(2, 20, model.embedding_dim, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        for k in range(1, 17):
            pooled = model.pool(embeddings[:, -k:])
            assert pooled.shape == (2, model.embedding_dim) and torch.isfinite(pooled).all(), k
            assert model.predict(pooled)["tags"].shape == (2, 56)
        # Beyond the context only the newest 16 count.
        torch.testing.assert_close(model.pool(embeddings), model.pool(embeddings[:, -16:]))
        # Positions matter: the same embeddings in another order pool differently.
        assert not torch.allclose(
            model.pool(embeddings[:, -16:]), model.pool(embeddings[:, -16:].roll(1, dims=1))
        )


def test_aux_logit_never_saturates():
    logits = torch.tensor([[[60.0, -60.0, 200.0, -200.0]], [[60.0, -60.0, 200.0, 200.0]]])  # (2, 1, 4)
    torch.testing.assert_close(
        mean_probability_logit(logits, dim=0), torch.tensor([[60.0, -60.0, 200.0, 0.0]])
    )


def test_gradients_reach_the_first_layer(small):
    small.train()
    small.zero_grad()
    out = small(_mel(2, 96, 512))
    sum(v.sum() for v in out.values()).backward()
    first = next(small.parameters())
    assert first is small.to_rgb[0].weight  # the input batch norm, before the two 1x1 convolutions
    assert first.grad is not None and first.grad.abs().sum() > 0
    small.eval()


def test_one_training_step_lowers_the_loss(small):
    small.train()
    x = _mel(2, 96, 512, seed=3)
    target = (torch.rand(2, 56, generator=torch.Generator().manual_seed(4)) < 0.2).float()
    bce = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.SGD(small.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(5)  # the same dropout masks before and after the step
        out = small(x)
        return bce(out["tags"], target) + bce(out["aux_segments"], target)  # both paths, as the paper

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    small.eval()
    assert after.item() < before.item()


def _export(module: nn.Module, example: torch.Tensor, path, inputs: list[str], outputs: list[str], dynamic):
    module.eval()  # the exporter restores the training flag: keep everything in eval
    torch.onnx.export(
        module,
        (example,),
        str(path),
        input_names=inputs,
        output_names=outputs,
        opset_version=17,
        dynamo=False,
        dynamic_axes={**{n: {0: "batch"} for n in inputs + outputs}, **dynamic},
    )
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class _Forward(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        return out["tags"], out["aux_segments"]


class _PoolPredict(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, embeddings):
        return self.model.predict(self.model.pool(embeddings))["tags"]


def _check(session, x, expected: tuple[torch.Tensor, ...]):
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    for e, g in zip(expected, got, strict=True):
        assert g.shape == tuple(e.shape)
        np.testing.assert_allclose(g, e.numpy(), atol=1e-4, rtol=0)


def test_onnx_forward_matches_torch(model, default_run, tmp_path):
    """Exported at batch 2, run at batch 1 (the default model: 16 ResNet-34 passes an example)."""
    session = _export(
        _Forward(model), _mel(2, 96, 4096), tmp_path / "m.onnx", ["mel"], ["tags", "aux_segments"], {}
    )
    assert not model.training
    x, out = default_run
    _check(session, x, (out["tags"], out["aux_segments"]))


def test_onnx_forward_matches_torch_at_batch_1_and_3(small, tmp_path):
    wrapper = _Forward(small)
    session = _export(wrapper, _mel(2, 96, 512), tmp_path / "m.onnx", ["mel"], ["tags", "aux_segments"], {})
    for batch in (1, 3):
        x = _mel(batch, 96, 512, seed=batch)
        with torch.inference_mode():
            _check(session, x, wrapper(x))


def test_onnx_pooling_takes_any_k(model, tmp_path):
    """The engine's pooling + heads graph, K dynamic: fewer, as many and more segments than the context."""
    head = _PoolPredict(model)
    dynamic = {"embeddings": {0: "batch", 1: "segments"}}
    session = _export(head, torch.rand(2, 3, 256), tmp_path / "head.onnx", ["embeddings"], ["tags"], dynamic)
    for batch, k in ((1, 1), (3, 7), (2, 16), (1, 20)):
        embeddings = 10.0 * torch.rand(batch, k, 256, generator=torch.Generator().manual_seed(k))
        with torch.inference_mode():
            _check(session, embeddings, (head(embeddings),))
