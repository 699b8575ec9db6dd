"""Art-Net and sACN packets, read back by the ``sacn`` library and stupidArtnet's header check; sACN multicast."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from realtime.outputs.base import OutputError
from realtime.outputs.dmx import ArtNetOutput, SacnOutput
from realtime.outputs.mapping import default_routes
from tests.realtime.harness import free_port
from tests.realtime.outputs.receivers import DmxReceiver

RED = {"colour:r": 1.0, "colour:g": 0.0, "colour:b": 0.0, "valence": -1.0, "arousal": 1.0, "silent": 0.0}


def test_universes_out_of_range_are_refused():
    with pytest.raises(OutputError, match=r"Art-Net universes are 0\.\.32767"):
        ArtNetOutput("127.0.0.1", free_port(socket.SOCK_DGRAM), 32768, default_routes("dmx"))
    with pytest.raises(OutputError, match=r"sACN universes are 1\.\.63999"):
        SacnOutput("127.0.0.1", free_port(socket.SOCK_DGRAM), 0, default_routes("dmx"), "moodstream")


def test_a_frame_is_what_the_receivers_parse_and_sequences_wrap():
    for kind, make in (
        (
            "artnet",
            lambda port: ArtNetOutput("127.0.0.1", port, 0x1234, default_routes("dmx", dmx_start=500)),
        ),
        (
            "sacn",
            lambda port: SacnOutput("127.0.0.1", port, 0x1234, default_routes("dmx", dmx_start=500), "rig"),
        ),
    ):
        receiver = DmxReceiver(kind)
        output = make(receiver.port)
        try:
            for _ in range(300):  # past 255: the sequence wraps
                output.emit(RED, hop=True)
        finally:
            output.close()
        expected = 300 + (3 if kind == "sacn" else 0)  # sACN ends with 3 "stream terminated" packets
        deadline = time.monotonic() + 10
        while len(receiver.packets) < expected and time.monotonic() < deadline:
            time.sleep(0.01)
        receiver.close()
        assert len(receiver.packets) == expected
        packets = receiver.packets
        assert all(p["universe"] == 0x1234 for p in packets)
        levels = packets[0]["levels"]
        assert levels[499:506] == bytes([255, 0, 0, 0, 0, 255, 0]) and not any(levels[:499])
        sequence = [p["sequence"] for p in packets[:300]]
        if kind == "artnet":
            assert sequence[:3] == [1, 2, 3] and sequence[254:257] == [255, 1, 2]
        else:
            assert sequence[:3] == [1, 2, 3] and sequence[254:257] == [255, 0, 1]
            assert packets[0]["source"] == "rig" and packets[0]["priority"] == 100
            assert [p["terminated"] for p in packets[-4:]] == [False, True, True, True]
        assert output.status()["sent"] == len(packets)


def test_sacn_multicast_goes_to_the_universes_group():
    port = free_port(socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    receiver.bind(("", port))
    try:
        membership = struct.pack("4s4s", socket.inet_aton("239.255.1.44"), socket.inet_aton("0.0.0.0"))
        receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
    except OSError as exc:
        receiver.close()
        pytest.skip(f"this machine cannot join a multicast group: {exc}")
    receiver.settimeout(5)
    output = SacnOutput(None, port, 300, default_routes("dmx"), "moodstream")  # 300 = 1 * 256 + 44
    try:
        assert output.target == f"239.255.1.44:{port} universe 300 (multicast)"
        output.emit(RED, hop=True)
        from sacn.messages.data_packet import DataPacket

        packet = DataPacket.make_data_packet(receiver.recv(2048))
        assert packet.universe == 300 and packet.dmxData[:3] == (255, 0, 0)
    finally:
        output.close()
        receiver.close()
