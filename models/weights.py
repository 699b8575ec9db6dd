"""Where converted weights live, and loading them without unpickling."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


class WeightsError(RuntimeError):
    """Weights are missing, unreadable or do not fit the model; the message says what to do."""


def cache_dir() -> Path:
    """``$MOODSTREAM_CACHE``, else ``$XDG_CACHE_HOME/moodstream``, else ``~/.cache/moodstream``."""
    if os.environ.get("MOODSTREAM_CACHE"):
        return Path(os.environ["MOODSTREAM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "moodstream"


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write atomically, so an interrupted conversion never leaves a half file in the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise WeightsError(
            f"cannot write the weights cache {path.parent} ({exc.strerror}); "
            "set MOODSTREAM_CACHE to a writable directory"
        ) from exc


def load_state(model: torch.nn.Module, path: Path) -> None:
    """Load a safetensors state dict into ``model``; every key must match."""
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"cannot read weights {path}: {exc}") from exc
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"weights {path} do not fit {type(model).__name__}: {exc}") from exc
    if missing or unexpected:
        raise WeightsError(
            f"weights {path} do not fit {type(model).__name__}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
