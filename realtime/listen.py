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
  python -m realtime.listen --device 0 --web 8080                     # watch it at http://127.0.0.1:8080/
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports (up to ~0.5 s): a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

# Thread pools that sleep rather than spin (realtime/live_env.py): set before numpy and torch load.
from realtime.live_env import set_live_env

set_live_env()

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable

# Only what parsing, the source and the feed's port need: torch and the models load after them,
# so a wrong --device, --file or port is said within a second.
from moodstream.cli import STOP_SIGNALS, Parser, run, stop_asked
from realtime.feed import DEFAULT_ENDPOINT, endpoint
from realtime.options import (
    REACTIONS,
    add_model_options,
    check_model_names,
    check_model_options,
    number,
)

# One thread: a live hop is many small calls that a second thread barely shortens; the lag came
# out lower and steadier with one (bench/RESULTS.md, end to end), and the other cores stay free.
LIVE_THREADS = (1, "the lowest, steadiest lag; the other cores stay free for the show's other software")
from realtime.outputs import MapError, OutputError, add_output_options, check_output_options
from realtime.publisher import Publisher, PublisherError
from realtime.smoothing import MOOD_STATES
from realtime.sources import SourceError, list_devices, make_source
from realtime.web import WebError, add_web_option


def parse_args(argv: list[str] | None, prog: str = "python -m realtime.listen") -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description=(
            "Listen to a sound card, a file, raw PCM on stdin or a stream URL, and publish mood tags\n"
            "and valence/arousal over ZeroMQ: topic 'mood' once per hop, topic 'status' once a second\n"
            "(two frames: topic, then UTF-8 JSON; schema: realtime/schema/feed.schema.json).\n"
            "Each mood carries a state to bind a scene to, one of\n"
            f"  {', '.join(MOOD_STATES)},\n"
            "valence (-1 sad/negative .. +1 happy/positive) and arousal (-1 calm .. +1 energetic):\n"
            "each is 2p - 1 of a calibrated probability, a confidence, not an intensity;\n"
            "and the active tags, also grouped as moods, emotions and descriptors (at most 3 each).\n"
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
        help="channels to capture from the device, or of --stdin's interleaved PCM (default: the "
        "device's, or 1 for --stdin); mixed to mono",
    )
    src.add_argument(
        "--file",
        metavar="PATH",
        help="an audio file (libsndfile reads wav, aiff, ogg…; mp3, flac, m4a, video and anything else ffmpeg decodes go "
        "through ffmpeg when it is installed)",
    )
    src.add_argument(
        "--realtime",
        action="store_true",
        help="with --file/--url: play a file at its pace (a live --url stream is paced by its server)",
    )
    src.add_argument("--stdin", action="store_true", help="raw PCM on standard input (needs --rate)")
    src.add_argument(
        "--rate",
        type=number(1000, 768000, kind=int, what="a sample rate in Hz"),
        metavar="HZ",
        help="sample rate of --stdin audio",
    )
    src.add_argument(
        "--format", default="f32le", choices=("f32le", "s16le"), help="--stdin sample format (default f32le)"
    )
    src.add_argument("--url", metavar="URL", help="any URL or file ffmpeg can decode (radio stream, video…)")
    src.add_argument(
        "--no-reconnect",
        action="store_true",
        help="a --url live stream that drops or a --device that vanishes ends listen (exit 1, with "
        "the reason) instead of being reopened with backoff (1, 2, 4 ... 30 s; status says "
        "reconnecting, moods pause and resume by themselves)",
    )
    add_model_options(parser, smooth_default=2.0, reactions=True, threads=LIVE_THREADS, several_models=True)
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
    out.add_argument(
        "--quiet",
        action="store_true",
        help="no banner and no live line on the terminal (errors, warnings and the web view's URL still print)",
    )
    add_output_options(parser)
    add_web_option(parser)
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
    if args.channels and (args.file or args.url):
        parser.error("--channels applies to --device and --stdin (a file or a stream has its own)")
    check_model_options(parser, args)
    check_output_options(parser, args)
    return args


SAME_STOP_S = 0.5  # signals this close to the first stop are that stop, not a second Ctrl-C
WIDTH = 79  # the live line fits an 80-column terminal (a wider one shows no more)


def say(text: str, stream=None) -> None:
    """Write to the terminal (stderr).  Once its reader has gone (``listen ... 2>&1 | head``, a
    logger that died), write nowhere: the feed and the outputs go on, as for a closed terminal,
    and the end is still a clean one."""
    stream = sys.stderr if stream is None else stream
    try:
        stream.write(text)
        stream.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class LiveLine:
    """One line on the terminal, rewritten each hop: stream time, latency, the mood state,
    valence and arousal (labelled), the active moods (else the active emotions, else the
    strongest tags).

    It starts with "!" and what is wrong when the last second had dropped samples, device
    overflows or a stalled source, or an output is failing; an output that starts or stops
    failing, and a source that stalls or is lost and is back, get a line of their own (when no
    audio comes, no mood comes to show a "!" on).
    """

    def __init__(self, stream=None, live: bool | Callable[[], bool] = True):
        self.stream = sys.stderr if stream is None else stream  # at the call: stderr may be replaced
        # A file read as fast as it goes (no --realtime) has no lag to show: its windows wait in
        # the ring behind the audio read ahead, seconds that say nothing about the analyzer.
        self.live = live
        self.tty = self.stream.isatty()
        self.outputs = None  # an Outputs hub, whose failing outputs the line reports
        self._states: dict[int, str] = {}
        self._source = ("starting", 0)  # the source's state and reconnection attempt last shown
        self._counts: tuple[int, int] | None = None  # dropped samples, overflows at the last status
        self._trouble = ""  # what the last status said is wrong, for the live line
        self.announced_rate_hz: int | None = None  # the rate the banner named (a device may open at another)

    def _events(self) -> tuple[list[str], list[str]]:
        events, failing = [], []
        for output in self.outputs.outputs if self.outputs else []:
            state = output.state
            if state != self._states.get(id(output), "ok"):
                why = f": {output.error}" if state != "ok" and output.error else ""
                events.append(f"moodstream: {output} {state}{why}")
            self._states[id(output)] = state
            if state != "ok":
                failing.append(output.kind)
        return events, list(dict.fromkeys(failing))

    def _write(self, events: list[str], line: str | None = None) -> None:
        if self.tty:
            width = max(20, min(WIDTH, shutil.get_terminal_size().columns - 1))
            # An event is a line of its own: whole (the terminal wraps it), only the live line is cut.
            text = "".join("\r" + event.ljust(width) + "\n" for event in events)
            text += "" if line is None else "\r" + line[:width].ljust(width)
        else:
            text = "".join(event + "\n" for event in events) + ("" if line is None else line[:WIDTH] + "\n")
        say(text, self.stream)

    def status(self, message: dict) -> None:
        """Note what went wrong in the last second; a line of its own when the source is lost, at
        each reconnection attempt, and when it is back."""
        source = message["source"]
        if (
            self.announced_rate_hz
            and source["state"] == "running"
            and source["sample_rate_hz"] != self.announced_rate_hz
        ):
            self._write([f"moodstream: {source['kind']} opened at {source['sample_rate_hz']} Hz "
                         f"(its {self.announced_rate_hz} Hz was refused)"])  # fmt: skip
            self.announced_rate_hz = source["sample_rate_hz"]
        counts = (message["dropped_samples"], message["overflows"])
        trouble = []
        if self._counts is not None and counts[0] > self._counts[0]:
            trouble.append(f"dropped {counts[0] - self._counts[0]} samples")
        if self._counts is not None and counts[1] > self._counts[1]:
            trouble.append("device overflow")
        if source["state"] == "stalled":
            trouble.append("no audio")
        self._counts, self._trouble = counts, ", ".join(trouble)
        away = source["reconnect"]
        now = (source["state"], away["attempt"] if away else 0)
        previous, self._source = self._source, now
        if now == previous:
            return
        if away:
            text = f"moodstream: {source['kind']} lost, reconnecting (attempt {away['attempt']}): {away['reason']}"
        elif now[0] == "stalled":  # no mood comes without audio: the live line would not say it
            text = f"moodstream: {source['kind']} stalled: no audio is coming in"
        elif now[0] == "running" and previous[0] in ("reconnecting", "stalled"):
            text = f"moodstream: {source['kind']} running again"
        else:  # started, or ended (the last line says how)
            return
        self._write([text])

    def __call__(self, m: dict) -> None:
        events, failing = self._events()
        flags = [self._trouble] if self._trouble else []
        flags += [" ".join(failing) + " failing"] if failing else []
        line = f"{'! ' + '; '.join(flags) + '  ' if flags else ''}{m['t_stream']:6.1f}s"
        if self.live() if callable(self.live) else self.live:
            line += f" {m['latency_ms']:4.0f} ms"
        if m["state"]:
            line += f"  {m['state']}"
        if m["valence"] is not None:
            line += f"  V {m['valence']:+.2f} A {m['arousal']:+.2f}"
        if m["silent"]:
            words = "(silence)"
        elif m["moods"] or m["emotions"]:
            words = ", ".join(m["moods"] or m["emotions"])
        else:
            top = sorted(m["tags"].items(), key=lambda kv: -kv[1])[:3]
            words = " ".join(f"{name} {p:.2f}" for name, p in top)
        self._write(events, f"{line}  {words}")


def main(argv: list[str] | None = None, prog: str = "python -m realtime.listen") -> int:
    """``prog``: how the command was run, for its usage and error lines (``moodstream listen``)."""
    args = parse_args(argv, prog)
    if args.list_devices:
        try:
            print(list_devices())
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    # The source and the feed's port first: a wrong --device or --file, or a port in use, is
    # said at once, not after the model has loaded (a URL needs the model's sample rate).
    source = publisher = web = None
    try:
        if not args.url:
            source = make_source(args, None)
        publisher = Publisher(args.pub, curve_key=args.curve_key, curve_clients=args.curve_clients)
        if args.web:
            from realtime.web.server import WebView

            web = WebView(*args.web, title=f"listen on {args.pub}")
        check_model_names(args)  # from here on torch and the models load
        from realtime.options import build_members
        from realtime.session import open_session

        members, windowing, compute = build_members(args)
        primary = members[0].model
        if source is None:
            source = make_source(args, primary.frontend.sample_rate_hz)
        # Asked at each line: a --url turns out to be a live stream at its first audio.
        view = None if args.quiet else LiveLine(live=lambda: source.live)
        session = open_session(
            args, members, windowing, compute, source, publisher, on_mood=view, on_status=view and view.status
        )
    except BaseException as exc:  # a model that cannot load exits from build_members: close the ports first
        for server in (publisher, web):
            if server is not None:
                server.close()
        if not isinstance(exc, (SourceError, PublisherError, OutputError, MapError, WebError)):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if (how := stop_asked()) is not None:  # a stop while loading whose KeyboardInterrupt was lost
        session.close()
        if web:
            web.close()
        raise KeyboardInterrupt(how)  # run() says the one line
    engine = session.engine
    if web:
        engine.watchers.append(web)
    stop = threading.Event()
    stop_asked_at: float | None = None
    stopped_by = ""  # "Ctrl-C" or "SIGTERM", for the last line

    def on_signal(signum, frame):
        # A second Ctrl-C: the user really wants out.  One stop can arrive twice at once (`timeout`
        # and process-group kills signal the process and then its group): that is still one stop.
        nonlocal stop_asked_at, stopped_by
        if stop_asked_at is None:
            stop_asked_at = time.monotonic()
            stopped_by = STOP_SIGNALS.get(signum, "a signal")
            stop.set()
        elif time.monotonic() - stop_asked_at > SAME_STOP_S:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if view:
        view.outputs = engine.outputs
    outputs = list(engine.outputs.outputs) if engine.outputs else []  # closing the hub empties its list

    def announce() -> None:
        # Once the source has started: it is named as opened (a device's rate, a URL that answered),
        # and a source that cannot start gets its one error line without a banner before it.
        if not args.quiet:
            from realtime.analyzer import effective_windows

            _, hop_s, _, context_s = effective_windows(primary, engine.windowing)
            feed = f"{session.publisher.endpoint}{' (CURVE)' if session.publisher.encrypted else ''}"
            smoothing = f"{args.smooth:g} s{' adaptive' if args.follow else ''}" if args.smooth else "off"
            view.announced_rate_hz = source.sample_rate_hz
            for line in (
                f"{engine.model_name} on {source.kind} {source.name!r} ({source.sample_rate_hz} Hz, {source.channels} ch)",
                f"publishing on {feed}; hop {hop_s:.3g} s, context {context_s:.3g} s, {engine.windowing.resampler} resampler",
                # The preset's name, so a user knows what to change; the values as given, overrides included.
                f"reaction {args.reaction}: smoothing {smoothing}, dwell {args.dwell:g} s (--reaction {'|'.join(REACTIONS)})",
                f"listening... the first result after {primary.segment_seconds:.1f} s of audio; Ctrl-C stops",
            ):
                say(f"moodstream: {line}\n")
            if engine.outputs:
                targets = ", ".join(str(o) for o in engine.outputs.outputs)
                rate = f"{args.output_rate:g} Hz" if args.output_rate else "once per hop"
                say(f"moodstream: sending to {targets} ({rate})\n")
        if web:  # said even with --quiet: the URL is the way in
            say(f"moodstream: web view at {web.url}\n")

    failed_to_start = None
    try:
        try:
            code = engine.run(stop, on_started=announce)
        except SourceError as exc:  # the source would not start: nothing ran
            failed_to_start, code = str(exc), 2
        finally:
            session.close()  # after a second Ctrl-C too; a third leaves it unfinished
            if web:
                web.close()
    except KeyboardInterrupt:  # a second Ctrl-C, while running or closing: out now, no summary
        newline = "\n" if view and view.tty else ""
        say(f"{newline}moodstream: stopped at once (a second Ctrl-C)\n")
        return 130
    if view and view.tty:
        say("\n")
    if failed_to_start or source.error:
        say(f"error: {failed_to_start or source.error}\n")
    for line in session.summary(stopped=stop.is_set()):
        say(line + "\n")
    totals = session.totals()
    if view and totals:  # not with --quiet: how the run went, and what each output sent
        if stop.is_set():
            how = f"stopped ({stopped_by})"
        else:
            what = {"stdin": "stdin", "url": "the stream"}.get(source.kind, f"the {source.kind}")
            how = f"{what} {'was lost' if code else 'ended'}"  # lost: --no-reconnect, a broken file
        say(f"moodstream: {how}: {totals}\n")
        for output in outputs:
            say(f"moodstream: {output}: {output.counts()}\n")
    if web:
        say(f"moodstream: {web.summary()}\n")
    return code


if __name__ == "__main__":
    code = run(main)
    # Everything main() opened is closed.  Python's own teardown of torch and its thread pools
    # would take 0.6 s more (seconds on a busy machine): skip it, so a stop is prompt.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
