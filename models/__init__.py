"""Architectures, the registry, frontend configs and weights.

``models.available()`` lists the registered names, ``models.build(name, **overrides)`` builds one.
"""

from models import musicnn  # noqa: F401  (registers musicnn-msd, musicnn-mtt)
from models.base import HeadSpec, SegmentModel, probabilities
from models.frontend import FrontendConfig
from models.registry import UnknownModelError, available, build, entry, register

__all__ = [
    "FrontendConfig",
    "HeadSpec",
    "SegmentModel",
    "UnknownModelError",
    "available",
    "build",
    "entry",
    "probabilities",
    "register",
]
