"""crnn-gru / crnn-lstm / crnn-blstm: the contract, ONNX parity, and loading VGGish conv weights."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

import models
import models.crnn  # noqa: F401  (registers the crnn-* names until models/__init__ imports it)
from models.vocab import JAMENDO_MOODTHEME
from models.weights import WeightsError

NAMES = ["crnn-gru", "crnn-lstm", "crnn-blstm"]
PARAMETERS = {"crnn-gru": 6_988_088, "crnn-lstm": 7_710_008, "crnn-blstm": 11_384_120}
# The documented torchvggish layout of VGGish's conv stack (module docstring of models/crnn.py).
VGGISH_LAYOUT = {
    "features.0.weight": (64, 1, 3, 3),
    "features.0.bias": (64,),
    "features.3.weight": (128, 64, 3, 3),
    "features.3.bias": (128,),
    "features.6.weight": (256, 128, 3, 3),
    "features.6.bias": (256,),
    "features.8.weight": (256, 256, 3, 3),
    "features.8.bias": (256,),
    "features.11.weight": (512, 256, 3, 3),
    "features.11.bias": (512,),
    "features.13.weight": (512, 512, 3, 3),
    "features.13.bias": (512,),
}


def _mel(model, batch: int, seed: int = 0) -> torch.Tensor:
    """Values in the range of log10(1 + 100·|mel|) (0 for silence, a few units when loud)."""
    g = torch.Generator().manual_seed(seed)
    return 3.0 * torch.rand(batch, *model.input_shape, generator=g)


class _Tags(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)["tags"]


@pytest.mark.parametrize("name", NAMES)
def test_builds_with_the_paper_setup(name):
    model = models.build(name)
    assert model.pretrained is False and not model.training
    fe = model.frontend
    assert (fe.sample_rate_hz, fe.n_fft, fe.hop_length, fe.n_mels) == (16000, 512, 256, 64)
    assert fe.scaling == "log10_1p" and fe.log_gain == 100.0
    assert model.segment_frames == 192 and model.input_shape == (64, 192)
    assert model.heads["tags"].kind == "tags" and model.heads["tags"].labels == JAMENDO_MOODTHEME
    assert len(JAMENDO_MOODTHEME) == 56 and model.embedding_dim == 1024
    assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    assert next(model.parameters()) is model.features[0].weight
    assert model.receptive_field() == {"frequency": 64, "time": 192}
    rnn = model.rnn
    assert (rnn.hidden_size, rnn.num_layers, rnn.dropout, rnn.bidirectional) == (
        256,
        2,
        0.3,
        name == "crnn-blstm",
    )
    assert isinstance(rnn, torch.nn.GRU if name == "crnn-gru" else torch.nn.LSTM)


@pytest.mark.parametrize("name", NAMES)
def test_forward_encode_pool_shapes(name):
    model = models.build(name)
    with torch.inference_mode():
        out = model(_mel(model, 2))
        assert set(out) == {"tags"} and out["tags"].shape == (2, 56)
        assert torch.isfinite(out["tags"]).all()
        embeddings = model.encode(_mel(model, 3))
        assert embeddings.shape == (3, 1024)
        for k in (1, 4):  # the engine pools any number of cached segment embeddings
            pooled = model.pool(embeddings[:, None].expand(3, k, 1024))
            assert model.predict(pooled)["tags"].shape == (3, 56)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_the_first_layer_and_a_step_changes_the_loss(name):
    torch.manual_seed(0)
    model = models.build(name)
    x = _mel(model, 2)

    def loss() -> torch.Tensor:
        return model(x)["tags"].sum()

    with torch.no_grad():
        before = loss().item()  # eval mode: deterministic
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss().backward()
    first = next(model.parameters())
    assert first is model.features[0].weight
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = loss().item()
    assert np.isfinite(after) and after != before


# The legacy exporter's known warnings; the RNN initial-state one is why batches 1 and 3 are checked.
@pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size other than 1")
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
@pytest.mark.filterwarnings("ignore:The feature will be removed")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_torch_at_other_batch_sizes(name, tmp_path):
    torch.manual_seed(0)
    model = models.build(name)
    # Non-trivial batch-norm statistics, so a wrong eval/train export would show.
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    wrapper = _Tags(model).eval()
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(
        wrapper,
        (_mel(model, 2),),
        str(path),
        input_names=["mel"],
        output_names=["tags"],
        opset_version=17,
        dynamo=False,
        dynamic_axes={"mel": {0: "batch"}, "tags": {0: "batch"}},
    )
    wrapper.eval()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # GRU/LSTM initial states must not be frozen at the export batch
        x = _mel(model, batch, seed=batch)
        with torch.inference_mode():
            expected = wrapper(x).numpy()
        (got,) = session.run(None, {"mel": x.numpy()})
        assert got.shape == (batch, 56)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def _vggish_file(path, shapes=VGGISH_LAYOUT, extra=True):
    g = torch.Generator().manual_seed(1)
    state = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    if extra:  # the rest of a torchvggish state dict is accepted and ignored
        state["embeddings.0.weight"] = torch.randn(16, 8, generator=g)
        state["embeddings.0.bias"] = torch.randn(16, generator=g)
    save_file(state, str(path))
    return state


def test_vggish_weights_load_into_exactly_the_conv_stack(tmp_path):
    path = tmp_path / "vggish.safetensors"
    state = _vggish_file(path)
    torch.manual_seed(0)
    scratch = models.build("crnn-gru")
    torch.manual_seed(0)  # same initialisation, so everything outside the conv stack must be equal
    loaded = models.build("crnn-gru", vggish_weights=str(path))
    assert loaded.pretrained is False
    features = {f"features.{k}": v for k, v in loaded.features.state_dict().items()}
    assert set(features) == set(VGGISH_LAYOUT)
    for k in VGGISH_LAYOUT:
        assert torch.equal(features[k], state[k]), k
    for (k, a), (_, b) in zip(loaded.state_dict().items(), scratch.state_dict().items(), strict=True):
        if not k.startswith("features."):
            assert torch.equal(a, b), k
    with torch.inference_mode():
        assert torch.isfinite(loaded(_mel(loaded, 2))["tags"]).all()


def test_vggish_weights_of_the_wrong_shape_are_a_clear_error(tmp_path):
    path = tmp_path / "vggish.safetensors"
    _vggish_file(path, {**VGGISH_LAYOUT, "features.6.weight": (256, 128, 5, 5)})
    with pytest.raises(
        WeightsError, match=r"features\.6\.weight has shape \(256, 128, 5, 5\), expected \(256, 128, 3, 3\)"
    ):
        models.build("crnn-lstm", vggish_weights=str(path))


def test_vggish_weights_with_missing_or_foreign_keys_are_a_clear_error(tmp_path):
    path = tmp_path / "vggish.safetensors"
    shapes = {k: v for k, v in VGGISH_LAYOUT.items() if k != "features.13.bias"}
    _vggish_file(path, {**shapes, "conv1.weight": (64, 1, 3, 3)}, extra=False)
    with pytest.raises(
        WeightsError, match=r"missing \['features\.13\.bias'\], unexpected \['conv1\.weight'\]"
    ):
        models.build("crnn-gru", vggish_weights=str(path))


def test_missing_corrupt_or_pickled_vggish_weights_are_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="VGGish weights not found"):
        models.build("crnn-gru", vggish_weights=str(tmp_path / "nowhere.safetensors"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="cannot read VGGish weights"):
        models.build("crnn-gru", vggish_weights=str(corrupt))
    # A PyTorch state dict is read with torch's weights-only loader (models/weights.py's policy):
    # it is checked like a safetensors file; anything but tensors in plain containers is refused.
    pickled = tmp_path / "vggish-10086976.pth"
    torch.save({"features.0.weight": torch.zeros(64, 1, 3, 3)}, pickled)
    with pytest.raises(
        WeightsError, match=r"do not have the documented layout .*missing \['features\.0\.bias'"
    ):
        models.build("crnn-gru", vggish_weights=str(pickled))
    code = tmp_path / "code.pth"
    torch.save({"features.0.weight": Fraction(1, 2)}, code)  # an object: the loader refuses it
    with pytest.raises(WeightsError, match="as a plain state dict .*weights-only"):
        models.build("crnn-gru", vggish_weights=str(code))
    with pytest.raises(WeightsError, match=r"must be a \.safetensors file or a PyTorch state dict"):
        models.build("crnn-gru", vggish_weights=str(corrupt.rename(tmp_path / "vggish.h5")))


def test_segment_length_override():
    model = models.build("crnn-blstm", segment_frames=320)  # 5.1 s, 20 RNN steps
    assert model.input_shape == (64, 320)
    with torch.inference_mode():
        assert model(_mel(model, 1))["tags"].shape == (1, 56)
    for bad in (100, 0, 8, 192.0):
        with pytest.raises(ValueError, match="segment_frames must be a positive multiple of 16"):
            models.build("crnn-gru", segment_frames=bad)
    with pytest.raises(ValueError, match="unknown override"):
        models.build("crnn-gru", cell="lstm")
