"""python -m realtime.view: a live web view of any running analyzer's feed.

``listen --web PORT`` serves the same page from the analyzer itself; this serves it from the
feed, on another machine or beside a bridge, and outlives the analyzer (the page says when the
feed stops, and picks it up again when it is back).

Examples:
  python -m realtime.view                                     # the local analyzer, http://127.0.0.1:8080/
  python -m realtime.view --from tcp://192.168.1.20:5556 --web 8090
  python -m realtime.view --from tcp://192.168.1.20:5556 --web 0.0.0.0:8080   # for the whole crew
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports (up to ~0.5 s): a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

import argparse
import signal
import sys
import threading
import time

import zmq

from moodstream.cli import Parser, run
from realtime.feed import FeedError, decode
from realtime.keys import CurveError
from realtime.subscribe import FEED_QUIET_S, add_feed_options, open_feed
from realtime.web import DEFAULT_HOST, WebError, web_address

DEFAULT_PORT = 8080
_POLL_MS = 100


def parse_args(argv: list[str] | None, prog: str = "python -m realtime.view") -> argparse.Namespace:
    parser = Parser(
        prog=prog,
        description=(
            "Serve a live web view of a moodstream feed: the mood state, valence/arousal on a plane\n"
            "with a trail, the strongest tags, a five-minute timeline and the analyzer's status."
        ),
        epilog="examples:" + __doc__.split("Examples:", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_feed_options(parser)
    parser.add_argument(
        "--web",
        type=web_address,
        default=(DEFAULT_HOST, DEFAULT_PORT),
        metavar="[HOST:]PORT",
        help=f"where to serve the page (default {DEFAULT_HOST}:{DEFAULT_PORT}; 0.0.0.0:PORT lets other "
        "machines watch)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "python -m realtime.view") -> int:
    """``prog``: how the command was run, for its usage and error lines (``moodstream view``)."""
    args = parse_args(argv, prog)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    from realtime.web.server import WebView  # aiohttp: after the arguments are known to be good

    try:
        web = WebView(*args.web, title=f"view of {args.endpoint}")
    except WebError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    context = zmq.Context()
    try:
        link = open_feed(context, args.endpoint, args.server_key, args.client_key)
    except (CurveError, FeedError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        web.close()
        context.term()
        return 2
    print(f"moodstream view: from {args.endpoint}; open {web.url}  Ctrl-C stops", file=sys.stderr, flush=True)
    # The feed's comings and goings are said once each; here is None until one was said, so a
    # feed that never comes (a wrong port or host, no analyzer yet) is said too.
    last_message, here = time.monotonic(), None
    try:
        while not stop.is_set():
            problem = link.update()
            if problem:  # a CURVE key that does not fit: no message will come until it does
                print(f"moodstream view: {problem}", file=sys.stderr, flush=True)
            if link.socket.poll(_POLL_MS):
                try:
                    topic, message = decode(link.socket.recv_multipart())
                except FeedError as exc:
                    print(f"warning: skipped an invalid message: {exc}", file=sys.stderr, flush=True)
                    continue
                if here is not True:
                    print(
                        f"moodstream view: the feed from {args.endpoint} is here", file=sys.stderr, flush=True
                    )
                last_message, here = time.monotonic(), True
                web.publish(topic, message)
            elif here is not False and time.monotonic() - last_message > FEED_QUIET_S:
                print(
                    f"moodstream view: no feed for {FEED_QUIET_S:g} s ({link.why_quiet()}); waiting for it",
                    file=sys.stderr,
                    flush=True,
                )
                here = False
    finally:
        web.close()
        link.close()
        context.term()
    print(f"moodstream view: {web.summary()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
