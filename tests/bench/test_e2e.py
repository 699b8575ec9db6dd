"""``python -m bench e2e`` runs the real listen, paced, and writes its tables, JSON and chart (a quick round)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.e2e import PARTS
from bench.harness import ListenProcess, Subscriber
from bench.paced_mic import missing
from tests.bench.refused import refused

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"
MODEL = "musicnn-msd"  # the default model's encoder: the same cost, without depending on the trained artifact


def e2e(*options: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", "e2e", *options],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check_result(result: dict, source: str) -> None:
    assert (result["model"], result["backend"], result["source"]) == (MODEL, "torch", source)
    # 10 s of audio: windows end at 2.99 s, then every 0.256 s (listen's default reaction): 28 for
    # a file; a capture device may go on a period or two past the clip (a 29th window).
    assert 24 <= result["moods"] <= 30 and result["missed"] == 0, result
    assert result["hop_s"] == pytest.approx(0.256)
    lag = result["lag_ms"]
    assert lag["p50"] <= lag["p95"] <= lag["p99"] <= lag["max"]
    # Where it goes: the engine's own stages (its status's process_ms), and the transport here.
    parts = result["parts_ms"]
    assert set(parts) == {*PARTS, "hop"}
    assert parts["encoder"]["p50"] > 0 and parts["mel"]["p50"] > 0 and parts["transport"]["p50"] >= 0
    assert parts["hop"]["p50"] <= lag["p50"]  # the engine's work is part of the lag
    assert "inherent" in result


def test_file_source_writes_tables_json_and_png(tmp_path, shared_data):
    out, png = tmp_path / "e2e.json", tmp_path / "e2e.png"
    proc = e2e(
        "--models", MODEL, "--sources", "file", "--seconds", "10", "--json", str(out), "--plot", str(png)
    )
    assert proc.returncode == 0, proc.stderr
    assert "p99<=50" in proc.stdout and "where the lag goes" in proc.stdout
    assert "file blocks of 160 frames at 16000 Hz = 10.0 ms" in proc.stdout
    report = json.loads(out.read_text())
    assert {"machine", "date", "command", "clip", "seconds", "target_p99_ms", "results", "table"} <= set(
        report
    )
    assert report["command"].startswith(f"python -m bench e2e --models {MODEL} --sources file --seconds 10")
    assert report["machine"]["cpu"] and report["seconds"] == 10 and report["target_p99_ms"] == 50
    [result] = report["results"]
    check_result(result, "file")
    assert png.read_bytes()[:8] == PNG


def test_paced_device_source(tmp_path, shared_data):
    why = missing()
    if why:
        pytest.skip(why)
    out = tmp_path / "e2e.json"
    proc = e2e("--models", MODEL, "--sources", "device", "--seconds", "10", "--json", str(out))
    if proc.returncode == 1 and "jackd (dummy backend) did not start" in proc.stderr:
        pytest.skip(proc.stderr.strip()[-300:])
    assert proc.returncode == 0, proc.stderr
    [result] = json.loads(out.read_text())["results"]
    check_result(result, "device")
    assert "device periods of 1024 frames at 48000 Hz" in result["inherent"]


def test_bad_options_are_clear(capsys):
    assert "unknown sources ['radio']" in refused(capsys, "e2e", "--sources", "file,radio")
    assert "--seconds must be at least 5" in refused(capsys, "e2e", "--seconds", "1")


def test_listen_process_stops_cleanly_on_one_signal_and_reports_failures(tmp_path, shared_data):
    clip = sorted((shared_data / "4q" / "audio" / "Q1").glob("*.ogg"))[0]
    proc = ListenProcess(["--file", str(clip), "--realtime"], tmp_path, "ok", model=MODEL)
    sub = Subscriber([proc.endpoint])
    try:
        deadline = time.monotonic() + 120
        while not sub.feeds[proc.endpoint].statuses and time.monotonic() < deadline:
            assert proc.proc.poll() is None, proc.error()
            sub.poll(0.1)
        proc.terminate()
        proc.terminate()  # asked once: a second SIGTERM would be listen's hard interrupt
        assert proc.stop() == 0, proc.error()
    finally:
        sub.close()
    bad = ListenProcess(["--file", str(tmp_path / "nothing.wav")], tmp_path, "bad", model=MODEL)
    assert bad.proc.wait(120) == 2 and bad.stop() == 2
    assert bad.error().startswith("exit code 2: ") and "nothing.wav" in bad.error()
