"""The engine: ring buffer -> pipeline -> smoothing -> the publish step, plus the status heartbeat.

It runs in the calling thread (``listen`` runs it in the main thread, so signals only set a
flag).  It never blocks on the source (it polls the ring) nor on the socket (PUB drops at
the high-water mark), and sends ``status`` every second whatever the source does.  The publish
step hands each message to the ZeroMQ publisher (when there is one: ``analyze`` has none), then
to the protocol outputs, the watchers (the web view) and ``on_mood``.  The engine times its own
stages, per hop: ``status`` carries their p50/p99 over the last minute (``process_ms``).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models import SegmentModel
from models.vocab import VOCABULARIES
from realtime.analyzer import EARLY_TAKE_S, STAGES, Member, Pipeline, TagMerger, Window, Windowing
from realtime.feed import SCHEMA_VERSION, stamp
from realtime.options import DWELL_S
from realtime.outputs import Outputs
from realtime.publisher import Publisher
from realtime.ring import RingBuffer
from realtime.smoothing import Hysteresis, MoodState, Smoother, state_probabilities
from realtime.sources import Source
from realtime.stats import percentiles


@dataclass(frozen=True)
class FeedConfig:
    """How raw window outputs become what the lights see."""

    smooth_s: float = 2.0  # exponential smoothing time constant
    follow: float = 0.0  # > 0: the time constant shrinks while the estimate moves (Smoother)
    tag_on: float = 0.3  # hysteresis thresholds for `active` (musicnn rarely passes 0.5)
    tag_off: float = 0.2
    status_interval_s: float = 1.0
    stall_after_s: float = 1.0  # no audio for this long (source not ended): state "stalled"
    ring_s: float = 10.0  # ring buffer capacity in seconds of source audio
    window_s: float = 60.0  # latency and process_ms percentiles are over this much recent time
    dwell_s: float = DWELL_S  # another mood state must lead this long (and by state_margin) to take over
    state_margin: float = 0.1
    active_per_vocabulary: int = (
        3  # the moods / emotions / descriptors lists: the strongest active, at most this many
    )


# Read at most this much per turn from a live source, so a backlog (a burst from the device, a slow
# first hop) never keeps the loop from seeing a stop request or a status time; and the first
# window's 3 s, or a 1 s hop, come a quarter second at a time, so their resampling and mel are
# done as the audio comes, not all after its end.
LIVE_READ_S = 0.25


def live_read_wanted(pipeline: Pipeline) -> int:
    """Samples a live source's loop waits for before its next read (``Engine.run``, which then
    reads what is there, up to ``LIVE_READ_S``): the next window's, less its last ``EARLY_TAKE_S``
    when there are more (the early take), at most a read's worth."""
    rate_hz = pipeline.input_rate_hz
    wanted = pipeline.samples_wanted()
    early = int(EARLY_TAKE_S * rate_hz)
    if wanted > early:
        wanted -= early
    # The cap after the early take's share: capped first, a hop a little longer than a read
    # (0.256 s at hop 0.25) took its early take in two reads, the second of a single block.
    return max(1, min(wanted, int(rate_hz * LIVE_READ_S)))


# The stages ``process_ms`` reports, in the order a window's audio goes through them: pickup
# (from the ring write that delivered it to the engine taking it), the pipeline's stages, and
# the publish step up to the message's stamp (smoothing, thresholds, the message).
PROCESS_STAGES = ("pickup", *STAGES, "publish")


def tag_thresholds(
    model: SegmentModel, merger: TagMerger, config: FeedConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Per-tag on/off thresholds: a trained artifact's (fitted on validation) where it has them.

    The off threshold keeps the same ratio to the on threshold as the configured pair.  A fitted
    threshold of 1.0 means the tag never turns active (it was unreliable on validation).
    """
    fitted = model.artifact.thresholds if model.artifact else {}
    on = []
    for head in merger.tag_heads:
        n = len(model.heads[head].labels)
        values = fitted.get(head)
        on.extend(np.clip(values, 0.02, 1.0) if values is not None else [config.tag_on] * n)
    on = np.asarray(on, dtype=np.float64)
    return on, on * (config.tag_off / config.tag_on)


class CaptureClock:
    """Maps absolute source frame indices to the wall-clock time they were captured, and counts
    the gaps of a live source: audio that should have arrived and did not (a stall, a suspended
    process, a reconnection), seen as its *lateness* (capture time less the stream time of the
    frames received, dropped ones included) rising to stay.

    Lateness also rises and falls by itself, as unevenly as the audio arrives: a device's periods
    (tens of ms), a pipe's chunks, a stream's Ogg pages (a second of audio at a time, so a read in
    the middle of a page is up to a second late).  So a gap is counted once lateness has stayed
    over ``GAP_MIN_S`` above the least of the ``FLOOR_S`` before for ``SETTLE_S`` (compared mark
    to mark, a live stream's pages made a "gap" every few seconds); its size is the least rise
    over that time.  Over the ``FLOOR_S`` a clock's drift (the source's against this machine's, a
    few seconds a day) is far below ``GAP_MIN_S``.

    A source read as fast as it goes (a file without --realtime) has no capture time: its
    samples' time is that of the read that brought them in (its last write), so ``latency_ms``
    is the time from reading to publishing.  Counted back from the last write by their duration,
    as a live source's are, a window read seconds of audio ahead of the writer came out seconds
    before the run began."""

    GAP_MIN_S = 0.25  # less is the unevenness of a device's periods or a pipe's chunks, not lost audio
    SETTLE_S = 3.0  # lateness up this long is lost audio: longer than a stream's page (~1 s)
    FLOOR_S = 10.0  # the lateness before it, over this long: what it is compared with

    def __init__(self, rate_hz: int, live: bool = True):
        self.rate_hz = rate_hz
        self.live = live
        self._marks: deque[tuple[int, float]] = deque(maxlen=4096)
        self._last: tuple[int, float] | None = None  # (frames offered, capture time) at the last mark
        self._lateness: deque[tuple[float, float]] = deque()  # (capture time, lateness), on time
        self._raised: tuple[float, float, float] | None = None  # since when lateness is up, least, most
        self._uneven_s = 0.0  # the most lateness rose and came back down: how unevenly audio comes
        self.gaps = 0
        self.gap_seconds = 0.0

    def mark(self, end_index: int, capture_time: float, dropped_frames: int = 0) -> None:
        if not end_index or (self._marks and end_index <= self._marks[-1][0]):
            return
        offered = end_index + dropped_frames  # dropped audio arrived (and is counted) too: no gap
        if self.live:
            self._count_gap(capture_time, capture_time - offered / self.rate_hz)
        self._last = (offered, capture_time)
        self._marks.append((end_index, capture_time))

    def _count_gap(self, now: float, lateness: float) -> None:
        # ``_lateness`` holds the on-time marks of the FLOOR_S up to the last on-time one whose
        # lateness no later one is under (rising from the left): its first is the least, at a cost
        # of O(1) a mark.  Up to the last on-time mark, not to now: after an outage longer than
        # FLOOR_S, the lateness to compare with is that before it (none was left, so no gap).
        history = self._lateness
        floor = history[0][1] if history else lateness
        if lateness - floor <= self.GAP_MIN_S:  # on time: a rise before it was unevenness
            if self._raised is not None:
                self._uneven_s = max(self._uneven_s, self._raised[2] - floor)
            while history and history[-1][1] >= lateness:
                history.pop()
            history.append((now, lateness))
            while history[0][0] < now - self.FLOOR_S:
                history.popleft()
            self._raised = None
            return
        since, least, most = self._raised or (now, lateness, lateness)
        self._raised = (since, min(least, lateness), max(most, lateness))
        if now - since >= self.SETTLE_S:
            self._gap(self._raised[1] - floor)
            history.clear()  # the new level is what later lateness is compared with
            history.append((now, self._raised[1]))
            self._raised = None

    def _gap(self, seconds: float) -> None:
        self.gaps += 1
        self.gap_seconds += seconds

    def close(self, now: float, away: bool) -> None:
        """The run ends.  ``away``: while the live source sends nothing (stalled, reconnecting),
        so the time since its last audio is a gap (counted at the next audio otherwise, which will
        not come).  And lateness up for less than ``SETTLE_S`` (the audio came back a moment ago)
        is a gap too if it rose more than any unevenness of this source's that came back down."""
        if not self.live or self._last is None:
            return
        if self._raised is not None and self._lateness:
            rise = self._raised[1] - self._lateness[0][1]
            if rise > self._uneven_s + self.GAP_MIN_S:
                self._gap(rise)
        if away and now - self._last[1] > self.GAP_MIN_S:
            self._gap(now - self._last[1])

    def time_of(self, index: int) -> float:
        while len(self._marks) > 1 and self._marks[0][0] < index:
            self._marks.popleft()
        if not self._marks:
            return time.time()
        end, t = self._marks[0]
        return t - (end - index) / self.rate_hz if self.live else t


class MemberFeed:
    """One model's part of the mood message: its tags smoothed, thresholded and named."""

    def __init__(self, member: Member, config: FeedConfig, prefix: set[str] = frozenset()):
        self.member = member
        self.merger = TagMerger(member.model.heads)
        # A tag name another model of the feed also uses is prefixed with this model's name.
        self.names = [f"{member.name}:{n}" if n in prefix else n for n in self.merger.names]
        self.smoother_tags = Smoother(config.smooth_s, config.follow)
        self.smoother_va = Smoother(config.smooth_s, config.follow)
        on, off = tag_thresholds(member.model, self.merger, config)
        self.hysteresis = Hysteresis(len(self.names), on, off)
        self.last_t_stream: float | None = None
        self.tags: np.ndarray | None = None  # None until this model's first window
        self.active = np.zeros(len(self.names), dtype=bool)
        self.valence: float | None = None
        self.arousal: float | None = None

    def update(self, window: Window, hop_s: float) -> None:
        dt = hop_s if self.last_t_stream is None else window.t_stream - self.last_t_stream
        self.last_t_stream = window.t_stream
        if window.silent:
            # Silence carries no mood: hold the tags, switch everything off, no valence/arousal.
            if self.tags is None:
                self.tags = np.zeros(len(self.names))
            self.hysteresis.reset()
            self.active = np.zeros(len(self.names), dtype=bool)
            self.valence = self.arousal = None
            return
        self.tags = self.smoother_tags.update(self.merger.tags(window.outputs), dt).copy()
        self.active = self.hysteresis.update(self.tags).copy()
        if self.merger.va_head:
            self.valence, self.arousal = (
                float(v) for v in self.smoother_va.update(window.outputs[self.merger.va_head], dt)
            )


def clashing_names(members: list[Member]) -> set[str]:
    """Tag names that more than one model of the feed publishes."""
    seen: dict[str, int] = {}
    for m in members:
        for n in TagMerger(m.model.heads).names:
            seen[n] = seen.get(n, 0) + 1
    return {n for n, count in seen.items() if count > 1}


class Engine:
    """Runs one source through one or more models into one publisher until stopped or the source ends.

    With several models the first one (the primary) sets the hop: each of its windows is one
    mood message holding every model's latest tags (a model whose first segment is not yet
    complete contributes none yet), and valence/arousal from the first model that has them.
    """

    def __init__(
        self,
        source: Source | None,
        members: list[Member],
        windowing: Windowing,
        publisher: Publisher | None,
        config: FeedConfig | None = None,
        on_mood: Callable[[dict], None] | None = None,
        compute: str = "cpu",
        on_status: Callable[[dict], None] | None = None,
    ):
        if not members:
            raise ValueError("the engine needs at least one model")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"a model is named twice in {','.join(names)}")
        self.source = source
        self.members = members
        self.windowing = windowing
        self.compute = compute
        self.pipeline: Pipeline | None = None  # built once the source knows its rate
        self.publisher = publisher  # None: the messages go to the outputs and on_mood only
        self.model_name = ",".join(names)
        self.config = config or FeedConfig()
        self.on_mood = on_mood
        self.on_status = on_status
        # Protocol outputs (OSC, DMX, OS2L, MIDI): handed every message after the feed has it.
        self.outputs: Outputs | None = None
        # Watchers (the web view): handed every message too; their publish never blocks.
        self.watchers: list = []
        clash = clashing_names(members)
        self.feeds = [MemberFeed(m, self.config, clash) for m in members]
        self.latencies: deque[tuple[float, float]] = deque()  # (t_publish, latency_ms), last minute
        self.timings: deque[tuple[float, dict[str, float]]] = deque()  # (t_publish, ms per stage)
        self.last_stages: dict[str, float] = {}  # of the last mood
        # What the read being handled cost, stage by stage: the mood it completes carries it (the
        # reads before it, whose audio the window also holds, ran while that audio arrived).
        self._read_ms: dict[str, float] = dict.fromkeys(("pickup", *STAGES), 0.0)
        self._publish_from = 0.0  # perf_counter() where the publish stage of the next mood began
        self.mood_state = MoodState(self.config.dwell_s, self.config.state_margin)
        self.mood_seq = 0
        self.moods_sent = 0
        self.status_seq = 0
        self.started = time.monotonic()
        self._stopped = False  # asked to stop before its source ended: the last status says so
        self.ring: RingBuffer | None = None  # run's

    @property
    def tag_names(self) -> list[str]:
        """Every tag name the mood messages can carry, in their order."""
        return [name for feed in self.feeds for name in feed.names]

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event, on_started: Callable[[], None] | None = None) -> int:
        """Process until ``stop`` is set or the source ends; 0 on a clean end, 1 on a source error.
        ``on_started``: called once the source has started (a URL's first audio is in, a device
        is open at its rate), before the first read (``listen``'s banner: the source as opened)."""
        cfg = self.config
        ring = RingBuffer(max(1, int(cfg.ring_s * self.source.sample_rate_hz)), self.source.channels)
        self.ring = ring
        for member in self.members:
            member.runner.warm_up()
        try:
            self.source.start(ring)
            # The device may have opened at a fallback rate: only now is the input rate known.
            self.open(self.source.sample_rate_hz)
            if on_started is not None:
                on_started()
            next_status = time.monotonic()
            while not stop.is_set():
                # Asked at each turn: a --url turns out to be a live stream at its first audio.
                self.clock.live = source_live = self.source.live
                live = source_live and not self.source.finished
                wanted = live_read_wanted(self.pipeline) if live else 1
                # A file read as fast as it goes comes in seconds at a time (fewer calls).
                max_frames = max(1, int(self.source.sample_rate_hz * (LIVE_READ_S if source_live else 4.0)))
                frames, _ = ring.read(max_frames if ring.available() >= wanted else 0)
                if len(frames):
                    self.clock.mark(*ring.last_capture, ring.dropped_frames)
                    self.process(frames, pickup_ms=max(0.0, (time.time() - ring.last_write_time) * 1000.0))
                elif self.source.finished and ring.available() == 0:
                    self._timed(self.pipeline.finish, 0.0)
                    break
                now = time.monotonic()
                if now >= next_status:
                    self._publish_status()
                    next_status = max(next_status + cfg.status_interval_s, now)
                if not len(frames):
                    # Woken by the write that completes the next window or comes EARLY_TAKE_S before
                    # it (no polling delay), not by each block between; the timeout keeps status,
                    # stop and the source's end going.
                    if live:
                        ring.wait(min(0.1, max(0.0, next_status - now)), wanted)
                    else:
                        ring.wait(0.005)
        finally:
            if self.pipeline is not None:
                # Audio in but too little to read yet (a device reopened a moment ago) counts too.
                self.clock.mark(*ring.last_capture, ring.dropped_frames)
                self.clock.close(time.time(), away=self._source_state() in ("stalled", "reconnecting"))
            # Stopped (Ctrl-C, SIGTERM), not ended: a client tells the operator's stop from a
            # file's or a stream's end.
            self._stopped = stop.is_set() and not self.source.finished
            self.source.stop()
        if self.outputs:
            self.outputs.flush()  # so the last status counts the last mood's sends
        self._publish_status()
        return 1 if self.source.error else 0

    def open(self, input_rate_hz: int) -> None:
        """Build the pipeline for audio at ``input_rate_hz`` (``run`` does, once the source knows its rate)."""
        self.pipeline = Pipeline(self.members, input_rate_hz, self.windowing, self.compute)
        self.clock = CaptureClock(input_rate_hz, live=self.source is None or self.source.live)

    def process(self, frames: np.ndarray, pickup_ms: float = 0.0) -> None:
        """One read's audio through the pipeline, and every window it completes out through the
        publish step.  ``run`` calls it; ``bench latency`` drives an engine with it, by hand."""
        self._timed(lambda: self.pipeline.feed(frames), pickup_ms)

    def _timed(self, step, pickup_ms: float) -> None:
        spent = self.pipeline.spent_ms
        before = dict(spent)
        windows = step()
        self._read_ms = {"pickup": pickup_ms, **{s: spent[s] - before[s] for s in STAGES}}
        self.handle(windows)

    def handle(self, windows: list[tuple[int, Window]]) -> None:
        """Windows of the pipeline -> each model's feed logic; a primary window -> a mood message out.

        The publish stage of a mood runs from here (smoothing, thresholds, the message) to its
        stamp, ``t_publish``; the encoding and the send that follow are a subscriber's transport.
        """
        self._publish_from = time.perf_counter()
        for i, window in windows:
            self.feeds[i].update(window, self.pipeline.consumers[i].hop_s)
            if i == 0:
                self._publish_mood(window)
                self._publish_from = time.perf_counter()

    def _emit(self, topic: str, message: dict) -> bool:
        """The publish step, the one place every message leaves by: the feed, the outputs, the watchers."""
        if self.publisher is not None:
            sent = self.publisher.send(topic, message)
        else:
            sent = True
            if topic == "mood":
                stamp(message)
        if self.outputs:
            self.outputs.publish(topic, message)
        for watcher in self.watchers:
            watcher.publish(topic, message)
        return sent

    def _publish_mood(self, window: Window) -> None:
        tags: dict[str, float] = {}
        active: list[str] = []
        grouped: dict[str, list[tuple[float, str]]] = {v: [] for v in VOCABULARIES}
        for feed in self.feeds:
            if feed.tags is None:
                continue
            # Rounded by numpy, then Python floats at once: round() of each of ~160 tags took
            # ~0.15 ms a hop.  rint(x * 1e5) / 1e5 is the double nearest the rounded decimal, as
            # round's is; they differ (by 1e-5) only where x * 1e5 lands exactly on a half in
            # float64, which none of 10 million random values did.
            tags.update(zip(feed.names, np.round(feed.tags, 5).tolist(), strict=True))
            for i in np.flatnonzero(feed.active).tolist():  # a few of them
                active.append(feed.names[i])
                grouped[feed.merger.vocabularies[i]].append((float(feed.tags[i]), feed.names[i]))
        va = next((f for f in self.feeds if f.merger.va_head), None)
        valence = arousal = None
        state = state_p = None
        if va is not None and not window.silent:
            valence, arousal = va.valence, va.arousal
        if window.silent:
            state = self.mood_state.update(None, window.t_stream)
        elif valence is not None:
            state_p = {k: round(v, 5) for k, v in state_probabilities(valence, arousal).items()}
            state = self.mood_state.update(state_p, window.t_stream)
        cap = self.config.active_per_vocabulary
        native_index = math.ceil(window.t_stream * self.pipeline.input_rate_hz) - 1
        message = {
            "schema": SCHEMA_VERSION,
            "seq": self.mood_seq,
            "model": self.model_name,
            "t_capture": self.clock.time_of(native_index),
            "t_stream": window.t_stream,
            "hop_s": self.pipeline.hop_s,
            "context_s": self.pipeline.context_s,
            "smooth_s": self.config.smooth_s,
            "silent": bool(window.silent),
            "tags": tags,
            "active": active,
            "valence": valence,
            "arousal": arousal,
            "state": state,
            "state_p": state_p,
            **{v: [name for _, name in sorted(grouped[v], reverse=True)[:cap]] for v in VOCABULARIES},
        }
        self.mood_seq += 1
        stages = dict(self._read_ms)
        self._read_ms = dict.fromkeys(self._read_ms, 0.0)  # a read completing several windows: counted once
        # Up to the message's stamp (t_publish, in _emit): every stage then lies inside its
        # latency_ms, and what follows (encoding, the send, the outputs) is a subscriber's transport.
        stages["publish"] = (time.perf_counter() - self._publish_from) * 1000.0
        if self._emit("mood", message):
            self.moods_sent += 1
            self.latencies.append((message["t_publish"], message["latency_ms"]))
        self.last_stages = stages
        self.timings.append((message["t_publish"], stages))
        if self.on_mood:
            self.on_mood(message)

    def _source_state(self) -> str:
        if self.source.error:
            return "error"
        if self._stopped:
            return "stopped"
        if self.source.reconnecting:
            return "reconnecting"
        if self.source.finished:
            return "ended"
        last_audio = self.ring.last_write_monotonic if self.ring is not None else 0.0
        if not last_audio:
            allowed_s = max(self.config.stall_after_s, self.source.first_audio_s)
            return "starting" if time.monotonic() - self.started < allowed_s else "stalled"
        if time.monotonic() - last_audio > self.config.stall_after_s:
            return "stalled"
        return "running"

    def latency_percentiles(self) -> dict:
        horizon = time.time() - self.config.window_s
        while self.latencies and self.latencies[0][0] < horizon:
            self.latencies.popleft()
        return {**percentiles([lat for _, lat in self.latencies]), "count": len(self.latencies)}

    def process_percentiles(self) -> dict:
        """Per stage of the last minute's hops: p50/p99 ms; ``hop``: all stages after pickup, added."""
        horizon = time.time() - self.config.window_s
        while self.timings and self.timings[0][0] < horizon:
            self.timings.popleft()
        hops = [stages for _, stages in self.timings]
        out = {stage: percentiles([h[stage] for h in hops]) for stage in PROCESS_STAGES}
        out["hop"] = percentiles([sum(h[s] for s in PROCESS_STAGES[1:]) for h in hops])
        out["count"] = len(hops)
        return out

    def status_message(self) -> dict:
        ring = getattr(self, "ring", None)
        return {
            "schema": SCHEMA_VERSION,
            "seq": self.status_seq,
            "t": time.time(),
            "model": self.model_name,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "source": {
                "kind": self.source.kind,
                "name": self.source.name,
                "state": self._source_state(),
                "sample_rate_hz": int(self.source.sample_rate_hz),
                "error": self.source.error,
                "reconnect": self.source.reconnecting,  # replaced whole by the source, never changed in place
            },
            "overflows": ring.overflows if ring else 0,
            "dropped_samples": ring.dropped_frames if ring else 0,
            "sanitized_samples": self.pipeline.sanitizer.sanitized_samples if self.pipeline else 0,
            "clipped_samples": self.pipeline.sanitizer.clipped_samples if self.pipeline else 0,
            "gaps": self.clock.gaps if self.pipeline else 0,
            "gap_seconds": round(self.clock.gap_seconds, 3) if self.pipeline else 0.0,
            "published": self.moods_sent,
            "latency_ms": self.latency_percentiles(),
            "process_ms": self.process_percentiles(),
            "outputs": self.outputs.status() if self.outputs else [],
        }

    def _publish_status(self) -> None:
        message = self.status_message()
        self.status_seq += 1
        self._emit("status", message)
        if self.on_status:
            self.on_status(message)
