"""The Essentia mel frontend (MTG-Jamendo's official features) against Essentia's own output."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.frontend import ESSENTIA_JAMENDO, FrontendConfig, MelFrontend
from models.musicnn import MUSICNN_FRONTEND
from realtime.frontend import StreamingMel
from tests.realtime.test_frontend import one_pass, streamed

FLOOR_DB = -200.0  # lin2db clips power below 1e-10 at -100 dB; scale=2 doubles it


@pytest.fixture(scope="module")
def reference(shared_data):
    return np.load(shared_data / "reference" / "essentia" / "jamendo_mel.npz")


@pytest.mark.parametrize("clip", [0, 1])
def test_matches_essentia_on_real_music(reference, clip):
    audio, expected = reference[f"audio{clip}"], reference[f"mel{clip}"]
    got = one_pass(ESSENTIA_JAMENDO, audio)
    # Same frames: FrameGenerator(startFromZero=False) gives ceil(n / 256) + 1 of them.
    assert got.shape == expected.shape == (96, -(-audio.size // 256) + 1)
    assert np.array_equal(got == FLOOR_DB, expected == FLOOR_DB)  # silent bins, first and last frame
    diff = np.abs(got - expected)[expected > FLOOR_DB]
    # Achieved: max 0.00017 dB, 99th percentile 0.00003 dB (float32 STFT rounding).
    assert diff.max() < 0.002
    assert np.percentile(diff, 99) < 0.0002


def test_frame_count_follows_essentias_frame_cutter():
    # FrameGenerator(frameSize=512, hopSize=256, startFromZero=False) on n samples (Essentia 2.1b6).
    for n, frames in {1: 2, 100: 2, 256: 2, 257: 3, 511: 3, 512: 3, 513: 4, 1000: 5}.items():
        assert ESSENTIA_JAMENDO.n_frames(n) == frames, n
        assert one_pass(ESSENTIA_JAMENDO, np.ones(n, np.float32)).shape == (96, frames), n
    assert ESSENTIA_JAMENDO.n_frames(0) == 0
    assert one_pass(ESSENTIA_JAMENDO, np.zeros(0, np.float32)).shape == (96, 0)
    odd = dataclasses.replace(ESSENTIA_JAMENDO, n_fft=511, hop_length=300)
    assert odd.start_pad == 256  # -(frameSize + 1) / 2: odd frames start one sample earlier
    # Counted with Essentia's FrameGenerator(frameSize=511, hopSize=300): with a hop over half a
    # frame, the frame after the last one centred inside may start past the end (n = 900).
    assert [odd.n_frames(n) for n in (1, 44, 45, 644, 645, 900, 945)] == [1, 1, 2, 3, 4, 4, 5]


def test_frames_are_aligned_as_essentias():
    """Frame k covers samples k·hop - 256 .. k·hop + 255, zeros outside the signal."""
    config = dataclasses.replace(ESSENTIA_JAMENDO, scaling="power")
    audio = np.zeros(2000, np.float32)
    audio[300] = 1.0  # inside frames 1 (samples 0..511) and 2 (256..767) only
    power = one_pass(config, audio).sum(axis=0)
    assert power.shape == (9,) and np.flatnonzero(power > 1e-6).tolist() == [1, 2]


@pytest.mark.parametrize("blocks", [[1, 255, 4096], [256], [100000]])
def test_streaming_equals_one_pass(reference, blocks):
    audio = reference["audio0"][: 12000 * 3 + 77]
    expected = one_pass(ESSENTIA_JAMENDO, audio)
    got = streamed(ESSENTIA_JAMENDO, audio, blocks)
    assert got.shape == expected.shape == (96, ESSENTIA_JAMENDO.n_frames(audio.size))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_streaming_emits_frames_as_soon_as_complete():
    stream = StreamingMel(ESSENTIA_JAMENDO)
    # Frame 0 is 256 zeros then samples 0..255: no need to wait for a reflection.
    assert stream.push(np.ones(255, np.float32)).shape[1] == 0
    assert stream.push(np.ones(1, np.float32)).shape[1] == 1
    assert stream.push(np.ones(256, np.float32)).shape[1] == 1
    assert stream.flush().shape[1] == 1  # 512 samples: 3 frames in all
    assert StreamingMel(ESSENTIA_JAMENDO).flush().shape[1] == 0


def test_other_zero_padded_configs_stream_exactly():
    audio = np.random.default_rng(0).standard_normal(3001).astype(np.float32) * 0.1
    for config in (
        FrontendConfig(n_fft=400, hop_length=160, n_mels=40, pad_mode="zero", scaling="db"),
        FrontendConfig(n_fft=511, hop_length=300, n_mels=40, pad_mode="zero", window="hann_symmetric"),
    ):
        expected = one_pass(config, audio)
        assert expected.shape[1] == config.n_frames(audio.size)
        np.testing.assert_allclose(streamed(config, audio, [333]), expected, rtol=1e-4, atol=1e-3)


def test_defaults_are_librosas_and_options_are_validated():
    default = FrontendConfig()
    assert (default.window, default.mel_norm, default.pad_mode, default.db_scale) == (
        "hann",
        "slaney",
        "reflect",
        10.0,
    )
    assert MUSICNN_FRONTEND.n_frames(16000) == 16000 // 256 + 1
    for field, value in (("window", "hamming"), ("mel_norm", "htk"), ("pad_mode", "edge")):
        with pytest.raises(ValueError, match=f"unknown {field} .*allowed"):
            FrontendConfig(**{field: value})
    with pytest.raises(ValueError, match="db_scale"):
        FrontendConfig(db_scale=0.0)
    assert FrontendConfig.from_dict(ESSENTIA_JAMENDO.to_dict()) == ESSENTIA_JAMENDO


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the pads are computed from the length
def test_essentia_frontend_exports_to_onnx(tmp_path):
    import onnxruntime as ort

    module = MelFrontend(ESSENTIA_JAMENDO).eval()
    audio = 0.1 * torch.randn(2, 12000, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "mel.onnx"
    torch.onnx.export(
        module, (audio,), str(path), input_names=["audio"], output_names=["mel"],
        dynamic_axes={"audio": {0: "batch"}, "mel": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    other = 0.1 * torch.randn(3, 12000, generator=torch.Generator().manual_seed(1))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"audio": other.numpy()}
    )
    with torch.inference_mode():
        expected = module(other).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3, rtol=0)  # dB of float32 power


# --- against Essentia itself, where its PyPI wheel is installed (a test-only reference) ----------


def _essentiaone_pass(es, config, audio):
    windowing = es.Windowing(type="hann", normalized=False)
    spectrum = es.Spectrum()
    bands = es.MelBands(
        numberBands=config.n_mels, sampleRate=config.sample_rate_hz,
        lowFrequencyBound=config.f_min_hz, highFrequencyBound=config.f_max_hz,
        inputSize=config.n_fft // 2 + 1, weighting="linear", normalize="unit_tri",
        warpingFormula="slaneyMel", type="power",
    )  # fmt: skip
    amp2db = es.UnaryOperator(type="lin2db", scale=2)
    frames = es.FrameGenerator(audio, frameSize=config.n_fft, hopSize=config.hop_length, startFromZero=False)
    return np.array([amp2db(bands(spectrum(windowing(f)))) for f in frames]).T


@pytest.mark.parametrize(
    "config",
    [
        ESSENTIA_JAMENDO,
        dataclasses.replace(
            ESSENTIA_JAMENDO, sample_rate_hz=16000, n_fft=1024, hop_length=400, n_mels=64,
            f_min_hz=50.0, f_max_hz=7600.0,
        ),
    ],
    ids=["jamendo", "16k-1024-400-64"],
)  # fmt: skip
def test_matches_the_essentia_package(config):
    es = pytest.importorskip("essentia.standard")
    import essentia

    essentia.log.infoActive = False
    from models.frontend import essentia_mel_filters

    bands = es.MelBands(
        numberBands=config.n_mels, sampleRate=config.sample_rate_hz,
        lowFrequencyBound=config.f_min_hz, highFrequencyBound=config.f_max_hz,
        inputSize=config.n_fft // 2 + 1, weighting="linear", normalize="unit_tri",
        warpingFormula="slaneyMel", type="power",
    )  # fmt: skip
    eye = np.eye(config.n_fft // 2 + 1, dtype=np.float32)
    filters = np.stack([bands(row) for row in eye], axis=1)  # (n_mels, bins), one bin at a time
    ours = essentia_mel_filters(
        config.sample_rate_hz, config.n_fft, config.n_mels, config.f_min_hz, config.f_max_hz
    )
    assert np.array_equal(ours, filters)  # bit for bit
    rng = np.random.default_rng(1)
    for n in (1, 511, 5000, 12345):
        audio = (0.1 * rng.standard_normal(n)).astype(np.float32)
        expected = _essentiaone_pass(es, config, audio)
        got = one_pass(config, audio)
        assert got.shape == expected.shape, n
        np.testing.assert_allclose(got, expected, atol=0.01, rtol=0)
