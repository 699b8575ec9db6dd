"""The low-delay resampler: accurate, alias-free, block-size independent, and only ~2.5 ms behind."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import soundfile as sf
import soxr

import models
from realtime.analyzer import Analyzer, Windowing
from realtime.resample import LowDelayResampler

# The last two share a small gcd with 16 kHz (L = 2000 and 8000): their outputs are gathered, not
# rows of one product, whose matrix would be L x M.
RATES = [
    (48000, 16000), (44100, 16000), (22050, 16000), (8000, 16000), (96000, 16000), (44100, 12000),
    (44056, 16000), (22254, 16000),
]  # fmt: skip


def run(r: LowDelayResampler, x: np.ndarray, block: int) -> list[np.ndarray]:
    out = [r.resample_chunk(x[i : i + block]) for i in range(0, len(x), block)]
    return out + [r.resample_chunk(np.zeros(0, np.float32), last=True)]


def tone(rate: int, hz: float, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * hz * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


@pytest.mark.parametrize(("a", "b"), RATES)
def test_a_tone_comes_out_on_time_and_as_long_as_soxr_makes_it(a, b):
    x = tone(a, 1000.0, 2.0)
    y = np.concatenate(run(LowDelayResampler(a, b), x, 1024))
    assert len(y) == len(soxr.resample(x, a, b, quality="HQ"))
    expected = 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(len(y)) / b)
    middle = slice(len(y) // 8, -len(y) // 8)  # away from the zero padding at either end
    assert np.abs(y[middle] - expected[middle]).max() < 1e-4  # in time (the delay trimmed) and in level


@pytest.mark.parametrize(("a", "b"), [r for r in RATES if r[0] > r[1]])
def test_what_would_alias_is_gone_and_the_pass_band_is_flat(a, b):
    nyquist = min(a, b) / 2
    above = np.concatenate(run(LowDelayResampler(a, b), tone(a, 1.05 * nyquist, 1.0), 999))
    assert 20 * np.log10(np.abs(above[len(above) // 4 : -len(above) // 4]).max() / 0.5) < -75
    inside = np.concatenate(run(LowDelayResampler(a, b), tone(a, 0.85 * nyquist, 1.0), 999))
    assert 20 * np.log10(np.abs(inside[len(inside) // 4 : -len(inside) // 4]).max() / 0.5) == pytest.approx(
        0, abs=0.05
    )


@pytest.mark.parametrize("rate", [44100, 22254])
def test_blocks_of_any_size_give_the_same_samples(rate):
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal(rate)).astype(np.float32)
    whole = np.concatenate(run(LowDelayResampler(rate, 16000), x, len(x)))
    for block in (1, 7, 256, 1024, 10000):
        pieces = np.concatenate(run(LowDelayResampler(rate, 16000), x, block))
        np.testing.assert_allclose(pieces, whole, atol=1e-5)  # float32 sums in another order


@pytest.mark.parametrize("rate", [48000, 44100, 22254, 47999])
def test_its_tables_stay_small_whatever_the_rate(rate):
    """A rate sharing a small gcd with the model's must not build an L x M table of rows (47999 ->
    12 kHz: 12000 x 48000 entries, 2.3 GB); its filter's L phases are what it holds (16 MB there)."""
    r = LowDelayResampler(rate, 12000 if rate == 47999 else 16000)
    held = sum(v.nbytes for v in vars(r).values() if isinstance(v, np.ndarray))
    assert held < r.phases.nbytes + (8 << 20), held


@pytest.mark.parametrize(("a", "b"), RATES)
def test_it_says_exactly_how_many_inputs_the_next_outputs_need(a, b):
    """``inputs_for(k)`` more input samples give k more outputs, one fewer gives fewer, whatever
    blocks came before (the engine sleeps until that many are in: ``Pipeline.samples_wanted``)."""
    rng = np.random.default_rng(0)
    r = LowDelayResampler(a, b)
    for _ in range(40):
        k = int(rng.integers(1, 2000))
        need = r.inputs_for(k)
        assert len(copy.deepcopy(r).resample_chunk(np.zeros(need, np.float32))) >= k
        assert len(copy.deepcopy(r).resample_chunk(np.zeros(need - 1, np.float32))) < k
        r.resample_chunk(rng.standard_normal(int(rng.integers(0, 3000))).astype(np.float32))
    assert r.inputs_for(0) == 0


def test_it_holds_back_only_its_group_delay_every_block():
    ours, theirs = LowDelayResampler(48000, 16000), soxr.ResampleStream(48000, 16000, 1, "float32", "HQ")
    assert ours.delay_s < 0.003
    given = out_ours = out_theirs = 0
    held_theirs = []
    for block in tone(48000, 440.0, 1.0).reshape(-1, 1000)[:15]:  # 21 ms blocks
        given += len(block)
        out_ours += len(ours.resample_chunk(block))
        out_theirs += len(theirs.resample_chunk(block))
        # Every output whose inputs have arrived is out: what is missing is the delay (+1 sample).
        assert -1 < given / 3 - out_ours - ours.delay_out <= 1
        held_theirs.append(given / 3 - out_theirs)
    # soxr HQ in the same blocks holds back several times as much (~20 ms on average).
    assert np.mean(held_theirs[3:]) > 4 * ours.delay_out


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="positive"):
        LowDelayResampler(0, 16000)
    r = LowDelayResampler(48000, 16000)
    r.resample_chunk(np.zeros(10, np.float32), last=True)
    with pytest.raises(RuntimeError, match="flushed"):
        r.resample_chunk(np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="--resampler must be one of hq, low-delay"):
        Windowing(resampler="fast")


def test_the_model_hears_the_same_music_through_either_resampler(music_clip):
    musicnn_msd = models.build("musicnn-msd")
    audio, rate = sf.read(music_clip, dtype="float32", always_2d=True)
    audio = soxr.resample(audio, rate, 44100, quality="VHQ")[: 44100 * 8]  # a 44.1 kHz source
    out = {}
    for resampler in ("hq", "low-delay"):
        analyzer = Analyzer(musicnn_msd, 44100, Windowing(resampler=resampler))
        windows = [w for i in range(0, len(audio), 1024) for w in analyzer.feed(audio[i : i + 1024])]
        windows += analyzer.finish()
        out[resampler] = np.stack([w.outputs["tags"] for w in windows])
    assert out["hq"].shape == out["low-delay"].shape and len(out["hq"]) >= 5
    assert np.abs(out["hq"] - out["low-delay"]).max() < 0.03
