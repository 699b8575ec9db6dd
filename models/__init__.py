"""Architectures, the registry, frontend configs and weights.

``models.available()`` lists the registered names, ``models.build(name, **overrides)`` builds one,
``models.resolve(name_or_path)`` loads what a command's ``--model`` names (``default``, a
registered name, or a trained artifact directory).
"""

from models import (  # noqa: F401  (each module registers its models)
    attention_cnn,
    cp_resnet,
    crnn,
    deepspectrum,
    jamendo_baseline,
    musicnn,
    resnet34_attention,
    segment_attention,
    va_cnn,
)
from models.artifact import DEFAULT, DEFAULT_NAME, check_name, is_artifact, resolve
from models.base import HeadSpec, SegmentModel, probabilities
from models.frontend import FrontendConfig, MelFrontend
from models.registry import UnknownModelError, available, build, entry, register

__all__ = [
    "DEFAULT",
    "DEFAULT_NAME",
    "FrontendConfig",
    "MelFrontend",
    "HeadSpec",
    "SegmentModel",
    "UnknownModelError",
    "available",
    "build",
    "check_name",
    "entry",
    "is_artifact",
    "probabilities",
    "register",
    "resolve",
]
