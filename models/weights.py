"""Where converted weights live, and reading weights without running anyone's code.

The one policy for weights from outside: a ``.safetensors`` file is read as it is; a PyTorch
state dict (``.pth``/``.pt``, how several papers publish theirs) is read with torch's
weights-only loader (``torch.load(weights_only=True)``: tensors and plain containers, never
arbitrary objects or code), must be a flat name -> tensor dict, and is converted to safetensors
in the cache where it is used again.  A general pickle is never loaded.
"""

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


def _umask() -> int:
    """This process's umask, read without setting it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write atomically, so an interrupted conversion never leaves a half file in the cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        # safetensors makes its files 0600: an artifact another user or a service account loads
        # (listen run as a service) gets the mode any file of this user's gets.
        os.chmod(tmp, 0o666 & ~_umask())
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


PICKLED_STATE_DICTS = (".pth", ".pt", ".bin")


def read_weights(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """name -> tensor from ``path`` under the module's policy; WeightsError saying what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{what} not found: {path}")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for corrupt headers
            raise WeightsError(f"cannot read {what} {path}: {exc}") from exc
    if path.suffix not in PICKLED_STATE_DICTS:
        raise WeightsError(
            f"{what} must be a .safetensors file or a PyTorch state dict ({', '.join(PICKLED_STATE_DICTS)}), "
            f"got {path.name}"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only loader refuses anything but tensors and plain containers
        raise WeightsError(
            f"cannot read {what} {path} as a plain state dict (torch's weights-only loader: {exc})"
        ) from exc
    if isinstance(state, dict) and set(state) == {"model"}:  # a Solver.save()-style wrapper
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{what} {path} is not a state dict (names -> tensors)")
    return state


def load_parts(
    parts: dict[str, torch.nn.Module], path: str | Path, what: str, layout: str, ignore=()
) -> None:
    """Load a safetensors file into named submodules (keys ``<part>.<param>``), all or nothing.

    ``what`` names the weights in messages (e.g. "VGGish weights"), ``layout`` says where their
    documented layout is; keys starting with ``ignore`` (parts we do not have) are skipped.
    ``read_weights``'s policy: safetensors, or a plain PyTorch state dict, never a general pickle.
    """
    path = Path(path)
    state = read_weights(path, what)
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
