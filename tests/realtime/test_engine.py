"""The engine's loop on a real paced source: it sleeps until a window's audio is in."""

from __future__ import annotations

import threading
import time

import models
from models.runners import TorchRunner
from realtime.analyzer import Member, Windowing
from realtime.engine import Engine
from realtime.sources import FileSource


def test_a_paced_source_wakes_the_engine_per_window_not_per_block(music_clip):
    """A paced file writes a 10 ms block a hundred times a second; the engine takes the audio
    when the next window's is in and once shortly before (two reads a hop, and the status
    ticks; fewer still when it falls behind on a loaded machine).  It runs until four windows are
    out, however long a loaded machine takes, and the reads are counted against the blocks
    written meanwhile.  That the write which brings the audio wakes it is ``RingBuffer.wait``'s
    own test."""
    model = models.build("musicnn-msd")
    source = FileSource(music_clip, realtime=True)
    moods: list[dict] = []
    stop = threading.Event()

    def on_mood(mood: dict) -> None:
        moods.append(mood)
        if len(moods) >= 4:
            stop.set()

    engine = Engine(
        source,
        [Member("msd", model, TorchRunner(model))],
        Windowing(hop_s=0.25, context_s=3.0),
        publisher=None,
        on_mood=on_mood,
    )
    reads = []
    process = engine.process
    engine.process = lambda frames, pickup_ms=0.0: (reads.append(len(frames)), process(frames, pickup_ms))
    deadline = threading.Timer(60.0, stop.set)  # only if the engine never gets there
    deadline.start()
    started_s = time.monotonic()
    try:
        assert engine.run(stop) == 0
    finally:
        deadline.cancel()
    elapsed_s = time.monotonic() - started_s
    assert len(moods) >= 4, f"{len(moods)} windows in {elapsed_s:.1f} s"  # the first ends at 3 s
    blocks = elapsed_s / 0.01
    assert len(reads) < blocks / 5, f"{len(reads)} reads of the {blocks:.0f} blocks written"
