"""How audio becomes the mel patches a model reads: the parameters, and the one-pass module.

``MelFrontend`` is the single implementation shared by ``train``, the ONNX export (with
``--with-frontend``) and the engine, whose ``realtime.frontend.StreamingMel`` feeds it only the
samples that complete new frames.  It wraps nnAudio's ``MelSpectrogram`` (a convolution STFT,
so it runs on the GPU when moved there) with ``center=False`` and pads itself; the engine's few
new frames per hop go through ``few_frames``, an FFT with nnAudio's window and filters.

The defaults are librosa's conventions (periodic Hann, reflect-centred frames, librosa's
slaney filters), which musicnn was trained on.  ``ESSENTIA_JAMENDO`` is the other family:
the official MTG-Jamendo mels, computed with Essentia's ``scripts/melspectrograms.py`` recipe
(FrameGenerator(512, 256, startFromZero=False), Windowing(hann, normalized=False), Spectrum,
MelBands(96, 0-6000 Hz, weighting=linear, normalize=unit_tri, warpingFormula=slaneyMel,
type=power), UnaryOperator(lin2db, scale=2)).  Four options make the difference, each taken
from Essentia's source and checked against the program:

- ``window="hann_symmetric"``: Essentia's Hann is 0.5 - 0.5·cos(2πn/(N-1)), not librosa's
  periodic one (the zero-phase rotation Windowing applies does not change a magnitude).
  Left periodic, the mels differ by 0.02 dB typically and up to 1.1 dB.
- ``mel_norm="unit_tri"``: the same slaney-warped triangles with librosa's area normalisation
  2/(f_high - f_low), but Essentia builds them in single precision (edges accumulated in
  float32), which leaves e.g. a weight of 8e-7 at the Nyquist bin of the top band that
  librosa's float64 filters do not have (0.02 dB at most, but avoidable);
  ``essentia_mel_filters`` reproduces them bit for bit.
- ``pad_mode="zero"``: FrameCutter's centred frames start (n_fft+1)//2 zeros before the signal
  and run until the first frame centred at or past the end (``FrontendConfig.n_frames``):
  ceil(n/256) + 1 frames for the Jamendo hop, where reflect centring gives n//256 + 1.
- ``db_scale=20``: lin2db is 10·log10(max(x, 1e-10)) (-100 dB below 1e-10) and scale=2
  doubles its output, so the published features are 20·log10(max(power, 1e-10)), floor -200.

Checked against Essentia 2.1-beta6 on the two real clips of
``shared/data/reference/essentia/jamendo_mel.npz`` (tests/models/test_essentia_frontend.py):
same frame count and alignment, same floor bins, and on the non-floor bins a largest absolute
difference of 0.00017 dB, 99th percentile 0.00003 dB (float32 STFT rounding); where the
``essentia`` wheel is installed, the filters are compared bit for bit and whole mels of other
configurations too.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from nnAudio.features import MelSpectrogram
from torch import nn

SCALINGS = ("log10_1p", "db", "power")
WINDOWS = ("hann", "hann_symmetric")
MEL_NORMS = ("slaney", "unit_tri", "none")
PAD_MODES = ("reflect", "zero")


@dataclass(frozen=True)
class FrontendConfig:
    """Mel spectrogram parameters; equal configs produce identical features."""

    sample_rate_hz: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 96
    f_min_hz: float = 0.0
    f_max_hz: float | None = None  # None: Nyquist
    power: float = 2.0
    window: str = "hann"  # periodic, as librosa/scipy; "hann_symmetric": Essentia's Hann
    mel_norm: str = "slaney"  # area-normalised triangles, as librosa; "unit_tri": Essentia's, float32
    center: bool = True  # frames centred on their hop
    pad_mode: str = "reflect"  # centring as librosa; "zero": Essentia's FrameGenerator (see n_frames)
    scaling: str = "log10_1p"  # log10(1 + log_gain * mel) as musicnn; "db": db_scale·log10
    log_gain: float = 10000.0
    db_scale: float = 10.0  # dB scaling: 10 for power dB; 20 is Essentia's lin2db(scale=2) on power
    db_floor: float = -200.0  # dB scaling: lowest output, mel clipped at 10^(db_floor / db_scale)

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"frontend sizes must be positive: {self}")
        if self.hop_length > self.n_fft:
            raise ValueError("hop_length larger than n_fft would skip samples")
        for name, allowed in (
            ("scaling", SCALINGS),
            ("window", WINDOWS),
            ("mel_norm", MEL_NORMS),
            ("pad_mode", PAD_MODES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if self.db_scale <= 0:
            raise ValueError(f"db_scale must be positive, got {self.db_scale}")
        nyquist = self.sample_rate_hz / 2
        f_max = nyquist if self.f_max_hz is None else self.f_max_hz
        if not 0 <= self.f_min_hz < f_max <= nyquist:
            raise ValueError(f"band limits must satisfy 0 <= f_min < f_max <= {nyquist:g} Hz")

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / self.hop_length

    @property
    def start_pad(self) -> int:
        """Samples put before the signal: frame k starts at sample k·hop - start_pad."""
        if not self.center:
            return 0
        # FrameCutter starts at -(frameSize+1)/2 "so that odd frameSize start before".
        return (self.n_fft + 1) // 2 if self.pad_mode == "zero" else self.n_fft // 2

    def n_frames(self, n_samples: int) -> int:
        """Frames a one-pass ``MelFrontend`` gives for ``n_samples`` samples."""
        n, hop = n_samples, self.hop_length
        if not self.center:
            return max(0, (n - self.n_fft) // hop + 1)
        if self.pad_mode == "reflect":
            return n // hop + 1
        if n <= 0:  # Essentia's FrameCutter yields nothing for an empty buffer
            return 0
        # FrameCutter stops after the first frame centred at or past the end, and never
        # yields a frame that starts past the end.  (Ceilings of non-negative numbers only: a
        # traced ONNX export turns // into a truncating division.)
        to_centre = n - self.n_fft // 2 + self.start_pad  # >= n
        last_centred = (to_centre + hop - 1) // hop
        starting_inside = (n + self.start_pad + hop - 1) // hop
        return min(last_centred + 1, starting_inside)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FrontendConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown frontend keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**data)


# The official MTG-Jamendo mel spectrograms (Essentia), as the dataset ships them.
ESSENTIA_JAMENDO = FrontendConfig(
    sample_rate_hz=12000,
    n_fft=512,
    hop_length=256,
    n_mels=96,
    f_max_hz=6000.0,
    window="hann_symmetric",
    mel_norm="unit_tri",
    pad_mode="zero",
    scaling="db",
    db_scale=20.0,
    db_floor=-200.0,
)


def essentia_mel_filters(
    sample_rate_hz: float, n_fft: int, n_mels: int, f_min_hz: float, f_max_hz: float
) -> np.ndarray:
    """(n_mels, n_fft//2 + 1) float32 weights of Essentia's MelBands(weighting="linear",
    normalize="unit_tri", warpingFormula="slaneyMel"), rounded as Essentia rounds them.

    Essentia computes in float32 (``Real``); log/exp are evaluated exactly and rounded.
    """
    f32 = np.float32
    slope = f32(3 / 200.0)  # mel per Hz below 1 kHz
    min_log_hz = f32(1000.0)
    min_log_mel = f32(min_log_hz * slope)
    log_step = f32(math.log(6.4) / 27.0)

    def hz_to_mel(hz: np.float32) -> np.float32:
        if hz < min_log_hz:
            return f32(hz * slope)
        return f32(min_log_mel + f32(f32(math.log(float(f32(hz / min_log_hz)))) / log_step))

    def mel_to_hz(mel: np.float32) -> np.float32:
        if mel < min_log_mel:
            return f32(mel / slope)
        return f32(min_log_hz * f32(math.exp(float(f32(log_step * f32(mel - min_log_mel))))))

    low, high = hz_to_mel(f32(f_min_hz)), hz_to_mel(f32(f_max_hz))
    step = f32(f32(high - low) / f32(n_mels + 1))
    edges, mel = [], low
    for _ in range(n_mels + 2):  # accumulated, not multiplied: the rounding is Essentia's
        edges.append(mel_to_hz(mel))
        mel = f32(mel + step)
    n_bins = n_fft // 2 + 1
    bin_hz = f32(sample_rate_hz / 2.0 / (n_bins - 1))
    weights = np.zeros((n_mels, n_bins), dtype=np.float32)
    for i in range(n_mels):
        lo, mid, hi = edges[i], edges[i + 1], edges[i + 2]
        rise, fall = f32(mid - lo), f32(hi - mid)
        area = f32(f32(rise + fall) / f32(2.0))  # unit_tri: the triangle's area in Hz, as librosa
        for j in range(math.ceil(lo / bin_hz), min(math.floor(hi / bin_hz), n_bins - 1) + 1):
            hz = f32(j * bin_hz)
            w = f32(f32(hz - lo) / rise) if hz < mid else f32(f32(hi - hz) / fall)
            weights[i, j] = f32(w / area)
    return weights


def _fourier_kernels(window: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """nnAudio's (freq_bins, 1, n_fft) sine and cosine STFT kernels for any window."""
    n_fft = window.size
    phase = 2 * np.pi * np.arange(n_fft // 2 + 1)[:, None] * np.arange(n_fft)[None] / n_fft
    wsin = torch.tensor((np.sin(phase) * window)[:, None, :], dtype=torch.float32)
    wcos = torch.tensor((np.cos(phase) * window)[:, None, :], dtype=torch.float32)
    return wsin, wcos


class MelFrontend(nn.Module):
    """(batch, samples) audio -> (batch, n_mels, frames) scaled mel, as the model expects."""

    def __init__(self, config: FrontendConfig):
        super().__init__()
        self.config = config
        self.mel = MelSpectrogram(
            sr=config.sample_rate_hz,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            n_mels=config.n_mels,
            fmin=config.f_min_hz,
            fmax=config.f_max_hz,
            power=config.power,
            norm=1 if config.mel_norm == "slaney" else None,
            htk=False,
            center=False,
            verbose=False,
        )
        # nnAudio knows only scipy's periodic windows and librosa's filters: the Essentia
        # variants replace its buffers, so the module (and its ONNX export) stays the same.
        if config.window == "hann_symmetric":
            n = np.arange(config.n_fft)
            wsin, wcos = _fourier_kernels(0.5 - 0.5 * np.cos(2 * np.pi * n / (config.n_fft - 1)))
            self.mel.stft.wsin.copy_(wsin)
            self.mel.stft.wcos.copy_(wcos)
        if config.mel_norm == "unit_tri":
            f_max = config.f_max_hz if config.f_max_hz is not None else config.sample_rate_hz / 2
            filters = essentia_mel_filters(
                config.sample_rate_hz, config.n_fft, config.n_mels, config.f_min_hz, f_max
            )
            self.mel.mel_basis.copy_(torch.from_numpy(filters))
        # nnAudio's window, for ``few_frames``: its cosine kernel's first row (cos 0 = 1); not
        # saved with the module (its STFT's buffers are).
        self.register_buffer("_window", self.mel.stft.wcos[0, 0].clone(), persistent=False)

    def frames(self, padded: torch.Tensor) -> torch.Tensor:
        """Already padded audio (batch, samples) -> scaled mel frames (batch, n_mels, frames)."""
        return self.scale(self.mel(padded))

    def few_frames(self, padded: torch.Tensor) -> torch.Tensor:
        """``frames`` of one already padded signal (samples,) -> (n_mels, frames), to float
        rounding, by an FFT of the frames cut out of the signal: a live hop's 1-62 new frames.

        nnAudio's STFT is two strided convolutions, ~0.3 ms each on this 2-core CPU however
        few frames they compute; its kernels as one matrix product over the frames cost 0.12-0.16
        ms for 16-62 frames, an FFT of the windowed frames 0.02-0.03 ms (the same sums: its
        real part is the cosine kernel's, its imaginary part minus the sine kernel's).
        """
        c = self.config
        rows = padded.unfold(0, c.n_fft, c.hop_length)  # (frames, n_fft), a view
        spectrum = torch.fft.rfft(rows * self._window)  # (frames, n_fft / 2 + 1)
        magnitude = torch.sqrt(spectrum.real.pow(2) + spectrum.imag.pow(2))  # as nnAudio's
        return self.scale(magnitude.pow(c.power) @ self.mel.mel_basis.T).T.contiguous()

    def scale(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.scaling == "log10_1p":
            return torch.log10(1.0 + c.log_gain * mel)
        if c.scaling == "db":
            return c.db_scale * torch.log10(torch.clamp(mel, min=10.0 ** (c.db_floor / c.db_scale)))
        return mel

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """One pass over whole signals (batch, samples), centred frames as ``pad_mode`` says."""
        c = self.config
        if c.center and c.pad_mode == "zero":
            n = audio.shape[-1]
            frames = c.n_frames(n)
            if frames == 0:
                return audio.new_zeros((audio.shape[0], c.n_mels, 0))
            end_pad = (frames - 1) * c.hop_length + c.n_fft - c.start_pad - n
            audio = nn.functional.pad(audio, (c.start_pad, end_pad))
        elif c.center:
            half = c.n_fft // 2
            mode = "reflect" if audio.shape[-1] > half else "constant"
            audio = nn.functional.pad(audio.unsqueeze(1), (half, half), mode=mode).squeeze(1)
        return self.frames(audio)
