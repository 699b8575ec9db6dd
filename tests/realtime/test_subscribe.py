"""``python -m realtime.subscribe`` as a real subprocess against a real Publisher on loopback."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq

from realtime import feed, subscribe
from realtime.publisher import Publisher
from tests.realtime.harness import Lines, free_endpoint

REPO = Path(__file__).resolve().parents[2]
EPHEMERAL = "tcp://127.0.0.1:0"
PUBLISH_EVERY_S = 0.02


def valid_mood(seq: int = 0, **overrides: object) -> dict:
    """A mood message as the engine publishes it (t_publish/latency_ms are stamped on send)."""
    t_capture = time.time() - 0.035
    message = {
        "schema": 5,
        "seq": seq,
        "model": "musicnn-mtat",
        "t_capture": t_capture,
        "t_publish": t_capture,
        "latency_ms": 0.0,
        "silent": False,
        "tags": {"rock": 0.81, "pop": 0.55, "indie": 0.40, "jazz": 0.02, "sad": 0.1},
        "active": ["rock", "pop"],
        "valence": 0.31,
        "arousal": -0.2,
        "t_stream": 12.0 + 0.5 * seq,
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


def valid_status(seq: int = 0) -> dict:
    """A status message of a device source that is running."""
    return {
        "schema": 5,
        "seq": seq,
        "t": time.time(),
        "model": "musicnn-mtat",
        "uptime_s": float(seq),
        "source": {
            "kind": "device",
            "name": "Built-in Mic",
            "state": "running",
            "sample_rate_hz": 48000,
            "error": None,
            "reconnect": None,
        },
        "overflows": 0,
        "dropped_samples": 0,
        "sanitized_samples": 0,
        "clipped_samples": 0,
        "gaps": 0,
        "gap_seconds": 0.0,
        "published": 2 * seq,
        "latency_ms": {"p50": 30.0, "p99": 48.0, "count": 2 * seq},
        "process_ms": {
            **{stage: {"p50": None, "p99": None} for stage in ("pickup", "resample", "mel", "encoder")},
            **{stage: {"p50": None, "p99": None} for stage in ("pool_heads", "publish", "hop")},
            "count": 0,
        },
        "outputs": [
            {
                "kind": "osc",
                "target": "127.0.0.1:7700",
                "state": "ok",
                "sent": 170 * seq,
                "dropped": 0,
                "error": None,
            },
            {
                "kind": "os2l",
                "target": "192.168.1.30:9996",
                "state": "retrying",
                "sent": 0,
                "dropped": 0,
                "error": "Connection refused",
            },
        ],
    }


# `python -m realtime.subscribe`, except that SIGINT raises KeyboardInterrupt even when this
# test runs with SIGINT ignored (a shell starts background jobs so, and children inherit it).
RUN_WITH_SIGINT = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'subscribe'; runpy.run_module('realtime.subscribe', run_name='__main__', alter_sys=True)"
)


def start_subscriber(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_WITH_SIGINT, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def publish_until_exit(proc: subprocess.Popen, send, deadline_s: float = 15.0) -> tuple[str, str]:
    """Call ``send(i)`` repeatedly until ``proc`` exits (the slow joiner misses the first ones)."""
    deadline = time.monotonic() + deadline_s
    i = 0
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            send(i)
            i += 1
            time.sleep(PUBLISH_EVERY_S)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode is not None
    return out, err


def both_topics(pub: Publisher):
    def send(i: int) -> None:
        pub.send("mood", valid_mood(i))
        pub.send("status", valid_status(i))

    return send


def test_count_and_json_print_valid_json_lines():
    with Publisher(EPHEMERAL) as pub:
        proc = start_subscriber(pub.endpoint, "--count", "3", "--json")
        out, err = publish_until_exit(proc, both_topics(pub))
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    for line in lines:
        message = json.loads(line)
        topic = "mood" if "tags" in message else "status"
        feed.validate(topic, message)
        if topic == "mood":
            assert message["latency_ms"] >= 35  # stamped by the publisher, not the builder's 0.0


def test_default_prints_one_human_line_per_message():
    with Publisher(EPHEMERAL) as pub:
        proc = start_subscriber(pub.endpoint, "--count", "4")
        out, err = publish_until_exit(proc, both_topics(pub))
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 4
    mood = next(line for line in lines if line.startswith("mood"))
    status = next(line for line in lines if line.startswith("status"))
    assert "valence +0.31 arousal -0.20" in mood
    assert "active: rock, pop | top: rock 0.81, pop 0.55, indie 0.40" in mood
    assert " ms" in mood and "lat " in mood
    assert "source device running" in status and "overflows 0" in status
    assert "p50 30 ms p99 48 ms" in status
    assert "osc 127.0.0.1:7700: ok  os2l 192.168.1.30:9996: retrying (Connection refused)" in status


def test_active_tags_print_strongest_first_as_listen_shows_them():
    message = valid_mood(0) | {"active": ["pop", "rock"]}  # the feed lists them in the model's order
    assert "active: rock, pop | top:" in subscribe.format_mood(message)


def test_topic_filter():
    with Publisher(EPHEMERAL) as pub:
        proc = start_subscriber(pub.endpoint, "--topic", "status", "--count", "2")
        out, err = publish_until_exit(proc, both_topics(pub))
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.startswith("status") for line in lines)


def test_invalid_message_is_skipped_with_a_warning():
    context = zmq.Context()
    raw = context.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    try:
        raw.bind(EPHEMERAL)
        endpoint = raw.getsockopt_string(zmq.LAST_ENDPOINT)
        proc = start_subscriber(endpoint, "--count", "2", "--json")

        def send(i: int) -> None:
            # Garbage first each round, so some always lies between two valid messages.
            raw.send_multipart([b"mood", b"\x00 this is not json"])
            raw.send_multipart([b"mood", json.dumps(valid_mood(i, t_publish=time.time())).encode()])

        out, err = publish_until_exit(proc, send)
    finally:
        raw.close(linger=0)
        context.term()
    assert proc.returncode == 0, err
    assert "warning" in err and "not valid JSON" in err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert len(lines) == 2
    for line in lines:
        feed.validate("mood", json.loads(line))


def test_text_from_the_feed_cannot_drive_the_terminal():
    hostile = "\x1b[2J\x1b[31mred"
    with Publisher(EPHEMERAL) as pub:
        proc = start_subscriber(pub.endpoint, "--topic", "mood", "--count", "1")
        message = valid_mood(tags={hostile: 0.9}, active=[hostile], descriptors=[])
        out, err = publish_until_exit(proc, lambda i: pub.send("mood", dict(message)))
    assert proc.returncode == 0, err
    assert "\x1b" not in out
    assert "\\x1b[2J\\x1b[31mred" in out


def test_timeout_without_a_publisher_exits_1_with_a_message():
    start = time.monotonic()
    proc = start_subscriber(free_endpoint(), "--timeout", "1")
    out, err = proc.communicate(timeout=10)
    elapsed_s = time.monotonic() - start
    assert proc.returncode == 1
    assert out == ""
    assert "no message for 1 s" in err and "nothing listens at" in err, err
    assert 1.0 <= elapsed_s < 5.0


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_asked_for_exits_0_quietly_within_a_second(stop):
    """Ctrl-C, or SIGTERM from a supervisor or kill: a stop asked for, exit 0 as every command."""
    with Publisher(EPHEMERAL) as pub:
        proc = start_subscriber(pub.endpoint)
        lines = Lines(proc, proc.stdout)
        try:
            # Interrupt only once it is receiving: a SIGINT during interpreter start-up is
            # Python's business, not ours.
            deadline = time.monotonic() + 10
            i = 0
            while not lines.lines and time.monotonic() < deadline and proc.poll() is None:
                pub.send("status", valid_status(i))
                i += 1
                time.sleep(PUBLISH_EVERY_S)
            assert lines.lines, "the subscriber printed nothing"

            start = time.monotonic()
            proc.send_signal(stop)
            returncode = proc.wait(timeout=5)
            elapsed_s = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert returncode == 0
    assert elapsed_s < 1.0
    assert err == ""


def test_a_quiet_feed_is_noted_once_and_its_return_too():
    """A publisher that goes away (or has not started) leaves a SUB socket waiting with nothing to
    tell; after QUIET_NOTE_S the subscriber says so on stderr, once, and again when messages come."""
    with Publisher(EPHEMERAL) as pub:
        proc = start_subscriber(pub.endpoint)
        out, err = Lines(proc, proc.stdout), Lines(proc)
        try:
            i, deadline = 0, time.monotonic() + 15
            while not out.lines and time.monotonic() < deadline:
                pub.send("status", valid_status(i))
                i += 1
                time.sleep(PUBLISH_EVERY_S)
            assert out.lines, "the subscriber printed nothing"
            quiet_from = time.monotonic()
            note = err.next_line(subscribe.QUIET_NOTE_S + 5)
            # The publisher is there and sends nothing (an analyzer loading its model, or stalled).
            assert note.startswith(
                f"subscribe: nothing for {subscribe.QUIET_NOTE_S:g} s (connected to the analyzer at {pub.endpoint}, "
                "which sends nothing: starting, or stalled)."
            ), note
            assert time.monotonic() - quiet_from >= subscribe.QUIET_NOTE_S - 0.5  # not at once
            assert err.next_line(1.0) == ""  # once, not every poll
            out.skip()  # what came before the quiet
            pub.send("status", valid_status(i))
            assert err.next_line(5.0) == "subscribe: messages again.\n"
            assert out.next_line(5.0).startswith("status")
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()


def test_the_quiet_note_says_when_the_timeout_gives_up(monkeypatch, capsys):
    monkeypatch.setattr(subscribe, "QUIET_NOTE_S", 0.2)  # the note long before the timeout
    with Publisher(EPHEMERAL) as pub:  # that publishes nothing
        assert subscribe.main([pub.endpoint, "--timeout", "1"]) == 1
    err = capsys.readouterr().err.splitlines()
    why = (
        f"connected to the analyzer at {pub.endpoint}"  # less than 2 s ago: its next status may be on its way
    )
    assert err == [
        f"subscribe: nothing for 0.2 s ({why}). Waiting on (gives up at 1 s).",
        f"subscribe: no message for 1 s ({why}).",
    ], err


def test_the_first_messages_after_a_quiet_note_are_arriving_not_back(monkeypatch, capsys):
    monkeypatch.setattr(subscribe, "QUIET_NOTE_S", 0.2)
    with Publisher(EPHEMERAL) as pub:
        sender = threading.Timer(1.0, lambda: [pub.send("status", valid_status(i)) for i in range(3)])
        sender.start()
        try:
            assert subscribe.main([pub.endpoint, "--count", "1", "--timeout", "10"]) == 0
        finally:
            sender.join()
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "subscribe: messages arriving.", err


def test_a_host_that_does_not_resolve_is_an_error_not_a_wait(capsys):
    """libzmq would retry the name for ever and the reader say that nothing listens there."""
    assert subscribe.main(["tcp://no-such-host.invalid:5556", "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "error: cannot resolve 'no-such-host.invalid' in tcp://no-such-host.invalid:5556: "
    ), err
    assert err.count("\n") == 1, err


def test_the_endpoint_is_an_argument_or_from_as_bridge_and_view_take_it(capsys):
    with Publisher(EPHEMERAL) as pub:
        assert subscribe.main(["--from", pub.endpoint, "--timeout", "0.5"]) == 1
        assert f"connected to the analyzer at {pub.endpoint}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:
        subscribe.main(["tcp://127.0.0.1:5556", "--from", "tcp://127.0.0.1:5556"])
    assert ended.value.code == 2 and "give the feed's endpoint once" in capsys.readouterr().err
    # What binds (listen --pub) may ask for any port or every address; what connects may not.
    for bad, words in (
        (
            "tcp://127.0.0.1:0",
            "port '0' of 'tcp://127.0.0.1:0' is not in 1..65535 (the analyzer's --pub port)",
        ),
        ("tcp://*:5556", "'tcp://*:5556': '*' binds every address; connect to the analyzer's host"),
    ):
        for argv in ([bad], ["--from", bad]):
            with pytest.raises(SystemExit) as ended:
                subscribe.main(argv)
            err = capsys.readouterr().err
            assert ended.value.code == 2 and words in err and err.count("\n") == 1, err


def test_count_must_be_positive(capsys):
    with pytest.raises(SystemExit) as caught:
        subscribe.main(["--count", "0"])
    assert caught.value.code == 2
    assert "--count must be positive" in capsys.readouterr().err


def test_help_explains_the_feed(capsys):
    with pytest.raises(SystemExit) as caught:
        subscribe.main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "two frames" in out and "status" in out and feed.DEFAULT_ENDPOINT in out
    # Every key of both messages, and of a status's source, as the schema has them now (the help
    # had fallen a version behind): a key added to the schema must be added here too.
    schema = feed.load_schema()
    defs = schema["$defs"]
    keys = [*defs["mood"]["properties"], *defs["status"]["properties"]]
    keys += list(defs["status"]["properties"]["source"]["properties"])
    missing = [k for k in keys if not re.search(rf"\b{k}\b", out)]
    assert not missing, missing
    assert f"(schema {schema['$defs']['mood']['properties']['schema']['const']})" in out
