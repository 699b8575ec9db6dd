"""musicnn, ported to PyTorch, with the published weights read from the PyPI package's files.

Pons & Serra, 2019, "musicnn: pre-trained convolutional neural networks for music audio tagging".
The layers follow ``musicnn/models.py`` (``build_musicnn``) of ``musicnn==0.1.0``: a
musically motivated front end (two timbral and three temporal convolutions, max-pooled over
frequency), a dense mid end of three 1-D convolutions with residual connections, and a
back end that pools max and mean over time into a 200-unit penultimate layer and 50 tags.
TensorFlow applies ReLU *before* batch norm and pads "same" convolutions with the extra
sample at the end; both are kept.  In eval mode the front end takes its max over frequency
before that ReLU and batch norm (``_FreqPooledConv.folded``): the same function, 1.5-2.5x as
fast on a 2-core CPU.  We never import the package's code (it needs TensorFlow): its checkpoint is read
by ``models.tf_checkpoint`` and converted once to safetensors.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from models.base import HeadSpec, SegmentModel
from models.derived import graph_capture, pinned, tensors_key, tensors_of
from models.frontend import FrontendConfig
from models.registry import register
from models.tf_checkpoint import CheckpointError, read_checkpoint
from models.weights import WeightsError, cache_dir, load_state, save_safetensors

# musicnn/configuration.py
MTT_LABELS = (
    "guitar",
    "classical",
    "slow",
    "techno",
    "strings",
    "drums",
    "electronic",
    "rock",
    "fast",
    "piano",
    "ambient",
    "beat",
    "violin",
    "vocal",
    "synth",
    "female",
    "indian",
    "opera",
    "male",
    "singing",
    "vocals",
    "no vocals",
    "harpsichord",
    "loud",
    "quiet",
    "flute",
    "woman",
    "male vocal",
    "no vocal",
    "pop",
    "soft",
    "sitar",
    "solo",
    "man",
    "classic",
    "choir",
    "voice",
    "new age",
    "dance",
    "male voice",
    "female vocal",
    "beats",
    "harp",
    "cello",
    "no voice",
    "weird",
    "country",
    "metal",
    "female voice",
    "choral",
)  # noqa: E501
MSD_LABELS = (
    "rock",
    "pop",
    "alternative",
    "indie",
    "electronic",
    "female vocalists",
    "dance",
    "00s",
    "alternative rock",
    "jazz",
    "beautiful",
    "metal",
    "chillout",
    "male vocalists",
    "classic rock",
    "soul",
    "indie rock",
    "Mellow",
    "electronica",
    "80s",
    "folk",
    "90s",
    "chill",
    "instrumental",
    "punk",
    "oldies",
    "blues",
    "hard rock",
    "ambient",
    "acoustic",
    "experimental",
    "female vocalist",
    "guitar",
    "Hip-Hop",
    "70s",
    "party",
    "country",
    "easy listening",
    "sexy",
    "catchy",
    "funk",
    "electro",
    "heavy metal",
    "Progressive rock",
    "60s",
    "rnb",
    "indie pop",
    "sad",
    "House",
    "happy",
)  # noqa: E501

MUSICNN_FRONTEND = FrontendConfig(
    sample_rate_hz=16000, n_fft=512, hop_length=256, n_mels=96, scaling="log10_1p", log_gain=10000.0
)
SEGMENT_FRAMES = 187  # 3 s: librosa.time_to_frames(3, sr=16000, n_fft=512, hop_length=256) + 1
TF_BN_EPS = 1e-3  # tf.compat.v1.layers.batch_normalization's default epsilon
CHUNK_SEGMENTS = 3  # inference encodes bigger batches in chunks of this many segments (see encode)
# A front-end or mid-end filter moving its channel by at most this per unit of input is dead: its
# channel is a constant, left out of the eval-mode model (_LiveFilters._live_filters).
DEAD_FILTER_BOUND = 1e-8
# A temporal block convolves by one matrix product when its matrix has at most this many entries
# (1 MB: it stays in the core's cache); beyond, oneDNN's convolution was as fast or faster.
TOEPLITZ_MAX_ENTRIES = 1 << 18
# Matrices kept per block, one per input length, the least recently used going first beyond this
# many entries in all (16 MB; the MSD model's are 0.05-0.4 MB each): a live loop's reads and
# tails (1-8 frames missing) vary in length, ~20 lengths with jittery reads.
TOEPLITZ_KEPT_ENTRIES = 1 << 22
# A convolution of at most this many frames (batch times time) is one matrix product of its
# patches: a window's timbral edges (2 x 9 frames) ran ~1.5x as fast so, larger pieces slower.
# (Off oneDNN's path: on it, the timbral blocks go by FFT up to SPECTRAL_MAX_FRAMES.)
FEW_FRAMES = 18
# A timbral block's convolution of at most this many output frames (batch times time) goes by FFT
# over frequency (``_spectral_max_over_freq``): a streaming hop's new frames (16 at hop 0.25 s, 62
# at 1 s) and a window's edges.  On the first EPYC's type (AVX2) it beat oneDNN up to ~80 frames
# on one thread and ~140 on two, and lost at a whole window's 187 (4.6 ms against 2.9 on two).
SPECTRAL_MAX_FRAMES = 64
# Each mid-end layer keeps its constant share (``Musicnn._mid_share``) for up to this many lengths of
# input: a window's, and those of its first frames that a live loop prepares ahead (~10).
MID_SHARES_KEPT = 64
# A mid-end layer leaves out its dead filters (and its constant inputs) only where they are at least
# this share of them: putting its outputs back in order costs about what 8 of its 64 filters do
# (musicnn's first layer has 43-44 dead, the others 0-3).
MID_LEFT_OUT_MIN = 0.25

INSTALL_HINT = "pip install --no-deps musicnn==0.1.0"


def _bn_affine(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) == scale * x + shift per channel, from the running statistics."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


class _Folded(NamedTuple):
    """``_FreqPooledConv.folded``'s parameters: the live filters' kernels, sign folded in, and
    their bias and batch norm (each (live C, 1), to apply over time); the live filters' indices
    (None when all are live); every channel's value when its filter is dead (C,)."""

    kernel: torch.Tensor  # (live C, 1, kF, kT)
    sign: torch.Tensor
    bias: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor
    live: torch.Tensor | None
    constant: torch.Tensor
    onednn: bool  # inference on oneDNN (_onednn_usable): kept between calls, its Toeplitz matrices too


class _MidLive(NamedTuple):
    """One eval-mode mid-end layer on its input's varying channels, computing its live outputs
    alone (``Musicnn._live_layout``)."""

    inputs: torch.Tensor | None  # which of its input channels vary (None: all of them)
    weight: torch.Tensor  # (live out, varying in, 7)
    constant: torch.Tensor | None  # (live out, 1, 7): its kernel over the constant inputs, times their values
    bias: torch.Tensor  # (live out,)
    bn: tuple[torch.Tensor, ...]  # the live outputs' running mean and variance, weight and bias
    outputs: torch.Tensor | None  # which of its outputs are live (None: all of them)
    order: torch.Tensor | None  # each output's place among the live ones and then the dead
    values: torch.Tensor  # (64,): each output's value where its filter is dead, 0 where live
    shares: dict  # ``Musicnn._mid_share``'s, kept


class _Live(NamedTuple):
    """How the eval-mode mid and back end work on the live channels alone (``Musicnn._live_layout``)."""

    channels: torch.Tensor  # (live C,): which of the front end's 561 channels are live
    mid: tuple[_MidLive, ...]  # the mid end's layers
    # The back end's batch norm and dense layer over the live features' max and mean alone (None:
    # all are live): (200, 2 * (live C + 192)) and (200,), the dead channels' share in the bias.
    dense_weight: torch.Tensor | None
    dense_bias: torch.Tensor | None


class _LiveFilters(nn.Module):
    """A convolution (``conv``) with its batch norm (``bn``), whose dead filters are left out in eval mode."""

    def _tensors(self) -> tuple[torch.Tensor, ...]:
        """The weights and statistics its output is made of."""
        modules = self._modules
        return tensors_of(modules["conv"], "weight", "bias") + tensors_of(
            modules["bn"], "weight", "bias", "running_mean", "running_var"
        )

    def _key(self) -> tuple:
        return tensors_key(*self._tensors())

    def _live_filters(self, key: tuple | None = None) -> torch.Tensor | None:
        """The live filters' indices, None when all are live.  A dead filter's weights are so small
        that its convolution moves its channel by at most ``DEAD_FILTER_BOUND`` per unit of input
        (the sum of its |weights| times batch norm's |scale|): its channel is its constant,
        ``relu(bias) * scale + shift``, to float32's rounding (``bn_input`` leaves musicnn's
        log-mel within ±4; the mid end's dead filters are ~1e-25 against at least 2.5 for the
        live ones).  Training left most of the published MSD model's filters dead: 64 of its
        561 front-end channels are live, with a clean gap (the dead ones' weights at most 2e-7,
        the live ones' at least 9e-4), and skipping the rest is ~90 % of its front end's
        multiply-adds; 20 of the first mid-end layer's 64 (MTT's: 21).  MTT's front-end weights
        tail off with no such gap: 347 live at this bound.  Decided by value, so not in a graph
        being traced or compiled, which reads the weights when it runs (they may have changed by
        then): those keep every filter.  An ONNX export holds the weights' values, so it holds
        the live filters alone (the indices, a constant of the graph; its stamp,
        ``models.export.STAMP``, names the weights).  (Eval mode only, where the weights are
        frozen: a dead filter gets no gradient here.)  ``key``: ``_key()``, when the caller has it."""
        if graph_capture() and not torch.onnx.is_in_onnx_export():
            return None
        key = self._key() if key is None else key
        if (
            getattr(self, "_live_cache", (None,))[0] != key
        ):  # kept: deciding reads the weights back from a GPU
            # a normal tensor, not an inference one: the same indices serve autograd's calls
            with torch.inference_mode(False), torch.no_grad():
                scale, _ = _bn_affine(self.bn)
                live = self.conv.weight.flatten(1).abs().sum(1) * scale.abs() > DEAD_FILTER_BOUND
                indices = None if bool(live.all()) else live.nonzero()[:, 0]
                self._live_cache = (key, indices, pinned(self._tensors()))
        return self._live_cache[1]


class _FreqPooledConv(_LiveFilters):
    """conv over (time, freq) -> ReLU -> batch norm -> max over frequency."""

    def __init__(self, out_channels: int, kernel: tuple[int, int], time_pad: tuple[int, int]):
        super().__init__()
        self.time_pad = time_pad
        self.conv = nn.Conv2d(1, out_channels, kernel)
        self.bn = nn.BatchNorm2d(out_channels, eps=TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, T, F)
        x = F.pad(x, (0, 0, *self.time_pad))
        x = self.bn(F.relu(self.conv(x)))  # (B, C, T, F')
        return x.amax(dim=3)  # (B, C, T)

    def folded(
        self, x: torch.Tensor, time_pad: tuple[int, int] | None = None, parameters: _Folded | None = None
    ) -> torch.Tensor:  # (B, 1, F, T)
        """``forward`` in eval mode (batch norm's running statistics), reordered to pool first.

        ReLU and a per-channel affine map are monotonic, so the max over frequency can be taken
        of the raw convolution and the bias, ReLU and batch norm applied to (B, C, T) instead of
        (B, C, F', T): the same numbers up to rounding, without three passes over the largest
        tensors of the model.  A channel whose batch-norm scale is negative needs the minimum,
        taken as the max of the convolution with its kernel negated.  Only the live filters are
        convolved, and only their channels returned, (B, live C, T): a dead filter's channel is
        a constant (``_live_filters``), which ``Musicnn._live_layout`` accounts for.  ``time_pad``
        overrides the layer's own (``StreamingEncoder`` asks for none: frames inside a window).
        ``parameters``: ``_folded_parameters``' fetched by the caller, once for many calls.
        """
        if parameters is None:
            parameters = self._folded_parameters(_onednn_usable(x))
        time_pad = self.time_pad if time_pad is None else time_pad
        if time_pad != (0, 0):  # (a pad of nothing still copies)
            x = F.pad(x, time_pad)
        kernel = parameters.kernel
        toeplitz = self._toeplitz(parameters, x.shape[-1])
        if toeplitz is not None:  # a temporal block: one matrix product
            peak = _toeplitz_product(x, toeplitz, len(kernel)).amax(dim=1).transpose(1, 2)
        elif (spectrum := self._spectrum(parameters, x.shape)) is not None:  # a timbral block's few frames
            peak = _spectral_max_over_freq(x, spectrum, kernel.shape[2])
        else:
            peak = _conv_max_over_freq(x, kernel, parameters.onednn)  # (B, live C, T)
        return self._finish(peak, parameters)

    def _spectrum(self, parameters: _Folded, shape: torch.Size) -> torch.Tensor | None:
        """A timbral block's kernels as ``_spectral_max_over_freq`` takes them: (n_freq // 2 + 1, live C,
        kT), the conjugate of each time tap's real FFT over the input's (``shape``: (B, 1, F, T_in)) F
        bands.  None for a temporal block, for more output frames than ``SPECTRAL_MAX_FRAMES``, and
        off oneDNN's path (the cases ``_toeplitz`` gives none: training, tracing, a GPU).  Kept while
        the kernel is the same object (``_folded_parameters`` keeps it while the weights are)."""
        kernel = parameters.kernel
        k_freq, k_time = kernel.shape[2:]
        batch, _, n_freq, n_in = shape
        if not parameters.onednn or k_freq == 1 or not 0 < batch * (n_in - k_time + 1) <= SPECTRAL_MAX_FRAMES:
            return None
        kept = getattr(self, "_spectrum_cache", None)
        if kept is not None and kept[0] is kernel and kept[1] == n_freq:
            return kept[2]
        taps = F.pad(kernel[:, 0], (0, 0, 0, n_freq - k_freq))  # (C, n_freq, kT)
        spectrum = torch.fft.rfft(taps, dim=1).conj().permute(1, 0, 2).contiguous()
        self._spectrum_cache = (kernel, n_freq, spectrum)
        return spectrum

    def _toeplitz(self, parameters: _Folded, n_in: int) -> torch.Tensor | None:
        """A temporal block's convolution of ``n_in`` frames as one matrix (n_in, T * live C):
        the kernels' taps on each band's row of frames.  It does ``n_in / kT`` times the
        multiply-adds of the convolution, but as one dense product: a quarter-second hop's
        temporal edges and new frames ran 2-5x as fast as through oneDNN, whose convolution of
        one input channel with a few long kernels is slow (the published MSD model keeps 3, 7
        and 17 of these blocks' 51 filters); a whole window's 128-frame block goes this way too.
        None off oneDNN's path (``parameters.onednn``: training, tracing, a GPU), and where the
        matrix is larger than ``TOEPLITZ_MAX_ENTRIES`` or the block is timbral (its kernels span
        frequency too).  The recently used lengths' matrices are kept (``TOEPLITZ_KEPT_ENTRIES``)."""
        kernel = parameters.kernel
        channels, _, k_freq, k_time = kernel.shape
        n_out = n_in - k_time + 1
        if (
            not parameters.onednn
            or k_freq != 1
            or n_out < 1
            or n_in * n_out * channels > TOEPLITZ_MAX_ENTRIES
        ):
            return None
        kept_kernel, matrices = getattr(self, "_toeplitz_cache", (None, {}))
        if kept_kernel is not kernel:  # new weights: the matrices of the old ones are no use
            matrices = {}
            self._toeplitz_cache = (kernel, matrices)
        matrix = matrices.pop(n_in, None)  # put back last: the dict is in order of use
        if matrix is None:
            tap = torch.arange(n_in, device=kernel.device)[:, None] - torch.arange(
                n_out, device=kernel.device
            )
            taps = kernel[:, 0, 0][:, tap.clamp(0, k_time - 1)] * (
                (tap >= 0) & (tap < k_time)
            )  # (C, in, out)
            matrix = taps.permute(1, 2, 0).reshape(n_in, n_out * channels).contiguous()
            kept = sum(m.numel() for m in matrices.values())
            while matrices and kept + matrix.numel() > TOEPLITZ_KEPT_ENTRIES:
                kept -= matrices.pop(next(iter(matrices))).numel()  # the least recently used
        matrices[n_in] = matrix
        return matrix

    def raw(self, x: torch.Tensor, parameters: _Folded | None = None) -> torch.Tensor:
        """``folded``'s convolution alone, before the max over frequency: (B, 1, F, T) -> (B, live
        C, F', T') (no padding; its kernel's sign folded in, no bias; the live filters only).  A
        temporal block's is ``folded``'s matrix product, returned as a view in that product's
        (B, F, T', C) layout: torch 2.13 ran it as its own im2col convolution
        (``_slow_conv2d_forward``), whose copy of 128 frames per output made the 128-frame
        block's tail 2.1 ms of a quarter-second hop on the first EPYC (AVX2), ~0.2 ms this way.
        Not in oneDNN's own layout either: its reorder back (``to_dense``) cost ~0.3 ms of that
        tail on the Xeon."""
        parameters = parameters or self._folded_parameters(_onednn_usable(x))
        toeplitz = self._toeplitz(parameters, x.shape[-1])
        if toeplitz is None:
            return F.conv2d(x, parameters.kernel)
        return _toeplitz_product(x, toeplitz, len(parameters.kernel)).permute(0, 3, 1, 2)

    def _finish(self, peak: torch.Tensor, parameters: _Folded) -> torch.Tensor:
        """``folded``'s end: the live filters' convolution maxed over frequency (..., live C, T) ->
        their features (bias, ReLU, batch norm)."""
        p = parameters
        return torch.addcmul(p.shift, torch.addcmul(p.bias, peak, p.sign).relu_(), p.scale)

    def _folded_parameters(self, cache: bool) -> _Folded:
        """``folded``'s parameters; with ``cache`` (inference on oneDNN), kept while the weights and
        statistics are the same tensors at the same version: rebuilding them (the kernel's
        transposed copy above all) cost ~0.5 ms of a streaming hop."""
        key = self._key()
        if cache and getattr(self, "_folded_cache", (None,))[0] == key:
            return self._folded_cache[1]
        scale, shift = _bn_affine(self.bn)
        constant = F.relu(self.conv.bias) * scale + shift  # a dead filter's channel
        sign = torch.where(scale < 0, -1.0, 1.0).to(scale)  # (C,)
        kernel = (self.conv.weight * sign[:, None, None, None]).transpose(2, 3)  # (C, 1, kF, kT)
        bias = self.conv.bias
        live = self._live_filters(key)
        if live is not None:
            kernel, sign, bias, scale, shift = (t[live] for t in (kernel, sign, bias, scale, shift))
        sign, bias, scale, shift = (t[:, None] for t in (sign, bias, scale, shift))  # over time
        parameters = _Folded(kernel.contiguous(), sign, bias, scale, shift, live, constant, cache)
        if cache:
            self._folded_cache = (key, parameters, pinned(self._tensors()))
        return parameters


def _toeplitz_product(x: torch.Tensor, toeplitz: torch.Tensor, channels: int) -> torch.Tensor:
    """A temporal block's convolution of ``x`` (B, 1, F, T_in) by its Toeplitz matrix (T_in, T *
    ``channels``; ``_FreqPooledConv._toeplitz``): one product, (B * F, T_in) @ (T_in, T * C) ->
    (B, F, T, C)."""
    batch, _, n_freq, n_in = x.shape
    return (x.reshape(-1, n_in) @ toeplitz).view(batch, n_freq, -1, channels)


def _spectral_max_over_freq(x: torch.Tensor, spectrum: torch.Tensor, k_freq: int) -> torch.Tensor:
    """A timbral block's convolution, no padding, maxed over frequency: (B, 1, F, T_in) -> (B, live C,
    T), by FFT over frequency.  Each input frame's F bands are one real FFT; per frequency bin the
    kernels' kT time taps are then one small product (``spectrum``: ``_FreqPooledConv._spectrum``);
    each output frame and channel is one inverse FFT, maxed over its valid bands.  The FFT's
    correlation is circular over the F bands, but the F - kF + 1 valid outputs reach no band past
    the last, so they are the convolution's, to rounding (within 3e-6 of oneDNN's on real music,
    whose values reach ~4).  A timbral kernel spans 38 or 67 of the 96 bands: per output, 7 x 49
    complex products and one inverse FFT instead of 266 or 469 multiply-adds for each of 59 or 30
    positions.  On the first EPYC's type a streaming hop's encoder took 0.4-0.6 ms less on two
    threads and 0.75-1.0 ms less on one (``tools/encoder-ab.py``, hop 0.256 and 0.992 s)."""
    batch, _, n_freq, n_in = x.shape
    bins, channels, k_time = spectrum.shape
    n_out = n_in - k_time + 1
    frames = torch.fft.rfft(x[:, 0], dim=1)  # (B, bins, T_in)
    taps = frames.unfold(2, k_time, 1).permute(1, 3, 0, 2).reshape(bins, k_time, batch * n_out).contiguous()
    products = torch.bmm(spectrum, taps).permute(1, 2, 0).contiguous()  # (C, B * T, bins)
    bands = torch.fft.irfft(products, n=n_freq, dim=-1)[..., : n_freq - k_freq + 1]
    return bands.amax(dim=-1).view(channels, batch, n_out).transpose(0, 1)


def _onednn_usable(x: torch.Tensor) -> bool:
    """Whether oneDNN's own tensors may be used: CPU float32 inference, not traced, exported or compiled."""
    return (
        not torch.compiler.is_compiling()  # first: torch.compile may not look into torch.backends
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and not torch.is_grad_enabled()  # oneDNN tensors have no autograd
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


def _onednn_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """conv2d(x, kernel) (no bias or padding) by oneDNN, in its own (channel-blocked) layout."""
    return torch.mkldnn_convolution(x.to_mkldnn(), kernel.contiguous(), None, [0, 0], [1, 1], [1, 1], 1)


def _conv_max_over_freq(x: torch.Tensor, kernel: torch.Tensor, onednn: bool) -> torch.Tensor:
    """conv2d(x, kernel) (no bias or padding) maxed over frequency: (B, 1, F, T) -> (B, C, T);
    ``onednn``: ``_onednn_usable(x)``."""
    if x.shape[0] * x.shape[-1] <= FEW_FRAMES:
        # A window's timbral edges (2 x 9 frames, 6 outputs) off oneDNN's path (on it, by FFT:
        # ``_FreqPooledConv.folded``): their patches as one matrix product, ~0.03 ms less per
        # block than a convolution's set-up.
        channels, _, k_freq, k_time = kernel.shape
        patches = x[:, 0].unfold(1, k_freq, 1).unfold(2, k_time, 1)  # (B, F', T', kF, kT), a view
        out = patches.reshape(-1, k_freq * k_time) @ kernel.reshape(channels, -1).T
        return out.view(*patches.shape[:3], channels).amax(dim=1).transpose(1, 2)
    if onednn:
        # oneDNN convolves into a channel-blocked layout; pooling there skips reordering the whole
        # (B, C, F', T) output to PyTorch's layout, the largest copy in the model.
        y = _onednn_conv(x, kernel)
        height = y.shape[2]
        return torch.mkldnn_max_pool2d(y, [height, 1], [height, 1]).to_dense()[:, :, 0]
    return F.conv2d(x, kernel).amax(dim=2)


class _MidConv(_LiveFilters):
    """1-D conv over time, 'same' by zero padding 3 each side -> ReLU -> batch norm."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 7, padding=3)
        self.bn = nn.BatchNorm1d(out_channels, eps=TF_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))

    def part(self, x: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
        """``forward`` of a piece of a window: zero padding ``pad`` (before, after) instead of 3 and 3.
        (In eval mode ``Musicnn._mid_layer`` computes its live filters alone.)"""
        return self.bn(F.relu(F.conv1d(F.pad(x, pad), self.conv.weight, self.conv.bias)))


def _same_pad(kernel: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding for stride 1: the odd sample goes after."""
    return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2


class Musicnn(SegmentModel):
    """Pons & Serra 2019, musicnn; input (batch, 96 mel bands, 187 frames) of log10(1 + 10⁴·mel)."""

    def __init__(self, labels: tuple[str, ...], filters_midend: int = 64, units_backend: int = 200):
        super().__init__()
        self.frontend = MUSICNN_FRONTEND
        self.segment_frames = SEGMENT_FRAMES
        self.heads = {"tags": HeadSpec("tags", tuple(labels))}
        self.embedding_dim = units_backend
        n_mels = self.frontend.n_mels
        timbral, temporal = int(1.6 * 128), int(1.6 * 32)
        self.bn_input = nn.BatchNorm2d(1, eps=TF_BN_EPS)
        self.front = nn.ModuleList(
            [
                _FreqPooledConv(timbral, (7, int(0.4 * n_mels)), (3, 3)),
                _FreqPooledConv(timbral, (7, int(0.7 * n_mels)), (3, 3)),
                _FreqPooledConv(temporal, (128, 1), _same_pad(128)),
                _FreqPooledConv(temporal, (64, 1), _same_pad(64)),
                _FreqPooledConv(temporal, (32, 1), _same_pad(32)),
            ]
        )
        front_channels = 2 * timbral + 3 * temporal  # 561
        self.mid = nn.ModuleList(
            [
                _MidConv(front_channels, filters_midend),
                _MidConv(filters_midend, filters_midend),
                _MidConv(filters_midend, filters_midend),
            ]
        )
        pooled = 2 * (front_channels + 3 * filters_midend)  # max and mean of 753 channels
        self.bn_pool = nn.BatchNorm1d(pooled, eps=TF_BN_EPS)
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(pooled, units_backend)
        self.bn_dense = nn.BatchNorm1d(units_backend, eps=TF_BN_EPS)
        self.tags = nn.Linear(units_backend, len(labels))

    def encode(self, patch: torch.Tensor, *, folded: bool | None = None) -> torch.Tensor:
        """(batch, n_mels, frames) -> (batch, 200) penultimate features.

        ``folded`` (default: in eval mode) runs the front end as ``_FreqPooledConv.folded``
        does, pooling before batch norm; False runs the layers in TensorFlow's order.
        """
        folded = not self.training if folded is None else folded
        if folded and self.training:
            raise ValueError("the folded front end uses batch norm's running statistics: eval mode only")
        if folded and _onednn_usable(patch) and len(patch) > CHUNK_SEGMENTS:
            # A segment's largest intermediate takes 9 MB, and glibc hands blocks over 32 MB back to
            # the OS when they are freed: from a batch of 4 on, every call page-faulted its memory in
            # again (a batch of 8 took 1.6x the time per segment of chunks of 3).
            return torch.cat([self._encode(chunk, folded) for chunk in patch.split(CHUNK_SEGMENTS)])
        return self._encode(patch, folded)

    def _encode(self, patch: torch.Tensor, folded: bool) -> torch.Tensor:
        if folded:
            x = self.bn_input(patch.unsqueeze(1))  # (B, 1, F, T)
            # Fetched once and handed to the back end too, which then keys its live layout on
            # them as the StreamingEncoder's calls do (keyed apart, the two rebuilt it in turn).
            onednn = _onednn_usable(x)
            parameters = [block._folded_parameters(onednn) for block in self.front]
            front = [block.folded(x, None, p) for block, p in zip(self.front, parameters, strict=True)]
            return self.back(torch.cat(front, dim=1), None, parameters)  # (B, live, T) -> (B, 200)
        x = self.bn_input(patch.transpose(1, 2).unsqueeze(1))  # (B, 1, T, F)
        front = torch.cat([block(x) for block in self.front], dim=1)  # (B, 561, T)
        return self._pool(self._mid(front, None, None), None)  # every channel: the plain function

    def back(
        self,
        front: torch.Tensor,
        head: list[torch.Tensor] | None = None,
        parameters: list[_Folded] | None = None,
    ) -> torch.Tensor:
        """The mid and back end: the front end's (B, C, T) features -> (B, 200).  In eval mode C is
        the live channels (``folded``'s, ``_live_layout``), in training all 561.  ``head``: as
        ``mid_features`` takes it; ``parameters``: as ``_live_layout`` takes them."""
        live = self._live_layout(front, parameters)
        return self._pool(self._mid(front, head, live), live)

    def mid_features(self, front: torch.Tensor, head: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The mid end: the front end's (B, C, T) features (``back``'s) -> with the mid end's, (B,
        C + 192, T).  ``head``: ``mid_head``'s layers of the window's first frames, computed
        before the rest of its front end was known; only the rest is computed."""
        return self._mid(front, head, self._live_layout(front))

    def _mid(self, front: torch.Tensor, head: list[torch.Tensor] | None, live: _Live | None) -> torch.Tensor:
        return torch.cat([front, *self._mid_layers(front, head, live, 3)], dim=1)

    def mid_head(
        self,
        front: torch.Tensor,
        head: list[torch.Tensor] | None = None,
        parameters: list[_Folded] | None = None,
    ) -> list[torch.Tensor]:
        """The mid end's layers of a window's first frames, whose front end ``front`` (B, C, n)
        is known before the rest: each layer's outputs that need no later frame (3 fewer per
        layer: n - 3, n - 6, n - 9).  ``head``: those of fewer first frames, extended;
        ``parameters``: as ``_live_layout`` takes them."""
        return self._mid_layers(front, head, self._live_layout(front, parameters), 0)

    def _mid_layers(
        self, front: torch.Tensor, head: list[torch.Tensor] | None, live: _Live | None, right_pad: int
    ) -> list[torch.Tensor]:
        """Each mid-end layer's outputs over ``front`` (B, C, n).  ``head``: each layer's first
        outputs, already computed (``mid_head``'s): only the rest is, from 3 frames before them.
        ``right_pad``: 3, a window's end (zero padding, as musicnn's); 0, frames still to come
        (``mid_head``: the outputs that need no later frame, 3 fewer per layer)."""
        layers, x = [], front
        for j in range(len(self.mid)):
            done = 0 if head is None else head[j].shape[-1]
            pad = (max(3 - done, 0), right_pad)  # left: the zeros before the window its outputs reach
            y = self._mid_layer(j, x[..., max(done - 3, 0) :], pad, live)
            if j:  # residual
                y = y + x[..., done : done + y.shape[-1]]
            x = y if done == 0 else torch.cat([head[j], y], dim=-1)
            layers.append(x)
        return layers

    def _mid_layer(self, j: int, x: torch.Tensor, pad: tuple[int, int], live: _Live | None) -> torch.Tensor:
        """Mid-end layer ``j`` of ``x`` (B, C, n), zero-padded by ``pad`` ((3, 3): a whole window).
        With ``live`` (``_MidLive``), only the input's varying channels are convolved: a constant
        one's share is one kernel convolved with the window's ones (zeros where the padding is).
        Only the live outputs are computed; a dead one is its value."""
        layer = self.mid[j]
        if live is None:
            return layer.part(x, pad)
        spec = live.mid[j]
        if spec.inputs is not None:
            x = x.index_select(1, spec.inputs)
        y = F.conv1d(F.pad(x, pad), spec.weight) + self._mid_share(spec, x, pad)
        y = F.batch_norm(F.relu(y), *spec.bn, False, 0.0, layer.bn.eps)
        if spec.outputs is None:
            return y
        # The dead outputs as zeros after the live ones, put in order, their values added: (B, 64,
        # n) whatever the batch (an index_copy into a batch of values froze its size in an ONNX graph).
        y = F.pad(y, (0, 0, 0, len(spec.values) - len(spec.outputs))).index_select(1, spec.order)
        return y + spec.values[:, None]

    @staticmethod
    def _mid_share(spec: _MidLive, x: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
        """(live out, n): a mid-end layer's bias and its constant inputs' share over ``x``'s n frames
        zero-padded by ``pad``.  The same for every window (and for each length of a window's
        first frames): kept per length and padding (``spec.shares``), outside a traced graph (its
        convolution of ones cost ~0.05 ms a layer)."""
        key = (x.shape[-1], pad, x.device)
        share = spec.shares.get(key)
        if share is not None:
            return share
        share = spec.bias[:, None]
        if spec.constant is not None:
            share = share + F.conv1d(F.pad(x.new_ones((1, 1, x.shape[-1])), pad), spec.constant)[0]
        if not graph_capture() and not torch.is_grad_enabled():
            if len(spec.shares) >= MID_SHARES_KEPT:
                spec.shares.clear()
            spec.shares[key] = share
        return share

    def _mid_live(self, weight: torch.Tensor, constant: torch.Tensor | None) -> tuple[_MidLive, ...]:
        """The mid end's layers in eval mode (``_MidLive``).  ``weight``: the first layer's kernel
        over the front end's live channels, ``constant``: over its dead ones, times their values.
        Most of the first layer's filters are dead (``_LiveFilters._live_filters``: 44 of 64 in
        the published MSD model, 43 in MTT's), so its outputs are mostly constants, and the next
        layer convolves only the rest.  Past a residual sum, a channel is constant where both
        terms are.  A layer with few dead filters (the others': 0-3 of 64) computes them all
        (``MID_LEFT_OUT_MIN``)."""
        layers = []
        constants: set[int] = set()  # the input's constant channels (the front end's: ``constant``)
        values_in = None  # their values
        for j, layer in enumerate(self.mid):
            conv, bn = layer.conv, layer.bn
            n_out = conv.out_channels
            w, k, inputs = (weight, constant, None) if j == 0 else (conv.weight, None, None)
            if len(constants) >= MID_LEFT_OUT_MIN * conv.in_channels:
                inputs = torch.tensor(sorted(set(range(conv.in_channels)) - constants), device=w.device)
                k = (w * values_in.index_fill(0, inputs, 0.0)[None, :, None]).sum(1, keepdim=True)
                w = w.index_select(1, inputs)
            scale, shift = _bn_affine(bn)
            bias, stats = conv.bias, (bn.running_mean, bn.running_var, bn.weight, bn.bias)
            outputs = layer._live_filters()
            dead = set() if outputs is None else set(range(n_out)) - set(outputs.tolist())
            # Each output's value where its filter is dead, 0 where live.
            values = F.relu(conv.bias) * scale + shift
            values = torch.zeros_like(values) if outputs is None else values.index_fill(0, outputs, 0.0)
            dead_values, order = values, None
            if len(dead) < MID_LEFT_OUT_MIN * n_out:  # all computed: a dead filter gives its value
                outputs, values = None, torch.zeros_like(values)
            else:
                places = {c: i for i, c in enumerate(outputs.tolist() + sorted(dead))}
                order = torch.tensor([places[c] for c in range(n_out)], device=w.device)
                w, bias = w.index_select(0, outputs), bias.index_select(0, outputs)
                k = None if k is None else k.index_select(0, outputs)
                stats = tuple(t.index_select(0, outputs) for t in stats)
            layers.append(_MidLive(inputs, w.contiguous(), k, bias, stats, outputs, order, values, {}))
            # Its output is the next layer's input; past the first layer, summed with its own input
            # (the residual), so constant where both are.
            if j == 0:
                constants, values_in = dead, dead_values
            else:
                constants &= dead
                values_in = dead_values + values_in if constants else None
        return tuple(layers)

    def _live_layout(self, x: torch.Tensor, parameters: list[_Folded] | None = None) -> _Live | None:
        """How the eval-mode mid and back end work on the live channels alone (None in training).
        Most of the published MSD model's front-end filters are dead (``_LiveFilters._live_filters``):
        carrying only its 64 live channels of 561 through a window spares the copies of the rest
        and 9/10 of the first mid-end layer, and the back end's dense layer reads the weights of
        512 of its 1506 inputs (0.4 of 1.2 MB a hop, read from memory when a live stream's hop
        starts cold).  So are most of the first mid-end layer's (``_mid_live``).  Kept while the
        weights are the same, outside autograd (whose calls need it built from their tensors).

        ``parameters``: each front-end block's ``_folded_parameters``, fetched by the caller for
        this call (``_encode``, ``StreamingEncoder``).  Kept ones (oneDNN's) are the same objects
        while their weights are, so the front end's 30 tensors need no second check: comparing
        the objects instead made the check ~0.1 ms a hop cheaper on the first EPYC's type."""
        if self.training:
            return None
        cache = not torch.is_grad_enabled() and not graph_capture()
        modules = self._modules
        mids = tuple(t for layer in modules["mid"]._modules.values() for t in layer._tensors())
        mid = mids[0]  # the first mid-end layer's kernel
        back = mids + tensors_of(modules["dense"], "weight", "bias")
        back += tensors_of(modules["bn_pool"], "weight", "bias", "running_mean", "running_var")
        if parameters is not None and all(p.onednn for p in parameters):
            # The kept layout holds these objects, so no other can have their ids meanwhile.
            tensors, fronts = back, tuple(parameters)
            key = (tensors_key(*tensors), tuple(map(id, fronts)))
        else:
            tensors, fronts = (*back, *(t for block in self.front for t in block._tensors())), ()
            key = (tensors_key(*tensors), ())
        kept = getattr(self, "_layout_cache", None)
        if cache and kept is not None and kept[0] == key:
            return kept[1]
        if parameters is None:
            parameters = [block._folded_parameters(cache and _onednn_usable(x)) for block in self.front]
        offsets = np.cumsum([0] + [block.conv.out_channels for block in self.front])
        channels = torch.cat(
            [
                (torch.arange(len(p.constant), device=mid.device) if p.live is None else p.live) + offset
                for p, offset in zip(parameters, offsets[:-1], strict=True)
            ]
        )
        constant = torch.cat([p.constant for p in parameters])  # (561,): a dead channel's value
        if len(channels) == len(constant):
            live = _Live(channels, self._mid_live(mid, None), None, None)
        else:
            # Each channel's value where it is dead, 0 where live.  (Masks and fills that an ONNX
            # export traces: no boolean indexing, no fill with a bool.)
            dead_values = constant * torch.ones_like(constant).index_fill_(0, channels, 0.0)
            mid_constant = (mid * dead_values[None, :, None]).sum(1, keepdim=True)
            # TensorFlow's pooled vector interleaves each feature's max and mean; the mid end's
            # 192 features follow the front end's 561.
            features = torch.cat(
                [channels, len(constant) + torch.arange(mid.shape[0] * len(self.mid), device=mid.device)]
            )
            pooled_live = torch.stack([2 * features, 2 * features + 1], dim=1).flatten()
            # The pooled vector with the dead channels' max and mean (their value) in place and
            # zeros at the live entries: batch norm is affine per entry, so the dense layer of
            # the whole vector is its weights over the live entries, scaled, plus a constant.
            known = F.pad(constant.repeat_interleave(2), (0, 2 * mid.shape[0] * len(self.mid)))
            known = known.index_fill(0, pooled_live, 0.0)
            scale, shift = _bn_affine(self.bn_pool)
            dense = self.dense.weight
            live = _Live(
                channels,
                self._mid_live(mid.index_select(1, channels), mid_constant),
                (dense[:, pooled_live] * scale[pooled_live]).contiguous(),
                dense @ (scale * known + shift) + self.dense.bias,  # (addmv has no ONNX export)
            )
        if cache:
            self._layout_cache = (key, live, (pinned(tensors), fronts))
        return live

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """The back end: (B, C + 192, T) features (``mid_features``') pooled over time -> (B, 200)."""
        return self._pool(features, self._live_layout(features))

    def _pool(self, features: torch.Tensor, live: _Live | None) -> torch.Tensor:
        # TensorFlow flattens (features, [max, mean]), so the two statistics interleave.
        pooled = torch.stack([features.amax(dim=2), features.mean(dim=2)], dim=2).flatten(1)
        if live is not None and live.dense_weight is not None:  # eval: dropout is the identity
            x = torch.addmm(live.dense_bias, pooled, live.dense_weight.T)  # the live entries' share
        else:
            x = self.dense(self.dropout(self.bn_pool(pooled)))  # (B, 1506) -> (B, 200)
        return self.bn_dense(F.relu(x))  # (B, 200)

    def predict(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"tags": self.tags(self.dropout(pooled))}

    def head_layer(self, head: str) -> nn.Linear | None:
        return self.tags if head == "tags" else None

    def streaming_encoder(self) -> StreamingEncoder | None:
        return StreamingEncoder(self)


MID_REACH = 9  # frames: the mid end's three 7-frame convolutions see 3 each side, 9 in all
# A window's tail (its last frames' features, which its missing frames reach) is summed ahead
# from the frames it has when at most this many are missing (a live loop's early take: ~3).
TAIL_MISSING_MAX = 8
TIMBRAL_BLOCKS = 2  # front[0] and front[1]: kernels 7 frames long, 84 % of the model's FLOPs


class StreamingEncoder:
    """``Musicnn.encode`` (folded, eval mode) of windows cut from one stream of mel frames, with
    each front-end block's features computed once per frame instead of once per window.

    A front-end block sees ``pl`` frames before and ``pr`` after each output frame (timbral
    blocks 3 and 3; the temporal blocks' kernels of 128, 64 and 32 frames 63/64, 31/32 and
    15/16), zero-padded at the window's edges.  So a frame at least ``pl`` frames from a
    window's start and ``pr`` from its end has the same features in every window that holds it:
    computed once when its frames are in, kept while a window may need them.  Each window adds
    only its ``pl`` + ``pr`` edge frames per block (with the window's zero padding, as musicnn
    computes them; all windows' edges in one batched call per block), then the mid and back
    end.  The result is ``encode``'s to float rounding: consecutive windows at hop 1 s share
    122 of 187 frames, at hop 0.25 s 171.  What a hop still costs is the new frames, the
    temporal blocks' wide edges (127, 63 and 31 frames of the window) and the mid end.

    One instance per stream: ``encode(frames, start, ends)`` takes the (n_mels, n) frames kept
    by the caller, the stream index of their first one, and the stream indices one past each
    window's last frame (ascending; windows may overlap, none may reach back before ``start``).
    ``prepare(frames, start, end)`` may come between, as frames arrive: the next window's work
    that needs none of its missing frames, done ahead (a live loop's lag then holds the rest).
    """

    def __init__(self, model: Musicnn):
        self.model = model
        self.window = model.segment_frames
        self._blocks = tuple(model.front)  # used in every call: a ModuleList's lookup costs ~1 us
        for block in model.front:
            if sum(block.time_pad) >= self.window:
                raise ValueError(f"a {block.time_pad} padded block leaves no window frame without an edge")
        self._parameters: list[_Folded] = []  # each block's, for the call in progress
        self._weights: list | None = None  # what identifies the weights the kept state was computed with
        self._pins: tuple | None = None  # their memory, where ``_weights`` are keys (``pinned``)
        self._reset()

    def _reset(self) -> None:
        """Forget every kept feature (a new stream's start, or new weights)."""
        model = self.model
        # Per block: features (live C, n) of stream frames first .. first + n, and that first index.
        self._features = [torch.zeros(0) for _ in model.front]
        self._first = [0] * len(model.front)
        # Per block: (end, (live C, pl) features) of the left edge ``prepare`` computed for a window.
        self._left: list[tuple[int | None, torch.Tensor | None]] = [(None, None)] * len(model.front)
        # (end, mid_head's layers) of the window ``prepare`` computed them for.
        self._head: tuple[int | None, list[torch.Tensor] | None] = (None, None)
        # Per block: (end, frames available, raw sums (F', live C, missing + pr)) of ``_prepare_tail``.
        self._tail: list[tuple[int | None, int | None, torch.Tensor | None]] = [(None, None, None)] * len(
            model.front
        )
        self._tail_weights: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, frames: torch.Tensor, start: int, ends: list[int]) -> torch.Tensor:
        model = self.model
        if model.training:
            raise ValueError("the streaming encoder uses batch norm's running statistics: eval mode only")
        x = model.bn_input(frames[None, None])  # (1, 1, F, n): pointwise, so any slice of it is a window's
        self._fetch_parameters(x)
        channels = [len(p.kernel) for p in self._parameters]
        front = x.new_empty((len(ends), sum(channels), self.window))
        for i, out in enumerate(front.split(channels, dim=1)):
            self._block(i, x, start, ends, out)
        head_end, head = self._head
        if ends != [head_end]:
            head = None  # else prepared: the mid end of its first frames is done
        return model.back(front, head, self._parameters)  # (B, live C, window) -> (B, 200)

    def prepare(self, frames: torch.Tensor, start: int, end: int) -> None:
        """Ahead of the window ending at ``end``, whose frames are not all in: what of it the
        frames kept so far allow (its left edges, the interior frames already complete, the mid
        end of its first frames, each block's tail summed over the frames it has), so that
        ``encode`` of that window, once its last frame is in, has only the rest to do.

        The same work, done earlier: a live loop calls this at its early take, and the window's
        lag then holds the missing frames' share of the tails, the rest of the mid end and the
        back end.
        """
        if self.model.training:
            raise ValueError("the streaming encoder uses batch norm's running statistics: eval mode only")
        x = self.model.bn_input(frames[None, None])
        self._fetch_parameters(x)
        available = start + frames.shape[-1]
        for i, block in enumerate(self._blocks):
            pl, pr = block.time_pad
            first_needed = end - self.window + pl
            self._interior(i, x, start, first_needed, min(end - pr, available - pr))
            if self._left[i][0] != end and available >= end - self.window + pl + pr:
                left = block.folded(self._left_input(x, start, end, i), (0, 0), self._parameters[i])
                self._left[i] = (end, left[0, :, :pl])
            if self._left[i][0] == end:
                self._prepare_tail(i, x, start, end, available)
        # The window's first frames whose front end is complete in every block (left edge and
        # interior; 0 until every left edge is in, then at least the widest one): the mid end
        # of those, as far as it needs no later frame.
        known = min(
            self._first[i] + self._features[i].shape[-1] - (end - self.window)
            if self._left[i][0] == end
            else 0
            for i in range(len(self._blocks))
        )
        head_end, head = self._head
        if head_end != end:
            head = None
        if known > MID_REACH + (0 if head is None else head[0].shape[-1] + 3):
            front = torch.cat([self._front_of(i, end, known) for i in range(len(self._blocks))])
            self._head = (end, self.model.mid_head(front[None], head, self._parameters))

    def _interior(
        self,
        i: int,
        x: torch.Tensor,
        start: int,
        first_needed: int,
        to: int,
        right_edge: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Block ``i``'s kept features from stream frame ``first_needed``, computed up to ``to`` if
        they end before: (features (C, n), index of their first frame).  With ``right_edge`` (C,
        pr), ``to`` is a window's last interior frame and its right edge is written there: the
        frames still missing and the edge are one piece that ends at the window's end, one call."""
        block = self._blocks[i]
        pl, pr = block.time_pad
        features, first = self._features[i], self._first[i]
        if features.shape[-1] == 0 or not first <= first_needed <= first + features.shape[-1]:
            features, first = x.new_zeros((len(self._parameters[i].kernel), 0)), first_needed
        else:  # drop what no window from here on needs
            features, first = features[:, first_needed - first :], first_needed
        have_to = first + features.shape[-1]
        if to > have_to:
            piece = x[..., have_to - pl - start : to + pr - start]
            piece = piece if right_edge is None else F.pad(piece, (0, pr))
            new = block.folded(piece, (0, 0), self._parameters[i])[0]
            if right_edge is not None:
                right_edge.copy_(new[:, to - have_to :])
                new = new[:, : to - have_to]
            features = torch.cat([features, new], dim=1)
        self._features[i], self._first[i] = features, first
        return features, first

    def _prepare_tail(self, i: int, x: torch.Tensor, start: int, end: int, available: int) -> None:
        """Block ``i``'s convolution, before the max over frequency, of the window's last outputs
        that its ``end - available`` missing frames reach (the interior ones still to come and
        the right edge), summed over the frames it has: the missing frames' share is added by
        ``_finish_tail`` (a convolution is linear up to the max)."""
        pl, pr = self._blocks[i].time_pad
        missing = end - available
        if not 0 < missing <= TAIL_MISSING_MAX or self._tail[i][:2] == (end, available):
            return
        known = F.pad(x[..., available - pr - pl - start : available - start], (0, missing + pr))
        # Kept frequency first, the layout of the missing share's matrix product: adding the two
        # after the last frame is then one contiguous pass (transposed, it cost ~0.7 ms there
        # for the 128-frame block's 330 k sums).
        sums = self._blocks[i].raw(known, self._parameters[i])[0]
        sums = sums.transpose(0, 1).contiguous()  # (F', live C, missing + pr)
        self._tail[i] = (end, available, sums)

    def _finish_tail(self, i: int, x: torch.Tensor, start: int, end: int, right_edge: torch.Tensor) -> bool:
        """The window ending at ``end``, its frames all in: block ``i``'s prepared tail plus the
        missing frames' share (one small matrix product) -> its interior frames kept, its right
        edge into ``right_edge``.  False when no tail was prepared for these frames."""
        block = self._blocks[i]
        pr = block.time_pad[1]
        tail_end, available, known = self._tail[i]
        features, first = self._features[i], self._first[i]
        if tail_end != end or first + features.shape[-1] != available - pr:
            return False
        missing = end - available
        parameters = self._parameters[i]
        kernel = parameters.kernel  # (live C, 1, kF, kT)
        weights = self._missing_share_weights(i, missing, kernel)
        n_freq = known.shape[0]
        new = x[0, 0, :, available - start : end - start].unfold(0, kernel.shape[2], 1)  # (F', m, kF)
        share = (new.reshape(n_freq, -1) @ weights).view(n_freq, -1, missing + pr)  # (F', C, m + pr)
        out = block._finish(share.add_(known).amax(dim=0), parameters)  # (C, m + pr)
        self._features[i] = torch.cat([features, out[:, :missing]], dim=1)
        right_edge.copy_(out[:, missing:])
        self._tail[i] = (None, None, None)
        return True

    def _missing_share_weights(self, i: int, missing: int, kernel: torch.Tensor) -> torch.Tensor:
        """(missing * kF, live C * (missing + pr)): the kernel taps by which each of the last ``missing``
        frames (and frequency offset) reaches each tail output; zero where it does not reach."""
        cached = self._tail_weights.get((i, missing))
        if cached is not None and cached[0] is kernel:
            return cached[1]
        pl, pr = self._blocks[i].time_pad
        channels, _, k_freq, k_time = kernel.shape
        # Frames counted from the first missing one, outputs from the first they reach.
        frame = torch.arange(missing, device=kernel.device)[:, None]
        output = torch.arange(missing + pr, device=kernel.device)[None, :]
        tap = frame - output + pl + pr  # (m, m + pr)
        taps = kernel[:, 0][:, :, tap.clamp(0, k_time - 1)] * (
            (tap >= 0) & (tap < k_time)
        )  # (C, kF, m, m+pr)
        weights = taps.permute(2, 1, 0, 3).reshape(missing * k_freq, channels * (missing + pr)).contiguous()
        self._tail_weights[(i, missing)] = (kernel, weights)
        return weights

    def _fetch_parameters(self, x: torch.Tensor) -> None:
        """Each block's ``folded`` parameters for this call, fetched once for its ~15 calls (each
        fetch checks the weights: ~10 us).  New weights (a state dict loaded, a filter brought
        back to life) make every kept feature stale: they are forgotten.  Kept parameters are the
        same objects while the weights are; others (a GPU's) are compared by the weights' key."""
        cache = _onednn_usable(x)
        front = self._blocks
        self._parameters = [block._folded_parameters(cache) for block in front]
        weights = self._parameters if cache else [block._key() for block in front]
        if self._weights is None or not all(
            a is b if cache else a == b for a, b in zip(weights, self._weights, strict=True)
        ):
            if self._weights is not None:
                self._reset()
            # Kept parameters are held, so their identity stays theirs; keys need the memory held.
            self._pins = None if cache else pinned(t for block in front for t in block._tensors())
        self._weights = weights

    def _front_of(self, i: int, end: int, n: int) -> torch.Tensor:
        """Block ``i``'s prepared features of the first ``n`` frames of the window ending at ``end``."""
        pl = self._blocks[i].time_pad[0]
        features, first = self._features[i], self._first[i]
        window_start = end - self.window
        return torch.cat(
            [self._left[i][1], features[:, window_start + pl - first : window_start + n - first]], dim=1
        )

    def _left_input(self, x: torch.Tensor, start: int, end: int, i: int) -> torch.Tensor:
        """The frames of block ``i``'s left edge of the window ending at ``end``, zero-padded so that
        they batch with its right edges (pr - pl zeros more; the last outputs are dropped)."""
        pl, pr = self._blocks[i].time_pad
        first = end - self.window - start
        return F.pad(x[..., first : first + pl + pr], (pl, pr - pl))

    def _block(self, i: int, x: torch.Tensor, start: int, ends: list[int], out: torch.Tensor) -> None:
        """Front-end block ``i``'s features of the windows ending at ``ends`` into ``out`` (B, live C, window)."""
        block, window = self._blocks[i], self.window
        pl, pr = block.time_pad
        prepared_end, prepared = self._left[i]
        first_needed, need_to = ends[0] - window + pl, ends[-1] - pr
        if ends == [prepared_end] and need_to > self._first[i] + self._features[i].shape[-1]:
            # The one window a live loop asks for, prepared ahead: its left edge is in; the
            # interior frames still missing and the right edge are its tail's missing share, or
            # one call.
            if not self._finish_tail(i, x, start, ends[0], out[0, :, window - pr :]):
                self._interior(i, x, start, first_needed, need_to, out[0, :, window - pr :])
            features, first = self._features[i], self._first[i]
            out[0, :, :pl] = prepared
            out[0, :, pl : window - pr] = features[:, first_needed - first : need_to - first]
            return
        # The interior frames of every window asked for: the new ones computed, the rest kept.
        features, first = self._interior(i, x, start, first_needed, need_to)
        # Each window's first pl and last pr frames, with its zero padding: one batch of equal
        # lengths (a left edge prepared ahead is not computed again).  Joined along time with the
        # new frames instead, in one call, the outputs that straddle two pieces (pl + pr per join)
        # cost more than the call saves, even for the timbral blocks.
        todo = [e for e in ends if e != prepared_end]
        lefts = [self._left_input(x, start, e, i) for e in todo]
        rights = [F.pad(x[..., e - pl - pr - start : e - start], (0, pr)) for e in ends]
        edges = block.folded(
            torch.cat(lefts + rights), (0, 0), self._parameters[i]
        )  # (len(todo) + B, live C, pr)
        for j, e in enumerate(ends):
            out[j, :, :pl] = prepared if e == prepared_end else edges[todo.index(e), :, :pl]
        out[:, :, window - pr :] = edges[len(todo) :]
        for j, e in enumerate(ends):
            out[j, :, pl : window - pr] = features[:, e - window + pl - first : e - pr - first]


# --- weights -------------------------------------------------------------------------------

_VARIANTS = {"msd": ("MSD_musicnn", MSD_LABELS), "mtt": ("MTT_musicnn", MTT_LABELS)}


def _tf_to_torch_names(model: Musicnn) -> dict[str, tuple[str, str]]:
    """torch parameter -> (TF variable, how to lay it out), in the graph's creation order."""
    convs = [m.conv for m in model.front] + [m.conv for m in model.mid]
    bns = [model.bn_input] + [m.bn for m in model.front] + [m.bn for m in model.mid]
    bns += [model.bn_pool, model.bn_dense]
    names = {id(m): n for n, m in model.named_modules()}
    mapping = {}
    for i, conv in enumerate(convs):
        tf = "conv2d" if i == 0 else f"conv2d_{i}"
        layout = "conv2d" if isinstance(conv, nn.Conv2d) else "conv1d"
        mapping[f"{names[id(conv)]}.weight"] = (f"{tf}/kernel", layout)
        mapping[f"{names[id(conv)]}.bias"] = (f"{tf}/bias", "copy")
    for i, bn in enumerate(bns):
        tf = "batch_normalization" if i == 0 else f"batch_normalization_{i}"
        for torch_name, tf_name in (
            ("weight", "gamma"),
            ("bias", "beta"),
            ("running_mean", "moving_mean"),
            ("running_var", "moving_variance"),
        ):
            mapping[f"{names[id(bn)]}.{torch_name}"] = (f"{tf}/{tf_name}", "copy")
    for module, tf in ((model.dense, "dense"), (model.tags, "dense_1")):
        mapping[f"{names[id(module)]}.weight"] = (f"{tf}/kernel", "dense")
        mapping[f"{names[id(module)]}.bias"] = (f"{tf}/bias", "copy")
    return mapping


def convert_checkpoint(prefix: str | Path, model: Musicnn) -> dict[str, torch.Tensor]:
    """The torch state dict of ``model`` from the TF checkpoint at ``prefix``."""
    tf_vars = read_checkpoint(prefix)
    state = {}
    for torch_name, (tf_name, layout) in _tf_to_torch_names(model).items():
        if tf_name not in tf_vars:
            raise CheckpointError(f"{prefix}: variable {tf_name} is missing")
        array = tf_vars[tf_name]
        if layout == "conv2d":  # (kh, kw, in, out) -> (out, in, kh, kw)
            array = array.transpose(3, 2, 0, 1)
        elif layout == "conv1d":  # (7, in, 1, out) -> (out, in, 7)
            array = array[:, :, 0, :].transpose(2, 1, 0)
        elif layout == "dense":  # (in, out) -> (out, in)
            array = array.T
        state[torch_name] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.zeros((), dtype=torch.long)
        elif state[k].shape != v.shape:
            raise CheckpointError(
                f"{prefix}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}"
            )
    return state


def package_checkpoint(variant: str) -> str:
    """The checkpoint prefix inside the installed ``musicnn`` package (found, never imported).

    ``$MOODSTREAM_MUSICNN_DIR`` overrides where that package folder is.
    """
    folder = _VARIANTS[variant][0]
    if os.environ.get("MOODSTREAM_MUSICNN_DIR"):  # the package's folder kept somewhere else
        package = Path(os.environ["MOODSTREAM_MUSICNN_DIR"])
    else:
        spec = importlib.util.find_spec("musicnn")
        if spec is None or not spec.submodule_search_locations:
            raise WeightsError(
                f"the musicnn weights are not installed; get them with: {INSTALL_HINT} "
                "(only its weight files are used, never its TensorFlow code), or from a clone: make setup"
            )
        package = Path(list(spec.submodule_search_locations)[0])
    # TF saved these with an empty file name: the prefix is the folder plus a separator.
    prefix = str(package / folder) + "/"
    if not Path(prefix + ".index").is_file():
        raise WeightsError(
            f"the musicnn package has no {folder} checkpoint at {prefix}; reinstall: {INSTALL_HINT}"
        )
    return prefix


def load_pretrained(model: Musicnn, variant: str, cache: Path | None = None) -> Path:
    """Load the published weights, converting the TF checkpoint once into the cache."""
    cache = cache or cache_dir()
    path = cache / f"musicnn-{variant}.safetensors"
    if not path.is_file():
        prefix = package_checkpoint(variant)
        print(
            f"converting musicnn {variant.upper()} weights from {prefix} to {path} (first use only)",
            file=sys.stderr,
        )
        try:
            state = convert_checkpoint(prefix, model)
        except CheckpointError as exc:
            raise WeightsError(
                f"cannot read the musicnn checkpoint: {exc}; reinstall: {INSTALL_HINT}"
            ) from exc
        save_safetensors(state, path)
    load_state(model, path)
    return path


def _build(variant: str, pretrained: bool) -> Musicnn:
    model = Musicnn(_VARIANTS[variant][1])
    if pretrained:
        load_pretrained(model, variant)
    model.pretrained = pretrained
    return model.eval()


@register("musicnn-msd", paper="Pons & Serra 2019, musicnn (Million Song Dataset tags)")
def musicnn_msd(pretrained: bool = True) -> Musicnn:
    return _build("msd", pretrained)


@register("musicnn-mtt", paper="Pons & Serra 2019, musicnn (MagnaTagATune tags)")
def musicnn_mtt(pretrained: bool = True) -> Musicnn:
    return _build("mtt", pretrained)
