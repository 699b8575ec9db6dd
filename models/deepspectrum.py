"""DeepSpectrum + RNN: VGG16 fc7 features of spectrogram images of 1 s chunks, read by a 2-layer RNN.

Amiriparian et al., 2019, "Emotion and Themes Recognition in Music Utilising Convolutional and
Recurrent Neural Networks" (MediaEval 2019, team AugLi), its DeepSpectrum system: the audio is
cut into 1 s chunks, each chunk's spectrogram is plotted as an image with the viridis colour
map (the DeepSpectrum toolkit, Amiriparian et al. 2017), an ImageNet VGG16 turns each image
into its penultimate (fc7, 4096-d) activations, and 2 recurrent layers of 1024 units with
batch norm and dropout 0.4 read the sequence of chunks before the 56 mood/theme tags.

Mapping onto the segment contract: a segment is one 1 s chunk (125 frames); ``encode`` makes
the image and runs VGG16 up to fc7 (4096); ``pool`` is the RNN over the last K chunk
embeddings (any K >= 1) -> its last state -> batch norm; ``predict`` is dropout + the tag
layer.  ``forward`` takes ``chunks`` (default 5, i.e. 5 s) consecutive chunks.

Frontend: 16 kHz, n_fft 512, hop 128 (a 1 s chunk is exactly 125 frames), 128 mel bands,
power in dB, as DeepSpectrum plots 128-band mel spectrograms in dB.  The image, as a plot
would draw it: dB values clipped to 80 dB below the chunk's maximum (librosa's ``top_db``),
scaled to [0, 1] per chunk (a plot's colour limits are the image's own minimum and maximum),
high frequencies at the top, resized bilinearly to 224×224, coloured with viridis (matplotlib's
256-colour table sampled at 33 points and interpolated linearly: within 2/255 of it), then
normalised with torchvision's ImageNet mean and std because the weights are torchvision's.

ImageNet weights (``imagenet_weights=path``): a safetensors file holding torchvision's
``vgg16`` state dict (``torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()``)::

    features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.weight/.bias   the 13 convolutions, e.g.
        features.0.weight (64, 3, 3, 3), features.28.weight (512, 512, 3, 3)
    classifier.0.weight (4096, 25088), classifier.0.bias (4096,)    fc6
    classifier.3.weight (4096, 4096),  classifier.3.bias (4096,)    fc7

``classifier.6.*`` (the 1000 ImageNet classes) is ignored; any other key, a missing key or a
wrong shape is a ``WeightsError``.  Only safetensors is read, never a pickle: convert
torchvision's ``vgg16-397923af.pth`` once with
``save_file(torch.load(path, weights_only=True), "vgg16.safetensors")``.  The RNN and tag
layers always train from scratch.  ``width`` < 1 scales every layer down (a test-sized model;
ImageNet weights then no longer fit).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from models.base import HeadSpec, SegmentModel
from models.frontend import FrontendConfig
from models.registry import register
from models.vocab import JAMENDO_MOODTHEME
from models.weights import load_parts

DEEPSPECTRUM_FRONTEND = FrontendConfig(
    sample_rate_hz=16000, n_fft=512, hop_length=128, n_mels=128, scaling="db"
)
SEGMENT_FRAMES = 125  # 1 s
IMAGE_SIZE = 224  # VGG16's input; its features end at 7 × 7, so torchvision's avgpool is the identity
TOP_DB = 80.0
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORED_PREFIXES = ("classifier.6.",)  # torchvision's ImageNet class layer (fc8)
CELLS = ("gru", "lstm")

# matplotlib's viridis (CC0, van der Walt & Smith) at entries round(255·i/32), i = 0..32.
VIRIDIS = (
    (0.267004, 0.004874, 0.329415),
    (0.277018, 0.050344, 0.375715),
    (0.282327, 0.094955, 0.417331),
    (0.282884, 0.135920, 0.453427),
    (0.278826, 0.175490, 0.483397),
    (0.270595, 0.214069, 0.507052),
    (0.258965, 0.251537, 0.524736),
    (0.244972, 0.287675, 0.537260),
    (0.229739, 0.322361, 0.545706),
    (0.214298, 0.355619, 0.551184),
    (0.199430, 0.387607, 0.554642),
    (0.185556, 0.418570, 0.556753),
    (0.172719, 0.448791, 0.557885),
    (0.160665, 0.478540, 0.558115),
    (0.149039, 0.508051, 0.557250),
    (0.137770, 0.537492, 0.554906),
    (0.127568, 0.566949, 0.550556),
    (0.121148, 0.592739, 0.544641),
    (0.120081, 0.622161, 0.534946),
    (0.130067, 0.651384, 0.521608),
    (0.153894, 0.680203, 0.504172),
    (0.191090, 0.708366, 0.482284),
    (0.239374, 0.735588, 0.455688),
    (0.296479, 0.761561, 0.424223),
    (0.360741, 0.785964, 0.387814),
    (0.430983, 0.808473, 0.346476),
    (0.506271, 0.828786, 0.300362),
    (0.585678, 0.846661, 0.249897),
    (0.668054, 0.861999, 0.196293),
    (0.751884, 0.874951, 0.143228),
    (0.835270, 0.886029, 0.102646),
    (0.916242, 0.896091, 0.100717),
    (0.993248, 0.906157, 0.143936),
)


def _scaled(n: int, width: float) -> int:
    return max(1, round(n * width))


def vgg16_features(width: float = 1.0) -> nn.Sequential:
    """torchvision's ``vgg16().features``, same indices, so state-dict keys match."""
    layers: list[nn.Module] = []
    channels = 3
    for v in VGG16_LAYERS:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            out = _scaled(v, width)
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU()]
            channels = out
    return nn.Sequential(*layers)


class DeepSpectrumRNN(SegmentModel):
    """Amiriparian et al. 2019, MediaEval "Emotion and Themes Recognition in Music…", DeepSpectrum.

    ``forward`` input (batch, 128 mel bands, chunks·125 frames) of mel power in dB at 16 kHz,
    hop 128; ``encode`` takes one 1 s chunk (batch, 128, 125).
    """

    # What ImageNet/AudioSet weights initialise: frozen first by the amiriparian recipe.
    pretrained_prefixes = ("features.", "classifier.")

    def __init__(self, labels: tuple[str, ...], chunks: int = 5, cell: str = "gru", width: float = 1.0):
        super().__init__()
        self.frontend = DEEPSPECTRUM_FRONTEND
        self.segment_frames = SEGMENT_FRAMES
        self.chunks = chunks
        self.heads = {"tags": HeadSpec("tags", tuple(labels))}
        fc, units = _scaled(4096, width), _scaled(1024, width)
        self.embedding_dim = fc
        self.features = vgg16_features(width)  # first: features.0 is the first layer
        flat = _scaled(512, width) * 7 * 7
        # fc6, fc7 at torchvision's indices 0 and 3; fc7's ReLU output is DeepSpectrum's feature.
        self.classifier = nn.Sequential(
            nn.Linear(flat, fc), nn.ReLU(), nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU()
        )
        rnn_class = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_class(fc, units, num_layers=2, batch_first=True, dropout=0.4)
        self.bn = nn.BatchNorm1d(units)
        self.dropout = nn.Dropout(0.4)
        self.tags = nn.Linear(units, len(labels))
        # Constants, not weights: kept out of the state dict.
        self.register_buffer("viridis", torch.tensor(VIRIDIS), persistent=False)  # (33, 3)
        self.register_buffer("imagenet_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("imagenet_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def input_frames(self) -> int:
        return self.chunks * self.segment_frames

    def image(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, 128, 125) dB -> (batch, 3, 224, 224) viridis plot, ImageNet-normalised."""
        top = patch.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
        x = torch.maximum(patch, top - TOP_DB)
        low = x.amin(dim=(1, 2), keepdim=True)
        x = (x - low) / (top - low).clamp_min(1e-6)  # [0, 1]; a silent chunk becomes all 0
        x = x.flip(1).unsqueeze(1)  # (B, 1, 128, 125), highest band in the top row as plotted
        x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
        x = x.clamp(0.0, 1.0).squeeze(1) * (len(VIRIDIS) - 1)  # (B, 224, 224) position in the table
        i = x.detach().floor().clamp(max=len(VIRIDIS) - 2).long()
        frac = (x - i).unsqueeze(-1)  # (B, 224, 224, 1)
        rgb = self.viridis[i] * (1.0 - frac) + self.viridis[i + 1] * frac  # (B, 224, 224, 3)
        return (rgb.permute(0, 3, 1, 2) - self.imagenet_mean) / self.imagenet_std  # (B, 3, 224, 224)

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, 128, 125) -> (batch, 4096) fc7 activations."""
        x = self.features(self.image(patch))  # (B, 512, 7, 7)
        return self.classifier(x.flatten(1))  # (B, 4096)

    def pool(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(batch, K, 4096) -> (batch, 1024): the RNN's output after the newest chunk."""
        out, _ = self.rnn(embeddings)  # (B, K, 1024)
        return self.bn(out[:, -1])

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tags": self.tags(self.dropout(pooled))}

    def forward(self, patch: torch.Tensor) -> dict[str, torch.Tensor]:
        """(batch, 128, K·125) -> logits; K = ``chunks`` by default, any K >= 1 works."""
        n_mels, frames = patch.shape[1], patch.shape[2]
        k = frames // self.segment_frames
        if k < 1 or k * self.segment_frames != frames:
            raise ValueError(f"expected a multiple of {self.segment_frames} frames, got {frames}")
        chunks = patch.reshape(-1, n_mels, k, self.segment_frames).transpose(1, 2)  # (B, K, 128, 125)
        embeddings = self.encode(chunks.reshape(-1, n_mels, self.segment_frames))  # (B·K, 4096)
        return self.predict(self.pool(embeddings.reshape(-1, k, self.embedding_dim)))

    def receptive_field(self) -> dict[str, int]:
        # fc6 sees the whole image, i.e. the whole chunk.
        return {"frequency": self.frontend.n_mels, "time": self.segment_frames}


def load_imagenet(model: DeepSpectrumRNN, path: str | Path) -> None:
    """Copy torchvision-format VGG16 weights (module docstring) into ``features`` and fc6/fc7."""
    parts = {"features": model.features, "classifier": model.classifier}
    load_parts(
        parts,
        path,
        "ImageNet VGG16 weights",
        "torchvision's vgg16, see models/deepspectrum.py",
        IGNORED_PREFIXES,
    )


@register(
    "deepspectrum-rnn",
    paper="Amiriparian et al. 2019, MediaEval: emotion and themes recognition in music, DeepSpectrum + RNN",
    recipe="amiriparian",
)
def deepspectrum_rnn(
    imagenet_weights: str | None = None, chunks: int = 5, cell: str = "gru", width: float = 1.0
) -> DeepSpectrumRNN:
    if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"chunks (1 s chunks per forward) must be an integer >= 1, got {chunks!r}")
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; allowed: {', '.join(CELLS)}")
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 1:
        raise ValueError(f"width must be a number in (0, 1] (1: VGG16 itself), got {width!r}")
    if imagenet_weights is not None and not isinstance(imagenet_weights, str | Path):
        raise ValueError(
            f"imagenet_weights must be a path to a .safetensors file or None, got {imagenet_weights!r}"
        )
    model = DeepSpectrumRNN(JAMENDO_MOODTHEME, chunks, cell, float(width))
    if imagenet_weights is not None:
        load_imagenet(model, imagenet_weights)
    model.pretrained = False  # the RNN and tag layers are untrained, with or without ImageNet
    return model.eval()
