"""One live path, built in one place: a source, its pipeline and engine, the feed and the outputs.

``listen`` opens one session; the bench's scale host opens several that share the models;
``analyze`` opens one without a feed, on a file read as fast as it goes, and prints what
``listen`` would publish.  (``bridge`` has no source: it shares the outputs half,
``realtime.outputs.build_outputs``.)
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from realtime.analyzer import Member, Windowing
from realtime.engine import Engine, FeedConfig
from realtime.outputs import build_outputs
from realtime.publisher import Publisher
from realtime.sources import Source


def resampler_for(choice: str, source: Source) -> str:
    """``--resampler``: auto is low-delay for a live source (device, stdin, paced), hq otherwise."""
    if choice != "auto":
        return choice
    return "low-delay" if source.live else "hq"  # live, lag matters more; else soxr's HQ (offline quality)


def feed_config(args: argparse.Namespace) -> FeedConfig:
    return FeedConfig(
        smooth_s=args.smooth,
        follow=args.follow,
        tag_on=args.on,
        tag_off=args.off,
        dwell_s=args.dwell,
        state_margin=args.state_margin,
    )


@dataclass
class Session:
    """An engine with its publisher (None for ``analyze``) and outputs; ``close`` releases both."""

    engine: Engine
    publisher: Publisher | None

    def summary(self, stopped: bool = False) -> list[str]:
        """What the user should hear about the audio once the run is over: why there was no
        result (audio shorter than one segment, or ``stopped`` by the user before the first
        result), samples sanitised or clamped."""
        engine = self.engine
        lines = []
        if engine.pipeline is None:
            return lines
        sanitizer = engine.pipeline.sanitizer
        audio_s = sanitizer.samples_in / engine.pipeline.input_rate_hz
        if engine.mood_seq == 0 and not engine.source.error:
            segment_s = engine.members[0].model.segment_seconds
            if stopped:  # not the source's doing: it may well have had more to give
                lines.append(
                    f"note: stopped before the first result: {audio_s:.2f} s of audio came in, "
                    f"a result needs {segment_s:.2f} s"
                )
            else:
                lines.append(
                    f"warning: no result: the {engine.source.kind} {engine.source.name!r} "
                    f"gave {audio_s:.2f} s of audio, less than one {segment_s:.2f} s segment"
                )
        if engine.source.warning and not engine.source.error:  # a damaged file, its part skipped
            lines.append(f"warning: {engine.source.warning}")
        if n := sanitizer.sanitized_samples:
            samples, were = _samples_were(n)
            lines.append(f"warning: {n} NaN/Inf {samples} {were} replaced by silence")
        if n := sanitizer.clipped_samples:
            samples, were = _samples_were(n)
            lines.append(f"note: {n} {samples} at or past full scale {were} clamped")
        return lines

    def totals(self) -> str | None:
        """The run in a phrase, for its last line: "247 moods over 63.2 s of audio" and what was
        lost on the way (moods not sent, dropped samples, device overflows, gaps); None before any
        mood."""
        engine = self.engine
        if engine.pipeline is None or engine.mood_seq == 0:
            return None  # summary() says why there is no result
        status = engine.status_message()
        audio_s = engine.pipeline.sanitizer.samples_in / engine.pipeline.input_rate_hz
        moods = engine.mood_seq
        text = f"{moods} mood{'s' if moods != 1 else ''} over {audio_s:.1f} s of audio"
        lost = []
        if self.publisher is not None and (n := moods - status["published"]):
            lost.append(f"{n} not sent")  # refused by ZeroMQ (the publisher's dropped)
        if n := status["dropped_samples"]:
            lost.append(f"{n} {_samples_were(n)[0]} dropped")
        if n := status["overflows"]:
            lost.append(f"{n} device overflow{'s' if n != 1 else ''}")
        if n := status["gaps"]:
            lost.append(f"{n} gap{'s' if n != 1 else ''} ({status['gap_seconds']:.1f} s)")
        return text + (f"; {', '.join(lost)}" if lost else "; nothing lost")

    def close(self) -> None:
        if self.engine.outputs:
            self.engine.outputs.close()
        if self.publisher is not None:
            self.publisher.close()


def open_session(
    args: argparse.Namespace,
    members: list[Member],
    windowing: Windowing,
    compute: str,
    source: Source,
    publisher: Publisher | None,
    on_mood: Callable[[dict], None] | None = None,
    outputs: bool = True,
    on_status: Callable[[dict], None] | None = None,
) -> Session:
    """The engine for ``source`` (the resampler its liveness calls for), publishing on ``publisher``
    (None: no feed) and, with ``outputs``, to the protocol outputs the options name.

    Raises OutputError or MapError (an output); the publisher is closed then.
    """
    windowing = dataclasses.replace(windowing, resampler=resampler_for(args.resampler, source))
    engine = Engine(
        source,
        members,
        windowing,
        publisher,
        feed_config(args),
        on_mood=on_mood,
        compute=compute,
        on_status=on_status,
    )
    session = Session(engine, publisher)
    if outputs:
        try:
            engine.outputs = build_outputs(args, engine.tag_names)
        except Exception:
            session.close()
            raise
    return session


def _samples_were(n: int) -> tuple[str, str]:
    return ("sample", "was") if n == 1 else ("samples", "were")
