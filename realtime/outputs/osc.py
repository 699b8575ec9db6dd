"""OSC over UDP (``--osc HOST:PORT``): QLC+, TouchDesigner, Resolume, Lightjams, Chataigne, grandMA3.

Plain messages, one argument each, one message per datagram: grandMA3 takes no bundles and
QLC+ reads one message per packet.  Numbers are float32 (``f``), the strongest tag a string
(``s``).  Encoded here rather than with an OSC library: a hop sends ~170 messages and the
encoding is two lines (OSC 1.0: strings NUL-terminated and padded to 4 bytes, big-endian
float32).

A hop sends ~170 datagrams.  Sent at once they arrive faster than a receiver written in Python
(or a busy one) reads them, and its socket buffer (about 250 datagrams on Linux) overflows:
so they go in bursts of ``BURST`` with ``BURST_GAP_S`` between bursts (~5 ms per hop).
"""

from __future__ import annotations

import struct
import time

from realtime.outputs.base import Output, UdpTarget, glides
from realtime.outputs.mapping import Route
from realtime.outputs.values import Values

BURST = 32
BURST_GAP_S = 0.001


def osc_string(text: str) -> bytes:
    data = text.encode("utf-8") + b"\0"
    return data + b"\0" * (-len(data) % 4)


def osc_message(address: str, value: float | str) -> bytes:
    """One OSC message with one float32 or string argument."""
    if isinstance(value, str):
        return osc_string(address) + b",s\0\0" + osc_string(value)
    return osc_string(address) + b",f\0\0" + struct.pack(">f", value)


class OscOutput(Output):
    kind = "osc"
    unit = "OSC messages"  # one datagram each

    def __init__(self, host: str, port: int, routes: list[Route]):
        super().__init__(f"{host}:{port}", routes)
        self.udp = UdpTarget(host, port)
        self._heads: dict[str, bytes] = {}  # address -> encoded address + ",f" (the fixed part)
        # active:* routes go out when they change; every tag starts off (nothing to say until one is on).
        self._last_state: dict[str, float] = {}

    def emit(self, values: Values, hop: bool) -> None:
        sent = 0
        for route, value in self.present(values):
            if not hop and not glides(route.value):
                continue
            if route.scale is not None:
                value = route.scale(value)
            if route.value.startswith("active:"):
                if self._last_state.get(route.to, 0.0) == value:
                    continue
                self._last_state[route.to] = value
            if isinstance(value, str):
                payload = osc_message(route.to, value)
            else:
                head = self._heads.get(route.to)
                if head is None:
                    head = self._heads[route.to] = osc_string(route.to) + b",f\0\0"
                payload = head + struct.pack(">f", value)
            if sent and sent % BURST == 0:
                time.sleep(BURST_GAP_S)
            self.udp.send(self, payload)
            sent += 1

    def close(self) -> None:
        self.udp.close()
