"""``python -m bench reaction``: a short round proves the command (the 8-pair figures are in RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.refused import refused

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_one_pair_gives_reaction_times_and_flicker(tmp_path, shared_data):  # its clips: 4Q pairs
    out, png = tmp_path / "reaction.json", tmp_path / "reaction.png"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "reaction", "--pairs", "2", "--dwell", "0,30", "--follow", "0,20", "--quiet",
         "--json", str(out), "--plot", str(png)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["pairs"][0][0].startswith("Q4/") and report["pairs"][1][0].startswith("Q1/")
    undamped, held, adaptive, adaptive_held = report["results"]
    assert [(r["follow"], r["dwell_s"]) for r in report["results"]] == [(0, 0), (0, 30), (20, 0), (20, 30)]
    # Adaptive smoothing follows the change sooner than the plain one with the same time constant.
    assert adaptive["t50_s"] < undamped["t50_s"] and adaptive["t90_s"] <= undamped["t90_s"], report["results"]
    # After the splice arousal moves to the second clip's level: t50 comes before t90, within the
    # clip.  (Which way it moves is the model's call: on these two pairs it rates both second
    # clips higher.)
    for result in report["results"]:
        assert 0 < result["t50_s"] <= result["t90_s"] < 29
        assert all(p["step"] != 0 and p["t50_s"] <= p["t90_s"] for p in result["pairs"]), result["pairs"]
    # A dwell longer than the steady halves holds the state there: no flicker at all.
    assert held["flicker_per_min"] == adaptive_held["flicker_per_min"] == 0 <= undamped["flicker_per_min"]
    # The mood state shows the second clip's state after the splice (never before it).
    assert all(r["state_s"] is None or r["state_s"] >= 0 for r in report["results"])
    assert (
        "flicker/min (mean)" in proc.stdout and "state s" in proc.stdout and png.read_bytes().startswith(PNG)
    )


def test_reaction_presets_are_measured_as_listen_runs_them():
    """--reaction NAME measures listen's preset: its own hop, smoothing, dwell and margin."""
    import argparse

    from bench.reaction import settings_of
    from realtime import listen
    from realtime.options import REACTIONS

    args = argparse.Namespace(reaction=["balanced", "stable"], hop=1.0)
    balanced, stable = settings_of(args, [2.0], [4.0], [0.0])
    for setting, name in ((balanced, "balanced"), (stable, "stable")):
        r = REACTIONS[name]
        assert setting == {"reaction": name, "hop_s": r.hop_s, "smooth_s": r.smooth_s, "follow": r.follow,
                           "dwell_s": r.dwell_s, "margin": r.margin}  # fmt: skip
    # ...which is what listen parses for the same preset, unless an option is given.
    parsed = listen.parse_args(["--reaction", "balanced", "--file", "x.ogg"])
    assert (parsed.hop, parsed.smooth, parsed.dwell, parsed.follow, parsed.state_margin) == (
        0.25,
        2.0,
        3.0,
        20.0,
        0.3,
    )
    parsed = listen.parse_args(["--reaction", "fast", "--hop", "0.5", "--file", "x.ogg"])
    assert (parsed.hop, parsed.smooth, parsed.follow) == (0.5, 1.0, 20.0)
    default = listen.parse_args(["--file", "x.ogg"])  # balanced
    assert (default.hop, default.smooth, default.dwell, default.follow, default.state_margin) == (
        0.25,
        2.0,
        3.0,
        20.0,
        0.3,
    )


def test_bad_reaction_options_are_refused(capsys):
    assert "--dwell: 'x' is not a number" in refused(capsys, "reaction", "--dwell", "x")
    assert "out of range" in refused(capsys, "reaction", "--smooth", "-1")
    assert "--pairs" in refused(capsys, "reaction", "--pairs", "0")
    assert "unknown model" in refused(capsys, "reaction", "--models", "nope")
    assert "unknown reaction ['quick']" in refused(capsys, "reaction", "--reaction", "quick")
