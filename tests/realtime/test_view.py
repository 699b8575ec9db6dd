"""``python -m realtime.view`` in a real browser: headless Chromium shows what the feed says.

An analyzer (``listen --stdin``) hears a calm clip turning energetic; ``realtime.view`` serves
the page from its feed; Chromium opens it.  The page's DOM must show the valence, arousal, state,
top tag and colour of a mood the test's own ZeroMQ subscriber received, the timeline every mood,
and a banner when the source stalls and when the feed stops.  The screenshot is kept in
``build/test-artifacts/`` (the README's picture is one of them).
"""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from bench.reaction import pairs, spliced
from realtime.web.server import colour_hex
from tests.realtime.harness import (
    REPO,
    Lines,
    Subscriber,
    finish,
    free_endpoint,
    free_port,
    listen,
    start,
)
from tests.realtime.web.browser import Browser, chromium

ARTIFACTS = REPO / "build" / "test-artifacts"
SPEEDUP = 1.0  # audio written at the pace it plays, as a sound card gives it (latencies are real)
CHUNK_S = 0.1
LOOP_S = 4.0  # the end of the music, played again until the page has shown it playing

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs Chromium (apt-get install chromium)")

# One atomic read of what the page shows (the page may redraw between two separate reads).
SHOWN = """(() => {
  const text = (id) => document.getElementById(id).textContent;
  const banner = document.getElementById("banner");
  return {
    seq: Number(document.getElementById("state").dataset.seq),
    state: text("state"), valence: text("valence"), arousal: text("arousal"), top: text("top-tag"),
    rgb: document.getElementById("swatch").dataset.rgb,
    tags: [...document.querySelectorAll("#tags li")].map((li) => [li.dataset.tag, li.classList.contains("active")]),
    timeline: timeline.data.datasets[0].data.map((p) => p.x),
    source: text("source"), model: text("model"), banner: banner.hidden ? null : banner.textContent,
  };
})()"""


def write_paced(proc, audio: np.ndarray, rate: int, stop: threading.Event, seen: threading.Event) -> None:
    """Raw float32 PCM to ``proc``'s stdin at SPEEDUP x real time; stdin stays open (a stall).

    The last LOOP_S of the audio repeats until ``seen`` is set: a loaded machine's browser can
    show a mood seconds after the feed sent it, and the music must still play when it does.
    """
    step = int(CHUNK_S * rate)
    loop = audio[-int(LOOP_S * rate) :]
    started, i = time.monotonic(), 0
    while not stop.is_set():
        for at in range(0, len(audio), step):
            if stop.is_set():
                return
            proc.stdin.write(audio[at : at + step].astype("<f4").tobytes())
            proc.stdin.flush()
            i += 1
            time.sleep(max(0.0, started + i * CHUNK_S / SPEEDUP - time.monotonic()))
        if seen.is_set():
            return
        audio = loop


def stalled_after_music(messages) -> bool:
    """The whole clip's moods are out, and the source has stalled since (stdin open, no audio)."""
    moods = sum(t == "mood" for t, _, _ in messages)
    return moods >= 40 and any(
        t == "status" and m["source"]["state"] == "stalled" for t, m, _ in messages[-2:]
    )


def test_the_page_shows_the_feed_a_stall_and_a_lost_feed(shared_data, tmp_path):
    calm, energetic = pairs(1)[0]  # a Q4 clip, then a Q1 one
    audio, rate = spliced(calm, energetic)
    change_s = len(audio) / rate / 2
    audio = audio[int((change_s - 12) * rate) : int((change_s + 14) * rate)]  # 12 s calm, 14 s energetic
    feed, port = free_endpoint(), free_port()
    analyzer = listen("--stdin", "--rate", str(rate), "--hop", "0.5", "--pub", feed, stdin=-1)
    viewer = start("view", "--from", feed, "--web", str(port), quiet=False)
    sub = Subscriber(feed)
    stop = threading.Event()
    seen_playing = threading.Event()
    writer = threading.Thread(
        target=write_paced, args=(analyzer, audio, rate, stop, seen_playing), daemon=True
    )
    try:
        writer.start()
        with Browser(tmp_path / "chromium") as browser:
            browser.open(f"http://127.0.0.1:{port}/")
            # While the music plays (8 s into the energetic part): what the page shows is a mood
            # the feed sent, and nothing is wrong.
            sub.collect(lambda ms: sum(t == "mood" for t, _, _ in ms) >= 36, 60)
            playing = browser.wait_for(
                f"(() => {{ const s = {SHOWN}; return s.seq >= 35 && s; }})()", 10, "mood #35"
            )
            seen_playing.set()  # now the music may end
            browser.screenshot(ARTIFACTS / "web-view.png")
            sub.collect(lambda ms: any(t == "mood" and m["seq"] == playing["seq"] for t, m, _ in ms), 10)
            writer.join(timeout=len(audio) / rate / SPEEDUP + 60)
            assert not writer.is_alive(), "the analyzer did not take its audio"
            # All audio written, the source stalls (stdin open, no audio): the last mood stays
            # on the page, and the banner says what is wrong.
            sub.collect(stalled_after_music, 30)
            last = sub.moods()[-1]
            stalled = browser.wait_for(f"(() => {{ const s = {SHOWN}; return s.seq === {last['seq']} && s.banner && s; }})()",
                                       10, f"mood #{last['seq']} and a banner")  # fmt: skip
            browser.screenshot(ARTIFACTS / "web-view-stalled.png")
            # The analyzer goes away: after a few seconds without messages, the banner says that.
            analyzer.send_signal(signal.SIGINT)
            gone = browser.wait_for(f"(() => {{ const b = {SHOWN}.banner; return b && b.includes('no messages') && b; }})()",
                                    10, "that the feed stopped")  # fmt: skip
    finally:
        stop.set()
        analyzer.stdin.close()
        code, err = finish(analyzer)
        viewer.send_signal(signal.SIGINT)
        view_code, view_err = finish(viewer)
        sub.close()
    assert code == 0, err
    assert view_code == 0, view_err
    moods = sub.moods()
    assert len(moods) >= 40, len(moods)  # 26 s of audio at hop 0.5
    # What the page showed is the feed's mood of the same seq, with the timeline up to it.
    for shown in (playing, stalled):
        mood = next(m for m in moods if m["seq"] == shown["seq"])
        assert shown["state"] == mood["state"], (shown, mood)
        assert abs(float(shown["valence"]) - mood["valence"]) <= 0.005 + 1e-9, (shown, mood)
        assert abs(float(shown["arousal"]) - mood["arousal"]) <= 0.005 + 1e-9, (shown, mood)
        ranked = sorted(mood["tags"], key=lambda name: -mood["tags"][name])
        assert shown["top"] == ranked[0]
        assert [name for name, _ in shown["tags"]] == ranked[:8]
        assert [name for name, on in shown["tags"] if on] == [n for n in ranked[:8] if n in mood["active"]]
        assert shown["rgb"] == colour_hex(mood["valence"], mood["arousal"])
        assert shown["model"] == "default" and shown["source"].startswith("stdin ("), shown
        # Every mood so far, at its stream time (the browser connected before the first).
        so_far = [m["t_stream"] for m in moods if m["seq"] <= shown["seq"]]
        assert shown["timeline"] == so_far, (shown["timeline"], so_far)
    assert playing["banner"] is None and "(running, 16000 Hz)" in playing["source"], playing  # all is well
    assert "stalled" in stalled["banner"], stalled["banner"]
    assert stalled["seq"] == moods[-1]["seq"]
    # The music turned energetic, and the feed the page showed followed it: windows wholly of the
    # energetic clip (ending 3 s after the change or later) more aroused than wholly calm ones.
    calm_a = [m["arousal"] for m in moods if 3 <= m["t_stream"] <= 12]
    energetic_a = [m["arousal"] for m in moods if m["t_stream"] >= 15]
    assert np.mean(energetic_a) > np.mean(calm_a) + 0.3, [m["arousal"] for m in moods]
    assert "no messages from the analyzer" in gone, gone
    lines = view_err.splitlines()
    assert lines[0] == f"moodstream view: from {feed}; open http://127.0.0.1:{port}/  Ctrl-C stops", lines
    assert f"moodstream view: the feed from {feed} is here" in lines
    # Why the feed stopped, as the connection tells it: the analyzer is gone (or going).
    gone_line = [line for line in lines if line.startswith("moodstream view: no feed for 3 s (")][-1]
    assert gone_line.endswith("); waiting for it") and (
        f"nothing listens at {feed}" in gone_line or f"connected to the analyzer at {feed}" in gone_line
    ), lines


def test_a_feed_that_never_comes_is_said_too():
    """A view pointed at a wrong port (or started long before its analyzer) says so on its
    terminal, as it does when a feed it had stops: its page alone would look healthy."""
    feed = free_endpoint()  # nothing publishes there
    viewer = start("view", "--from", feed, "--web", str(free_port()), quiet=False)
    stderr = Lines(viewer)
    note = stderr.wait_for(lambda line: line.startswith("moodstream view: no feed for 3 s"), 60)
    viewer.send_signal(signal.SIGINT)
    code, err = stderr.finish(30)
    assert code == 0, err
    assert (
        note
        == f"moodstream view: no feed for 3 s (nothing listens at {feed}: is the analyzer running?); waiting for it"
    ), err
