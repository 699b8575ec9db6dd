"""The analysis path on real music: window timing, resampling, sanitising, silence, pooling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import models
from realtime.analyzer import Analyzer, Windowing

CLIP = "4q/audio/Q1/MT0000040632.ogg"


@pytest.fixture(scope="module")
def msd():
    return models.build("musicnn-msd")


@pytest.fixture(scope="module")
def clip(shared_data):
    audio, rate = sf.read(shared_data / CLIP, dtype="float32")
    return audio[: 12 * rate], rate


def _run(model, audio, rate, windowing, block=4096):
    a = Analyzer(model, rate, windowing)
    frames = audio if audio.ndim == 2 else audio[:, None]
    out = []
    for i in range(0, len(frames), block):
        out += a.feed(frames[i : i + block])
    return a, out + a.finish()


def test_one_window_per_hop_after_the_first_segment(msd, clip):
    audio, rate = clip
    a, windows = _run(msd, audio, rate, Windowing(hop_s=0.5, context_s=3.0))
    t = np.array([w.t_stream for w in windows])
    assert t[0] == pytest.approx(187 * 256 / 16000)  # the first full segment
    assert np.allclose(np.diff(t), a.hop_s) and a.hop_s == pytest.approx(0.5, abs=0.01)
    assert t[-1] <= len(audio) / rate + 256 / 16000
    assert [w.seq for w in windows] == list(range(len(windows)))


def test_block_size_does_not_change_the_result(msd, clip):
    audio, rate = clip
    _, small = _run(msd, audio, rate, Windowing(), block=333)
    _, large = _run(msd, audio, rate, Windowing(), block=len(audio))
    assert len(small) == len(large)
    for a, b in zip(small, large, strict=True):
        np.testing.assert_allclose(a.outputs["tags"], b.outputs["tags"], atol=1e-4)


def test_context_pools_the_last_segments(msd, clip):
    audio, rate = clip
    a1, single = _run(msd, audio, rate, Windowing(hop_s=1.0, context_s=3.0))
    a4, pooled = _run(msd, audio, rate, Windowing(hop_s=1.0, context_s=6.0))
    assert a1.context_segments == 1 and a4.context_segments == 4
    assert a4.context_s == pytest.approx(2.992 + 3 * a4.hop_s)
    first = pooled[0].outputs["tags"]
    np.testing.assert_allclose(first, single[0].outputs["tags"], atol=1e-5)  # only one segment yet
    assert np.abs(pooled[5].outputs["tags"] - single[5].outputs["tags"]).max() > 1e-3


def test_a_44k_stereo_device_gives_the_same_windows(msd, clip):
    audio, rate = clip
    stereo = np.stack([soxr.resample(audio, rate, 44100)] * 2, axis=1)
    _, native = _run(msd, audio, rate, Windowing())
    a, resampled = _run(msd, stereo, 44100, Windowing(), block=1024)
    assert [w.t_stream for w in resampled] == [w.t_stream for w in native]
    for x, y in zip(native, resampled, strict=True):
        # Resampling twice removes the top of the band (soxr's passband ends near 7.3 kHz);
        # the tags barely move.
        assert np.abs(x.outputs["tags"] - y.outputs["tags"]).max() < 0.08
        top_x, top_y = set(np.argsort(-x.outputs["tags"])[:5]), set(np.argsort(-y.outputs["tags"])[:5])
        assert len(top_x & top_y) >= 4


def test_nan_inf_and_clipping_are_sanitised_and_counted(msd, clip):
    audio, rate = clip
    dirty = audio.copy()
    dirty[1000:1010] = np.nan
    dirty[2000:2005] = np.inf
    dirty[3000:3003] = 4.0
    already_clipped = int((np.abs(audio) >= 1.0).sum())
    a, windows = _run(msd, dirty, rate, Windowing())
    assert a.sanitized_samples == 15 and a.clipped_samples == already_clipped + 3
    assert all(np.isfinite(w.outputs["tags"]).all() for w in windows)


def test_silence_is_flagged(msd, clip):
    audio, rate = clip
    signal = np.concatenate([audio[: 5 * rate], np.zeros(6 * rate, np.float32), audio[5 * rate :]])
    _, windows = _run(msd, signal, rate, Windowing(hop_s=1.0))
    flags = [(round(w.t_stream), w.silent) for w in windows]
    assert not any(s for t, s in flags if t <= 5 or t >= 13)
    assert all(s for t, s in flags if 7 <= t <= 11)
    assert all(not w.silent and w.level_dbfs > -40 for w in windows[:2])


@pytest.mark.parametrize("hop_s", [0.1, 1.0, 3.0, 3.1, 5.0, 10.0, 100.0])
def test_every_window_is_the_audio_it_ends_at_whatever_the_hop(msd, clip, hop_s):
    """Window ends follow the audio received, never the future: a hop longer than a segment
    once moved the window start past frames not yet arrived (windows ahead of the audio)."""
    from models.runners import TorchRunner
    from tests.realtime.test_frontend import one_pass

    audio, rate = clip
    audio = soxr.resample(audio[: 7 * rate], rate, 16000)  # the model's rate: no resampler in the way
    a, windows = _run(msd, audio, 16000, Windowing(hop_s=hop_s, context_s=3.0), block=1500)
    seg, hop = msd.segment_frames, a.hop_frames
    total_frames = len(audio) // 256 + 1
    assert [w.end_frame for w in windows] == list(range(seg, total_frames + 1, hop))
    assert all(w.t_stream <= len(audio) / 16000 + 256 / 16000 for w in windows)
    mel = torch.from_numpy(one_pass(msd.frontend, audio))
    runner = TorchRunner(msd, "cpu")
    step = max(1, len(windows) // 6)  # a few windows across the clip each (the encoder is the cost)
    picked = windows[::step]
    embeddings = runner.encode(torch.stack([mel[:, w.end_frame - seg : w.end_frame] for w in picked]))
    for w, emb in zip(picked, embeddings, strict=True):
        logits = runner.pool_predict(emb[None, None])
        expected = models.probabilities(msd.heads["tags"], torch.from_numpy(logits["tags"][0])).numpy()
        np.testing.assert_allclose(w.outputs["tags"], expected, atol=1e-4)


def test_bad_windowing_is_rejected():
    with pytest.raises(ValueError, match="--hop"):
        Windowing(hop_s=0)
    with pytest.raises(ValueError, match="--context"):
        Windowing(context_s=float("nan"))


def _members(*pairs):
    from models.runners import TorchRunner
    from realtime.analyzer import Member

    return [Member(name, m, TorchRunner(m, "cpu")) for name, m in pairs]


def _run_multi(members, audio, rate, windowing, block=4096):
    from realtime.analyzer import Pipeline

    a = Pipeline(members, rate, windowing)
    frames = audio[:, None] if audio.ndim == 1 else audio
    out = []
    for i in range(0, len(frames), block):
        out += a.feed(frames[i : i + block])
    return a, out + a.finish()


def _same_windows(got, expected):
    assert [w.t_stream for w in got] == [w.t_stream for w in expected]
    for g, e in zip(got, expected, strict=True):
        assert g.silent == e.silent and g.level_dbfs == pytest.approx(e.level_dbfs, abs=1e-9)
        for head, values in e.outputs.items():
            np.testing.assert_allclose(g.outputs[head], values, atol=1e-6)


def test_models_with_one_frontend_share_one_mel_stream_and_keep_their_windows(msd, clip):
    from models import resolve

    audio, rate = clip
    default, mtt = resolve("default"), models.build("musicnn-mtt")
    windowing = Windowing(hop_s=1.0, context_s=3.0)
    multi, pairs = _run_multi(_members(("default", default), ("musicnn-mtt", mtt)), audio, rate, windowing)
    assert multi.mel_streams == 1
    assert multi.hop_s == pytest.approx(0.992)
    # The other model's window comes first at equal times: a message at the primary's has both.
    assert [i for i, _ in pairs[:2]] == [1, 0]
    for i, model in enumerate((default, mtt)):
        _, alone = _run(model, audio, rate, windowing)
        _same_windows([w for j, w in pairs if j == i], alone)


def test_models_with_different_frontends_and_rates_each_get_their_own(shared_data):
    """default (16 kHz musicnn mels, 3 s) + the Jamendo baseline (12 kHz Essentia mels, 29 s segments)."""
    from models import resolve

    audio, rate = sf.read(shared_data / CLIP, dtype="float32")
    default = resolve("default")
    baseline = models.build(
        "jamendo-baseline", weights=str(shared_data / "mtg-jamendo/baseline/best_model.pth")
    )
    windowing = Windowing(hop_s=1.0, context_s=3.0)
    multi, pairs = _run_multi(
        _members(("default", default), ("jamendo-baseline", baseline)), audio, rate, windowing
    )
    assert multi.mel_streams == 2
    baseline_windows = [w for j, w in pairs if j == 1]
    assert baseline_windows and baseline_windows[0].t_stream == pytest.approx(1366 * 256 / 12000, abs=0.03)
    for i, model in enumerate((default, baseline)):
        _, alone = _run(model, audio, rate, windowing)
        _same_windows([w for j, w in pairs if j == i], alone)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_samples_wanted_never_overshoots_a_window(msd, clip, rate):
    """The engine sleeps until ``samples_wanted`` input frames are in: fewer never complete a
    window (it would wake late), and those complete it (else it wakes early and reads again)."""
    audio, clip_rate = clip
    audio = soxr.resample(audio, clip_rate, rate).astype(np.float32)[: 5 * rate]
    a = Analyzer(msd, rate, Windowing(hop_s=0.25, context_s=3.0, resampler="low-delay"))
    pos, windows, slack = 0, 0, []
    while pos < len(audio) and windows < 6:
        wanted = a.pipeline.samples_wanted()
        assert wanted >= 1
        if wanted > 1:
            assert a.feed(audio[pos : pos + wanted - 1, None]) == []
            pos += wanted - 1
        extra = 0
        while not (out := a.feed(audio[pos : pos + 1, None])):  # one sample at a time to the window
            pos, extra = pos + 1, extra + 1
        pos += 1
        windows += len(out)
        slack.append(extra)
    assert windows == 6
    # Exact at the model's rate, and through the low-delay resampler (``inputs_for``).
    assert slack == [0] * 6
