"""deepspectrum-rnn: spectrogram images, the VGG16 encoder, the RNN pooling, ONNX, ImageNet weights.

The default model is VGG16 (138M parameters): it is built once, run once forward and backward
at its documented input and exported to ONNX once; the rest runs on ``width=1/16``, which
scales channels and units only (same image size, same 7 × 7 feature map, same operators).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

import models
import models.deepspectrum  # noqa: F401  (registers deepspectrum-rnn until models/__init__ imports it)
from models.deepspectrum import VIRIDIS
from models.vocab import JAMENDO_MOODTHEME
from models.weights import WeightsError

SMALL = 1 / 16
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # vgg16().features indices


def _quiet_export(test):
    """Silence the legacy exporter's known warnings (the RNN initial-state one: batches 1 and 3 are checked)."""
    for message in (
        "ignore:Exporting a model to ONNX with a batch_size other than 1",
        "ignore:You are using the legacy TorchScript-based ONNX export",
        "ignore::torch.jit.TracerWarning",
        "ignore:The feature will be removed",
    ):
        test = pytest.mark.filterwarnings(message)(test)
    return test


def _mel(model, batch: int, frames: int | None = None, seed: int = 0) -> torch.Tensor:
    """Mel power in dB, roughly the range of music (-100 … +20 dB)."""
    g = torch.Generator().manual_seed(seed)
    frames = frames or model.input_frames
    return -40.0 + 25.0 * torch.randn(batch, model.frontend.n_mels, frames, generator=g)


def _vgg_state(model) -> dict[str, torch.Tensor]:
    parts = {"features": model.features, "classifier": model.classifier}
    return {f"{n}.{k}": v for n, part in parts.items() for k, v in part.state_dict().items()}


class _Tags(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["tags"]


def _export_and_compare(model, path, export_batch: int, check_batches, frames: int | None = None):
    wrapper = _Tags(model).eval()
    torch.onnx.export(
        wrapper,
        (_mel(model, export_batch, frames),),
        str(path),
        input_names=["mel"],
        output_names=["tags"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"mel": {0: "batch"}, "tags": {0: "batch"}},
    )
    wrapper.eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in check_batches:
        x = _mel(model, batch, frames, seed=batch)
        with torch.inference_mode():
            expected = wrapper(x).numpy()
        (got,) = session.run(None, {"mel": x.numpy()})
        assert got.shape == (batch, 56)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def vgg16_model():
    torch.manual_seed(0)
    return models.build("deepspectrum-rnn")


@pytest.fixture
def small():
    torch.manual_seed(0)
    model = models.build("deepspectrum-rnn", width=SMALL)
    # Non-trivial batch-norm statistics, so a wrong eval/train export would show.
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model


def test_default_is_vgg16_fc7_with_a_1024_unit_rnn(vgg16_model):
    model = vgg16_model
    assert model.pretrained is False and not model.training
    fe = model.frontend
    assert (fe.sample_rate_hz, fe.n_fft, fe.hop_length, fe.n_mels, fe.scaling) == (16000, 512, 128, 128, "db")
    assert model.segment_frames == 125 and model.segment_seconds == 1.0
    assert model.input_shape == (128, 625)  # 5 chunks of 1 s
    assert model.heads["tags"].labels == JAMENDO_MOODTHEME and model.embedding_dim == 4096
    assert sum(p.numel() for p in model.parameters()) == 156_352_376
    rnn = model.rnn
    assert isinstance(rnn, torch.nn.GRU)
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.dropout) == (4096, 1024, 2, 0.4)
    assert model.receptive_field() == {"frequency": 128, "time": 125}
    # torchvision's vgg16 layout, so its state dict loads as it is.
    shapes = {k: tuple(v.shape) for k, v in _vgg_state(model).items()}
    convs = {k for k in shapes if k.startswith("features.")}
    assert convs == {f"features.{i}.{p}" for i in TORCHVISION_CONVS for p in ("weight", "bias")}
    assert shapes["features.0.weight"] == (64, 3, 3, 3) and shapes["features.28.weight"] == (512, 512, 3, 3)
    assert shapes["classifier.0.weight"] == (4096, 25088) and shapes["classifier.3.weight"] == (4096, 4096)
    assert next(model.parameters()) is model.features[0].weight


def test_default_forward_is_finite_and_gradients_reach_the_first_layer(vgg16_model):
    model = vgg16_model
    out = model(_mel(model, 1))  # eval mode: batch norm needs batch >= 2 only when training
    assert set(out) == {"tags"} and out["tags"].shape == (1, 56)
    assert torch.isfinite(out["tags"]).all()
    out["tags"].sum().backward()
    first = next(model.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)


@_quiet_export
def test_default_exports_to_onnx_once(vgg16_model, tmp_path):
    # One 1 s chunk per example keeps it to 2 VGG16 passes; the cost is the 600 MB of weights.
    path = tmp_path / "vgg16.onnx"
    _export_and_compare(vgg16_model, path, 2, (1,), frames=125)
    path.unlink()  # 600 MB: not kept among pytest's last temporary folders


def test_small_forward_encode_pool_shapes(small):
    assert small.embedding_dim == 256 and small.rnn.hidden_size == 64
    with torch.inference_mode():
        out = small(_mel(small, 2))
        assert out["tags"].shape == (2, 56) and torch.isfinite(out["tags"]).all()
        chunk = _mel(small, 3, 125)
        assert small.image(chunk).shape == (3, 3, 224, 224)
        embeddings = small.encode(chunk)
        assert embeddings.shape == (3, 256)
        for k in (1, 3, 8):  # any number of cached chunk embeddings
            assert small.predict(small.pool(embeddings[:, None].expand(3, k, 256)))["tags"].shape == (3, 56)
        # forward over K chunks == encode each chunk, pool, predict
        x = _mel(small, 2, 3 * 125)
        parts = torch.stack([small.encode(x[:, :, i * 125 : (i + 1) * 125]) for i in range(3)], dim=1)
        torch.testing.assert_close(small(x)["tags"], small.predict(small.pool(parts))["tags"])
    with pytest.raises(ValueError, match="multiple of 125 frames"):
        small(_mel(small, 1, 200))


def test_small_gradients_reach_the_first_layer_and_a_step_changes_the_loss(small):
    x = _mel(small, 2)

    def loss() -> torch.Tensor:
        return small(x)["tags"].sum()

    with torch.no_grad():
        before = loss().item()
    small.train()
    optimizer = torch.optim.Adam(small.parameters(), lr=1e-3)
    loss().backward()
    first = next(small.parameters())
    assert first is small.features[0].weight
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    optimizer.step()
    small.eval()
    with torch.no_grad():
        after = loss().item()
    assert np.isfinite(after) and after != before


@_quiet_export
def test_small_onnx_export_matches_torch_at_other_batch_sizes(small, tmp_path):
    _export_and_compare(small, tmp_path / "small.onnx", 2, (1, 3))


def test_the_image_is_a_viridis_plot_with_high_frequencies_on_top(small):
    chunk = torch.full((2, 128, 125), -60.0)
    chunk[0, -16:] = 0.0  # loud in the top 16 mel bands
    # chunk[1] stays silent: constant, so it must not divide by zero
    with torch.inference_mode():
        rgb = small.image(chunk) * small.imagenet_std + small.imagenet_mean  # undo the ImageNet normalisation
    assert torch.isfinite(rgb).all()
    top, bottom = rgb[0, :, 0, 112], rgb[0, :, -1, 112]
    torch.testing.assert_close(top, torch.tensor(VIRIDIS[-1]))  # yellow: the loud top band
    torch.testing.assert_close(bottom, torch.tensor(VIRIDIS[0]))  # dark purple: the quiet rest
    torch.testing.assert_close(rgb[1], torch.tensor(VIRIDIS[0]).view(3, 1, 1).expand(3, 224, 224))
    # more than 80 dB below the chunk's maximum is clipped, as librosa's top_db
    deep, floor = chunk[:1].clone(), chunk[:1].clone()
    deep[0, :8], floor[0, :8] = -300.0, -80.0
    with torch.inference_mode():
        torch.testing.assert_close(small.image(deep), small.image(floor))
        assert not torch.equal(small.image(floor), small.image(chunk[:1]))


def _torchvision_file(path, model, extra=True):
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(v.shape, generator=g) for k, v in _vgg_state(model).items()}
    if extra:  # torchvision's ImageNet class layer (fc8) is accepted and ignored
        state["classifier.6.weight"] = torch.randn(1000, 8, generator=g)
        state["classifier.6.bias"] = torch.randn(1000, generator=g)
    save_file(state, str(path))
    return state


def test_imagenet_weights_load_into_exactly_vgg16(small, tmp_path):
    path = tmp_path / "vgg16.safetensors"
    state = _torchvision_file(path, small)
    torch.manual_seed(0)
    scratch = models.build("deepspectrum-rnn", width=SMALL)
    torch.manual_seed(0)
    loaded = models.build("deepspectrum-rnn", width=SMALL, imagenet_weights=str(path))
    got = _vgg_state(loaded)
    assert set(got) == {k for k in state if not k.startswith("classifier.6.")}
    for k, v in got.items():
        assert torch.equal(v, state[k]), k
    for (k, a), (_, b) in zip(loaded.state_dict().items(), scratch.state_dict().items(), strict=True):
        if not k.startswith(("features.", "classifier.")):
            assert torch.equal(a, b), k  # RNN, batch norm and tags are not touched


def test_imagenet_weights_that_do_not_fit_are_clear_errors(small, tmp_path):
    wider = models.build("deepspectrum-rnn", width=2 * SMALL)
    path = tmp_path / "wider.safetensors"
    _torchvision_file(path, wider)
    with pytest.raises(
        WeightsError, match=r"features\.0\.weight has shape \(8, 3, 3, 3\), expected \(4, 3, 3, 3\)"
    ):
        models.build("deepspectrum-rnn", width=SMALL, imagenet_weights=str(path))
    state = {k: v for k, v in _vgg_state(small).items() if k != "classifier.3.bias"}
    save_file({**state, "fc7.bias": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match=r"missing \['classifier\.3\.bias'\], unexpected \['fc7\.bias'\]"):
        models.build("deepspectrum-rnn", width=SMALL, imagenet_weights=str(path))
    with pytest.raises(WeightsError, match="ImageNet VGG16 weights not found"):
        models.build("deepspectrum-rnn", imagenet_weights=str(tmp_path / "nowhere.safetensors"))
    # The torchvision file itself (a state dict, .pth) is read by torch's weights-only loader.
    pickled = tmp_path / "vgg16-397923af.pth"
    torch.save(_vgg_state(small), pickled)
    from_pth = models.build("deepspectrum-rnn", width=SMALL, imagenet_weights=str(pickled))
    assert torch.equal(from_pth.features[0].weight, _vgg_state(small)["features.0.weight"])


def test_overrides_are_validated():
    model = models.build("deepspectrum-rnn", width=SMALL, chunks=2, cell="lstm")
    assert isinstance(model.rnn, torch.nn.LSTM) and model.input_shape == (128, 250)
    with torch.inference_mode():
        assert model(_mel(model, 1))["tags"].shape == (1, 56)
    with pytest.raises(ValueError, match="allowed: gru, lstm"):
        models.build("deepspectrum-rnn", cell="blstm")
    with pytest.raises(ValueError, match=r"chunks .* integer >= 1"):
        models.build("deepspectrum-rnn", chunks=0)
    with pytest.raises(ValueError, match=r"width must be a number in \(0, 1\]"):
        models.build("deepspectrum-rnn", width=2)
