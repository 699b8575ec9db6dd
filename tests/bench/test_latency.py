"""``python -m bench latency`` runs and writes its table, JSON and chart (a quick round, not a benchmark);
the alternatives it compares against compute the same features as ours."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import models
from bench import alternatives
from bench.latency import encoder_gflop
from models.frontend import MelFrontend
from models.musicnn import MUSICNN_FRONTEND, SEGMENT_FRAMES
from realtime.frontend import StreamingMel
from tests.bench.refused import refused

REPO = Path(__file__).resolve().parents[2]
CLIP = Path("4q") / "audio" / "Q1" / "MT0000040632.ogg"  # under shared data: 16 kHz mono, 30 s

PIPELINES = ["librosa+torch", "torchaudio+torch", "nnaudio-window+torch", "streaming+torch", "streaming+onnx"]


def test_the_default_models_encoder_counts_as_musicnns():
    # It is musicnn-msd, frozen: counted on the inference path it once read 0.12 GFLOP (oneDNN's
    # convolutions are not seen by the counter).  That path convolves only the live filters:
    # 0.28 GFLOP (0.29 with the mid end's dead ones), against 2.80 with every filter.
    assert encoder_gflop(models.resolve("default")) == pytest.approx(
        encoder_gflop(models.build("musicnn-msd"))
    )
    assert 0.27 < encoder_gflop(models.resolve("default")) < 0.31


def test_latency_command_writes_table_json_and_png(tmp_path):
    out, png = tmp_path / "lat.json", tmp_path / "lat.png"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "latency", "--models", "musicnn-msd", "--backends", "torch,torch-whole",
         "--seconds", "3", "--warmup", "1", "--hop", "0.25", "--profile", "8", "--json", str(out), "--plot", str(png)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "encoder p50/p99" in proc.stdout and "musicnn-msd" in proc.stdout
    assert re.search(r"^musicnn-msd +torch +cpu +12 ", proc.stdout, re.MULTILINE), proc.stdout  # hops
    report = json.loads(out.read_text())
    assert [(r["model"], r["backend"]) for r in report["results"]] == [
        ("musicnn-msd", "torch"),
        ("musicnn-msd", "torch-whole"),
    ]  # (ONNX Runtime's runner: tests/models/test_runners.py; its export costs a minute here)
    # A musicnn segment is 0.28 GFLOP of live filters (2.8 with all); hops of 16 frames.
    assert report["hop_s"] == 0.25 and 0.27 < report["encoder_gflop_per_segment"]["musicnn-msd"] < 0.29
    assert "encoder GFLOP per segment (whole window): musicnn-msd 0.28" in proc.stdout
    # The hop it ran at, in whole frames: 16 of 16 ms, not the 0.25 s asked for.
    assert report["model_hop_s"] == {"musicnn-msd": 0.256}
    assert "milliseconds per hop of 0.25 s (0.256 s in whole frames) (p50/p99)" in proc.stdout
    # --profile: where a hop goes, by operator and input shapes; the largest item is the mid end's
    # three convolutions over the window (musicnn's timbral front end goes by FFT, its temporal
    # blocks by matrix products: neither is a tenth of the hop).
    assert "musicnn-msd, torch, hop 0.256 s: " in proc.stdout and "ms per hop" in proc.stdout
    assert "aten::_slow_conv2d_forward (1, 64, 1, 193)" in proc.stdout
    for r in report["results"]:
        assert r["hops"] == 12 and r["setup_s"] >= 0
        ms = r["ms"]
        assert set(ms) == {"mel", "encoder", "pool_heads", "publish", "hop"}
        assert 0 < ms["hop"]["p50"] <= ms["hop"]["p99"]
        assert ms["hop"]["p50"] >= ms["encoder"]["p50"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The alternatives, in the same run, for the default model.
    alt = report["alternatives"]
    assert alt["model"] == "default" and alt["hop_s"] == pytest.approx(0.992)  # (always the default hop)
    assert "streaming+torch" in alt["ours"] and "ratio" in alt
    assert alt["blas_threads"].startswith("1 (")  # threadpoolctl comes with librosa
    assert [p["name"] for p in alt["pipelines"]] == PIPELINES
    rows = {p["name"]: p for p in alt["pipelines"]}
    ta = rows["torchaudio+torch"]
    try:
        import torchaudio  # noqa: F401
    except Exception:
        assert ta["skipped"].startswith("torchaudio not importable (")
    ran = [p for p in alt["pipelines"] if "skipped" not in p]
    assert [p["name"] for p in ran if p["ours"]] == ["streaming+torch"]
    for p in ran:
        assert p["hops"] == 12
        assert 0 < p["ms"]["hop"]["p50"] <= p["ms"]["hop"]["p99"]
        assert p["ms"]["hop"]["p50"] >= p["ms"]["model"]["p50"]
    assert rows["streaming+torch"]["ratio_to_ours"] == {s: {"p50": 1.0, "p99": 1.0} for s in ("mel", "hop")}
    target = alt["target"]
    assert target["vs"] == "librosa+torch" and target["wanted"] == 3.0
    assert target["met"] == (target["ratio_hop_p50"] >= 3.0)
    assert target["ratio_hop_p50"] == rows["librosa+torch"]["ratio_to_ours"]["hop"]["p50"]
    assert target["note"].startswith("met" if target["met"] else "not met")
    assert "alternatives, default model" in proc.stdout and "target (issue 6)" in proc.stdout
    assert "skipped: torchaudio" in proc.stdout or "skipped" not in ta


def test_early_take_times_the_hop_in_listens_reads(monkeypatch):
    """--early-take: each hop read as ``Engine.run`` reads a paced file, so the encoder prepares
    the window near its end, mostly 3 frames before it (the early take), at a quarter-second hop
    and at 1 s (six reads there); the reads before the last are timed as 'early'."""
    from bench.latency import EARLY, STAGES, measure, profile, table
    from models.musicnn import StreamingEncoder
    from realtime.analyzer import PREPARE_MISSING_MAX
    from realtime.publisher import Publisher

    missing = []
    prepare = StreamingEncoder.prepare

    def counted(self, frames, start, end):
        missing.append(end - start - frames.shape[-1])
        prepare(self, frames, start, end)

    monkeypatch.setattr(StreamingEncoder, "prepare", counted)
    with Publisher("tcp://127.0.0.1:0") as publisher:
        for hop_s in (0.25, 1.0):
            missing.clear()
            times = measure("musicnn-msd", "torch", "cpu", 4, 1, publisher, hop_s=hop_s, early_take=True)
            assert set(times.samples_ms) == {EARLY, *STAGES}
            assert all(len(v) == 4 for v in times.samples_ms.values())
            # Near the window's end only (not at every read of a 1 s hop: 49, 36, 23, 10 missing), and
            # mostly at the early take's 3 (the reads' phase against the 10 ms blocks drifts a little).
            assert all(0 < m <= PREPARE_MISSING_MAX for m in missing) and missing.count(3) >= 3, (
                hop_s,
                missing,
            )
            p = times.percentiles()
            assert p[EARLY]["p50"] > 0 and p["encoder"]["p50"] > 0
    assert "early p50/p99" in table([times]).splitlines()[0]
    # --profile --early-take: the operators of both takes, the tails' sums among them.
    missing.clear()
    lines = profile("musicnn-msd", "torch", 0.25, hops=3, early_take=True).splitlines()
    assert lines[0].startswith(
        "musicnn-msd, torch, hop 0.256 s, read as listen reads a paced file (early take 40 ms): "
    )
    assert missing == [3] * 3 and "aten::" in lines[2]


def test_paced_feeds_each_read_when_its_audio_would_be_in(monkeypatch):
    """--paced: the engine gets each read when a live source would have delivered its last sample,
    so consecutive hops start a hop apart (not back to back), and the hop is timed as before."""
    import time

    from bench.latency import STAGES, measure
    from realtime.engine import Engine
    from realtime.publisher import Publisher

    calls = []
    process = Engine.process

    def stamped(self, audio, *args, **kwargs):
        calls.append((time.perf_counter(), len(audio)))
        return process(self, audio, *args, **kwargs)

    monkeypatch.setattr(Engine, "process", stamped)
    with Publisher("tcp://127.0.0.1:0") as publisher:
        times = measure("musicnn-msd", "torch", "cpu", 3, 1, publisher, hop_s=0.25, paced=True)
    assert all(len(times.samples_ms[s]) == 3 for s in STAGES)
    hops = calls[1:]  # after the first window's fill
    hop_s = hops[0][1] / MUSICNN_FRONTEND.sample_rate_hz  # 0.256 s: 16 frames
    gaps = [b[0] - a[0] for a, b in zip(hops, hops[1:], strict=False)]
    # The median: a call that overslept on a loaded machine makes the next gap short (its
    # deadline is the audio's, not the last call's); unpaced calls are all back to back.
    assert len(gaps) == 3 and 0.9 * hop_s < sorted(gaps)[1] < 2 * hop_s, (hop_s, gaps)


def test_compile_backend_runs_or_says_why(tmp_path):
    """torch.compile'd encoder: timed after its compilation, or a row that says why it cannot run."""
    out = tmp_path / "lat.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "latency", "--models", "va-cnn", "--backends", "compile",
         "--alternatives", "none", "--seconds", "3", "--warmup", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (result,) = json.loads(out.read_text())["results"]
    assert result["backend"] == "compile" and "alternatives" not in json.loads(out.read_text())
    if "skipped" in result:
        assert result["skipped"] in proc.stdout and ":" in result["skipped"]
    else:
        assert result["hops"] == 3 and result["setup_s"] > 0 and result["ms"]["encoder"]["p50"] > 0


def test_bad_options_are_clear(capsys):
    err = refused(capsys, "latency", "--backends", "tensorrt")
    assert "unknown backend" in err and "compile" in err
    assert "--profile's hops must be 1..1000" in refused(capsys, "latency", "--profile", "0")


def test_librosa_mel_is_our_frontend_on_a_real_clip(shared_data):
    """The hand-rolled alternative computes musicnn's features, so comparing its time is fair.

    On 3 s of a real clip, librosa's mel (reflect centring, as musicnn's librosa had it) and our
    nnAudio ``MelFrontend`` differ by ~1e-5 in log10(1 + 10^4 mel) (values 0-6);
    librosa >= 0.10's default zero centring would change the first and last frames by up to 1.4.
    Against the engine's streaming patch of the same 3 s, the frames inside the window agree
    as closely; only the first and last differ, which the window's own centring pads reflect.
    """
    path = shared_data / CLIP
    if not path.is_file():
        pytest.skip(f"shared music clip not found at {path}")
    audio, rate = sf.read(path, dtype="float32")
    assert rate == MUSICNN_FRONTEND.sample_rate_hz and audio.ndim == 1
    fe = MUSICNN_FRONTEND
    n = (SEGMENT_FRAMES - 1) * fe.hop_length  # centred frames: 187 of them, as models.export.audio_samples
    start = 10 * rate // fe.hop_length * fe.hop_length  # 10 s in, on a frame boundary
    window = audio[start : start + n]

    ours = MelFrontend(fe).eval()
    with torch.inference_mode():
        one_pass = ours(torch.from_numpy(window).unsqueeze(0))[0].numpy()
    hand = alternatives.librosa_mel(window, fe)
    assert hand.shape == one_pass.shape == (fe.n_mels, SEGMENT_FRAMES)
    assert hand.dtype == np.float32
    # Typically within 9e-6; one fresh-venv CI run saw 1.7e-4 in the quietest top band (a relative
    # 1.5e-4 in float32 power, magnified by the log near zero; the cause is not pinned down).
    # A wrong parameter (centring, norm, f_max, scaling) is off by 1e-2 to 1.
    assert np.abs(hand - one_pass).max() < 5e-4
    assert one_pass.max() > 3  # real music, not silence

    # The engine's frames of the same 3 s, from the stream that ran up to them.
    stream = StreamingMel(fe)
    frames = torch.cat([stream.push(audio[: start + n]), stream.flush()], dim=1).numpy()
    first = start // fe.hop_length
    engine = frames[:, first : first + SEGMENT_FRAMES]
    assert np.abs(hand[:, 1:-1] - engine[:, 1:-1]).max() < 5e-4  # as above
    assert np.abs(hand[:, [0, -1]] - engine[:, [0, -1]]).max() > 1e-3


def test_torchaudio_is_reported_not_raised():
    try:
        module = alternatives.torchaudio_mel(MUSICNN_FRONTEND)
    except alternatives.Unsupported as exc:
        assert str(exc).startswith("torchaudio not importable (")
    else:
        window = 0.1 * torch.randn(16000 * 3)
        mel = alternatives.scale(module(window), MUSICNN_FRONTEND).numpy()
        np.testing.assert_allclose(mel, alternatives.librosa_mel(window.numpy(), MUSICNN_FRONTEND), atol=1e-3)


def _times(name: str, mel_ms: float, model_ms: float) -> alternatives.PipelineTimes:
    t = alternatives.PipelineTimes(name, alternatives.MEL_LABELS[name])
    t.samples_ms = {"mel": [mel_ms] * 3, "model": [model_ms] * 3, "hop": [mel_ms + model_ms] * 3}
    return t


def test_verdict_says_why_the_target_is_missed():
    """The encoder both pipelines share bounds the ratio; the report says so with the numbers."""
    skipped = alternatives.PipelineTimes("torchaudio+torch", "torchaudio, whole window", skipped="why")
    times = [_times("librosa+torch", 3.0, 20.0), skipped, _times("streaming+torch", 0.8, 20.0)]
    report = alternatives.summarise("default", 0.992, 2.992, times)
    target = report["target"]
    assert target["ratio_hop_p50"] == pytest.approx(23.0 / 20.8, abs=0.01) and not target["met"]
    assert target["ratio_mel_p50"] == pytest.approx(3.75)
    assert target["ceiling_with_free_mel_p50"] == pytest.approx(1.15)
    assert target["note"].startswith("not met") and "encoder" in target["note"]
    text = alternatives.table(report)
    assert "skipped: why" in text and "streaming+torch (ours)" in text and "not met" in text

    fast = alternatives.summarise("default", 0.992, 2.992, [_times("librosa+torch", 60.0, 20.0), times[2]])
    assert fast["target"]["met"] and fast["target"]["note"].startswith("met")


def test_machine_reports_the_cores_not_torchs_thread_count():
    """Results files name the machine: its cores stay its cores when torch runs on fewer threads."""
    from bench.report import machine, machine_line

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        info = machine()
    finally:
        torch.set_num_threads(threads)
    assert info["cores"] == len(os.sched_getaffinity(0)) and info["torch_threads"] == 1
    assert f", {info['cores']} cores, torch " in machine_line(info)


def test_cpu_name_tells_two_hosts_of_one_name_apart():
    """A VM may show only "AMD EPYC": the family, model and vector unit say which host a figure is from."""
    from bench.report import cpu_name

    zen5 = "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx avx2 avx512f\n\nprocessor\t: 1\n"
    zen2 = (
        "processor\t: 0\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx avx2\n"
    )
    assert cpu_name(zen5) == "AMD EPYC (family 26 model 2, AVX-512)"
    assert cpu_name(zen2) == "AMD EPYC (family 23 model 49, AVX2)"
    assert cpu_name("model name\t: Some CPU\n") == "Some CPU"
    assert cpu_name().strip()  # this machine's, whatever it is
