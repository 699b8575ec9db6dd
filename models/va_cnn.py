"""A one-convolution valence/arousal regressor on 15 s of mel spectrogram.

Stoltenberg, Tran & Zoller, 2019 (TU Berlin), a small CNN for music emotion recognition in the
valence/arousal plane: one 3×3 convolution with 16 filters and ReLU, 3×3 max pooling, a dense
layer of 8 units with batch norm and dropout 0.2, and two sigmoid outputs (valence, arousal).
Input: 80-band dB mel spectrograms of 15 s excerpts at 16 kHz.

What the paper leaves open is filled in with the Keras/librosa defaults such a model is built
with, and said here: librosa's STFT (n_fft 2048, hop 512, so 15 s = 469 centred frames),
power_to_db with ref 1 and amin 1e-10 (floor -100 dB) but no ``top_db`` (that clips relative
to the loudest bin of a whole excerpt, which a stream does not know), "valid" convolution and
pooling (pool stride = pool size), and the dense layer's ReLU before its batch norm.  The
dense layer reads the flattened 16 × 26 × 155 map, so a segment is exactly 469 frames.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.base import HeadSpec, SegmentModel
from models.frontend import FrontendConfig
from models.registry import register

VA_FRONTEND = FrontendConfig(
    sample_rate_hz=16000, n_fft=2048, hop_length=512, n_mels=80, scaling="db", db_floor=-100.0
)
SEGMENT_SECONDS = 15.0
SEGMENT_FRAMES = VA_FRONTEND.n_frames(int(SEGMENT_SECONDS * VA_FRONTEND.sample_rate_hz))  # 469
KERNEL = 3
POOL = 3


class VaCnn(SegmentModel):
    """Stoltenberg, Tran & Zoller 2019, CNN valence/arousal regression; input (batch, 80 mel bands,
    469 frames) of dB mel (15 s at 16 kHz, hop 512)."""

    def __init__(self, filters: int = 16, units: int = 8, dropout: float = 0.2):
        super().__init__()
        self.frontend = VA_FRONTEND
        self.segment_frames = SEGMENT_FRAMES
        self.heads = {"valence_arousal": HeadSpec("valence_arousal", ("valence", "arousal"))}
        self.embedding_dim = units
        self.conv = nn.Conv2d(1, filters, KERNEL)
        self.maxpool = nn.MaxPool2d(POOL)  # not `pool`: that is the segment pooling
        freq, time = ((n - KERNEL + 1) // POOL for n in (VA_FRONTEND.n_mels, SEGMENT_FRAMES))
        self.flat_features = filters * freq * time  # 16 × 26 × 155
        self.dense = nn.Linear(self.flat_features, units)
        self.bn = nn.BatchNorm1d(units)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(units, 2)

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, 80, 469) -> (batch, units): the dense layer's normalised activations."""
        if not torch.jit.is_tracing() and tuple(patch.shape[1:]) != self.input_shape:
            raise ValueError(
                f"va-cnn takes (batch, {', '.join(map(str, self.input_shape))}) patches, got {tuple(patch.shape)}"
            )
        x = self.maxpool(F.relu(self.conv(patch.unsqueeze(1))))  # (B, 16, 26, 155)
        return self.bn(F.relu(self.dense(x.flatten(1))))  # (B, units)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        # Logits: the paper's sigmoid outputs are sigmoid(logit); the feed publishes 2·sigmoid - 1.
        return {"valence_arousal": self.out(self.dropout(pooled))}

    def receptive_field(self) -> dict[str, int]:
        """One unit of the pooled convolution map; the dense layer then sees the whole patch."""
        field = KERNEL + (POOL - 1)
        return {"frequency": field, "time": field}


@register("va-cnn", paper="Stoltenberg, Tran & Zoller 2019, one-layer CNN valence/arousal regression")
def va_cnn(filters: int = 16, units: int = 8, dropout: float = 0.2) -> VaCnn:
    for name, value in (("filters", filters), ("units", units)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"va-cnn: {name} must be a positive integer, got {value!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"va-cnn: dropout must be in [0, 1), got {dropout!r}")
    model = VaCnn(filters, units, dropout)
    model.pretrained = False
    return model
