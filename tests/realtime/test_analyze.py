"""``python -m realtime.analyze``: the engine over a file, one JSON line per window."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from models.musicnn import MSD_LABELS
from realtime.feed import validate

REPO = Path(__file__).resolve().parents[2]


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "realtime.analyze", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_json_windows_match_the_reference_taggram(shared_data):
    ref = np.load(shared_data / "reference" / "musicnn" / "MSD_musicnn.npz")
    clip = shared_data / str(ref["files"][1])
    # A hop of one segment and no pooling gives the reference's non-overlapping patches.
    started = time.time()
    proc = analyze(str(clip), "--model", "musicnn-msd", "--json", "--hop", "2.992", "--context", "2.9")
    ended = time.time()
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(lines) == len(ref["t1"])
    for line, expected in zip(lines, ref["t1"], strict=True):
        validate("mood", line)  # what listen publishes: the mood message, every key of it
        # Read as fast as it goes: the time from reading to publishing, inside the run.
        assert started <= line["t_capture"] <= line["t_publish"] <= ended, (started, line["t_capture"])
        assert line["valence"] is None and line["arousal"] is None
        got = np.array([line["tags"][name] for name in MSD_LABELS])
        np.testing.assert_allclose(got, expected, atol=1e-3)
    assert "x real time" in proc.stderr


def test_default_windows_and_readable_output(shared_data):
    proc = analyze(
        str(shared_data / "emotify" / "audio" / "rock" / "120.ogg"), "--model", "musicnn-msd", "--top", "3"
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 58  # 60 s, windows from 2.99 s every 0.992 s (plus the end pad)
    assert lines[0].split()[0] == "2.99s" and len(lines[0].split()) == 1 + 2 * 3


def test_bad_files_and_short_files(tmp_path):
    proc = analyze(str(tmp_path / "absent.wav"))
    assert proc.returncode == 2 and "absent.wav" in proc.stderr
    garbage = tmp_path / "garbage.flac"
    garbage.write_bytes(b"fLaC" + bytes(range(256)) * 10)
    proc = analyze(str(garbage))
    assert proc.returncode == 2 and "garbage.flac" in proc.stderr
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(8000, np.float32), 16000)
    proc = analyze(str(short), "--json")
    assert (
        proc.returncode == 0
        and proc.stdout == ""
        and "warning: no result: the file" in proc.stderr
        and "less than one 2.99 s segment" in proc.stderr
    )


def test_damaged_samples_are_reported_and_bad_options_exit_2(shared_data, tmp_path, capsys):
    from realtime import analyze as analyze_module

    audio, rate = sf.read(shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg", dtype="float32")
    audio = audio[: 4 * rate].copy()
    audio[100:107] = np.nan
    audio[200:203] = np.inf
    audio[300:305] = 1.5
    damaged = tmp_path / "damaged.wav"
    sf.write(damaged, audio, rate, subtype="FLOAT")
    assert analyze_module.main([str(damaged), "--model", "musicnn-msd"]) == 0
    err = capsys.readouterr().err
    assert "10 NaN/Inf samples were replaced by silence" in err and "5 samples at or past full scale" in err
    # The exit-status convention: 2 and one line for whatever stops a command from starting.
    for args, words in (
        (["--smooth", "-1"], "--smooth: -1 is out of range"),
        (["--model", "nope"], "unknown model"),
        (["--hop", "0"], "--hop: 0 is out of range"),
    ):
        try:
            analyze_module.main([str(damaged), *args])
        except SystemExit as exc:
            code = exc.code
        assert code == 2 and words in capsys.readouterr().err, args


def test_onnx_backend_gives_the_same_windows(shared_data):
    clip = str(shared_data / "4q" / "audio" / "Q3" / "MT0000044741.ogg")
    runs = {}
    for backend in ("torch", "onnx"):
        proc = analyze(clip, "--json", "--backend", backend, "--hop", "3")
        assert proc.returncode == 0, proc.stderr
        runs[backend] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "ONNX Runtime with CPUExecutionProvider" in proc.stderr
    assert len(runs["torch"]) == len(runs["onnx"]) == 10
    for a, b in zip(runs["torch"], runs["onnx"], strict=True):
        assert a["t_stream"] == b["t_stream"]
        assert max(abs(a["tags"][k] - b["tags"][k]) for k in a["tags"]) < 1e-4


def test_any_registered_model_runs_untrained_with_a_loud_warning(shared_data):
    clip = str(shared_data / "emotify" / "audio" / "pop" / "301.ogg")
    proc = analyze(clip, "--json", "--model", "va-cnn", "--hop", "5")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: va-cnn has untrained weights" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines and all(-1 <= ln["valence"] <= 1 and -1 <= ln["arousal"] <= 1 for ln in lines)
    proc = analyze(clip, "--json", "--model", "attention-cnn", "--hop", "5")
    assert proc.returncode == 0, proc.stderr
    tags = json.loads(proc.stdout.splitlines()[0])["tags"]
    assert "genre:jazz" in tags and "valence_class:happy" in tags
    assert abs(sum(v for k, v in tags.items() if k.startswith("genre:")) - 1) < 1e-3


def test_analyze_prints_what_listen_publishes_window_for_window(shared_data, tmp_path):
    """The same clip, with a silent stretch, through analyze --json and through listen's feed
    (both with the default model: no --model)."""
    from tests.realtime.harness import Subscriber, ended, finish, free_endpoint, listen

    audio, rate = sf.read(shared_data / "4q" / "audio" / "Q2" / "MT0000011357.ogg", dtype="float32")
    clip = np.concatenate([audio[: 8 * rate], np.zeros(5 * rate, np.float32), audio[8 * rate : 14 * rate]])
    path = tmp_path / "with-silence.wav"
    sf.write(path, clip, rate)
    endpoint = free_endpoint()
    sub = Subscriber(endpoint)
    try:
        # analyze hops 1 s with stable's dwell: listen --reaction stable, smoothing off.
        proc = listen("--file", str(path), "--reaction", "stable", "--smooth", "0", "--pub", endpoint)
        printed = analyze(str(path), "--json")
        sub.collect(ended, 120)
        code, err = finish(proc)
        assert code == 0, err
        sub.drain()
        published = sub.moods()
    finally:
        sub.close()
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert len(lines) == len(published) == 17  # 19 s: windows end at 2.99 s, then every 0.992 s
    for line, mood in zip(lines, published, strict=True):
        validate("mood", line)
        assert set(line) == set(mood)
        assert (line["t_stream"], line["silent"], line["active"]) == (
            mood["t_stream"],
            mood["silent"],
            mood["active"],
        )
        assert max(abs(line["tags"][n] - mood["tags"][n]) for n in mood["tags"]) <= 1e-6
        if mood["silent"]:
            assert line["valence"] is line["arousal"] is mood["valence"] is mood["arousal"] is None
        else:
            assert (
                abs(line["valence"] - mood["valence"]) <= 1e-6
                and abs(line["arousal"] - mood["arousal"]) <= 1e-6
            )
    assert sum(m["silent"] for m in published) >= 2  # the silent stretch showed
    # No --model: the shipped artifact, its valence/arousal and its three vocabularies of tags.
    assert all(m["model"] == "default" for m in published)
    assert all(-1 <= m["valence"] <= 1 and -1 <= m["arousal"] <= 1 for m in published if not m["silent"])
    assert {"calmness", "power", "tension", "Gloomy", "Happy", "rock", "jazz"} <= set(published[0]["tags"])
    # The mood state and the tags by vocabulary, as the lights get them.
    from models import resolve
    from models.musicnn import MSD_LABELS
    from train.datasets import GEMS

    heads = resolve("default").heads
    for line, mood in zip(lines, published, strict=True):
        assert line["state"] == mood["state"] and line["moods"] == mood["moods"]
        assert all(round(p, 5) == p for p in mood["tags"].values())  # five decimals, no float tails
        if mood["silent"]:
            assert mood["state"] == "silent" and mood["state_p"] is None
            assert mood["moods"] == mood["emotions"] == mood["descriptors"] == []
            continue
        assert mood["state"] in ("energetic-happy", "tense-angry", "sad-dark", "calm-tender")
        assert abs(sum(mood["state_p"].values()) - 1) < 1e-3
        for vocabulary, labels in (
            ("moods", heads["mood"].labels),
            ("emotions", GEMS),
            ("descriptors", MSD_LABELS),
        ):
            names = mood[vocabulary]
            assert len(names) <= 3 and set(names) <= set(labels) & set(mood["active"]), (vocabulary, names)
            assert [mood["tags"][n] for n in names] == sorted((mood["tags"][n] for n in names), reverse=True)
    # Music after silence takes the leading state at once; inside music it holds for the dwell.
    after = next(i for i, m in enumerate(published) if i and published[i - 1]["silent"] and not m["silent"])
    lead = max(published[after]["state_p"], key=published[after]["state_p"].get)
    assert published[after]["state"] == lead
    assert any(m["moods"] or m["emotions"] for m in published), "no mood or emotion ever active"


def test_an_m4a_file_is_read_through_ffmpeg(shared_data, tmp_path, capsys):
    """libsndfile cannot read AAC: the same file option goes through ffmpeg instead."""
    from realtime import analyze as analyze_module

    clip = shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg"
    m4a = tmp_path / "clip.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(clip), "-t", "8", "-c:a", "aac", str(m4a)],
        check=True,
    )
    # The same file with a stretch of its audio data garbled: ffmpeg skips what it cannot decode.
    data = bytearray(m4a.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes((b * 7 + 13) & 0xFF for b in data[middle : middle + 2000])
    damaged = tmp_path / "damaged.m4a"
    damaged.write_bytes(bytes(data))
    runs, said = {}, {}
    for path in (m4a, clip, damaged):
        capsys.readouterr()
        assert analyze_module.main([str(path), "--json", "--model", "musicnn-msd"]) == 0
        out, said[path.name] = capsys.readouterr()
        runs[path.name] = [json.loads(line) for line in out.splitlines()]
    # Said at the end, as a warning (the moods went on over the rest); none for the sound file.
    assert "warning: ffmpeg met damaged data" not in said["clip.m4a"], said["clip.m4a"]
    assert re.search(r"^warning: ffmpeg met damaged data in \S+damaged\.m4a \(\d+ error messages?, the first: .+\); "
                     "what it could not decode was skipped$", said["damaged.m4a"], re.MULTILINE), said["damaged.m4a"]  # fmt: skip
    assert len(runs["clip.m4a"]) == 6  # 8 s: windows at 2.99 s, then every 0.992 s (the last at 7.95 s)
    for a, b in zip(runs["clip.m4a"], runs[clip.name], strict=False):
        assert a["t_stream"] == b["t_stream"]
        top_a = sorted(a["tags"], key=a["tags"].get)[-5:]
        top_b = sorted(b["tags"], key=b["tags"].get)[-5:]
        assert len(set(top_a) & set(top_b)) >= 4  # AAC at 128 kb/s: the same music


def test_a_flac_written_to_a_pipe_is_read_to_its_end(shared_data, tmp_path, capsys):
    """Such a FLAC says no length: libsndfile, seeking for one at its end, failed there (exit 1,
    "Internal psf_fseek() failed", after all the audio); ffmpeg reads it instead, to its end."""
    from realtime import analyze as analyze_module

    clip = shared_data / "4q" / "audio" / "Q1" / "MT0000040632.ogg"
    piped = tmp_path / "piped.flac"
    with piped.open("wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(clip), "-t", "8", "-f", "flac", "-"],
                       stdout=out, check=True)  # fmt: skip
    capsys.readouterr()
    assert analyze_module.main([str(piped), "--json", "--model", "musicnn-msd"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 6 and "error" not in err, err  # 8 s: as the m4a above


def test_a_reaction_sets_what_it_sets_for_listen_and_none_keeps_analyzes_defaults():
    from realtime.analyze import parse_args as analyze_args
    from realtime.listen import parse_args as listen_args

    plain = analyze_args(["clip.wav"])
    assert (plain.hop, plain.smooth, plain.dwell, plain.follow) == (1.0, 0.0, 4.0, 0.0)
    fields = ("hop", "smooth", "dwell", "follow", "state_margin")
    for preset in ("fast", "balanced", "stable"):
        offline, live = analyze_args(["clip.wav", "--reaction", preset]), listen_args(["--reaction", preset])
        assert [getattr(offline, f) for f in fields] == [getattr(live, f) for f in fields], preset
    given = analyze_args(["clip.wav", "--reaction", "balanced", "--smooth", "0"])
    assert (given.hop, given.smooth) == (0.25, 0.0)


def test_one_damaged_sample_is_said_in_the_singular():
    from realtime.session import _samples_were

    assert _samples_were(1) == ("sample", "was") and _samples_were(2) == ("samples", "were")


def test_silence_reads_as_silence_without_tags(tmp_path):
    """A silent window's line says the state and "(silence)", as listen's does: not the whole
    vocabulary at 0.00, and not "silent" twice."""
    path = tmp_path / "quiet.wav"
    sf.write(path, np.zeros(5 * 16000, np.float32), 16000)
    proc = analyze(str(path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and all(line.split()[1:] == ["silent", "(silence)"] for line in lines), lines
