"""``tools/encoder-split.py``: a short round proves the command (it wraps the streaming encoder's
own methods, so a renamed one shows here) and that its parts add up."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_encoder_split_times_the_parts_of_a_call():
    proc = subprocess.run(
        [sys.executable, "tools/encoder-split.py", "--hop-frames", "16", "--calls", "60", "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    numbers = [float(x) for x in re.findall(r"(\d+\.\d+)", proc.stdout)]
    p50, mean, front, edges, interior, rest, mid, pool = numbers
    assert all(x > 0 for x in (p50, mean, front, edges, interior, mid, pool)), proc.stdout
    # Every part was timed inside a call: together no more than the calls took (rounding aside).
    assert abs(front - (edges + interior + rest)) < 0.02 and front + mid + pool <= mean + 0.02, proc.stdout


def test_encoder_split_refuses_a_round_too_short():
    proc = subprocess.run(
        [sys.executable, "tools/encoder-split.py", "--calls", "10"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "need --hop-frames >= 1 and --calls > 50" in proc.stderr
