"""The model registry: ``@register(name)`` on a factory, ``available()``, ``build(name, **overrides)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from models.base import SegmentModel


class UnknownModelError(KeyError):
    """A model name that is not registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., SegmentModel]
    paper: str
    recipe: str = "small"  # the training recipe of its paper (train/recipes.py; a test checks it exists)
    # For a model that grows its heads from the data it is trained on: (the data's heads, the
    # overrides the user gave) -> the overrides that give it those heads.  None: fixed heads.
    heads_from_data: Callable[[dict, dict], dict] | None = None

    def overrides(self) -> dict[str, object]:
        """The factory's keyword arguments and their defaults."""
        return {
            p.name: p.default
            for p in inspect.signature(self.factory).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


_REGISTRY: dict[str, Entry] = {}


def register(
    name: str, paper: str, recipe: str = "small", heads_from_data: Callable[[dict, dict], dict] | None = None
) -> Callable:
    """Register a factory returning a ``SegmentModel`` under ``name``, trained by default with ``recipe``."""

    def decorate(factory: Callable[..., SegmentModel]) -> Callable[..., SegmentModel]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = Entry(name, factory, paper, recipe, heads_from_data)
        return factory

    return decorate


def available() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def entry(name: str) -> Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(available())}") from None


def build(name: str, **overrides) -> SegmentModel:
    """Build the model registered as ``name``; unknown overrides are an error naming the allowed ones."""
    e = entry(name)
    allowed = e.overrides()
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        listing = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "none"
        raise ValueError(f"{name}: unknown override(s) {unknown}; allowed: {listing}")
    model = e.factory(**overrides)
    model.registry_name = name
    return model
