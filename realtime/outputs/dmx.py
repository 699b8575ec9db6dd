"""A DMX universe over Art-Net (``--artnet``) and sACN / E1.31 (``--sacn``): WLED, grandMA2/onPC, DMX nodes.

Both carry the same 512-slot frame: each route writes its channel (a value that is null,
valence in silence, holds its channel's last level), unmapped channels stay 0.  The frame goes
out with every mood message, at ``--output-rate`` between them, and at least once a second
while no mood comes (nodes blank a universe that stops refreshing).

Packets (built here; each is a fixed header and the 512 levels):
- Art-Net 4 ``ArtDmx``: "Art-Net\\0", OpCode 0x5000 (little endian), protocol 14, a sequence
  number 1..255 (0 would mean "no sequencing"), a 15-bit port-address (net, sub-net,
  universe), the length (512) big endian, then the levels.  UDP port 6454.
- ANSI E1.31 (sACN) data packet: root layer (ACN packet identifier, vector 4, the sender's CID),
  framing layer (vector 2, source name, priority 100, sequence number, options, universe), DMP
  layer (vector 2, start code 0, then the levels).  UDP port 5568; multicast to
  239.255.<universe high byte>.<universe low byte>.  On close, three packets with the
  "stream terminated" option tell receivers to let go at once (E1.31 6.2.6).
"""

from __future__ import annotations

import struct
import uuid

from realtime.outputs.base import Output, OutputError, UdpTarget
from realtime.outputs.mapping import DMX_CHANNELS, Route
from realtime.outputs.values import Values

ARTNET_PORT = 6454
SACN_PORT = 5568
ARTNET_MAX_UNIVERSE = 0x7FFF  # 15-bit port-address
SACN_UNIVERSES = (1, 63999)
SACN_PRIORITY = 100  # the standard's default
SACN_TERMINATE = 0x40  # options bit 6: stream terminated


def check_universe(kind: str, universe: int) -> None:
    """OutputError for a universe that ``kind`` ('artnet' or 'sacn') does not have."""
    lo, hi, name = (0, ARTNET_MAX_UNIVERSE, "Art-Net") if kind == "artnet" else (*SACN_UNIVERSES, "sACN")
    if not lo <= universe <= hi:
        raise OutputError(f"--dmx-universe {universe}: {name} universes are {lo}..{hi}")


class DmxOutput(Output):
    """One universe, as levels; subclasses wrap it in their protocol's packet."""

    unit = "DMX packets"  # one universe's 512 levels each

    def __init__(self, target: str, host: str, port: int, universe: int, routes: list[Route], **udp):
        super().__init__(target, routes)
        self.universe = universe
        self.levels = bytearray(DMX_CHANNELS)
        self.udp = UdpTarget(host, port, **udp)
        self._started = False  # nothing goes out before the first mood (the desk keeps its levels)
        self._fresh = False  # a frame went out since the last keepalive

    def emit(self, values: Values, hop: bool) -> None:
        for route, value in self.present(values):
            self.levels[route.to - 1] = min(255, max(0, round(route.scale(value))))
        self._send()

    def keepalive(self) -> None:
        if self._started and not self._fresh:
            self._send()
        self._fresh = False

    def _send(self) -> None:
        self.udp.send(self, self.packet(bytes(self.levels)))
        self._started = self._fresh = True

    def packet(self, levels: bytes) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        self.udp.close()


class ArtNetOutput(DmxOutput):
    kind = "artnet"

    def __init__(self, host: str, port: int, universe: int, routes: list[Route]):
        check_universe("artnet", universe)
        super().__init__(f"{host}:{port} universe {universe}", host, port, universe, routes)
        self.sequence = 0

    def packet(self, levels: bytes) -> bytes:
        self.sequence = self.sequence % 255 + 1  # 1..255, wrapping
        return (
            b"Art-Net\0"
            + struct.pack("<H", 0x5000)  # OpDmx
            + struct.pack(">H", 14)  # protocol version
            + bytes([self.sequence, 0])  # sequence, physical port
            + struct.pack("<H", self.universe)  # SubUni (sub-net, universe), then Net
            + struct.pack(">H", len(levels))
            + levels
        )


class SacnOutput(DmxOutput):
    kind = "sacn"

    def __init__(self, host: str | None, port: int, universe: int, routes: list[Route], source_name: str):
        check_universe("sacn", universe)
        multicast = host is None
        if multicast:
            host = f"239.255.{universe >> 8}.{universe & 0xFF}"
        target = f"{host}:{port} universe {universe}" + (" (multicast)" if multicast else "")
        super().__init__(target, host, port, universe, routes, multicast_ttl=8 if multicast else None)
        self.sequence = 0
        self.cid = uuid.uuid4().bytes  # one source, one CID, for the life of the process
        self.source_name = source_name.encode("utf-8")[:63].ljust(64, b"\0")

    def packet(self, levels: bytes, options: int = 0) -> bytes:
        self.sequence = (self.sequence + 1) % 256
        slots = len(levels) + 1  # the start code is a slot too
        dmp = (
            struct.pack(">H", 0x7000 | (10 + slots))  # flags and length
            + bytes([0x02, 0xA1])  # vector: set property; address and data type
            + struct.pack(">HHH", 0, 1, slots)  # first address, increment, value count
            + b"\0"  # start code: levels
            + levels
        )
        framing_length = 77 + len(dmp)
        framing = (
            struct.pack(">HI", 0x7000 | framing_length, 0x00000002)  # flags and length, vector: data
            + self.source_name
            + bytes([SACN_PRIORITY])
            + struct.pack(">H", 0)  # synchronization address: none
            + bytes([self.sequence, options])
            + struct.pack(">H", self.universe)
            + dmp
        )
        root = (
            struct.pack(">HH", 0x0010, 0x0000)  # preamble and post-amble sizes
            + b"ASC-E1.17\0\0\0"
            + struct.pack(
                ">HI", 0x7000 | (22 + len(framing)), 0x00000004
            )  # flags and length, vector: E1.31 data
            + self.cid
        )
        return root + framing

    def close(self) -> None:
        if self._started:
            for _ in range(3):
                self.udp.send(self, self.packet(bytes(self.levels), options=SACN_TERMINATE))
        super().close()
