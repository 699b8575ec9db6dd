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

``on_a_paced_mic(folder, audio, check)`` runs a check against a fresh server's microphone instead,
once more where JACK logged its own fault, and puts the JACK logs in its failure.

Needs ``jackd`` (Debian ``jackd2``), ``aplay`` (``alsa-utils``) and the ALSA jack plugin
(``libasound2-plugins``); skips without them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from bench.paced_mic import PERIOD_FRAMES, RATE_HZ, JackServer, PacedMic, PacedMicError, missing

__all__ = [
    "PERIOD_FRAMES",
    "RATE_HZ",
    "PacedMic",
    "jack_server",
    "jack_server_name",
    "on_a_paced_mic",
    "paced_mic",
]


def jack_server_name() -> str:
    """One JACK server name per test worker: its servers run one after another, and a name that
    comes back reclaims the registry entry of one that died (JACK keeps only 8)."""
    return f"moodstream-test-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"


def jack_server(folder: Path, period_frames: int = PERIOD_FRAMES) -> JackServer:
    """A private JACK server for one test (``JackServer``, the worker's name); skips the test where
    none can run here (a tool missing, or a server that will not start)."""
    why = missing()
    if why:
        pytest.skip(why)
    try:
        return JackServer(folder, name=jack_server_name(), period_frames=period_frames)
    except PacedMicError as exc:
        pytest.skip(str(exc))


def on_a_paced_mic(folder: Path, audio: np.ndarray, check, period_frames: int = PERIOD_FRAMES) -> None:
    """``check(mic, folder)`` with a fresh JACK server's paced microphone playing ``audio`` (48 kHz);
    a failure carries the JACK server's and the player's logs.  When those name a JACK fault
    (``JACK_FAULTS``: a client that missed a cycle on the busy test machine, or could not connect),
    the audio may have gone out of step in JACK, not in the code under test: once more on another
    server, whose failure fails the test with the first one's.  (Not for checks on ``listen``
    as they stand: the server logs an xrun of its PortAudio client at many of its stops, after
    the audio was in (why: the comment above ``bench.paced_mic.JACK_FAULTS``); every failure
    there would be tried twice.)"""
    first = None  # the first attempt's failure, where JACK logged its own fault
    for attempt in (1, 2):
        here = folder / f"jack-{attempt}"
        here.mkdir()
        try:
            server = jack_server(here, period_frames)
        except pytest.skip.Exception as exc:
            if first is None:
                raise
            pytest.fail(f"{first}\n--- then the second JACK server did not start: {exc}")
        with server:
            mic = server.microphone(audio, RATE_HZ)
            try:
                check(mic, here)
                return
            except (AssertionError, pytest.fail.Exception) as exc:
                failure = f"{str(exc).strip() or type(exc).__name__}\n{mic.logs()}"
                fault = mic.jack_fault()
                if first is not None:
                    pytest.fail(f"{failure}\n--- the first attempt (JACK's own fault):\n{first}")
                if fault is None:
                    pytest.fail(failure)
                first = f"{fault}\n{failure}"
                warnings.warn(
                    f"{failure.splitlines()[0][:200]}: JACK's own fault ({fault}); again on a fresh server",
                    stacklevel=1,
                )


@pytest.fixture
def paced_mic(tmp_path_factory):
    """Factory: ``make(audio, rate_hz=None, *, name="moodmic") -> PacedMic``, a paced capture device.

    ``audio`` is a float array, (frames,) or (frames, channels) with ``rate_hz``, or the path
    of an audio file.  It is resampled to the server's 48 kHz and played once into the device
    ``name`` as soon as a stream opens it (the player waits for that); ``mic.playing`` is
    set then.  The device has as many channels as the audio (at most 2).  One device per
    test.  Everything (server, player) is stopped at teardown.
    """
    with jack_server(tmp_path_factory.mktemp("paced_mic")) as server:

        def make(audio, rate_hz: int | None = None, *, name: str = "moodmic") -> PacedMic:
            try:
                return server.microphone(audio, rate_hz, name=name)
            except PacedMicError as exc:  # a second device: the old fixture said RuntimeError
                raise RuntimeError("paced_mic makes one device per test") from exc

        yield make
