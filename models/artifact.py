"""Model artifacts: a directory with ``config.json`` + ``weights.safetensors`` (+ optional ``model.onnx``).

``config.json`` records the registry name and constructor overrides, so the model is rebuilt
from it alone; the frontend, segment length and heads are recorded too (and checked against
the rebuilt model, so an artifact never silently runs with other features than it was trained
on), with the thresholds for ``active`` tags and the provenance of the training run.
Weights that come from elsewhere (e.g. a frozen musicnn encoder, from the musicnn package)
are named in ``external_prefixes`` and not stored.  Nothing is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from models.base import SegmentModel
from models.registry import build, entry
from models.weights import save_safetensors

FORMAT = "moodstream-artifact"
VERSION = 1
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
WHOLE_GRAPH = "model.onnx"  # python -m models export / train export, beside the weights
_KEYS = {
    "format",
    "version",
    "model",
    "overrides",
    "frontend",
    "segment_frames",
    "heads",
    "external_prefixes",
    "thresholds",
    "provenance",
}


class ArtifactError(ValueError):
    """An artifact directory that cannot be loaded; the message says what is wrong."""


@dataclass
class Artifact:
    """What ``config.json`` holds, besides the weights."""

    model: str
    overrides: dict = field(default_factory=dict)
    external_prefixes: list[str] = field(default_factory=list)
    thresholds: dict[str, list[float]] = field(default_factory=dict)  # head -> per-label on-threshold
    provenance: dict = field(default_factory=dict)


def is_artifact(path: str | Path) -> bool:
    return (Path(path) / CONFIG).is_file()


def save(model: SegmentModel, folder: str | Path, artifact: Artifact) -> Path:
    """Write ``config.json`` and the weights not covered by ``external_prefixes``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for head, values in artifact.thresholds.items():
        if head not in model.heads or len(values) != len(model.heads[head].labels):
            raise ArtifactError(f"thresholds for {head!r} do not match the model's heads")
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": artifact.model,
        "overrides": _jsonable(artifact.overrides),
        "frontend": model.frontend.to_dict(),
        "segment_frames": model.segment_frames,
        "heads": {name: spec.to_dict() for name, spec in model.heads.items()},
        "external_prefixes": list(artifact.external_prefixes),
        "thresholds": {k: [float(v) for v in vals] for k, vals in artifact.thresholds.items()},
        "provenance": _jsonable(artifact.provenance),
    }
    state = {
        k: v.detach().cpu()
        for k, v in model.state_dict().items()
        if not any(k.startswith(p) for p in artifact.external_prefixes)
    }
    save_safetensors(state, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    # ONNX graphs exported from the weights before these would run them beside the new ones (the
    # streaming graphs' stamp would catch theirs; model.onnx has none): gone, as the weights went.
    from models.export import STAMP, STREAMING_GRAPHS  # models.export imports torch's exporter

    for name in (WHOLE_GRAPH, *STREAMING_GRAPHS, STAMP):
        (folder / name).unlink(missing_ok=True)
    return folder


def load(folder: str | Path) -> tuple[SegmentModel, Artifact]:
    """Rebuild the model from ``config.json`` and load its weights; every check has a clear error."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{folder} is not a model artifact (no {CONFIG})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {folder / CONFIG}: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ArtifactError(f"{folder / CONFIG} is not a {FORMAT} config")
    unknown = set(config) - _KEYS
    if unknown:
        raise ArtifactError(f"{folder / CONFIG}: unknown keys {sorted(unknown)}")
    if config.get("version") != VERSION:
        raise ArtifactError(
            f"{folder / CONFIG}: version {config.get('version')!r}, this moodstream reads {VERSION}"
        )
    artifact = Artifact(
        model=config["model"],
        overrides=config.get("overrides", {}),
        external_prefixes=config.get("external_prefixes", []),
        thresholds=config.get("thresholds", {}),
        provenance=config.get("provenance", {}),
    )
    try:
        model = build(artifact.model, **artifact.overrides)
    except (KeyError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{folder / CONFIG}: cannot build {artifact.model!r}: {exc}") from exc
    if model.frontend.to_dict() != config.get("frontend"):
        raise ArtifactError(f"{folder / CONFIG}: its frontend differs from {artifact.model}'s")
    if config.get("heads") != {name: spec.to_dict() for name, spec in model.heads.items()}:
        raise ArtifactError(f"{folder / CONFIG}: its heads differ from the rebuilt model's")
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as exc:  # missing or corrupt safetensors
        raise ArtifactError(f"cannot read {folder / WEIGHTS}: {exc}") from exc
    expected = {k for k in model.state_dict() if not any(k.startswith(p) for p in artifact.external_prefixes)}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:5], sorted(set(state) - expected)[:5]
        raise ArtifactError(
            f"{folder / WEIGHTS} does not fit {artifact.model}: missing {missing}, unexpected {extra}"
        )
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ArtifactError(f"{folder / WEIGHTS} does not fit {artifact.model}: {exc}") from exc
    model.pretrained = True
    model.artifact = artifact
    model.artifact_folder = folder
    return model.eval(), artifact


DEFAULT_NAME = "default"  # what every command runs without --model
DEFAULT = Path(__file__).resolve().parent / "default"  # the trained model that ships with moodstream


def check_name(name_or_path: str) -> None:
    """Refuse, before anything loads, what ``resolve`` could never load: UnknownModelError listing the names."""
    if name_or_path != DEFAULT_NAME and not Path(name_or_path).exists():
        entry(name_or_path)  # raises, listing the registered names


def resolve(name_or_path: str) -> SegmentModel:
    """The model a command names: ``default`` (the shipped artifact), a registry name, or an artifact directory.

    Every command resolves ``--model`` here, so they all accept the same names and say the same
    thing about the ones they cannot load.
    """
    if name_or_path == DEFAULT_NAME:
        if not is_artifact(DEFAULT):
            raise ArtifactError(f"the default model is missing from {DEFAULT}; reinstall moodstream")
        return load(DEFAULT)[0]
    if is_artifact(name_or_path):
        return load(name_or_path)[0]
    if Path(name_or_path).exists():
        raise ArtifactError(f"{name_or_path} is a path but not a model artifact (no {CONFIG})")
    return build(name_or_path)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value
