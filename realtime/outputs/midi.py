"""MIDI control changes on a virtual output port (``--midi NAME``): Ableton Live, Resolume, QLC+, VJ tools.

The port is made by python-rtmidi: on Linux through the ALSA sequencer where the kernel has one
(``/dev/snd/seq``), else through a running JACK server (JACK MIDI); CoreMIDI on macOS.  Other
programs connect to it as to a keyboard (``moodstream:NAME`` in JACK).  A controller is sent
when its 7-bit value changes, and every controller again after the port was reopened.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time

from realtime.outputs.base import OutputError, QueuedOutput
from realtime.outputs.mapping import Route
from realtime.outputs.values import Values

CLIENT_NAME = "moodstream"
CONTROL_CHANGE = 0xB0
JACK_CLOSE_GRACE_S = 0.25


def _apis(rtmidi) -> list[tuple[int, str]]:
    """The MIDI systems to try, in order, that this rtmidi build has."""
    compiled = set(rtmidi.get_compiled_api())
    if sys.platform.startswith("linux"):
        wanted = [(rtmidi.API_LINUX_ALSA, "ALSA sequencer"), (rtmidi.API_UNIX_JACK, "JACK")]
        if not os.path.exists("/dev/snd/seq"):  # no sequencer in this kernel: ALSA cannot work
            wanted = wanted[1:]
    else:
        wanted = [(rtmidi.API_MACOSX_CORE, "CoreMIDI"), (rtmidi.API_UNIX_JACK, "JACK")]
    return [(api, name) for api, name in wanted if api in compiled]


# What libjack prints to the process's stderr (fd 2, beside Python's) when no JACK server runs:
# five lines before our own one-line error, and again at each reopening attempt during a show.
LIBJACK_CHATTER = (
    "Cannot connect to server",
    "jack server is not running",
    "JackShmReadWritePtr",
)


@contextlib.contextmanager
def _without_libjack_chatter():
    """fd 2 into a scratch file while libjack may talk; what is not libjack's goes back to stderr."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            for line in scratch.read().decode(errors="replace").splitlines(keepends=True):
                if not line.startswith(LIBJACK_CHATTER):
                    sys.stderr.write(line)


def open_virtual_port(port_name: str | None):
    """An rtmidi MidiOut with a virtual port ``port_name``, and the system's name; OSError naming
    what was tried if none opens.  ``None``: only see that a MIDI system answers (a client, no
    port for other programs to see); returns (None, its name)."""
    try:
        import rtmidi
    except ImportError as exc:  # the wheel links libasound: missing on a machine without ALSA
        raise OSError(
            f"python-rtmidi cannot load ({exc}); on Debian/Ubuntu: apt-get install libasound2"
        ) from None

    tried = []
    for api, system in _apis(rtmidi):
        with _without_libjack_chatter():
            try:
                out = rtmidi.MidiOut(rtapi=api, name=CLIENT_NAME)
                if port_name is None:
                    out.delete()
                    return None, system
                out.open_virtual_port(port_name)
                return out, system
            except (rtmidi.SystemError, rtmidi.InvalidUseError, rtmidi.NoDevicesError) as exc:
                tried.append(f"{system}: {exc}")
                out = None  # the failed client's destructor talks too: inside the redirect
    if not tried:
        tried = ["no ALSA sequencer (/dev/snd/seq: modprobe snd-seq) and no JACK support in python-rtmidi"]
    raise OSError(
        "cannot open a virtual MIDI port (" + "; ".join(tried) + "; start a JACK server or load snd-seq)"
    )


class MidiOutput(QueuedOutput):
    kind = "midi"
    unit = "MIDI messages"

    def __init__(self, port_name: str, routes: list[Route]):
        super().__init__(port_name, routes)
        self.port_name = port_name
        self._port = None
        self._sent_values: dict[object, int] = {}
        try:
            self.connect()  # open now: a machine without a MIDI system is an error at start-up
        except OSError as exc:
            raise OutputError(f"--midi {port_name}: {exc}") from None
        self._connected = True
        self.target = f"{port_name} ({self.system})"
        self.start()

    def emit(self, values: Values, hop: bool) -> None:
        for route, value in self.present(values):
            level = min(127, max(0, round(route.scale(value))))
            key = (route.to, route.midi_channel)
            if self._sent_values.get(key) == level:
                continue
            self._sent_values[key] = level
            self.put(key, [CONTROL_CHANGE | (route.midi_channel - 1), route.to, level])

    def connect(self) -> None:
        self._port, self.system = open_virtual_port(self.port_name)

    def send_item(self, item: list[int]) -> None:
        try:
            self._port.send_message(item)
        except Exception as exc:  # rtmidi raises its own errors: treat as a lost port, reopen
            raise OSError(str(exc)) from exc

    def disconnect(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            if self.system == "JACK" and self.sent:
                # JACK moves what was sent at its next cycle (up to a period, ~100 ms): a port
                # closed before then loses the last controller changes.
                time.sleep(JACK_CLOSE_GRACE_S)
            port.close_port()
            del port
