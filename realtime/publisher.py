"""The ZeroMQ PUB end of the feed: binds, stamps publish time and latency, never blocks.

Drop policy: a plain PUB socket.  When one subscriber's queue reaches the high-water mark,
ZeroMQ discards messages *for that subscriber only*; the engine and every other subscriber
carry on.  (``XPUB_NODROP`` would let us count drops, but one stuck subscriber would then
black the feed out for everyone: a lighting rig must not go dark because a VJ tool froze.)
ZMTP heartbeats disconnect peers that stopped answering (a crashed machine, a cut cable),
so their queues are freed instead of held until TCP gives up.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import socket

import zmq
from zmq.auth.thread import ThreadAuthenticator

from realtime.feed import DEFAULT_ENDPOINT, MAX_MESSAGE_BYTES, TOPICS, stamp
from realtime.keys import CurveError, check_clients, secret_pair

log = logging.getLogger(__name__)

HEARTBEAT_IVL_MS = 1000
# Long enough for a busy but live subscriber (its I/O thread answers pings even while its
# program is busy), short enough to free a dead peer's queue within seconds.
HEARTBEAT_TIMEOUT_MS = 3000
# How long ``close`` still sends what is queued: a reading subscriber gets it in milliseconds; a
# stuck one holds a stop no longer than this.
CLOSE_FLUSH_S = 0.5


class PublisherError(RuntimeError):
    """The feed cannot be published: bad endpoint, address in use, or publisher closed."""


def is_loopback(endpoint: str) -> bool:
    """True when ``endpoint`` can only be reached from this machine (loopback tcp, ipc, inproc)."""
    transport, _, address = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = address.rpartition(":")[0].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # "*", an interface name or a host name: possibly reachable from outside
        return False


def _bind_failure(endpoint: str, error: int) -> str:
    """Why binding ``endpoint`` failed, in a user's terms: ZeroMQ says "No such device" for a host
    name it cannot resolve (it tries it as a network interface too)."""
    transport, _, address = endpoint.partition("://")
    host = address.rpartition(":")[0].strip("[]")
    if transport == "tcp" and error in (errno.ENODEV, errno.EADDRNOTAVAIL) and host not in ("", "*"):
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError):
            return f"cannot resolve {host!r}, nor is it a network interface here"
        return f"{host!r} is not an address of this machine"
    return zmq.strerror(error)


class Publisher:
    """A bound PUB socket for the feed.  Not thread-safe: use it from one thread (the engine's).

    ``sent`` counts messages handed to ZeroMQ (``dropped``: refused, which a PUB socket
    only does in exceptional states).  ``endpoint`` is the endpoint
    actually bound, so ``tcp://127.0.0.1:0`` comes back with the port the system chose.
    """

    def __init__(
        self,
        endpoint: str = DEFAULT_ENDPOINT,
        sndhwm: int = 1000,
        context: zmq.Context | None = None,
        curve_key: str | None = None,
        curve_clients: str | None = None,
    ):
        """``curve_key``: the server's ``.key_secret`` file: the feed is CURVE-encrypted (see
        ``realtime.keys``); ``curve_clients``: a folder of the client public keys let in."""
        if sndhwm <= 0:  # 0 would mean "no limit": unbounded memory for a stuck subscriber
            raise ValueError(f"sndhwm must be a positive number of messages, got {sndhwm}")
        try:
            pair = secret_pair(curve_key, "--curve-key") if curve_key else None
            clients = check_clients(curve_clients) if curve_clients else None
        except CurveError as exc:
            raise PublisherError(str(exc)) from None
        if clients and not pair:
            raise PublisherError("--curve-clients needs --curve-key (the analyzer's own key pair)")
        self._own_context = context is None
        self._context: zmq.Context | None = zmq.Context() if context is None else context
        self._socket: zmq.Socket | None = self._context.socket(zmq.PUB)
        self._auth: ThreadAuthenticator | None = None
        self.encrypted = pair is not None
        self.sent = 0
        self.dropped = 0
        try:
            if pair:
                if clients:  # a ZAP handler in this process admits the listed public keys only
                    self._auth = ThreadAuthenticator(self._context, log=log)
                    self._auth.start()
                    self._auth.configure_curve(domain="*", location=str(clients))
                self._socket.curve_publickey, self._socket.curve_secretkey = pair
                self._socket.curve_server = True
            self._socket.setsockopt(zmq.LINGER, 0)
            self._socket.setsockopt(zmq.SNDHWM, sndhwm)
            self._socket.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
            self._socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
            if endpoint.startswith("tcp://["):
                self._socket.setsockopt(zmq.IPV6, 1)
            self._socket.bind(endpoint)
            self.endpoint: str = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as e:
            self.close()
            if e.errno == zmq.EADDRINUSE:
                raise PublisherError(
                    f"{endpoint} is already in use (another listen running?); choose another with --pub"
                ) from e
            raise PublisherError(
                f"cannot publish on {endpoint!r}: {_bind_failure(endpoint, e.errno)} "
                f"(expected e.g. tcp://127.0.0.1:5556 or ipc:///tmp/moodstream.ipc)"
            ) from e
        if not is_loopback(self.endpoint) and not self.encrypted:
            log.warning(
                "moodstream: publishing on %s, which other machines may reach, unencrypted (use a "
                "127.0.0.1 endpoint to keep the feed local, or --curve-key: see python -m realtime.keys)",
                self.endpoint,
            )

    def send(self, topic: str, message: dict) -> bool:
        """Publish ``message`` on ``topic``; False (counted in ``dropped``) if ZeroMQ refused it.

        A ``mood`` message is stamped in place with ``t_publish`` and, from its ``t_capture``,
        ``latency_ms``; a ``status`` message is sent as given (its schema has no such fields).
        Raises ``ValueError`` for NaN/Inf or an oversized message (nothing is sent), ``TypeError``
        for values JSON cannot hold.  Never blocks.
        """
        if topic not in TOPICS:
            raise ValueError(f"unknown topic {topic!r}; expected one of {', '.join(TOPICS)}")
        if self._socket is None:
            raise PublisherError("publisher is closed")
        if topic == "mood":
            stamp(message)
        try:
            text = json.dumps(message, allow_nan=False, separators=(",", ":"))
        except ValueError as e:
            raise ValueError(f"{topic} message holds NaN or Infinity, which JSON cannot carry: {e}") from e
        payload = text.encode("utf-8")
        if len(payload) > MAX_MESSAGE_BYTES:
            raise ValueError(
                f"{topic} message is {len(payload)} bytes; subscribers reject over {MAX_MESSAGE_BYTES}"
            )
        try:
            self._socket.send_multipart([topic.encode("ascii"), payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return False
        except zmq.ZMQError as e:
            raise PublisherError(f"cannot send on {self.endpoint}: {zmq.strerror(e.errno)}") from e
        self.sent += 1
        return True

    def close(self) -> None:
        """Close; what is still queued goes out for up to ``CLOSE_FLUSH_S`` (a run's last moods and
        its final status: discarded at once, they were lost to a reading subscriber now and then),
        the rest is discarded (a subscriber that stopped reading cannot hold a stop).  Safe to
        call twice."""
        if self._socket is not None:
            self._socket.close(linger=round(CLOSE_FLUSH_S * 1000))
            self._socket = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_context and self._context is not None:
            self._context.term()
        self._context = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
