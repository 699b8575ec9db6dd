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


def load_parts(
    parts: dict[str, torch.nn.Module], path: str | Path, what: str, layout: str, ignore=()
) -> None:
    """Load a safetensors file into named submodules (keys ``<part>.<param>``), all or nothing.

    ``what`` names the weights in messages (e.g. "VGGish weights"), ``layout`` says where their
    documented layout is; keys starting with ``ignore`` (parts we do not have) are skipped.
    Only safetensors: a pickle is never loaded, and the message says how to convert one.
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(
            f"{what} must be a .safetensors file, got {path.name}; pickles are never loaded. Convert a "
            '.pth state dict once: save_file(torch.load(pth, weights_only=True), "weights.safetensors")'
        )
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path}")
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    expected = {f"{name}.{k}": v.shape for name, part in parts.items() for k, v in part.state_dict().items()}
    given = {k: v for k, v in state.items() if not k.startswith(tuple(ignore))}
    missing, unexpected = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{what} {path} do not have the documented layout ({layout}): "
            f"missing {missing[:6]}, unexpected {unexpected[:6]}"
        )
    for k, shape in expected.items():
        if given[k].shape != shape:
            raise WeightsError(
                f"{what} {path}: {k} has shape {tuple(given[k].shape)}, expected {tuple(shape)}"
            )
    for name, part in parts.items():
        part.load_state_dict(
            {k.removeprefix(f"{name}."): v for k, v in given.items() if k.startswith(f"{name}.")}
        )
