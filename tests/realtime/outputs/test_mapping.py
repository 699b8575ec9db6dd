"""Default routes, scales, and the ``--map`` file: every bad entry is one line naming file, line and key."""

from __future__ import annotations

import struct

import pytest

from realtime.outputs.mapping import MapError, MapFile, Scale, check_dmx_start, default_routes
from tests.realtime.harness import REPO

TAGS = ["Happy", "Sad", "Tense", "rock", "female vocalists"]
STATES = ("energetic-happy", "tense-angry", "sad-dark", "calm-tender", "silent")


def test_default_routes_of_every_protocol():
    osc = {r.to: r.value for r in default_routes("osc", osc_prefix="/ms")}
    assert osc == {
        "/ms/valence": "valence",
        "/ms/arousal": "arousal",
        "/ms/valence/norm": "valence",
        "/ms/arousal/norm": "arousal",
        "/ms/tag/{slug}": "tag:*",
        "/ms/active/{slug}": "active:*",
        "/ms/top": "top",
        "/ms/silent": "silent",
        "/ms/state": "state",
        **{f"/ms/state/{s}": f"state:{s}" for s in STATES},
    }
    dmx = {r.to: r.value for r in default_routes("dmx", dmx_start=10)}
    assert dmx == {10: "colour:r", 11: "colour:g", 12: "colour:b", 14: "valence", 15: "arousal", 16: "silent"}
    os2l = {r.to: r.value for r in default_routes("os2l")}
    assert os2l == {
        ("cmd", 1): "valence",
        ("cmd", 2): "arousal",
        ("btn", "{name}"): "active:*",
        **{("btn", f"state {s}"): f"state:{s}" for s in STATES},
    }
    midi = {(r.to, r.midi_channel): r.value for r in default_routes("midi")}
    assert midi == {
        (1, 1): "valence",
        (2, 1): "arousal",
        **{(20 + i, 1): f"state:{s}" for i, s in enumerate(STATES)},
    }


def test_scales():
    identity = Scale(-1.0, 1.0, -1.0, 1.0)
    x = -0.4541822075843811
    # Pass-through is exact, so an OSC receiver's float32 is the feed's number as float32.
    assert struct.pack(">f", identity(x)) == struct.pack(">f", x)
    assert identity(1.5) == 1.0
    norm = Scale(-1.0, 1.0, 0.0, 1.0)
    assert norm(-1.0) == 0.0 and norm(0.0) == 0.5 and norm(1.0) == 1.0
    dmx = Scale(-1.0, 1.0, 0.0, 255.0)
    assert dmx(0.0) == 127.5 and dmx(-3.0) == 0.0
    inverted = Scale(0.0, 1.0, 1.0, 0.0)
    assert inverted(0.25) == 0.75
    gamma = Scale(0.0, 1.0, 0.0, 100.0, gamma=2.0)
    assert gamma(0.5) == pytest.approx(25.0)


def test_the_example_map_ships_valid_for_the_default_model():
    from models import resolve
    from realtime.analyzer import TagMerger

    names = TagMerger(resolve("default").heads).names  # the feed's tag names
    example = MapFile(REPO / "examples" / "moods.toml")
    for kind in ("osc", "dmx", "os2l", "midi"):
        assert example.routes(kind, default_routes(kind), names)
    midi = {r.to: r.value for r in example.routes("midi", default_routes("midi"), names)}
    assert midi == {
        1: "valence", 2: "arousal", 3: "tag:Happy", 4: "tag:Sad", 5: "tag:Angry",
        **{20 + i: f"state:{s}" for i, s in enumerate(STATES)},
    }  # fmt: skip
    os2l = {r.to: r.scale for r in example.routes("os2l", default_routes("os2l"), names)}
    assert os2l[("cmd", 1)](1.0) == 255.0  # QLC+ reads a cmd's param as a level


def write(tmp_path, text: str):
    path = tmp_path / "moods.toml"
    path.write_text(text)
    return path


def load_error(tmp_path, text: str, tags=TAGS) -> str:
    path = write(tmp_path, text)
    with pytest.raises(MapError) as caught:
        m = MapFile(path)
        for kind in ("osc", "dmx", "os2l", "midi"):
            m.routes(kind, default_routes(kind), tags)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}:")
    return message.removeprefix(f"{path}:")


BAD_MAPS = [
    (
        "unknown section",
        "[lights]\nx = 1\n",
        "1: key 'lights': unknown key (expected one of: osc, dmx, os2l, midi)",
    ),
    (
        "unknown key in an entry",
        '[[osc.send]]\nvalue = "valence"\naddress = "/v"\nadress = "/w"\n',
        "4: [[osc.send]] #1, key 'adress': unknown key (did you mean 'address'? "
        "expected one of: value, address, in, out, curve, gamma)",
    ),
    (
        "a misspelt key that is needed",  # the misspelling is named, not only the missing key
        '[[osc.send]]\nvalue = "valence"\nadress = "/w"\n',
        "3: [[osc.send]] #1, key 'adress': unknown key (did you mean 'address'? expected one of:",
    ),
    (
        "DMX channel 0",
        '[dmx]\n[[dmx.send]]\nvalue = "arousal"\nchannel = 0\n',
        "4: [[dmx.send]] #1, key 'channel': 0 is outside 1..512",
    ),
    (
        "DMX channel 513",
        '[[dmx.send]]\nvalue = "arousal"\nchannel = 1\n[[dmx.send]]\nvalue = "valence"\n\nchannel = 513\n',
        "7: [[dmx.send]] #2, key 'channel': 513 is outside 1..512",
    ),
    (
        "CC 128",
        '[[midi.send]]\nvalue = "arousal"\ncc = 128\n',
        "3: [[midi.send]] #1, key 'cc': 128 is outside 0..127",
    ),
    (
        "CC -1",
        '[[midi.send]]\nvalue = "arousal"\ncc = -1\n',
        "3: [[midi.send]] #1, key 'cc': -1 is outside 0..127",
    ),
    ("MIDI channel 17", "[midi]\nchannel = 17\n", "2: [midi], key 'channel': 17 is outside 1..16"),
    (
        "unknown tag",
        '[[osc.send]]\nvalue = "tag:Hapy"\naddress = "/h"\n',
        "2: [[osc.send]] #1, key 'value': unknown tag 'Hapy' (did you mean 'Happy'?); "
        "the model's tags: Happy, Sad, Tense, rock, female vocalists",
    ),
    (
        "unknown value",
        '[[dmx.send]]\nvalue = "energy"\nchannel = 3\n',
        "2: [[dmx.send]] #1, key 'value': 'energy' is not a value here; expected a numeric feed value: valence,",
    ),
    (
        "a string to DMX",
        '[[dmx.send]]\nvalue = "top"\nchannel = 3\n',
        "2: [[dmx.send]] #1, key 'value': 'top' is not a value here",
    ),
    (
        "missing destination",
        '[[osc.send]]\nvalue = "valence"\n',
        "1: [[osc.send]] #1: this entry needs 'address'",
    ),
    (
        "bad OSC address",
        '[[osc.send]]\nvalue = "valence"\naddress = "lights"\n',
        "3: [[osc.send]] #1, key 'address': 'lights' does not match",
    ),
    ("not TOML", '[osc\nvalue = "x"\n', "1: not valid TOML:"),
    (
        "empty range",
        '[[midi.send]]\nvalue = "arousal"\ncc = 3\nin = [0.5, 0.5]\n',
        "4: [[midi.send]] #1, key 'in': [0.5, 0.5] is empty: give two different numbers",
    ),
    (
        "out beyond DMX",
        '[[dmx.send]]\nvalue = "arousal"\nchannel = 9\nout = [0, 300]\n',
        "4: [[dmx.send]] #1, key 'out': [0, 300] is outside 0..255",
    ),
    (
        "gamma on a linear curve",
        '[[osc.send]]\nvalue = "arousal"\naddress = "/a"\ngamma = 2.0\n',
        "4: [[osc.send]] #1, key 'gamma': gamma needs curve = \"gamma\"",
    ),
    (
        "unknown curve",
        '[[osc.send]]\nvalue = "arousal"\naddress = "/a"\ncurve = "log"\n',
        "4: [[osc.send]] #1, key 'curve': 'log' is not one of",
    ),
    (
        "OS2L cmd and button",
        '[[os2l.send]]\nvalue = "active:Happy"\ncmd = 3\nbutton = "happy"\n',
        "1: [[os2l.send]] #1: an OS2L entry has either 'cmd' or 'button'",
    ),
    (
        "button on a number",
        '[[os2l.send]]\nvalue = "arousal"\nbutton = "loud"\n',
        "2: [[os2l.send]] #1, key 'value': a button follows an on/off value: active:NAME or silent",
    ),
    (
        "one destination twice",
        '[[midi.send]]\nvalue = "tag:Happy"\ncc = 3\n[[midi.send]]\nvalue = "tag:Sad"\ncc = 3\n',
        "6: [[midi.send]] #2, key 'cc': also set by entry #1: one value per destination",
    ),
    (
        "defaults not a boolean",
        '[osc]\ndefaults = "no"\n',
        "2: [osc], key 'defaults': 'no' is not of type 'boolean'",
    ),
]


@pytest.mark.parametrize("text, expected", [b[1:] for b in BAD_MAPS], ids=[b[0] for b in BAD_MAPS])
def test_every_bad_map_is_one_line_naming_file_line_and_key(tmp_path, text, expected):
    assert load_error(tmp_path, text).startswith(expected)


def test_an_unknown_tag_of_a_large_vocabulary_names_the_closest_not_them_all(tmp_path):
    tags = ["Happy", "happy", "Sad", *(f"tag {i}" for i in range(40))]
    error = load_error(tmp_path, '[[osc.send]]\nvalue = "tag:Hapy"\naddress = "/h"\n', tags)
    assert error.startswith(
        "2: [[osc.send]] #1, key 'value': unknown tag 'Hapy' (did you mean 'Happy' or 'happy'?)"
    )
    assert "the model's 43 tags are the keys of a mood message's" in error and "tag 39" not in error


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(MapError, match="cannot read it"):
        MapFile(tmp_path / "absent.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(MapError, match="not UTF-8"):
        MapFile(path)


def test_entries_replace_defaults_at_their_destination_or_all_of_them(tmp_path):
    text = (
        '[[dmx.send]]\nvalue = "tag:Happy"\nchannel = 1\n'  # over the default red channel
        '[osc]\ndefaults = false\n[[osc.send]]\nvalue = "arousal"\naddress = "/a"\nout = [0, 10]\n'
        "[midi]\nchannel = 4\n"
    )
    m = MapFile(write(tmp_path, text))
    dmx = {r.to: r.value for r in m.routes("dmx", default_routes("dmx"), TAGS)}
    assert dmx[1] == "tag:Happy" and dmx[2] == "colour:g" and len(dmx) == 6
    osc = m.routes("osc", default_routes("osc"), TAGS)
    assert [(r.value, r.to, r.scale(1.0)) for r in osc] == [("arousal", "/a", 10.0)]
    assert {r.midi_channel for r in m.routes("midi", default_routes("midi"), TAGS)} == {4}
    assert m.routes("os2l", default_routes("os2l"), TAGS) == default_routes("os2l")  # no section: defaults


def test_dmx_start_leaves_room_for_the_default_layout():
    check_dmx_start(1)
    check_dmx_start(506)
    for bad in (0, 507, 600):
        with pytest.raises(MapError, match=r"--dmx-start .* within 1\.\.506"):
            check_dmx_start(bad)
