"""The hub: every message to every output from its own thread; glides at --output-rate; never holds the caller."""

from __future__ import annotations

import time

import numpy as np

from realtime.outputs.hub import QUEUE_MESSAGES, Outputs
from realtime.outputs.mapping import default_routes
from realtime.outputs.osc import OscOutput
from tests.realtime.outputs.receivers import OscServer, f32

TAGS = [f"tag{i}" for i in range(150)]


def mood(t_stream: float, valence: float, seq: int = 0, tags: list[str] = TAGS) -> dict:
    return {
        "seq": seq,
        "t_stream": t_stream,
        "hop_s": 1.0,
        "smooth_s": 2.0,
        "silent": False,
        "tags": {name: 0.5 for name in tags},
        "active": [],
        "valence": valence,
        "arousal": 0.0,
    }


def wait_for(predicate, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)


def test_output_rate_glides_from_where_each_value_stands_to_the_feeds_newest():
    server = OscServer()
    # A few tags: each tick sends every tag, and 50 ticks a second of 150 tags (~8,500 datagrams,
    # each ~0.1 ms in the Python receiver) fell behind on a loaded 2-core CI machine; the glide is
    # the same with four.
    tags = TAGS[:4]
    hub = Outputs([OscOutput("127.0.0.1", server.port, default_routes("osc"))], rate_hz=50, tags=tags)
    try:
        hub.publish("mood", mood(3.0, 0.0, tags=tags))
        time.sleep(0.5)
        hub.publish("mood", mood(4.0, 0.4, tags=tags))  # the feed moved 0.4 in one hop of 1 s
        sent_at = time.monotonic()
        wait_for(lambda: time.monotonic() - sent_at > 1.5, 2.5)
    finally:
        hub.close()
        server.close()
    valence = [args[0] for address, args in server.messages if address == "/moodstream/valence"]
    moving = next(i for i, v in enumerate(valence) if v != 0.0)
    assert moving >= 10  # held at the first message's value for its half second (~25 ticks)
    valence = valence[moving:]
    # From 0 to 0.4 in a straight line over the hop (1 s), never past it, then held.
    assert all(b >= a for a, b in zip(valence, valence[1:], strict=False)) and max(valence) == f32(0.4)
    assert 50 <= len(valence) <= 90  # about 50 a second, for 1.5 s
    assert valence[0] < 0.05  # no jump at the message: the first tick after it is near where it stood
    steps = np.diff(valence[: valence.index(f32(0.4))])
    assert steps.max() < 0.4 * 0.1  # ~0.008 a tick of 20 ms; a late tick moves a little more


def test_a_hub_that_falls_behind_drops_the_oldest_messages_and_counts_them():
    server = OscServer()
    output = OscOutput("127.0.0.1", server.port, default_routes("osc"))
    hub = Outputs([output], tags=TAGS)
    try:
        for seq in range(10 * QUEUE_MESSAGES):  # far faster than ~300 datagrams each can go out
            hub.publish("mood", mood(3.0 + seq, seq / 1000, seq))
        assert hub.flush(timeout_s=30)
        status = hub.status()[0]
        hub_drops = status["dropped"]
        assert hub_drops > 0 and status["state"] == "ok"
        wait_for(
            lambda: (
                sum(a == "/moodstream/valence" for a, _ in server.messages) >= 10 * QUEUE_MESSAGES - hub_drops
            ),
            5,
        )
    finally:
        hub.close()
        server.close()
    # Every message the hub kept reached the receiver; the last one always does.
    valence = [args[0] for address, args in server.messages if address == "/moodstream/valence"]
    assert len(valence) == 10 * QUEUE_MESSAGES - hub_drops
    assert valence[-1] == f32((10 * QUEUE_MESSAGES - 1) / 1000)
