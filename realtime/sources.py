"""Audio sources that feed the ring buffer: a sound device, a file, raw PCM on stdin, or a URL.

Every source has the same small life cycle, which the engine relies on::

    src = DeviceSource("USB mic")          # resolves/validates; raises SourceError
    ring = RingBuffer(capacity_frames, src.channels)
    src.start(ring)                        # non-blocking; raises SourceError if it cannot open
    ...                                    # engine reads the ring, watches src.state
    src.stop()                             # idempotent, returns within 0.5 s

``sample_rate_hz`` and ``channels`` describe the frames written to the ring.  They are known
after construction; a ``DeviceSource`` may still change ``sample_rate_hz`` in ``start()`` when
the device refuses its native rate and a fallback rate opens instead.

Back-pressure differs on purpose.  *Live* sources (a device, a ``realtime=True`` file or URL)
never wait for the consumer: a block that does not fit is dropped and counted by the ring,
as a sound card would.  *As-fast-as-possible* sources (a file, stdin, a URL without
``realtime``) never drop: their thread waits, in short stoppable sleeps, until the ring
has room, so an offline analysis sees every sample.

``sounddevice`` is imported lazily: importing it initialises PortAudio, which must happen
after the caller had a chance to set ``ALSA_CONFIG_PATH`` (tests) and should not be needed
at all for file, stdin or URL input.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import http.client
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from argparse import Namespace
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from realtime import ogg
from realtime.ring import RingBuffer

# Tried, in this order, after the device's own default rate.
FALLBACK_RATES_HZ = (48000, 44100, 96000, 32000, 22050, 16000)
# How long a waiting producer sleeps between checks for ring space (bounded stop latency too).
_SPACE_POLL_S = 0.002
# How long a reader blocks in select() before it re-checks its stop flag.
_READ_POLL_S = 0.05
_READ_CHUNK_BYTES = 64 * 1024
# stop() must return within 0.5 s; these budgets add up to less than that.
_JOIN_TIMEOUT_S = 0.15
_TERMINATE_GRACE_S = 0.3
# A started device that delivers nothing for this long is lost (a period is tens of ms).
DEVICE_LOST_AFTER_S = 2.0
JACK_NOT_REOPENED = (
    "PortAudio's JACK devices cannot be reopened once their server stops: restart listen, or "
    "capture through ALSA's jack plugin (--device jack), which is reopened by itself"
)
# A network input (--url) whose server sends nothing for this long is lost: ffmpeg gives up on it
# (-rw_timeout), so a stream that stalls with its connection open is reconnected, not waited for.
URL_LOST_AFTER_S = 5.0
_WATCH_S = 0.25  # how often the device watcher looks
# The capture buffer on ALSA: how late PortAudio's callback may run (another thread holds the GIL,
# the machine is busy) before the device overflows and audio is lost.  PortAudio's "low" latency
# leaves about one period (21 ms on a 1024-frame JACK period).  A second costs a few hundred KB.
DEVICE_BUFFER_S = 1.0
# Its periods: about this long, a power of two of frames.  PortAudio's ALSA host API makes a
# buffer of 4 periods unless told otherwise, and a window waits for the period that ends it
# (a second's buffer: 256 ms periods); so it is told the number of periods.
DEVICE_PERIOD_S = 0.02


def device_period_frames(rate_hz: int) -> int:
    """Frames per capture period: the power of two nearest DEVICE_PERIOD_S (1024 at 44.1 and
    48 kHz, 256 at 16 kHz), a size sound cards and audio servers take as it is."""
    return 1 << max(4, round(np.log2(rate_hz * DEVICE_PERIOD_S)))


# PortAudio's number of ALSA periods is one setting for the whole process: set, open, set back
# under this lock (a reconnecting device's watcher opens from its own thread).
_PERIODS_LOCK = threading.Lock()
_PA_DEVICE_UNAVAILABLE = -9985  # paDeviceUnavailable: busy, and PortAudio already tried for ~1 s
# How fast the capture clock's wall-clock offset may rise (s per s of stream time): it is the
# least seen, so a callback that waited for the GIL does not move it, yet a wall clock set
# forward is followed.
_OFFSET_RISE = 0.01


def _alsa_set_periods(sd, periods: int) -> bool:
    """PortAudio's ALSA buffer: ``periods`` periods from the next open on (a process-wide setting;
    4 is PortAudio's own).  False where this PortAudio has no such call."""
    try:
        set_periods = ctypes.CDLL(sd._libname).PaAlsa_SetNumPeriods
    except (AttributeError, OSError):
        return False
    return set_periods(ctypes.c_int(periods)) == 0


# PortAudio's ALSA host API writes each failed step of a failed open to C's stderr ("Expression
# 'ret' failed in 'src/hostapi/alsa/pa_linux_alsa.c', line: 1736"): four to eight lines an open,
# at every reconnection attempt, which say no more than the error the open returns (reported).
_PORTAUDIO_STEP = re.compile(rb"Expression '.*' failed in 'src/")
_STDERR_LOCK = threading.Lock()  # one redirection at a time (two devices reopening at once)


@contextlib.contextmanager
def _portaudio_steps_dropped():
    """While PortAudio opens a stream: file descriptor 2 is a pipe, whose lines other than
    PortAudio's failed steps (another thread's: the live line) a thread passes on to stderr."""
    if os.name != "posix":
        yield
        return
    with _STDERR_LOCK:
        try:
            if sys.stderr is not None:
                sys.stderr.flush()
            stderr_fd = os.dup(2)
        except (OSError, ValueError):  # no stderr (closed), or its reader gone: nothing to spare it
            yield
            return
        read_fd, write_fd = os.pipe()
        # Not inheritable: a child started meanwhile gets no stderr rather than this pipe.
        os.dup2(write_fd, 2, inheritable=False)
        os.close(write_fd)
        forwarder = threading.Thread(target=_forward_lines, args=(read_fd, stderr_fd), name="stderr-filter")
        forwarder.start()
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(stderr_fd, 2)  # the pipe's last writer is gone: the forwarder reads to its end
            forwarder.join()
            os.close(stderr_fd)


def _forward_lines(read_fd: int, out_fd: int) -> None:
    """Lines from ``read_fd`` to ``out_fd`` as they come, less PortAudio's failed steps."""
    pending = b""
    with open(read_fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = b"".join(line + b"\n" for line in lines if not _PORTAUDIO_STEP.match(line))
            if kept:
                with contextlib.suppress(OSError):  # a reader of stderr that went away
                    os.write(out_fd, kept)
    if pending and not _PORTAUDIO_STEP.match(pending):
        with contextlib.suppress(OSError):
            os.write(out_fd, pending)


# Reconnection: waits of 1, 2, 4 ... seconds between attempts, capped here.
RECONNECT_CAP_S = 30.0


def backoff_s(attempt: int) -> float:
    """The wait before reconnection attempt ``attempt`` (1, 2, ...): 1, 2, 4 ... 30 s."""
    return min(RECONNECT_CAP_S, 2.0 ** (attempt - 1))


class SourceError(RuntimeError):
    """A source could not be opened or failed; the message says what failed and what to do."""


class Source:
    """Base class: something that writes (frames, channels) float32 blocks into a RingBuffer."""

    kind: str = ""
    live: bool = False  # audio arrives at the pace it is played (a device, a pipe, a paced file)
    # How long after its start the first audio may take, the source still starting, not stalled.
    first_audio_s: float = 0.0

    def __init__(self, name: str, sample_rate_hz: int, channels: int):
        self.name = name
        self.sample_rate_hz = int(sample_rate_hz)
        self.channels = int(channels)
        # Written by the producer side (callback/thread), read by the engine; plain attribute
        # assignment is atomic under the GIL.  ``error`` is set before ``finished`` so that a
        # reader who sees finished=True also sees why.
        self.finished = False
        self.error: str | None = None
        # Come back after a loss (a URL stream that drops, a device that vanishes): listen sets it
        # unless --no-reconnect.  While away, ``reconnecting`` is {"reason", "attempt", "since"}
        # (replaced whole, never changed in place, so a reader sees one consistent dict).
        self.reconnect = False
        self.reconnecting: dict | None = None
        # What went wrong without stopping it (damaged data, skipped by the decoder): said at the
        # end of the run, as a warning, since the moods went on over the rest.
        self.warning: str | None = None

    def _away(self, reason: str, attempt: int, since: float) -> None:
        self.reconnecting = {"reason": reason, "attempt": attempt, "since": since}

    @property
    def state(self) -> str:
        """One of "running", "ended" (EOF or stopped), "error"; the engine derives "stalled" itself."""
        if self.error is not None:
            return "error"
        return "ended" if self.finished else "running"

    def start(self, ring: RingBuffer) -> None:
        """Open and start delivering into ``ring`` without blocking; SourceError if it cannot open."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop delivering and release the input; idempotent, returns within 0.5 s."""
        raise NotImplementedError

    def _fail(self, message: str) -> None:
        self.error = message
        self.finished = True

    def _check_ring(self, ring: RingBuffer) -> None:
        if ring.channels != self.channels:
            raise ValueError(
                f"ring has {ring.channels} channel(s) but {self.kind} source {self.name!r} "
                f"delivers {self.channels}; create the ring with RingBuffer(capacity, source.channels)"
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, sample_rate_hz={self.sample_rate_hz}, "
            f"channels={self.channels}, state={self.state!r})"
        )


def _write_waiting(ring: RingBuffer, block: np.ndarray, stop: threading.Event) -> bool:
    """Write all of ``block``, waiting for ring space instead of dropping; False if stopped first.

    Writes in pieces of whatever fits, so a block larger than the whole ring still gets through.
    """
    done = 0
    total = block.shape[0]
    while done < total:
        free = ring.free()
        if free <= 0:
            if stop.wait(_SPACE_POLL_S):
                return False
            continue
        n = min(free, total - done)
        ring.write(block[done : done + n])
        done += n
    return True


# --------------------------------------------------------------------------- devices


def _import_sounddevice():
    try:
        import sounddevice
    except OSError as exc:  # the PortAudio shared library itself is missing
        raise SourceError(
            f"sound devices need PortAudio, which is not installed ({exc}): apt-get install libportaudio2 "
            "(Debian/Ubuntu; `make setup` does it), brew install portaudio (macOS); --file, --stdin "
            "and --url work without it"
        ) from exc
    return sounddevice


def _input_devices(sd) -> list[dict]:
    return [d for d in sd.query_devices() if d["max_input_channels"] > 0]


def _default_input_index(sd) -> int:
    try:
        return int(sd.query_devices(kind="input")["index"])
    except (sd.PortAudioError, ValueError):
        return -1


def _device_table(sd, devices: list[dict]) -> str:
    default_index = _default_input_index(sd)
    lines = [f"  {'idx':>3}  {'name':<40} {'in':>4} {'rate_hz':>8}  host API"]
    for d in devices:
        mark = "*" if d["index"] == default_index else " "
        host_api = sd.query_hostapis(d["hostapi"])["name"]
        lines.append(
            f"{mark} {d['index']:>3}  {d['name']:<40} {d['max_input_channels']:>4} "
            f"{d['default_samplerate']:>8.0f}  {host_api}"
        )
    return "\n".join(lines)


def list_devices() -> str:
    """A printable table of input-capable devices (``*`` marks the default input)."""
    sd = _import_sounddevice()
    devices = _input_devices(sd)
    if not devices:
        return _NO_INPUT_DEVICES
    return _device_table(sd, devices)


_NO_INPUT_DEVICES = (
    "no input devices found: PortAudio sees no capture device. Connect a microphone or sound card "
    "(on Linux check `arecord -l` and that this user may use audio, e.g. is in the 'audio' group), "
    "or analyse a file, stdin or a URL instead."
)


def _resolve_device(sd, device: int | str | None) -> dict:
    """Find the input device meant by an index, a (case-insensitive) name or substring, or None."""
    devices = _input_devices(sd)
    if not devices:
        raise SourceError(_NO_INPUT_DEVICES)

    def unknown(what: str) -> SourceError:
        return SourceError(
            f"{what}. Available input devices:\n{_device_table(sd, devices)}\n"
            "Pass one of these indices, or a unique part of a name."
        )

    if device is None:
        index = _default_input_index(sd)
        if index < 0:
            raise unknown("there is no default input device")
        return sd.query_devices(index)
    if isinstance(device, str) and device.strip().isdigit():
        device = int(device)  # a CLI passes "--device 3" as text
    if isinstance(device, int):
        for d in devices:
            if d["index"] == device:
                return d
        raise unknown(f"no input device has index {device}")
    wanted = device.strip().lower()
    exact = [d for d in devices if d["name"].lower() == wanted]
    matches = exact or [d for d in devices if wanted in d["name"].lower()]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise unknown(f"no input device matches {device!r}")
    listing = "\n".join(f"  {d['index']:>3}  {d['name']}" for d in matches)
    raise SourceError(
        f"input device name {device!r} is ambiguous; it matches:\n{listing}\n"
        "Pass the index, or more of the name."
    )


class DeviceSource(Source):
    """A PortAudio (sounddevice) input stream whose callback only copies into the ring.

    ``device``: index, case-insensitive name or unique name substring (an exact name wins over
    substrings), or None for the default input.  ``channels`` defaults to min(2, the device's
    max input channels).  The stream opens at the device's default rate, else at the first of
    FALLBACK_RATES_HZ that opens; ``sample_rate_hz`` holds the rate actually opened.
    ``buffer_s``: the capture buffer on ALSA (DEVICE_BUFFER_S, in periods of
    ``device_period_frames``); None, a device that refuses it or gives it in long periods, or
    another host API: PortAudio's low latency (``buffer_s`` is None after such a device).
    """

    kind = "device"
    live = True

    def __init__(
        self,
        device: int | str | None = None,
        channels: int | None = None,
        buffer_s: float | None = DEVICE_BUFFER_S,
    ):
        sd = _import_sounddevice()
        info = _resolve_device(sd, device)
        max_channels = int(info["max_input_channels"])
        if channels is None:
            channels = min(2, max_channels)
        if not 1 <= channels <= max_channels:
            raise SourceError(
                f"input device {info['name']!r} has {max_channels} input channel(s); "
                f"{channels} were requested"
            )
        super().__init__(info["name"], int(round(info["default_samplerate"])), channels)
        self.index = int(info["index"])
        self.buffer_s = buffer_s
        host_api = sd.query_hostapis(info["hostapi"])["name"]
        self._alsa = host_api == "ALSA"
        self._jack = host_api.startswith("JACK")  # "JACK Audio Connection Kit": see _watch
        self._sd = sd
        self._stream = None
        self._stopping = False
        self._generation = 0  # of the stream opened last: an abandoned stream's callbacks are ignored
        self._lost: str | None = None  # set by PortAudio's finished callback after a host error
        self._last_callback_s = time.monotonic()
        self._block_frames: int | None = None  # the last callback's, for _open's check
        self.lost_after_s = DEVICE_LOST_AFTER_S

    def _make_callback(self, ring: RingBuffer, rate_hz: int):
        write = ring.write
        now = time.time
        monotonic = time.monotonic
        last_frame_offset_s = 1.0 / rate_hz
        offset_s: float | None = None  # wall clock minus the stream's clock
        offset_at = 0.0  # on the stream's clock

        # Runs on PortAudio's audio thread: it only computes a timestamp and copies.
        def callback(indata, frames, time_info, status):
            nonlocal offset_s, offset_at
            self._last_callback_s = monotonic()  # for the watcher: the device is delivering
            self._block_frames = frames  # for _open: the periods the device gave
            adc_s = time_info.inputBufferAdcTime
            if adc_s:
                # inputBufferAdcTime is the first frame's capture on the stream clock; moved to the
                # wall clock and on to the block's last frame.  PortAudio reads its clock before
                # the call, which may then wait for the GIL (the buffer holds the audio meanwhile):
                # so the offset is the least seen, not this call's.
                stream_now = time_info.currentTime
                seen = now() - stream_now
                if offset_s is not None:
                    seen = min(seen, offset_s + _OFFSET_RISE * (stream_now - offset_at))
                offset_s, offset_at = seen, stream_now
                capture = adc_s + offset_s + (frames - 1) * last_frame_offset_s
            else:  # the host API gives no timing
                capture = now()
            write(indata, capture, bool(status.input_overflow))

        return callback

    def _on_finished(self, generation: int) -> None:
        # PortAudio calls this when a stream stops: after our own stop, or after a host error
        # (device unplugged, ALSA failure) that ended it on its own.  An abandoned stream's is ignored.
        if self._stopping or generation != self._generation:
            return
        self._lost = f"input device {self.name!r} stopped delivering audio (unplugged, or a host audio error)"

    def start(self, ring: RingBuffer) -> None:
        """Open the stream (native rate, then fallbacks) and start capturing into ``ring``; a
        watcher thread notices a device that stops delivering and, with ``reconnect``, reopens it."""
        self._check_ring(ring)
        if self._stream is not None:
            raise RuntimeError(f"device source {self.name!r} is already started")
        rates = [self.sample_rate_hz] + [r for r in FALLBACK_RATES_HZ if r != self.sample_rate_hz]
        self._ring = ring
        self._stopping = False
        self.finished = False
        self.error = None
        self._stream = self._open(rates)
        self._stop_event = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="source-device-watch", daemon=True)
        self._watcher.start()

    def _open(self, rates: list[int]):
        """A started stream at the first of ``rates`` that opens (``sample_rate_hz`` is set to it)."""
        sd = self._sd
        failures = []
        self.open_failure: str | None = None
        self._generation += 1
        generation = self._generation
        for rate_hz in rates:
            try:
                with _portaudio_steps_dropped():
                    stream, buffered = self._input_stream(rate_hz, generation)
            except sd.PortAudioError as exc:
                failures.append((rate_hz, str(exc)))
                continue
            break
        else:
            self.open_failure = failures[-1][1]  # PortAudio's reason, for a reconnection's status
            tried = ", ".join(str(r) for r in rates)
            raise SourceError(
                f"cannot open input device {self.name!r} (index {self.index}) at any sample rate "
                f"(tried {tried} Hz); last error: {failures[-1][0]} Hz: {failures[-1][1]}. The device "
                "may be in use by another program or unplugged; close that program or pick another device."
            )
        self.sample_rate_hz = rate_hz
        self._lost = None
        self._last_callback_s = time.monotonic()
        self._block_frames = None
        try:
            stream.start()
        except sd.PortAudioError as exc:
            self._generation += 1
            stream.close(ignore_errors=True)
            raise SourceError(f"input device {self.name!r} opened but would not start: {exc}") from exc
        if buffered and not self._short_periods(rate_hz):
            # A driver that takes few periods made the buffer of long ones (a window would wait
            # for each): PortAudio's low latency instead, from now on.
            self._generation += 1
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
            self.buffer_s = None
            return self._open([rate_hz])
        return stream

    def _short_periods(self, rate_hz: int) -> bool:
        """Whether the stream just started delivers its periods in blocks of at most twice
        ``device_period_frames`` (True if none came within a quarter second: the watcher's case)."""
        deadline = time.monotonic() + 0.25
        while self._block_frames is None and time.monotonic() < deadline:
            time.sleep(0.002)
        return self._block_frames is None or self._block_frames <= 2 * device_period_frames(rate_hz)

    def _input_stream(self, rate_hz: int, generation: int):
        """(an unstarted stream at ``rate_hz``, whether it has the capture buffer): with it where
        the device takes it, else with PortAudio's low latency; PortAudioError if neither opens."""
        sd = self._sd
        stream_args = dict(
            device=self.index,
            channels=self.channels,
            samplerate=rate_hz,
            dtype="float32",
            callback=self._make_callback(self._ring, rate_hz),
            finished_callback=lambda: self._on_finished(generation),
        )
        period_frames = device_period_frames(rate_hz)
        periods = max(2, round(self.buffer_s * rate_hz / period_frames)) if self.buffer_s else 0
        if periods and self._alsa:
            with _PERIODS_LOCK:
                if _alsa_set_periods(sd, periods):
                    try:
                        # blocksize 0: the callback gets each period as it comes (a size of our
                        # own makes PortAudio adapt through a buffer, which added a period of delay).
                        latency_s = periods * period_frames / rate_hz
                        return sd.InputStream(blocksize=0, latency=latency_s, **stream_args), True
                    except sd.PortAudioError as exc:
                        if len(exc.args) > 1 and exc.args[1] == _PA_DEVICE_UNAVAILABLE:
                            raise  # busy: another try would wait as long again
                        # else a device that takes no such buffer: PortAudio's own choice below
                    finally:
                        _alsa_set_periods(sd, 4)
        return sd.InputStream(blocksize=0, latency="low", **stream_args), False

    def _watch(self) -> None:
        """Every quarter second: is the device still delivering?  If not, reopen it (or fail)."""
        stop = self._stop_event
        last_wake = time.monotonic()
        while not stop.wait(_WATCH_S):
            now = time.monotonic()
            if now - last_wake > _WATCH_S + 1.0:
                # This process was suspended (SIGSTOP, a laptop asleep): the callbacks were too.
                # The audio lost is the engine's to count as a gap; the device is not gone.
                self._last_callback_s = now
            last_wake = now
            lost = self._lost
            if lost is None and now - self._last_callback_s > self.lost_after_s:
                lost = (
                    f"no audio from input device {self.name!r} for {self.lost_after_s:g} s "
                    "(unplugged, or its audio server stopped)"
                )
            if lost is None:
                continue
            self._abandon()
            if self._jack:
                # PortAudio's JACK host API makes its one JACK client when PortAudio starts: the
                # server's stop took it, and no stream opens again ("Insufficient memory") until
                # PortAudio is restarted, which the dead stream's close (hung in PortAudio, ~10
                # min) does not let happen.  Retrying would wait for ever: say so and end.
                self._fail(f"{lost}; {JACK_NOT_REOPENED}")
                return
            if not self.reconnect:
                self._fail(f"{lost}; check the device and restart")
                return
            if not self._reopen(lost):
                return

    def _reopen(self, reason: str) -> bool:
        """Reopen the device (same index and rate: the pipeline's input rate) with backoff until
        audio flows again (True) or the source is stopped (False)."""
        stop = self._stop_event
        since = time.time()
        attempt = 0
        while True:
            attempt += 1
            self._away(reason, attempt, since)
            if stop.wait(backoff_s(attempt)):
                return False
            try:
                self._stream = self._open([self.sample_rate_hz])
            except SourceError as exc:
                # Not the first open's advice (another program, another device): it is not back.
                failure = self.open_failure
                reason = f"input device {self.name!r} does not open yet ({failure})" if failure else str(exc)
                continue
            opened_s = self._last_callback_s
            deadline = opened_s + self.lost_after_s
            while self._last_callback_s == opened_s and time.monotonic() < deadline:
                if stop.wait(0.05):
                    return False
            if self._last_callback_s != opened_s and self._lost is None:
                self.reconnecting = None
                return True
            self._abandon()
            reason = f"input device {self.name!r} reopened but delivered no audio"

    def _abandon(self) -> None:
        """Close the current stream without waiting long: after a host failure PortAudio may hang
        or fail in abort/close, so that runs in a helper thread given half a second."""
        stream, self._stream = self._stream, None
        self._generation += 1  # its finished callback is ignored from now on
        if stream is None:
            return

        def close():
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:  # a host that is gone: nothing left to release
                pass

        closer = threading.Thread(target=close, name="source-device-close", daemon=True)
        closer.start()
        closer.join(_JOIN_TIMEOUT_S * 3)

    def stop(self) -> None:
        """Abort and close the stream (pending buffers are discarded) and the watcher; idempotent."""
        self._stopping = True
        stop_event = getattr(self, "_stop_event", None)
        if stop_event is not None:
            stop_event.set()
        watcher = getattr(self, "_watcher", None)
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(_JOIN_TIMEOUT_S)
        self._abandon()
        self.reconnecting = None
        self.finished = True


# --------------------------------------------------------------------------- threaded sources


class _ThreadSource(Source):
    """A source whose producer is a daemon thread running ``_run(ring)``."""

    def __init__(self, name: str, sample_rate_hz: int, channels: int):
        super().__init__(name, sample_rate_hz, channels)
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, ring: RingBuffer) -> None:
        self._check_ring(ring)
        if self._thread is not None:
            raise RuntimeError(f"{self.kind} source {self.name!r} is already started")
        self._thread = threading.Thread(
            target=self._guarded_run, args=(ring,), name=f"source-{self.kind}", daemon=True
        )
        self._thread.start()

    def _guarded_run(self, ring: RingBuffer) -> None:
        try:
            self._run(ring)
        except SourceError as exc:  # already in the user's words
            self._fail(str(exc))
        except Exception as exc:  # any failure must become `error`, not a silently dead thread
            self._fail(f"{self.kind} source {self.name!r} failed: {exc}")
        finally:
            self.finished = True

    def _run(self, ring: RingBuffer) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT_S)
        self.finished = True


class FileSource(_ThreadSource):
    """An audio file read by soundfile in a thread, at its native rate and channel count.

    ``realtime=False`` delivers as fast as the consumer takes it and never drops.
    ``realtime=True`` paces blocks to the wall clock like a live input (each block is written
    when its last frame would have been captured) and, like a device, drops what does not fit.
    """

    kind = "file"

    def __init__(self, path: str | os.PathLike, realtime: bool = False, blocksize: int | None = None):
        file_path = Path(path)
        if not file_path.exists():
            raise SourceError(f"audio file not found: {file_path}")
        if not file_path.is_file():
            raise SourceError(f"not a regular file: {file_path}; pass the path of an audio file")
        try:
            info = sf.info(str(file_path))
        except RuntimeError as exc:
            reason = getattr(exc, "error_string", None) or str(exc)
            raise SourceError(
                f"cannot decode audio file {file_path}: {reason} (libsndfile reads WAV, FLAC, "
                "Ogg Vorbis/Opus, MP3...; anything else is read through ffmpeg, when it is installed)"
            ) from exc
        if blocksize is not None and blocksize <= 0:
            raise ValueError("blocksize must be positive")
        super().__init__(str(file_path), info.samplerate, info.channels)
        self.path = file_path
        self.realtime = self.live = realtime
        # The length the file says it has (Ogg's last granule, FLAC's and WAV's headers; an MP3's is
        # an estimate, and a FLAC written to a pipe says the largest count: none): libsndfile skips
        # a damaged stretch without a word, only shorter.
        self.length_unknown = info.frames >= 2**62
        self.frames_said = None if info.format == "MP3" or self.length_unknown else info.frames
        # A WAV or AIFF cut short (a copy or a download that did not finish): libsndfile gives the
        # frames the file holds, and says in its log what the header said.
        self.cut_short = False
        header_frames = _header_frames(info.extra_info)
        if header_frames is not None and self.frames_said is not None and header_frames > self.frames_said:
            self.frames_said, self.cut_short = header_frames, True
        self.format = info.format  # libsndfile's name of the container: "WAV", "FLAC", "OGG", "MP3"...
        # One recording after another in one Ogg file (a radio stream's dump, or files joined with
        # cat): libsndfile reads the first and ends there, without a word (open_file: ffmpeg).
        self.chains = ogg.chains(file_path) if self.format == "OGG" else 1
        self.chained = self.chains > 1
        # Paced: 10 ms blocks, like a sound card's period (a window ending mid-block waits for the
        # rest of it: 2048-frame blocks cost up to 128 ms of lag at 16 kHz). Unpaced: large reads.
        self.blocksize = blocksize or (self.paced_blocksize(info.samplerate) if realtime else 2048)

    @staticmethod
    def paced_blocksize(rate_hz: int) -> int:
        return max(1, rate_hz // 100)

    def _run(self, ring: RingBuffer) -> None:
        stop = self._stop_event
        # Paced, the file is decoded a second at a time and written a block at a time: one
        # decoder call per 10 ms block cost more than the decoding itself.
        read_frames = self.sample_rate_hz if self.realtime else self.blocksize
        with sf.SoundFile(str(self.path)) as f:
            buf = np.empty((max(read_frames, self.blocksize), self.channels), dtype=np.float32)
            start_s = time.perf_counter()
            start_wall_s = time.time()
            frames_written = 0
            while not stop.is_set():
                try:
                    chunk = f.read(read_frames, dtype="float32", always_2d=True, out=buf[:read_frames])
                except sf.LibsndfileError as exc:  # damaged beyond what it skips: an MP3 it cannot resync
                    raise SourceError(
                        f"libsndfile cannot decode {self.path} past {frames_written / self.sample_rate_hz:.1f} s "
                        f"({exc.error_string.rstrip('.')}): the file is damaged there; with ffmpeg installed it is read "
                        "past the damage"
                    ) from None
                if chunk.shape[0] == 0:
                    self._check_length(frames_written)
                    break
                for at in range(0, chunk.shape[0], self.blocksize):
                    block = chunk[at : at + self.blocksize]
                    n = block.shape[0]
                    if self.realtime:
                        # Deadline from the start time and the frame count, not from the last
                        # sleep, so oversleeping never accumulates into drift.
                        delay_s = start_s + (frames_written + n) / self.sample_rate_hz - time.perf_counter()
                        if delay_s > 0 and stop.wait(delay_s):
                            return
                        # Captured when it would have been played, even if written late (this
                        # process was stalled): so latency counts from there, and the stall shows as lag.
                        ring.write(
                            block, capture_time=start_wall_s + (frames_written + n) / self.sample_rate_hz
                        )
                    elif not _write_waiting(ring, block, stop):
                        return
                    frames_written += n

    def _check_length(self, frames_read: int) -> None:
        """At the file's end: shorter than it says by over a tenth of a second, it was damaged
        and libsndfile skipped the damage (a garbled stretch of an Ogg Vorbis file): a warning.
        So are an Ogg file's pages whose checksums fail (libsndfile decodes past a garbled stretch
        of Ogg Opus at its full length), and a chained file's end, which is its first recording's
        (without ffmpeg to read it)."""
        said, rate = self.frames_said, self.sample_rate_hz
        if self.chained:
            self.warning = (
                f"{self.path} holds {self.chains} recordings one after another, and only the first "
                f"({frames_read / rate:.1f} s) was read: ffmpeg reads them all (apt-get install ffmpeg)"
            )
            return
        if said and said - frames_read > rate // 10:
            self.warning = (
                _short_file(self.path, frames_read / rate, said / rate)
                if self.cut_short
                else f"{self.path} decoded to {frames_read / rate:.1f} s of the {said / rate:.1f} s it says "
                "it holds: a damaged stretch of it was skipped"
            )
        elif self.format == "OGG" and (stretches := ogg.damaged_stretches(self.path)):
            self.warning = (
                f"{self.path} has {stretches} damaged stretch{'es' if stretches != 1 else ''} (Ogg pages "
                "whose checksums fail), which libsndfile decoded past: what they held is missing or garbled"
            )


# libsndfile's log of a WAV whose data chunk says more than the file holds, and of an AIFF's COMM
# chunk; a WAV written to a pipe says 0xFFFFFFFF (no length), which is no claim.
_WAV_DATA_SAID = re.compile(r"^data : (\d+) \(should be \d+\)", re.MULTILINE)
_WAV_BLOCK_ALIGN = re.compile(r"Block Align\s*: (\d+)")
_AIFF_FRAMES = re.compile(r"Frame count read from 'COMM' chunk \((\d+)\)")


def _header_frames(log: str) -> int | None:
    """The frames a WAV's or AIFF's header says it holds, where more than the file does."""
    said, align = _WAV_DATA_SAID.search(log), _WAV_BLOCK_ALIGN.search(log)
    if said and align and int(align.group(1)) and int(said.group(1)) < 0xFFFFFFFF:
        return int(said.group(1)) // int(align.group(1))
    aiff = _AIFF_FRAMES.search(log)
    return int(aiff.group(1)) if aiff else None


def _short_file(path, read_s: float, said_s: float) -> str:
    return (
        f"{path} ends after {read_s:.1f} s of the {said_s:.1f} s its header says it holds: the file is "
        "cut short (a copy or a download that did not finish?)"
    )


_PCM_FORMATS = {
    # name: (numpy dtype of one sample, scale to float in [-1, 1))
    "f32le": ("<f4", 1.0),
    "s16le": ("<i2", 1.0 / 32768.0),
}


class StdinSource(_ThreadSource):
    """Raw interleaved PCM from a binary stream (default ``sys.stdin.buffer``).

    The reader thread uses ``select`` + ``os.read`` on the stream's file descriptor, so it
    wakes every 50 ms to notice ``stop()`` even when no data comes; a partial frame is kept
    until the rest of it arrives.  The stream is read directly at the fd level: do not read
    from it elsewhere, and it is left open on stop.  A stream without a file descriptor (e.g.
    ``io.BytesIO``) is read with blocking ``read1`` calls in the daemon thread instead; stop()
    still returns at once but that thread lingers until the stream gives data or EOF.
    Never drops: it waits for ring space, which back-pressures the writer through the pipe.
    """

    kind = "stdin"
    live = True  # a pipe from a recorder or a player, as a rule

    def __init__(
        self, sample_rate_hz: int, fmt: str = "f32le", channels: int = 1, stream: BinaryIO | None = None
    ):
        if fmt not in _PCM_FORMATS:
            allowed = ", ".join(sorted(_PCM_FORMATS))
            raise SourceError(f"unknown raw PCM format {fmt!r}; use one of: {allowed}")
        if sample_rate_hz <= 0 or channels <= 0:
            raise SourceError("raw PCM input needs a positive sample rate and channel count")
        if stream is None:
            if sys.stdin is None:  # e.g. started without a console
                raise SourceError("this process has no stdin to read raw PCM from")
            stream = sys.stdin.buffer
            if stream.isatty():
                raise SourceError(
                    "stdin is a terminal, not raw audio; pipe PCM into it, e.g. "
                    f"`ffmpeg -i song.mp3 -ac {channels} -ar {sample_rate_hz} -f {fmt} - | ...`"
                )
        name = "stdin" if stream is sys.stdin.buffer else str(getattr(stream, "name", "stream"))
        super().__init__(name, sample_rate_hz, channels)
        self.fmt = fmt
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (AttributeError, OSError, ValueError):
            self._fd = None

    def _read_chunk(self) -> bytes | None:
        """Bytes read, b"" at EOF, or None when nothing arrived within the poll interval."""
        if self._fd is None:
            read = getattr(self._stream, "read1", self._stream.read)
            return read(_READ_CHUNK_BYTES)
        ready, _, _ = select.select([self._fd], [], [], _READ_POLL_S)
        if not ready:
            return None
        return os.read(self._fd, _READ_CHUNK_BYTES)

    def _run(self, ring: RingBuffer) -> None:
        dtype, scale = _PCM_FORMATS[self.fmt]
        frame_bytes = np.dtype(dtype).itemsize * self.channels
        pending = bytearray()
        stop = self._stop_event
        while not stop.is_set():
            chunk = self._read_chunk()
            if chunk is None:
                continue
            if not chunk:
                break  # EOF; a trailing partial frame (a truncated writer) is discarded
            pending += chunk
            usable = len(pending) - len(pending) % frame_bytes
            if not usable:
                continue
            samples = np.frombuffer(bytes(pending[:usable]), dtype=dtype)
            del pending[:usable]
            block = samples.astype(np.float32).reshape(-1, self.channels)
            if scale != 1.0:
                block *= scale
            if not _write_waiting(ring, block, stop):
                break


class UrlSource(Source):
    """Anything ffmpeg can decode (http(s), rtmp, a local file...), as mono float32 at ``sample_rate_hz``.

    Runs ``ffmpeg ... -f f32le -`` and reads its stdout (and stderr, for error messages and the
    input's duration) in one thread.  ``start()`` waits up to ``open_timeout_s`` for the first
    audio bytes: if ffmpeg fails before then (connection refused, HTTP 404, not audio) start()
    raises SourceError with ffmpeg's own last message.  Later, a *live stream* (ffmpeg reports no
    duration: a radio, an Icecast mount) that drops, stalls for ``URL_LOST_AFTER_S`` or whose
    ffmpeg fails is reconnected with ``reconnect`` (1, 2, 4 ... 30 s apart), else it is an
    ``error``; a finite input (a file, on disk or on a server) that ends normally ends, and one
    that breaks off is an ``error`` (reconnecting would play it again from its start).  Without
    ``realtime`` it never drops (a slow consumer back-pressures ffmpeg through the pipe); with
    ``realtime`` ffmpeg reads at native speed (``-re``) and, like a device, blocks that do not
    fit are dropped.  A network live stream is ``live`` either way (its server plays it at its
    pace): ``latency_ms`` counts from the audio's arrival, and an outage counts as a gap.
    """

    kind = "url"

    def __init__(
        self, url: str, sample_rate_hz: int = 16000, realtime: bool = False, open_timeout_s: float = 2.0
    ):
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise SourceError("ffmpeg not found; install it, e.g. apt-get install ffmpeg")
        super().__init__(url, sample_rate_hz, 1)
        self.url = url
        self.realtime = self.live = realtime
        self.open_timeout_s = open_timeout_s
        self._ffmpeg = ffmpeg
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._settled = threading.Event()  # first audio arrived, or ffmpeg ended
        self._stderr_lines: collections.deque[str] = collections.deque(maxlen=20)  # warnings and errors
        self.duration_known: bool | None = None  # what ffmpeg said of the input: None until it did
        # Why ffmpeg's input connection failed (timed out, cut short), which it logs and still exits
        # 0 after: the current ffmpeg's, None while it has not.
        self._broke: str | None = None
        self._finite: bool | None = None  # the input has a length (a file): None until known
        self._length_thread: threading.Thread | None = None  # learning it (_learn_length)
        self._input_format: str | None = None  # ffmpeg's name of the input's format
        # A file's length as its own header says it (open_file: libsndfile read it), checked at the
        # end as FileSource checks its own: a FLAC cut short ends early with no error from ffmpeg.
        self.expected_s: float | None = None
        self._frames_read = 0
        self._decode_errors, self._first_decode_error = 0, ""  # over every ffmpeg run: ``warning``

    def command(self) -> list[str]:
        """The ffmpeg command line this source runs."""
        # level+info: each stderr line says its level (errors for messages; the input's Duration).
        cmd = [self._ffmpeg, "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info"]
        if self.realtime:
            cmd.append("-re")
        if _NETWORK_URL.match(self.url):
            cmd += ["-rw_timeout", str(round(URL_LOST_AFTER_S * 1e6))]  # microseconds
        cmd += ["-i", self.url, "-vn", "-ac", "1", "-ar", str(self.sample_rate_hz), "-f", "f32le", "-"]
        return cmd

    @property
    def pid(self) -> int | None:
        """The ffmpeg process id while one was started (for diagnostics)."""
        return None if self._proc is None else self._proc.pid

    def _spawn(self) -> None:
        self._stderr_lines.clear()
        self._broke = None
        try:
            # In a process group of its own: a terminal's Ctrl-C goes to the whole job, and ffmpeg,
            # stopped by it, exited 255 before listen stopped it, a failure of the source (exit 1).
            # listen stops it (stop()); if listen dies, ffmpeg's next write to the pipe ends it.
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                process_group=0,
            )
        except OSError as exc:
            raise SourceError(f"cannot run ffmpeg ({self._ffmpeg}): {exc}") from exc

    # ffmpeg probes a live stream for a few seconds of it before its first audio (~2 s of Ogg);
    # with nothing coming it gives up after URL_LOST_AFTER_S, and the source reconnects.
    first_audio_s = URL_LOST_AFTER_S

    def start(self, ring: RingBuffer) -> None:
        """Start ffmpeg; raise SourceError if it fails within ``open_timeout_s``."""
        self._check_ring(ring)
        if self._proc is not None:
            raise RuntimeError(f"url source {self.name!r} is already started")
        self._spawn()
        self._thread = threading.Thread(
            target=self._guarded_run, args=(ring,), name="source-url", daemon=True
        )
        self._thread.start()
        self._settled.wait(self.open_timeout_s)
        if self.error is not None:
            message = self.error
            self.stop()
            raise SourceError(message)

    def _ffmpeg_failure(self, returncode: int) -> str:
        last = next((line for line in reversed(self._stderr_lines) if line), "")
        last = last.removeprefix(f"{self.url}: ")  # ffmpeg names the input too: once is enough
        if last:
            return f"ffmpeg could not read {self.url}: {last}"
        return f"ffmpeg exited with code {returncode} while reading {self.url}"

    def _guarded_run(self, ring: RingBuffer) -> None:
        try:
            self._follow(ring)
        except Exception as exc:  # any failure must become `error`, not a silently dead thread
            if not self._stop_event.is_set():
                self._fail(f"url source {self.url} failed: {exc}")
        finally:
            self._close_pipes()
            self.reconnecting = None
            self.finished = True
            self._settled.set()

    def _close_pipes(self) -> None:
        # This thread is the only reader of the pipes, so it closes them.
        proc = self._proc
        if proc is not None:
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    def _follow(self, ring: RingBuffer) -> None:
        """Read ffmpeg until the input ends; a live stream that is lost is started again."""
        stop = self._stop_event
        attempt, since = 0, 0.0
        while True:
            got_audio = self._run(ring)
            if stop.is_set():
                return
            returncode = self._reap()
            if stop.is_set():
                return
            broke = self._broke
            if self._length_thread is not None:
                self._length_thread.join()  # still asking the server: its answer, not a second ask
            if self._finite is None:  # no Duration line came: not asked yet
                self._finite = self._has_length()
            finite = self._finite
            if returncode == 0 and broke is None and finite:
                read_s = self._frames_read / self.sample_rate_hz
                if self.expected_s is not None and self.expected_s - read_s > 0.1 and self.warning is None:
                    self.warning = (  # ffmpeg cannot tell which: both end in silence from it
                        f"{self.url} decoded to {read_s:.1f} s of the {self.expected_s:.1f} s it says it "
                        "holds: a damaged stretch was skipped, or the file is cut short"
                    )
                return  # a finite input that ended: the end
            if returncode != 0:  # ffmpeg failed: its last message says why
                lost = self._ffmpeg_failure(-1 if returncode is None else returncode)
            elif broke is not None:  # its input's connection failed, and it exited 0 all the same
                lost = f"{self.url} broke off: {broke}"
            else:
                lost = f"the stream {self.url} ended (the server closed it)"
            if not self.reconnect or not self._settled_by_audio or finite:
                # Before the first audio start() reports it; else it ends the run: a finite input
                # that broke on the way too (reconnecting would play it again from its start).
                self._fail(lost)
                return
            if got_audio:
                attempt, since = 0, time.time()
            attempt += 1
            self._away(lost, attempt, since)
            if stop.wait(backoff_s(attempt)):
                return
            self._close_pipes()
            self._spawn()

    def _learn_length(self) -> None:
        """Once ffmpeg has logged the input's duration: does the input end?  A live stream does
        not, and it is ``live`` even unpaced, as its server plays it at its pace; read as a file's,
        its lag went unshown and an outage counted as no gap."""
        self._finite = self._has_length()
        self.live = self.realtime or not self._finite

    def _has_length(self) -> bool:
        """Whether the input ends: ffmpeg gave its duration (or logged no Duration line at all),
        it is not on a network (a file on disk whose length ffmpeg cannot tell: a FLAC written to
        a pipe), or a server says its length.  Not asked of a playlist (HLS, DASH), whose length
        ffmpeg knows when it has one: a live one's playlist has a Content-Length too."""
        if self.duration_known is not False or not _NETWORK_URL.match(self.url):
            return True
        return self._input_format not in _PLAYLIST_FORMATS and self._finite_over_http()

    def _finite_over_http(self) -> bool:
        """True when the URL is a file on an HTTP server (it answers with a Content-Length; ffmpeg
        gives no duration for some formats over HTTP); False for a live stream (no length, or the
        server is gone).  Asked once, of an input ffmpeg gives no duration: when ffmpeg says so
        (it is connected by then: a server of one client at a time, asked first, would refuse
        ffmpeg), or at its end."""
        if not self.url.lower().startswith(("http://", "https://")):
            return False
        try:
            with urllib.request.urlopen(self.url, timeout=2.0) as response:
                return response.headers.get("Content-Length") is not None
        except (OSError, ValueError, http.client.HTTPException):
            # Refused, timed out, an HTTP error (not there any more), or not HTTP at all: a
            # SHOUTcast server answers "ICY 200 OK" (a live stream).
            return False

    def _reap(self) -> int | None:
        proc = self._proc
        try:
            return proc.wait(timeout=5.0)  # both pipes are closed: it is exiting
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    _settled_by_audio = False  # the first audio of this source arrived (start() has returned)

    def _run(self, ring: RingBuffer) -> bool:
        """Read the current ffmpeg's output until it closes its pipes; True if audio came."""
        proc = self._proc
        assert proc is not None and proc.stdout is not None and proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        open_fds = {out_fd, err_fd}
        pending = bytearray()
        stderr_tail = b""
        stop = self._stop_event
        got_audio = False
        while open_fds and not stop.is_set():
            ready, _, _ = select.select(list(open_fds), [], [], _READ_POLL_S)
            for fd in ready:
                chunk = os.read(fd, _READ_CHUNK_BYTES)
                if not chunk:
                    open_fds.discard(fd)
                elif fd == err_fd:
                    lines = (stderr_tail + chunk).split(b"\n")
                    stderr_tail = lines.pop()
                    for line in lines:
                        self._stderr(line.decode(errors="replace"))
                else:
                    pending += chunk
                    usable = len(pending) - len(pending) % 4
                    if not usable:
                        continue
                    block = np.frombuffer(bytes(pending[:usable]), dtype="<f4").astype(np.float32)
                    del pending[:usable]
                    if not got_audio:
                        got_audio = self._settled_by_audio = True
                        self.reconnecting = None  # back
                    self._settled.set()
                    self._frames_read += block.size
                    if self.realtime:
                        ring.write(block.reshape(-1, 1))
                    elif not _write_waiting(ring, block.reshape(-1, 1), stop):
                        return got_audio
        if stderr_tail:
            self._stderr(stderr_tail.decode(errors="replace"))
        return got_audio

    def _stderr(self, line: str) -> None:
        """One line of ffmpeg's log (``-loglevel level+info``): keep warnings and errors, note the
        input's duration ("Duration: N/A" is a live stream)."""
        level = _FFMPEG_LEVEL.search(line)
        if level is None:
            return
        text = line[level.end() :].strip()
        if level.group(1) in ("error", "fatal") and (
            _FFMPEG_PROTOCOL.search(line[: level.start()]) or text.startswith(f"{self.url}: ")
        ):
            # The first says most: "Stream ends prematurely at 103835, should be 961350" comes
            # before "Input/output error"; a stall is "Connection timed out".
            self._broke = self._broke or text.removeprefix(f"{self.url}: ")
        elif (
            level.group(1) == "error"
            and not _FFMPEG_OUTPUT.search(line[: level.start()])
            and not (self._input_format is None and _FFMPEG_OGG_LENGTH_PROBE.search(line))
        ):
            # A demuxer's or a decoder's: a damaged part, which it skips.  (The output side's are
            # not the input's damage: a chained Ogg stream's next song restarts its timestamps.)
            self._decode_errors += 1
            self._first_decode_error = self._first_decode_error or text
            n = self._decode_errors
            self.warning = (
                f"ffmpeg met damaged data in {self.url} ({n} error message{'s' if n != 1 else ''}, the "
                f"first: {self._first_decode_error}); what it could not decode was skipped"
            )
        if level.group(1) == "info":
            if text.startswith("Duration:") and self.duration_known is None:
                self.duration_known = not text.startswith("Duration: N/A")
                # ffmpeg is connected by now (it has probed the input: a server of one client at a
                # time would refuse it if asked first).  In a thread of its own: the server may take
                # its time to answer (that one never does), and the audio must not wait for it.
                self._length_thread = threading.Thread(
                    target=self._learn_length, name="source-url-length", daemon=True
                )
                self._length_thread.start()
            elif text.startswith("Input #0, ") and self._input_format is None:
                # "Input #0, hls, from 'http://…'" (a name may hold commas: "mov,mp4,m4a,…").
                self._input_format = text.split(", ")[1]
            return
        self._stderr_lines.append(text)

    def stop(self) -> None:
        """Terminate ffmpeg (kill after 0.3 s), reap it, and join the reader; idempotent."""
        self._stop_event.set()
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=_TERMINATE_GRACE_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            else:
                proc.wait()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT_S)
        self.reconnecting = None
        self.finished = True
        self._settled.set()


# "[tcp @ 0x55d0...] [error] Connection refused": the level, after any context.
_FFMPEG_LEVEL = re.compile(r"\[(fatal|error|warning|info)\] ")
# ffmpeg's network protocols: a URL of one (what -rw_timeout applies to; a file cannot stall), and
# the context of a message of one (its input connection's, not a decoder's: a bad frame is no break).
_NETWORK_PROTOCOLS = r"https?|tcp|tls|rtmp\w*|rtsp|udp|srt|icecast|mmsh?"
_NETWORK_URL = re.compile(rf"({_NETWORK_PROTOCOLS})://", re.IGNORECASE)
_FFMPEG_PROTOCOL = re.compile(rf"\[({_NETWORK_PROTOCOLS}) @ ")
# ffmpeg's playlist formats: a duration when the playlist is of a whole file, none when it is live.
_PLAYLIST_FORMATS = {"hls", "dash"}
# The context of a message of ffmpeg's output side (5.x: the f32le muxer, its encoder, the
# resampler; 6.x and later name the output and its stream): not about the input's data.
_FFMPEG_OUTPUT = re.compile(r"\[(f32le|pcm_f32le|SWR|out#|aost#)")
# Before it names the input, ffmpeg's Ogg demuxer looks for the length at the file's end: in a
# chained Opus file it finds the last recording there, a stream it cannot take as the first's,
# and says so at error level; then it reads every chain to its end.  No damaged data.
_FFMPEG_OGG_LENGTH_PROBE = re.compile(r"\[ogg @ [^]]*\] \[error\] failed to create or replace stream")


def open_file(path: str | os.PathLike, realtime: bool = False, rate_hz: int | None = None) -> Source:
    """An audio file: read by libsndfile (``FileSource``), or, for what it cannot decode (AAC/M4A,
    video, ...), by ffmpeg (a ``UrlSource`` on the path, at ``rate_hz`` or 48 kHz); the same
    checks and messages for ``listen --file`` and ``analyze``."""
    try:
        source = FileSource(path, realtime=realtime)
    except SourceError as exc:
        if not str(exc).startswith("cannot decode") or shutil.which("ffmpeg") is None:
            raise
        first = exc
    else:
        through_ffmpeg = source.length_unknown or source.chained or source.format in ("MP3", "FLAC")
        if not through_ffmpeg or shutil.which("ffmpeg") is None:
            return source
        # A FLAC written to a pipe says no length, and libsndfile, seeking for one at its end,
        # fails there ("Internal psf_fseek() failed", exit 1 after all its audio); of a chained Ogg
        # file it reads the first recording alone; at a damaged stretch of an MP3 that its mpg123
        # cannot resync in, it fails ("Unspecified internal error", the rest unread) and mpg123
        # writes its notes on stderr, and so at a FLAC's lost sync ("flac decoder lost sync"):
        # ffmpeg reads them to the end, skipping damage with a warning.  At the file's own rate
        # where none is asked (analyze resamples it once, not twice); checked against the length
        # the file says, as FileSource checks it (a FLAC cut short ends early, ffmpeg silent).
        routed = _file_through_ffmpeg(path, realtime, rate_hz or source.sample_rate_hz)
        if source.frames_said and source.format == "FLAC":
            routed.expected_s = source.frames_said / source.sample_rate_hz
        return routed
    # Ask ffmpeg now (a fraction of a second), so a file nothing can read fails here, before the
    # model loads, with libsndfile's message and ffmpeg's reason.
    probe = subprocess.run(
        [shutil.which("ffmpeg"), "-nostdin", "-v", "error", "-i", str(path), "-t", "0.1", "-vn", "-f", "null", "-"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else ""
    if probe.returncode != 0 or "Output file #0 does not contain any stream" in probe.stderr:
        raise SourceError(f"{first}; ffmpeg cannot read it either: {reason or 'no audio stream'}")
    return _file_through_ffmpeg(path, realtime, rate_hz)


def _file_through_ffmpeg(path: str | os.PathLike, realtime: bool, rate_hz: int | None) -> UrlSource:
    source = UrlSource(str(path), sample_rate_hz=rate_hz or 48000, realtime=realtime)
    source.kind = "file"  # what the user gave: status and messages say file
    return source


def make_source(args: Namespace, rate_hz: int | None) -> Source:
    """The source ``listen``'s options name (a device by default); SourceError if it cannot be.

    ``rate_hz``: what ffmpeg decodes a ``--url`` to (the model's rate); the others ignore it.
    """
    if args.file:
        return open_file(args.file, realtime=args.realtime, rate_hz=rate_hz)
    if args.stdin:
        return StdinSource(args.rate, fmt=args.format, channels=args.channels or 1)
    if args.url:
        source = UrlSource(args.url, sample_rate_hz=rate_hz, realtime=args.realtime)
    else:
        device = int(args.device) if args.device is not None and args.device.isdigit() else args.device
        source = DeviceSource(device, channels=args.channels)
    # A stream or a device that is lost comes back by itself, unless the user wants a hard stop.
    source.reconnect = not getattr(args, "no_reconnect", True)
    return source
