"""The engine's loop on a real paced source: it sleeps until a window's audio is in."""

from __future__ import annotations

import threading

import models
from models.runners import TorchRunner
from realtime.analyzer import Member, Windowing
from realtime.engine import Engine
from realtime.sources import FileSource


def test_a_paced_source_wakes_the_engine_per_window_not_per_block(music_clip):
    """A paced file writes a 10 ms block a hundred times a second; the engine takes the audio
    when the next window's is in and once shortly before (two reads a hop, and the status
    ticks; fewer still when it falls behind on a loaded machine).  That the write which brings the
    audio wakes it is ``RingBuffer.wait``'s own test."""
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
    assert (
        len(moods) >= 3
    )  # the first window ends at 3 s, then one every 0.256 s (fewer out by the stop when loaded)
    assert len(reads) < blocks / 5, f"{len(reads)} reads of the {blocks:.0f} blocks written"
