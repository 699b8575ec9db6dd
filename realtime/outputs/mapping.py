"""Which value goes where: the default mapping of every protocol, and the ``--map`` file.

A ``Route`` sends one value (``values.py``) to one destination: an OSC address, a DMX channel,
an OS2L command or button, a MIDI controller, through a ``Scale`` (input range -> output
range, linear or gamma).  ``value="tag:*"`` stands for every tag of the feed (the default
OSC addresses and OS2L buttons); its destination names the tag with ``{slug}`` or ``{name}``.

The map file is TOML, checked against ``map.schema.json`` (which documents every key) and
then against the model's tags; every problem is one line naming the file, line and key.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from jsonschema import Draft202012Validator

from realtime.outputs.values import FIXED_VALUES, MOOD_STATES, PER_TAG, value_range

KINDS = ("osc", "dmx", "os2l", "midi")
DEFAULT_OSC_PREFIX = "/moodstream"
MIDI_STATE_CC = 20  # the default MIDI map's first mood-state controller (one per state from here)
DMX_CHANNELS = 512
# What one unit of each protocol's output is worth by default (a map entry's default `out`).
_OUT_RANGE = {"osc": (0.0, 1.0), "dmx": (0.0, 255.0), "os2l": (0.0, 1.0), "midi": (0.0, 127.0)}
_OUT_LIMITS = {"dmx": (0, 255), "midi": (0, 127)}
_DESTINATION = {"osc": "address", "dmx": "channel", "midi": "cc"}


class MapError(ValueError):
    """A map file or output setting that cannot work; the message names the file, line and key."""


@dataclass(frozen=True)
class Scale:
    """Input range -> output range, clamped; ``gamma`` bends the position within the range."""

    lo_in: float
    hi_in: float
    lo_out: float
    hi_out: float
    gamma: float = 1.0

    def __call__(self, x: float) -> float:
        if self.gamma == 1.0 and (self.lo_in, self.hi_in) == (self.lo_out, self.hi_out):
            # Pass-through, bit for bit: an OSC receiver gets exactly the feed's number.
            return min(max(x, min(self.lo_in, self.hi_in)), max(self.lo_in, self.hi_in))
        t = (x - self.lo_in) / (self.hi_in - self.lo_in)
        t = min(max(t, 0.0), 1.0)
        if self.gamma != 1.0:
            t = t**self.gamma
        return self.lo_out + t * (self.hi_out - self.lo_out)


@dataclass(frozen=True)
class Route:
    """One value to one destination.

    ``to``: OSC address (str), DMX channel (int, 1-based), MIDI controller (int), or for OS2L
    ``("cmd", id)`` / ``("btn", name)``.  ``scale`` None: sent as it is (a string, on/off).
    """

    value: str
    to: object
    scale: Scale | None = None
    midi_channel: int = 1

    def for_tag(self, name: str, slug: str) -> Route:
        """A ``tag:*``/``active:*`` route made concrete for one tag."""
        prefix = self.value[: -len("*")]
        to = self.to
        if isinstance(to, str):
            to = to.format(slug=slug, name=name)
        elif isinstance(to, tuple):
            to = (to[0], to[1].format(slug=slug, name=name))
        return replace(self, value=prefix + name, to=to)


def identity(name: str) -> Scale:
    lo, hi = value_range(name)
    return Scale(lo, hi, lo, hi)


def to_range(name: str, lo_out: float, hi_out: float) -> Scale:
    lo, hi = value_range(name)
    return Scale(lo, hi, lo_out, hi_out)


# -- the defaults (README, "Drive your lights") ---------------------------------------------


def default_routes(kind: str, *, osc_prefix: str = DEFAULT_OSC_PREFIX, dmx_start: int = 1) -> list[Route]:
    if kind == "osc":
        p = osc_prefix.rstrip("/")
        return [
            Route("valence", f"{p}/valence", identity("valence")),
            Route("arousal", f"{p}/arousal", identity("arousal")),
            Route("valence", f"{p}/valence/norm", to_range("valence", 0.0, 1.0)),
            Route("arousal", f"{p}/arousal/norm", to_range("arousal", 0.0, 1.0)),
            Route("tag:*", p + "/tag/{slug}", Scale(0.0, 1.0, 0.0, 1.0)),
            Route("active:*", p + "/active/{slug}", None),
            Route("top", f"{p}/top", None),
            Route("silent", f"{p}/silent", None),
            Route("state", f"{p}/state", None),
            *(Route(f"state:{s}", f"{p}/state/{s}", None) for s in MOOD_STATES),
        ]
    if kind == "dmx":
        # The colour first: WLED's "Single RGB" mode reads R, G, B at its DMX start address (1 by
        # default) and a 4th channel as white, so that one stays 0 and the colour stays pure.
        layout = [
            ("colour:r", to_range("colour:r", 0, 255)),
            ("colour:g", to_range("colour:g", 0, 255)),
            ("colour:b", to_range("colour:b", 0, 255)),
            (None, None),  # white: 0
            ("valence", to_range("valence", 0, 255)),
            ("arousal", to_range("arousal", 0, 255)),
            ("silent", to_range("silent", 0, 255)),
        ]
        return [Route(v, dmx_start + i, s) for i, (v, s) in enumerate(layout) if v is not None]
    if kind == "os2l":
        return [
            Route("valence", ("cmd", 1), to_range("valence", 0.0, 1.0)),
            Route("arousal", ("cmd", 2), to_range("arousal", 0.0, 1.0)),
            Route("active:*", ("btn", "{name}"), None),
            *(Route(f"state:{s}", ("btn", f"state {s}"), None) for s in MOOD_STATES),
        ]
    if kind == "midi":
        return [
            Route("valence", 1, to_range("valence", 0, 127)),
            Route("arousal", 2, to_range("arousal", 0, 127)),
            # One controller per mood state, 127 while it is the state: 20 energetic-happy,
            # 21 tense-angry, 22 sad-dark, 23 calm-tender, 24 silent.
            *(
                Route(f"state:{s}", MIDI_STATE_CC + i, to_range(f"state:{s}", 0, 127))
                for i, s in enumerate(MOOD_STATES)
            ),
        ]
    raise ValueError(f"unknown output kind {kind!r}")


DMX_DEFAULT_CHANNELS = 7  # R, G, B, white (0), valence, arousal, silent


# -- the map file ---------------------------------------------------------------------------


@functools.cache
def _validator() -> Draft202012Validator:
    text = resources.files("realtime.outputs").joinpath("map.schema.json").read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


def _line_of(text: str, path: tuple) -> int | None:
    """The line (1-based) where ``path`` (e.g. ("osc", "send", 1, "address")) is written, roughly.

    Follows ``[table]`` and ``[[array.of.tables]]`` headers and ``key =`` lines; a key
    written some other way (inline tables, dotted keys) falls back to its table's line.
    """
    tables: dict[tuple, int] = {}  # table path (with array indices) -> header line
    keys: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}
    current: tuple = ()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"\[\[\s*([^\]]+?)\s*\]\]", stripped):
            name = tuple(part.strip().strip("\"'") for part in m.group(1).split("."))
            index = counts.get(name, 0)
            counts[name] = index + 1
            current = (*name, index)
            tables.setdefault(name, number)
            tables[current] = number
        elif m := re.fullmatch(r"\[\s*([^\]]+?)\s*\]", stripped):
            current = tuple(part.strip().strip("\"'") for part in m.group(1).split("."))
            tables[current] = number
        elif m := re.match(r"([A-Za-z0-9_\-]+|\"[^\"]*\"|'[^']*')\s*=", stripped):
            keys[(*current, m.group(1).strip("\"'"))] = number
    for end in range(len(path), 0, -1):
        head = tuple(path[:end])
        if head in keys:
            return keys[head]
        if head in tables:
            return tables[head]
    return None


def _where(path: tuple) -> str:
    """("osc", "send", 1, "address") -> "[[osc.send]] #2, key 'address'"; ("midi", "channel") -> "[midi], key 'channel'"."""
    if len(path) >= 3 and path[1] == "send" and isinstance(path[2], int):
        table, rest = f"[[{path[0]}.send]] #{path[2] + 1}", path[3:]
    elif len(path) >= 2:
        table, rest = f"[{path[0]}]", path[1:]
    else:
        table, rest = None, path
    parts = [table] if table else []
    if rest:
        parts.append(f"key '{rest[0]}'")
    return ", ".join(parts) or "the top level"


class MapFile:
    """A ``--map`` file: loaded and checked against the schema at once, against the tags later."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MapError(f"--map {path}: cannot read it: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise MapError(f"--map {path}: not UTF-8 text (a TOML file is expected)") from None
        try:
            self.data = tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as exc:
            # tomllib says "... (at line N, column M)"
            found = re.search(r"\(at line (\d+), column \d+\)", str(exc))
            line = found.group(1) if found else "?"
            problem = str(exc)[: found.start()].strip() if found else str(exc)
            raise MapError(f"{self.path}:{line}: not valid TOML: {problem}") from None
        # The first problem of the outermost place; there, an unknown key before a missing one (a
        # misspelt key is both, and its spelling is what to mend).
        errors = sorted(
            _validator().iter_errors(self.data),
            key=lambda e: (len(e.absolute_path), e.validator != "additionalProperties", e.message),
        )
        if errors:
            raise self._schema_error(errors[0])
        self._check_entries()

    def error(self, path: tuple, problem: str) -> MapError:
        line = _line_of(self.text, path)
        return MapError(f"{self.path}:{line if line else '?'}: {_where(path)}: {problem}")

    def _schema_error(self, error) -> MapError:
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            known = list(error.schema.get("properties", {}))
            unknown = sorted(set(error.instance) - set(known))
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            return self.error((*path, unknown[0]), f"unknown key ({hint}expected one of: {', '.join(known)})")
        if error.validator == "required":
            missing = re.search(r"'([^']+)' is a required property", error.message)
            key = missing.group(1) if missing else "?"
            return self.error(path, f"this entry needs '{key}'")
        if error.validator == "pattern" and path and path[-1] == "value":
            description = error.schema["description"].rstrip(".")  # "A feed value: ..."
            return self.error(
                path,
                f"{error.instance!r} is not a value here; expected {description[0].lower()}{description[1:]}",
            )
        if error.validator in ("minimum", "maximum"):
            limits = f"{error.schema.get('minimum')}..{error.schema.get('maximum')}"
            return self.error(path, f"{error.instance} is outside {limits}")
        return self.error(path, error.message)

    def _check_entries(self) -> None:
        """What the schema cannot say: ranges of two different numbers, one destination each."""
        for kind in KINDS:
            section = self.data.get(kind, {})
            seen: dict[object, int] = {}
            for i, entry in enumerate(section.get("send", [])):
                where = (kind, "send", i)
                for key in ("in", "out"):
                    if key in entry and entry[key][0] == entry[key][1]:
                        raise self.error((*where, key), f"{entry[key]} is empty: give two different numbers")
                if kind in _OUT_LIMITS and "out" in entry:
                    lo, hi = _OUT_LIMITS[kind]
                    if not all(lo <= x <= hi for x in entry["out"]):
                        raise self.error((*where, "out"), f"{entry['out']} is outside {lo}..{hi}")
                if "gamma" in entry and entry.get("curve", "linear") != "gamma":
                    raise self.error((*where, "gamma"), 'gamma needs curve = "gamma"')
                if kind == "os2l":
                    if ("cmd" in entry) == ("button" in entry):
                        raise self.error(where, "an OS2L entry has either 'cmd' or 'button'")
                    if "button" in entry and not _is_on_off(entry["value"]):
                        raise self.error(
                            (*where, "value"), "a button follows an on/off value: active:NAME or silent"
                        )
                    to = ("cmd", entry["cmd"]) if "cmd" in entry else ("btn", entry["button"])
                else:
                    to = (entry[_DESTINATION[kind]], entry.get("channel", section.get("channel", 1)))
                if to in seen:
                    key = _DESTINATION.get(kind, "cmd" if "cmd" in entry else "button")
                    raise self.error(
                        (*where, key), f"also set by entry #{seen[to] + 1}: one value per destination"
                    )
                seen[to] = i

    def check_tags(self, tags) -> None:
        """Every tag the file names is one of ``tags`` (the feed's); MapError otherwise."""
        for kind in KINDS:
            for i, entry in enumerate(self.data.get(kind, {}).get("send", [])):
                self._check_tag(entry["value"], tags, (kind, "send", i, "value"))

    def routes(self, kind: str, defaults: list[Route], tags=None) -> list[Route]:
        """``defaults`` with this file's entries for ``kind`` applied; checks tag names against ``tags``.

        ``tags`` None: not known yet (``bridge`` learns them from the first mood: ``check_tags``).
        """
        section = self.data.get(kind)
        if section is None:
            return defaults
        channel = section.get("channel", 1)
        added = []
        for i, entry in enumerate(section.get("send", [])):
            value = entry["value"]
            if tags is not None:
                self._check_tag(value, tags, (kind, "send", i, "value"))
            if kind == "osc":
                to = entry["address"]
            elif kind == "os2l":
                to = ("cmd", entry["cmd"]) if "cmd" in entry else ("btn", entry["button"])
            else:
                to = entry[_DESTINATION[kind]]
            scale = None
            if value not in ("top", "state") and not (kind == "os2l" and "button" in entry):
                lo_in, hi_in = entry.get("in", value_range(value))
                lo_out, hi_out = entry.get("out", _OUT_RANGE[kind])
                gamma = entry.get("gamma", 2.2) if entry.get("curve") == "gamma" else 1.0
                scale = Scale(float(lo_in), float(hi_in), float(lo_out), float(hi_out), float(gamma))
            elif kind == "os2l":
                lo_in, hi_in = entry.get("in", value_range(value))
                scale = Scale(float(lo_in), float(hi_in), 0.0, 1.0)  # on at >= 0.5
            added.append(Route(value, to, scale, entry.get("channel", channel)))
        kept = defaults if section.get("defaults", True) else []
        if kind == "midi":
            kept = [replace(r, midi_channel=channel) for r in kept]
        taken = {(r.to, r.midi_channel) for r in added}
        return [r for r in kept if (r.to, r.midi_channel) not in taken] + added

    def _check_tag(self, value: str, tags, path: tuple) -> None:
        prefix = next((p for p in PER_TAG if value.startswith(p)), None)
        if prefix is None:
            assert value in FIXED_VALUES, value  # the schema's pattern allows nothing else
            return
        name = value[len(prefix) :]
        if name in tags:
            return
        close = difflib.get_close_matches(name, list(tags), n=3)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        if len(tags) <= LISTED_TAGS_MAX:
            known = f"the model's tags: {', '.join(tags)}"
        else:  # a default model has ~160: a line of thousands of characters helps nobody
            known = (
                f"the model's {len(tags)} tags are the keys of a mood message's \"tags\" "
                "(python -m realtime.subscribe --topic mood --json --count 1)"
            )
        raise self.error(path, f"unknown tag '{name}'{hint}; {known}")


LISTED_TAGS_MAX = 20  # an unknown tag's error lists the model's tags up to this many


def _is_on_off(value: str) -> bool:
    return value == "silent" or value.startswith(("active:", "state:"))


def check_dmx_start(start: int) -> None:
    if not 1 <= start <= DMX_CHANNELS - DMX_DEFAULT_CHANNELS + 1:
        raise MapError(
            f"--dmx-start {start}: the default DMX layout takes {DMX_DEFAULT_CHANNELS} channels from it, "
            f"so it must be within 1..{DMX_CHANNELS - DMX_DEFAULT_CHANNELS + 1}"
        )
