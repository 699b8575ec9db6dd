"""segment-attention: our streaming model, any registered encoder + attention over recent segments.

The engine caches each segment's embedding; this model's ``pool`` is the learned step that
combines the last K of them (K varies at stream start, so positions are counted back from
the newest segment), and ``predict`` holds the mood heads.  The encoder's own heads (e.g.
musicnn's 50 MSD tags) can be kept and applied to the pooled embedding, so their tags stay in
the feed beside the moods.
"""

from __future__ import annotations

import torch
from torch import nn

from models.base import HeadSpec, SegmentModel
from models.derived import graph_capture, pinned, tensors_key, tensors_of
from models.registry import build, entry, register
from models.vocab import JAMENDO_MOODTHEME


class AttentionPooling(nn.Module):
    """Additive attention over K embeddings with a learned recency embedding (newest = 0)."""

    def __init__(self, dim: int, hidden: int, max_segments: int):
        super().__init__()
        self.max_segments = max_segments
        self.project = nn.Linear(dim, hidden)
        self.recency = nn.Embedding(max_segments, hidden)
        self.score = nn.Linear(hidden, 1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:  # (B, K, D)
        # Only the newest max_segments count; older ones fall out of the context.
        embeddings = embeddings[:, -self.max_segments :]
        # (Tracing checked first: a traced shape compared to 1 warns.)
        if not graph_capture() and not torch.is_grad_enabled() and embeddings.shape[1] == 1:
            # One segment's weight is a softmax of one score, exactly 1: in inference, the
            # embedding itself, without the ~10 calls that weigh it.  (Training keeps them: their
            # gradient is 0, not None, which an optimizer's weight decay still acts on; a traced
            # graph keeps them, or it would hold this shortcut for every K.)
            return embeddings[:, 0]
        # Ages K-1 .. 0 without arange(K), which ONNX tracing would freeze at the example's K.
        age = (torch.ones_like(embeddings[0, :, 0], dtype=torch.long).cumsum(0) - 1).flip(0)  # (K,)
        h = torch.tanh(self.project(embeddings) + self.recency(age))  # (B, K, H)
        weights = torch.softmax(self.score(h), dim=1)  # (B, K, 1)
        return (weights * embeddings).sum(dim=1)  # (B, D)


class JoinedEncoder(SegmentModel):
    """Several registered encoders over one frontend and window, their embeddings side by side
    (``encoder="musicnn-msd+musicnn-mtt"``).  Its own heads are the first encoder's, applied to
    that encoder's part of a (pooled) embedding."""

    def __init__(self, parts: dict[str, SegmentModel]):
        super().__init__()
        first = next(iter(parts.values()))
        for name, part in parts.items():
            if part.frontend != first.frontend or part.segment_frames != first.segment_frames:
                raise ValueError(
                    f"cannot join {' + '.join(parts)}: {name} cuts other windows (another frontend)"
                )
        self.names = tuple(parts)
        self.parts = nn.ModuleList(parts.values())
        self.frontend = first.frontend
        self.segment_frames = first.segment_frames
        self.embedding_dim = sum(part.embedding_dim for part in self.parts)
        self.heads = dict(first.heads)
        self.pretrained = all(part.pretrained for part in self.parts)

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        return torch.cat([part.encode(patch) for part in self.parts], dim=1)

    def streaming_encoder(self):
        streams = [part.streaming_encoder() for part in self.parts]
        return None if any(s is None for s in streams) else _JoinedStream(streams)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.parts[0].predict(pooled[:, : self.parts[0].embedding_dim])

    def receptive_field(self) -> dict[str, int] | None:
        return self.parts[0].receptive_field()


class _JoinedStream:
    def __init__(self, streams):
        self.streams = streams

    def encode(self, frames: torch.Tensor, start: int, ends: list[int]) -> torch.Tensor:
        return torch.cat([s.encode(frames, start, ends) for s in self.streams], dim=1)

    def prepare(self, frames: torch.Tensor, start: int, end: int) -> None:
        for s in self.streams:
            s.prepare(frames, start, end)


class SegmentAttention(SegmentModel):
    """moodstream's streaming model: a registered segment encoder, attention pooling, mood heads.

    Input of ``forward``: one segment (batch, n_mels, segment_frames) of the encoder's frontend;
    ``pool`` takes (batch, K, embedding_dim) for any K >= 1.
    """

    def __init__(
        self,
        encoder: SegmentModel,
        encoder_name: str,
        tag_heads: dict[str, tuple[str, ...]],
        valence_arousal: bool,
        keep_encoder_heads: bool,
        freeze_encoder: bool,
        max_segments: int,
        hidden: int,
        dropout: float,
    ):
        super().__init__()
        self.encoder = encoder
        self.encoder_name = encoder_name  # registered name: what its cached embeddings are keyed by
        self.frontend = encoder.frontend
        self.segment_frames = encoder.segment_frames
        self.embedding_dim = encoder.embedding_dim
        self.frozen_encoder = freeze_encoder
        if freeze_encoder:
            encoder.requires_grad_(False)
        elif encoder.pretrained:
            # Fine-tuning a pretrained encoder: the recipe's encoder_frozen_epochs hold it first.
            self.pretrained_prefixes = ("encoder.",)
        self.attention = AttentionPooling(self.embedding_dim, hidden, max_segments)
        self.dropout = nn.Dropout(dropout)
        self.heads = {}
        self.outputs = nn.ModuleDict()
        for name, labels in tag_heads.items():
            self.heads[name] = HeadSpec("tags", tuple(labels))
            self.outputs[name] = nn.Linear(self.embedding_dim, len(labels))
        if valence_arousal:
            self.heads["valence_arousal"] = HeadSpec("valence_arousal", ("valence", "arousal"))
            self.outputs["valence_arousal"] = nn.Linear(self.embedding_dim, 2)
        self.encoder_heads = {}
        if keep_encoder_heads:
            for name, spec in encoder.heads.items():
                self.encoder_heads[name] = f"{encoder_name}:{name}" if name in self.heads else name
                self.heads[self.encoder_heads[name]] = spec
        if not self.heads:
            raise ValueError(
                "segment-attention needs at least one head: tags, valence_arousal or encoder heads"
            )

    def train(self, mode: bool = True) -> SegmentAttention:
        super().train(mode)
        if self.frozen_encoder:  # a frozen encoder keeps its batch-norm statistics
            self.encoder.eval()
        return self

    @property
    def embedding_cache_key(self) -> str | None:
        # musicnn-msd and musicnn-mtt share one class, not their weights: the registered name it is.
        return self.encoder_name if self.encoder.pretrained else None

    def head_layer(self, head: str) -> nn.Linear | None:
        return self.outputs[head] if head in self.outputs else None

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        if self.frozen_encoder:
            with torch.no_grad():
                return self.encoder.encode(patch)
        return self.encoder.encode(patch)

    def streaming_encoder(self):
        return self.encoder.streaming_encoder()  # encode is the encoder's (in eval mode)

    def pool(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.attention(embeddings)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training or torch.is_grad_enabled() or graph_capture():
            out = {name: layer(self.dropout(pooled)) for name, layer in self.outputs.items()}
            rest = self.encoder_heads
        else:  # inference: dropout is the identity, and the heads one matrix product
            names, weight, bias, sizes, rest = self._joined_heads()
            out = (
                dict(zip(names, torch.addmm(bias, pooled, weight).split(sizes, dim=1), strict=True))
                if names
                else {}
            )
        if rest:
            encoder_out = self.encoder.predict(pooled)
            out.update({ours: encoder_out[theirs] for theirs, ours in rest.items()})
        return out

    def _joined_heads(
        self,
    ) -> tuple[list[str], torch.Tensor | None, torch.Tensor | None, list[int], dict[str, str]]:
        """The heads' linear layers side by side, the encoder's own among them where each is one
        (musicnn's tags): their names, (embedding_dim, outputs) weights, biases and each head's
        size, and the encoder's heads left to its ``predict``.  One product instead of one module
        call per head: with the encoder's tags, pooling and the heads took ~0.4 ms of a hop, most
        of it calls' overhead, and the encoder's tags apart ~0.09 ms more on the first EPYC's type.
        Kept while the layers' weights are the same (calibration changes them in place)."""
        layers = dict(self._modules["outputs"]._modules)
        rest = {}
        for theirs, ours in self.encoder_heads.items():
            layer = self.encoder.head_layer(theirs)
            if isinstance(layer, nn.Linear):
                layers[ours] = layer
            else:
                rest[theirs] = ours
        tensors = [t for layer in layers.values() for t in tensors_of(layer, "weight", "bias")]
        key = (tensors_key(*tensors), tuple(layers))
        kept = getattr(self, "_joined_cache", (None,))
        if kept[0] != key and not layers:  # the encoder's heads alone, none of them linear layers
            kept = self._joined_cache = (key, ([], None, None, [], rest), ())
        elif kept[0] != key:
            joined = (
                list(layers),
                torch.cat([layer.weight for layer in layers.values()]).T.contiguous(),
                torch.cat([layer.bias for layer in layers.values()]),
                [layer.out_features for layer in layers.values()],
                rest,
            )
            kept = self._joined_cache = (key, joined, pinned(tensors))
        return kept[1]

    @property
    def max_context_segments(self) -> int:
        return self.attention.max_segments

    def receptive_field(self) -> dict[str, int] | None:
        return self.encoder.receptive_field()


def heads_from_data(heads: dict[str, HeadSpec], given: dict) -> dict:
    """Grow the heads the training data supervises, unless the user chose them (tag_heads / tags)."""
    if "tag_heads" in given or "tags" in given:
        return {}
    return {
        "tag_heads": {name: list(spec.labels) for name, spec in heads.items() if spec.kind == "tags"},
        "valence_arousal": given.get("valence_arousal", "valence_arousal" in heads),
    }


@register(
    "segment-attention",
    paper="moodstream: any registered encoder + attention pooling over recent segments",
    recipe="heads",
    heads_from_data=heads_from_data,
)
def segment_attention(
    encoder: str = "musicnn-msd",
    encoder_pretrained: bool = True,
    tags: tuple[str, ...] = JAMENDO_MOODTHEME,
    tag_heads: dict[str, list[str]] | None = None,
    valence_arousal: bool = True,
    keep_encoder_heads: bool = True,
    freeze_encoder: bool = True,
    max_segments: int = 16,
    hidden: int = 128,
    dropout: float = 0.1,
) -> SegmentAttention:
    if encoder == "segment-attention":
        raise ValueError("segment-attention cannot encode with itself; choose another registered encoder")
    if max_segments < 1 or hidden < 1 or not 0.0 <= dropout < 1.0:
        raise ValueError("need max_segments >= 1, hidden >= 1 and 0 <= dropout < 1")
    # One "mood" head of ``tags``, or several named tag heads (each dataset supervises its own).
    heads = {"mood": tuple(tags)} if tag_heads is None else {k: tuple(v) for k, v in tag_heads.items()}
    if any(not labels for labels in heads.values()):
        raise ValueError("every tag head needs at least one label")
    if heads.keys() & {"valence_arousal"}:
        raise ValueError("'valence_arousal' is not a tag head name; use valence_arousal=True")
    names = [part.strip() for part in encoder.split("+")]
    if len(names) > 1 and "segment-attention" in names:
        raise ValueError("segment-attention cannot encode with itself; choose other registered encoders")
    built = {}
    for name in names:
        overrides = {"pretrained": encoder_pretrained} if "pretrained" in entry(name).overrides() else {}
        built[name] = build(name, **overrides)
    enc = built[names[0]] if len(names) == 1 else JoinedEncoder(built)
    model = SegmentAttention(
        enc,
        encoder,
        heads,
        valence_arousal,
        keep_encoder_heads,
        freeze_encoder,
        max_segments,
        hidden,
        dropout,
    )
    # The heads start untrained, whatever the encoder.
    model.pretrained = False
    return model
