"""Real receivers for the output tests, none of them ours, and what each must have received.

- OSC: ``oscdump`` (liblo, Debian ``liblo-tools``) and python-osc's message parser on a UDP socket;
- Art-Net and sACN: a UDP socket, packets checked with stupidArtnet's header test and parsed by
  the ``sacn`` library's E1.31 parser (Art-Net's 18-byte header is read here);
- OS2L: a TCP server that reads JSON objects, optionally announced by DNS-SD with zeroconf;
- MIDI: ``jack_midi_dump`` (jackd2's MIDI monitor) on a private JACK server.

The ``expect_*`` functions say what a receiver must hold for a list of mood messages from the
feed, from the README's default mapping.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import numpy as np
from pythonosc.osc_message import OscMessage

from realtime.outputs.values import Slugs, mood_colour
from tests.realtime.harness import free_port


class OscDump:
    """``oscdump -L PORT``: one line per message, ``<time tag> <address> <types> <args>``."""

    def __init__(self):
        if shutil.which("oscdump") is None:
            import pytest

            pytest.skip("oscdump not found (apt-get install liblo-tools)")
        self.port = free_port(socket.SOCK_DGRAM)
        # Into a file, not a pipe: a full pipe (64 KB, ~1300 lines) would block oscdump, and the
        # datagrams it stopped reading would be lost.
        self.out = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            ["oscdump", "-L", str(self.port)], stdout=self.out, stderr=subprocess.STDOUT
        )
        time.sleep(0.3)  # oscdump binds as it starts; there is nothing to wait on

    def lines(self) -> list[tuple[str, str, str]]:
        """(address, types, arguments) of every message, once stopped."""
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.out.seek(0)
        out = self.out.read()
        self.out.close()
        parsed = []
        for line in out.splitlines():
            parts = line.split(" ", 3)
            if len(parts) == 4 and parts[1].startswith("/"):
                parsed.append((parts[1], parts[2], parts[3]))
        return parsed


class UdpReceiver:
    """A UDP socket on loopback whose thread only reads: datagrams are kept as bytes, parsed when read.

    Parsing in the reading loop (python-osc's server takes ~0.1 ms a datagram) fell behind a
    hop's ~170 OSC datagrams on a loaded 2-core machine, and the kernel dropped what its buffer
    could not hold: a receiver's loss, not the output's.  So the loop does nothing but ``recv``,
    and the buffer holds a few seconds of output (beyond ``net.core.rmem_max`` where allowed).
    """

    RCVBUF_BYTES = 8 << 20

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # SO_RCVBUFFORCE (Linux, 33): as root (CAP_NET_ADMIN), past rmem_max
            self.sock.setsockopt(socket.SOL_SOCKET, 33, self.RCVBUF_BYTES)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF_BYTES)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self._datagrams: list[bytes] = []
        self._parsed: list = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._datagrams.append(self.sock.recv(65536))
            except TimeoutError:
                continue

    def parse(self, data: bytes):
        raise NotImplementedError

    def received(self) -> list:
        """Everything received so far, parsed, in arrival order."""
        for data in self._datagrams[len(self._parsed) : len(self._datagrams)]:
            self._parsed.append(self.parse(data))
        return self._parsed

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


class OscServer(UdpReceiver):
    """OSC on loopback, each datagram parsed by python-osc: (address, arguments) in arrival order."""

    def parse(self, data: bytes) -> tuple[str, tuple]:
        message = OscMessage(data)
        return message.address, tuple(message.params)

    @property
    def messages(self) -> list[tuple[str, tuple]]:
        return self.received()


def osc_hops(messages: list[tuple[str, tuple]], prefix: str = "/moodstream") -> list[dict[str, object]]:
    """The messages split into hops (each hop starts with its valence), as address -> argument."""
    hops: list[dict[str, object]] = []
    for address, args in messages:
        if address == f"{prefix}/valence":
            hops.append({})
        assert len(args) == 1, (address, args)  # one argument per message
        if hops:
            hops[-1][address] = args[0]
    return hops


def f32(x: float) -> float:
    return struct.unpack(">f", struct.pack(">f", x))[0]


def expect_osc(moods: list[dict], hops: list[dict[str, object]], prefix: str = "/moodstream") -> None:
    """Each hop's OSC messages carry the mood message's numbers as float32 (README's default map)."""
    slugs = Slugs(moods[0]["tags"])
    names = list(moods[0]["tags"])
    assert all(set(slugs[n]) <= set("abcdefghijklmnopqrstuvwxyz0123456789_") for n in names)
    assert len({slugs[n] for n in names}) == len(names)
    assert len(hops) == len(moods), (len(hops), len(moods))
    active_before: set[str] = set()
    for mood, hop in zip(moods, hops, strict=True):
        assert hop[f"{prefix}/valence"] == f32(mood["valence"])
        assert hop[f"{prefix}/arousal"] == f32(mood["arousal"])
        assert hop[f"{prefix}/valence/norm"] == pytest_approx(f32((mood["valence"] + 1) / 2))
        assert hop[f"{prefix}/arousal/norm"] == pytest_approx(f32((mood["arousal"] + 1) / 2))
        for name, p in mood["tags"].items():
            assert hop[f"{prefix}/tag/{slugs[name]}"] == f32(p), name
        assert hop[f"{prefix}/silent"] == 0.0
        assert hop[f"{prefix}/top"] == max(mood["tags"], key=mood["tags"].get)
        active = set(mood["active"])
        changed = {f"{prefix}/active/{slugs[n]}": float(n in active) for n in (active ^ active_before)}
        sent = {a: v for a, v in hop.items() if a.startswith(f"{prefix}/active/")}
        assert sent == changed  # tags start off: only a change is sent
        active_before = active


def pytest_approx(x: float):
    import pytest

    return pytest.approx(x, abs=1e-6)


class DmxReceiver(UdpReceiver):
    """UDP on loopback for Art-Net or sACN packets: (protocol fields, 512 levels) in arrival order."""

    def __init__(self, protocol: str):
        self.protocol = protocol
        super().__init__()

    @property
    def packets(self) -> list[dict]:
        return self.received()

    def parse(self, data: bytes) -> dict:
        if self.protocol == "artnet":
            from stupidArtnet.StupidArtnetServer import StupidArtnetServer

            assert StupidArtnetServer.validate_header(data), data[:12]  # "Art-Net", OpDmx, version 14
            length = struct.unpack(">H", data[16:18])[0]
            return {
                "sequence": data[12],
                "universe": struct.unpack("<H", data[14:16])[0],
                "levels": bytes(data[18 : 18 + length]),
            }
        from sacn.messages.data_packet import DataPacket

        packet = DataPacket.make_data_packet(data)  # checks the three vectors of E1.31
        return {
            "sequence": packet.sequence,
            "universe": packet.universe,
            "levels": bytes(packet.dmxData),
            "priority": packet.priority,
            "start_code": packet.dmxStartCode,
            "terminated": packet.option_StreamTerminated,
            "source": packet.sourceName,
        }


def dmx_frame(mood: dict, start: int, before: bytearray) -> bytearray:
    """The universe the README's default DMX layout gives for a mood message (null holds)."""
    levels = bytearray(before)
    r, g, b = mood_colour(mood["valence"], mood["arousal"]) if not mood["silent"] else (0, 0, 0)
    fields = [r * 255, g * 255, b * 255, None]
    fields += [None if v is None else (v + 1) / 2 * 255 for v in (mood["valence"], mood["arousal"])]
    fields.append(255 if mood["silent"] else 0)
    for i, level in enumerate(fields):
        if level is not None:
            levels[start - 1 + i] = min(255, max(0, round(level)))
    return levels


def collapse(items: list) -> list:
    """Consecutive repeats removed (a keepalive resends the last frame; MIDI sends on change)."""
    return [x for i, x in enumerate(items) if i == 0 or x != items[i - 1]]


def expect_dmx(moods: list[dict], packets: list[dict], universe: int, start: int) -> None:
    """One frame per hop (plus keepalives), levels from the default layout, sequence numbers counting."""
    data = [p for p in packets if not p.get("terminated")]
    assert data and all(p["universe"] == universe for p in packets)
    assert all(len(p["levels"]) == 512 for p in data)
    frames, levels = [], bytearray(512)
    for mood in moods:
        levels = dmx_frame(mood, start, levels)
        frames.append(bytes(levels))
    assert collapse([p["levels"] for p in data]) == collapse(frames)
    steps = np.diff([p["sequence"] for p in data])
    if "priority" in data[0]:  # sACN: 0..255, wrapping; the stream ends with 3 "terminated" packets
        assert ((steps == 1) | (steps == -255)).all()
        assert all(p["priority"] == 100 and p["start_code"] == 0 and p["source"] for p in data)
        assert [p["terminated"] for p in packets[-3:]] == [True] * 3
    else:  # Art-Net: 1..255, wrapping, never 0 ("no sequencing")
        assert ((steps == 1) | (steps == -254)).all() and 0 not in [p["sequence"] for p in data]


class Os2lServer:
    """A lighting program's OS2L side: a TCP server that reads JSON objects, one connection at a time.

    ``announce``: also register ``_os2l._tcp`` by DNS-SD (zeroconf) on loopback, under that name.
    """

    def __init__(self, announce: str | None = None, port: int = 0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(4)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.messages: list[dict] = []
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.zeroconf = None
        if announce:
            from zeroconf import IPVersion, ServiceInfo, Zeroconf

            self.zeroconf = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
            self.zeroconf.register_service(
                ServiceInfo(
                    "_os2l._tcp.local.",
                    f"{announce}._os2l._tcp.local.",
                    addresses=[socket.inet_aton("127.0.0.1")],
                    port=self.port,
                    server=f"{announce.lower()}.local.",
                )
            )

    def _run(self) -> None:
        decoder = json.JSONDecoder()
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.settimeout(0.1)
            buffer = ""
            with conn:
                while not self._stop.is_set():
                    try:
                        chunk = conn.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    buffer += chunk.decode("utf-8")
                    while buffer.strip():  # objects may arrive together in one read
                        try:
                            message, end = decoder.raw_decode(buffer.lstrip())
                        except json.JSONDecodeError:
                            break
                        self.messages.append(message)
                        buffer = buffer.lstrip()[end:]

    def close(self) -> None:
        if self.zeroconf is not None:
            self.zeroconf.unregister_all_services()
            self.zeroconf.close()
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


def expect_os2l(moods: list[dict], messages: list[dict]) -> None:
    """cmd 1/2 carry valence/arousal on 0..1 as they change; a btn per tag turning on or off,
    then one per mood state ("state <name>") becoming or ceasing to be the state."""
    assert messages and all(set(m) in ({"evt", "id", "param"}, {"evt", "name", "state"}) for m in messages)
    for ident, key in ((1, "valence"), (2, "arousal")):
        got = [m["param"] for m in messages if m["evt"] == "cmd" and m["id"] == ident]
        expected, last = [], None
        for mood in moods:
            param = round((mood[key] + 1) / 2, 4)
            if last is None or abs(param - last) >= 1e-3:
                expected.append(param)
                last = param
        assert got == pytest_approx_list(expected), (key, got, expected)
    buttons = [(m["name"], m["state"]) for m in messages if m["evt"] == "btn"]
    expected, before, state_before = [], set(), None
    for mood in moods:
        now = set(mood["active"])
        expected += [(n, "on" if n in now else "off") for n in mood["tags"] if n in now ^ before]
        before = now
        states = ("energetic-happy", "tense-angry", "sad-dark", "calm-tender", "silent")
        for name in states:  # the state buttons follow the tag buttons, in the default routes' order
            if (mood["state"] == name) != (state_before == name):
                expected.append((f"state {name}", "on" if mood["state"] == name else "off"))
        state_before = mood["state"]
    assert buttons == expected, (buttons, expected)


def pytest_approx_list(xs):
    import pytest

    return pytest.approx(xs, abs=1e-9)


class MidiReceiver:
    """``jack_midi_dump`` (jackd2's MIDI monitor, in C): a JACK MIDI input port, every event printed.

    ``connect(port)`` wires an output port to it once that port exists, as a DAW would.
    """

    def __init__(self, server_env: dict[str, str], name: str = "receiver"):
        self.env, self.name = server_env, name
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "jack_midi_dump", name],
            env=server_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def _ports(self) -> list[str]:
        out = subprocess.run(["jack_lsp"], env=self.env, capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()

    def connect(self, source: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not {source, f"{self.name}:input"} <= set(self._ports()):
            assert self.proc.poll() is None, self.proc.communicate()[0]
            assert time.monotonic() < deadline, f"no MIDI port {source}: {self._ports()}"
            time.sleep(0.05)
        subprocess.run(["jack_connect", source, f"{self.name}:input"], env=self.env, check=True, timeout=10)

    def close(self) -> list[bytes]:
        """Stop it; every event it printed ("   0: b0 01 77 control change ...") as bytes."""
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        events = []
        for line in out.splitlines():
            m = re.match(r"\s*\d+:((?: [0-9a-f]{2})+) ", line)
            if m:
                events.append(bytes.fromhex(m.group(1)))
        return events


def expect_midi(moods: list[dict], events: list[bytes], channel: int = 1) -> None:
    """CC 1 valence, CC 2 arousal on 0..127, each sent when its value changes."""
    assert events and all(len(e) == 3 and e[0] == 0xB0 | (channel - 1) for e in events)
    for cc, key in ((1, "valence"), (2, "arousal")):
        got = [e[2] for e in events if e[1] == cc]
        expected = collapse([min(127, max(0, round((m[key] + 1) / 2 * 127))) for m in moods])
        assert got == expected, (key, got, expected)
