"""The official MTG-Jamendo mood/theme baseline, with its published weights.

Bogdanov, Won, Tovstogan, Porter & Serra, 2019, "The MTG-Jamendo Dataset for Automatic Music
Tagging" (ICML ML4MD workshop): the mood/theme baseline of its repository
(``scripts/baseline/model.py``), a five-layer fully convolutional network in the style of
Choi, Fazekas & Sandler 2016, "Automatic tagging using deep convolutional neural networks".
An input batch norm, five 3×3 convolutions with batch norm, ELU and max-pooling that take
96 bands × 1366 frames down to 1 × 1, dropout and one dense layer to the 56 tags.  The layer
names are the original's, so its ``best_model.pth`` loads as it is.

Input: the official Essentia mels (``models.frontend.ESSENTIA_JAMENDO``).  The segment is
1366 frames: the baseline's data loader crops the centre 1366 frames of each track (29.1 s,
the npy length of Choi's segment).  The pooling stack reduces time by 4·4·4·5·4 = 1280:
any 1280-2559 frames give one output position (the last frames of a segment that the pools
do not cover are never seen: for 1366 only frame 1365), fewer than 1280 leave nothing to
pool, and 2560 or more give several positions, which the 64-wide dense layer does not take.
So the engine feeds exactly 1366 frames and averages the 64-d embeddings of K segments.

The features were made from audio resampled to 12 kHz by Essentia's Resample(quality=4), which
Essentia documents as libsamplerate's fast linear approximation: against soxr it is ~1 dB
weaker at 2-5 kHz and aliases into 5-6 kHz.  On the reference clips, soxr-resampled audio
gives mels 0.7 dB off (median) and tag probabilities up to 0.045 off; from identical samples
our frontend agrees with Essentia to 0.0002 dB and the tags to 1e-7.

An older revision of the baseline built its dropout inside ``forward`` (so it stayed active
at test time); the released code, followed here, applies it in training only.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from models.base import HeadSpec, SegmentModel
from models.frontend import ESSENTIA_JAMENDO
from models.registry import register
from models.vocab import JAMENDO_MOODTHEME
from models.weights import WeightsError, cache_dir, load_state, read_weights, save_safetensors

SEGMENT_FRAMES = 1366
CHANNELS = (64, 128, 128, 128, 64)
POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))  # (mel, time)
WEIGHTS_ENV = "MOODSTREAM_JAMENDO_BASELINE"
SOURCE = "github.com/MTG/mtg-jamendo-dataset scripts/baseline/models/best_model.pth (moodtheme)"


class JamendoBaseline(SegmentModel):
    """Bogdanov et al. 2019, MTG-Jamendo mood/theme baseline; input (batch, 96 mel bands, 1366 frames)
    of Essentia's dB mel (``ESSENTIA_JAMENDO``)."""

    def __init__(self):
        super().__init__()
        self.frontend = ESSENTIA_JAMENDO
        self.segment_frames = SEGMENT_FRAMES
        self.heads = {"tags": HeadSpec("tags", JAMENDO_MOODTHEME)}
        self.embedding_dim = CHANNELS[-1]
        # Attribute names are the original's: its state dict loads without renaming.
        self.bn_init = nn.BatchNorm2d(1)
        in_channels = 1
        for i, out_channels in enumerate(CHANNELS, start=1):
            setattr(self, f"conv_{i}", nn.Conv2d(in_channels, out_channels, 3, padding=1))
            setattr(self, f"bn_{i}", nn.BatchNorm2d(out_channels))
            setattr(self, f"mp_{i}", nn.MaxPool2d(POOLS[i - 1]))
            in_channels = out_channels
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(CHANNELS[-1], len(JAMENDO_MOODTHEME))

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, 96, 1366) -> (batch, 64): the pooled features the dense layer reads."""
        x = self.bn_init(patch.unsqueeze(1))  # (B, 1, 96, T)
        for i in range(1, len(CHANNELS) + 1):
            conv, bn, pool = (getattr(self, f"{name}_{i}") for name in ("conv", "bn", "mp"))
            x = pool(F.elu(bn(conv(x))))  # (B, C_i, mel / prod pools, T / prod pools)
        return x.flatten(1)  # (B, 64) when 1280 <= T < 2560

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tags": self.dense(self.dropout(pooled))}

    def receptive_field(self) -> dict[str, int]:
        """The last pool's single unit: its theoretical field (174 bands × 2090 frames) is wider
        than a segment, so it sees all of it."""
        field, jump = [1, 1], [1, 1]
        for pool in POOLS:
            for axis in (0, 1):
                field[axis] += 2 * jump[axis]  # 3×3 convolution, stride 1
                field[axis] += (pool[axis] - 1) * jump[axis]
                jump[axis] *= pool[axis]
        return {"frequency": min(field[0], self.frontend.n_mels), "time": min(field[1], self.segment_frames)}


# --- weights -------------------------------------------------------------------------------


def convert_checkpoint(path: Path, model: JamendoBaseline) -> dict[str, torch.Tensor]:
    """The baseline's ``best_model.pth`` (a plain state dict: ``weights.read_weights``) checked against ``model``."""
    state = read_weights(path, "the MTG-Jamendo baseline weights")
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not hold the MTG-Jamendo baseline CNN: missing keys {missing[:5]}, "
            f"unexpected keys {unexpected[:5]} (expected bn_init, conv_1..5, bn_1..5, dense)"
        )
    for k, v in expected.items():
        if state[k].shape != v.shape:
            hint = ""
            if k == "dense.weight":
                hint = f" ({state[k].shape[0]} tags: not the {v.shape[0]}-tag mood/theme model)"
            raise WeightsError(
                f"{path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}{hint}"
            )
    return {k: state[k].to(v.dtype) for k, v in expected.items()}


def load_pretrained(model: JamendoBaseline, path: str | Path, cache: Path | None = None) -> Path:
    """Load ``path``, converted once into the cache (keyed by the file's content) as safetensors."""
    path = Path(path).expanduser()
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError as exc:
        raise WeightsError(
            f"cannot read the MTG-Jamendo baseline weights {path} ({exc.strerror}); get best_model.pth "
            f"from {SOURCE} and pass weights=PATH or set {WEIGHTS_ENV}"
        ) from exc
    cached = (cache or cache_dir()) / f"jamendo-baseline-{digest}.safetensors"
    if not cached.is_file():
        print(f"converting the MTG-Jamendo baseline {path} to {cached} (first use only)", file=sys.stderr)
        save_safetensors(convert_checkpoint(path, model), cached)
    load_state(model, cached)
    return cached


@register("jamendo-baseline", paper="Bogdanov et al. 2019, MTG-Jamendo mood/theme baseline (5-layer CNN)")
def jamendo_baseline(weights: str | None = None) -> JamendoBaseline:
    """``weights``: the baseline's best_model.pth; None: ``$MOODSTREAM_JAMENDO_BASELINE`` if set,
    else untrained; "": untrained."""
    if weights is not None and not isinstance(weights, str | os.PathLike):
        raise ValueError(
            f"jamendo-baseline: weights must be a path to best_model.pth or None, got {weights!r}"
        )
    if weights is None:
        weights = os.environ.get(WEIGHTS_ENV) or None
    model = JamendoBaseline()
    if weights:
        load_pretrained(model, weights)
    model.pretrained = bool(weights)
    return model.eval()
