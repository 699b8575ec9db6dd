"""The web view's server: the page, its assets, and the feed's messages pushed to every browser.

``WebView.publish`` is what the engine (or ``realtime.view``'s subscriber) calls, once per mood
and status message: it appends to a short inbox and wakes the server's thread, nothing more.
The server runs its own asyncio loop in its own thread: it encodes each message once as a
Server-Sent Event and hands it to every browser's queue.  A queue holds ``CLIENT_QUEUE`` events;
a browser that reads too slowly (or not at all) loses its oldest ones, counted, and never holds
up the others, the engine or the ZeroMQ feed.

The event stream (``GET /events``, ``text/event-stream``):
  hello    once, first: the mood states with their colours, the history and trail lengths
  history  once: the last ``HISTORY_S`` of moods as columns (t_stream, valence, arousal, silent)
  mood     each mood message, exactly as the feed carries it
  colour   after each mood: its colour ("#rrggbb"), from ``realtime.outputs.values.mood_colour``,
           the code the DMX outputs use
  status   each status message, exactly as the feed carries it
A browser that connects mid-show gets hello, history, then the last status and mood at once.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import json
import logging
import socket
import threading
from importlib import resources

from aiohttp import web

from realtime.outputs.values import mood_colour
from realtime.smoothing import STATES
from realtime.web import WebError, is_loopback_host

log = logging.getLogger(__name__)

HISTORY_S = 300.0  # the timeline's span
TRAIL_S = 60.0  # the valence/arousal plane's fading trail
INBOX_MESSAGES = 64  # the publishing thread's hand-over; older ones go if the loop falls this far behind
CLIENT_QUEUE = 16  # events per browser (8 moods) before its oldest are dropped
# What one browser that stopped reading can hold besides its queue: the kernel's send buffer,
# fixed (Linux would grow it to megabytes), and the event loop's write buffer (64 KiB by
# default).  All told about 80 KB: 20-odd moods, 6 s at hop 0.25.
STREAM_BUFFER_BYTES = 16 * 1024
MAX_CLIENTS = 100
KEEPALIVE_S = 15.0  # an SSE comment, so a proxy or the browser does not time an idle stream out
# The page and what it loads: (file in realtime/web/static, content type).
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/view.js": ("view.js", "text/javascript; charset=utf-8"),
    "/view.css": ("view.css", "text/css; charset=utf-8"),
    "/chart.umd.min.js": ("chart.umd.min.js", "text/javascript; charset=utf-8"),
    "/LICENSE.chart.js.md": ("LICENSE.chart.js.md", "text/plain; charset=utf-8"),
}
# Everything the page needs comes from this server: no inline script, no other origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def colour_hex(valence: float | None, arousal: float | None, vivid: bool = False) -> str:
    """The mood colour as "#rrggbb"; ``vivid``: at full brightness (the page's labels for the
    calm states, which the lights show dim, must still read on a dark page)."""
    rgb = mood_colour(valence, arousal)
    if vivid and max(rgb) > 0:
        rgb = tuple(c / max(rgb) for c in rgb)
    return "#" + "".join(f"{round(c * 255):02x}" for c in rgb)


# The middle of each state's quadrant, for its colour on the page.
STATE_POINTS = {
    "energetic-happy": (0.6, 0.6),
    "tense-angry": (-0.6, 0.6),
    "sad-dark": (-0.6, -0.6),
    "calm-tender": (0.6, -0.6),
}


def _event(name: str, data: object) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, allow_nan=False, separators=(',', ':'))}\n\n".encode()


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), or a WebError that says why not, in one line."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise WebError(f"--web: cannot serve on host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=128)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise WebError(
                f"--web: port {port} on {host} is in use (another moodstream view or web server?); "
                "choose another with --web PORT"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise WebError(f"--web: {host} is not an address of this machine") from None
        if exc.errno == errno.EACCES:
            raise WebError(f"--web: port {port} needs privileges; choose one above 1023") from None
        raise WebError(f"--web: cannot serve on {host}:{port}: {exc.strerror}") from None


class Client:
    """One browser's event queue: bounded, the oldest dropped (and counted) when it is full."""

    def __init__(self):
        self.queue: collections.deque[bytes] = collections.deque()
        self.wake = asyncio.Event()
        self.last = False  # the server is closing: what is queued is the last of it

    def put(self, event: bytes) -> int:
        """Queue ``event``; returns the number of events dropped for it (0 or 1)."""
        dropped = 0
        if len(self.queue) >= CLIENT_QUEUE:
            self.queue.popleft()
            dropped = 1
        self.queue.append(event)
        self.wake.set()
        return dropped


class WebView:
    """Serves the page on (host, port) from its own thread; ``publish`` hands it messages.

    Binds in the constructor, so a port in use is said before anything else starts.
    ``title`` names where the moods come from (the page's header).
    """

    def __init__(self, host: str, port: int, title: str = "moodstream"):
        self.host = host
        self.title = title
        self._sock = bind(host, port)
        self.port = self._sock.getsockname()[1]
        self._assets = {
            route: ((resources.files("realtime.web") / "static" / name).read_bytes(), kind)
            for route, (name, kind) in ASSETS.items()
        }
        self._inbox: collections.deque = collections.deque(maxlen=INBOX_MESSAGES)
        self._clients: set[Client] = set()
        self._history: collections.deque = collections.deque()  # (t_stream, valence, arousal, silent)
        self._last_mood_seq = -1  # a mood seq not above the last one is a new run's
        self._last: dict[str, bytes] = {}  # the last status, mood and colour events
        # Counted by the server's thread, read at the end (summary): browsers that connected, and
        # events dropped for browsers that read too slowly.
        self.served = 0
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="moodstream-web", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise WebError(f"--web: the view's server did not start: {self._error}")
        if not is_loopback_host(host):  # as the feed says of itself (realtime.publisher)
            log.warning(
                "moodstream: serving the web view on %s:%d, which other machines may reach, with no "
                "password: it shows the mood, the analyzer's status and the source's name (a file's "
                "path, a URL); use 127.0.0.1 to keep it local",
                host,
                self.port,
            )

    @property
    def url(self) -> str:
        if self.host in ("0.0.0.0", "::", ""):
            return f"http://localhost:{self.port}/ (and this machine's address: it serves every interface)"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def summary(self) -> str:
        """One line for the end of a run: browsers served, events dropped for slow ones."""
        dropped = f"; {self.dropped} events dropped for browsers that read too slowly" if self.dropped else ""
        return f"web view: served {self.served} browser{'' if self.served == 1 else 's'}{dropped}"

    # -- the publishing thread's side -------------------------------------------------------

    def publish(self, topic: str, message: dict) -> None:
        """Hand over a mood or status message (not modified afterwards).  Never blocks."""
        self._inbox.append((topic, message))
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not self._closing:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def close(self) -> None:
        """Stop serving: open event streams end, the port is released."""
        if self._closing:
            return
        self._closing = True
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:
                pass
        self._thread.join(timeout=5)

    # -- the server's thread ----------------------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, self._sock).start())
            self._wake = asyncio.Event()
            self._loop = loop
        except BaseException as exc:  # noqa: BLE001 - said by the constructor
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_until_complete(self._pump())
        finally:
            # Streams end once their queues are written; one that cannot take them is cut after
            # the runner's shutdown_timeout.
            loop.run_until_complete(runner.cleanup())
            self._sock.close()
            loop.close()

    async def _pump(self) -> None:
        """Inbox -> events -> every browser's queue; a keepalive comment when there is nothing."""
        assert self._wake is not None
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), KEEPALIVE_S)
            except TimeoutError:
                for client in self._clients:
                    client.put(b": keepalive\n\n")
                continue
            self._wake.clear()
            while self._inbox:
                topic, message = self._inbox.popleft()
                for event in self._events(topic, message):
                    for client in self._clients:
                        self.dropped += client.put(event)
            if self._closing:  # the engine's last messages (the final status) are queued: done
                for client in self._clients:
                    client.last = True
                    client.wake.set()
                return

    def _events(self, topic: str, message: dict) -> list[bytes]:
        if topic == "status":
            self._last["status"] = _event("status", message)
            return [self._last["status"]]
        valence, arousal = message["valence"], message["arousal"]
        if message["seq"] <= self._last_mood_seq or (
            self._history and message["t_stream"] < self._history[-1][0] - 1.0
        ):  # a new run (an analyzer restarted under realtime.view): its history starts over
            self._history.clear()
        self._last_mood_seq = message["seq"]
        self._history.append((message["t_stream"], valence, arousal, message["silent"]))
        while self._history and self._history[0][0] < message["t_stream"] - HISTORY_S:
            self._history.popleft()
        self._last["mood"] = _event("mood", message)
        self._last["colour"] = _event("colour", {"seq": message["seq"], "rgb": colour_hex(valence, arousal)})
        return [self._last["mood"], self._last["colour"]]

    def _hello(self) -> list[bytes]:
        columns = list(zip(*self._history, strict=True)) or [(), (), (), ()]
        t, valence, arousal, silent = (list(c) for c in columns)
        states = {s: colour_hex(*STATE_POINTS[s], vivid=True) for s in STATES}
        hello = {"title": self.title, "states": states, "history_s": HISTORY_S, "trail_s": TRAIL_S}
        history = {"t_stream": t, "valence": valence, "arousal": arousal, "silent": silent}
        last = [self._last[k] for k in ("status", "mood", "colour") if k in self._last]
        return [_event("hello", hello), _event("history", history), *last]

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        for route in self._assets:
            app.router.add_get(route, self._asset)
        app.router.add_get("/events", self._stream)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        # Served on loopback, the page answers only to loopback names: a web page elsewhere that
        # points a name of its own at 127.0.0.1 (DNS rebinding) reads nothing.
        if is_loopback_host(self.host):
            name = (request.host or "").rsplit(":", 1)[0].strip("[]")
            if not is_loopback_host(name):
                return web.Response(status=403, text="moodstream: this view answers to localhost only\n")
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def _asset(self, request: web.Request) -> web.Response:
        body, kind = self._assets[request.path]
        return web.Response(body=body, headers={"Content-Type": kind})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if len(self._clients) >= MAX_CLIENTS:
            return web.Response(status=503, text=f"moodstream: {MAX_CLIENTS} browsers already watch\n")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SECURITY_HEADERS})
        if request.transport is not None:
            request.transport.set_write_buffer_limits(high=STREAM_BUFFER_BYTES)
            sock = request.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STREAM_BUFFER_BYTES)
        await response.prepare(request)
        client = Client()
        for event in self._hello():
            client.put(event)
        self._clients.add(client)
        self.served += 1
        try:
            while not client.last:
                await client.wake.wait()
                client.wake.clear()
                while client.queue:
                    # Awaits while the browser's socket buffer is full: only this browser waits.
                    await response.write(client.queue.popleft())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(client)
        return response
