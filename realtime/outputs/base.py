"""What every output shares: routes bound to the feed's tags, counters and state, and two ways to send.

- ``Output.udp``: a non-blocking UDP socket.  A full socket buffer drops the datagram (counted);
  a refusal (ICMP "port unreachable", reported on the next send of a connected socket) is
  counted and shown as ``retrying`` while it lasts.  Sending goes on: UDP has no connection
  to re-establish, so the next datagram is the retry.
- ``QueuedOutput``: a TCP peer or a MIDI port, whose sends may block, is served by a thread
  of its own behind a small bounded queue that drops the oldest item (counted).  When the
  peer is gone the thread reconnects with backoff and then sends the current state afresh.

Outputs are driven from one thread (the hub's, ``hub.py``); ``status()`` may be read from any.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import ClassVar

from realtime.outputs.mapping import Route
from realtime.outputs.values import Slugs, Values, is_continuous

STATES = ("ok", "retrying", "error")
RECENT_FAILURE_S = 3.0  # a UDP output that failed within this long is "retrying"
BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # reconnect waits; the last repeats


class OutputError(RuntimeError):
    """An output that cannot start (unresolvable host, no MIDI system...); one line for the user."""


def reason(exc: OSError) -> str:
    """An OSError as a short phrase: "Connection refused", "timed out"."""
    return exc.strerror or str(exc) or type(exc).__name__


SWITCHES = ("state:", "active:")  # values that are 1.0 or 0.0: on or off


def glides(value: str) -> bool:
    """Values resent at ``--output-rate`` between hops (the colour follows valence and arousal)."""
    return is_continuous(value) or value.startswith("colour:")


class Output:
    """Base class: subclasses set ``kind`` (the ``--KIND`` flag) and ``unit`` (what ``sent`` and
    ``dropped`` count, for the lines people read) and implement ``emit``."""

    kind: ClassVar[str] = ""
    unit: ClassVar[str] = "messages"
    registry: ClassVar[dict[str, type[Output]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Output.registry[cls.kind] = cls

    def __init__(self, target: str, routes: list[Route]):
        self.target = target
        self.patterns = routes  # may hold tag:* / active:* routes
        self.routes: list[Route] = [r for r in routes if not r.value.endswith(":*")]
        self.sent = 0
        self.dropped = 0
        self.error: str | None = None
        self._failed_at: float | None = None
        self._fatal = False

    # -- driven by the hub ------------------------------------------------------------------

    def bind(self, tags: list[str], slugs: Slugs) -> None:
        """Make the per-tag routes concrete for the feed's tags (called when they change)."""
        routes = []
        for route in self.patterns:
            if route.value.endswith(":*"):
                routes.extend(route.for_tag(name, slugs[name]) for name in tags)
            else:
                routes.append(route)
        self.routes = routes

    def emit(self, values: Values, hop: bool) -> None:
        """Send ``values``: a mood message's (``hop``) or, between hops, glided ones (``--output-rate``)."""
        raise NotImplementedError

    def present(self, values: Values):
        """(route, value) for each route whose value the message has (valence is null in silence);
        the switches that are on (``state:NAME``, ``active:NAME``) last, after every one that is
        off: a desk that keeps the state buttons as a radio group never sees two on at once."""
        on = []
        for route in self.routes:
            value = values.get(route.value)
            if value is None:
                continue
            if route.value.startswith(SWITCHES) and value >= 0.5:
                on.append((route, value))
            else:
                yield route, value
        yield from on

    def keepalive(self) -> None:
        """No mood for a while (silence is still a mood; a stalled source is not): refresh if the protocol wants it."""

    def drain(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until what was emitted has gone out; UDP sends at once."""

    def close(self) -> None:
        """Release sockets and ports; idempotent."""

    # -- state --------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._fatal:
            return "error"
        if self._failed_at is not None and time.monotonic() - self._failed_at < RECENT_FAILURE_S:
            return "retrying"
        return "ok"

    def failed(self, reason: str, fatal: bool = False) -> None:
        self.error = reason
        self._failed_at = time.monotonic()
        self._fatal = self._fatal or fatal

    def status(self) -> dict:
        return {
            "kind": self.kind,
            "target": self.target,
            "state": self.state,
            "sent": self.sent,
            "dropped": self.dropped,
            "error": self.error,
        }

    def counts(self) -> str:
        """``sent`` and ``dropped`` in words: "sent 120 DMX packets, dropped 0"."""
        unit = self.unit[:-1] if self.sent == 1 else self.unit  # units are plurals in -s
        return f"sent {self.sent} {unit}, dropped {self.dropped}"

    def __repr__(self) -> str:
        return f"{self.kind} {self.target}"


def resolve_udp(host: str, port: int) -> tuple[socket.AddressFamily, tuple]:
    """``host``'s first address for UDP to ``port`` (its family, the address); OutputError if none."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise OutputError(f"cannot resolve {host!r}: {exc.strerror}") from None
    except UnicodeError:  # "a..b", a label over 63 characters: the name cannot even be encoded
        raise OutputError(f"cannot resolve {host!r}: not a valid host name") from None
    family, _, _, _, address = infos[0]
    return family, address


class UdpTarget:
    """A connected, non-blocking UDP socket to one host and port (broadcast and multicast allowed)."""

    def __init__(self, host: str, port: int, *, multicast_ttl: int | None = None):
        family, address = resolve_udp(host, port)
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        if family == socket.AF_INET:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)  # Art-Net to x.x.x.255
            if multicast_ttl is not None:
                self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, multicast_ttl)
        try:
            self.sock.connect(address)
        except OSError as exc:
            self.sock.close()
            raise OutputError(f"cannot send to {host}:{port}: {exc.strerror or exc}") from None

    def send(self, output: Output, payload: bytes) -> None:
        """Send one datagram; counts it as sent or dropped on ``output``; never blocks or raises."""
        try:
            self.sock.send(payload)
        except BlockingIOError:
            output.dropped += 1
            output.failed("socket buffer full: the network is not keeping up")
        except OSError as exc:
            output.dropped += 1
            hint = " (nothing listening there?)" if isinstance(exc, ConnectionRefusedError) else ""
            output.failed(f"{exc.strerror or exc}{hint}")
        else:
            output.sent += 1

    def close(self) -> None:
        self.sock.close()


class QueuedOutput(Output):
    """An output sent by its own thread: ``connect``/``send_item``/``disconnect`` may block.

    ``put(key, item)`` queues an item and records it as the latest for ``key`` (a destination):
    after a reconnect the latest item of every key is sent again, so the peer learns the
    current state instead of waiting for the next change.
    """

    QUEUE_ITEMS = 64
    MIN_GAP_S = 0.0  # least time between two sends (a peer that reads one message per read)

    def __init__(self, target: str, routes: list[Route]):
        super().__init__(target, routes)
        self._queue: collections.deque = collections.deque()
        self._latest: dict[object, object] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._connected = False
        self._sending = False  # an item is out of the queue but not yet sent
        self._thread = threading.Thread(target=self._run, name=f"moodstream-{self.kind}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def state(self) -> str:
        if self._fatal:
            return "error"
        # Before the first attempt has failed, a connection being made is not a failure.
        return "retrying" if not self._connected and self._failed_at is not None else "ok"

    def put(self, key: object, item: object) -> None:
        with self._cond:
            self._latest[key] = item
            if len(self._queue) >= self.QUEUE_ITEMS:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(item)
            self._cond.notify()

    # -- the sender thread --------------------------------------------------------------

    def connect(self) -> None:
        raise NotImplementedError

    def send_item(self, item: object) -> None:
        raise NotImplementedError

    def disconnect(self) -> None:
        pass

    def _next_item(self):
        with self._cond:
            while not self._queue and not self._stop:
                self._cond.wait(0.5)
                if not self._queue and not self._stop and not self.alive():
                    return None
            if self._stop:
                return None
            self._sending = True
            return self._queue.popleft()

    def alive(self) -> bool:
        """Whether the connection still stands (checked while idle); override for TCP."""
        return True

    def drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (self._queue or self._sending) and self._connected and not self._stop:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.01))

    def interrupt(self) -> None:
        """Called from another thread by ``close``: unblock a send that waits on the peer."""

    def _run(self) -> None:
        try:
            self._serve()
        finally:
            try:
                self.disconnect()
            except OSError:
                pass

    def _serve(self) -> None:
        attempt = 0
        last_send = 0.0
        while not self._stop:
            if not self._connected:
                try:
                    self.connect()
                except OSError as exc:
                    self.failed(reason(exc))
                    wait = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
                    attempt += 1
                    with self._cond:
                        self._cond.wait_for(lambda: self._stop, wait)
                    continue
                attempt = 0
                self._connected = True
                self._failed_at = None  # `error` keeps the last reason, for the record
                with self._cond:
                    # What was queued while away is stale: the latest of each destination replaces
                    # it (sent again, whether or not it went out before), the rest is dropped.
                    latest = {id(item) for item in self._latest.values()}
                    self.dropped += sum(id(item) not in latest for item in self._queue)
                    self._queue = collections.deque(self._latest.values())
            item = self._next_item()
            if item is None:
                if not self._stop and not self.alive():
                    self._lost("the peer closed the connection")
                continue
            gap = self.MIN_GAP_S - (time.monotonic() - last_send)
            if gap > 0:
                time.sleep(gap)
            try:
                self.send_item(item)
            except OSError as exc:
                with self._cond:
                    self.dropped += 1
                    self._sending = False
                self._lost(reason(exc))
                continue
            last_send = time.monotonic()
            with self._cond:
                self.sent += 1
                self._sending = False
                self._cond.notify_all()

    def _lost(self, why: str) -> None:
        self.failed(why)  # first: a reader must never see "not connected" without a failure
        self._connected = False
        try:
            self.disconnect()
        except OSError:
            pass

    def close(self) -> None:
        self.drain(0.5)  # a clean stop sends what is queued, if the peer takes it
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self.interrupt()
        if self._thread.is_alive():
            self._thread.join(1.0)
        with self._cond:  # what the peer never got (away, or not taking it) is counted, not lost
            self.dropped += len(self._queue)
            self._queue.clear()
