"""ResNet-34 + self-attention over segments, the UAI-CNRL MediaEval 2020 mood/theme model.

Dipani, Iyer & Baths, 2020, "Recognizing Music Mood and Theme Using Convolutional Neural
Networks and Attention" (MediaEval 2020, Emotion and Theme Recognition in Music).  A track's
4096 mel frames are cut into 16 segments of 256; each goes through two convolutions to 3
channels, a ResNet-34 and a 1×1 convolution to a 256-d segment embedding.  Two paths are
trained together: self-attention with positional encoding over the 16 embeddings (the
prediction), and a per-segment classifier averaged over segments (an auxiliary loss).

The paper builds on Sukhavasi & Adapa's MediaEval 2019 code (MobileNetV2 + self-attention),
swapping in ResNet-34: the input batch norm, the 1→10→3 channel 1×1 convolutions, global max
pooling, the BERT-style encoder (post-norm, GELU, 4× feed-forward, first-token pooler) and the
dropout rates follow that code.  The ResNet-34 is our own; its submodules are named as
torchvision's, so an ImageNet ``resnet34`` state dict (without ``fc``) loads into
``model.resnet`` if one is ever wanted (the paper started from ImageNet weights).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.base import HeadSpec, SegmentModel
from models.frontend import ESSENTIA_JAMENDO
from models.registry import register
from models.vocab import JAMENDO_MOODTHEME

# The MTG-Jamendo mels exactly as the official .npy features (Essentia; see models/frontend.py).
JAMENDO_FRONTEND = ESSENTIA_JAMENDO
SEGMENT_FRAMES = 256
RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET34_CHANNELS = (64, 128, 256, 512)
# Theoretical receptive field of layer4: 7x7/2 stem, 3x3/2 max pool, then 16 blocks of two 3x3
# convolutions, 3 of them with stride 2 -> 899 bins, wider than any segment.
RESNET34_FIELD = 899
LAYER_NORM_EPS = 1e-12  # BERT's, as in the reference attention code


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (He et al. 2016), torchvision's names."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + shortcut)


class ResNet34Features(nn.Module):
    """ResNet-34 without its classifier: (N, 3, H, W) -> (N, 512, H/32, W/32)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for i, (n, channels) in enumerate(zip(RESNET34_BLOCKS, RESNET34_CHANNELS, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [
                BasicBlock(in_channels if j == 0 else channels, channels, stride if j == 0 else 1)
                for j in range(n)
            ]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            in_channels = channels
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # (N, 64, H/4, W/4)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 512, H/32, W/32)


class SelfAttentionLayer(nn.Module):
    """One post-norm Transformer encoder layer (BERT's): multi-head self-attention, then a GELU MLP."""

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.heads = heads
        self.scale = 1.0 / math.sqrt(dim // heads)  # scaled dot product
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:  # (B, K, D) -> (B, heads, K, D / heads)
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, K, D)
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = (q @ k.transpose(-1, -2)) * self.scale  # (B, heads, K, K)
        weights = self.attention_dropout(torch.softmax(scores, dim=-1))
        context = (weights @ v).transpose(1, 2).flatten(2)  # (B, K, D)
        x = self.norm1(x + self.dropout(self.out(context)))
        return self.norm2(x + self.dropout(self.ff2(F.gelu(self.ff1(x)))))  # (B, K, D)


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s positional encoding, (n, dim): sin on even, cos on odd features."""
    position = torch.arange(n, dtype=torch.float64)[:, None]  # (n, 1)
    rate = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim/2,)
    table = torch.zeros(n, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate[: dim // 2])
    return table.float()


def mean_probability_logit(logits: torch.Tensor, dim: int) -> torch.Tensor:
    """The logit of the mean sigmoid along ``dim``, computed in log space so it never saturates.

    logit(mean σ(l)) = log Σ σ(l) − log Σ σ(−l), and log σ(l) = −softplus(−l).
    """
    return torch.logsumexp(-F.softplus(-logits), dim=dim) - torch.logsumexp(-F.softplus(logits), dim=dim)


class ResNet34Attention(SegmentModel):
    """Dipani, Iyer & Baths 2020, ResNet-34 + self-attention; input (batch, 96 mel bands, 4096 frames) in dB.

    ``forward`` cuts the input into ``n_segments`` segments of 256 frames and returns ``tags``
    (attention path) and ``aux_segments`` (per-segment path); ``encode`` takes one segment
    (batch, 96, 256), ``pool`` any K >= 1 of its embeddings (the newest ``n_segments`` count).
    """

    def __init__(
        self,
        tags: tuple[str, ...],
        n_segments: int,
        embedding_dim: int,
        attention_heads: int,
        attention_layers: int,
        dropout: float,
        attention_dropout: float,
    ):
        super().__init__()
        self.frontend = JAMENDO_FRONTEND
        self.segment_frames = SEGMENT_FRAMES
        self.n_segments = n_segments
        self.heads = {"tags": HeadSpec("tags", tuple(tags))}
        self.embedding_dim = embedding_dim
        # Grey to "RGB" for a network designed for images; the batch norm first normalises the
        # unnormalised dB input (the reference's only preprocessing).
        self.to_rgb = nn.Sequential(
            nn.BatchNorm2d(1), nn.Conv2d(1, 10, 1), nn.ReLU(), nn.Conv2d(10, 3, 1), nn.ReLU()
        )
        self.resnet = ResNet34Features()
        self.reduce = nn.Sequential(nn.Conv2d(RESNET34_CHANNELS[-1], embedding_dim, 1), nn.ReLU())
        # Fixed sinusoids rather than learned positions: the reference code used them, they add no
        # parameters to a model that already overfits easily on ~18k tracks, and they encode
        # relative offsets, so a stream-start window of K < n_segments (the last K positions)
        # still sees familiar spacings.  Not in the state dict: they follow from the arguments.
        self.register_buffer("positions", sinusoidal_positions(n_segments, embedding_dim), persistent=False)
        self.attention = nn.ModuleList(
            [
                SelfAttentionLayer(embedding_dim, attention_heads, dropout, attention_dropout)
                for _ in range(attention_layers)
            ]
        )
        self.pooler = nn.Linear(embedding_dim, embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.tags = nn.Linear(embedding_dim, len(tags))
        # The reference's per-segment classifier has no nonlinearity between its two layers.
        self.segment_classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(embedding_dim, embedding_dim),
            nn.Dropout(dropout),
            nn.Linear(embedding_dim, len(tags)),
        )

    @property
    def input_frames(self) -> int:
        return self.n_segments * self.segment_frames

    @property
    def max_context_segments(self) -> int:
        return self.n_segments

    def receptive_field(self) -> dict[str, int]:
        # ResNet-34's field (899 bins) exceeds the segment and the global max pool reads every
        # position of the last map: each embedding sees the whole segment.
        return {
            "frequency": min(RESNET34_FIELD, self.frontend.n_mels),
            "time": min(RESNET34_FIELD, self.segment_frames),
        }

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, 256) -> (batch, embedding_dim), max over the last feature map."""
        x = self.to_rgb(patch.unsqueeze(1))  # (B, 3, 96, 256)
        x = self.reduce(self.resnet(x))  # (B, D, 3, 8)
        return x.amax(dim=(2, 3))  # (B, D)

    def pool(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, K, D) -> (batch, D): self-attention over the newest n_segments, first-token pooler.

        The newest embedding takes the last position, as in a full training window; at stream
        start (K < n_segments) the K embeddings take the window's last K positions.
        """
        x = embeddings[:, -self.n_segments :]  # (B, K, D), older segments fall out of the context
        x = x + self.positions[self.n_segments - x.shape[1] :]  # (B, K, D)
        for layer in self.attention:
            x = layer(x)
        return torch.tanh(self.pooler(x[:, 0]))  # (B, D)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tags": self.tags(self.dropout(pooled))}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(batch, n_mels, n_segments * 256) -> {"tags": (B, T), "aux_segments": (B, T)} logits.

        ``aux_segments`` is the per-segment path: the logit of the mean over segments of each
        segment's tag probability, so a sigmoid + BCE on it is the reference's loss on averaged
        probabilities.
        """
        n_mels, frames = self.input_shape
        if not torch.jit.is_tracing() and x.shape[1:] != (n_mels, frames):  # a trace fixes the shape
            raise ValueError(f"expected input (batch, {n_mels}, {frames}), got {tuple(x.shape)}")
        segments = x.reshape(x.shape[0], n_mels, self.n_segments, self.segment_frames)  # (B, M, S, F)
        segments = segments.permute(0, 2, 1, 3).reshape(-1, n_mels, self.segment_frames)  # (B*S, M, F)
        embeddings = self.encode(segments).reshape(-1, self.n_segments, self.embedding_dim)  # (B, S, D)
        out = self.predict(self.pool(embeddings))
        out["aux_segments"] = mean_probability_logit(self.segment_classifier(embeddings), dim=1)  # (B, T)
        return out


@register(
    "resnet34-attention",
    paper="Dipani et al. 2020, ResNet-34 and self-attention for mood/theme",
    recipe="dipani",
)
def resnet34_attention(
    tags: tuple[str, ...] = JAMENDO_MOODTHEME,
    n_segments: int = 16,
    embedding_dim: int = 256,
    attention_heads: int = 4,
    attention_layers: int = 2,
    dropout: float = 0.2,
    attention_dropout: float = 0.1,
) -> ResNet34Attention:
    tags = tuple(tags)
    if not tags or not all(isinstance(t, str) and t for t in tags) or len(set(tags)) != len(tags):
        raise ValueError("tags must be a non-empty sequence of distinct, non-empty names")
    if n_segments < 1 or attention_layers < 1 or attention_heads < 1:
        raise ValueError("n_segments, attention_heads and attention_layers must be >= 1")
    if embedding_dim < 1 or embedding_dim % attention_heads:
        raise ValueError(
            f"embedding_dim must be a positive multiple of attention_heads ({attention_heads}), got {embedding_dim}"
        )
    if not (0.0 <= dropout < 1.0 and 0.0 <= attention_dropout < 1.0):
        raise ValueError("dropout and attention_dropout must be in [0, 1)")
    model = ResNet34Attention(
        tags, n_segments, embedding_dim, attention_heads, attention_layers, dropout, attention_dropout
    )
    model.pretrained = False  # no published weights
    return model.eval()
