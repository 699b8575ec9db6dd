"""The official MTG-Jamendo mood/theme baseline: published weights, on Essentia's mels and ours."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import models
from models import jamendo_baseline  # noqa: F401  (registers jamendo-baseline)
from models.frontend import ESSENTIA_JAMENDO, MelFrontend
from models.vocab import JAMENDO_MOODTHEME
from models.weights import WeightsError

SEGMENT = 1366


def _onnx_check(model, tmp_path):
    import onnxruntime as ort

    wrapper = model.eval()
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        wrapper, (torch.randn(2, 96, SEGMENT),), str(path), input_names=["mel"], output_names=["tags"],
        dynamic_axes={"mel": {0: "batch"}, "tags": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    x = torch.randn(3, 96, SEGMENT, generator=torch.Generator().manual_seed(1)) * 20 - 20
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"mel": x.numpy()})
    with torch.inference_mode():
        expected = wrapper(x)["tags"].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def weights(shared_data):
    return shared_data / "mtg-jamendo" / "baseline" / "best_model.pth"


@pytest.fixture(scope="module")
def pretrained(weights, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MOODSTREAM_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        yield models.build("jamendo-baseline", weights=str(weights))
    finally:
        mp.undo()


def _centre(mel: torch.Tensor) -> torch.Tensor:
    """The baseline's data loader: the centre 1366 frames."""
    start = (mel.shape[-1] - SEGMENT) // 2
    return mel[..., start : start + SEGMENT]


def test_untrained_build_shapes_gradients_and_a_training_step(tmp_path, monkeypatch):
    monkeypatch.delenv("MOODSTREAM_JAMENDO_BASELINE", raising=False)
    model = models.build("jamendo-baseline")
    assert model.pretrained is False and not model.training
    assert model.input_shape == (96, SEGMENT) and model.frontend == ESSENTIA_JAMENDO
    assert model.heads["tags"].kind == "tags" and model.heads["tags"].labels == JAMENDO_MOODTHEME
    assert sum(p.numel() for p in model.parameters()) == 448122
    assert next(model.named_parameters())[0] == "bn_init.weight"
    torch.manual_seed(0)
    model.train()
    x = torch.randn(2, 96, SEGMENT) * 20 - 20
    out = model(x)["tags"]
    assert out.shape == (2, 56) and torch.isfinite(out).all()
    assert model.encode(x).shape == (2, 64)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out, torch.zeros_like(out))
    loss.backward()
    assert model.bn_init.weight.grad is not None and model.bn_init.weight.grad.abs().sum() > 0
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    after = torch.nn.functional.binary_cross_entropy_with_logits(model(x)["tags"], torch.zeros_like(out))
    assert not torch.isclose(after, loss.detach())
    _onnx_check(model, tmp_path)


def test_pooling_stack_takes_1280_to_2559_frames():
    model = models.build("jamendo-baseline", weights="").eval()
    with torch.inference_mode():
        for frames in (1280, SEGMENT, 2559):
            assert model.encode(torch.randn(1, 96, frames)).shape == (1, 64), frames
        assert model.encode(torch.randn(1, 96, 2560)).shape == (1, 128)  # two positions: too long
        with pytest.raises(RuntimeError):
            model.encode(torch.randn(1, 96, 1279))
        # The last pools leave frame 1365 out: changing it changes nothing.
        x = torch.randn(1, 96, SEGMENT)
        y = x.clone()
        y[..., -1] += 100.0
        assert torch.equal(model.encode(x), model.encode(y))
    assert model.receptive_field() == {"frequency": 96, "time": SEGMENT}  # theoretically 174 × 2090


def test_published_weights_on_essentias_mel_and_ours(pretrained, shared_data):
    ref = np.load(shared_data / "reference" / "essentia" / "jamendo_mel.npz")
    assert ref["files"][0] == "4q/audio/Q1/MT0000040632.ogg"
    assert pretrained.pretrained is True and not pretrained.training
    with torch.inference_mode():
        ours = MelFrontend(ESSENTIA_JAMENDO)(torch.from_numpy(ref["audio0"])[None])[0]
        essentia = torch.from_numpy(ref["mel0"])
        assert ours.shape == essentia.shape
        probs = torch.sigmoid(pretrained(torch.stack([_centre(essentia), _centre(ours)]))["tags"])
    # Achieved: 1.3e-7 (the mels agree to 0.0002 dB).
    assert (probs[0] - probs[1]).abs().max() < 1e-5
    top5 = probs.argsort(dim=1, descending=True)[:, :5]
    assert torch.equal(top5[0], top5[1])
    # The published model is confident of little; the weights are not random all the same.
    top = [JAMENDO_MOODTHEME[i] for i in probs[0].argsort(descending=True)[:3]]
    assert top == ["melodic", "relaxing", "deep"]


def test_weights_are_cached_as_safetensors_once(weights, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path))
    monkeypatch.setenv("MOODSTREAM_JAMENDO_BASELINE", str(weights))
    model = models.build("jamendo-baseline")  # the environment variable is the default path
    assert model.pretrained is True
    assert "converting the MTG-Jamendo baseline" in capfd.readouterr().err
    assert len(list(tmp_path.glob("jamendo-baseline-*.safetensors"))) == 1
    again = models.build("jamendo-baseline")
    assert "converting" not in capfd.readouterr().err
    original = torch.load(weights, map_location="cpu", weights_only=True)
    for k, v in again.state_dict().items():
        assert torch.equal(v, original[k]), k
    assert models.build("jamendo-baseline", weights="").pretrained is False


def test_wrong_files_are_clear_errors(weights, tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    renamed = {k.replace("conv_", "conv"): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(WeightsError, match=r"missing keys \['conv_1.bias'.*unexpected keys \['conv1.bias'"):
        models.build("jamendo-baseline", weights=str(tmp_path / "renamed.pth"))
    all_tags = {**state, "dense.weight": torch.zeros(183, 64), "dense.bias": torch.zeros(183)}
    torch.save(all_tags, tmp_path / "all.pth")
    with pytest.raises(WeightsError, match="183 tags: not the 56-tag mood/theme model"):
        models.build("jamendo-baseline", weights=str(tmp_path / "all.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        models.build("jamendo-baseline", weights=str(tmp_path / "junk.pth"))
    with pytest.raises(WeightsError, match="MOODSTREAM_JAMENDO_BASELINE"):
        models.build("jamendo-baseline", weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="weights must be a path"):
        models.build("jamendo-baseline", weights=3)
