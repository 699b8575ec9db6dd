"""The musicnn port against the original TensorFlow model's outputs on real clips."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import models
from models.frontend import MelFrontend
from models.musicnn import SEGMENT_FRAMES, convert_checkpoint, package_checkpoint
from models.weights import WeightsError


def _patches(model, path):
    audio, rate = sf.read(path, dtype="float32")
    assert rate == model.frontend.sample_rate_hz
    with torch.inference_mode():
        mel = MelFrontend(model.frontend)(torch.from_numpy(audio)[None])[0]
    n = mel.shape[1] // SEGMENT_FRAMES  # non-overlapping, trailing frames dropped, as the reference
    return torch.stack([mel[:, i * SEGMENT_FRAMES : (i + 1) * SEGMENT_FRAMES] for i in range(n)])


@pytest.mark.parametrize("variant", ["msd", "mtt"])
def test_port_matches_the_original_model(shared_data, variant):
    ref = np.load(shared_data / "reference" / "musicnn" / f"{variant.upper()}_musicnn.npz")
    model = models.build(f"musicnn-{variant}")
    assert list(model.heads["tags"].labels) == list(ref["tags"])
    for i, rel in enumerate(ref["files"]):
        with torch.inference_mode():
            embedding = model.encode(_patches(model, shared_data / rel))
            probs = torch.sigmoid(model.predict(embedding)["tags"]).numpy()
        expected = ref[f"t{i}"]
        assert probs.shape == expected.shape, rel
        clip, clip_ref = probs.mean(axis=0), expected.mean(axis=0)
        assert np.abs(clip - clip_ref).max() < 0.02, rel
        assert list(np.argsort(-clip)[:5]) == list(np.argsort(-clip_ref)[:5]), rel
        # Tighter than the acceptance bound: the port is the same function, not an approximation.
        assert np.abs(probs - expected).max() < 1e-3, rel
        np.testing.assert_allclose(embedding.numpy(), ref[f"p{i}"], atol=1e-3)


def test_weights_are_cached_as_safetensors(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    model = models.build("musicnn-msd")
    assert "converting musicnn MSD weights" in capfd.readouterr().err
    cached = tmp_path / "cache" / "musicnn-msd.safetensors"
    assert cached.is_file()
    again = models.build("musicnn-msd")  # second use reads the cache, silently
    assert "converting" not in capfd.readouterr().err
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MOODSTREAM_MUSICNN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(WeightsError, match=r"pip install --no-deps musicnn==0.1.0"):
        models.build("musicnn-mtt")


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MOODSTREAM_CACHE", str(blocker / "cache"))
    with pytest.raises(WeightsError, match="MOODSTREAM_CACHE"):
        models.build("musicnn-msd")


def test_corrupt_cache_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("MOODSTREAM_CACHE", str(tmp_path))
    (tmp_path / "musicnn-msd.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="cannot read weights"):
        models.build("musicnn-msd")


def test_untrained_build_and_shapes():
    model = models.build("musicnn-msd", pretrained=False)
    assert model.pretrained is False
    out = model(torch.randn(2, 96, SEGMENT_FRAMES))
    assert out["tags"].shape == (2, 50)
    assert model.encode(torch.randn(3, 96, SEGMENT_FRAMES)).shape == (3, 200)


def test_conversion_fills_every_parameter():
    model = models.build("musicnn-msd", pretrained=False)
    state = convert_checkpoint(package_checkpoint("msd"), model)
    assert set(state) == set(model.state_dict())
