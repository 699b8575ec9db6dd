"""``python -m realtime.bridge``: a running analyzer's feed, sent on to OSC, Art-Net, sACN, OS2L and MIDI receivers."""

from __future__ import annotations

import os
import re
import signal

import pytest

from tests.realtime.harness import Subscriber, ended, finish, free_endpoint, listen, run, start
from tests.realtime.outputs.receivers import (
    DmxReceiver,
    MidiReceiver,
    Os2lServer,
    OscServer,
    expect_dmx,
    expect_midi,
    expect_os2l,
    expect_osc,
    osc_hops,
)
from tests.realtime.test_listen_outputs import MOODS, clip, jack_server  # noqa: F401  (fixtures)


def test_bridge_drives_every_output_from_a_running_analyzers_feed(clip, jack_server):  # noqa: F811
    osc, artnet, sacn, os2l = OscServer(), DmxReceiver("artnet"), DmxReceiver("sacn"), Os2lServer()
    midi = MidiReceiver(jack_server.env)
    endpoint = free_endpoint()
    sub = Subscriber(endpoint)
    bridge = start(
        "bridge", "--from", endpoint,
        "--osc", f"127.0.0.1:{osc.port}",
        "--artnet", f"127.0.0.1:{artnet.port}",
        "--sacn", f"127.0.0.1:{sacn.port}",
        "--os2l", f"127.0.0.1:{os2l.port}",
        "--midi", "bridged",
        env={**os.environ, **jack_server.env},
        quiet=False,  # its line, once a second (stderr is not a terminal here), is checked below
    )  # fmt: skip
    try:
        midi.connect("moodstream:bridged")  # the bridge opens its port at once, before any music
        analyzer = listen("--file", str(clip), "--realtime", "--pub", endpoint)
        sub.collect(ended, 90)
        code, err = finish(analyzer)
        assert code == 0, err
        sub.drain()
        bridge.send_signal(signal.SIGTERM)
        code, bridge_err = finish(bridge, 10)
        assert code == 0, bridge_err
    finally:
        bridge.kill()
        sub.close()
        for receiver in (osc, artnet, sacn, os2l):
            receiver.close()
        events = midi.close()
    moods = sub.moods()
    assert len(moods) == MOODS
    expect_osc(moods, osc_hops(osc.messages))
    expect_dmx(moods, artnet.packets, universe=0, start=1)
    expect_dmx(moods, sacn.packets, universe=1, start=1)
    expect_os2l(moods, os2l.messages)
    expect_midi(moods, events)
    # Its last line says what each count counts.
    last = [line for line in bridge_err.splitlines() if f"osc 127.0.0.1:{osc.port}: " in line][-1]
    for output, unit, received in (
        (f"osc 127.0.0.1:{osc.port}", "OSC messages", len(osc.messages)),
        (f"artnet 127.0.0.1:{artnet.port} universe 0", "DMX packets", len(artnet.packets)),
        (f"sacn 127.0.0.1:{sacn.port} universe 1", "DMX packets", len(sacn.packets)),
        (f"os2l 127.0.0.1:{os2l.port}", "OS2L messages", len(os2l.messages)),
        ("midi bridged (JACK)", "MIDI messages", len(events)),
    ):
        sent = re.search(rf"{re.escape(output)}: ok, sent (\d+) {unit}, dropped 0", last)
        assert sent and 0 < int(sent[1]) <= received, (output, unit, received, last)


def test_bridge_refuses_bad_targets_and_maps_in_one_line(tmp_path):
    cases = [
        (["--from", free_endpoint()], "name at least one output"),
        (["--osc", "127.0.0.1"], "argument --osc: '127.0.0.1' has no port"),
        (["--osc", "127.0.0.1:70000"], "argument --osc: port 70000 of '127.0.0.1:70000' is outside 1..65535"),
        (["--osc", "no-such-host.invalid:7700"], "error: cannot resolve 'no-such-host.invalid'"),
        (["--sacn", "127.0.0.1", "--dmx-universe", "0"], "--dmx-universe 0: sACN universes are 1..63999"),
        (
            ["--artnet", "127.0.0.1", "--dmx-universe", "40000"],
            "--dmx-universe 40000: Art-Net universes are 0..32767",
        ),
        (["--osc", "127.0.0.1:7700", "--dmx-universe", "2"], "--dmx-universe applies to --artnet and --sacn"),
        (["--artnet", "127.0.0.1", "--dmx-start", "510"], "--dmx-start 510: the default DMX layout takes 7"),
        (["--osc", "127.0.0.1:7700", "--output-rate", "0"], "argument --output-rate: 0 is outside (0, 100]"),
        (["--osc", "127.0.0.1:7700", "--osc-prefix", "lights"], "expected an OSC path like /moodstream"),
        (["--os2l", "127.0.0.1"], "argument --os2l: '127.0.0.1' has no port"),
        (["--osc", "127.0.0.1:7700", "--map", str(tmp_path / "none.toml")], "none.toml: cannot read it"),
    ]
    for args, words in cases:
        proc = run("bridge", *args, timeout_s=30)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and words in lines[-1], (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_midi_without_a_midi_system_is_a_clear_error():
    env = {**os.environ, "JACK_DEFAULT_SERVER": "moodstream-no-such-server", "JACK_NO_START_SERVER": "1"}
    if os.path.exists("/dev/snd/seq"):
        pytest.skip("this machine has an ALSA sequencer: a virtual port would open")
    proc = run("bridge", "--midi", "lights", env=env, timeout_s=30)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--midi lights: cannot open a virtual MIDI port" in proc.stderr and "JACK" in proc.stderr
    # One line: libjack's own complaints about the missing server (five lines on fd 2) are not shown.
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
