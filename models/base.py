"""What every registered model is: a segment encoder, a temporal pooling, and heads.

The engine encodes each mel segment once and caches the embedding; each hop it pools the
last K cached embeddings and applies the heads.  ``forward`` does all three for one batch
of patches (K = 1), which is what training and ONNX export use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from models.frontend import FrontendConfig

if TYPE_CHECKING:
    from models.artifact import Artifact

HEAD_KINDS = ("tags", "valence_arousal", "classes")


@dataclass(frozen=True)
class HeadSpec:
    """One output of a model: multi-label tags (sigmoid), valence/arousal, or classes (softmax)."""

    kind: str
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {self.kind!r}; allowed: {', '.join(HEAD_KINDS)}")
        if self.kind == "valence_arousal" and self.labels != ("valence", "arousal"):
            raise ValueError("a valence_arousal head has the labels ('valence', 'arousal')")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "labels": list(self.labels)}


class SegmentModel(nn.Module):
    """Base class: subclasses set the attributes below and implement ``encode`` and ``predict``."""

    frontend: FrontendConfig
    segment_frames: int
    heads: dict[str, HeadSpec]
    embedding_dim: int

    # The model contract that the engine, training and the tools read.  Every model has these
    # (the defaults below); a model or its factory sets what differs.  Nobody probes with getattr.
    registry_name: str = ""  # the name models.build built it by
    pretrained: bool = False  # its weights mean something: published ones, or trained (an artifact)
    pretrained_prefixes: tuple[str, ...] = ()  # parameters that came pretrained: a recipe's
    # encoder_frozen_epochs holds them frozen first
    frozen_encoder: bool = False  # the encoder never trains: training encodes each window once
    artifact: Artifact | None = None  # the artifact it was loaded from (thresholds, provenance)
    artifact_folder: Path | None = None  # ...and where that artifact lies

    @property
    def embedding_cache_key(self) -> str | None:
        """The name a frozen encoder's window embeddings are cached under; None: never cached."""
        return None

    def head_layer(self, head: str) -> nn.Linear | None:
        """The final linear layer of ``head`` (calibration folds a temperature into it), if it has one."""
        return None

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, segment_frames) -> (batch, embedding_dim)"""
        raise NotImplementedError

    def streaming_encoder(self):
        """An object whose ``encode(frames, start, ends)`` equals ``encode`` of the windows cut
        from one stream, sharing work between overlapping windows, and whose ``prepare(frames,
        start, end)`` does the next window's work its frames so far allow; None (the default):
        the engine encodes each window whole.  Eval mode only."""
        return None

    def pool(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, K, embedding_dim) -> (batch, embedding_dim); mean unless a model learns one."""
        return embeddings.mean(dim=1)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """(batch, embedding_dim) -> logits per head name."""
        raise NotImplementedError

    def forward(self, patch: torch.Tensor) -> dict[str, torch.Tensor]:
        """(batch, n_mels, input_frames) -> logits per head (K = 1 unless a model says otherwise).

        A model whose paper trains extra outputs returns them too, under keys starting with
        ``aux_`` (e.g. resnet34-attention's per-segment path); the engine ignores those.
        """
        return self.predict(self.pool(self.encode(patch).unsqueeze(1)))

    @property
    def input_frames(self) -> int:
        """Frames ``forward`` takes; a model that pools segments internally takes several."""
        return self.segment_frames

    @property
    def input_shape(self) -> tuple[int, int]:
        """(n_mels, input_frames) of one example for ``forward``."""
        return (self.frontend.n_mels, self.input_frames)

    @property
    def max_context_segments(self) -> int | None:
        """The most segments ``pool`` looks at (older ones are ignored); None: no limit."""
        return None

    def receptive_field(self) -> dict[str, int] | None:
        """{"frequency": bands, "time": frames} seen by one output unit of the encoder, if known."""
        return None

    @property
    def segment_seconds(self) -> float:
        return self.segment_frames / self.frontend.frame_rate_hz


def probabilities(spec: HeadSpec, logits: torch.Tensor) -> torch.Tensor:
    """Turn a head's logits into what the feed publishes (valence/arousal in [-1, 1])."""
    if spec.kind == "classes":
        return torch.softmax(logits, dim=-1)
    p = torch.sigmoid(logits)
    return 2.0 * p - 1.0 if spec.kind == "valence_arousal" else p
