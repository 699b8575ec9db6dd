"""A paced virtual microphone: music played into a JACK server that runs on a timer, captured by PortAudio.

The ``virtual_mic`` fixture (conftest.py) delivers frames as fast as they are read; this one
delivers them at the sound card's pace, so a live consumer sees one period every 21 ms:

- ``jackd`` runs on its ``dummy`` backend (no sound card; a timer drives the graph at
  48 kHz, 1024-frame periods), as a private server named per test;
- the microphone is an ALSA ``jack`` PCM (Debian ``libasound2-plugins``) defined in an
  asoundrc: PortAudio's ALSA host API lists it like a sound card.  Its JACK client takes the
  PCM's name and, once a stream opens, connects its input port(s) to ``system:capture_1`` (the
  dummy backend's input: silence);
- the player is ``aplay`` on a second ALSA ``jack`` PCM whose output ports connect to the
  microphone's input ports.  JACK can only connect ports that exist, so the fixture starts the
  player when a stream has opened the microphone: the music starts with the capture, about one
  JACK period after it opened, and silence follows its end.

Tests use it from a subprocess (PortAudio reads the ALSA configuration and finds the JACK
server when it initialises)::

    from tests.realtime.paced_mic import paced_mic  # noqa: F401

    def test_live(paced_mic):
        mic = paced_mic(audio, 16000)          # or paced_mic(Path("song.ogg"))
        proc = subprocess.Popen([..., "--device", mic.device], env=mic.env)
        assert mic.playing.wait(30), mic.error

Needs ``jackd`` (Debian ``jackd2``), ``aplay`` (``alsa-utils``) and the ALSA jack plugin
(``libasound2-plugins``); skips without them.
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
import pytest
import soundfile as sf
import soxr

RATE_HZ = 48000
PERIOD_FRAMES = 1024
ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
_PLUGIN = "libasound_module_pcm_jack.so"
_PLUGIN_DIRS = ("/usr/lib/*/alsa-lib", "/usr/lib/alsa-lib", "/usr/lib64/alsa-lib")
_SILENT_INPUT = "system:capture_1"  # the dummy backend's capture port: zeros, paced by its timer
_POLL_S = 0.02


@dataclass
class PacedMic:
    """What ``paced_mic(...)`` returns: run the capturing program with ``env``, open ``device``."""

    device: str  # the ALSA PCM name PortAudio lists (``--device`` for realtime.listen)
    env: dict[str, str]  # os.environ plus ALSA_CONFIG_PATH and the JACK server to use
    rate_hz: int  # the server's rate: the device opens only at this rate
    channels: int
    duration_s: float  # how long the music plays
    playing: threading.Event = field(default_factory=threading.Event)  # set once the player started
    started_at: float | None = None  # time.time() when the player was started
    error: str | None = None  # why the player could not start, if it could not
    player: subprocess.Popen | None = None


def _plugin_present() -> bool:
    return any(
        (Path(d) / _PLUGIN).is_file() for pattern in _PLUGIN_DIRS for d in Path("/").glob(pattern.lstrip("/"))
    )


def _connections(env: dict[str, str]) -> dict[str, set[str]] | None:
    """port -> the ports it is connected to, from ``jack_lsp -c``; None if the server is not up."""
    proc = subprocess.run(["jack_lsp", "-c"], env=env, capture_output=True, text=True, timeout=10)
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


def _end(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
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
    except Exception as exc:  # reported to the test through mic.error
        mic.error = f"paced_mic player failed: {exc!r}"


@pytest.fixture
def paced_mic(tmp_path_factory):
    """Factory: ``make(audio, rate_hz=None, *, name="moodmic") -> PacedMic``, a paced capture device.

    ``audio`` is a float array, (frames,) or (frames, channels) with ``rate_hz``, or the path
    of an audio file.  It is resampled to the server's 48 kHz and played once into the device
    ``name`` as soon as a stream opens it (the player waits for that); ``mic.playing`` is
    set then.  The device has as many channels as the audio (at most 2).  One device per
    test.  Everything (server, player) is stopped at teardown.
    """
    for tool, package in (("jackd", "jackd2"), ("jack_lsp", "jackd2"), ("aplay", "alsa-utils")):
        if shutil.which(tool) is None:
            pytest.skip(f"paced microphone needs `{tool}` (apt-get install {package})")
    if not ALSA_CONF.is_file() or not _plugin_present():
        pytest.skip(
            f"paced microphone needs ALSA's jack PCM plugin {_PLUGIN} (apt-get install libasound2-plugins)"
        )
    root = tmp_path_factory.mktemp("paced_mic")
    server = f"moodstream-{os.getpid()}-{root.name}"
    env = dict(os.environ)
    env.update(
        JACK_DEFAULT_SERVER=server,  # every JACK client (PortAudio, the plugin, jack_lsp) uses it
        JACK_NO_START_SERVER="1",  # and none starts a server of its own
        JACK_NO_AUDIO_RESERVATION="1",  # no D-Bus device reservation (there is no card)
    )
    conf = root / "asoundrc"
    env["ALSA_CONFIG_PATH"] = f"{ALSA_CONF}:{conf}"
    log = open(root / "jackd.log", "wb")  # closed at teardown
    # --no-realtime: no SCHED_FIFO in a container; the dummy driver's timer paces it anyway.
    command = ["jackd", "--name", server, "--no-realtime"]
    command += ["-d", "dummy", "-r", str(RATE_HZ), "-p", str(PERIOD_FRAMES)]
    jackd = subprocess.Popen(
        command,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    mics: list[PacedMic] = []
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        deadline = time.monotonic() + 10
        while (ports := _connections(env)) is None or _SILENT_INPUT not in ports:
            if jackd.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"jackd (dummy backend) did not start: {(root / 'jackd.log').read_text()[-500:]}")
            time.sleep(0.05)

        def make(audio, rate_hz: int | None = None, *, name: str = "moodmic") -> PacedMic:
            if mics:
                raise RuntimeError("paced_mic makes one device per test")
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
            wav = root / f"{name}.wav"
            sf.write(wav, audio, RATE_HZ, subtype="FLOAT")
            mic_ports = [f"{name}:in_{i:03d}" for i in range(channels)]
            capture = " ".join(f'{i} "{_SILENT_INPUT}"' for i in range(channels))
            playback = " ".join(f'{i} "{port}"' for i, port in enumerate(mic_ports))
            # The plugin names its JACK client after `name`; it connects the ports at hw_params time.
            conf.write_text(
                f'pcm.{name} {{ type jack name "{name}" capture_ports {{ {capture} }} }}\n'
                f'pcm.{name}_player {{ type jack name "{name}_player" playback_ports {{ {playback} }} }}\n'
            )
            mic = PacedMic(name, env, RATE_HZ, channels, len(audio) / RATE_HZ)
            mics.append(mic)

            thread = threading.Thread(
                target=_play_when_captured,
                args=(mic, wav, mic_ports, root / f"{name}_player.log", stop),
                name=f"paced-mic-{name}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
            return mic

        yield make
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        for mic in mics:
            if mic.player is not None:
                _end(mic.player)
        _end(jackd)
        log.close()
