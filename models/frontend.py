"""How audio becomes the mel patches a model reads: the parameters, and the one-pass module.

``MelFrontend`` is the single implementation shared by ``train``, the ONNX export (with
``--with-frontend``) and the engine, whose ``realtime.frontend.StreamingMel`` feeds it only the
samples that complete new frames.  It wraps nnAudio's ``MelSpectrogram`` (a convolution STFT,
so it runs on the GPU when moved there) with ``center=False`` and pads itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from nnAudio.features import MelSpectrogram
from torch import nn

SCALINGS = ("log10_1p", "db", "power")


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
    mel_norm: str = "slaney"  # area-normalised triangles, as librosa's default
    center: bool = True  # frames centred on their hop, reflect-padded at the start
    scaling: str = "log10_1p"  # log10(1 + log_gain * mel) as musicnn; "db": 10·log10
    log_gain: float = 10000.0
    db_floor: float = -200.0  # dB scaling: floor, as Essentia's lin2db clips at 1e-20 power

    def __post_init__(self) -> None:
        if self.sample_rate_hz <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError(f"frontend sizes must be positive: {self}")
        if self.hop_length > self.n_fft:
            raise ValueError("hop_length larger than n_fft would skip samples")
        if self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}; allowed: {', '.join(SCALINGS)}")
        if self.mel_norm not in ("slaney", "none"):
            raise ValueError(f"unknown mel_norm {self.mel_norm!r}; allowed: slaney, none")
        nyquist = self.sample_rate_hz / 2
        f_max = nyquist if self.f_max_hz is None else self.f_max_hz
        if not 0 <= self.f_min_hz < f_max <= nyquist:
            raise ValueError(f"band limits must satisfy 0 <= f_min < f_max <= {nyquist:g} Hz")

    @property
    def frame_rate_hz(self) -> float:
        return self.sample_rate_hz / self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FrontendConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown frontend keys {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**data)


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

    def frames(self, padded: torch.Tensor) -> torch.Tensor:
        """Already padded audio (batch, samples) -> scaled mel frames (batch, n_mels, frames)."""
        return self.scale(self.mel(padded))

    def scale(self, mel: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.scaling == "log10_1p":
            return torch.log10(1.0 + c.log_gain * mel)
        if c.scaling == "db":
            return 10.0 * torch.log10(torch.clamp(mel, min=10.0 ** (c.db_floor / 10.0)))
        return mel

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """One pass over whole signals (batch, samples), centred frames as librosa computes them."""
        if self.config.center:
            half = self.config.n_fft // 2
            mode = "reflect" if audio.shape[-1] > half else "constant"
            audio = nn.functional.pad(audio.unsqueeze(1), (half, half), mode=mode).squeeze(1)
        return self.frames(audio)
