"""The outputs hub: the engine's (or the bridge's) mood and status messages, handed to every output.

``publish`` is all the engine calls, once per message, after the ZeroMQ feed has it: it appends
to a short queue and returns (no mapping, no I/O, no lock held for long).  One thread, started
here, turns each mood message into values, lets every output send them, resends glided values
at ``--output-rate``, and gives every output a keepalive call once a second (DMX refreshes
its universe when nothing else did).  So a slow, dead
or refusing receiver costs the engine nothing; an output's own counters and state say what
happened to it, and ``status()`` lists them for the feed's status message.
"""

from __future__ import annotations

import collections
import threading
import time

from realtime.outputs.base import Output
from realtime.outputs.values import Glide, Slugs, values_of

QUEUE_MESSAGES = 32  # a hub this far behind drops the oldest messages (counted on every output)
KEEPALIVE_S = 1.0


class Outputs:
    """Every configured output, fed from one thread.  ``rate_hz``: ``--output-rate`` (None: once per hop)."""

    def __init__(self, outputs: list[Output], rate_hz: float | None = None, tags=()):
        self.outputs = outputs
        self.rate_hz = rate_hz
        self.slugs = Slugs(tags)
        self._tags: list[str] = []
        self._glide = Glide()
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = False
        # Counted by the engine's thread (published, evicted) and the hub's (handled, charged):
        # each counter has one writer.  flush() waits until handled + evicted == published.
        self._published = 0
        self._evicted = 0  # dropped because the hub fell QUEUE_MESSAGES behind
        self._charged = 0  # evictions already added to every output's `dropped`
        self._handled = 0
        self._thread = threading.Thread(target=self._run, name="moodstream-outputs", daemon=True)
        self._thread.start()

    def __bool__(self) -> bool:
        return bool(self.outputs)

    # -- the engine's side ------------------------------------------------------------------

    def publish(self, topic: str, message: dict) -> None:
        """Hand over a published message (not modified afterwards by the caller).  Never blocks."""
        if len(self._queue) >= QUEUE_MESSAGES:
            self._queue.popleft()
            self._evicted += 1
        self._published += 1
        self._queue.append((topic, message))
        self._wake.set()

    def flush(self, timeout_s: float = 1.0) -> bool:
        """Wait until every message handed over so far went out (the last status then counts it)."""
        deadline = time.monotonic() + timeout_s
        while self._handled + self._evicted < self._published and time.monotonic() < deadline:
            time.sleep(0.002)
        for output in self.outputs:  # a TCP or MIDI output's own queue
            output.drain(max(0.0, deadline - time.monotonic()))
        return self._handled + self._evicted >= self._published

    def status(self) -> list[dict]:
        return [output.status() for output in self.outputs]

    def failing(self) -> list[Output]:
        return [output for output in self.outputs if output.state != "ok"]

    def close(self) -> None:
        """Stop the thread, then every output (sockets, ports); idempotent."""
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(2.0)
        for output in self.outputs:
            output.close()
        self.outputs = []

    # -- the hub thread -------------------------------------------------------------------

    def _run(self) -> None:
        period = 1.0 / self.rate_hz if self.rate_hz else None
        next_tick = time.monotonic()
        next_keepalive = time.monotonic() + KEEPALIVE_S
        while not self._stop:
            now = time.monotonic()
            wait = min(next_keepalive, next_tick if period else next_keepalive) - now
            if wait > 0:
                self._wake.wait(wait)
                self._wake.clear()
            while self._queue and not self._stop:
                try:
                    topic, message = self._queue.popleft()
                except IndexError:  # evicted by publish() in between
                    break
                if topic == "mood":
                    self._mood(message)
                self._handled += 1
            evicted = self._evicted
            if evicted > self._charged:  # messages no output saw
                for output in self.outputs:
                    output.dropped += evicted - self._charged
                self._charged = evicted
            now = time.monotonic()
            if period and now >= next_tick:
                if self._glide.values:  # nothing to resend before the first mood
                    self._each("emit", self._glide.at(now), hop=False)
                next_tick = max(next_tick + period, now)
            if now >= next_keepalive:
                self._each("keepalive")
                next_keepalive = now + KEEPALIVE_S

    def _mood(self, message: dict) -> None:
        tags = list(message["tags"])
        if tags != self._tags:
            self._tags = tags
            self.slugs.add(tags)
            self._each("bind", tags, self.slugs)
        values = values_of(message)
        if self.rate_hz:  # the continuous values go on from where they stand (Glide): no jump at a hop
            now = time.monotonic()
            self._glide.update(message, values, now)
            values = self._glide.at(now)
        self._each("emit", values, hop=True)

    def _each(self, method: str, *args, **kwargs) -> None:
        """Call ``method`` of every output; a fault in one must not silence the others."""
        for output in self.outputs:
            try:
                getattr(output, method)(*args, **kwargs)
            except Exception as exc:
                output.failed(f"{type(exc).__name__}: {exc}", fatal=True)
