"""The OS2L output against real TCP peers: one that never reads, one that goes away and comes back, none at all."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from realtime.outputs.mapping import Route, to_range
from realtime.outputs.os2l import Os2lOutput, browse
from tests.realtime.outputs.receivers import Os2lServer

VALENCE = [Route("valence", ("cmd", 1), to_range("valence", 0.0, 1.0))]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_peer_that_never_reads_costs_the_caller_nothing_and_drops_are_counted():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    output = Os2lOutput("127.0.0.1", server.getsockname()[1], VALENCE)
    peer, _ = server.accept()  # accepted, never read
    try:
        emitted = threading.Event()

        def emit_many():
            for i in range(20_000):
                output.emit({"valence": (i % 500) / 250 - 1}, hop=True)  # each a change of 0.002
            emitted.set()

        threading.Thread(target=emit_many, daemon=True).start()
        assert emitted.wait(30), "emit blocked on a peer that does not read"
        status = output.status()
        # The queue holds 64 items; everything else the peer could not take was dropped, and counted.
        assert status["dropped"] > 15_000 and status["sent"] + status["dropped"] <= 20_000
        started = time.monotonic()
        output.close()
        assert time.monotonic() - started < 2.0  # a blocked send does not hold the stop
    finally:
        peer.close()
        server.close()


def test_a_peer_that_goes_away_is_retried_and_gets_the_latest_values_when_back():
    lighting = Os2lServer()
    port = lighting.port
    output = Os2lOutput("127.0.0.1", port, VALENCE)
    try:
        output.emit({"valence": 0.0}, hop=True)
        wait_for(lambda: lighting.messages, 5, "the first message")
        lighting.close()  # the lighting program quits
        output.emit({"valence": 0.5}, hop=True)
        wait_for(lambda: output.state == "retrying", 5, "the output to notice")
        assert output.error
        output.emit({"valence": 1.0}, hop=True)
        back = Os2lServer(port=port)  # and comes back on the same port
        try:
            wait_for(lambda: back.messages, 10, "a reconnection")
            assert back.messages[0] == {"evt": "cmd", "id": 1, "param": 1.0}  # the latest, not the history
            assert output.state == "ok"
        finally:
            back.close()
    finally:
        output.close()


def test_auto_without_any_lighting_program_says_so():
    with pytest.raises(OSError, match=r"no OS2L service named like 'nobody-here' found by DNS-SD"):
        browse("nobody-here", timeout_s=0.5)
