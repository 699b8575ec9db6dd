"""python -m realtime.bridge: a running analyzer's feed, sent on as OSC, Art-Net/sACN, OS2L and MIDI.

For a lighting computer that is not the one listening: the analyzer publishes its feed
(``listen --pub tcp://0.0.0.0:5556`` on the audio machine), and the bridge, here, subscribes
and drives the same outputs ``listen`` would drive itself, with the same flags and map file.

Examples:
  python -m realtime.bridge --from tcp://192.168.1.20:5556 --osc 127.0.0.1:7700
  python -m realtime.bridge --from tcp://192.168.1.20:5556 --artnet 192.168.1.255 --os2l auto
  python -m realtime.bridge --map moods.toml --midi moodstream --output-rate 30
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports (up to ~0.5 s): a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

import argparse
import shutil
import signal
import sys
import threading
import time

import zmq

from moodstream.cli import Parser, run
from realtime.feed import FeedError, decode
from realtime.keys import CurveError
from realtime.outputs import (
    MapError,
    OutputError,
    Outputs,
    add_output_options,
    build_outputs,
    check_output_options,
)
from realtime.subscribe import FEED_QUIET_S, FeedLink, add_feed_options, open_feed

_POLL_MS = 100


def parse_args(argv: list[str] | None, prog: str = "python -m realtime.bridge") -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description=(
            "Subscribe to a moodstream feed (ZeroMQ) and send it on as OSC, Art-Net/sACN, OS2L and MIDI,\n"
            "exactly as `python -m realtime.listen` does with the same output flags."
        ),
        epilog="examples:" + __doc__.split("Examples:", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_feed_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no live line on the terminal")
    add_output_options(parser)
    args = parser.parse_args(argv)
    check_output_options(parser, args)
    if not any((args.osc, args.artnet, args.sacn, args.os2l, args.midi)):
        parser.error("name at least one output: --osc, --artnet, --sacn, --os2l or --midi")
    return args


class Bridge:
    """SUB socket -> validated messages -> an ``Outputs`` hub.

    The outputs start at once (a MIDI port is there before the music, a lighting desk connected);
    the tags a map file names are checked against the first mood message's.
    """

    def __init__(self, args: argparse.Namespace, link: FeedLink):
        self.args = args
        self.link = link
        self.outputs: Outputs = build_outputs(args, tags=None)
        self.tags_checked = False
        self.last_message: float | None = None
        self.last_status: dict | None = None
        self.moods = 0
        self.skipped = 0

    def handle(self, topic: str, message: dict) -> None:
        self.last_message = time.monotonic()
        if topic == "status":
            self.last_status = message
        else:
            if not self.tags_checked and self.args.map_file:
                self.args.map_file.check_tags(list(message["tags"]))
            self.tags_checked = True
            self.moods += 1
        self.outputs.publish(topic, message)

    def line(self) -> str:
        """The live line: the feed's state, then every output's."""
        if self.last_message is None:
            feed = f"waiting for the feed: {self.link.why_quiet()}"
        elif time.monotonic() - self.last_message > FEED_QUIET_S:
            feed = f"no feed for {time.monotonic() - self.last_message:.0f} s: {self.link.why_quiet()}"
        else:
            source = self.last_status["source"] if self.last_status else None
            state = f", source {source['state']}" if source else ""
            feed = f"feed: {self.moods} mood{'' if self.moods == 1 else 's'}{state}"
        parts = [feed]
        for output in self.outputs.outputs:
            error = f" ({output.error})" if output.state != "ok" and output.error else ""
            parts.append(f"{output}: {output.state}, {output.counts()}{error}")
        return " | ".join(parts)

    def close(self) -> None:
        self.outputs.close()


def main(argv: list[str] | None = None, prog: str = "python -m realtime.bridge") -> int:
    """``prog``: how the command was run, for its usage and error lines (``moodstream bridge``)."""
    args = parse_args(argv, prog)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    context = zmq.Context()
    try:
        link = open_feed(context, args.endpoint, args.server_key, args.client_key)
    except (CurveError, FeedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        context.term()
        return 2
    tty = sys.stderr.isatty()
    try:
        bridge = Bridge(args, link)
    except (OutputError, MapError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        link.close()
        context.term()
        return 2
    if not args.quiet:
        targets = ", ".join(str(o) for o in bridge.outputs.outputs)
        print(f"moodstream bridge: from {args.endpoint} to {targets}; Ctrl-C stops", file=sys.stderr)
    next_line = time.monotonic()
    code = 0
    try:
        while not stop.is_set():
            problem = link.update()
            if problem:  # a CURVE key that does not fit: said at once, on a line of its own, even --quiet
                print(
                    f"{chr(10) if tty and not args.quiet else ''}moodstream bridge: {problem}",
                    file=sys.stderr,
                )
            if link.socket.poll(_POLL_MS):
                frames = link.socket.recv_multipart()
                try:
                    topic, message = decode(frames)
                except FeedError as exc:
                    bridge.skipped += 1
                    print(f"warning: skipped an invalid message: {exc}", file=sys.stderr)
                    continue
                bridge.handle(topic, message)
            if not args.quiet and time.monotonic() >= next_line:
                line = bridge.line()
                if tty:
                    width = shutil.get_terminal_size().columns - 1
                    sys.stderr.write("\r" + line[:width].ljust(width))
                else:
                    sys.stderr.write(line + "\n")
                sys.stderr.flush()
                next_line = time.monotonic() + 1.0
    except (OutputError, MapError) as exc:
        print(f"{chr(10) if tty else ''}error: {exc}", file=sys.stderr)
        code = 2
    finally:
        bridge.close()
        link.close()
        context.term()
    if tty and not args.quiet:
        sys.stderr.write("\n")
    return code


if __name__ == "__main__":
    sys.exit(run(main))
