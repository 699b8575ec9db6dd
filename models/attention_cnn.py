"""An attention-based CNN that classifies genre and valence mood together.

Li (KTH), "Attention-based Convolutional Neural Network for Music Genre and Mood
Classification": four 2×2 convolutions (64, 128, 256, 512 filters) with batch norm and
pooling learn features of 128×128 mel slices; beside the pooled features, a parallel
attention layer scores every position of the last feature maps (a linear score, softmax over
positions) and takes the weighted sum of each map; both are concatenated and feed two
softmax outputs, the genre (GTZAN's ten) and the valence mood (sad / neutral / happy).

Our reading of the parts the paper leaves open: each block is conv (valid) -> batch norm ->
ReLU -> 2×2 max pooling; "max and average pooling" are the global max and mean over the
positions of the last maps (the pooled features), so the embedding is [max, mean, attention]
of 512 maps each (1536).  Slices are 128 mel bands × 128 frames at 22050 Hz with librosa's
STFT (n_fft 2048, hop 512): 128 frames = 2.97 s (3 s would be 130 centred frames).  Global
pooling makes any length from 31 frames on work; the segment stays the paper's 128.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.base import HeadSpec, SegmentModel
from models.frontend import FrontendConfig
from models.registry import register

ATTENTION_FRONTEND = FrontendConfig(
    sample_rate_hz=22050, n_fft=2048, hop_length=512, n_mels=128, scaling="db", db_floor=-100.0
)
SEGMENT_FRAMES = 128
CHANNELS = (64, 128, 256, 512)
GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
VALENCE_CLASSES = ("sad", "neutral", "happy")


def min_frames(blocks: int) -> int:
    """Shortest input that leaves one position after ``blocks`` of 2×2 conv + 2×2 pool."""
    size = 1
    for _ in range(blocks):
        size = 2 * size + 1  # the pool needs 2·size, the valid conv one more
    return size


class _Block(nn.Module):
    """2×2 convolution (valid) -> batch norm -> ReLU -> 2×2 max pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 2)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)


class AttentionPool(nn.Module):
    """A linear score per position, softmax over positions, the weighted sum of every map."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Linear(channels, 1)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:  # (B, C, positions)
        weights = torch.softmax(self.score(maps.transpose(1, 2)), dim=1)  # (B, positions, 1)
        return torch.bmm(maps, weights).squeeze(2)  # (B, C)


class AttentionCnn(SegmentModel):
    """Li (KTH), attention-based CNN for genre and valence mood; input (batch, 128 mel bands,
    128 frames) of dB mel (2.97 s at 22050 Hz, hop 512)."""

    def __init__(self, channels: tuple[int, ...] = CHANNELS, segment_frames: int = SEGMENT_FRAMES):
        super().__init__()
        self.frontend = ATTENTION_FRONTEND
        self.segment_frames = segment_frames
        self.heads = {
            "genre": HeadSpec("classes", GTZAN_GENRES),
            "valence_class": HeadSpec("classes", VALENCE_CLASSES),
        }
        self.embedding_dim = 3 * channels[-1]
        self.blocks = nn.ModuleList(
            _Block(c_in, c_out) for c_in, c_out in zip((1, *channels[:-1]), channels, strict=True)
        )
        self.attention = AttentionPool(channels[-1])
        self.genre = nn.Linear(self.embedding_dim, len(GTZAN_GENRES))
        self.valence_class = nn.Linear(self.embedding_dim, len(VALENCE_CLASSES))

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, 128, frames) -> (batch, 3·C): global max, global mean and attention of the maps."""
        x = patch.unsqueeze(1)  # (B, 1, mel, T)
        for block in self.blocks:
            x = block(x)  # 128 x 128 -> 63 -> 31 -> 15 -> 7
        maps = x.flatten(2)  # (B, C, positions)
        return torch.cat([maps.amax(dim=2), maps.mean(dim=2), self.attention(maps)], dim=1)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"genre": self.genre(pooled), "valence_class": self.valence_class(pooled)}

    def receptive_field(self) -> dict[str, int]:
        """One position of the last maps; the global pooling and attention see the whole patch."""
        field, jump = 1, 1
        for _ in self.blocks:
            field += jump  # 2×2 convolution
            field += jump  # 2×2 max pooling
            jump *= 2
        return {"frequency": field, "time": field}


@register("attention-cnn", paper="Li (KTH), attention-based CNN for music genre and valence mood")
def attention_cnn(channels: tuple[int, ...] = CHANNELS, segment_frames: int = SEGMENT_FRAMES) -> AttentionCnn:
    channels = tuple(channels)
    if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
        raise ValueError(
            f"attention-cnn: channels must be positive integers, one per block, got {channels!r}"
        )
    shortest = min_frames(len(channels))
    if ATTENTION_FRONTEND.n_mels < shortest:
        raise ValueError(
            f"attention-cnn: {len(channels)} blocks need {shortest} mel bands, the frontend has 128"
        )
    if not isinstance(segment_frames, int) or segment_frames < shortest:
        raise ValueError(
            f"attention-cnn: segment_frames must be an integer >= {shortest} for {len(channels)} blocks, "
            f"got {segment_frames!r}"
        )
    model = AttentionCnn(channels, segment_frames)
    model.pretrained = False
    return model
