"""``python -m realtime.listen --device`` on a capture device paced at real time (JACK's dummy backend).

Music plays into the device at the sound card's pace, so the feed must come out at the hop
rate, with the clip's tags, no drops, sub-second latency, and a clean stop.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import soundfile as sf
import zmq

from models.musicnn import MSD_LABELS
from tests.realtime.harness import free_endpoint
from tests.realtime.paced_mic import paced_mic  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "realtime" / "schema" / "feed.schema.json").read_text())
CLIP = "4q/audio/Q1/MT0000040632.ogg"  # reference index 0 in MSD_musicnn.npz
EXCERPT_S = 12
# Windows end at 2.99 s, then every 0.256 s (the default reaction's hop): the 28th at 9.9 s,
# inside the music.
MOODS = 28


def receive(
    endpoint: str, proc: subprocess.Popen, moods: int, timeout_s: float
) -> list[tuple[str, dict, float]]:
    """(topic, message, receipt time) with plain pyzmq + json until ``moods`` moods arrived."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.connect(endpoint)
    messages: list[tuple[str, dict, float]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while sum(t == "mood" for t, _, _ in messages) < moods:
            assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")
            assert time.monotonic() < deadline, f"timed out; got {[(t, m['seq']) for t, m, _ in messages]}"
            if sock.poll(200):
                topic, body = sock.recv_multipart()
                received = time.time()
                message = json.loads(body)
                jsonschema.validate(message, {**SCHEMA, "$ref": f"#/$defs/{topic.decode()}"})
                messages.append((topic.decode(), message, received))
    finally:
        sock.close()
        ctx.term()
    return messages


def test_paced_device_feed_runs_at_the_hop_rate_with_the_clips_tags(paced_mic, shared_data):  # noqa: F811
    audio, rate = sf.read(shared_data / CLIP, dtype="float32")
    mic = paced_mic(audio[: EXCERPT_S * rate], rate)
    endpoint = free_endpoint()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "realtime.listen",
            "--quiet",
            "--model",
            "musicnn-msd",
            "--device",
            mic.device,
            "--pub",
            endpoint,
        ],
        cwd=REPO,
        env=mic.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        messages = receive(endpoint, proc, MOODS, timeout_s=40)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        stop_s = time.monotonic() - started
    finally:
        proc.kill()
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err.decode(errors="replace")
    assert stop_s < 1.5
    assert mic.playing.is_set() and mic.error is None, mic.error

    moods = [m for t, m, _ in messages if t == "mood"]
    statuses = [m for t, m, _ in messages if t == "status"]
    mood_gaps = np.diff([r for t, _, r in messages if t == "mood"])
    status_gaps = np.diff([r for t, _, r in messages if t == "status"])
    report = (
        f"mood gaps {np.round(mood_gaps, 3)}, status gaps {np.round(status_gaps, 3)}, last {statuses[-1]}"
    )
    # Paced by the device: one mood per hop (0.256 s), a status about every second.
    assert len(moods) >= MOODS and [m["seq"] for m in moods] == list(range(len(moods))), report
    # The mean gap (the span over the count): a loaded machine's late hop is followed by quick
    # ones, which pulled the median below 0.2 s once in CI; unpaced moods would all come at once.
    assert 0.2 < np.mean(mood_gaps) < 0.32, report
    assert len(status_gaps) >= 4 and 0.85 < np.mean(status_gaps) < 1.2, report
    # Nothing lost between the device and the analysis; capture-to-publish latency far under the
    # window (p99 tens of milliseconds on an idle machine; bench e2e measures it).  Of ~30 hops
    # the p99 is the slowest, which a stall of the loaded test machine sets (CI saw one of 0.7 s).
    assert all(s["dropped_samples"] == 0 and s["overflows"] == 0 for s in statuses), report
    latency_ms = statuses[-1]["latency_ms"]
    assert latency_ms["count"] >= 20 and latency_ms["p50"] < 250 and latency_ms["p99"] < 1500, report
    source = statuses[-1]["source"]
    assert (source["kind"], source["name"], source["state"]) == ("device", mic.device, "running"), report
    assert source["sample_rate_hz"] == mic.rate_hz
    # The music came through: not silent, and the tags of the clip (musicnn's own outputs, 3 s patches).
    assert not any(m["silent"] for m in moods), report
    got = np.mean([[m["tags"][name] for name in MSD_LABELS] for m in moods], axis=0)
    reference = np.load(shared_data / "reference" / "musicnn" / "MSD_musicnn.npz")
    assert list(reference["tags"]) == list(MSD_LABELS)
    expected = reference["t0"][: EXCERPT_S // 3].mean(axis=0)
    top_got, top_expected = ({MSD_LABELS[i] for i in np.argsort(-p)[:5]} for p in (got, expected))
    assert len(top_got & top_expected) >= 3, (sorted(top_got), sorted(top_expected))
