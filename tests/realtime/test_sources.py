"""Sources against real components: PortAudio via a virtual ALSA mic, soundfile, pipes, ffmpeg over HTTP.

Device tests run in a subprocess because PortAudio reads ALSA's configuration (the virtual
mic) once, when sounddevice is imported.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench.paced_mic import PacedMic
from realtime import ogg
from realtime.ring import RingBuffer
from realtime.sources import FileSource, SourceError, StdinSource, UrlSource, open_file
from tests.realtime.paced_mic import RATE_HZ, on_a_paced_mic

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIP_RATE_HZ = 16000


@pytest.fixture(scope="module")
def clip(music_clip) -> np.ndarray:
    """The shared clip decoded by libsndfile: (frames, 1) float32."""
    samples, rate_hz = sf.read(music_clip, dtype="float32", always_2d=True)
    assert rate_hz == CLIP_RATE_HZ and samples.shape[1] == 1
    return samples


def drain(ring: RingBuffer, source, timeout_s: float = 20.0) -> np.ndarray:
    """Read the ring until the source has finished and the ring is empty (bounded in time)."""
    chunks = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        finished = source.finished  # sampled before reading, so no frame written after it is missed
        data, _ = ring.read()
        chunks.append(data)
        if finished and ring.available() == 0:
            return np.concatenate(chunks)
        time.sleep(0.0005)
    source.stop()
    pytest.fail(f"{source!r} did not finish within {timeout_s} s")


def wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.005)


def timed_stop(source) -> float:
    t0 = time.perf_counter()
    source.stop()
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- devices

# Runs in a subprocess under the virtual mic's env; prints one JSON line, saves the frames.
_DEVICE_PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import sounddevice as sd
    from realtime.ring import RingBuffer
    from realtime.sources import DeviceSource, SourceError, list_devices

    args = json.loads(sys.argv[1])
    result = {"table": list_devices(), "default_index": sd.query_devices(kind="input")["index"]}
    device = args["device"]
    if isinstance(device, str) and device.startswith("index-of:"):
        device = next(d["index"] for d in sd.query_devices() if d["name"] == device[9:])
    try:
        src = DeviceSource(device, channels=args.get("channels"))
        result.update(name=src.name, index=src.index, channels=src.channels)
        result["reported_rate_hz"] = src.sample_rate_hz
        if args.get("reconfigure"):
            # The device changes after PortAudio enumerated it; ALSA re-reads a replaced
            # config file on the next open.
            path, text = args["reconfigure"]
            with open(path + ".new", "w") as f:
                f.write(text)
            os.replace(path + ".new", path)
        ring = RingBuffer(args["capacity_frames"], src.channels)
        stamps = []  # (stream index after the block, its capture time) of every block written
        write = ring.write
        ring.write = lambda block, capture=None, overflow=False: (
            write(block, capture, overflow), stamps.append((ring.write_index, capture)))[0]
        src.start(ring)
        if args.get("hold_gil_s"):
            # Once the music flows, hold the GIL as a long call in another thread would: PortAudio's
            # callback (Python) waits meanwhile.  ctypes.PyDLL keeps the GIL during the C call.
            while ring.available() < src.sample_rate_hz // 2:
                time.sleep(0.002)
            import ctypes
            ctypes.PyDLL(None).usleep(int(args["hold_gil_s"] * 1e6))
    except SourceError as exc:
        result["source_error"] = str(exc)
        print(json.dumps(result))
        sys.exit(0)
    result["sample_rate_hz"] = src.sample_rate_hz
    want = args["frames"]
    deadline = time.monotonic() + args["timeout_s"]
    # A full ring (dropped > 0) will never reach `want`: the unpaced mic outruns any reader.
    ages = []  # how old the newest frame is, in ms, every few ms: what a window waits for
    while time.monotonic() < deadline and ring.available() < want and not src.finished and not ring.dropped_frames:
        time.sleep(0.002)
        if ring.write_index:
            ages.append(1e3 * (time.time() - ring.last_capture[1]))
    result["age_ms_p50"] = float(np.median(ages)) if ages else None
    if args.get("wait_after_s"):
        time.sleep(args["wait_after_s"])
    read_wall = time.time()
    t0 = time.perf_counter()
    src.stop()
    result["stop_s"] = time.perf_counter() - t0
    data, first_index = ring.read()
    np.save(args["out"], data)
    result.update(
        state=src.state, error=src.error, write_index=ring.write_index, dropped=ring.dropped_frames,
        overflows=ring.overflows, last_capture=ring.last_capture, read_wall=read_wall,
        stamps=stamps, buffer_s=src.buffer_s,
    )
    print(json.dumps(result))
    """
)


def probe_device(
    env: dict,
    tmp_path: Path,
    device,
    frames: int,
    capacity_frames: int,
    *,
    expect_error: bool = False,
    **extra,
) -> dict:
    """Open ``device`` with DeviceSource in a subprocess under ``env``; returns its report + frames.
    A device that does not open fails the test with the source's error unless ``expect_error``,
    where the report holds it as ``source_error`` (and one that opens fails it)."""
    args = dict(
        device=device,
        frames=frames,
        capacity_frames=capacity_frames,
        timeout_s=10,
        out=str(tmp_path / "got.npy"),
    )
    args.update(extra)
    proc = subprocess.run(
        [sys.executable, "-c", _DEVICE_PROBE, json.dumps(args)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"device probe failed:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "source_error" not in result:
        result["data"] = np.load(args["out"])
    elif not expect_error:
        pytest.fail(f"device {device!r} did not open: {result['source_error']}")
    if expect_error and "source_error" not in result:
        pytest.fail(f"device {device!r} opened; an error was expected")
    return result


def test_device_by_name_delivers_the_clip_exactly(virtual_mic, clip, tmp_path):
    # Two different channels, so an interleaving mistake cannot go unnoticed.
    stereo = np.concatenate([clip, -0.5 * clip], axis=1)
    env = virtual_mic(stereo, name="testmic")
    frames = 5 * CLIP_RATE_HZ
    before = time.time()
    got = probe_device(env, tmp_path, "TestMic", frames=frames, capacity_frames=2 * frames)

    assert got["name"] == "testmic" and got["channels"] == 2  # default: min(2, max input channels)
    assert got["sample_rate_hz"] == got["reported_rate_hz"]  # the native rate opened
    assert got["data"].shape[0] >= frames
    np.testing.assert_array_equal(got["data"][:frames], stereo[:frames])
    assert got["state"] == "ended" and got["error"] is None
    assert got["stop_s"] < 0.5
    # The capture time is the wall clock of the last frame written (ADC time mapped to time.time()).
    end_index, capture_wall = got["last_capture"]
    assert end_index == got["write_index"]
    assert before < capture_wall < got["read_wall"] + 0.5


def _ramp_mismatch(played: np.ndarray, ramp: np.ndarray) -> str | None:
    """Where ``played`` stops following ``ramp`` and by how much: lost frames show as the ramp
    running ahead, repeated ones as it falling behind.  None when it follows it exactly."""
    differ = np.flatnonzero(played != ramp[: len(played)])
    if len(differ) == 0:
        return None
    i = int(differ[0])
    shift = int(np.argmin(np.abs(ramp - played[i]))) - i  # where its value sits in the ramp
    return f"from played sample {i} on, {shift:+d} frames against the ramp ({len(differ)} samples differ)"


def test_paced_device_loses_nothing_while_its_callback_waits(tmp_path):
    # A ramp: every sample differs from the next by one step, so a lost or repeated block shows.
    ramp = np.linspace(-0.9, 0.9, 4 * RATE_HZ, dtype=np.float32)
    frames = 3 * RATE_HZ

    def check(mic: PacedMic, folder: Path) -> None:
        got = probe_device(
            mic.env, folder, mic.device, frames=frames, capacity_frames=2 * frames, hold_gil_s=0.3
        )
        # The device's buffer (DEVICE_BUFFER_S) held the audio while the callback waited 0.3 s (the
        # rest of the second's buffer is for the loaded test machine's own stalls); PortAudio's
        # "low" latency (one 21 ms period here) overflows.
        assert (got["overflows"], got["dropped"]) == (0, 0), got
        # And the buffer came in short periods: the newest frame is a period or two old (21 ms
        # each), not a quarter of the buffer (PortAudio's own choice: 256 ms).
        assert got["age_ms_p50"] < 60, got["age_ms_p50"]
        # Each block's capture time follows the device's clock, the ones that waited too: stamped
        # when the callback ran, the first block after the wait read 0.3 s late.  (Tens of ms of
        # slack: the clock's offset is the least seen so far, which the first calls of a loaded
        # machine may overstate.)
        index, capture = np.array(got["stamps"]).T
        off_clock_s = np.abs(np.diff(capture) - np.diff(index) / RATE_HZ)
        assert off_clock_s.max() < 0.1, off_clock_s.max()
        captured = got["data"][:, 0]
        assert mic.playing.is_set() and captured.any(), f"the player never played: {mic.error}"
        start = int(np.flatnonzero(captured)[0])  # silence until the player starts, a period in
        played = captured[start:]
        assert 2.5 * RATE_HZ < len(played) <= len(ramp)
        # Where and by how much, with the JACK logs: once, in a loaded fresh-clone run, the ramp
        # ran one JACK period ahead with no overflow counted here (and no log kept to say why).
        mismatch = _ramp_mismatch(played, ramp)
        assert mismatch is None, mismatch

    on_a_paced_mic(tmp_path, ramp, check)


def test_a_device_with_long_periods_gets_portaudios_low_latency(tmp_path):
    # A JACK server with 4096-frame periods (85 ms): the device gives the second's buffer in long
    # periods, which a window would wait for; the source opens it again with PortAudio's low
    # latency (here the same periods: they are the server's) and captures on.
    def check(mic: PacedMic, folder: Path) -> None:
        got = probe_device(mic.env, folder, mic.device, frames=RATE_HZ, capacity_frames=4 * RATE_HZ)
        assert got["buffer_s"] is None, got
        assert (got["overflows"], got["dropped"]) == (0, 0) and len(got["data"]) >= RATE_HZ
        assert np.diff([i for i, _ in got["stamps"]]).max() == 4096

    on_a_paced_mic(tmp_path, np.full(3 * RATE_HZ, 0.25, dtype=np.float32), check, period_frames=4096)


def test_device_by_index_mono_and_default(virtual_mic, clip, tmp_path):
    env = virtual_mic(clip, name="testmic")
    frames = 3 * CLIP_RATE_HZ
    got = probe_device(
        env, tmp_path, "index-of:testmic", frames=frames, capacity_frames=2 * frames, channels=1
    )
    assert got["name"] == "testmic" and got["channels"] == 1
    np.testing.assert_array_equal(got["data"][:frames], clip[:frames])

    default = probe_device(env, tmp_path, None, frames=1024, capacity_frames=4096, channels=1)
    assert default["index"] == default["default_index"]


def test_exact_name_wins_and_ambiguous_name_lists_matches(virtual_mic, clip, tmp_path):
    env = virtual_mic(clip[:4096], name="testmic")
    env = virtual_mic(clip[:4096], name="testmic2", base_env=env)
    exact = probe_device(env, tmp_path, "testmic", frames=1024, capacity_frames=4096, channels=1)
    assert exact["name"] == "testmic"

    ambiguous = probe_device(
        env, tmp_path, "estmi", frames=1024, capacity_frames=4096, channels=1, expect_error=True
    )
    message = ambiguous["source_error"]
    assert "ambiguous" in message and "testmic" in message and "testmic2" in message


def test_tiny_ring_counts_dropped_frames_and_keeps_what_fit(virtual_mic, clip, tmp_path):
    env = virtual_mic(clip, name="testmic")
    got = probe_device(
        env, tmp_path, "testmic", frames=4096, capacity_frames=4096, channels=1, wait_after_s=0.3
    )
    # The virtual mic is unpaced and nobody reads: the ring fills and later blocks are dropped,
    # never overwriting what is unread.
    assert got["dropped"] > 0
    assert got["write_index"] <= 4096
    np.testing.assert_array_equal(got["data"], clip[: got["write_index"]])


def test_unknown_device_error_lists_input_devices(virtual_mic, clip, tmp_path):
    env = virtual_mic(clip[:4096], name="testmic")
    for device in ("no-such-mic", 999):
        got = probe_device(env, tmp_path, device, frames=1024, capacity_frames=4096, expect_error=True)
        message = got["source_error"]
        assert "no input device" in message and "testmic" in message, message
    assert "testmic" in got["table"] and "ALSA" in got["table"]


def _rate_restricted_after_enumeration(virtual_mic, samples, name: str, only_rate_hz: int):
    """(env, reconfigure): a mic PortAudio enumerates as any-rate (default 44100 Hz), and the
    config that restricts it to ``only_rate_hz`` before the stream opens.

    PortAudio reports a device's default rate with ALSA resampling disabled, so a device that
    is rate-restricted from the start reports the one rate that works; the fallback only
    matters when the device changes between enumeration and open (another program grabbed it
    at a fixed rate, a reconfigured sound server), which is what this reproduces.
    """
    restricted_env = virtual_mic(samples, name=name, only_rate_hz=only_rate_hz)
    conf = restricted_env["ALSA_CONFIG_PATH"].split(":")[-1]
    restricted_text = Path(conf).read_text()
    env = virtual_mic(samples, name=name)  # the same name rewrites the same file, unrestricted
    assert env["ALSA_CONFIG_PATH"].split(":")[-1] == conf
    return env, [conf, restricted_text]


def test_device_falls_back_to_a_rate_it_can_open(virtual_mic, clip, tmp_path):
    env, reconfigure = _rate_restricted_after_enumeration(virtual_mic, clip, "ratemic", 48000)
    frames = 2 * CLIP_RATE_HZ
    got = probe_device(
        env,
        tmp_path,
        "ratemic",
        frames=frames,
        capacity_frames=2 * frames,
        channels=1,
        reconfigure=reconfigure,
    )
    assert got["reported_rate_hz"] == 44100, "premise: the reported default rate is one that now fails"
    assert got["sample_rate_hz"] == 48000  # the first fallback
    np.testing.assert_array_equal(got["data"][:frames], clip[:frames])


def test_device_that_opens_at_no_rate_is_a_clear_error(virtual_mic, clip, tmp_path):
    # 11025 Hz is in no fallback list, so every rate tried fails.
    env, reconfigure = _rate_restricted_after_enumeration(virtual_mic, clip, "oddmic", 11025)
    got = probe_device(
        env,
        tmp_path,
        "oddmic",
        frames=1024,
        capacity_frames=4096,
        channels=1,
        reconfigure=reconfigure,
        expect_error=True,
    )
    message = got["source_error"]
    assert "cannot open input device 'oddmic'" in message and "any sample rate" in message
    assert "tried 44100, 48000, 96000, 32000, 22050, 16000 Hz" in message


def test_virtual_mic_restricted_from_the_start_reports_its_only_rate(virtual_mic, clip, tmp_path):
    env = virtual_mic(clip, name="mic48k", only_rate_hz=48000)
    got = probe_device(env, tmp_path, "mic48k", frames=4096, capacity_frames=8192, channels=1)
    assert got["reported_rate_hz"] == got["sample_rate_hz"] == 48000
    np.testing.assert_array_equal(got["data"][:4096], clip[:4096])


def test_device_that_dies_after_start_reports_error(virtual_mic, clip, tmp_path):
    env = virtual_mic(clip, name="flakymic", fail_after_start=True)
    # The error comes when the plugin writes its first period's copy, after PortAudio has read
    # ahead up to its buffer (DEVICE_BUFFER_S): a ring that held less would fill first.
    got = probe_device(
        env, tmp_path, "flakymic", frames=10**9, capacity_frames=1 << 20, channels=1, timeout_s=5
    )
    assert got["state"] == "error"
    assert "flakymic" in got["error"] and "stopped delivering" in got["error"]


# --------------------------------------------------------------------------- files


def test_file_missing_directory_and_corrupt_are_clear_errors(tmp_path):
    missing = tmp_path / "nope.ogg"
    with pytest.raises(SourceError, match="not found") as info:
        FileSource(missing)
    assert str(missing) in str(info.value)

    with pytest.raises(SourceError, match="not a regular file"):
        FileSource(tmp_path)

    corrupt = tmp_path / "corrupt.ogg"
    corrupt.write_bytes(np.random.default_rng(0).bytes(8192))
    with pytest.raises(SourceError, match="cannot decode") as info:
        FileSource(corrupt)
    assert str(corrupt) in str(info.value) and "Format not recognised" in str(info.value)


def test_portaudios_failed_steps_are_dropped_from_stderr_and_nothing_else_is():
    """A failed open makes PortAudio write a line per failed step on C's stderr (4-8 at every
    reconnection attempt): dropped.  What other threads write meanwhile goes on, however much."""
    script = textwrap.dedent(
        """
        import os, subprocess, sys, threading
        from realtime.sources import _portaudio_steps_dropped
        with _portaudio_steps_dropped():
            os.write(2, b"Expression 'ret' failed in 'src/hostapi/alsa/pa_linux_alsa.c', line: 1736\\n")
            other = threading.Thread(target=lambda: os.write(2, b"x" * 100_000 + b"\\n"))
            other.start()
            other.join()
            sys.stderr.write("moodstream: a line of ours\\n")
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); print('child ok')"])
        child.wait()
        sys.stderr.write(f"after, child {child.returncode}\\n")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "Expression" not in done.stderr
    assert ("x" * 100_000 + "\n") in done.stderr and "moodstream: a line of ours\n" in done.stderr
    assert done.stderr.endswith("after, child 0\n") and done.stdout == "child ok\n"


def test_file_fast_mode_never_drops_with_a_tiny_ring(music_clip, clip):
    src = FileSource(music_clip)
    assert (src.kind, src.sample_rate_hz, src.channels) == ("file", CLIP_RATE_HZ, 1)
    ring = RingBuffer(1000, 1)  # smaller than one 2048-frame block
    src.start(ring)
    got = drain(ring, src)
    assert ring.dropped_frames == 0
    np.testing.assert_array_equal(got, clip)
    assert src.state == "ended" and src.error is None
    assert timed_stop(src) < 0.5


def test_a_file_whose_damaged_stretch_libsndfile_skips_ends_with_a_warning(clip, tmp_path):
    """libsndfile skips a garbled stretch of an Ogg Vorbis file without a word, only shorter than
    the length the file says it has (its last page's position): the source says so at the end."""
    vorbis = tmp_path / "clip.ogg"
    sf.write(vorbis, clip, CLIP_RATE_HZ, format="OGG", subtype="VORBIS")
    data = bytearray(vorbis.read_bytes())
    third = len(data) // 3
    data[third : third + len(data) // 10] = bytes(len(data) // 10)  # a tenth of it zeroed
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(bytes(data))
    for path in (vorbis, damaged):
        src = FileSource(path)
        ring = RingBuffer(2**16, 1)
        src.start(ring)
        got = drain(ring, src)
        assert src.state == "ended" and src.error is None  # the rest was played: not an error
        if path is vorbis:
            assert len(got) == len(clip) and src.warning is None
    said_s = len(clip) / CLIP_RATE_HZ
    assert len(got) < len(clip) - CLIP_RATE_HZ
    assert src.warning == (
        f"{damaged} decoded to {len(got) / CLIP_RATE_HZ:.1f} s of the {said_s:.1f} s it says it holds: "
        "a damaged stretch of it was skipped"
    )
    # A FLAC written to a pipe cannot say its length (libsndfile gives the largest count): none.
    piped = tmp_path / "piped.flac"
    with piped.open("wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(vorbis), "-t", "1", "-f", "flac", "-"],
                       stdout=out, check=True)  # fmt: skip
    assert sf.info(piped).frames > 2**62 and FileSource(piped).frames_said is None


def test_a_garbled_stretch_of_ogg_opus_that_libsndfile_decodes_past_ends_with_a_warning(
    music_clip, clip, tmp_path
):
    """libsndfile decodes an Ogg Opus file past a garbled stretch at its full length, without a
    word: the pages' checksums say it (``realtime.ogg``)."""
    data = bytearray(music_clip.read_bytes())  # the shared clip is Ogg Opus
    data[len(data) // 2] ^= 0x55
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(bytes(data))
    src = FileSource(damaged)
    ring = RingBuffer(2**16, 1)
    src.start(ring)
    assert len(drain(ring, src)) == len(clip) and src.state == "ended" and src.error is None
    assert src.warning == (
        f"{damaged} has 1 damaged stretch (Ogg pages whose checksums fail), which libsndfile decoded "
        "past: what they held is missing or garbled"
    )


def test_a_damaged_mp3_is_read_past_its_damage_and_libsndfile_alone_says_where_it_stopped(
    music_clip, clip, tmp_path
):
    """At a damaged stretch of an MP3 that its mpg123 cannot resync in, libsndfile fails, the
    rest unread (``analyze`` exited 1 two thirds into a 30 s file): ``open_file`` has ffmpeg read
    MP3s, which skips the damage and says so; without ffmpeg, the error says where and why."""
    mp3 = tmp_path / "clip.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(music_clip), "-c:a", "libmp3lame", "-b:a", "128k",
         str(mp3)],
        check=True,
    )  # fmt: skip
    data = bytearray(mp3.read_bytes())
    data[len(data) // 3 : len(data) // 3 + len(data) // 20] = bytes(len(data) // 20)
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(bytes(data))
    said_s = len(clip) / CLIP_RATE_HZ
    for path in (mp3, damaged):
        src = open_file(path, rate_hz=CLIP_RATE_HZ)
        assert isinstance(src, UrlSource) and src.kind == "file"
        ring = RingBuffer(2**18, 1)
        src.start(ring)
        got_s = len(drain(ring, src)) / CLIP_RATE_HZ
        assert src.state == "ended" and src.error is None
        if path is mp3:
            assert abs(got_s - said_s) < 0.05 and src.warning is None, (got_s, src.warning)
    assert said_s * 0.85 < got_s < said_s - 0.5  # all but the damaged twentieth
    assert (src.warning or "").startswith(f"ffmpeg met damaged data in {damaged} ("), src.warning
    src = FileSource(damaged)  # what open_file falls back to without ffmpeg
    ring = RingBuffer(2**18, 1)
    src.start(ring)
    stopped_s = len(drain(ring, src)) / src.sample_rate_hz
    assert stopped_s < said_s * 0.4 and src.error == (
        f"libsndfile cannot decode {damaged} past {stopped_s:.1f} s (Unspecified internal error): the file is "
        "damaged there; with ffmpeg installed it is read past the damage"
    )


def test_a_flac_damaged_or_cut_short_is_read_through_ffmpeg_and_a_wav_cut_short_says_so(clip, tmp_path):
    """At a FLAC's lost sync libsndfile fails as at an MP3's (exit 1, the rest unread): ffmpeg reads
    FLACs, checked against the length the file says.  A WAV or AIFF cut short (a copy that did not
    finish) read as a whole, shorter file, without a word: its header's length says so."""
    flac = tmp_path / "clip.flac"
    sf.write(flac, clip, CLIP_RATE_HZ)
    data = flac.read_bytes()
    n = len(data)
    damaged, cut = tmp_path / "damaged.flac", tmp_path / "cut.flac"
    damaged.write_bytes(data[: n // 3] + bytes(n // 20) + data[n // 3 + n // 20 :])
    cut.write_bytes(data[: n // 2])
    said_s = len(clip) / CLIP_RATE_HZ
    for path in (flac, damaged, cut):
        src = open_file(path)
        assert isinstance(src, UrlSource) and src.sample_rate_hz == CLIP_RATE_HZ  # its own rate
        ring = RingBuffer(2**18, 1)
        src.start(ring)
        got_s = len(drain(ring, src)) / CLIP_RATE_HZ
        assert src.state == "ended" and src.error is None, src.error
        if path is flac:
            assert abs(got_s - said_s) < 0.01 and src.warning is None, (got_s, src.warning)
        else:
            assert got_s < said_s - 1.0 and src.warning is not None, (path.name, got_s)
            assert src.warning.startswith(f"ffmpeg met damaged data in {path} (") or src.warning == (
                f"{path} decoded to {got_s:.1f} s of the {said_s:.1f} s it says it holds: a damaged stretch "
                "was skipped, or the file is cut short"
            ), src.warning
    for fmt, suffix in (("WAV", "wav"), ("AIFF", "aiff")):
        whole = tmp_path / f"clip.{suffix}"
        sf.write(whole, clip, CLIP_RATE_HZ, format=fmt)
        cut = tmp_path / f"cut.{suffix}"
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 4])
        for path in (whole, cut):
            src = FileSource(path)
            ring = RingBuffer(2**18, 1)
            src.start(ring)
            got_s = len(drain(ring, src)) / CLIP_RATE_HZ
            assert (src.warning is None) == (path is whole), src.warning
        assert src.warning == (
            f"{cut} ends after {got_s:.1f} s of the {said_s:.1f} s its header says it holds: the file is cut "
            "short (a copy or a download that did not finish?)"
        )
    piped = tmp_path / "piped.wav"  # written to a pipe, its header says no length: no claim
    with piped.open("wb") as out:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(whole), "-f", "wav", "-"],
                       stdout=out, check=True)  # fmt: skip
    src = FileSource(piped)
    assert src.frames_said == len(clip) and not src.cut_short


def test_file_realtime_paces_to_the_wall_clock(clip, tmp_path):
    excerpt = tmp_path / "one_second.wav"
    sf.write(excerpt, clip[:CLIP_RATE_HZ], CLIP_RATE_HZ, subtype="FLOAT")
    src = FileSource(excerpt, realtime=True, blocksize=1024)
    ring = RingBuffer(4 * CLIP_RATE_HZ, 1)
    t0 = time.perf_counter()
    src.start(ring)
    wait_for(lambda: src.finished, 5.0, "the realtime file to end")
    elapsed_s = time.perf_counter() - t0
    assert 0.8 <= elapsed_s <= 2.5, elapsed_s
    got, _ = ring.read()
    np.testing.assert_array_equal(got, clip[:CLIP_RATE_HZ])


def test_file_realtime_stops_quickly(music_clip):
    src = FileSource(music_clip, realtime=True)
    ring = RingBuffer(2**20, 1)
    src.start(ring)
    wait_for(lambda: ring.available() > 0, 2.0, "the first block")
    assert src.state == "running"
    assert timed_stop(src) < 0.5
    assert src.state == "ended"
    written = ring.write_index
    time.sleep(0.2)
    assert ring.write_index == written  # nothing arrives after stop()
    src.stop()  # idempotent


def test_ring_with_other_channel_count_is_refused(music_clip):
    with pytest.raises(ValueError, match="channel"):
        FileSource(music_clip).start(RingBuffer(1024, 2))


# --------------------------------------------------------------------------- stdin


def _feed_in_odd_chunks(fd: int, payload: bytes, chunk_bytes: int = 1001) -> threading.Thread:
    """Write ``payload`` to ``fd`` in chunks that split samples and frames, then close it."""

    def feed():
        with os.fdopen(fd, "wb", buffering=0) as pipe:
            for i in range(0, len(payload), chunk_bytes):
                pipe.write(payload[i : i + chunk_bytes])

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def test_stdin_f32le_through_a_pipe_with_partial_frames(clip):
    samples = clip[: 4 * CLIP_RATE_HZ]
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as stream:
        src = StdinSource(CLIP_RATE_HZ, "f32le", channels=1, stream=stream)
        ring = RingBuffer(700, 1)  # tiny: the writer must be back-pressured, not dropped
        src.start(ring)
        feeder = _feed_in_odd_chunks(write_fd, samples.astype("<f4").tobytes())
        got = drain(ring, src)
        feeder.join(5)
    assert ring.dropped_frames == 0
    np.testing.assert_array_equal(got, samples)
    assert src.state == "ended"


def test_stdin_s16le_stereo_from_another_process(clip, tmp_path):
    left = clip[: 3 * CLIP_RATE_HZ, 0]
    stereo_s16 = np.stack([np.round(left * 32767), np.round(-left * 16000)], axis=1).astype("<i2")
    raw = tmp_path / "stereo.s16le"
    stereo_s16.tofile(raw)
    writer = subprocess.Popen(["cat", str(raw)], stdout=subprocess.PIPE)
    try:
        src = StdinSource(CLIP_RATE_HZ, "s16le", channels=2, stream=writer.stdout)
        ring = RingBuffer(2**16, 2)
        src.start(ring)
        got = drain(ring, src)
    finally:
        writer.stdout.close()
        writer.wait(5)
    np.testing.assert_array_equal(got, stereo_s16.astype(np.float32) / 32768.0)
    assert got.min() >= -1.0 and got.max() < 1.0


def test_stdin_stream_without_a_file_descriptor(clip):
    samples = clip[:CLIP_RATE_HZ]
    src = StdinSource(CLIP_RATE_HZ, stream=io.BytesIO(samples.astype("<f4").tobytes() + b"\x00\x01"))
    ring = RingBuffer(2 * CLIP_RATE_HZ, 1)
    src.start(ring)
    got = drain(ring, src)
    np.testing.assert_array_equal(got, samples)  # the trailing partial frame is discarded


def test_stdin_unknown_format_lists_the_allowed_ones():
    with open(os.devnull, "rb") as stream, pytest.raises(SourceError, match="f32le, s16le"):
        StdinSource(16000, "u8", stream=stream)


def test_stdin_stop_returns_while_the_pipe_is_silent():
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(read_fd, "rb") as stream:
            src = StdinSource(CLIP_RATE_HZ, stream=stream)
            src.start(RingBuffer(1024, 1))
            time.sleep(0.1)
            assert src.state == "running"  # no data, no EOF: still waiting
            assert timed_stop(src) < 0.5
            assert not src._thread.is_alive()
    finally:
        os.close(write_fd)


# --------------------------------------------------------------------------- urls (ffmpeg)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass

    def do_GET(self):
        if self.path != "/broken.ogg":
            return super().do_GET()
        # A server that breaks off: the whole clip's Content-Length, a third of its bytes.
        data = (Path(self.directory) / "clip.ogg").read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "audio/ogg")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 3])
        self.close_connection = True


@pytest.fixture(scope="module")
def http_base_url(music_clip, tmp_path_factory):
    """A local HTTP server on an ephemeral port serving the clip (as clip.ogg), not-audio.ogg, and
    broken.ogg (a third of the clip, then the connection closed)."""
    root = tmp_path_factory.mktemp("http_root")
    (root / "clip.ogg").symlink_to(music_clip)
    (root / "not-audio.ogg").write_text("<html><body>this is not audio</body></html>\n" * 50)
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True  # neither running nor a zombie: it was reaped
    return False


def test_url_over_http_matches_the_clip(http_base_url, clip):
    src = UrlSource(f"{http_base_url}/clip.ogg", sample_rate_hz=CLIP_RATE_HZ)
    assert (src.kind, src.channels) == ("url", 1)
    ring = RingBuffer(2**16, 1)  # smaller than the clip: no-drop back-pressure on ffmpeg
    src.start(ring)
    got = drain(ring, src)[:, 0]
    assert src.state == "ended" and src.error is None
    assert ring.dropped_frames == 0
    # ffmpeg's Opus decoder is not libsndfile's: compare closely, not bit-exactly.
    ref = clip[:, 0]
    assert abs(len(got) - len(ref)) <= 960, (len(got), len(ref))
    n = min(len(got), len(ref))
    assert np.corrcoef(got[:n], ref[:n])[0, 1] > 0.999
    assert np.sqrt(np.mean((got[:n] - ref[:n]) ** 2)) < 0.02 * np.sqrt(np.mean(ref**2)) + 1e-3
    assert _process_is_gone(src.pid)


def test_url_resamples_to_the_requested_rate(http_base_url):
    src = UrlSource(f"{http_base_url}/clip.ogg", sample_rate_hz=8000)
    ring = RingBuffer(2**18, 1)
    src.start(ring)
    got = drain(ring, src)
    assert abs(len(got) - 30.06 * 8000) < 0.05 * 8000


def test_url_404_is_a_clear_error(http_base_url):
    src = UrlSource(f"{http_base_url}/missing.ogg")
    with pytest.raises(SourceError, match="404") as info:
        src.start(RingBuffer(1024, 1))
    assert "missing.ogg" in str(info.value)
    assert src.state == "error" and _process_is_gone(src.pid)


def test_url_failure_after_start_sets_error_and_finished(http_base_url):
    src = UrlSource(f"{http_base_url}/not-audio.ogg", open_timeout_s=0)
    src.start(RingBuffer(1024, 1))  # returns at once: the failure comes later
    wait_for(lambda: src.finished, 10.0, "ffmpeg to fail on a non-audio file")
    assert src.state == "error"
    assert src.error.startswith(f"ffmpeg could not read {http_base_url}/not-audio.ogg: ")
    src.stop()
    assert _process_is_gone(src.pid)


def _until(condition, timeout_s: float, ring: RingBuffer) -> int:
    """Read the ring (as the engine would) until ``condition()``; the frames read meanwhile."""
    deadline, frames = time.monotonic() + timeout_s, 0
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        frames += len(ring.read()[0])
        time.sleep(0.05)
    return frames


def test_a_live_stream_that_drops_is_reconnected_with_backoff_and_a_file_url_just_ends(
    music_clip, http_base_url, monkeypatch
):
    from realtime import sources
    from tests.realtime.harness import LiveStream

    monkeypatch.setattr(sources, "URL_LOST_AFTER_S", 2.0)  # -rw_timeout: a stall this long is a loss

    with LiveStream(music_clip) as server:
        src = UrlSource(server.url, sample_rate_hz=CLIP_RATE_HZ)
        src.reconnect = True
        ring = RingBuffer(2**20, 1)
        src.start(ring)
        try:
            assert _until(lambda: ring.write_index > CLIP_RATE_HZ, 10, ring) >= 0
            assert src.duration_known is False  # a live stream: ffmpeg knows no duration
            # Unpaced, and live all the same: its server plays it at its pace (known once the
            # server's answer on its length is in: this one serves one client, and never answers).
            _until(lambda: src.live, 5, ring)
            server.kill()
            _until(lambda: src.reconnecting is not None and src.reconnecting["attempt"] >= 2, 10, ring)
            away = src.reconnecting
            assert src.state == "running" and src.error is None and not src.finished
            assert "Connection refused" in away["reason"] and away["since"] <= time.time()
            server.start()
            before = ring.write_index
            _until(lambda: src.reconnecting is None and ring.write_index > before + CLIP_RATE_HZ, 15, ring)
            assert src.state == "running"
            # The server stalls with the connection open (stopped): lost after URL_LOST_AFTER_S,
            # not waited for; ffmpeg exits 0 then, and says why only in its log.
            server.proc.send_signal(signal.SIGSTOP)
            _until(lambda: src.reconnecting is not None, 10, ring)
            assert "broke off: Connection timed out" in src.reconnecting["reason"], src.reconnecting
            server.kill()
            server.start()
            before = ring.write_index
            _until(lambda: src.reconnecting is None and ring.write_index > before + CLIP_RATE_HZ, 30, ring)
        finally:
            src.stop()
        # Without reconnect a drop is an error (listen exits 1 with it), not a quiet end.
        server.kill()
        server.start()  # ffmpeg -listen 1 serves one client: a fresh one
        src = UrlSource(server.url, sample_rate_hz=CLIP_RATE_HZ)
        ring = RingBuffer(2**20, 1)
        src.start(ring)
        _until(lambda: ring.write_index > 0, 10, ring)
        server.kill()
        _until(lambda: src.finished, 10, ring)
        assert src.state == "error" and "ended" in src.error and src.reconnecting is None
    # A file on an HTTP server that ends is the end, even where ffmpeg knows no duration (Ogg).
    src = UrlSource(f"{http_base_url}/clip.ogg", sample_rate_hz=CLIP_RATE_HZ)
    src.reconnect = True
    ring = RingBuffer(2**22, 1)
    src.start(ring)
    _until(lambda: src.finished, 20, ring)
    assert src.state == "ended" and src.duration_known is False
    assert not src.live  # it has a length: read as fast as it goes, as a file on disk


def test_a_shoutcast_stream_answering_icy_200_ok_plays_and_is_live(music_clip, tmp_path):
    """SHOUTcast's servers answer "ICY 200 OK", which ffmpeg takes and Python's HTTP client does
    not (the question whether the input has a length failed the source with "ICY 200 OK")."""
    mp3 = tmp_path / "clip.mp3"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(music_clip), "-t", "10", "-c:a", "libmp3lame",
         "-b:a", "128k", str(mp3)],
        check=True,
    )  # fmt: skip
    data = mp3.read_bytes()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):  # a client that goes (the length check, a stop)
            conn.recv(4096)
            conn.sendall(b"ICY 200 OK\r\ncontent-type: audio/mpeg\r\nicy-name: moodstream test\r\n\r\n")
            at = 0
            while not done.is_set():  # 128 kb/s at its pace, a tenth of a second at a time
                conn.sendall(data[at : at + 1600])
                at = (at + 1600) % len(data)
                time.sleep(0.1)

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    src = UrlSource(f"http://127.0.0.1:{server.getsockname()[1]}/", sample_rate_hz=CLIP_RATE_HZ)
    ring = RingBuffer(2**20, 1)
    try:
        src.start(ring)
        _until(lambda: ring.write_index > CLIP_RATE_HZ and src.live, 10, ring)
        assert src.state == "running" and src.error is None
    finally:
        src.stop()
        done.set()
        server.close()


def test_a_live_hls_stream_is_live(music_clip, tmp_path):
    """A live HLS playlist (no #EXT-X-ENDLIST: ffmpeg gives no duration) is served with a
    Content-Length like a file's: ffmpeg's word on its length counts, not the server's."""
    producer = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(music_clip),
         "-c:a", "aac", "-b:a", "64k", "-f", "hls", "-hls_time", "1", "-hls_list_size", "4",
         "-hls_flags", "delete_segments", str(tmp_path / "live.m3u8")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(tmp_path))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    src = None
    try:
        deadline = time.monotonic() + 20
        playlist = tmp_path / "live.m3u8"
        while not playlist.exists() or playlist.read_text().count("#EXTINF") < 2:
            assert time.monotonic() < deadline and producer.poll() is None, "no live playlist"
            time.sleep(0.1)
        src = UrlSource(f"http://127.0.0.1:{server.server_address[1]}/live.m3u8", sample_rate_hz=CLIP_RATE_HZ)
        ring = RingBuffer(2**20, 1)
        src.start(ring)
        _until(lambda: ring.write_index > CLIP_RATE_HZ and src.live, 20, ring)
        assert src.duration_known is False and src.state == "running"
    finally:
        if src is not None:
            src.stop()
        producer.kill()
        producer.wait()
        server.shutdown()
        server.server_close()


def test_a_file_url_that_breaks_off_is_an_error_not_an_end(http_base_url):
    """README, Exit status: 1 for a file that breaks mid-way; ffmpeg exits 0 there, and says why
    only in its log.  Reconnecting would play the file again from its start: not done."""
    src = UrlSource(f"{http_base_url}/broken.ogg", sample_rate_hz=CLIP_RATE_HZ)
    src.reconnect = True
    ring = RingBuffer(2**22, 1)
    src.start(ring)
    _until(lambda: src.finished, 20, ring)
    assert src.state == "error" and "broke off: Stream ends prematurely" in src.error, src.error
    assert src.reconnecting is None


def test_url_connection_refused_is_a_clear_error():
    with socket.socket() as sock:  # a port that was free a moment ago: nobody listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    src = UrlSource(f"http://127.0.0.1:{port}/clip.ogg")
    with pytest.raises(SourceError, match="(?i)connection refused"):
        src.start(RingBuffer(1024, 1))


def test_a_chained_ogg_file_is_read_to_its_end_and_is_no_damage(music_clip, shared_data, tmp_path):
    """One recording after another in one Ogg file (a radio stream's dump, files joined with
    cat): libsndfile reads the first alone and ends there, without a word, so ``open_file`` has
    ffmpeg read it, to its end.  Nor is a chain damaged data: ffmpeg's output side says at error
    level that the next one's timestamps start again (a radio warned at every song), and of a
    chained Opus file its Ogg demuxer, looking for the length at the end, that it cannot take the
    last recording for the first."""
    parts = []
    for i, (start_s, layout) in enumerate((("0", []), ("10", ["-ar", "44100", "-ac", "2"]))):
        parts.append(tmp_path / f"part{i}.ogg")
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-ss", start_s, "-i", str(music_clip), "-t", "4",
             *layout, "-c:a", "libvorbis", str(parts[-1])],
            check=True,
        )  # fmt: skip
    vorbis = tmp_path / "chained.ogg"
    vorbis.write_bytes(b"".join(part.read_bytes() for part in parts))
    clips = sorted((shared_data / "4q" / "audio" / "Q1").glob("*.ogg"))[:2]  # Opus, 30 s each
    opus = tmp_path / "chained-opus.ogg"
    opus.write_bytes(b"".join(clip.read_bytes() for clip in clips))
    assert [ogg.chains(path) for path in (parts[0], clips[0], vorbis, opus)] == [1, 1, 2, 2]
    first, rate_hz = sf.read(vorbis)
    assert len(first) == 4 * rate_hz  # all that libsndfile alone makes of it
    opus_s = sum(sf.info(clip).duration for clip in clips)
    for path, seconds in ((vorbis, 8.0), (opus, opus_s)):
        assert FileSource(path).chained
        src = open_file(path, rate_hz=CLIP_RATE_HZ)
        assert (src.kind, src.sample_rate_hz, src.channels) == ("file", CLIP_RATE_HZ, 1)
        ring = RingBuffer(2**18, 1)
        src.start(ring)
        got = drain(ring, src)
        assert src.state == "ended" and src.error is None
        got_s = len(got) / CLIP_RATE_HZ
        assert abs(got_s - seconds) < 0.05, (path.name, got_s)  # every recording
        assert src.warning is None, src.warning
    assert isinstance(open_file(parts[0]), FileSource)  # one recording: libsndfile, as before
    src = FileSource(vorbis)  # what open_file falls back to without ffmpeg: it says what it missed
    ring = RingBuffer(2**18, 1)
    src.start(ring)
    assert len(drain(ring, src)) == len(first) and src.warning == (
        f"{vorbis} holds 2 recordings one after another, and only the first (4.0 s) was read: "
        "ffmpeg reads them all (apt-get install ffmpeg)"
    )
    # A chain really damaged still says so (ffmpeg checks every page's CRC).
    data = bytearray(opus.read_bytes())
    data[len(data) // 4 : len(data) // 4 + len(data) // 20] = bytes(len(data) // 20)
    damaged = tmp_path / "damaged-opus.ogg"
    damaged.write_bytes(bytes(data))
    src = open_file(damaged, rate_hz=CLIP_RATE_HZ)
    ring = RingBuffer(2**18, 1)
    src.start(ring)
    drain(ring, src)
    assert (src.warning or "").startswith(f"ffmpeg met damaged data in {damaged} ("), src.warning


def test_url_stop_kills_ffmpeg(http_base_url):
    src = UrlSource(f"{http_base_url}/clip.ogg", realtime=True)  # -re: would run for 30 s
    ring = RingBuffer(2**16, 1)
    src.start(ring)
    wait_for(lambda: ring.available() > 0, 5.0, "the first decoded samples")
    time.sleep(0.3)
    # Paced by -re: after ~0.3 s far less than the 30 s clip has arrived.
    assert ring.write_index < 10 * CLIP_RATE_HZ
    pid = src.pid
    assert not _process_is_gone(pid)
    assert timed_stop(src) < 0.5
    assert _process_is_gone(pid)
    assert src.state == "ended" and src.error is None
    src.stop()  # idempotent


def test_url_without_ffmpeg_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no ffmpeg on PATH
    with pytest.raises(SourceError, match="ffmpeg not found; install it"):
        UrlSource("http://127.0.0.1/clip.ogg")
