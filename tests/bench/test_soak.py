"""``python -m bench soak``: a short round proves the command (the hours-long runs are in RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.refused import refused

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_a_short_soak_counts_every_mood_and_samples_memory(tmp_path, shared_data):  # its clips: 4Q
    """Both modes at once (they mostly wait: the paced one on the clock, the fast one on listen)."""
    runs = {}
    for mode, minutes in (("fast", "1"), ("paced", "0.25")):
        out = tmp_path / f"{mode}.json"
        command = [sys.executable, "-m", "bench", "soak", "--minutes", minutes, "--quiet", "--json", str(out)]
        command += ["--paced", "--plot", str(tmp_path / "soak.png")] if mode == "paced" else []
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        runs[mode] = (proc, out)
    for mode, (proc, out) in runs.items():
        stdout, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-2000:]
        report = json.loads(out.read_text())
        moods = report["moods"]
        # Every window of the audio published and received: nothing lost on the way.
        assert moods["expected"] == moods["published"] == moods["received"] > 0, report
        assert report["gaps"] == 0 and report["dropped_samples"] == 0 and report["exit_code"] == 0, report
        assert report["rss_mb"]["first"] > 50 and report["rss_mb"]["max"] >= report["rss_mb"]["last"] > 0
        assert "moods: expected" in stdout and report["machine"]["cpu"]
        if mode == "paced":
            assert report["latency_ms"]["p50"] > 0 and report["latency_drift_ms_per_min"] is not None
            assert (tmp_path / "soak.png").read_bytes().startswith(PNG)
        else:
            assert report["x_realtime"] > 1.2  # as fast as it takes it (paced would be 1)


def test_bad_soak_options_are_refused(capsys):
    assert "at least 15 s of audio" in refused(capsys, "soak", "--minutes", "0.1")
    assert "--warmup" in refused(capsys, "soak", "--warmup", "1")
    assert "not allowed with argument" in refused(capsys, "soak", "--hours", "1", "--minutes", "2")
    assert "unknown model" in refused(capsys, "soak", "--model", "nope")
