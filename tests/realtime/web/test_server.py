"""The web view's server on its own: real HTTP on loopback, messages handed to ``publish``.

(``test_listen_web`` and ``test_view`` run it inside ``listen`` and ``realtime.view`` on real
audio; here, what a browser that connects mid-show gets, and how a stream ends.)
"""

from __future__ import annotations

import argparse
import time
import urllib.request

import pytest

from realtime.web import web_address
from realtime.web.server import HISTORY_S, WebView, colour_hex
from tests.realtime.test_listen_web import events_of
from tests.realtime.web.browser import Browser, chromium


def mood(
    seq: int, t_stream: float, valence: float | None, arousal: float | None, silent: bool = False
) -> dict:
    """The fields of a feed mood message the server reads (it passes the rest on untouched)."""
    return {
        "seq": seq,
        "t_stream": t_stream,
        "valence": valence,
        "arousal": arousal,
        "silent": silent,
        "tags": {},
    }


def test_a_browser_that_connects_mid_show_gets_the_last_five_minutes_then_the_stream_ends():
    web = WebView("127.0.0.1", 0, title="test")
    try:
        sent = [mood(i, 10.0 * i, 0.5, -0.2 + 0.01 * i, silent=i == 3) for i in range(40)]  # 390 s
        for message in sent:
            web.publish("mood", message)
        web.publish("status", {"seq": 0, "source": {"state": "running"}})
        deadline = time.monotonic() + 5
        while web._last.get("status") is None:  # handed over: the server's thread has it
            assert time.monotonic() < deadline
            time.sleep(0.01)
        answer = urllib.request.urlopen(f"http://127.0.0.1:{web.port}/events", timeout=10)
        web.publish("mood", mood(40, 400.0, None, None, silent=True))
        time.sleep(0.2)
    finally:
        web.close()  # the stream ends after what was queued: the read below returns
    events = events_of(answer.read())
    assert [name for name, _ in events] == ["hello", "history", "status", "mood", "colour", "mood", "colour"]
    hello, history = events[0][1], events[1][1]
    assert hello["title"] == "test" and hello["history_s"] == HISTORY_S
    kept = [m for m in sent if m["t_stream"] >= sent[-1]["t_stream"] - HISTORY_S]
    assert history["t_stream"] == [m["t_stream"] for m in kept] and len(kept) == 31
    assert history["arousal"] == [m["arousal"] for m in kept]
    assert events[3][1] == sent[-1] and events[4][1] == {"seq": 39, "rgb": colour_hex(0.5, -0.2 + 0.39)}
    assert events[6][1] == {"seq": 40, "rgb": "#000000"}  # silence: black, as on the lights
    assert web.summary() == "web view: served 1 browser"


def test_a_restarted_analyzer_starts_the_history_over():
    """``realtime.view`` outlives the analyzers it follows: a browser opened after a restart got
    both runs in one history, drawn over each other (12 s back to 3 s)."""
    web = WebView("127.0.0.1", 0, title="test")
    try:
        for seq in range(10):  # a first run, stopped at 12 s
            web.publish("mood", mood(seq, 3.0 + seq, -0.5, -0.5))
        for seq in range(3):  # the next: its seq and stream time start again
            web.publish("mood", mood(seq, 3.0 + seq, 0.5, 0.5))
        web.publish("mood", mood(0, 20.0, 0.1, 0.1))  # and again, its stream time further on
        web.publish("status", {"seq": 0, "source": {"state": "running"}})
        deadline = time.monotonic() + 5
        while web._last.get("status") is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        answer = urllib.request.urlopen(f"http://127.0.0.1:{web.port}/events", timeout=10)
    finally:
        web.close()
    history = events_of(answer.read())[1][1]
    assert (history["t_stream"], history["valence"]) == ([20.0], [0.1])


@pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt-get install chromium)")
def test_the_page_starts_its_timeline_over_when_the_analyzer_restarts(tmp_path):
    """In a real browser: a run's moods, then a new run's, whose stream time may be further on
    than where the last ended (its seq starts again): the timeline holds the new run's alone."""
    web = WebView("127.0.0.1", 0, title="test")
    try:
        with Browser(tmp_path / "chromium") as browser:
            browser.open(web.url)
            browser.wait_for("typeof view !== 'undefined' && view.connected", 20, "the page's event stream")
            for seq in range(5):
                web.publish("mood", mood(seq, 1.0 + seq, -0.5, -0.5))
            browser.wait_for("view.t.length === 5", 20, "the first run")
            for seq in range(2):
                web.publish("mood", mood(seq, 8.0 + seq, 0.5, 0.5))
            shown = browser.wait_for(
                "view.lastMood && view.lastMood.seq === 1 && view.t.length <= 2 && view.t",
                20,
                "the second run",
            )
    finally:
        web.close()
    assert shown == [8.0, 9.0]


def test_a_view_other_machines_may_reach_says_so_and_a_local_one_does_not(caplog):
    for host, warned in (("127.0.0.1", False), ("0.0.0.0", True)):
        caplog.clear()
        WebView(host, 0).close()
        said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert bool(said) == warned and all(
            "other machines may reach, with no password" in m for m in said
        ), said


@pytest.mark.parametrize(
    "text, address",
    [("8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9000", ("::1", 9000)),
     ("localhost:8080", ("localhost", 8080))],
)  # fmt: skip
def test_web_addresses(text, address):
    assert web_address(text) == address


@pytest.mark.parametrize("text", ["", "0", "65536", "http://x:80", "::1:80", ":80", "x:"])
def test_bad_web_addresses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        web_address(text)
