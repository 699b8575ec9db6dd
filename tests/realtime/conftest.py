"""Fixtures for real-audio tests: the shared music clip, and a virtual ALSA microphone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MUSIC_CLIP = Path("4q") / "audio" / "Q1" / "MT0000040632.ogg"  # under shared data: 16 kHz mono Opus, 30 s

ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
# A rate converter that does not exist: an ALSA `plug` PCM then cannot convert, so it opens
# only at its slave's rate; PortAudio still reports a default rate (44100) it cannot open.
_NO_RATE_CONVERTER = "moodstream_no_such_rate_converter"


@pytest.fixture(scope="session")
def music_clip(shared_data) -> Path:
    """Path of a real 30 s music clip in ``../shared/data`` (the suite's ``shared_data``); skips without it."""
    path = shared_data / MUSIC_CLIP
    if not path.is_file():
        pytest.skip(f"shared music clip not found at {path} (clone ../shared beside the repo)")
    return path


def _file_pcm(infile: Path, capture_copy: str) -> str:
    """An ALSA `file` PCM over `null`: capture yields infile's bytes, unpaced."""
    return f'{{ type file slave.pcm {{ type null }} file "{capture_copy}" infile "{infile}" format "raw" }}'


def _alsa_env(config_file: Path, base_env: dict[str, str] | None) -> dict[str, str]:
    if base_env is None:
        env = dict(os.environ)
        env["ALSA_CONFIG_PATH"] = str(ALSA_CONF)
    else:
        env = dict(base_env)
    env["ALSA_CONFIG_PATH"] += f":{config_file}"
    return env


@pytest.fixture(scope="session")
def _alsa_virtual_devices(tmp_path_factory) -> None:
    """Skip unless ALSA + PortAudio can show a config-defined capture PCM (checked once)."""
    if not sys.platform.startswith("linux") or not ALSA_CONF.is_file():
        pytest.skip(f"virtual ALSA microphone needs Linux ALSA ({ALSA_CONF} missing)")
    root = tmp_path_factory.mktemp("alsa_probe")
    infile = root / "in.raw"
    infile.write_bytes(b"\0" * 4096)
    conf = root / "asoundrc"
    conf.write_text(f"pcm.moodstream_probe {_file_pcm(infile, '/dev/null')}\n")
    code = "import sounddevice as sd; print([d['name'] for d in sd.query_devices()])"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code],
            env=_alsa_env(conf, None),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.skip("PortAudio device enumeration timed out")
    if proc.returncode != 0 or "moodstream_probe" not in proc.stdout:
        pytest.skip(f"PortAudio does not show ALSA config PCMs here: {proc.stderr.strip()[-500:]}")


@pytest.fixture
def virtual_mic(tmp_path_factory, _alsa_virtual_devices):
    """Factory for virtual ALSA capture devices that PortAudio lists like a real microphone.

    ``make(samples, name="testmic", *, only_rate_hz=None, fail_after_start=False, base_env=None)``
    writes ``samples`` ((frames, channels) or (frames,) float32) to a raw file and an asoundrc
    defining ``pcm.<name>`` as an ALSA ``file`` plugin PCM that reads it, and returns the
    environment (a copy of os.environ with ``ALSA_CONFIG_PATH`` set) under which PortAudio
    shows ``<name>`` as an input device.  PortAudio reads ALSA's configuration when it
    initialises (sounddevice does this at import), so use the env in a *subprocess*::

        def test_listen_from_mic(virtual_mic, music):           # music: (frames, 1) float32
            env = virtual_mic(music, name="testmic")
            proc = subprocess.run(
                [sys.executable, "-m", "realtime.listen", "--device", "testmic"],
                env=env, capture_output=True, text=True, timeout=60,
            )

    What the device delivers:

    - the raw bytes of ``samples``, unconverted, at whatever rate the stream opens (PortAudio
      reports a default of 44100 Hz; the bytes are the same at any rate).  Open it as a
      float32 stream with as many channels as ``samples`` has columns: frames are interleaved,
      so a 2-channel stream over mono samples would pair up consecutive samples.
    - unpaced: the null backend completes periods as fast as they are read (tens of millions
      of frames per second), so a consumer that is slower than that sees a full ring and drops.
    - after the last sample, the plugin keeps delivering stale buffer contents (not silence);
      append zeros to ``samples`` if a test reads past the end.

    Options: ``only_rate_hz`` makes the device open only at that rate (a ``plug`` PCM with a
    missing rate converter; PortAudio reports that rate as the default); ``fail_after_start`` makes
    the stream open and start, then die with a host error on the first period (the plugin's
    capture copy goes to an unwritable path), like an unplugged device.  ``base_env``: an env
    returned by an earlier call, to show several virtual devices at once.  Calling ``make``
    again with the same name rewrites that device's files (the last entry of
    ``ALSA_CONFIG_PATH``); ALSA re-reads a replaced config file on the next open, so a running
    process sees a device change after PortAudio enumerated it.
    """
    root = tmp_path_factory.mktemp("virtual_mic")

    def make(
        samples: np.ndarray,
        name: str = "testmic",
        *,
        only_rate_hz: int | None = None,
        fail_after_start: bool = False,
        base_env: dict[str, str] | None = None,
    ) -> dict[str, str]:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
            raise ValueError(f"virtual device name {name!r} must be a plain ALSA identifier")
        device_dir = root / name
        device_dir.mkdir(exist_ok=True)
        infile = device_dir / "in.raw"
        np.ascontiguousarray(samples, dtype="<f4").tofile(infile)
        # The file plugin also records what it captured to `file`; /dev/null discards it.  A
        # rate-templated path under a missing directory fails only when the first period is
        # written, i.e. after the stream has started.
        capture_copy = str(device_dir / "missing" / "%r.raw") if fail_after_start else "/dev/null"
        pcm = _file_pcm(infile, capture_copy)
        if only_rate_hz is not None:
            pcm = (
                f"{{ type plug slave {{ pcm {pcm} rate {int(only_rate_hz)} }} "
                f'rate_converter "{_NO_RATE_CONVERTER}" }}'
            )
        conf = device_dir / "asoundrc"
        conf.write_text(f"pcm.{name} {pcm}\n")
        return _alsa_env(conf, base_env)

    return make
