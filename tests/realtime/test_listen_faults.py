"""``listen`` through faults, with real parts: a stream server that dies and comes back, an audio
server (JACK) behind the capture device stopped and restarted, the process itself suspended.

The analyzer must keep its status going, say ``reconnecting`` with the reason, resume the moods
by itself, count the audio it lost as gaps, and stop cleanly whenever it is asked to.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import soundfile as sf

from bench.paced_mic import JackServer
from tests.realtime.harness import LiveStream, Subscriber, finish, free_endpoint, listen
from tests.realtime.paced_mic import jack_server, jack_server_name

CLIP = "4q/audio/Q1/MT0000040632.ogg"


def _last_status(sub: Subscriber) -> dict:
    return sub.statuses()[-1]


def _moods_after(seq: int):
    return lambda messages: any(t == "mood" and m["seq"] > seq for t, m, _ in messages)


def _state(name: str):
    return lambda messages: (
        bool(messages) and any(t == "status" and m["source"]["state"] == name for t, m, _ in messages[-3:])
    )


def _stop(proc) -> tuple[int, str, float]:
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc, timeout_s=20)
    return code, err, time.monotonic() - started


def test_a_stream_that_dies_and_comes_back_is_followed(shared_data):
    with LiveStream(shared_data / CLIP) as server:
        endpoint = free_endpoint()
        sub = Subscriber(endpoint)
        proc = listen("--url", server.url, "--pub", endpoint, "--hop", "0.5", quiet=False)
        try:
            sub.collect(_moods_after(12), 60)  # ~6 s of a healthy stream: no gap (its Ogg pages come
            assert _last_status(sub)["gaps"] == 0, _last_status(sub)  # a second at a time, unevenly)
            # ffmpeg takes a few seconds to probe a live stream before its first audio: starting,
            # not "stalled" (which it was said to be at every start, after a second).
            states = [m["source"]["state"] for m in sub.statuses()]
            assert "stalled" not in states, states
            server.kill()
            sub.collect(_state("reconnecting"), 20)
            away = _last_status(sub)["source"]
            assert away["error"] is None and away["reconnect"]["attempt"] >= 1, away
            assert "ended" in away["reconnect"]["reason"] or "refused" in away["reconnect"]["reason"], away
            last_seq = sub.moods()[-1]["seq"]
            server.start()
            sub.collect(_moods_after(last_seq + 1), 60)  # moods resume, no restart of listen
            assert _last_status(sub)["source"]["state"] in ("running", "reconnecting")
            sub.collect(_state("running"), 10)
            assert _last_status(sub)["source"]["reconnect"] is None
            # A live stream is live without --realtime: the time it was away is a gap (counted
            # once the audio has been that late for CaptureClock.SETTLE_S).
            sub.collect(lambda _: _last_status(sub)["gaps"] >= 1, 20)
            assert _last_status(sub)["gap_seconds"] > 1.0, _last_status(sub)
            assert proc.poll() is None
        finally:
            code, err, _ = _stop(proc)
            sub.close()
        assert code == 0, err
        # Its terminal lines (not a terminal: one per mood) show the lag, as a device's do.
        assert re.search(r"^ *\d+\.\ds +\d+ ms ", err, re.MULTILINE), err
        assert "moodstream: url lost, reconnecting (attempt 1)" in err and "url running again" in err, err
        # --no-reconnect: the drop ends listen with exit 1 and the reason.
        server.kill()
        server.start()
        endpoint = free_endpoint()
        sub = Subscriber(endpoint)
        proc = listen("--url", server.url, "--pub", endpoint, "--no-reconnect")
        try:
            sub.collect(_moods_after(0), 60)
        finally:
            sub.close()
        server.kill()
        code, err = finish(proc, timeout_s=30)
        assert code == 1 and "error: the stream" in err and "ended" in err, err


def test_a_ctrl_c_at_the_terminal_stops_a_file_read_through_ffmpeg_with_exit_0(shared_data, tmp_path):
    """A terminal's Ctrl-C goes to every process of the job: ffmpeg, reading an MP3 (or a --url),
    exited 255 on it, and listen took that for the source failing ("error: ffmpeg exited with code
    255", exit 1); of a live stream, it warned of "damaged data" with an empty message."""
    mp3 = tmp_path / "clip.mp3"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(shared_data / CLIP), "-t", "20", str(mp3)],
                   check=True)  # fmt: skip
    endpoint = free_endpoint()
    sub = Subscriber(endpoint)
    proc = listen("--file", str(mp3), "--realtime", "--pub", endpoint, own_group=True)
    try:
        sub.collect(_moods_after(0), 60)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        code, err = finish(proc, timeout_s=20)
    try:  # the last status: stopped, not ended (the file had not), nor an error
        sub.collect(_state("stopped"), 10)
    finally:
        sub.close()
    assert code == 0 and "error" not in err and "warning" not in err, err
    assert _last_status(sub)["source"]["error"] is None, _last_status(sub)


def test_a_device_whose_audio_server_stops_is_reopened_and_gaps_are_counted(shared_data, tmp_path):
    audio, rate = sf.read(shared_data / CLIP, dtype="float32")
    (tmp_path / "first").mkdir()
    server = jack_server(tmp_path / "first")  # skips where none can run
    endpoint = free_endpoint()
    sub = Subscriber(endpoint)
    proc = None
    try:
        mic = server.microphone(audio, rate)
        proc = listen("--device", mic.device, "--pub", endpoint, "--hop", "0.5", env=mic.env)
        sub.collect(_moods_after(1), 60)
        # Suspended for 3 s (a stalled machine): the audio of those seconds is counted as a gap.
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3)
        proc.send_signal(signal.SIGCONT)
        sub.collect(lambda _: sub.statuses() and _last_status(sub)["gaps"] >= 1, 20)
        status = _last_status(sub)
        assert 2.0 < status["gap_seconds"] < 6.0, status
        # The audio server stops: the device is gone.  Status goes on, saying why.
        server.close()
        sub.collect(_state("reconnecting"), 20)
        away = _last_status(sub)["source"]
        assert away["error"] is None and "input device 'moodmic'" in away["reconnect"]["reason"], away
        # A failed attempt says the device does not open yet, with PortAudio's reason (not the
        # first open's advice to close another program or pick another device).
        sub.collect(lambda _: _last_status(sub)["source"]["reconnect"]["attempt"] >= 2, 20)
        reason = _last_status(sub)["source"]["reconnect"]["reason"]
        assert reason.startswith("input device 'moodmic' does not open yet (") and "PaErrorCode" in reason, (
            reason
        )
        last_seq = sub.moods()[-1]["seq"] if sub.moods() else -1
        # It comes back (a new server, the same device name): the device is reopened by itself.
        (tmp_path / "second").mkdir()
        server = JackServer(tmp_path / "second", name=jack_server_name())
        server.microphone(audio, rate)
        sub.collect(_moods_after(last_seq + 1), 60)
        sub.collect(_state("running"), 10)
        assert proc.poll() is None
        # Gone again, and listen is stopped during the outage: a clean exit, no PortAudio abort.
        server.close()
        sub.collect(_state("reconnecting"), 20)
        code, err, stop_s = _stop(proc)
        assert code == 0 and "Assertion" not in err, err
        # PortAudio's lines for each failed step of each failed open are not passed on.
        assert "Expression '" not in err, err
        assert stop_s < 3.0
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        server.close()
        sub.close()


def test_a_jack_host_api_device_whose_server_stops_ends_listen_with_what_to_do(tmp_path):
    """PortAudio's own JACK devices (``system``) cannot be reopened once their server stops (its
    JACK client went with it, and the dead stream's close hangs in PortAudio): not retried for
    ever with "Insufficient memory", but exit 1 with the reason and what works instead."""
    server = jack_server(tmp_path)  # skips where none can run
    endpoint = free_endpoint()
    sub = Subscriber(endpoint)
    proc = None
    try:
        proc = listen("--device", "system", "--pub", endpoint, "--hop", "0.5", env=server.env)
        sub.collect(_moods_after(1), 60)  # the dummy backend's silence: moods, marked silent
        server.close()
        code, err = finish(proc, timeout_s=30)
        assert code == 1, err
        assert "error: no audio from input device 'system'" in err and "--device jack" in err, err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        server.close()
        sub.close()


def test_a_suspended_listen_reports_the_lag_it_really_has(shared_data, tmp_path):
    """A paced file whose reader was suspended: the moods after it carry the real lag (the audio
    was due seconds ago), not the time since it was finally read."""
    endpoint = free_endpoint()
    sub = Subscriber(endpoint)
    proc = listen("--file", str(shared_data / CLIP), "--realtime", "--pub", endpoint, "--hop", "0.5")
    try:
        sub.collect(_moods_after(1), 60)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(3)
        # Stamped before the signal: on a loaded machine this process may wait for a core after
        # sending it, while the resumed analyzer publishes the moods it owes.
        resumed = time.time()
        proc.send_signal(signal.SIGCONT)
        sub.collect(lambda msgs: any(t == "mood" and r > resumed + 0.2 for t, _, r in msgs), 20)
        after = [m for t, m, r in sub.messages if t == "mood" and r > resumed]
        assert max(m["latency_ms"] for m in after) > 2500, [m["latency_ms"] for m in after]
    finally:
        code, err, _ = _stop(proc)
        sub.close()
    assert code == 0, err
