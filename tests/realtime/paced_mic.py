"""The ``paced_mic`` fixture: a capture device paced at real time (``bench.paced_mic``, JACK's dummy backend).

The ``virtual_mic`` fixture (conftest.py) delivers frames as fast as they are read; this one
delivers them at the sound card's pace, so a live consumer sees one period every 21 ms.
``bench/paced_mic.py`` explains how (a private ``jackd`` on a timer, an ALSA ``jack`` PCM as
the microphone, ``aplay`` as the player that starts when a stream opens the microphone).

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

import pytest

from bench.paced_mic import PERIOD_FRAMES, RATE_HZ, JackServer, PacedMic, PacedMicError, missing

__all__ = ["PERIOD_FRAMES", "RATE_HZ", "PacedMic", "jack_server_name", "paced_mic"]


def jack_server_name() -> str:
    """One JACK server name per test worker: its servers run one after another, and a name that
    comes back reclaims the registry entry of one that died (JACK keeps only 8)."""
    return f"moodstream-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


@pytest.fixture
def paced_mic(tmp_path_factory):
    """Factory: ``make(audio, rate_hz=None, *, name="moodmic") -> PacedMic``, a paced capture device.

    ``audio`` is a float array, (frames,) or (frames, channels) with ``rate_hz``, or the path
    of an audio file.  It is resampled to the server's 48 kHz and played once into the device
    ``name`` as soon as a stream opens it (the player waits for that); ``mic.playing`` is
    set then.  The device has as many channels as the audio (at most 2).  One device per
    test.  Everything (server, player) is stopped at teardown.
    """
    why = missing()
    if why:
        pytest.skip(why)
    try:
        server = JackServer(tmp_path_factory.mktemp("paced_mic"), name=jack_server_name())
    except PacedMicError as exc:
        pytest.skip(str(exc))
    with server:

        def make(audio, rate_hz: int | None = None, *, name: str = "moodmic") -> PacedMic:
            try:
                return server.microphone(audio, rate_hz, name=name)
            except PacedMicError as exc:  # a second device: the old fixture said RuntimeError
                raise RuntimeError("paced_mic makes one device per test") from exc

        yield make
