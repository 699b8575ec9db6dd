"""The ZeroMQ feed contract: topics, the versioned JSON Schema, and checks for messages read.

A message is two frames: the topic (``b"mood"`` or ``b"status"``), then one UTF-8 JSON
object that matches ``schema/feed.schema.json``.  ``decode`` is the only way a subscriber in
this package turns frames into a message, so every message read is checked: frame count,
topic, size, UTF-8, strict JSON (no NaN/Infinity, no duplicate keys), then the schema.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
from importlib import resources

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

SCHEMA_VERSION = 5
TOPICS = ("mood", "status")
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
# A mood message with a few hundred tags is a few kB; anything near this is not ours.
MAX_MESSAGE_BYTES = 1 << 20
# Error messages quote offending values; a whole tags object would drown the reason.
_MAX_ERROR_CHARS = 300


class FeedError(ValueError):
    """A message that does not follow the feed contract."""


def endpoint(text: str) -> str:
    """An argparse type for an endpoint to bind: ``tcp://HOST:PORT`` (port 0..65535, or ``*``: the
    system chooses), ``ipc://PATH`` or ``inproc://NAME``.  ZeroMQ itself takes a port past 65535
    modulo 2**16, so ``:99999`` would bind 34463: refused here instead."""
    return _endpoint(text, bind=True)


def feed_endpoint(text: str) -> str:
    """An argparse type for the feed's endpoint to connect to: as ``endpoint``, but a port of
    1..65535 and a host, which connecting needs (no ``*``, no port 0)."""
    return _endpoint(text, bind=False)


def _endpoint(text: str, bind: bool) -> str:
    transport, sep, address = text.partition("://")
    if not sep or transport not in ("tcp", "ipc", "inproc") or not address:
        raise argparse.ArgumentTypeError(f"{text!r} is not a ZeroMQ endpoint (e.g. {DEFAULT_ENDPOINT})")
    if transport == "tcp":
        host, colon, port = address.rpartition(":")
        if not colon or not host:
            raise argparse.ArgumentTypeError(f"{text!r} needs a host and a port (e.g. {DEFAULT_ENDPOINT})")
        if bind and port != "*" and not (port.isdigit() and 0 <= int(port) <= 65535):
            raise argparse.ArgumentTypeError(
                f"port {port!r} of {text!r} is not in 1..65535 (0 or *: any free port)"
            )
        if not bind and host == "*":
            raise argparse.ArgumentTypeError(
                f"{text!r}: '*' binds every address; connect to the analyzer's host"
            )
        if not bind and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise argparse.ArgumentTypeError(
                f"port {port!r} of {text!r} is not in 1..65535 (the analyzer's --pub port)"
            )
    return text


def stamp(message: dict) -> dict:
    """Stamp a mood message as it leaves: ``t_publish`` now, and ``latency_ms`` from its ``t_capture``."""
    t_publish = time.time()
    message["t_publish"] = t_publish
    if "t_capture" in message:
        message["latency_ms"] = (t_publish - message["t_capture"]) * 1000.0
    return message


def load_schema() -> dict:
    """The feed's JSON Schema (draft 2020-12) as a fresh dict; ``$defs`` holds ``mood`` and ``status``."""
    text = resources.files("realtime").joinpath("schema", "feed.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


@functools.cache
def _validator(topic: str) -> Draft202012Validator:
    # Built once per topic: compiling the schema costs far more than checking a message.
    schema = load_schema()
    registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    return Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{topic}"}, registry=registry)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 3] + "..."


def _check(topic: str, message: object) -> None:
    """Schema and cross-field rules for an already JSON-shaped ``message``."""
    if topic not in TOPICS:
        raise FeedError(f"unknown topic {_shorten(repr(topic))}; expected one of {', '.join(TOPICS)}")
    if not isinstance(message, dict):
        raise FeedError(f"{topic} message must be a JSON object, not {type(message).__name__}")
    errors = list(_validator(topic).iter_errors(message))
    if errors:
        error = best_match(errors)
        where = error.json_path if error.absolute_path else "the top level"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise FeedError(f"invalid {topic} message at {where}: {_shorten(error.message)}{more}")
    if topic == "mood":
        # JSON Schema cannot say "each item is a key of that other object".
        unknown = [name for name in message["active"] if name not in message["tags"]]
        if unknown:
            names = _shorten(", ".join(repr(name) for name in unknown))
            raise FeedError(f"invalid mood message: active tags not in tags: {names}")
        for vocabulary in ("moods", "emotions", "descriptors"):
            stray = [name for name in message[vocabulary] if name not in message["active"]]
            if stray:
                names = _shorten(", ".join(repr(name) for name in stray))
                raise FeedError(f"invalid mood message: {vocabulary} not in active: {names}")


def _has_non_finite(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_non_finite(v) for v in value)
    return False


def validate(topic: str, message: dict) -> None:
    """Raise ``FeedError`` unless ``message`` is a valid ``topic`` message (schema and active ⊆ tags)."""
    # JSON Schema's minimum/maximum let NaN through (every comparison with NaN is false).
    if _has_non_finite(message):
        raise FeedError(f"invalid {topic} message: NaN or Infinity is not JSON")
    _check(topic, message)


def _reject_constant(name: str) -> float:
    raise FeedError(f"{name} is not JSON")


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    # Parsers disagree on which duplicate wins; a message must mean the same in every language.
    message = {}
    for key, value in pairs:
        if key in message:
            raise FeedError(f"duplicate key {_shorten(repr(key))}")
        message[key] = value
    return message


def decode(frames: list[bytes]) -> tuple[str, dict]:
    """Received multipart ``frames`` -> ``(topic, message)``, validated; ``FeedError`` otherwise."""
    if len(frames) != 2:
        raise FeedError(f"expected 2 frames (topic, JSON), got {len(frames)}")
    topic_bytes, payload = (bytes(frame) for frame in frames)
    topic = topic_bytes.decode("ascii", errors="replace")
    if topic not in TOPICS:
        raise FeedError(f"unknown topic {_shorten(repr(topic))}; expected one of {', '.join(TOPICS)}")
    if len(payload) > MAX_MESSAGE_BYTES:
        raise FeedError(f"{topic} message is {len(payload)} bytes, more than the {MAX_MESSAGE_BYTES} allowed")
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16 and UTF-32.
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FeedError(f"{topic} message is not UTF-8: {e}") from None
    try:
        message = json.loads(
            text, parse_constant=_reject_constant, object_pairs_hook=_object_without_duplicates
        )
    except FeedError as e:
        raise FeedError(f"{topic} message is not valid JSON: {e}") from None
    except RecursionError:
        raise FeedError(f"{topic} message is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and integers too long to convert
        raise FeedError(f"{topic} message is not valid JSON: {_shorten(str(e))}") from None
    _check(topic, message)
    return topic, message
