"""``python -m bench latency`` runs and writes its table, JSON and chart (a quick round, not a benchmark)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_latency_command_writes_table_json_and_png(tmp_path):
    out, png = tmp_path / "lat.json", tmp_path / "lat.png"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "latency", "--models", "musicnn-msd", "--backends", "torch,onnx",
         "--seconds", "10", "--warmup", "2", "--json", str(out), "--plot", str(png)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "encoder p50/p99" in proc.stdout and "musicnn-msd" in proc.stdout
    report = json.loads(out.read_text())
    assert [(r["model"], r["backend"]) for r in report["results"]] == [
        ("musicnn-msd", "torch"),
        ("musicnn-msd", "onnx"),
    ]
    for r in report["results"]:
        assert r["hops"] == 10
        ms = r["ms"]
        assert set(ms) == {"mel", "encoder", "pool_heads", "feed", "hop"}
        assert 0 < ms["hop"]["p50"] <= ms["hop"]["p99"]
        assert ms["hop"]["p50"] >= ms["encoder"]["p50"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_options_are_clear():
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "latency", "--backends", "tensorrt"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "unknown backend" in proc.stderr
