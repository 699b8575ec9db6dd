"""A paced virtual microphone: music played into a JACK server that runs on a timer, captured by PortAudio.

A capture device that delivers at the sound card's pace (one period every 21 ms), for the
end-to-end bench and the tests (``tests/realtime/paced_mic.py`` wraps it in a fixture):

- ``jackd`` runs on its ``dummy`` backend (no sound card; a timer drives the graph at
  48 kHz, 1024-frame periods), as a private server;
- the microphone is an ALSA ``jack`` PCM (Debian ``libasound2-plugins``) defined in an
  asoundrc: PortAudio's ALSA host API lists it like a sound card.  Its JACK client takes the
  PCM's name and, once a stream opens, connects its input port(s) to ``system:capture_1`` (the
  dummy backend's input: silence);
- the player is ``aplay`` on a second ALSA ``jack`` PCM whose output ports connect to the
  microphone's input ports.  JACK can only connect ports that exist, so the player starts
  when a stream has opened the microphone: the music starts with the capture, about one
  JACK period after it opened, and silence follows its end.

The capturing program must be a *subprocess* run with ``mic.env`` (PortAudio reads the ALSA
configuration and finds the JACK server when it initialises)::

    with JackServer(folder) as server:
        mic = server.microphone(audio, 16000)      # or server.microphone(Path("song.ogg"))
        proc = subprocess.Popen([..., "--device", mic.device], env=mic.env)
        assert mic.playing.wait(30), mic.error

Needs ``jackd`` (Debian ``jackd2``), ``aplay`` (``alsa-utils``) and the ALSA jack plugin
(``libasound2-plugins``): ``missing()`` says which is absent.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

RATE_HZ = 48000
PERIOD_FRAMES = 1024
ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
_PLUGIN = "libasound_module_pcm_jack.so"
_PLUGIN_DIRS = ("/usr/lib/*/alsa-lib", "/usr/lib/alsa-lib", "/usr/lib64/alsa-lib")
_SILENT_INPUT = "system:capture_1"  # the dummy backend's capture port: zeros, paced by its timer
_POLL_S = 0.02
# What jackd and the player log when a JACK client failed: one that missed a cycle (a late process on
# a busy machine; the player's, or the capturing device's own, whose audio then goes out of step)
# or could not connect to the server.  A process that imports sounddevice is a client too,
# "PortAudio" (PortAudio's JACK host API, ports or none).  `listen` ends by os._exit, which leaves
# that client to die with the process: many of its stops log an xrun of it, after its audio was in.
# (Closing PortAudio first would spare that, but where the server died meanwhile PortAudio's JACK
# host API aborts the process on its way out: an assertion on jack_client_close.)
JACK_FAULTS = (
    "JackEngine::XRun",
    "Cannot create new client",
    "Cannot open client",
    "Cannot connect to server socket",
    "Cannot connect client socket",
)
_START_TIMEOUT_S = 10.0


class PacedMicError(RuntimeError):
    """The JACK server would not start, or the microphone cannot be made."""


@dataclass
class PacedMic:
    """What ``JackServer.microphone(...)`` returns: run the capturing program with ``env``, open ``device``."""

    device: str  # the ALSA PCM name PortAudio lists (``--device`` for realtime.listen)
    env: dict[str, str]  # os.environ plus ALSA_CONFIG_PATH and the JACK server to use
    rate_hz: int  # the server's rate: the device opens only at this rate
    channels: int
    duration_s: float  # how long the music plays
    playing: threading.Event = field(default_factory=threading.Event)  # set once the player started
    started_at: float | None = None  # time.time() when the player was started
    error: str | None = None  # why the player could not start, if it could not
    player: subprocess.Popen | None = None
    folder: Path | None = None  # the server's folder: its log and the player's

    def jack_fault(self) -> str | None:
        """The first line of the server's or the player's log naming one of ``JACK_FAULTS``, or None."""
        for log in self._log_paths():
            if log.is_file():
                for line in log.read_text(errors="replace").splitlines():
                    if line.startswith(JACK_FAULTS):
                        return f"{log.name}: {line.strip()}"
        return None

    def _log_paths(self) -> list[Path]:
        return (
            []
            if self.folder is None
            else [self.folder / "jackd.log", self.folder / f"{self.device}_player.log"]
        )

    def logs(self, chars: int = 1500) -> str:
        """The ends of the JACK server's log (its xruns: a client that missed a cycle) and the
        player's, for a test's failure message."""
        if self.folder is None:
            return "(no logs)"
        parts = []
        for log in self._log_paths():
            text = log.read_text(errors="replace").strip() if log.is_file() else "(none)"
            parts.append(f"--- {log.name}:\n{text[-chars:]}")
        return "\n".join(parts)


def _plugin_present() -> bool:
    return any(
        (Path(d) / _PLUGIN).is_file() for pattern in _PLUGIN_DIRS for d in Path("/").glob(pattern.lstrip("/"))
    )


def missing() -> str | None:
    """Why a paced microphone cannot run here (a tool or plugin to install), or None if it can."""
    for tool, package in (("jackd", "jackd2"), ("jack_lsp", "jackd2"), ("aplay", "alsa-utils")):
        if shutil.which(tool) is None:
            return f"paced microphone needs `{tool}` (apt-get install {package})"
    if not ALSA_CONF.is_file() or not _plugin_present():
        return f"paced microphone needs ALSA's jack PCM plugin {_PLUGIN} (apt-get install libasound2-plugins)"
    return None


def _connections(env: dict[str, str]) -> dict[str, set[str]] | None:
    """port -> the ports it is connected to, from ``jack_lsp -c``; None if the server is not up,
    or did not answer within 10 s (a loaded machine: CI once saw a call hang; the callers poll)."""
    try:
        proc = subprocess.run(["jack_lsp", "-c"], env=env, capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    ports: dict[str, set[str]] = {}
    port = None
    for line in proc.stdout.splitlines():
        if line.startswith((" ", "\t")):
            if port is not None:
                ports[port].add(line.strip())
        elif line:
            port = line
            ports[port] = set()
    return ports


def end_process(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``; reaps it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _play_when_captured(
    mic: PacedMic, wav: Path, mic_ports: list[str], log: Path, stop: threading.Event
) -> None:
    """Start ``aplay`` into the microphone's ports once a stream has opened it (runs in a thread)."""
    try:
        # PortAudio's enumeration only opens the PCM; a stream's hw_params connects its ports
        # (to the silent input), and only then can the player's ports connect to them.
        while not stop.wait(_POLL_S):
            ports = _connections(mic.env) or {}
            if all(_SILENT_INPUT in ports.get(port, ()) for port in mic_ports):
                break
        else:
            return
        mic.started_at = time.time()
        with open(log, "wb") as out:
            mic.player = subprocess.Popen(
                ["aplay", "-q", "-D", f"{mic.device}_player", str(wav)],
                env=mic.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            code = mic.player.wait(0.5)  # a port it cannot connect makes it fail at once
        except subprocess.TimeoutExpired:
            code = 0
        if code != 0:
            mic.error = f"aplay exited with {code}: {log.read_text().strip()}"
            return
        mic.playing.set()
    except Exception as exc:  # reported to the caller through mic.error
        mic.error = f"paced_mic player failed: {exc!r}"


class JackServer:
    """A private ``jackd`` on the dummy backend, and one paced microphone on it.

    ``period_frames``: the server's period (1024 frames = 21.3 ms by default).  ``folder`` holds the server's log, the asoundrc and the resampled music.  Use it as a
    context manager (or call ``close()``): everything it started is stopped at the end.
    ``name``: the server's name; reuse one name for servers that run one after another (a test
    worker's), so that the entry a crashed server left in JACK's registry is reclaimed.
    Raises ``PacedMicError`` when the server does not come up within 10 s.
    """

    def __init__(self, folder: Path, name: str | None = None, period_frames: int = PERIOD_FRAMES):
        if period_frames < 16 or period_frames & (period_frames - 1):
            raise ValueError(f"JACK periods are a power of two of at least 16 frames, not {period_frames}")
        self.folder = Path(folder)
        self.period_frames = period_frames
        self.server = name or f"moodstream-{os.getpid()}-{self.folder.name}"
        env = dict(os.environ)
        env.update(
            JACK_DEFAULT_SERVER=self.server,  # every JACK client (PortAudio, the plugin, jack_lsp) uses it
            JACK_NO_START_SERVER="1",  # and none starts a server of its own
            JACK_NO_AUDIO_RESERVATION="1",  # no D-Bus device reservation (there is no card)
        )
        self._conf = self.folder / "asoundrc"
        env["ALSA_CONFIG_PATH"] = f"{ALSA_CONF}:{self._conf}"
        self.env = env
        self.mics: list[PacedMic] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._log = open(self.folder / "jackd.log", "wb")
        # --no-realtime: no SCHED_FIFO in a container; the dummy driver's timer paces it anyway.
        command = ["jackd", "--name", self.server, "--no-realtime"]
        command += ["-d", "dummy", "-r", str(RATE_HZ), "-p", str(period_frames)]
        self._jackd = subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while (ports := _connections(env)) is None or _SILENT_INPUT not in ports:
            if self._jackd.poll() is not None or time.monotonic() > deadline:
                self.close()
                log = (self.folder / "jackd.log").read_text(errors="replace")[-500:]
                raise PacedMicError(f"jackd (dummy backend) did not start: {log}")
            time.sleep(0.05)

    def microphone(self, audio, rate_hz: int | None = None, *, name: str = "moodmic") -> PacedMic:
        """A capture device ``name`` that plays ``audio`` once, from when a stream opens it.

        ``audio`` is a float array, (frames,) or (frames, channels) with ``rate_hz``, or the
        path of an audio file.  It is resampled to the server's 48 kHz; the device has as many
        channels as the audio (at most 2).  One device per server.
        """
        if self.mics:
            raise PacedMicError("a JackServer makes one microphone")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
            raise ValueError(f"device name {name!r} must be a plain ALSA identifier")
        if isinstance(audio, (str, os.PathLike)):
            audio, rate_hz = sf.read(audio, dtype="float32", always_2d=True)
        if rate_hz is None:
            raise ValueError("give rate_hz with an array")
        audio = np.asarray(audio, dtype=np.float32)
        audio = audio.reshape(len(audio), -1)
        channels = audio.shape[1]
        if not 1 <= channels <= 2:
            raise ValueError(f"paced_mic plays 1 or 2 channels, not {channels}")
        if rate_hz != RATE_HZ:
            audio = soxr.resample(audio, rate_hz, RATE_HZ)
        wav = self.folder / f"{name}.wav"
        sf.write(wav, audio, RATE_HZ, subtype="FLOAT")
        mic_ports = [f"{name}:in_{i:03d}" for i in range(channels)]
        capture = " ".join(f'{i} "{_SILENT_INPUT}"' for i in range(channels))
        playback = " ".join(f'{i} "{port}"' for i, port in enumerate(mic_ports))
        # The plugin names its JACK client after `name`; it connects the ports at hw_params time.
        self._conf.write_text(
            f'pcm.{name} {{ type jack name "{name}" capture_ports {{ {capture} }} }}\n'
            f'pcm.{name}_player {{ type jack name "{name}_player" playback_ports {{ {playback} }} }}\n'
        )
        mic = PacedMic(name, self.env, RATE_HZ, channels, len(audio) / RATE_HZ, folder=self.folder)
        self.mics.append(mic)
        thread = threading.Thread(
            target=_play_when_captured,
            args=(mic, wav, mic_ports, self.folder / f"{name}_player.log", self._stop),
            name=f"paced-mic-{name}",
            daemon=True,
        )
        thread.start()
        self._threads.append(thread)
        return mic

    def close(self) -> None:
        """Stop the player thread, the player and the server; safe to call twice."""
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        for mic in self.mics:
            if mic.player is not None:
                end_process(mic.player)
        # A jackd that is killed leaves its entry in JACK's shared registry (8 entries; one of the
        # same name is reclaimed, others stay until a reboot): give it time to unregister itself.
        end_process(self._jackd, grace_s=10.0)
        self._log.close()

    def __enter__(self) -> JackServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
