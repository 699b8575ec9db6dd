"""OS2L over TCP (``--os2l HOST:PORT`` or ``--os2l auto``): QLC+, SoundSwitch and other lighting software.

OS2L is how DJ software drives lighting software: the lighting side listens on TCP (QLC+ on
port 9996) and announces itself by DNS-SD as ``_os2l._tcp``; the DJ side connects and writes
JSON objects.  moodstream is the DJ side and sends

    {"evt": "cmd", "id": 1, "param": 0.73}        a number (valence id 1, arousal id 2; 0..1)
    {"evt": "btn", "name": "Happy", "state": "on"} a tag turning active ("off" when it stops)

A command goes out when its value changes (by 0.001 or more), a button when its state does,
and every latest value again after a (re)connection.  Messages are at least 10 ms apart:
QLC+ parses each TCP read as one JSON document, so two objects arriving in one read would
both be lost.  ``auto`` browses DNS-SD for up to 3 s per attempt and takes the first
service found (``auto:NAME``: the first whose name contains NAME).
"""

from __future__ import annotations

import json
import select
import socket
import threading

from realtime.outputs.base import QueuedOutput
from realtime.outputs.mapping import Route
from realtime.outputs.values import Values

SERVICE_TYPE = "_os2l._tcp.local."
BROWSE_S = 3.0
CONNECT_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 2.0  # a peer that takes no data for this long is dropped and reconnected
PARAM_STEP = 1e-3


def browse(name_part: str = "", timeout_s: float = BROWSE_S) -> tuple[str, int, str]:
    """(host, port, service name) of the first ``_os2l._tcp`` service found; OSError if none."""
    from zeroconf import IPVersion, ServiceBrowser, Zeroconf  # only ``auto`` needs it

    found: list[tuple[str, int, str]] = []
    done = threading.Event()

    class Listener:
        def add_service(self, zc, type_, name):
            if name_part.lower() not in name.lower():
                return
            info = zc.get_service_info(type_, name, timeout=int(timeout_s * 1000))
            if info and info.parsed_addresses() and info.port:
                found.append((info.parsed_addresses()[0], info.port, name.removesuffix("." + type_)))
                done.set()

        def update_service(self, zc, type_, name):
            pass

        def remove_service(self, zc, type_, name):
            pass

    zc = Zeroconf(ip_version=IPVersion.V4Only)
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, Listener())
        done.wait(timeout_s)
        browser.cancel()
    finally:
        zc.close()
    if not found:
        which = f" named like {name_part!r}" if name_part else ""
        raise OSError(f"no OS2L service{which} found by DNS-SD ({SERVICE_TYPE}) within {timeout_s:g} s")
    return found[0]


class Os2lOutput(QueuedOutput):
    kind = "os2l"
    unit = "OS2L messages"
    MIN_GAP_S = 0.010

    def __init__(self, host: str | None, port: int | None, routes: list[Route], browse_name: str = ""):
        """``host`` None: find the lighting software by DNS-SD (names containing ``browse_name``)."""
        auto = host is None
        super().__init__(
            f"auto:{browse_name}" if auto and browse_name else "auto" if auto else f"{host}:{port}", routes
        )
        self._host, self._port, self._browse_name = host, port, browse_name
        self._sock: socket.socket | None = None
        self._sent_values: dict[object, object] = {}
        self.start()

    # -- hub side -------------------------------------------------------------------------

    def emit(self, values: Values, hop: bool) -> None:
        for route, value in self.present(values):
            kind, ident = route.to
            if kind == "cmd":
                param = round(route.scale(value), 4)
                last = self._sent_values.get(route.to)
                if last is not None and abs(param - last) < PARAM_STEP:
                    continue
                message = {"evt": "cmd", "id": ident, "param": param}
            else:
                on = (route.scale(value) if route.scale else value) >= 0.5
                param = "on" if on else "off"
                if self._sent_values.get(route.to, "off") == param:
                    continue  # buttons start off: only a change is news
                message = {"evt": "btn", "name": ident, "state": param}
            self._sent_values[route.to] = param
            self.put(route.to, json.dumps(message, separators=(",", ":")).encode("utf-8"))

    # -- sender thread ----------------------------------------------------------------------

    def connect(self) -> None:
        host, port = self._host, self._port
        if host is None:
            host, port, name = browse(self._browse_name)
            self.target = f"auto ({name} at {host}:{port})"
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SEND_TIMEOUT_S)
        self._sock = sock

    def send_item(self, item: bytes) -> None:
        if not self.alive():
            raise ConnectionResetError(0, "the peer closed the connection")
        self._sock.sendall(item)

    def alive(self) -> bool:
        sock = self._sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable and not sock.recv(4096, socket.MSG_DONTWAIT):
                return False  # EOF: the lighting software went away
        except (OSError, ValueError):
            return False
        return True

    def interrupt(self) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # a sendall blocked on a peer that does not read returns
            except OSError:
                pass

    def disconnect(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
