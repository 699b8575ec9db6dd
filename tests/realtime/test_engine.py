"""The engine's loop on a real paced source: it sleeps until a window's audio is in."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import soxr

import models
from models.runners import TorchRunner
from realtime.analyzer import Member, Windowing
from realtime.engine import CaptureClock, Engine
from realtime.sources import FileSource, StdinSource


def _run_paced(
    music_clip, hop_s: float, before_run=None, windows: int = 4, resampler: str = "hq"
) -> tuple[list[dict], float]:
    """musicnn-msd's engine on the paced clip, run until ``windows`` windows are out, however long
    a loaded machine takes (60 s at most): the moods, and the seconds it ran."""
    model = models.build("musicnn-msd")
    moods: list[dict] = []
    stop = threading.Event()

    def on_mood(mood: dict) -> None:
        moods.append(mood)
        if len(moods) >= windows:
            stop.set()

    engine = Engine(
        FileSource(music_clip, realtime=True),
        [Member("msd", model, TorchRunner(model))],
        Windowing(hop_s=hop_s, context_s=3.0, resampler=resampler),
        publisher=None,
        on_mood=on_mood,
    )
    if before_run is not None:
        before_run(engine)
    deadline = threading.Timer(60.0, stop.set)  # only if the engine never gets there
    deadline.start()
    started_s = time.monotonic()
    try:
        assert engine.run(stop) == 0
    finally:
        deadline.cancel()
    return moods, time.monotonic() - started_s


def _spy_reads(reads: list[tuple[int, bool]]):
    """A ``before_run`` for ``_run_paced`` that notes each read: (its frames, whether it completed a window)."""

    def spy(engine: Engine) -> None:
        process = engine.process

        def counted(frames, pickup_ms=0.0):
            seq = engine.mood_seq
            process(frames, pickup_ms)
            reads.append((len(frames), engine.mood_seq > seq))

        engine.process = counted

    return spy


def test_a_paced_source_wakes_the_engine_per_window_not_per_block(music_clip):
    """A paced file writes a 10 ms block a hundred times a second; the engine takes the audio
    when the next window's is in and once shortly before (two reads a hop, and the status
    ticks; fewer still when it falls behind on a loaded machine).  It runs until four windows are
    out, however long a loaded machine takes, and the reads are counted against the blocks
    written meanwhile.  That the write which brings the audio wakes it is ``RingBuffer.wait``'s
    own test."""
    reads: list[tuple[int, bool]] = []
    moods, elapsed_s = _run_paced(music_clip, 0.25, _spy_reads(reads))
    assert len(moods) >= 4, f"{len(moods)} windows in {elapsed_s:.1f} s"  # the first ends at 3 s
    blocks = elapsed_s / 0.01
    assert len(reads) < blocks / 5, f"{len(reads)} reads of the {blocks:.0f} blocks written"


def test_at_a_one_second_hop_the_encoder_prepares_each_window_once_at_the_early_take(music_clip, monkeypatch):
    """A 1 s hop comes in quarter-second reads: the encoder prepares the next window near its end,
    at the read that leaves EARLY_TAKE_S of it (3 frames) missing, not at every read (each with its
    own reach and fixed cost: ~2.5x the CPU of one call; 49, 36, 23 and 10 missing); the mel
    computes that read's frames although they are fewer than a batch (7 of 8 at this hop's phase:
    none were prepared then)."""
    from models.musicnn import StreamingEncoder
    from realtime.analyzer import PREPARE_MISSING_MAX

    prepared: list[tuple[int, int]] = []  # (window end, frames missing)
    prepare = StreamingEncoder.prepare

    def spied(self, frames, start, end):
        prepared.append((end, end - start - frames.shape[-1]))
        prepare(self, frames, start, end)

    monkeypatch.setattr(StreamingEncoder, "prepare", spied)
    moods, _ = _run_paced(music_clip, 1.0, windows=8)  # 8 chances: a loaded machine may read late
    assert len(moods) >= 8
    ends = [end for end, _ in prepared]
    # At most twice: a read a block late on a loaded machine can come within 8 frames of the end too.
    assert max(ends.count(end) for end in ends) <= 2, prepared
    assert all(0 < missing <= PREPARE_MISSING_MAX for _, missing in prepared), prepared
    # At the early take (a loaded machine may read late, and then there is nothing to prepare).
    assert any(missing == 3 for _, missing in prepared), prepared


@pytest.mark.parametrize("rate", [16000, 48000])
def test_at_a_quarter_second_hop_a_window_takes_the_early_read_and_the_last(music_clip, tmp_path, rate):
    """Two reads a window: the early take and the rest.  Found doing more: the read's cap (0.25 s)
    came off before the early take's share, so a hop of 0.256 s took its early take in two reads,
    the second of one 10 ms block, in every other window; and through a 48 kHz device's resampler
    the wait was estimated from its delay, one block short in every other window.  A loaded
    machine's late reads only merge (fewer, never more reads that complete no window)."""
    clip = music_clip
    if rate != 16000:
        audio, clip_rate = sf.read(music_clip, dtype="float32")
        clip = tmp_path / f"clip-{rate}.wav"
        sf.write(clip, soxr.resample(audio[: 12 * clip_rate], clip_rate, rate), rate)
    reads: list[tuple[int, bool]] = []
    moods, _ = _run_paced(clip, 0.25, _spy_reads(reads), windows=8, resampler="low-delay")
    assert len(moods) >= 8
    completed = [done for _, done in reads]
    first = completed.index(True)
    between, idle = [], 0  # reads that completed no window, between two windows
    for done in completed[first + 1 :]:
        if done:
            between.append(idle)
            idle = 0
        else:
            idle += 1
    assert len(between) >= 6 and max(between) <= 1, between


RATE_HZ = 16000


def _stream_marks(clock: CaptureClock, seconds: int, start_s: float = 0.0, first_frame: int = 0, rng=None):
    """A live stream's audio as the engine marks it: a second of audio at a time (an Ogg page, in
    20 ms chunks written at once), read once in the middle of each page and once at its end."""
    for page in range(seconds):
        arrived_s = start_s + page + 1.0  # its last sample was played a second after its first
        partial = int(rng.integers(1, 50)) * 320 if rng is not None else 320
        begin = first_frame + page * RATE_HZ
        clock.mark(begin + partial, arrived_s)
        clock.mark(begin + RATE_HZ, arrived_s + 0.005)


def test_a_streams_uneven_arrival_is_no_gap_and_audio_that_never_came_is_one():
    """A page of a live stream read at its start is up to a second "late"; compared read to read,
    that made a gap every few seconds on a healthy stream.  Audio lost is lateness that stays up."""
    rng = np.random.default_rng(0)
    clock = CaptureClock(RATE_HZ)
    _stream_marks(clock, 60, rng=rng)
    assert (clock.gaps, clock.gap_seconds) == (0, 0.0)
    # The connection lost for 2 s: its audio never comes; then the stream goes on, 2 s later.
    _stream_marks(clock, 2, start_s=62.0, first_frame=60 * RATE_HZ, rng=rng)
    assert clock.gaps == 0  # not yet: up for under SETTLE_S, it could still be unevenness
    _stream_marks(clock, 30, start_s=64.0, first_frame=62 * RATE_HZ, rng=rng)
    assert clock.gaps == 1 and clock.gap_seconds == pytest.approx(2.0, abs=0.01)
    # Outages longer than the lateness compared with (FLOOR_S): the lateness before them counts,
    # not the time since (all of it inside the outage, none: they were no gap at all).
    for outage_s in (15.0, 120.0):
        long_away = CaptureClock(RATE_HZ)
        _stream_marks(long_away, 20, rng=rng)
        _stream_marks(long_away, 10, start_s=20.0 + outage_s, first_frame=20 * RATE_HZ, rng=rng)
        assert long_away.gaps == 1, outage_s
        assert long_away.gap_seconds == pytest.approx(outage_s, abs=0.01)
    # Stopped a moment after an outage, its lateness up for under SETTLE_S: a gap if it rose more
    # than the pages ever made it waver (just under a second here), and not if less.
    for outage_s, gaps in ((2.0, 1), (0.5, 0)):
        stopped = CaptureClock(RATE_HZ)
        _stream_marks(stopped, 20, rng=rng)
        _stream_marks(stopped, 1, start_s=20.0 + outage_s, first_frame=20 * RATE_HZ, rng=rng)
        stopped.close(22.0 + outage_s, away=False)
        assert stopped.gaps == gaps, (outage_s, stopped.gaps, stopped.gap_seconds)
    # A device's clock 100 ppm slower than this machine's, read every quarter second for an hour.
    clock = CaptureClock(48000)
    for read in range(3600 * 4):
        frame = (read + 1) * 12000
        clock.mark(frame, frame / 48000 * (1 + 100e-6))
    assert clock.gaps == 0


@pytest.mark.parametrize("back_samples", [0, 160], ids=["still stalled", "back, not read yet"])
def test_a_stop_while_the_live_source_sends_nothing_counts_the_time_since_as_a_gap(music_clip, back_samples):
    """listen's last line: stopped while no audio came (a stalled pipe, a device reconnecting),
    that time is audio lost too, not "nothing lost" (a gap was counted only when audio came back).
    Also when the audio is back at the stop, too little of it for the engine to read yet (a
    device reopened a moment before): its lateness rose more than this source ever wavered."""
    audio, rate = sf.read(music_clip, dtype="float32", frames=4 * 16000)
    audio = soxr.resample(audio, rate, 16000) if rate != 16000 else audio
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: os.write(write_end, audio.astype("<f4").tobytes()), daemon=True)
    model = models.build("musicnn-msd")
    with os.fdopen(read_end, "rb") as pipe:
        engine = Engine(
            StdinSource(16000, stream=pipe),
            [Member("msd", model, TorchRunner(model))],
            Windowing(hop_s=1.0),
            publisher=None,
        )
        stop = threading.Event()
        runner = threading.Thread(target=engine.run, args=(stop,), daemon=True)
        runner.start()
        writer.start()  # 4 s of audio, then nothing (the pipe stays open: a stall, not an end)
        deadline = time.monotonic() + 60
        # Its moods out (the audio came), then no audio for stall_after_s.
        while engine.mood_seq < 1 or engine._source_state() != "stalled":
            assert time.monotonic() < deadline, "no mood, or the source never stalled"
            time.sleep(0.05)
        assert engine.clock.gaps == 0  # nothing came back: no gap counted yet
        if back_samples:
            written = engine.ring.write_index
            os.write(write_end, audio[:back_samples].astype("<f4").tobytes())
            while engine.ring.write_index < written + back_samples:
                assert time.monotonic() < deadline, "the audio did not come back"
                time.sleep(0.01)
            assert engine._source_state() == "running" and engine.ring.available() == back_samples
        stop.set()
        runner.join(10)
    os.close(write_end)
    assert engine.clock.gaps == 1 and engine.clock.gap_seconds >= engine.config.stall_after_s
