"""``listen --web``: the page and its event stream, with real HTTP clients on loopback.

Twenty browsers' worth of clients watch one analyzer (nineteen read, one never does) while a
second analyzer plays the same clip unwatched: every reading client gets exactly the ZeroMQ
feed's messages, and the watched feed keeps the unwatched one's timing.  Bad ``--web`` values
are one-line errors, said before the model loads.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from importlib import resources

import numpy as np
import pytest
import soundfile as sf

from realtime.web.server import ASSETS, SECURITY_HEADERS, colour_hex
from tests.realtime.harness import Subscriber, ended, finish, free_endpoint, free_port, listen, run, start

CLIP = "4q/audio/Q1/MT0000040632.ogg"
CLIENTS = 20


def events_of(body: bytes) -> list[tuple[str, dict]]:
    """Server-Sent Events -> [(event, data)]; comments (keepalives) skipped."""
    events = []
    for block in body.decode("utf-8").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


def wait_listening(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port}"
            time.sleep(0.05)


def test_twenty_browsers_get_the_feed_and_a_stuck_one_costs_nothing(shared_data, tmp_path):
    audio, rate = sf.read(shared_data / CLIP, dtype="float32")
    path = tmp_path / "clip.wav"
    sf.write(path, audio[: 12 * rate], rate)  # 12 s: enough to fill a stuck client's buffers
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    endpoints = [free_endpoint(), free_endpoint()]
    subs = [Subscriber(e) for e in endpoints]
    common = ("--file", str(path), "--realtime", "--hop", "0.25")
    watched = listen(*common, "--pub", endpoints[0], "--web", str(port))
    alone = listen(*common, "--pub", endpoints[1])
    bodies: list[bytes] = []
    stuck = socket.socket()
    try:
        wait_listening(port)  # bound before the model loads: the clients are there before the music
        # The page and its assets, as shipped, with the security headers.
        for route, (name, kind) in ASSETS.items():
            with urllib.request.urlopen(url + route, timeout=10) as answer:
                assert answer.status == 200 and answer.headers["Content-Type"] == kind
                assert answer.read() == (resources.files("realtime.web") / "static" / name).read_bytes()
                assert all(answer.headers[k] == v for k, v in SECURITY_HEADERS.items()), dict(answer.headers)
        # A page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) reads nothing.
        forged = urllib.request.Request(url + "/events", headers={"Host": f"attacker.example:{port}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(forged, timeout=10)
        assert refused.value.code == 403
        # One client asks for the stream and never reads it: a frozen browser tab.
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(f"GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        readers = [
            threading.Thread(
                target=lambda: bodies.append(urllib.request.urlopen(url + "/events", timeout=120).read())
            )
            for _ in range(CLIENTS - 1)
        ]
        for reader in readers:
            reader.start()
        for sub in subs:
            sub.collect(ended, 90)
        (code, err), (code_alone, err_alone) = finish(watched), finish(alone)
        assert code == code_alone == 0, err + err_alone
        for reader in readers:
            reader.join(timeout=10)
        for sub in subs:
            sub.drain()
    finally:
        stuck.close()
        for sub in subs:
            sub.close()
    # Every reading client got the feed's messages, exactly, each mood followed by its colour.
    assert len(bodies) == CLIENTS - 1
    feed = [(t, m) for t, m, _ in subs[0].messages]
    moods = [m for t, m in feed if t == "mood"]
    for body in bodies:
        events = events_of(body)
        assert [e for e, _ in events[:2]] == ["hello", "history"], events[:2]
        assert events[0][1]["states"]["energetic-happy"] == colour_hex(0.6, 0.6, vivid=True)
        stream = [(e, d) for e, d in events[2:] if e in ("mood", "status")]
        assert stream[-len(feed) :] == feed  # (a client may have connected after the first status)
        assert [d for e, d in events if e == "colour"][-len(moods) :] == [
            {"seq": m["seq"], "rgb": colour_hex(m["valence"], m["arousal"])} for m in moods
        ]
    # The watched analyzer kept the unwatched one's timing.  Both share the CPU with each other
    # and the other test workers, so the margins catch a wait, not a percentage (see the outputs'
    # test of the same name); what serving costs in CPU is bench's business.
    alone_moods = subs[1].moods()
    assert [m["t_stream"] for m in moods] == [m["t_stream"] for m in alone_moods] and len(moods) > 25
    lat_watched = np.array([m["latency_ms"] for m in moods])
    lat_alone = np.array([m["latency_ms"] for m in alone_moods])
    report = f"latency ms, watched: {np.round(lat_watched)}, alone: {np.round(lat_alone)}"
    assert np.median(lat_watched) < 1.5 * np.median(lat_alone) + 100, report
    # One hop may stall on its own; a browser that held the engine would hold every later hop.
    assert (lat_watched > lat_alone.max() + 1000).sum() <= 1, report
    assert f"moodstream: web view at {url}/" in err
    # The stuck client's queue overflowed (it is what the others did not wait for).
    served = [line for line in err.splitlines() if line.startswith("moodstream: web view: served")]
    assert served and served[0].startswith(f"moodstream: web view: served {CLIENTS} browsers; "), err
    assert int(served[0].split("; ")[1].split()[0]) > 0, served


def test_bad_web_values_are_one_line_errors_before_the_model_loads(shared_data, tmp_path):
    clip = str(shared_data / CLIP)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    in_use = f"port {port} on 127.0.0.1 is in use (another moodstream view or web server?); choose another with --web PORT"
    cases = {
        str(port): f"error: --web: {in_use}",
        "no-such-host.invalid:8080": "error: --web: cannot serve on host 'no-such-host.invalid': ",
        "192.0.2.1:8080": "error: --web: 192.0.2.1 is not an address of this machine",
        "70000": "error: argument --web: '70000': the port must be a number from 1 to 65535",
        "a:b:8080": "error: argument --web: 'a:b:8080' is not [HOST:]PORT",
    }
    try:
        for value, said in cases.items():
            started = time.monotonic()
            result = run("listen", "--file", clip, "--web", value, "--pub", free_endpoint())
            took_s = time.monotonic() - started
            assert result.returncode == 2, (value, result.stderr)
            last = result.stderr.strip().splitlines()[-1]
            assert last.startswith(said), (value, last)
            assert took_s < 10 and "Traceback" not in result.stderr, (value, took_s, result.stderr)
        # realtime.view says the same.
        viewer = start("view", "--web", str(port), quiet=False)
        code, err = finish(viewer, 30)
        assert code == 2 and err.strip() == f"error: --web: {in_use}", err
    finally:
        taken.close()
