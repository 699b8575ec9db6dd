"""CRNN: VGGish's convolutional stack with its fully connected layers replaced by a 2-layer RNN.

Amiriparian et al., 2019, "Emotion and Themes Recognition in Music Utilising Convolutional and
Recurrent Neural Networks" (MediaEval 2019, team AugLi), its CRNN system: the VGGish
convolutions (Hershey et al., 2017, "CNN Architectures for Large-Scale Audio Classification":
conv64, pool, conv128, pool, conv256 ×2, pool, conv512 ×2, pool; 3×3 convolutions with ReLU,
2×2 max pooling) on a 64-band log mel spectrogram; instead of VGGish's fully connected layers,
2 recurrent layers of 256 units (dropout 0.3) read the conv feature map along time, frequency
folded into the features; then dense 1024, batch norm, ReLU, dropout 0.3 and the 56
MTG-Jamendo mood/theme tags.  ``crnn-gru``, ``crnn-lstm`` and ``crnn-blstm`` differ only in the
recurrent layers (GRU, LSTM, bidirectional LSTM with 256 units per direction).

Mapping onto the segment contract: ``encode`` is the whole network up to the 1024-unit layer
(the RNN runs over the 12 time steps the 4 poolings leave of a 192-frame, 3.07 s segment),
``pool`` averages segment embeddings (the default), ``predict`` is dropout + the tag layer.

Frontend: 16 kHz, n_fft 512, hop 256, 64 mel bands, as the paper.  The other choices follow
VGGish's own input so its AudioSet weights see what they were trained on: magnitude (power 1)
mel bands between 125 and 7500 Hz with unnormalised triangles, and VGGish's stabilised log
ln(mel + 0.01).  That log is ``scaling="log10_1p"`` with ``log_gain=100``:
log10(1 + 100·mel) = log10(mel + 0.01) + 2, so ``encode`` maps it back to natural-log units
exactly (``(x - 2)·ln 10``).  (VGGish's 25 ms window / 10 ms hop differ from the paper's
32 ms / 16 ms; magnitudes then differ by the window sums' ratio, 256/200, a shift of 0.25.)

VGGish weights (``vggish_weights=path``): a safetensors file in the layout of the common
PyTorch port (harritaylor/torchvggish, ``VGG.features``), float32, channels-first kernels
(out, in, time, frequency), the input being (batch, 1, time, frequency)::

    features.0.weight  (64, 1, 3, 3)      features.0.bias  (64,)
    features.3.weight  (128, 64, 3, 3)    features.3.bias  (128,)
    features.6.weight  (256, 128, 3, 3)   features.6.bias  (256,)
    features.8.weight  (256, 256, 3, 3)   features.8.bias  (256,)
    features.11.weight (512, 256, 3, 3)   features.11.bias (512,)
    features.13.weight (512, 512, 3, 3)   features.13.bias (512,)

Keys of the rest of that port (``embeddings.*``, ``pproc.*``) are ignored; any other key, a
missing key or a wrong shape is a ``WeightsError``.  Only safetensors is read (never a pickle):
convert torchvggish's ``vggish-10086976.pth`` once with
``save_file(torch.load(path, weights_only=True), "vggish.safetensors")``.  Without a file the
network trains from scratch; the recurrent and dense layers always do.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from models.base import HeadSpec, SegmentModel
from models.frontend import FrontendConfig
from models.registry import register
from models.vocab import JAMENDO_MOODTHEME
from models.weights import load_parts

CRNN_FRONTEND = FrontendConfig(
    sample_rate_hz=16000,
    n_fft=512,
    hop_length=256,
    n_mels=64,
    f_min_hz=125.0,  # VGGish's band (vggish_params MEL_MIN_HZ / MEL_MAX_HZ)
    f_max_hz=7500.0,
    power=1.0,  # VGGish takes the STFT magnitude
    mel_norm="none",
    scaling="log10_1p",
    log_gain=100.0,  # log10(1 + 100·mel) = log10(mel + 0.01) + 2: VGGish's log offset
)
SEGMENT_FRAMES = 192  # 3.07 s; 12 RNN steps after the 4 poolings
TIME_STRIDE = 16  # 4 max pools of 2
VGGISH_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")  # torchvggish make_layers()
IGNORED_PREFIXES = ("embeddings.", "pproc.")  # the rest of torchvggish's VGGish state dict
CELLS = ("gru", "lstm", "blstm")


def vggish_features() -> nn.Sequential:
    """VGGish's conv stack, indexed as torchvggish's ``features`` so state-dict keys match."""
    layers: list[nn.Module] = []
    channels = 1
    for v in VGGISH_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, v, kernel_size=3, padding=1), nn.ReLU()]
            channels = v
    return nn.Sequential(*layers)


class CRNN(SegmentModel):
    """Amiriparian et al. 2019, MediaEval "Emotion and Themes Recognition in Music…", CRNN system.

    Input (batch, 64 mel bands, 192 frames) of log10(1 + 100·|mel|) at 16 kHz, hop 256.
    """

    # What ImageNet/AudioSet weights initialise: frozen first by the amiriparian recipe.
    pretrained_prefixes = ("features.",)

    def __init__(self, labels: tuple[str, ...], cell: str, segment_frames: int = SEGMENT_FRAMES):
        super().__init__()
        self.frontend = CRNN_FRONTEND
        self.segment_frames = segment_frames
        self.heads = {"tags": HeadSpec("tags", tuple(labels))}
        self.embedding_dim = 1024
        self.features = vggish_features()  # first: features.0 is the first layer
        folded = 512 * (self.frontend.n_mels // TIME_STRIDE)  # 512 channels × 4 bands = 2048
        rnn_class = nn.GRU if cell == "gru" else nn.LSTM
        self.directions = 2 if cell == "blstm" else 1
        self.rnn_dropout = nn.Dropout(0.3)
        self.rnn = rnn_class(
            folded, 256, num_layers=2, batch_first=True, dropout=0.3, bidirectional=self.directions == 2
        )
        self.dense = nn.Linear(256 * self.directions, 1024)
        self.bn = nn.BatchNorm1d(1024)
        self.dropout = nn.Dropout(0.3)
        self.tags = nn.Linear(1024, len(labels))

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, 64, segment_frames) -> (batch, 1024)."""
        x = (patch - 2.0) * math.log(10.0)  # VGGish's ln(mel + 0.01), see the module docstring
        x = self.features(x.transpose(1, 2).unsqueeze(1))  # (B, 512, T/16, 4)
        # Fold (frequency, channel) into features in the order VGGish flattens them.
        x = x.permute(0, 2, 3, 1).flatten(2)  # (B, T/16, 2048)
        _, state = self.rnn(self.rnn_dropout(x))
        h_n = state[0] if isinstance(state, tuple) else state  # (layers·directions, B, 256)
        last = h_n[-self.directions :].transpose(0, 1).flatten(1)  # (B, 256·directions)
        return torch.relu(self.bn(self.dense(last)))  # (B, 1024)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tags": self.tags(self.dropout(pooled))}

    def receptive_field(self) -> dict[str, int]:
        # The RNN's last state has read every frame; one conv output alone sees 70 × 70.
        return {"frequency": self.frontend.n_mels, "time": self.segment_frames}


def load_vggish(model: CRNN, path: str | Path) -> None:
    """Copy VGGish conv weights (the layout in the module docstring) into ``model.features``."""
    load_parts({"features": model.features}, path, "VGGish weights", "see models/crnn.py", IGNORED_PREFIXES)


def _build(cell: str, vggish_weights: str | None, segment_frames: int) -> CRNN:
    if (
        isinstance(segment_frames, bool)
        or not isinstance(segment_frames, int)
        or segment_frames < TIME_STRIDE
        or segment_frames % TIME_STRIDE
    ):
        raise ValueError(
            f"segment_frames must be a positive multiple of {TIME_STRIDE} (4 poolings of 2), "
            f"got {segment_frames!r}"
        )
    if vggish_weights is not None and not isinstance(vggish_weights, str | Path):
        raise ValueError(
            f"vggish_weights must be a path to a .safetensors file or None, got {vggish_weights!r}"
        )
    model = CRNN(JAMENDO_MOODTHEME, cell, segment_frames)
    if vggish_weights is not None:
        load_vggish(model, vggish_weights)
    model.pretrained = False  # the recurrent and tag layers are untrained, with or without VGGish
    return model.eval()


_PAPER = "Amiriparian et al. 2019, MediaEval: emotion and themes recognition in music, CRNN"


@register("crnn-gru", paper=f"{_PAPER} (GRU)", recipe="amiriparian")
def crnn_gru(vggish_weights: str | None = None, segment_frames: int = SEGMENT_FRAMES) -> CRNN:
    return _build("gru", vggish_weights, segment_frames)


@register("crnn-lstm", paper=f"{_PAPER} (LSTM)", recipe="amiriparian")
def crnn_lstm(vggish_weights: str | None = None, segment_frames: int = SEGMENT_FRAMES) -> CRNN:
    return _build("lstm", vggish_weights, segment_frames)


@register("crnn-blstm", paper=f"{_PAPER} (bidirectional LSTM)", recipe="amiriparian")
def crnn_blstm(vggish_weights: str | None = None, segment_frames: int = SEGMENT_FRAMES) -> CRNN:
    return _build("blstm", vggish_weights, segment_frames)
