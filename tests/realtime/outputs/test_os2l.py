"""The OS2L output against real TCP peers: one that never reads, one that goes away and comes back, none at all."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from realtime.outputs import os2l
from realtime.outputs.base import QueuedOutput
from realtime.outputs.mapping import Route, to_range
from realtime.outputs.os2l import Os2lOutput, browse
from realtime.smoothing import MOOD_STATES
from tests.realtime.harness import free_port
from tests.realtime.outputs.receivers import Os2lServer

VALENCE = [Route("valence", ("cmd", 1), to_range("valence", 0.0, 1.0))]


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class _Unpaced(Os2lOutput):
    """Sends as fast as the socket takes them: the ~500 sends that fill it here would take
    seconds ``MIN_GAP_S`` apart."""

    MIN_GAP_S = 0.0


# A button toggled by every value, its name ~4 kB: a message of that size each time, so the peer's
# window and the socket's buffer (autotuned to a few MB) fill after ~500 sends; ~35-byte messages
# would take ~100,000.
BUTTON = [Route("valence", ("btn", "b" * 4000), to_range("valence", 0.0, 1.0))]


def test_a_peer_that_never_reads_costs_the_caller_nothing_and_drops_are_counted(monkeypatch):
    # A send blocked on the peer waits 30 s before it gives up: only close's shutdown ends it sooner.
    monkeypatch.setattr(os2l, "SEND_TIMEOUT_S", 30.0)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    before = set(threading.enumerate())
    output = _Unpaced("127.0.0.1", server.getsockname()[1], BUTTON)
    sender = [t for t in threading.enumerate() if t not in before and t.name == "moodstream-os2l"]
    peer, _ = server.accept()  # accepted, never read
    try:
        emitted, sent, deadline = 0, -1, time.monotonic() + 20
        while True:  # emit in bursts until the sender is stuck in a send, items waiting behind it
            started = time.monotonic()
            for _ in range(1000):
                output.emit({"valence": -1.0 if emitted % 2 else 1.0}, hop=True)  # on, off: a message each
                emitted += 1
            assert time.monotonic() - started < 1.0, "emit blocked on a peer that does not read"
            time.sleep(0.05)  # the sender's turn
            status = output.status()
            if status["sent"] == sent and status["sent"] + status["dropped"] < emitted:
                break
            sent = status["sent"]
            assert time.monotonic() < deadline, f"the sender never blocked: {status}"
        # Every item is sent, dropped (the queue holds 64: what the peer could not take is dropped,
        # and counted), queued, or the one in the blocked send.
        assert emitted - QueuedOutput.QUEUE_ITEMS - 1 <= status["sent"] + status["dropped"] < emitted
        assert status["dropped"] > status["sent"]
        started = time.monotonic()
        output.close()
        assert time.monotonic() - started < 2.0  # a blocked send does not hold the stop
        assert len(sender) == 1 and not sender[0].is_alive()  # the blocked send was ended, not left
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


def test_what_never_reached_the_lighting_program_is_counted_dropped():
    """listen's last lines: an OS2L output that sent nothing must not say "dropped 0"."""
    output = Os2lOutput("127.0.0.1", free_port(), VALENCE)  # nothing listens: refused
    for k in range(10):
        output.emit({"valence": k / 10}, hop=True)  # ten changes, each a message
    output.close()
    assert (output.sent, output.dropped) == (0, 10)


def test_values_superseded_while_the_peer_was_away_are_counted_dropped():
    # Nine destinations: the latest of each is sent again on the way back, so the queue's stale
    # items are more than "queued minus destinations" (which counted 0 here).
    buttons = [Route(f"active:t{i}", ("btn", f"t{i}")) for i in range(8)]
    lighting = Os2lServer()
    port = lighting.port
    output = Os2lOutput("127.0.0.1", port, VALENCE + buttons)
    try:
        output.emit({"valence": -1.0, **{f"active:t{i}": 1.0 for i in range(8)}}, hop=True)
        wait_for(lambda: len(lighting.messages) == 9, 5, "the first nine messages")
        lighting.close()
        wait_for(lambda: output.state == "retrying", 5, "the output to notice")
        for k in range(1, 6):
            output.emit({"valence": k / 5}, hop=True)  # five changes while away: the last one stands
        back = Os2lServer(port=port)
        try:
            wait_for(lambda: len(back.messages) == 9, 10, "the latest of each destination")
            assert back.messages[0] == {"evt": "cmd", "id": 1, "param": 1.0}
        finally:
            back.close()
    finally:
        output.close()
    assert (output.sent, output.dropped) == (18, 4)


def test_the_old_state_goes_off_before_the_new_one_goes_on():
    """A desk that keeps the state buttons as a radio group never sees two on at once."""
    routes = [Route(f"state:{s}", ("btn", f"state {s}")) for s in MOOD_STATES]
    lighting = Os2lServer()
    output = Os2lOutput("127.0.0.1", lighting.port, routes)
    try:
        for state in ("calm-tender", "silent", "sad-dark", "tense-angry"):
            output.emit({f"state:{s}": float(s == state) for s in MOOD_STATES}, hop=True)
            # Connected first: what is queued before the connection is replaced by the latest.
            wait_for(lambda: lighting.messages, 5, "the connection")
        wait_for(lambda: len(lighting.messages) == 7, 5, "seven button changes")
    finally:
        output.close()
        lighting.close()
    assert [(m["name"], m["state"]) for m in lighting.messages] == [
        ("state calm-tender", "on"),
        ("state calm-tender", "off"),
        ("state silent", "on"),
        ("state silent", "off"),  # sad-dark comes before silent in the routes
        ("state sad-dark", "on"),
        ("state sad-dark", "off"),  # and tense-angry before sad-dark
        ("state tense-angry", "on"),
    ]


def test_auto_without_any_lighting_program_says_so():
    with pytest.raises(OSError, match=r"no OS2L service named like 'nobody-here' found by DNS-SD"):
        browse("nobody-here", timeout_s=0.5)
