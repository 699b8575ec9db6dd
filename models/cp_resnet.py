"""CP-ResNet, the receptive-field-regularized ResNet of CP-JKU, and its frequency-aware variants.

Koutini, Chowdhury, Haunschmid, Eghbal-zadeh & Widmer, 2019, "Emotion and Theme Recognition in
Music with Frequency-Aware RF-Regularized CNNs" (MediaEval 2019, the CP-JKU submission), built
on Koutini, Eghbal-zadeh & Widmer, 2019, "Receptive-Field-Regularized CNN Variants for Acoustic
Scene Classification" (DCASE 2019), whose code (github.com/kkoutini/cpjku_dcase19,
``models/cp_resnet.py`` and ``models/cp_faresnet.py``) the layers follow:

* a 5×5 stride-2 stem, then three stages of basic residual blocks (widths w, 2w, 4w; four
  blocks each at depth 26), 2×2 max pooling after blocks 1, 2 and 4 of stage 1, and a 1×1
  convolution to the tags + batch norm + global average pooling (there is no dense layer);
* ρ fixes the receptive field: the first block's convolutions are 3×3 and 1×1, and of every
  later convolution, in network order, the first ρ are 3×3 and the rest 1×1, so the field
  stops growing where ρ says.  At depth 26 this is exactly ``get_model_based_on_rho``;
* frequency-aware (FA) blocks concatenate a channel holding each bin's position on the
  frequency axis (-1 at the lowest bin, rising by 2/bins) to the input of both convolutions,
  which gives back the "where in frequency" that a small receptive field loses;
* Shake-Shake (Gastaldi 2017) blocks have two such residual branches mixed by a random α per
  example in the forward pass and an independent β in the backward pass, 0.5/0.5 in eval.

The paper computed its own features (44.1 kHz, 2048-sample STFT, 256 perceptually weighted mel
bins); we read the MTG-Jamendo mels the engine serves (96 bins at 12 kHz), so receptive fields
in bins cover a wider band than the paper's.  The 1×1 convolution's pooled output is both the
segment embedding and the tag logits: mean pooling over K segments then averages logits, as
CP-JKU averaged over a track's excerpts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.base import HeadSpec, SegmentModel
from models.frontend import ESSENTIA_JAMENDO, FrontendConfig
from models.registry import register
from models.vocab import JAMENDO_MOODTHEME

# The MTG-Jamendo mels exactly as the official .npy features (Essentia; see models/frontend.py).
JAMENDO_FRONTEND = ESSENTIA_JAMENDO
SEGMENT_FRAMES = 1024  # 21.8 s of 46.9 frames/s, a random training crop
DEFAULT_RHO = 7  # the kernel layout of CP-JKU's configs/cp_resnet.json
DEFAULT_DEPTH = 26  # 3 stages of 4 blocks of 2 convolutions, plus stem and classifier
STAGE1_POOLS = (1, 2, 4)  # max pooling after these blocks of stage 1 (1-based)
STEM_KERNEL, STEM_STRIDE, STEM_PADDING = 5, 2, 1  # as CP-JKU: padding 1, not "same"


def blocks_per_stage(depth: int) -> int:
    return (depth - 2) // 6


def rho_kernels(rho: int, depth: int = DEFAULT_DEPTH) -> list[list[tuple[int, int]]]:
    """(conv1, conv2) kernel sizes of every block, per stage, for receptive-field hyperparameter ρ."""
    n = blocks_per_stage(depth)
    counted = 0  # convolutions after the first block, in network order
    stages = []
    for stage in range(3):
        blocks = []
        for block in range(n):
            if stage == 0 and block == 0:
                blocks.append((3, 1))  # fixed in CP-ResNet whatever ρ
                continue
            pair = []
            for _ in range(2):
                counted += 1
                pair.append(3 if counted <= rho else 1)
            blocks.append((pair[0], pair[1]))
        stages.append(blocks)
    return stages


def max_rho(depth: int = DEFAULT_DEPTH) -> int:
    """Beyond this every convolution is already 3×3: ρ has no further effect."""
    return 6 * blocks_per_stage(depth) - 2


class _ShakeShake(torch.autograd.Function):
    """α·a + (1 − α)·b forward; the gradient reaching a and b is split by β instead."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
        ctx.save_for_backward(beta)
        return alpha * a + (1.0 - alpha) * b

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (beta,) = ctx.saved_tensors
        return beta * grad, (1.0 - beta) * grad, None, None


def shake_shake(a: torch.Tensor, b: torch.Tensor, training: bool) -> torch.Tensor:
    """Mix two residual branches: random per example in training, their mean in eval."""
    if not training:
        return 0.5 * (a + b)  # the expectation of α: deterministic and exportable
    shape = (a.shape[0],) + (1,) * (a.dim() - 1)  # one α and one β per example ("Image" level)
    alpha = torch.rand(shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(shape, device=a.device, dtype=a.dtype)
    return _ShakeShake.apply(a, b, alpha, beta)


def frequency_coordinates(bins: int) -> torch.Tensor:
    """(1, 1, bins, 1): -1 at the lowest bin rising by 2/bins, as CP-JKU's ``getpad``."""
    return (torch.arange(bins, dtype=torch.float32) * 2.0 / bins - 1.0).view(1, 1, bins, 1)


class _Branch(nn.Module):
    """conv(k1) -> BN -> ReLU -> conv(k2) -> BN, each conv fed the frequency channel when FA."""

    def __init__(self, in_channels: int, out_channels: int, k1: int, k2: int, bins: int | None):
        super().__init__()
        extra = 0 if bins is None else 1
        # padding k // 2 keeps the size for k in {1, 3}, as CP-JKU's k // 3
        self.conv1 = nn.Conv2d(in_channels + extra, out_channels, k1, padding=k1 // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels + extra, out_channels, k2, padding=k2 // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if bins is None:
            self.frequency = None
        else:  # derived from the shape, so not saved with the weights
            self.register_buffer("frequency", frequency_coordinates(bins), persistent=False)

    def _aware(self, x: torch.Tensor) -> torch.Tensor:
        if self.frequency is None:
            return x
        coords = self.frequency.expand(x.shape[0], 1, -1, x.shape[3])  # (B, 1, F, T)
        return torch.cat([x, coords], dim=1)  # (B, C + 1, F, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(self._aware(x))))
        return self.bn2(self.conv2(self._aware(y)))


class _Block(nn.Module):
    """Basic residual block, ReLU after the addition; two shaken branches for Shake-Shake."""

    def __init__(self, in_channels: int, out_channels: int, k1: int, k2: int, bins: int | None, shake: bool):
        super().__init__()
        self.branch = _Branch(in_channels, out_channels, k1, k2, bins)
        self.branch2 = _Branch(in_channels, out_channels, k1, k2, bins) if shake else None
        self.shortcut = nn.Identity()
        if in_channels != out_channels:  # the shortcut never sees the frequency channel
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)
            )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.branch(x)
        if self.branch2 is not None:
            y = shake_shake(y, self.branch2(x), self.training)
        return self.act(y + self.shortcut(x))


def _pooled(size: int) -> int:
    return size // 2  # MaxPool2d(2, 2) without padding


def _after_stem(size: int) -> int:
    return (size + 2 * STEM_PADDING - STEM_KERNEL) // STEM_STRIDE + 1


def output_size(size: int, depth: int = DEFAULT_DEPTH) -> int:
    """Bins or frames of the last feature map for ``size`` input bins or frames."""
    size = _after_stem(size)
    for position in STAGE1_POOLS:
        if position <= blocks_per_stage(depth):
            size = _pooled(size)
    return size


class CPResNet(SegmentModel):
    """Koutini et al. 2019, "Emotion and Theme Recognition in Music with Frequency-Aware RF-Regularized CNNs".

    CP-ResNet (Koutini et al. 2019, "Receptive-Field-Regularized CNN Variants for Acoustic Scene
    Classification") and, with ``frequency_aware`` and ``shake``, the FA and Shake-Shake FA
    ResNets of that CP-JKU MediaEval 2019 submission; input (batch, n_mels, frames) of dB mels.
    """

    def __init__(
        self,
        tags: tuple[str, ...],
        rho: int = DEFAULT_RHO,
        width: int = 128,
        depth: int = DEFAULT_DEPTH,
        frequency_aware: bool = False,
        shake: bool = False,
        segment_frames: int = SEGMENT_FRAMES,
        frontend: FrontendConfig = JAMENDO_FRONTEND,
    ):
        super().__init__()
        self.frontend = frontend
        self.segment_frames = segment_frames
        self.heads = {"tags": HeadSpec("tags", tuple(tags))}
        self.embedding_dim = len(tags)
        self.rho, self.depth = rho, depth
        self.frequency_aware, self.shake = frequency_aware, shake
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, STEM_KERNEL, stride=STEM_STRIDE, padding=STEM_PADDING, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        bins = _after_stem(frontend.n_mels)  # FA blocks need the height of their inputs
        widths = (width, 2 * width, 4 * width)
        in_channels = width
        stages = []
        for index, kernels in enumerate(rho_kernels(rho, depth)):
            layers = []
            for position, (k1, k2) in enumerate(kernels, start=1):
                fa_bins = bins if frequency_aware else None
                layers.append(_Block(in_channels, widths[index], k1, k2, fa_bins, shake))
                in_channels = widths[index]
                if index == 0 and position in STAGE1_POOLS:
                    layers.append(nn.MaxPool2d(2, 2))
                    bins = _pooled(bins)
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Conv2d(widths[2], len(tags), 1, bias=False)
        self.classifier_bn = nn.BatchNorm2d(len(tags))
        self._init_weights()

    def _init_weights(self) -> None:
        """CP-JKU's "fixup" initialisation: every residual branch starts as zero."""
        blocks = [m for m in self.modules() if isinstance(m, _Block)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for block in blocks:
            branches = [block.branch] + ([block.branch2] if block.branch2 is not None else [])
            for branch in branches:
                conv = branch.conv1
                fan = conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels
                nn.init.normal_(conv.weight, 0.0, len(blocks) ** -0.5 * math.sqrt(2.0 / fan))
                nn.init.zeros_(branch.conv2.weight)
            if not isinstance(block.shortcut, nn.Identity):
                conv = block.shortcut[0]
                nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / conv.out_channels))
        # CP-JKU also zeroes the classifier; kept at He init so the first step trains every layer.

    def feature_map(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> per-position tag logits (batch, n_tags, bins', frames')."""
        # (not while tracing for ONNX: the shape is fixed there, and the check would be baked in)
        if self.frequency_aware and not torch.jit.is_tracing() and patch.shape[1] != self.frontend.n_mels:
            raise ValueError(
                f"a frequency-aware model reads {self.frontend.n_mels} mel bins, got {patch.shape[1]}"
            )
        x = self.stem(patch.unsqueeze(1))  # (B, w, F/2, T/2): frequency is the height, as CP-JKU
        for stage in self.stages:
            x = stage(x)  # (B, 4w, F', T') after the last
        return self.classifier_bn(self.classifier(x))  # (B, n_tags, F', T')

    def encode(self, patch: torch.Tensor) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, n_tags): the globally averaged tag logits."""
        return self.feature_map(patch).mean(dim=(2, 3))

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tags": pooled}  # the embedding already is the logits (see the module docstring)

    def layers(self) -> list[nn.Module]:
        """The convolutions and poolings on the longest path, input to output, for the field."""
        path: list[nn.Module] = [self.stem[0]]
        for stage in self.stages:
            for layer in stage:
                path += [layer.branch.conv1, layer.branch.conv2] if isinstance(layer, _Block) else [layer]
        return path + [self.classifier]

    def receptive_field(self) -> dict[str, int]:
        """Theoretical field of one unit of the last map, in mel bins and frames.

        Not clipped to the input: at ρ ≥ 6 it is wider than the 96 bins, so each unit sees them all.
        """
        field, jump = [1, 1], [1, 1]
        for layer in self.layers():
            kernel, stride = layer.kernel_size, layer.stride
            kernel = kernel if isinstance(kernel, tuple) else (kernel, kernel)
            stride = stride if isinstance(stride, tuple) else (stride, stride)
            for axis in range(2):
                field[axis] += (kernel[axis] - 1) * jump[axis]
                jump[axis] *= stride[axis]
        return {"frequency": field[0], "time": field[1]}


def _build(
    tags, rho: int, width: int, depth: int, segment_frames: int, frequency_aware: bool, shake: bool
) -> CPResNet:
    tags = tuple(tags)
    if not tags or not all(isinstance(t, str) and t for t in tags) or len(set(tags)) != len(tags):
        raise ValueError("tags must be a non-empty sequence of distinct, non-empty names")
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(
            f"depth must be 6·n + 2 with n >= 1 blocks per stage (8, 14, 20, 26, ...), got {depth}"
        )
    if not isinstance(rho, int) or not 0 <= rho <= max_rho(depth):
        raise ValueError(f"rho must be an integer in 0..{max_rho(depth)} at depth {depth}, got {rho!r}")
    if not isinstance(width, int) or width < 1:
        raise ValueError(
            f"width (channels of stage 1; stages 2 and 3 have 2× and 4×) must be >= 1, got {width!r}"
        )
    shortest = next(n for n in range(1, 1000) if output_size(n, depth) >= 1)
    if not isinstance(segment_frames, int) or segment_frames < shortest:
        raise ValueError(f"segment_frames must be an integer >= {shortest}, got {segment_frames!r}")
    model = CPResNet(
        tags,
        rho=rho,
        width=width,
        depth=depth,
        frequency_aware=frequency_aware,
        shake=shake,
        segment_frames=segment_frames,
    )
    model.pretrained = False  # no published weights
    return model.eval()


@register(
    "cp-resnet",
    paper="Koutini et al. 2019, receptive-field-regularized CP-ResNet (MediaEval CP-JKU)",
    recipe="koutini",
)
def cp_resnet(
    tags: tuple[str, ...] = JAMENDO_MOODTHEME,
    rho: int = DEFAULT_RHO,
    width: int = 128,
    depth: int = DEFAULT_DEPTH,
    segment_frames: int = SEGMENT_FRAMES,
) -> CPResNet:
    return _build(tags, rho, width, depth, segment_frames, frequency_aware=False, shake=False)


@register(
    "fa-resnet", paper="Koutini et al. 2019, frequency-aware CP-ResNet (MediaEval CP-JKU)", recipe="koutini"
)
def fa_resnet(
    tags: tuple[str, ...] = JAMENDO_MOODTHEME,
    rho: int = DEFAULT_RHO,
    width: int = 128,
    depth: int = DEFAULT_DEPTH,
    segment_frames: int = SEGMENT_FRAMES,
) -> CPResNet:
    return _build(tags, rho, width, depth, segment_frames, frequency_aware=True, shake=False)


@register(
    "shake-fa-resnet",
    paper="Koutini et al. 2019, Shake-Shake frequency-aware CP-ResNet (MediaEval CP-JKU)",
    recipe="koutini",
)
def shake_fa_resnet(
    tags: tuple[str, ...] = JAMENDO_MOODTHEME,
    rho: int = DEFAULT_RHO,
    width: int = 128,
    depth: int = DEFAULT_DEPTH,
    segment_frames: int = SEGMENT_FRAMES,
) -> CPResNet:
    return _build(tags, rho, width, depth, segment_frames, frequency_aware=True, shake=True)
