"""The feed contract (schema, validate, decode) and the Publisher, over real loopback sockets."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
import zmq
from jsonschema import Draft202012Validator

from realtime import feed
from realtime import publisher as publisher_module
from realtime.feed import FeedError
from realtime.publisher import Publisher, PublisherError, is_loopback
from tests.realtime.harness import free_port

EPHEMERAL = "tcp://127.0.0.1:0"

# The MagnaTagATune top-50 vocabulary: a realistic size and spelling for tag names.
MTAT_TAGS = (
    "guitar classical slow techno strings drums electronic rock fast piano ambient beat violin vocal "
    "synth female indian opera male singing vocals no_vocals harpsichord loud quiet flute woman male_vocal "
    "no_vocal pop soft sitar solo man classic choir voice new_age dance male_voice female_vocal beats harp "
    "cello no_voice weird country metal female_voice choral"
).split()


def valid_mood(**overrides: object) -> dict:
    """A mood message as the engine publishes it: full vocabulary, two tags on."""
    t_capture = time.time() - 0.05
    tags = {name: round(0.01 + 0.3 * (i % 7) / 7, 3) for i, name in enumerate(MTAT_TAGS)}
    tags.update(rock=0.81, pop=0.55, electronic=0.40)
    message = {
        "schema": 5,
        "seq": 12,
        "model": "musicnn-mtat",
        "t_capture": t_capture,
        "t_publish": t_capture + 0.035,
        "latency_ms": 35.0,
        "silent": False,
        "tags": tags,
        "active": ["rock", "pop"],
        "valence": 0.31,
        "arousal": -0.2,
        "t_stream": 123.5,
        "hop_s": 0.5,
        "context_s": 3.0,
        "smooth_s": 2.0,
        "state": "energetic-happy",
        "state_p": {
            "energetic-happy": 0.5239,
            "tense-angry": 0.2761,
            "sad-dark": 0.0761,
            "calm-tender": 0.1239,
        },
        "moods": [],
        "emotions": [],
        "descriptors": ["rock", "pop"],
    }
    message.update(overrides)
    return message


def valid_status(**overrides: object) -> dict:
    """A status message of a device source that is running."""
    message = {
        "schema": 5,
        "seq": 3,
        "t": time.time(),
        "model": "musicnn-mtat",
        "uptime_s": 3.02,
        "source": {
            "kind": "device",
            "name": "Built-in Microphone",
            "state": "running",
            "sample_rate_hz": 48000,
            "error": None,
            "reconnect": None,
        },
        "overflows": 0,
        "dropped_samples": 0,
        "sanitized_samples": 0,
        "clipped_samples": 12,
        "gaps": 0,
        "gap_seconds": 0.0,
        "published": 6,
        "latency_ms": {"p50": 30.2, "p99": 48.0, "count": 6},
        "process_ms": {
            "pickup": {"p50": 0.4, "p99": 1.9},
            "resample": {"p50": 0.2, "p99": 0.3},
            "mel": {"p50": 1.1, "p99": 1.6},
            "encoder": {"p50": 11.8, "p99": 13.9},
            "pool_heads": {"p50": 0.7, "p99": 0.9},
            "publish": {"p50": 0.3, "p99": 0.5},
            "hop": {"p50": 14.2, "p99": 16.8},
            "count": 6,
        },
        "outputs": [
            {
                "kind": "osc",
                "target": "127.0.0.1:7700",
                "state": "ok",
                "sent": 1180,
                "dropped": 0,
                "error": None,
            },
            {
                "kind": "os2l",
                "target": "192.168.1.30:9996",
                "state": "retrying",
                "sent": 0,
                "dropped": 12,
                "error": "Connection refused",
            },
        ],
    }
    message.update(overrides)
    return message


def frames_of(topic: str, message: object) -> list[bytes]:
    return [topic.encode("ascii"), json.dumps(message).encode("utf-8")]


@pytest.fixture
def context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def subscriber(context: zmq.Context, endpoint: str, rcvhwm: int = 1000) -> zmq.Socket:
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, rcvhwm)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    return sub


def publish_until_received(pub: Publisher, sub: zmq.Socket, topic: str, build, deadline_s: float = 5.0):
    """Publish until ``sub`` gets a message (ZeroMQ's slow joiner drops the first ones); its frames."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        pub.send(topic, build())
        if sub.poll(20):
            return sub.recv_multipart()
    raise AssertionError(f"no message reached the subscriber within {deadline_s} s")


# --- schema, validate, decode -------------------------------------------------------------


def test_schema_is_draft_2020_12_with_both_topics():
    schema = feed.load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]
    for topic in feed.TOPICS:
        assert schema["$defs"][topic]["additionalProperties"] is False
    assert schema["$defs"]["mood"]["properties"]["schema"]["const"] == feed.SCHEMA_VERSION


@pytest.mark.parametrize(
    "topic, message",
    [
        ("mood", valid_mood()),
        ("mood", valid_mood(valence=None, arousal=None, active=[], descriptors=[], state=None, state_p=None)),
        # Silence keeps the last tags; a driver's capture time may be a little ahead of the clock.
        ("mood", valid_mood(silent=True, latency_ms=-0.4)),
        ("mood", valid_mood(valence=-1, arousal=1, tags={}, active=[], descriptors=[])),
        ("status", valid_status()),
        (
            "status",
            valid_status(
                source={
                    "kind": "url",
                    "name": "http://x/s",
                    "state": "error",
                    "sample_rate_hz": 44100,
                    "error": "EOF",
                    "reconnect": None,
                },
                latency_ms={"p50": None, "p99": None, "count": 0},
            ),
        ),
        (
            "status",
            valid_status(
                source={
                    "kind": "url",
                    "name": "http://radio/live",
                    "state": "reconnecting",
                    "sample_rate_hz": 16000,
                    "error": None,
                    "reconnect": {"reason": "the stream ended", "attempt": 3, "since": time.time() - 7},
                },
                gaps=1,
                gap_seconds=7.25,
            ),
        ),
    ],
)
def test_realistic_messages_validate(topic, message):
    feed.validate(topic, message)
    assert feed.decode(frames_of(topic, message)) == (topic, message)


def _without(key):
    def mutate(message):
        del message[key]

    return mutate


def _set(key, value):
    def mutate(message):
        message[key] = value

    return mutate


def _set_in(outer, key, value):
    def mutate(message):
        message[outer][key] = value

    return mutate


MUTATIONS = [
    ("mood", "missing t_capture", _without("t_capture")),
    ("mood", "missing tags", _without("tags")),
    ("mood", "extra field", _set("energy", 0.5)),
    ("mood", "valence 1.5", _set("valence", 1.5)),
    ("mood", "arousal -1.01", _set("arousal", -1.01)),
    ("mood", "schema 2 (before process_ms)", _set("schema", 2)),
    ("mood", "missing smooth_s", _without("smooth_s")),
    ("mood", "negative smooth_s", _set("smooth_s", -1.0)),
    ("mood", "schema true", _set("schema", True)),
    ("mood", "negative seq", _set("seq", -1)),
    ("mood", "float seq", _set("seq", 1.5)),
    ("mood", "silent as int", _set("silent", 0)),
    ("mood", "probability above 1", _set_in("tags", "rock", 1.2)),
    ("mood", "probability as string", _set_in("tags", "rock", "0.8")),
    ("mood", "active tag not in tags", _set("active", ["rock", "polka"])),
    ("mood", "active twice", _set("active", ["rock", "rock"])),
    ("mood", "hop_s zero", _set("hop_s", 0)),
    ("mood", "negative t_stream", _set("t_stream", -0.1)),
    ("status", "missing source", _without("source")),
    ("status", "extra field", _set("cpu", 0.3)),
    ("status", "unknown source kind", _set_in("source", "kind", "midi")),
    ("status", "unknown source state", _set_in("source", "state", "paused")),
    ("status", "extra source field", _set_in("source", "channels", 2)),
    ("status", "zero sample rate", _set_in("source", "sample_rate_hz", 0)),
    ("status", "negative overflows", _set("overflows", -1)),
    ("status", "missing p99", lambda m: m["latency_ms"].pop("p99")),
    ("status", "missing outputs", _without("outputs")),
    ("status", "missing process_ms", _without("process_ms")),
    ("status", "process_ms without a stage", lambda m: m["process_ms"].pop("encoder")),
    ("status", "negative stage time", lambda m: m["process_ms"]["mel"].update(p50=-1.0)),
    ("status", "unknown output kind", lambda m: m["outputs"][0].update(kind="dmx")),
    ("status", "unknown output state", lambda m: m["outputs"][0].update(state="down")),
    ("status", "negative output count", lambda m: m["outputs"][1].update(dropped=-1)),
    ("status", "output without error", lambda m: m["outputs"][0].pop("error")),
]


@pytest.mark.parametrize("topic, name, mutate", MUTATIONS, ids=[f"{t}: {n}" for t, n, _ in MUTATIONS])
def test_each_mutation_is_rejected(topic, name, mutate):
    message = valid_mood() if topic == "mood" else valid_status()
    mutate(message)
    with pytest.raises(FeedError, match=f"invalid {topic} message"):
        feed.validate(topic, message)
    with pytest.raises(FeedError, match=f"invalid {topic} message"):
        feed.decode(frames_of(topic, message))


def test_error_names_the_field_and_the_reason():
    with pytest.raises(FeedError) as caught:
        feed.validate("mood", valid_mood(valence=1.5))
    assert "valence" in str(caught.value) and "1.5" in str(caught.value)
    with pytest.raises(FeedError, match="polka"):
        feed.validate("mood", valid_mood(active=["polka"]))


def test_message_of_the_wrong_topic_is_rejected():
    with pytest.raises(FeedError):
        feed.validate("status", valid_mood())
    with pytest.raises(FeedError):
        feed.decode(frames_of("mood", valid_status()))
    with pytest.raises(FeedError, match="unknown topic"):
        feed.validate("moods", valid_mood())


def test_validate_rejects_non_finite_numbers():
    # JSON Schema's bounds let NaN through, so validate checks for it itself.
    with pytest.raises(FeedError, match="NaN"):
        feed.validate("mood", valid_mood(valence=math.nan))
    message = valid_mood()
    message["tags"]["rock"] = math.inf
    with pytest.raises(FeedError, match="NaN or Infinity"):
        feed.validate("mood", message)


MOOD_JSON = json.dumps(valid_mood()).encode()
BAD_FRAMES = [
    ("wrong topic", [b"moods", MOOD_JSON], "unknown topic"),
    ("empty topic", [b"", MOOD_JSON], "unknown topic"),
    ("non-JSON bytes", [b"mood", b"not json at all"], "not valid JSON"),
    ("3 frames", [b"mood", MOOD_JSON, b"extra"], "expected 2 frames"),
    ("1 frame", [MOOD_JSON], "expected 2 frames"),
    ("not UTF-8", [b"mood", b'{"model": "\xff\xfe"}'], "not UTF-8"),
    ("UTF-16", [b"mood", json.dumps(valid_mood()).encode("utf-16")], "not UTF-8"),
    ("JSON array", [b"mood", b"[1, 2]"], "must be a JSON object"),
    ("NaN literal", [b"mood", MOOD_JSON.replace(b'"valence": 0.31', b'"valence": NaN')], "NaN is not JSON"),
    ("duplicate key", [b"mood", b'{"seq": 1, "seq": 2}'], "duplicate key"),
    ("too large", [b"mood", b" " * (feed.MAX_MESSAGE_BYTES + 1)], "bytes, more than"),
    ("nested too deeply", [b"mood", b"[" * 100_000], "nested too deeply|not valid JSON"),
]


@pytest.mark.parametrize("frames, match", [b[1:] for b in BAD_FRAMES], ids=[b[0] for b in BAD_FRAMES])
def test_decode_rejects_bad_frames(frames, match):
    with pytest.raises(FeedError, match=match):
        feed.decode(frames)


# --- Publisher ----------------------------------------------------------------------------


def test_messages_arrive_as_two_frames_with_publish_time_and_latency(context):
    with Publisher(EPHEMERAL) as pub:
        assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith(":0")
        sub = subscriber(context, pub.endpoint)
        publish_until_received(pub, sub, "status", valid_status)

        sent = valid_mood(t_publish=0.0, latency_ms=0.0)
        before = time.time()
        assert pub.send("mood", sent) is True
        after = time.time()
        assert sub.poll(2000)
        frames = sub.recv_multipart()
        assert len(frames) == 2 and frames[0] == b"mood"
        received = json.loads(frames[1].decode("utf-8"))
        assert before <= received["t_publish"] <= after
        assert received["latency_ms"] == pytest.approx((received["t_publish"] - received["t_capture"]) * 1000)
        assert received["latency_ms"] >= 50
        assert received == sent  # stamped in place, so the engine can use the latency it published
        assert feed.decode(frames) == ("mood", received)

        status = valid_status()
        pub.send("status", status)
        assert sub.poll(2000)
        topic, received_status = feed.decode(sub.recv_multipart())
        assert topic == "status" and received_status == status and "t_publish" not in status
        assert pub.dropped == 0 and pub.sent >= 3


def test_endpoint_in_use_is_a_clear_error():
    with Publisher(EPHEMERAL) as first:
        with pytest.raises(PublisherError, match="already in use.*--pub") as caught:
            Publisher(first.endpoint)
        assert first.endpoint in str(caught.value)


@pytest.mark.parametrize(
    "endpoint", ["tcp://127.0.0.1:notaport", "nosuch://127.0.0.1:5556", "tcp://", "127.0.0.1:5556", ""]
)
def test_bad_endpoint_is_a_clear_error(endpoint):
    with pytest.raises(PublisherError, match="cannot publish on"):
        Publisher(endpoint)


@pytest.mark.parametrize(
    "host, why",
    [
        # ZeroMQ's own word for both is "No such device".
        ("no-such.invalid", "cannot resolve 'no-such.invalid', nor is it a network interface here"),
        ("a..b", "cannot resolve 'a..b', nor is it a network interface here"),
        # A host that resolves, to an address that is not this machine's (TEST-NET-1, RFC 5737).
        ("192.0.2.1", "'192.0.2.1' is not an address of this machine"),
    ],
)
def test_a_host_to_publish_on_that_is_not_here_is_said_plainly(host, why):
    with pytest.raises(PublisherError) as caught:
        Publisher(f"tcp://{host}:{free_port()}")
    assert f": {why} (expected e.g." in str(caught.value), caught.value


def test_a_subscriber_that_never_reads_blocks_neither_the_engine_nor_the_others(context):
    total = 20_000
    with Publisher(EPHEMERAL, sndhwm=10) as pub:
        stuck = subscriber(context, pub.endpoint, rcvhwm=10)
        live = subscriber(context, pub.endpoint)
        publish_until_received(pub, stuck, "status", valid_status)
        publish_until_received(pub, live, "status", valid_status)
        padding = {f"tag{i}": 0.5 for i in range(200)}  # fills the stuck peer's buffers sooner
        message = valid_mood(tags=padding, active=[], descriptors=[])
        slowest_s = 0.0
        heard = []  # the seq of every mood message the live subscriber got during the flood
        for seq in range(total):
            message["seq"] = seq
            t0 = time.perf_counter()
            assert pub.send("mood", message)
            slowest_s = max(slowest_s, time.perf_counter() - t0)
            while live.poll(0):
                topic, payload = live.recv_multipart()  # checked once below: decode() costs ~1 ms
                if topic == b"mood":
                    heard.append(json.loads(payload)["seq"])
        # A blocking send would hang for good; speed itself is bench/'s business.
        assert slowest_s < 0.5, f"one send took {slowest_s:.3f} s"
        # The stuck subscriber's queue stays full, yet the feed still reaches the live one (its
        # own queue may be full for a moment too, so keep publishing as the engine would).
        deadline = time.monotonic() + 10
        got_marker = False
        while not got_marker and time.monotonic() < deadline:
            marker = valid_status(seq=total)
            assert pub.send("status", marker)
            while not got_marker and live.poll(50):
                topic, msg = feed.decode(live.recv_multipart())
                got_marker = topic == "status" and msg["seq"] == total
        assert got_marker, "the live subscriber stopped hearing the feed"
        # It kept hearing the feed all through the flood, not just once it ended.  (How much of
        # a flood of 20 000 unpaced sends a 10-message queue holds depends on how busy the
        # machine is: from ~50 % when another job takes the cores to ~100 % when quiet.)
        quarters = np.bincount(np.array(heard) * 4 // total, minlength=4)
        assert (quarters >= total // 40).all(), f"mood messages heard per quarter of the flood: {quarters}"
        assert pub.dropped == 0


def test_close_returns_promptly_with_queued_messages(context):
    pub = Publisher(EPHEMERAL, sndhwm=100_000)
    sub = subscriber(context, pub.endpoint, rcvhwm=10)
    publish_until_received(pub, sub, "status", valid_status)
    big = valid_mood(tags={f"tag{i}": 0.5 for i in range(500)}, active=[], descriptors=[])
    for _ in range(1000):  # about 10 MB queued
        pub.send("mood", big)
    start = time.perf_counter()
    pub.close()
    assert time.perf_counter() - start < 1.0
    pub.close()  # idempotent
    with pytest.raises(PublisherError, match="closed"):
        pub.send("status", valid_status())


def test_close_still_sends_what_is_queued_to_a_subscriber_that_reads(context, monkeypatch):
    """A run's last moods and final status are sent just before its publisher closes: they must
    still reach a subscriber that reads.  ~13 MB queued, more than loopback's socket buffers hold,
    so at close much of it is still in ZeroMQ's queue (discarded there when close dropped it).
    The bound is raised here: a Python reader on a loaded machine (the suite's workers on two
    cores) took more than 0.5 s for them (831 of 1000 in one run); the bound itself, with a
    subscriber that does not read, is ``test_close_returns_promptly_with_queued_messages``'s.

    No ZMTP heartbeats here: on a loaded machine (sending took 6 s with two cores shared by 17
    processes) the subscriber, its buffers full, answers no ping for 3 s and is dropped; and a pong
    still unread when the publisher's socket closes makes the kernel reset the connection, which
    discards what the subscriber had not read yet (824-949 of 1000 in such runs; all with no pings)."""
    monkeypatch.setattr(publisher_module, "CLOSE_FLUSH_S", 30.0)
    monkeypatch.setattr(publisher_module, "HEARTBEAT_IVL_MS", 0)
    pub = Publisher(EPHEMERAL, sndhwm=100_000)
    sub = subscriber(context, pub.endpoint, rcvhwm=10)
    publish_until_received(pub, sub, "status", valid_status)
    while sub.poll(100):  # the statuses that found it
        sub.recv_multipart()
    big = valid_mood(tags={f"tag{i}": 0.5 for i in range(1000)}, active=[], descriptors=[])
    sent = 1000
    for seq in range(sent):
        assert pub.send("mood", {**big, "seq": seq})
    received = []

    def read() -> None:
        # Until the last one or 30 s: not until a pause of a few seconds, which a loaded machine
        # (the suite's scale test runs 20 analyzers beside it) can put between two messages.
        deadline = time.monotonic() + 30.0
        while len(received) < sent and time.monotonic() < deadline:
            if sub.poll(100):
                received.append(json.loads(sub.recv_multipart()[1])["seq"])

    reader = threading.Thread(target=read)
    reader.start()
    start = time.perf_counter()
    pub.close()
    closed_s = time.perf_counter() - start
    reader.join(30)
    assert received == list(range(sent)), f"{len(received)} of {sent} received"
    assert closed_s < 30.0  # it returns once all is sent, not at the bound


def test_a_given_context_is_left_open(context):
    with Publisher(EPHEMERAL, context=context):
        pass
    assert not context.closed
    context.socket(zmq.PUB).close()  # still usable


@pytest.mark.parametrize("where", ["valence", "tag", "latency"])
def test_nan_or_inf_raises_and_sends_nothing(context, where):
    with Publisher(EPHEMERAL) as pub:
        sub = subscriber(context, pub.endpoint)
        publish_until_received(pub, sub, "status", valid_status)
        while sub.poll(100):  # drain the warm-up messages
            sub.recv_multipart()
        bad = valid_mood()
        if where == "valence":
            bad["valence"] = math.nan
        elif where == "tag":
            bad["tags"]["rock"] = math.inf
        else:
            bad["t_capture"] = -math.inf  # makes latency_ms infinite
        sent_before = pub.sent
        with pytest.raises(ValueError, match="NaN or Infinity"):
            pub.send("mood", bad)
        assert pub.sent == sent_before and pub.dropped == 0

        marker = valid_status(seq=999)
        assert pub.send("status", marker)
        assert sub.poll(2000)
        assert feed.decode(sub.recv_multipart()) == ("status", marker)  # nothing came before it


def test_send_rejects_unknown_topics_and_oversized_messages():
    with Publisher(EPHEMERAL) as pub:
        with pytest.raises(ValueError, match="unknown topic"):
            pub.send("moods", valid_mood())
        huge = valid_mood(model="x" * (feed.MAX_MESSAGE_BYTES + 1))
        with pytest.raises(ValueError, match="bytes"):
            pub.send("mood", huge)
        assert pub.sent == 0


def test_sndhwm_must_be_positive():
    with pytest.raises(ValueError, match="sndhwm"):
        Publisher(EPHEMERAL, sndhwm=0)


@pytest.mark.parametrize(
    "endpoint, local",
    [
        ("tcp://127.0.0.1:5556", True),
        ("tcp://127.0.0.2:5556", True),
        ("tcp://localhost:5556", True),
        ("tcp://[::1]:5556", True),
        ("ipc:///tmp/moodstream.ipc", True),
        ("inproc://feed", True),
        ("tcp://*:5556", False),
        ("tcp://0.0.0.0:5556", False),
        ("tcp://192.168.1.20:5556", False),
        ("tcp://eth0:5556", False),
    ],
)
def test_is_loopback(endpoint, local):
    assert is_loopback(endpoint) is local


def test_builders_are_independent():
    # The mutation tests rely on each builder call returning fresh nested objects.
    a, b = valid_mood(), valid_mood()
    a["tags"]["rock"] = 0.0
    assert b["tags"]["rock"] == 0.81
