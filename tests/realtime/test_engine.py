"""The engine's loop on a real paced source: it sleeps until a window's audio is in."""

from __future__ import annotations

import threading

import models
from models.runners import TorchRunner
from realtime.analyzer import Member, Windowing
from realtime.engine import Engine
from realtime.ring import RingBuffer
from realtime.sources import FileSource


def test_a_paced_source_wakes_the_engine_per_window_not_per_block(music_clip, monkeypatch):
    """A paced file writes a 10 ms block a hundred times a second; the engine takes the audio
    when the next window's is in and once shortly before (two reads a hop, and the status
    ticks), woken by the write that brings it, not by its wait's timeout."""
    model = models.build("musicnn-msd")
    source = FileSource(music_clip, realtime=True)
    moods: list[dict] = []
    engine = Engine(
        source,
        [Member("msd", model, TorchRunner(model))],
        Windowing(hop_s=0.25, context_s=3.0),
        publisher=None,
        on_mood=moods.append,
    )
    wakes = []  # RingBuffer.wait's answers: True when a write woke it, False on its timeout
    wait = RingBuffer.wait
    monkeypatch.setattr(
        RingBuffer, "wait", lambda ring, *a, **k: wakes.append(wait(ring, *a, **k)) or wakes[-1]
    )
    reads = []
    process = engine.process
    engine.process = lambda frames, pickup_ms=0.0: (reads.append(len(frames)), process(frames, pickup_ms))
    stop = threading.Event()
    timer = threading.Timer(5.0, stop.set)
    timer.start()
    try:
        assert engine.run(stop) == 0
    finally:
        timer.cancel()
    blocks = 5.0 / 0.01
    assert len(moods) >= 6  # the first window ends at 3 s, then one every 0.256 s
    assert len(reads) < blocks / 5, f"{len(reads)} reads of the {blocks:.0f} blocks written"
    # Taken at once: each window's audio (and its early take) woke the engine; the timeouts are
    # the status ticks and the first 3 s, when no window is near.
    assert sum(wakes) >= 2 * (len(moods) - 1), f"{sum(wakes)} of {len(wakes)} waits woken by a write"
