"""The engine's hot paths for one hop of the default model, and the hand-rolled alternatives.

``python -m pytest bench/suite -n 0 --benchmark-only`` times them (pytest-benchmark's statistics, grouped
by stage); ``--benchmark-disable`` runs each once with its checks, as CI does.  The figures
of record come from ``python -m bench latency``, which times them inside one running hop.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench import alternatives
from models.frontend import MelFrontend
from realtime.analyzer import Analyzer, Member, Windowing
from realtime.engine import Engine, FeedConfig
from realtime.frontend import StreamingMel
from realtime.resample import LowDelayResampler

# -- resampling: a quarter second of a 48 kHz device or a 44.1 kHz file to the model's rate ----


@pytest.mark.benchmark(group="resample")
@pytest.mark.parametrize("rate_hz", [48000, 44100])
def test_low_delay_resampler_quarter_second(benchmark, model, rate_hz):
    resampler = LowDelayResampler(rate_hz, model.frontend.sample_rate_hz)
    rng = np.random.default_rng(0)
    quarter = (0.1 * rng.standard_normal(rate_hz // 4)).astype(np.float32)
    resampler.resample_chunk(quarter)  # a running stream's history
    out = benchmark(resampler.resample_chunk, quarter)
    assert abs(len(out) - model.frontend.sample_rate_hz // 4) <= 1


# -- mel: one hop's new frames (ours) against a whole window every hop -----------------------


@pytest.mark.benchmark(group="mel")
def test_streaming_mel_push_one_hop(benchmark, model, hop_audio):
    fe = model.frontend
    mel = StreamingMel(fe)
    mel.push(np.zeros(model.segment_frames * fe.hop_length, np.float32))  # a running stream's history
    frames = benchmark(mel.push, hop_audio)
    assert frames.shape == (fe.n_mels, hop_audio.size // fe.hop_length)


@pytest.mark.benchmark(group="mel")
def test_nnaudio_mel_per_window(benchmark, model, window_audio):
    frontend = MelFrontend(model.frontend).eval()
    audio = torch.from_numpy(window_audio).unsqueeze(0)

    def mel():
        with torch.inference_mode():
            return frontend(audio)[0]

    assert benchmark(mel).shape == (model.frontend.n_mels, model.segment_frames)


@pytest.mark.benchmark(group="mel")
def test_librosa_mel_per_window(benchmark, model, window_audio):
    mel = benchmark(alternatives.librosa_mel, window_audio, model.frontend)
    assert mel.shape == (model.frontend.n_mels, model.segment_frames) and mel.dtype == np.float32


@pytest.mark.benchmark(group="mel")
def test_torchaudio_mel_per_window(benchmark, model, window_audio):
    try:
        module = alternatives.torchaudio_mel(model.frontend)
    except alternatives.Unsupported as exc:
        pytest.skip(str(exc))
    audio = torch.from_numpy(window_audio)

    def mel():
        with torch.inference_mode():
            return alternatives.scale(module(audio), model.frontend)

    assert benchmark(mel).shape == (model.frontend.n_mels, model.segment_frames)


# -- the model: one segment through the encoder, then pooling + heads ------------------------


@pytest.mark.benchmark(group="encoder")
def test_encoder_one_segment_torch(benchmark, model, torch_runner, patch):
    assert benchmark(torch_runner.encode, patch).shape == (1, model.embedding_dim)


@pytest.mark.benchmark(group="encoder")
def test_encoder_one_segment_onnx(benchmark, model, onnx_runner, patch):
    assert benchmark(onnx_runner.encode, patch).shape == (1, model.embedding_dim)


@pytest.mark.benchmark(group="pool_heads")
def test_pool_heads_torch(benchmark, model, torch_runner, patch, context_segments):
    embeddings = torch_runner.encode(patch).unsqueeze(1).expand(1, context_segments, -1)  # (1, K, D)
    logits = benchmark(torch_runner.pool_predict, embeddings)
    assert {h: v.shape[1] for h, v in logits.items()} == {h: len(s.labels) for h, s in model.heads.items()}


@pytest.mark.benchmark(group="pool_heads")
def test_pool_heads_onnx(benchmark, model, onnx_runner, patch, context_segments):
    embeddings = onnx_runner.encode(patch).unsqueeze(1).expand(1, context_segments, -1)  # (1, K, D)
    logits = benchmark(onnx_runner.pool_predict, embeddings)
    assert {h: v.shape[1] for h, v in logits.items()} == {h: len(s.labels) for h, s in model.heads.items()}


# -- the feed: smoothing, hysteresis, JSON and a ZeroMQ send -----------------------------------


@pytest.mark.benchmark(group="feed")
def test_feed_publish(benchmark, model, torch_runner, hop_audio, publisher):
    fe = model.frontend
    analyzer = Analyzer(model, fe.sample_rate_hz, Windowing(), runner=torch_runner)
    (window,) = analyzer.feed(
        np.concatenate([np.zeros(model.segment_frames * fe.hop_length, np.float32), hop_audio])
    )[-1:]
    engine = Engine(None, [Member("default", model, torch_runner)], Windowing(), publisher, FeedConfig())
    engine.open(fe.sample_rate_hz)
    sent: list[dict] = []
    engine.on_mood = sent.append
    benchmark(engine.handle, [(0, window)])  # the engine's feed logic and publish step, as listen's
    message = sent[-1]
    assert message["tags"] and all(0.0 <= p <= 1.0 for p in message["tags"].values())


# -- a whole hop: the engine's (ours) against the hand-rolled librosa loop --------------------


@pytest.mark.benchmark(group="hop")
def test_engine_hop_torch(benchmark, model, hop_audio):
    fe = model.frontend
    analyzer = Analyzer(model, fe.sample_rate_hz, Windowing())
    analyzer.feed(np.zeros(model.segment_frames * fe.hop_length, np.float32))  # the first window is out
    windows = benchmark(analyzer.feed, hop_audio)
    assert len(windows) == 1 and set(windows[0].outputs) == set(model.heads)


@pytest.mark.benchmark(group="hop")
def test_hand_rolled_librosa_hop_torch(benchmark, model, hop_audio):
    pipeline = alternatives.WindowPipeline(
        "librosa+torch", model, torch.device("cpu"), lambda w: alternatives.librosa_mel(w, model.frontend)
    )
    outputs, _, _ = benchmark(pipeline.step, hop_audio)
    assert set(outputs) == set(model.heads)
