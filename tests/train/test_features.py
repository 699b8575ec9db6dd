"""Features for training: decoding, the on-disk mel cache, crops, and the engine's windows."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf
import torch

import models
import train.features
from models.frontend import ESSENTIA_JAMENDO, FrontendConfig, MelFrontend
from models.windowing import hop_frames, window_starts
from train.features import DecodeError, FeatureCache, centre_crop, decode, random_crop, windows
from train.fit import embed_windows

CLIP = "4q/audio/Q1/MT0000040632.ogg"  # 16 kHz mono Opus, 30 s


@pytest.fixture(scope="module")
def clip(shared_data):
    return shared_data / CLIP


@pytest.fixture
def short_wav(clip, tmp_path):
    """The clip's first 8 s as a 16 kHz WAV in tmp_path (quick to decode and analyse)."""
    audio, rate = sf.read(clip, dtype="float32")
    path = tmp_path / "short.wav"
    sf.write(path, audio[: 8 * rate], rate, subtype="FLOAT")
    return path


# -- decode --------------------------------------------------------------------------------


def test_decode_resamples_16k_to_12k(clip, tmp_path):
    n = sf.info(clip).frames
    audio = decode(clip, 12000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == round(n * 12000 / 16000) == 360720
    odd = tmp_path / "odd.wav"
    sf.write(odd, sf.read(clip, dtype="float32")[0][:16001], 16000)
    assert len(decode(odd, 12000)) == round(16001 * 0.75) == 12001
    assert len(decode(clip, 16000)) == n  # no resampling at the file's own rate


def test_decode_mixes_channels_to_mono(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(8000, 2)).astype(np.float32)
    sf.write(tmp_path / "stereo.wav", stereo, 8000, subtype="FLOAT")
    np.testing.assert_allclose(decode(tmp_path / "stereo.wav", 8000), stereo.mean(axis=1), atol=1e-7)


def test_decode_errors(tmp_path):
    (tmp_path / "junk.ogg").write_bytes(b"not audio at all" * 64)
    with pytest.raises(DecodeError, match=r"cannot decode .*junk\.ogg"):
        decode(tmp_path / "junk.ogg", 16000)
    with pytest.raises(FileNotFoundError, match=r"no such audio file: .*absent\.ogg"):
        decode(tmp_path / "absent.ogg", 16000)


# -- the cache -----------------------------------------------------------------------------


def test_cache_hit_on_the_second_call(short_wav, tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache", FrontendConfig())
    first = cache.mel(short_wav)
    assert cache.stats == {"hits": 0, "misses": 1, "passthrough": 0}
    entry = cache.entry(short_wav)
    stamp = entry.stat().st_mtime_ns
    # The one-pass MelFrontend on the decoded file, nothing else.
    with torch.no_grad():
        expected = MelFrontend(FrontendConfig())(torch.from_numpy(decode(short_wav, 16000))[None])[0].numpy()
    np.testing.assert_array_equal(first, expected)
    assert first.shape == (96, FrontendConfig().n_frames(8 * 16000))

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached file was decoded again")

    monkeypatch.setattr(train.features, "decode", no_decoding)
    again = FeatureCache(tmp_path / "cache", FrontendConfig()).mel(short_wav)  # a new process, same disk
    np.testing.assert_array_equal(again, first)
    second = cache.mel(short_wav)
    assert cache.stats == {"hits": 1, "misses": 1, "passthrough": 0}
    np.testing.assert_array_equal(second, first)
    assert entry.stat().st_mtime_ns == stamp
    assert [p.name for p in entry.parent.iterdir() if p.suffix == ".tmp"] == []


def test_changed_frontend_or_file_is_a_new_entry(short_wav, tmp_path):
    base = FeatureCache(tmp_path / "cache", FrontendConfig())
    base.mel(short_wav)
    other = FeatureCache(tmp_path / "cache", FrontendConfig(log_gain=100.0))
    mel = other.mel(short_wav)
    assert other.misses == 1 and other.entry(short_wav) != base.entry(short_wav)
    assert mel.shape == base.mel(short_wav).shape and not np.array_equal(mel, base.mel(short_wav))
    narrow = FeatureCache(tmp_path / "cache", FrontendConfig(n_mels=64))
    assert narrow.mel(short_wav).shape[0] == 64
    assert len(list((tmp_path / "cache").glob("*/frontend.json"))) == 3
    # Touching the file (new mtime) invalidates its entry.
    os.utime(short_wav, ns=(short_wav.stat().st_atime_ns, short_wav.stat().st_mtime_ns + 10**9))
    before = base.misses
    base.mel(short_wav)
    assert base.misses == before + 1


def test_npy_passthrough(tmp_path):
    mel = np.random.default_rng(0).normal(size=(96, 200)).astype(np.float32)
    np.save(tmp_path / "948.npy", mel)
    cache = FeatureCache(tmp_path / "cache", ESSENTIA_JAMENDO)
    np.testing.assert_array_equal(cache.mel(tmp_path / "948.npy"), mel)
    assert cache.stats == {"hits": 0, "misses": 0, "passthrough": 1}
    assert not list(cache.dir.glob("*.npy"))  # nothing cached
    np.save(tmp_path / "narrow.npy", mel[:64])
    with pytest.raises(ValueError, match=r"narrow\.npy: mel of shape \(64, 200\), expected \(96, frames\)"):
        cache.mel(tmp_path / "narrow.npy")


# -- crops and windows ----------------------------------------------------------------------


def test_crops():
    mel = np.arange(3 * 10, dtype=np.float32).reshape(3, 10)
    a = random_crop(mel, 4, np.random.default_rng(5))
    b = random_crop(mel, 4, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    start = int(a[0, 0])
    np.testing.assert_array_equal(a, mel[:, start : start + 4])
    np.testing.assert_array_equal(centre_crop(mel, 4), mel[:, 3:7])
    np.testing.assert_array_equal(centre_crop(mel, 10), mel)
    # Shorter than the crop: the track loops (wraps), it is not zero-padded.
    np.testing.assert_array_equal(centre_crop(mel, 25), np.tile(mel, 3)[:, :25])
    looped = random_crop(mel, 25, np.random.default_rng(1))
    start = int(looped[0, 0])
    np.testing.assert_array_equal(looped, np.tile(mel, 4)[:, start : start + 25])
    with pytest.raises(ValueError, match="no frames"):
        centre_crop(mel[:, :0], 4)


def test_windows_follow_the_windowing_rule():
    mel = np.random.default_rng(0).normal(size=(96, 500)).astype(np.float32)
    w = windows(mel, 187, 62)
    starts = window_starts(500, 187, 62)
    assert w.shape == (len(starts), 96, 187) == (6, 96, 187)
    for patch, s in zip(w, starts, strict=True):
        np.testing.assert_array_equal(patch, mel[:, s : s + 187])
    assert windows(mel[:, :186], 187, 62).shape == (0, 96, 187)


def test_windows_are_the_windows_analyze_publishes(short_wav, tmp_path):
    """The engine (``python -m realtime.analyze``'s Analyzer) over the same file: same count, same ends."""
    from realtime.analyzer import Analyzer, Windowing

    model = models.build("musicnn-msd")
    audio, rate = sf.read(short_wav, dtype="float32", always_2d=True)
    analyzer = Analyzer(model, rate, Windowing(hop_s=0.5, context_s=3.0))
    published = []
    for i in range(0, len(audio), 65536):  # analyze's block size
        published += analyzer.feed(audio[i : i + 65536])
    published += analyzer.finish()
    mel = FeatureCache(tmp_path / "cache", model.frontend).mel(short_wav)
    hop = hop_frames(0.5, model.frontend.frame_rate_hz)
    assert hop == analyzer.hop_frames
    ours = windows(mel, model.segment_frames, hop)
    assert len(ours) == len(published) > 0
    ends = [s + model.segment_frames for s in window_starts(mel.shape[1], model.segment_frames, hop)]
    assert ends == [w.end_frame for w in published]


def test_cached_embeddings_are_per_encoder_not_per_class(clip, tmp_path):
    msd, mtt = (models.build("segment-attention", encoder=e) for e in ("musicnn-msd", "musicnn-mtt"))
    cache = FeatureCache(tmp_path, msd.frontend)
    mel, hop = cache.mel(clip), hop_frames(3.0, msd.frontend.frame_rate_hz)
    first = embed_windows(msd, mel, hop, cache, clip)
    # Same class, same frontend, other weights: before, it was handed musicnn-msd's cached windows.
    other = embed_windows(mtt, mel, hop, cache, clip)
    assert first.shape == other.shape and not np.allclose(first, other, atol=1e-2)
    with torch.no_grad():
        direct = mtt.eval().encode(torch.from_numpy(mel[:, : mtt.segment_frames]).float()[None])[0].numpy()
    np.testing.assert_allclose(other[0], direct, atol=1e-4)
    assert np.array_equal(embed_windows(mtt, mel, hop, cache, clip), other)  # a cache hit now
    names = sorted(p.name.split(".")[1] for p in tmp_path.rglob("*.emb-*"))
    assert names == [f"emb-musicnn-msd-h{hop}", f"emb-musicnn-mtt-h{hop}"]
    untrained = models.build("segment-attention", encoder="musicnn-msd", encoder_pretrained=False)
    embed_windows(untrained, mel, hop, cache, clip)  # random weights: computed, never cached
    assert len(list(tmp_path.rglob("*.emb-*"))) == 2
    # Two encoders joined: their cached windows side by side, nothing new computed or cached.
    joined = models.build("segment-attention", encoder="musicnn-msd+musicnn-mtt")
    np.testing.assert_array_equal(
        embed_windows(joined, mel, hop, cache, clip), np.concatenate([first, other], axis=1)
    )
    assert len(list(tmp_path.rglob("*.emb-*"))) == 2
