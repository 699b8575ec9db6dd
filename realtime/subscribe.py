"""``python -m realtime.subscribe``: print the moodstream feed, one line per message.

Every message is checked with ``feed.decode``; one that breaks the contract is reported on
stderr and skipped.  Text from the feed (tag and source names) is escaped before it reaches
the terminal, so a hostile publisher cannot send terminal control sequences.
"""

from __future__ import annotations

if __name__ == "__main__":  # before the imports (up to ~0.5 s): a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

import argparse
import json
import os
import signal
import socket as net
import sys
import time

import zmq
from zmq.utils.monitor import recv_monitor_message

from moodstream.cli import Parser, interrupt, run
from realtime.feed import (
    DEFAULT_ENDPOINT,
    MAX_MESSAGE_BYTES,
    SCHEMA_VERSION,
    TOPICS,
    FeedError,
    decode,
    feed_endpoint,
)
from realtime.keys import CurveError, add_subscriber_options, secure_subscriber
from realtime.smoothing import MOOD_STATES

TOP_TAGS = 3
# Poll in slices so the --timeout deadline is checked even when nothing arrives.
_POLL_SLICE_MS = 100
# A running analyzer sends a status every second and a mood every hop: this long without either,
# say so once (a subscriber cannot tell a publisher that went away from one not started yet).
QUIET_NOTE_S = 5.0

_FEED_HELP = f"""\
the feed:
  A ZeroMQ PUB socket (default {DEFAULT_ENDPOINT}).  Each message is two frames: the topic
  ('mood' or 'status'), then a UTF-8 JSON object described by realtime/schema/feed.schema.json
  (schema {SCHEMA_VERSION}).  With --json both topics print as bare objects: 'tags' marks a mood, 'uptime_s'
  a status.
  mood    once per analysis hop: tags (probability of every tag), active (tags on now),
          valence and arousal in [-1, 1] or null, state (the mood state, null without
          valence/arousal: {", ".join(MOOD_STATES)}),
          state_p (each state's probability), moods, emotions, descriptors (the active tags
          of each vocabulary, strongest first), silent, t_capture/t_publish (Unix s),
          latency_ms, t_stream, hop_s, context_s, smooth_s, seq, model, schema.
  status  once a second: source (kind, name, state: starting, running, stalled, reconnecting,
          ended, stopped or error; sample_rate_hz, error, reconnect),
          overflows, dropped_samples, sanitized_samples, clipped_samples, gaps and gap_seconds
          (live audio that never arrived), published (mood messages sent), latency_ms (p50,
          p99, count over the last minute), process_ms (the analyzer's stages per window, p50
          and p99 ms), outputs (OSC, DMX, OS2L, MIDI: kind, target, state, sent, dropped,
          error), uptime_s, t, seq, model, schema.

Nothing for {QUIET_NOTE_S:g} s: a note on stderr that says what the connection tells (nothing listens
at the endpoint, or an analyzer is connected but sends nothing: starting or stalled), and another
when messages come again; a CURVE key that does not fit the feed is said at once.  It waits on
until Ctrl-C or --timeout.

exit status: 0 after --count messages or Ctrl-C, 1 after --timeout without a message.
"""


def _printable(text: str) -> str:
    """``text`` with control and other non-printable characters escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _signed(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:+.2f}"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} ms"


def format_mood(message: dict) -> str:
    """One human line for a ``mood`` message."""
    tags = message["tags"]
    top = sorted(tags.items(), key=lambda item: item[1], reverse=True)[:TOP_TAGS]
    # Strongest first, as listen's line and the feed's moods/emotions/descriptors list them.
    strongest = sorted(message["active"], key=lambda name: -tags.get(name, 0.0))
    active = ", ".join(_printable(name) for name in strongest) or "-"
    top_text = ", ".join(f"{_printable(name)} {p:.2f}" for name, p in top) or "-"
    silent = "  silent" if message["silent"] else ""
    state = f"{message['state']}  " if message["state"] else ""
    return (
        f"mood   #{message['seq']}  lat {_ms(message['latency_ms'])}  {state}"
        f"valence {_signed(message['valence'])} arousal {_signed(message['arousal'])}{silent}  "
        f"active: {active} | top: {top_text}"
    )


def format_status(message: dict) -> str:
    """One human line for a ``status`` message."""
    source = message["source"]
    latency = message["latency_ms"]
    error = f"  error: {_printable(source['error'])}" if source["error"] is not None else ""
    away = source["reconnect"]
    if away:
        error += f"  (attempt {away['attempt']}: {_printable(away['reason'])})"
    gaps = f" gaps {message['gaps']} ({message['gap_seconds']:.1f} s)" if message["gaps"] else ""
    outputs = "".join(
        f"  {o['kind']} {_printable(o['target'])}: {o['state']}"
        + (f" ({_printable(o['error'])})" if o["state"] != "ok" and o["error"] else "")
        for o in message["outputs"]
    )
    return (
        f"status #{message['seq']}  source {source['kind']} {source['state']}  "
        f"overflows {message['overflows']} dropped {message['dropped_samples']} "
        f"nan/inf {message['sanitized_samples']} clipped {message['clipped_samples']}{gaps}  "
        f"p50 {_ms(latency['p50'])} p99 {_ms(latency['p99'])}{error}{outputs}"
    )


FEED_QUIET_S = 3.0  # the analyzer sends status every second: this long without a message, the feed is gone


def add_feed_options(parser: argparse.ArgumentParser) -> None:
    """--from ENDPOINT and the CURVE options: what a command that reads a running analyzer's feed
    takes (bridge, view)."""
    parser.add_argument(
        "--from",
        dest="endpoint",
        default=DEFAULT_ENDPOINT,
        type=feed_endpoint,
        metavar="ENDPOINT",
        help=f"the analyzer's feed (default {DEFAULT_ENDPOINT})",
    )
    add_subscriber_options(parser)


# How long handshakes must fail with no detail before a reader blames its --server-key (FeedLink);
# a mechanism mismatch names itself within a few reconnections (~0.1 s apart).
_VAGUE_S = 0.5
# A running analyzer sends a status every second: connected for less than this, silence is news
# to nobody (FeedLink.why_quiet).
_JUST_CONNECTED_S = 2.0
# What libzmq's socket monitor says about the connection to the feed (FeedLink).
_LINK_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_DISCONNECTED
)


class FeedLink:
    """A SUB socket on the feed, and what its connection is doing (libzmq's socket monitor).

    A SUB socket that hears nothing cannot tell why: nothing listens at the endpoint, the CURVE
    keys do not match (the handshake fails and is retried, silently, for ever), or an analyzer is
    there and sends nothing yet (loading its model) or any more (stalled).  The monitor's events
    tell these apart, so a reader says which.  Open one with ``open_feed``.
    """

    def __init__(self, socket: zmq.Socket, endpoint: str, keyed: bool, client_keyed: bool = False):
        self.socket = socket
        self.endpoint = endpoint
        self.keyed = keyed  # --server-key given: the reader speaks CURVE
        self.client_keyed = client_keyed  # --client-key given (else a throwaway key pair)
        self.refused: str | None = None  # a handshake that failed, and why; until one succeeds
        self.connected = False  # a handshake succeeded and the peer is still there
        self.connected_at = 0.0  # when (time.monotonic())
        self.absent = False  # the last attempt to connect found nothing listening
        self._reached = False  # a TCP connection since the last retry
        self._vague_since: float | None = None  # handshakes have failed with no detail since then
        # Attached before connect(): the first handshake's outcome is not missed.
        self._monitor = socket.get_monitor_socket(_LINK_EVENTS)

    def update(self) -> str | None:
        """Read the monitor's events; a refused handshake's reason when it is new (a key that does
        not fit: to be said at once, no message will come), else None.  Nothing listening is not
        news: an analyzer started with its reader binds its port within a second or so."""
        before = self.refused
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)
            kind, value = event["event"], event["value"]
            if kind == zmq.EVENT_CONNECTED:
                self._reached, self.absent = True, False
            elif kind == zmq.EVENT_CONNECT_RETRIED:
                self.absent = not self._reached  # refused or unreachable, not a failed handshake
                if self.absent:  # whatever refused the handshake is gone: what comes next may not
                    self.refused, self._vague_since = None, None
                self._reached = False
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.connected, self.refused, self._vague_since = True, None, None
                self.connected_at = time.monotonic()
            elif kind == zmq.EVENT_DISCONNECTED:
                self.connected = False
            elif kind == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:  # named after _VAGUE_S, below
                self._vague_since = self._vague_since or time.monotonic()
            else:
                self._vague_since = None
                self.refused = self._named_failure(kind, value) or self.refused
        if self._vague_since is not None and time.monotonic() - self._vague_since >= _VAGUE_S:
            self.refused = self._vague_reason()
        return self.refused if self.refused and self.refused != before else None

    def _named_failure(self, kind: int, value: int) -> str | None:
        """A failed handshake whose reason libzmq names, for a user; None for one we cannot name.
        (A CURVE server key that is not the feed's fails with no detail, every attempt; so can the
        first attempts of a mechanism mismatch, the peer hanging up while we write, before one
        names it, and after that one libzmq stops retrying: update() says the vague reason.)"""
        feed = f"the feed at {self.endpoint}"
        if (
            kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        ):
            if self.keyed:
                return f"{feed} is not encrypted, but --server-key was given: leave it out"
            return f"{feed} is encrypted (CURVE): give the analyzer's public key with --server-key"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:  # its --curve-clients folder lacks our key
            fix = (
                "the public key of --client-key (its .key file) is not in"
                if self.client_keyed
                else "give --client-key, its public key (.key) in"
            )
            return f"the analyzer at {self.endpoint} does not let this reader in: {fix} the analyzer's --curve-clients folder"
        return None

    def _vague_reason(self) -> str:
        """Handshakes that only ever failed with no detail, for _VAGUE_S: a CURVE server key that
        is not the feed's, or a mechanism mismatch whose attempts all lost the race to say so."""
        if self.keyed:
            return (
                f"the feed at {self.endpoint} refused the CURVE handshake: --server-key is not its "
                "public key (server.key), or the feed is not encrypted"
            )
        return f"the handshake with the feed at {self.endpoint} fails: if it is encrypted, give its public key with --server-key"

    def why_quiet(self) -> str:
        """Why nothing comes, as the monitor tells it: a clause for a line on the terminal."""
        self.update()
        if self.refused:
            return self.refused
        if self.connected and time.monotonic() - self.connected_at < _JUST_CONNECTED_S:
            return f"connected to the analyzer at {self.endpoint}"  # its next message is on its way
        if self.connected:
            return f"connected to the analyzer at {self.endpoint}, which sends nothing: starting, or stalled"
        if self.absent:
            return f"nothing listens at {self.endpoint}: is the analyzer running?"
        return f"connecting to {self.endpoint}"

    def close(self) -> None:
        self.socket.disable_monitor()
        self._monitor.close(linger=0)
        self.socket.close(linger=0)


def _check_host(endpoint: str) -> None:
    """FeedError when a tcp endpoint's host name does not resolve: libzmq would retry it for ever,
    silently, and a reader would say that nothing listens there (the analyzer blamed for a typo)."""
    transport, _, address = endpoint.partition("://")
    if transport != "tcp":
        return
    host = address.rpartition(":")[0].strip("[]")
    try:
        net.getaddrinfo(host, None, type=net.SOCK_STREAM)
    except net.gaierror as exc:
        raise FeedError(f"cannot resolve {host!r} in {endpoint}: {exc.strerror}") from None


def open_feed(
    context: zmq.Context,
    endpoint: str,
    server_key: str | None = None,
    client_key: str | None = None,
    topics: tuple[str, ...] = TOPICS,
) -> FeedLink:
    """A SUB socket on ``context``, connected to the feed at ``endpoint`` (CURVE with
    ``server_key``), subscribed to ``topics``, with its connection watched: what every reader of
    the feed opens (subscribe, bridge, view).  Raises CurveError or FeedError, each with a one-line
    reason."""
    _check_host(endpoint)
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    # Frames far beyond the feed's limit cost memory before decode could refuse them:
    # libzmq drops such a peer instead (it reconnects on its own).
    socket.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_MESSAGE_BYTES)
    for topic in topics:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
    try:
        secure_subscriber(socket, server_key, client_key)
    except CurveError:
        socket.close(linger=0)
        raise
    link = FeedLink(socket, endpoint, keyed=server_key is not None, client_keyed=client_key is not None)
    try:
        socket.connect(endpoint)
    except zmq.ZMQError as e:
        link.close()
        raise FeedError(f"cannot connect to {endpoint!r}: {zmq.strerror(e.errno)}") from None
    return link


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Print the moodstream feed: one line per message, or one JSON object per line.",
        epilog=_FEED_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "endpoint",
        nargs="?",
        type=feed_endpoint,
        help=f"ZeroMQ endpoint of the feed (default {DEFAULT_ENDPOINT})",
    )
    parser.add_argument(
        "--from",
        dest="from_endpoint",
        type=feed_endpoint,
        metavar="ENDPOINT",
        help="the feed's endpoint as an option, as bridge and view take it",
    )
    parser.add_argument(
        "--topic", action="append", choices=TOPICS, help="topic to receive; repeatable (default: both)"
    )
    parser.add_argument("--count", type=int, metavar="N", help="exit after N valid messages")
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        help="exit with status 1 if no valid message arrives for S seconds",
    )
    parser.add_argument("--json", action="store_true", help="print each message as one line of JSON")
    add_subscriber_options(parser)
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m realtime.subscribe") -> int:
    """Run the subscriber; returns the exit status (``prog``: how it was run, for its usage and error
    lines)."""
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.count is not None and args.count <= 0:
        parser.error("--count must be positive")
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.endpoint and args.from_endpoint:
        parser.error("give the feed's endpoint once: as an argument or with --from")
    topics = tuple(dict.fromkeys(args.topic or TOPICS))  # keep order, drop repeats

    context = zmq.Context()
    try:
        link = open_feed(
            context,
            args.endpoint or args.from_endpoint or DEFAULT_ENDPOINT,
            args.server_key,
            args.client_key,
            topics,
        )
    except (CurveError, FeedError) as e:
        print(f"error: {e}", file=sys.stderr)
        context.term()
        return 2
    # SIGTERM (a supervisor, kill) is a stop asked for, as Ctrl-C is: exit 0, as every command does.
    terminated = signal.signal(signal.SIGTERM, interrupt)
    try:
        return _receive(link, args.count, args.timeout, args.json)
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        signal.signal(signal.SIGTERM, terminated)
        link.close()
        context.term()


def _receive(link: FeedLink, count: int | None, timeout_s: float | None, as_json: bool) -> int:
    received = 0
    last_valid = time.monotonic()
    noted_quiet = False
    ends = "Ctrl-C stops, --timeout S gives up" if timeout_s is None else f"gives up at {timeout_s:g} s"
    while count is None or received < count:
        quiet_s = time.monotonic() - last_valid
        if timeout_s is not None and quiet_s >= timeout_s:
            print(f"subscribe: no message for {timeout_s:g} s ({link.why_quiet()}).", file=sys.stderr)
            return 1
        problem = link.update()
        if problem:  # a key that does not fit: said at once, not after the quiet wait
            print(f"subscribe: {problem}. Waiting on ({ends}).", file=sys.stderr, flush=True)
            noted_quiet = True
        elif quiet_s >= QUIET_NOTE_S and not noted_quiet:
            print(
                f"subscribe: nothing for {QUIET_NOTE_S:g} s ({link.why_quiet()}). Waiting on ({ends}).",
                file=sys.stderr,
                flush=True,
            )
            noted_quiet = True
        if not link.socket.poll(_POLL_SLICE_MS):
            continue
        frames = link.socket.recv_multipart()
        try:
            topic, message = decode(frames)
        except FeedError as e:
            print(f"subscribe: warning: skipped an invalid message: {e}", file=sys.stderr, flush=True)
            continue
        if as_json:
            # Re-encoded rather than copied: guaranteed one line, and ASCII-only (escapes included).
            line = json.dumps(message, separators=(",", ":"))
        else:
            line = format_mood(message) if topic == "mood" else format_status(message)
        if noted_quiet:
            print(f"subscribe: messages {'again' if received else 'arriving'}.", file=sys.stderr, flush=True)
            noted_quiet = False
        print(line, flush=True)
        received += 1
        last_valid = time.monotonic()
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
