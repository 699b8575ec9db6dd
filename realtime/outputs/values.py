"""What the outputs send: the feed's values by name, their motion between hops, and the mood colour.

A mood message becomes a flat dict of *values*, the names a map file uses:

    valence, arousal      [-1, 1], None in silence or for a model without those heads
    silent                1.0 while the input is silent, else 0.0
    top                   the strongest tag's name (a string; None in silence)
    state                 the mood state's name (a string: energetic-happy, tense-angry,
                          sad-dark, calm-tender, silent; None without valence/arousal)
    state:NAME            1.0 while NAME is the mood state, else 0.0
    tag:NAME              the tag's smoothed probability, [0, 1]
    active:NAME           1.0 while the tag is active, else 0.0
    colour:r/g/b          the mood colour (``mood_colour``), [0, 1]; black in silence

``Glide`` moves the continuous ones (valence, arousal, tags) between hops for
``--output-rate``, and ``Slugs`` turns tag names into OSC-safe path parts.
"""

from __future__ import annotations

import colorsys
import math
import re

from realtime.smoothing import MOOD_STATES

Values = dict[str, float | str | None]

# The natural range of each kind of value (a map entry's default input range).
SIGNED = (-1.0, 1.0)
UNIT = (0.0, 1.0)
FIXED_VALUES = (
    "valence", "arousal", "silent", "top", "colour:r", "colour:g", "colour:b", "state",
    *(f"state:{s}" for s in MOOD_STATES),
)  # fmt: skip
PER_TAG = ("tag:", "active:")


def value_range(name: str) -> tuple[float, float]:
    return SIGNED if name in ("valence", "arousal") else UNIT


# -- the mood colour ------------------------------------------------------------------------

# Hue (degrees) at the centre of each quadrant of the valence/arousal plane, walking round the
# plane anticlockwise from energetic-positive.  The hue falls by 360 degrees over the walk, so
# the colour turns continuously: no jump at a quadrant boundary, so no flash on a fixture.
_QUADRANT_HUES_DEG = (
    (45.0, 50.0),  # energetic-positive (happy, excited): amber-yellow
    (135.0, 0.0),  # energetic-negative (tense, angry): red
    (225.0, -130.0),  # calm-negative (sad, dark): blue (230 degrees)
    (315.0, -220.0),  # calm-positive (calm, tender): green (140 degrees)
    (405.0, -310.0),  # energetic-positive again, one turn on
)
MIN_BRIGHTNESS = 0.2  # the calmest music still shows its colour


def mood_colour(valence: float | None, arousal: float | None) -> tuple[float, float, float]:
    """(r, g, b) in [0, 1] for a point of the valence/arousal plane; black without one.

    Hue from the point's angle (one hue per quadrant, blended between), saturation from its
    distance to the centre (an unsure estimate near (0, 0) is pale), brightness from arousal
    (calm is dim, energetic is bright).
    """
    if valence is None or arousal is None:
        return (0.0, 0.0, 0.0)
    v = min(max(float(valence), -1.0), 1.0)
    a = min(max(float(arousal), -1.0), 1.0)
    angle = math.degrees(math.atan2(a, v)) % 360.0
    if angle < _QUADRANT_HUES_DEG[0][0]:
        angle += 360.0
    for (a0, h0), (a1, h1) in zip(_QUADRANT_HUES_DEG, _QUADRANT_HUES_DEG[1:], strict=False):
        if a0 <= angle <= a1:
            hue = h0 + (h1 - h0) * (angle - a0) / (a1 - a0)
            break
    saturation = min(1.0, math.hypot(v, a))
    brightness = MIN_BRIGHTNESS + (1.0 - MIN_BRIGHTNESS) * (a + 1.0) / 2.0
    return colorsys.hsv_to_rgb((hue % 360.0) / 360.0, saturation, brightness)


# -- a mood message as values ---------------------------------------------------------------


def values_of(message: dict) -> Values:
    """The values (module docstring) of one mood message of the feed."""
    silent = bool(message["silent"])
    tags: dict[str, float] = message["tags"]
    valence, arousal = message["valence"], message["arousal"]
    values: Values = {
        "valence": valence,
        "arousal": arousal,
        "silent": 1.0 if silent else 0.0,
        "top": None if silent or not tags else max(tags, key=tags.__getitem__),
    }
    state = message.get("state")  # schema 4; None for a model without valence/arousal
    values["state"] = state
    for name in MOOD_STATES:
        values[f"state:{name}"] = 1.0 if state == name else 0.0
    _set_colour(values)
    active = set(message["active"])
    for name, p in tags.items():
        values["tag:" + name] = p
        values["active:" + name] = 1.0 if name in active else 0.0
    return values


def _set_colour(values: Values) -> None:
    silent = values["silent"]
    rgb = (0.0, 0.0, 0.0) if silent else mood_colour(values["valence"], values["arousal"])
    values.update(zip(("colour:r", "colour:g", "colour:b"), rgb, strict=True))


def is_continuous(name: str) -> bool:
    """Values that glide between hops (the others change only when a message says so)."""
    return name in ("valence", "arousal") or name.startswith("tag:")


class Glide:
    """Between hops (``--output-rate``), each continuous value moves in a straight line from where
    it stands to the feed's newest value, arriving one hop (``hop_s``) after the message, as the
    next is due; then it holds.

    Continuous (a message starts its line from the value being shown: a fixture never jumps at a
    hop), never past the feed's values (no overshoot, no snap back), and as steady as a line can
    be: each frame moves a step's share of the hop.  The price is the hop itself: a value shows
    the feed's newest one a hop later (half a hop on average) than the steps without
    ``--output-rate`` would.  (The earlier glide extrapolated the feed's smoother, to be exact at
    every hop; with the ``--reaction`` presets' adaptive smoothing, whose steps are larger than
    the plain exponential it assumed, it ran past the next hop's value and snapped back: up to 40
    of 255 in one DMX frame, about four times a second.)  With no smoothing (``smooth_s`` 0) the
    values step, as was asked for.
    """

    def __init__(self):
        self.values: Values = {}  # the newest message's
        self._from: dict[str, float] = {}  # its continuous values as shown when it came
        self._at = 0.0  # monotonic time it came
        self._hop_s = 0.0

    def update(self, message: dict, values: Values, now: float) -> None:
        shown = self.at(now)
        self._from = {
            name: shown[name]
            for name, value in values.items()
            if value is not None and is_continuous(name) and shown.get(name) is not None
        }
        smoothed = float(message.get("smooth_s") or 0.0) > 0
        self._hop_s = float(message.get("hop_s") or 0.0) if smoothed else 0.0
        self.values, self._at = dict(values), now

    def at(self, now: float) -> Values:
        """The values as they stand at ``now`` (monotonic seconds)."""
        if self._hop_s <= 0 or not self._from:
            return self.values
        part = min(max(now - self._at, 0.0) / self._hop_s, 1.0)
        moved = dict(self.values)
        for name, start in self._from.items():
            moved[name] = start + (self.values[name] - start) * part
        _set_colour(moved)
        return moved


# -- tag names as OSC path parts ------------------------------------------------------------


def slug(name: str) -> str:
    """Lower case ``[a-z0-9_]`` (TouchDesigner turns OSC addresses into channel names)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "tag"


class Slugs:
    """One distinct slug per tag name: ``Happy`` -> happy, then ``happy`` -> happy_2.

    Names are added in sorted order (upper case first), so the same vocabulary gives the same
    slugs in ``listen`` and in ``bridge``; a name seen later (a second model's tags appear with
    its first segment) takes the next free suffix and nobody else's slug changes.
    """

    def __init__(self, names=()):
        self._of: dict[str, str] = {}
        self._taken: set[str] = set()
        self.add(names)

    def add(self, names) -> None:
        for name in sorted(set(names) - self._of.keys()):
            base = candidate = slug(name)
            n = 1
            while candidate in self._taken:
                n += 1
                candidate = f"{base}_{n}"
            self._of[name] = candidate
            self._taken.add(candidate)

    def __getitem__(self, name: str) -> str:
        if name not in self._of:
            self.add([name])
        return self._of[name]
