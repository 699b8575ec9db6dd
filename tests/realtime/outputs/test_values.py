"""The values outputs send: a mood message by name, the mood colour, tag slugs, the glide between hops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from realtime.options import REACTIONS
from realtime.outputs.values import Glide, Slugs, mood_colour, slug, values_of
from realtime.smoothing import Smoother


def mood(**overrides) -> dict:
    message = {
        "t_stream": 3.0,
        "smooth_s": 2.0,
        "silent": False,
        "tags": {"Happy": 0.7, "Sad": 0.1, "rock": 0.4},
        "active": ["Happy"],
        "valence": 0.6,
        "arousal": 0.5,
    }
    message.update(overrides)
    return message


def test_a_mood_message_as_values():
    values = values_of(mood())
    assert values["valence"] == 0.6 and values["arousal"] == 0.5 and values["silent"] == 0.0
    assert values["tag:Happy"] == 0.7 and values["tag:rock"] == 0.4
    assert values["active:Happy"] == 1.0 and values["active:Sad"] == 0.0
    assert values["top"] == "Happy"
    assert values["colour:r"] > 0.5
    silent = values_of(mood(silent=True, valence=None, arousal=None, active=[]))
    assert silent["silent"] == 1.0 and silent["valence"] is None and silent["top"] is None
    assert (silent["colour:r"], silent["colour:g"], silent["colour:b"]) == (0.0, 0.0, 0.0)
    assert silent["tag:Happy"] == 0.7  # tags hold their values through silence, as in the feed


@pytest.mark.parametrize(
    "valence, arousal, strongest",
    [(0.7, 0.7, "r g"), (-0.7, 0.7, "r"), (-0.7, -0.7, "b"), (0.7, -0.7, "g")],
    ids=[
        "energetic-positive: amber",
        "energetic-negative: red",
        "calm-negative: blue",
        "calm-positive: green",
    ],
)
def test_each_quadrant_has_its_own_hue(valence, arousal, strongest):
    rgb = dict(zip("rgb", mood_colour(valence, arousal), strict=True))
    top = sorted(rgb, key=rgb.get, reverse=True)[: len(strongest.split())]
    assert sorted(top) == sorted(strongest.split()), rgb
    weakest = min(rgb.values())
    assert all(rgb[c] > weakest + 0.2 for c in strongest.split()), rgb


def test_brightness_rises_with_arousal_and_an_unsure_estimate_is_pale():
    brightness = [max(mood_colour(0.5, a)) for a in np.linspace(-1, 1, 9)]
    assert all(b1 > b0 for b0, b1 in zip(brightness, brightness[1:], strict=False))
    assert brightness[0] == pytest.approx(0.2) and brightness[-1] == pytest.approx(1.0)
    r, g, b = mood_colour(0.0, 0.0)
    assert r == g == b  # at the centre: grey, no hue
    r, g, b = mood_colour(0.05, 0.0)
    assert max(r, g, b) - min(r, g, b) < 0.1


def test_the_colour_has_no_jump_across_quadrant_boundaries():
    # Walk a circle of radius 0.8 in small steps: each step changes each channel only a little.
    angles = np.linspace(0, 2 * math.pi, 721)
    colours = np.array([mood_colour(0.8 * math.cos(t), 0.8 * math.sin(t)) for t in angles])
    assert np.abs(np.diff(colours, axis=0)).max() < 0.03


def test_slugs_are_lower_case_path_parts_and_never_collide():
    assert slug("Good-Natured") == "good_natured"
    assert slug("female vocalists") == "female_vocalists"
    assert slug("default:happy") == "default_happy"
    assert slug("???") == "tag"
    names = ["happy", "Happy", "rock", "Sad", "sad"]
    slugs = Slugs(names)
    assert [slugs[n] for n in names] == ["happy_2", "happy", "rock", "sad", "sad_2"]
    # The same names in any order give the same slugs (listen and bridge agree) ...
    assert [Slugs(reversed(names))[n] for n in names] == [slugs[n] for n in names]
    # ... and a name seen later takes a free one without moving the others.
    assert slugs["HAPPY"] == "happy_3" and slugs["Happy"] == "happy"


def feed_series(raw: list[float], hop_s: float, tau_s: float, follow: float = 0.0) -> list[dict]:
    """Mood messages as the engine makes them: the window estimates through the feed's smoother."""
    smoother = Smoother(tau_s, follow)
    messages = []
    for k, x in enumerate(raw):
        s = float(smoother.update(np.array([x]), hop_s)[0])
        messages.append(
            mood(
                t_stream=3.0 + k * hop_s,
                hop_s=hop_s,
                smooth_s=tau_s,
                valence=s,
                tags={"Happy": (s + 1) / 2},
            )
        )
    return messages


@pytest.mark.parametrize("reaction", ["balanced", "stable"])
def test_glide_goes_on_from_where_it_stands_and_never_past_the_feed(reaction):
    """What a dimmer on --output-rate 30 shows: no jump at a hop and no overshoot and snap back
    (the glide that extrapolated the feed's smoother did both with the adaptive presets); each
    message's value reached a hop later, in even frames."""
    preset = REACTIONS[reaction]
    rng = np.random.default_rng(7)
    # Window estimates of music that changes: noise, a step up, noise, a step down.
    level = np.repeat([-0.4, 0.5, -0.1], 40)
    raw = np.clip(level + rng.normal(0.0, 0.15, level.size), -1, 1).tolist()
    messages = feed_series(raw, preset.hop_s, preset.smooth_s, preset.follow)
    glide = Glide()
    frame_s = 1 / 30
    for k, message in enumerate(messages):
        t = 100.0 + k * preset.hop_s
        before = glide.at(t)["valence"] if k else None
        glide.update(message, values_of(message), now=t)
        start = glide.at(t)["valence"]
        if k:  # continuous through the hop: where the last message's line arrived
            assert start == pytest.approx(before, abs=1e-12)
            assert start == pytest.approx(messages[k - 1]["valence"], abs=1e-12)
        else:
            assert start == message["valence"]  # the first message: nothing to go on from
        target = message["valence"]
        path = [glide.at(t + f)["valence"] for f in np.arange(0.0, preset.hop_s + frame_s / 2, frame_s)]
        lo, hi = min(start, target), max(start, target)
        assert all(lo - 1e-12 <= v <= hi + 1e-12 for v in path), (k, start, target, path)
        steps = np.abs(np.diff(path))
        assert steps.max() <= abs(target - start) * frame_s / preset.hop_s + 1e-12  # even frames
        end = glide.at(t + preset.hop_s)
        assert end["valence"] == pytest.approx(target, abs=1e-12)
        assert end["tag:Happy"] == pytest.approx(message["tags"]["Happy"], abs=1e-12)


def test_glide_holds_without_smoothing_and_in_silence():
    glide = Glide()
    first = mood(smooth_s=0.0, hop_s=1.0, valence=0.2)
    glide.update(first, values_of(first), now=0.0)
    second = mood(smooth_s=0.0, hop_s=1.0, valence=0.6, t_stream=4.0)
    glide.update(second, values_of(second), now=1.0)
    assert glide.at(1.5)["valence"] == 0.6  # no smoothing: nothing to glide
    glide = Glide()
    for k, message in enumerate(feed_series([0.5, 0.5], 1.0, 2.0)):
        glide.update(message, values_of(message), now=float(k))
    quiet = mood(t_stream=5.0, silent=True, valence=None, arousal=None, active=[])
    glide.update(quiet, values_of(quiet), now=2.0)
    moved = glide.at(2.5)
    assert moved["valence"] is None and moved["colour:r"] == 0.0 and moved["silent"] == 1.0
    # Music again: the value is the feed's at once (there was none to go on from).
    back = mood(t_stream=6.0, hop_s=1.0, valence=-0.3)
    glide.update(back, values_of(back), now=3.0)
    assert glide.at(3.0)["valence"] == -0.3 and glide.at(3.0)["colour:r"] > 0.0
