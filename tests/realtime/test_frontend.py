"""Streaming mel frames equal one-pass frames of the same signal."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from models import FrontendConfig
from models.frontend import ESSENTIA_JAMENDO, MelFrontend
from models.musicnn import MUSICNN_FRONTEND
from realtime.frontend import StreamingMel


def one_pass(config, audio):
    """What ``MelFrontend`` gives for the whole signal at once."""
    with torch.inference_mode():
        return MelFrontend(config)(torch.from_numpy(audio)[None])[0].numpy()


def streamed(config, audio, block_sizes):
    """What ``StreamingMel`` gives for the signal pushed in blocks of these sizes (cycled), then flushed."""
    stream = StreamingMel(config)
    chunks, pos, i = [], 0, 0
    while pos < audio.size:
        n = block_sizes[i % len(block_sizes)]
        chunks.append(stream.push(audio[pos : pos + n]).numpy())
        pos, i = pos + n, i + 1
    chunks.append(stream.flush().numpy())
    return np.concatenate(chunks, axis=1)


@pytest.mark.parametrize("blocks", [[1], [7, 300, 1024], [256], [48000]])
def test_streaming_equals_one_pass_on_music(shared_data, blocks):
    audio, _ = sf.read(shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg", dtype="float32")
    audio = audio[: 16000 * 4 + 123]  # a length that is no multiple of the hop
    expected = one_pass(MUSICNN_FRONTEND, audio)
    got = streamed(MUSICNN_FRONTEND, audio, blocks)
    assert got.shape == expected.shape == (96, audio.size // 256 + 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_frames_come_out_as_soon_as_their_samples_arrive():
    stream = StreamingMel(MUSICNN_FRONTEND)
    # Frame 0 is centred on sample 0 and needs samples up to 256 (the reflection of 1..256).
    assert stream.push(np.zeros(256, np.float32)).shape[1] == 0
    assert stream.push(np.zeros(1, np.float32)).shape[1] == 1
    assert stream.push(np.zeros(254, np.float32)).shape[1] == 0
    assert stream.push(np.zeros(1, np.float32)).shape[1] == 1  # frame 1 (centre 256) needs up to 511


@pytest.mark.parametrize(
    "config",
    [
        FrontendConfig(sample_rate_hz=12000, n_fft=512, hop_length=256, f_max_hz=6000.0, scaling="db"),
        FrontendConfig(sample_rate_hz=16000, n_fft=400, hop_length=160, n_mels=64, center=False),
        ESSENTIA_JAMENDO,  # its own window and filters, put into nnAudio's module after it is built
    ],
)
def test_other_frontends_stream_exactly_too(config):
    audio = np.random.default_rng(0).standard_normal(5000).astype(np.float32) * 0.1
    np.testing.assert_allclose(streamed(config, audio, [333]), one_pass(config, audio), rtol=1e-4, atol=1e-3)


def test_signal_shorter_than_half_a_frame():
    audio = np.full(100, 0.1, np.float32)
    np.testing.assert_allclose(
        streamed(MUSICNN_FRONTEND, audio, [30]), one_pass(MUSICNN_FRONTEND, audio), rtol=1e-5, atol=1e-6
    )


def test_frames_wait_for_a_batch_when_asked_and_stay_exact(shared_data):
    """``min_frames``: a push completes no frame until that many are complete, then all at once
    (one call into the mel per window instead of one per block); the frames are unchanged, and
    ``samples_for`` says exactly how many samples complete them."""
    audio, _ = sf.read(shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg", dtype="float32")
    audio = audio[: 16000 * 2]
    stream, chunks, pos = StreamingMel(MUSICNN_FRONTEND), [], 0
    while pos + (needed := stream.samples_for(16)) <= audio.size:
        if needed > 1:  # one sample short of the batch: nothing yet
            assert stream.push(audio[pos : pos + needed - 1], min_frames=16).shape[1] == 0
            pos += needed - 1
        frames = stream.push(audio[pos : pos + 1], min_frames=16)
        pos += 1
        assert frames.shape[1] == 16
        chunks.append(frames.numpy())
    assert len(chunks) == 7
    chunks.append(stream.push(audio[pos:]).numpy())  # the rest, frame by frame as it comes
    chunks.append(stream.flush().numpy())
    np.testing.assert_allclose(
        np.concatenate(chunks, axis=1), one_pass(MUSICNN_FRONTEND, audio), rtol=1e-4, atol=1e-4
    )
