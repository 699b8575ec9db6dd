"""python -m realtime.listen: analyse live audio and publish moods over ZeroMQ.

Examples:
  python -m realtime.listen --list-devices
  python -m realtime.listen --device 0
  python -m realtime.listen --device "USB Audio" --hop 0.5 --smooth 4
  python -m realtime.listen --file song.ogg --realtime
  arecord -f FLOAT_LE -r 48000 -c 1 -t raw | python -m realtime.listen --stdin --rate 48000
  python -m realtime.listen --url http://radio.example/stream.mp3
  python -m realtime.listen --device 0 --osc 127.0.0.1:7700          # QLC+ / TouchDesigner / Resolume
  python -m realtime.listen --device 0 --sacn 192.168.1.50            # a WLED strip shows the mood colour
  python -m realtime.listen --device 0 --os2l auto --midi moodstream  # QLC+'s OS2L plugin, and MIDI CCs
"""

from __future__ import annotations

import os

# Live analysis shares the machine (DJ software, lighting control): OpenMP threads that spin
# while they wait turn one busy core into hops of hundreds of ms (bench/RESULTS.md, "Threads").
# They sleep instead, as ONNX Runtime's already do here.  It must be set before torch loads
# libgomp, so before the imports below; an OMP_WAIT_POLICY of the user's own wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import shutil
import signal
import sys
import threading

from realtime.analyzer import effective_windows
from realtime.feed import DEFAULT_ENDPOINT, endpoint
from realtime.options import add_model_options, build_members, check_model_options, number
from realtime.outputs import MapError, OutputError, add_output_options, check_output_options
from realtime.publisher import Publisher, PublisherError
from realtime.session import make_source, open_session
from realtime.sources import SourceError, list_devices


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m realtime.listen",
        description=(
            "Listen to a sound card, a file, raw PCM on stdin or a stream URL, and publish mood tags\n"
            "and valence/arousal over ZeroMQ: topic 'mood' once per hop, topic 'status' once a second\n"
            "(two frames: topic, then UTF-8 JSON; schema: realtime/schema/feed.schema.json).\n"
            "During silence, moods say silent=true with no active tags. Watch the feed with:\n"
            "  python -m realtime.subscribe"
        ),
        epilog="examples:" + __doc__.split("Examples:", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = parser.add_argument_group("audio source (one of; default: the default input device)")
    src.add_argument(
        "--device", metavar="ID", help="input device: index or part of its name (see --list-devices)"
    )
    src.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    src.add_argument(
        "--channels",
        type=number(1, 64, kind=int, what="a channel count"),
        metavar="N",
        help="device channels to capture (mixed to mono)",
    )
    src.add_argument("--file", metavar="PATH", help="an audio file (anything libsndfile reads)")
    src.add_argument("--realtime", action="store_true", help="with --file/--url: pace to the clock")
    src.add_argument("--stdin", action="store_true", help="raw PCM on standard input (needs --rate)")
    src.add_argument(
        "--rate",
        type=number(1000, 768000, kind=int, what="a sample rate in Hz"),
        metavar="HZ",
        help="sample rate of --stdin audio",
    )
    src.add_argument("--format", default="f32le", choices=("f32le", "s16le"), help="--stdin sample format")
    src.add_argument("--url", metavar="URL", help="any URL or file ffmpeg can decode (radio stream, video…)")
    src.add_argument(
        "--no-reconnect",
        action="store_true",
        help="a --url live stream that drops or a --device that vanishes ends listen (exit 1, with "
        "the reason) instead of being reopened with backoff (1, 2, 4 ... 30 s; status says "
        "reconnecting, moods pause and resume by themselves)",
    )
    add_model_options(parser, smooth_default=2.0)
    out = parser.add_argument_group("feed")
    out.add_argument(
        "--pub",
        default=DEFAULT_ENDPOINT,
        type=endpoint,
        metavar="ENDPOINT",
        help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT}; loopback only unless you say otherwise)",
    )
    out.add_argument(
        "--curve-key",
        metavar="FILE",
        help="encrypt the feed with ZeroMQ CURVE: this analyzer's key pair (server.key_secret, made "
        "by python -m realtime.keys DIR); subscribers then need its server.key",
    )
    out.add_argument(
        "--curve-clients",
        metavar="DIR",
        help="with --curve-key: admit only the subscribers whose public keys (*.key) are in DIR",
    )
    out.add_argument("--quiet", action="store_true", help="no live line on the terminal")
    add_output_options(parser)
    args = parser.parse_args(argv)
    chosen = [flag for flag in ("device", "file", "url") if getattr(args, flag) is not None] + (
        ["stdin"] if args.stdin else []
    )
    if len(chosen) > 1:
        parser.error(f"choose one audio source, not {' and '.join('--' + c for c in chosen)}")
    if args.stdin and not args.rate:
        parser.error("--stdin needs --rate (the sample rate of the raw PCM)")
    if args.realtime and not (args.file or args.url):
        parser.error("--realtime applies to --file and --url")
    check_model_options(parser, args)
    check_output_options(parser, args)
    return args


class LiveLine:
    """One line on the terminal, rewritten each hop: time, latency, valence/arousal, top tags.

    With outputs: an output that starts or stops failing is reported on a line of its own
    (kind, target, state, why), and the live line starts with "!" and the failing kinds.
    """

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = stream.isatty()
        self.outputs = None  # an Outputs hub, whose failing outputs the line reports
        self._states: dict[int, str] = {}
        self._source = ("starting", 0)  # the source's state and reconnection attempt last shown

    def _events(self) -> tuple[list[str], str]:
        events, failing = [], []
        for output in self.outputs.outputs if self.outputs else []:
            state = output.state
            if state != self._states.get(id(output), "ok"):
                why = f": {output.error}" if state != "ok" and output.error else ""
                events.append(f"moodstream: {output} {state}{why}")
            self._states[id(output)] = state
            if state != "ok":
                failing.append(output.kind)
        return events, ("! " + " ".join(dict.fromkeys(failing)) + "  ") if failing else ""

    def status(self, message: dict) -> None:
        """A line of its own when the source is lost, at each reconnection attempt, and when it is back."""
        source = message["source"]
        away = source["reconnect"]
        now = (source["state"], away["attempt"] if away else 0)
        if now == self._source or (not away and self._source[0] != "reconnecting"):
            self._source = now
            return
        self._source = now
        if away:
            text = f"moodstream: {source['kind']} lost, reconnecting (attempt {away['attempt']}): {away['reason']}"
        else:
            text = f"moodstream: {source['kind']} {source['state']} again"
        if self.tty:
            text = "\r" + text.ljust(shutil.get_terminal_size().columns - 1)
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, m: dict) -> None:
        va = ""
        if m["valence"] is not None:
            va = f"  V {m['valence']:+.2f} A {m['arousal']:+.2f}"
        if m["silent"]:
            tags = "(silence)"
        else:
            top = sorted(m["tags"].items(), key=lambda kv: -kv[1])[:4]
            tags = "  ".join(f"{name} {p:.2f}" for name, p in top)
        events, flag = self._events()
        line = f"{flag}{m['t_stream']:7.1f}s  lat {m['latency_ms']:5.0f} ms{va}  {tags}"
        if self.tty:
            width = shutil.get_terminal_size().columns - 1
            for event in events:
                self.stream.write("\r" + event.ljust(width) + "\n")
            self.stream.write("\r" + line[:width].ljust(width))
        else:
            self.stream.write("".join(event + "\n" for event in events) + line + "\n")
        self.stream.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_devices:
        try:
            print(list_devices())
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    # The source and the feed's port first: a wrong --device or --file, or a port in use, is
    # said at once, not after the model has loaded (a URL needs the model's sample rate).
    source = publisher = None
    try:
        if not args.url:
            source = make_source(args, None)
        publisher = Publisher(args.pub, curve_key=args.curve_key, curve_clients=args.curve_clients)
        members, windowing, compute = build_members(args)
        primary = members[0].model
        if source is None:
            source = make_source(args, primary.frontend.sample_rate_hz)
        view = None if args.quiet else LiveLine()
        session = open_session(
            args, members, windowing, compute, source, publisher, on_mood=view, on_status=view and view.status
        )
    except BaseException as exc:  # a model that cannot load exits from build_members: close the port first
        if publisher is not None:
            publisher.close()
        if not isinstance(exc, (SourceError, PublisherError, OutputError, MapError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = session.engine
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if view:
        view.outputs = engine.outputs
    if not args.quiet:
        _, hop_s, _, context_s = effective_windows(primary, engine.windowing)
        print(
            f"moodstream: {engine.model_name} on {source.kind} {source.name!r}, publishing on "
            f"{session.publisher.endpoint}{' (CURVE)' if session.publisher.encrypted else ''} (hop {hop_s:.3g} s, context {context_s:.3g} s, "
            f"{engine.windowing.resampler} resampler); Ctrl-C stops",
            file=sys.stderr,
        )
        if engine.outputs:
            targets = ", ".join(str(o) for o in engine.outputs.outputs)
            rate = f"{args.output_rate:g} Hz" if args.output_rate else "once per hop"
            print(f"moodstream: sending to {targets} ({rate})", file=sys.stderr)
    failed_to_start = None
    try:
        code = engine.run(stop)
    except SourceError as exc:  # the source would not start: nothing ran
        failed_to_start, code = str(exc), 2
    finally:
        session.close()
    if view and view.tty:
        sys.stderr.write("\n")
    if failed_to_start or source.error:
        print(f"error: {failed_to_start or source.error}", file=sys.stderr)
    for line in session.summary():
        print(line, file=sys.stderr)
    return code


if __name__ == "__main__":
    code = main()
    # Everything main() opened is closed.  Python's own teardown of torch and its thread pools
    # would take 0.6 s more (seconds on a busy machine): skip it, so a stop is prompt.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
