"""python -m realtime.analyze FILE: what listen would publish for a file, as fast as it can be read.

The same session as ``listen`` (source, pipeline, engine, the feed's smoothing, thresholds and
silence), on the file read as fast as possible and without a feed: one line per window, or with
--json each window's mood message, exactly as ``listen --file FILE`` publishes it (same keys;
``valence``/``arousal`` null in silence).  By default a window every second and no smoothing,
so windows can be averaged; --reaction (listen's is balanced) sets the hop, smoothing and dwell
as it does for listen, to see what the feed would have said.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports (up to ~0.5 s): a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

import argparse
import json
import sys
import threading
import time

from moodstream.cli import Parser, number, run, stop_asked
from realtime.options import (
    add_model_options,
    build_model,
    build_runner,
    check_model_names,
    check_model_options,
    refuse,
)
from realtime.sources import SourceError, open_file


def parse_args(argv: list[str] | None, prog: str = "python -m realtime.analyze") -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file",
        metavar="FILE",
        help="audio file (libsndfile reads wav, aiff, ogg…; mp3, flac, m4a, video and anything else ffmpeg "
        "decodes go through ffmpeg when it is installed)",
    )
    parser.add_argument(
        "--json", action="store_true", help="each window's mood message, one JSON object per line"
    )
    parser.add_argument(
        "--top",
        type=number(1, kind=int, what="the tags per line"),
        default=5,
        metavar="N",
        help="tags per line without --json (5)",
    )
    add_model_options(parser, smooth_default=0.0, reactions=True, reaction_default=None)
    args = parser.parse_args(argv)
    check_model_options(parser, args)
    return args


class Lines:
    """Prints each mood message: as JSON, or one human line (time, the mood state, valence and
    arousal, the active moods and emotions, else the strongest tags)."""

    def __init__(self, as_json: bool, top: int):
        self.as_json, self.top = as_json, top
        self.count = 0

    def __call__(self, m: dict) -> None:
        self.count += 1
        if self.as_json:
            print(json.dumps(m, allow_nan=False, separators=(",", ":")))
            return
        state = f"{m['state']:<15} " if m["state"] else ""
        if m["silent"]:  # no tags to show: silence carries no mood (as listen's line says it)
            print(f"{m['t_stream']:7.2f}s  {state}(silence)")
            return
        top = sorted(m["tags"].items(), key=lambda kv: -kv[1])[: self.top]
        tags = "  ".join(f"{name} {p:.2f}" for name, p in top)
        va = "" if m["valence"] is None else f"V {m['valence']:+.2f} A {m['arousal']:+.2f}  "
        words = ", ".join(m["moods"] + m["emotions"])  # the active moods and emotions, else the top tags
        print(f"{m['t_stream']:7.2f}s  {state}{va}{words or tags}")


def main(argv: list[str] | None = None, prog: str = "python -m realtime.analyze") -> int:
    """``prog``: how the command was run, for its usage and error lines (``moodstream analyze``)."""
    args = parse_args(argv, prog)
    try:
        source = open_file(args.file)  # checked before the model loads: the same errors as listen --file
    except SourceError as exc:
        refuse(str(exc))
    check_model_names(args)  # from here on torch and the model load
    from realtime.analyzer import Member
    from realtime.session import open_session

    model, windowing, compute = build_model(args)
    members = [Member(args.model, model, build_runner(args, model, compute))]
    lines = Lines(args.json, args.top)
    session = open_session(
        args, members, windowing, compute, source, publisher=None, on_mood=lines, outputs=False
    )
    if (how := stop_asked()) is not None:  # a stop while loading whose KeyboardInterrupt was lost
        session.close()
        raise KeyboardInterrupt(how)  # run() says the one line
    started = time.perf_counter()
    try:
        code = session.engine.run(threading.Event())
    except BrokenPipeError:  # e.g. piped into head
        return 0
    finally:
        session.close()
    if source.error:
        print(f"error: {source.error}", file=sys.stderr)
        return 1  # failed on the way (realtime.options.refuse has the convention)
    elapsed = time.perf_counter() - started
    audio_s = session.engine.pipeline.sanitizer.samples_in / source.sample_rate_hz
    for line in session.summary():
        print(line, file=sys.stderr)
    print(
        f"analyzed {audio_s:.1f} s of audio in {elapsed:.2f} s ({audio_s / max(elapsed, 1e-9):.1f}x real time), "
        f"{lines.count} window{'s' if lines.count != 1 else ''}, {args.model}, hop {session.engine.pipeline.hop_s:.3f} s",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    sys.exit(run(main))
