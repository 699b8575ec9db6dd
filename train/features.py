"""Audio to mel features for training: decode, the shared one-pass frontend, a disk cache, crops.

The mel is ``models.frontend.MelFrontend`` in one pass — the same module the engine streams
and the ONNX export wraps — so a model sees in training exactly the features it sees live.
``windows`` cuts a track where the engine would (``models.windowing.window_starts``), so
validation can score a track by averaging the windows ``python -m realtime.analyze`` produces.

Cache layout: ``cache_dir/<frontend hash>/<file hash>.npy``, with the frontend's parameters
in ``frontend.json`` beside them.  The frontend hash covers every ``FrontendConfig`` field and
``FEATURES_VERSION`` (bump it when ``MelFrontend``'s output changes for the same parameters);
the file hash covers the resolved path, size and modification time, so an edited file is
recomputed.  Entries are written to a temporary file and renamed, so parallel workers and
interrupted runs never leave a torn ``.npy``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from models.frontend import FrontendConfig, MelFrontend
from models.windowing import window_starts

FEATURES_VERSION = 1


class DecodeError(RuntimeError):
    """An audio file that libsndfile cannot read, or one without samples."""


def decode(path: str | Path, sample_rate_hz: int) -> np.ndarray:
    """(samples,) mono float32 at ``sample_rate_hz``: channels averaged, soxr HQ resampling."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such audio file: {path}")
    try:
        audio, rate = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DecodeError(f"cannot decode {path}: {exc}") from exc
    if audio.shape[0] == 0:
        raise DecodeError(f"{path} has no samples")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if rate != sample_rate_hz:
        mono = soxr.resample(mono, rate, sample_rate_hz, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def frontend_hash(frontend: FrontendConfig) -> str:
    """16 hex digits naming a frontend's parameters (and the feature code's version)."""
    text = json.dumps({"version": FEATURES_VERSION, **frontend.to_dict()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _save_atomic(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FeatureCache:
    """``mel(path)``: a track's (n_mels, frames) float32 mel, computed once and kept on disk.

    ``.npy`` inputs (the official MTG-Jamendo mels) are returned as they are, after checking
    their shape against the frontend; they are counted in ``passthrough``, not as hits.
    """

    def __init__(self, cache_dir: str | Path, frontend: FrontendConfig, device: str | torch.device = "cpu"):
        self.frontend = frontend
        self.device = torch.device(device)
        self.dir = Path(cache_dir) / frontend_hash(frontend)
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "frontend.json"
        if not config.is_file():
            _save_text_atomic(config, json.dumps(frontend.to_dict(), indent=2) + "\n")
        self._module: MelFrontend | None = None  # built on the first miss
        self.hits = 0
        self.misses = 0
        self.passthrough = 0

    def entry(self, path: str | Path) -> Path:
        """Cache file of an audio file as it is now (path, size, mtime)."""
        resolved = Path(path).resolve()
        stat = resolved.stat()
        key = f"{resolved}\0{stat.st_size}\0{stat.st_mtime_ns}"
        return self.dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"

    def mel(self, path: str | Path) -> np.ndarray:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        if path.suffix == ".npy":
            self.passthrough += 1
            return self._check(np.load(path, allow_pickle=False), path)
        entry = self.entry(path)
        if entry.is_file():
            try:
                mel = self._check(np.load(entry, allow_pickle=False), entry)
            except (ValueError, OSError, EOFError):
                pass  # unreadable (e.g. a disk filled up mid-write elsewhere): recompute
            else:
                self.hits += 1
                return mel
        self.misses += 1
        mel = self.compute(decode(path, self.frontend.sample_rate_hz))
        _save_atomic(entry, mel)
        return mel

    def compute(self, audio: np.ndarray) -> np.ndarray:
        """(samples,) audio at the frontend's rate -> (n_mels, frames) float32, uncached."""
        if self._module is None:
            self._module = MelFrontend(self.frontend).to(self.device).eval()
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(self.device)
            mel = self._module(x.unsqueeze(0))[0]  # (n_mels, frames)
        return mel.cpu().numpy().astype(np.float32, copy=False)

    def _check(self, mel: np.ndarray, path: Path) -> np.ndarray:
        n_mels = self.frontend.n_mels
        if mel.ndim != 2 or mel.shape[0] != n_mels:
            raise ValueError(f"{path}: mel of shape {mel.shape}, expected ({n_mels}, frames)")
        if not np.issubdtype(mel.dtype, np.floating):
            raise ValueError(f"{path}: mel of dtype {mel.dtype}, expected floating point")
        return mel.astype(np.float32, copy=False)

    @property
    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "passthrough": self.passthrough}


def _save_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# -- crops and windows ------------------------------------------------------------------------


def _looped(mel: np.ndarray, frames: int) -> np.ndarray:
    """The track repeated until it has at least ``frames`` frames."""
    if frames < 1:
        raise ValueError(f"a crop needs at least one frame, got {frames}")
    if mel.shape[1] == 0:
        raise ValueError("cannot crop a mel with no frames")
    reps = -(-frames // mel.shape[1])
    return np.tile(mel, (1, reps)) if reps > 1 else mel


def random_crop(mel: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """(n_mels, frames) from a uniformly random start.

    A track shorter than ``frames`` is looped (wrapped, not zero-padded: a zero is silence
    for ``log10_1p`` but loud for dB mels), starting at a random frame of the first pass.
    """
    total = mel.shape[1]
    if total >= frames >= 1:
        start = int(rng.integers(0, total - frames + 1))
        return mel[:, start : start + frames].copy()
    start = int(rng.integers(0, total)) if total and frames >= 1 else 0
    return _looped(mel, frames + start)[:, start : start + frames].copy()


def centre_crop(mel: np.ndarray, frames: int) -> np.ndarray:
    """(n_mels, frames) from the middle (start rounded down); shorter tracks loop from the start."""
    total = mel.shape[1]
    start = max(0, (total - frames) // 2)
    return _looped(mel, frames)[:, start : start + frames].copy()


def windows(mel: np.ndarray, segment_frames: int, hop_frames: int, wrap_short: bool = False) -> np.ndarray:
    """(n_windows, n_mels, segment_frames): the windows the engine analyses, in order.

    Windows start every ``hop_frames`` from frame 0 and only full ones count
    (``models.windowing.window_starts``); a track shorter than a segment has none, unless
    ``wrap_short``: then it is looped to one segment (training and evaluation score every track).
    """
    if wrap_short and 0 < mel.shape[1] < segment_frames:
        mel = _looped(mel, segment_frames)[:, :segment_frames]
    starts = window_starts(mel.shape[1], segment_frames, hop_frames)
    if not starts:
        return np.zeros((0, mel.shape[0], segment_frames), dtype=mel.dtype)
    return np.stack([mel[:, s : s + segment_frames] for s in starts])
