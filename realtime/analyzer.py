"""The analysis path: samples in, one result per hop out (no threads, no sockets).

mono mix + sanitise -> streaming resample (soxr HQ, or the low-delay FIR of
``realtime.resample`` for live capture) -> streaming mel -> a window every hop,
each segment encoded once and its embedding cached -> pooling over the last K segments
-> heads.  ``listen`` drives it from the ring buffer; ``analyze`` drives it from a file
as fast as it can; both get identical windows for identical audio (and the same resampler).

Several models on one stream (``MultiAnalyzer``) share the work where they can: the audio is
sanitised once, resampled once per model sample rate and turned into mel frames once per
distinct frontend; each model then cuts its own windows from those frames.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import soxr
import torch

from models import SegmentModel, probabilities
from models.runners import Runner, TorchRunner
from models.windowing import hop_frames
from realtime.frontend import StreamingMel
from realtime.resample import LowDelayResampler
from realtime.smoothing import rms_dbfs

RESAMPLERS = ("hq", "low-delay")


@dataclass(frozen=True)
class Windowing:
    """How often to analyse and how much of the past the pooling sees."""

    hop_s: float = 1.0
    context_s: float = 6.0
    silence_dbfs: float = -60.0  # a hop whose level is below this is silence
    # How audio at another rate reaches the model's: "hq" (soxr HQ; holds back ~20 ms, released in
    # bursts) or "low-delay" (realtime.resample: a ~2.5 ms linear-phase FIR, for live capture).
    resampler: str = "hq"

    def __post_init__(self) -> None:
        if self.resampler not in RESAMPLERS:
            raise ValueError(f"--resampler must be one of {', '.join(RESAMPLERS)}, got {self.resampler!r}")
        if not (math.isfinite(self.hop_s) and self.hop_s > 0):
            raise ValueError(f"--hop must be a positive number of seconds, got {self.hop_s}")
        if not (math.isfinite(self.context_s) and self.context_s > 0):
            raise ValueError(f"--context must be a positive number of seconds, got {self.context_s}")


@dataclass(frozen=True)
class Member:
    """One model of the feed: the name it was asked for by, the model and what runs it."""

    name: str
    model: SegmentModel
    runner: Runner


@dataclass
class Window:
    """One analysed window: where it ends and what the heads say about it."""

    seq: int
    end_frame: int  # mel frame index one past the window's last frame
    t_stream: float  # seconds of audio since the stream began, at the window's last sample
    level_dbfs: float  # level of the last hop of audio
    silent: bool
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # head -> probabilities / [-1, 1]


def effective_windows(model: SegmentModel, windowing: Windowing) -> tuple[int, float, int, float]:
    """(hop in frames, hop in s, K segments pooled, context in s) that the options give for ``model``."""
    fe = model.frontend
    hop = hop_frames(windowing.hop_s, fe.frame_rate_hz)
    hop_s = hop / fe.frame_rate_hz
    # K segments ending one hop apart cover segment_s + (K - 1) hops of audio.
    k = max(1, round((windowing.context_s - model.segment_seconds) / hop_s) + 1)
    if model.max_context_segments:  # a model that pools fewer segments sees less context
        k = min(k, model.max_context_segments)
    return hop, hop_s, k, model.segment_seconds + (k - 1) * hop_s


class Analyzer:
    """Feed it audio frames at the source's rate; it returns the windows they complete."""

    def __init__(
        self,
        model: SegmentModel,
        input_rate_hz: int,
        windowing: Windowing | None = None,
        device: str | torch.device = "cpu",
        runner: Runner | None = None,
    ):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.runner = runner or TorchRunner(model, device)
        self.windowing = windowing or Windowing()
        fe = model.frontend
        self.input_rate_hz = int(input_rate_hz)
        self.rate_hz = fe.sample_rate_hz
        self.mel = StreamingMel(fe, self.device)
        self._resampler = None
        if self.input_rate_hz != self.rate_hz:
            self._resampler = (
                LowDelayResampler(self.input_rate_hz, self.rate_hz)
                if self.windowing.resampler == "low-delay"
                else soxr.ResampleStream(self.input_rate_hz, self.rate_hz, 1, dtype="float32", quality="HQ")
            )
        self.segment_frames = model.segment_frames
        self.hop_frames, self.hop_s, self.context_segments, self.context_s = effective_windows(
            model, self.windowing
        )
        self._mel_frames = torch.zeros((fe.n_mels, 0), device=self.device)
        self._mel_start = 0  # absolute index of the first column kept in _mel_frames
        self._next_end = self.segment_frames
        self._embeddings: deque[torch.Tensor] = deque(maxlen=self.context_segments)
        # Mean square of the (model-rate) audio per hop_length bin, for silence detection.
        self._bins: list[float] = []
        self._bin_start = 0
        self._partial = np.zeros(0, dtype=np.float32)
        self.seq = 0
        self.samples_in = 0
        self.sanitized_samples = 0
        self.clipped_samples = 0

    # -- audio in -----------------------------------------------------------------------

    def sanitize(self, frames: np.ndarray) -> np.ndarray:
        """(n, channels) -> mono float32 with NaN/Inf zeroed and clipping counted and clamped."""
        frames = np.asarray(frames, dtype=np.float32)
        mono = frames.mean(axis=1, dtype=np.float32) if frames.ndim == 2 else frames.astype(np.float32)
        bad = ~np.isfinite(mono)
        if bad.any():
            self.sanitized_samples += int(bad.sum())
            mono = np.where(bad, np.float32(0.0), mono)
        over = np.abs(mono) >= 1.0
        if over.any():
            self.clipped_samples += int(over.sum())
            mono = np.clip(mono, -1.0, 1.0)
        return mono

    def feed(self, frames: np.ndarray) -> list[Window]:
        """Frames (n, channels) or (n,) at ``input_rate_hz`` -> the windows they complete."""
        self.samples_in += len(frames)
        mono = self.sanitize(frames)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=False)
        return self._consume(mono, self.mel.push(mono))

    def finish(self) -> list[Window]:
        """End of stream: flush the resampler and the mel's end padding, return the last windows."""
        tail = np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(tail, last=True)
        windows = self._consume(tail, self.mel.push(tail)) if tail.size else []
        return windows + self._consume(np.zeros(0, np.float32), self.mel.flush())

    # -- windows out --------------------------------------------------------------------

    def _consume(self, mono: np.ndarray, new_frames: torch.Tensor) -> list[Window]:
        self._track_level(mono)
        if new_frames.shape[1]:
            self._mel_frames = torch.cat([self._mel_frames, new_frames], dim=1)
        available_end = self._mel_start + self._mel_frames.shape[1]
        ends = []
        while self._next_end <= available_end:
            ends.append(self._next_end)
            self._next_end += self.hop_frames
        windows = self._run(ends) if ends else []
        # Keep only what the next window needs.
        keep_from = self._next_end - self.segment_frames
        drop = keep_from - self._mel_start
        if drop > 0:
            self._mel_frames = self._mel_frames[:, drop:]
            self._mel_start = keep_from
        return windows

    def _run(self, ends: list[int]) -> list[Window]:
        patches = torch.stack(
            [
                self._mel_frames[:, e - self.segment_frames - self._mel_start : e - self._mel_start]
                for e in ends
            ]
        )  # (B, n_mels, segment_frames)
        embeddings = self.runner.encode(patches)  # (B, D)
        outputs = []
        for emb in embeddings:
            self._embeddings.append(emb)
            logits = self.runner.pool_predict(
                torch.stack(list(self._embeddings)).unsqueeze(0)
            )  # K <= context
            outputs.append(
                {
                    name: probabilities(spec, torch.from_numpy(logits[name][0])).numpy()
                    for name, spec in self.model.heads.items()
                }
            )
        fe = self.model.frontend
        windows = []
        for i, end in enumerate(ends):
            # The last frame is centred on sample (end - 1) * hop and reaches n_fft / 2 past it.
            last_sample = (end - 1) * fe.hop_length + (fe.n_fft // 2 if fe.center else fe.n_fft) - 1
            level = self._level(end)
            windows.append(
                Window(
                    seq=self.seq,
                    end_frame=end,
                    t_stream=(last_sample + 1) / fe.sample_rate_hz,
                    level_dbfs=level,
                    silent=level < self.windowing.silence_dbfs,
                    outputs=outputs[i],
                )
            )
            self.seq += 1
        return windows

    # -- level for silence detection ----------------------------------------------------

    def _track_level(self, mono: np.ndarray) -> None:
        hop = self.model.frontend.hop_length
        data = np.concatenate([self._partial, mono]) if self._partial.size else mono
        n_bins = data.size // hop
        if n_bins:
            squares = np.square(data[: n_bins * hop], dtype=np.float64).reshape(n_bins, hop)
            self._bins.extend(squares.mean(axis=1).tolist())
        self._partial = data[n_bins * hop :].copy()
        excess = len(self._bins) - 4 * (self.segment_frames + self.hop_frames)
        if excess > 0:
            del self._bins[:excess]
            self._bin_start += excess

    def _level(self, end_frame: int) -> float:
        """dBFS of the audio in the hop before the window's last frame centre."""
        stop = end_frame - 1 - self._bin_start
        start = max(0, stop - self.hop_frames)
        values = self._bins[start:stop]
        return rms_dbfs(float(np.mean(values))) if values else rms_dbfs(0.0)


class MultiAnalyzer:
    """Several models on one stream; the first (the primary) sets the feed's hop and timing.

    ``feed``/``finish`` return ``(member index, window)`` pairs in stream order; at equal
    stream times the other members come before the primary, so a message built at the
    primary's window already holds theirs.
    """

    def __init__(
        self,
        members: list[Member],
        input_rate_hz: int,
        windowing: Windowing | None = None,
        device: str | torch.device = "cpu",
    ):
        if not members:
            raise ValueError("MultiAnalyzer needs at least one model")
        self.members = members
        self.analyzers = [Analyzer(m.model, input_rate_hz, windowing, device, m.runner) for m in members]
        # Who does the shared work: the first analyzer at a model rate resamples for all at that
        # rate; the first with a given frontend computes the mel frames for all that share it.
        rates = [a.rate_hz for a in self.analyzers]
        frontends = [a.model.frontend for a in self.analyzers]
        self._rate_lead = [rates.index(r) for r in rates]
        self._mel_lead = [
            next(j for j in range(i + 1) if frontends[j] == frontends[i]) for i in range(len(rates))
        ]
        self.primary = self.analyzers[0]

    @property
    def mel_streams(self) -> int:
        """How many streaming mels run (one per distinct frontend)."""
        return len(set(self._mel_lead))

    def __getattr__(self, name: str):
        # hop_s, context_s, samples_in, sanitized/clipped counts: the primary's (it sanitises for all).
        if name in ("hop_s", "context_s", "samples_in", "sanitized_samples", "clipped_samples", "rate_hz"):
            return getattr(self.primary, name)
        raise AttributeError(name)

    def _run_all(self, mono_at: dict[int, np.ndarray], frames_at: dict[int, torch.Tensor]):
        out = []
        for i, a in enumerate(self.analyzers):
            windows = a._consume(mono_at[self._rate_lead[i]], frames_at[self._mel_lead[i]])
            out.extend((i, w) for w in windows)
        out.sort(key=lambda iw: (iw[1].t_stream, iw[0] == 0))
        return out

    def feed(self, frames: np.ndarray) -> list[tuple[int, Window]]:
        mono = self.primary.sanitize(frames)
        for a in self.analyzers:
            a.samples_in += len(frames)
        mono_at = {}
        for i in sorted(set(self._rate_lead)):
            resampler = self.analyzers[i]._resampler
            mono_at[i] = mono if resampler is None else resampler.resample_chunk(mono, last=False)
        frames_at = {
            i: self.analyzers[i].mel.push(mono_at[self._rate_lead[i]]) for i in sorted(set(self._mel_lead))
        }
        return self._run_all(mono_at, frames_at)

    def finish(self) -> list[tuple[int, Window]]:
        """End of stream: every model's last windows (resampler tails, then the mels' end padding)."""
        empty = np.zeros(0, dtype=np.float32)
        mono_at = {}
        for i in sorted(set(self._rate_lead)):
            resampler = self.analyzers[i]._resampler
            mono_at[i] = empty if resampler is None else resampler.resample_chunk(empty, last=True)
        out = []
        if any(m.size for m in mono_at.values()):
            frames_at = {
                i: self.analyzers[i].mel.push(mono_at[self._rate_lead[i]])
                for i in sorted(set(self._mel_lead))
            }
            out = self._run_all(mono_at, frames_at)
        frames_at = {i: self.analyzers[i].mel.flush() for i in sorted(set(self._mel_lead))}
        return out + self._run_all(dict.fromkeys(mono_at, empty), frames_at)


class TagMerger:
    """Flattens a model's heads into the feed's ``tags`` / ``valence`` / ``arousal``.

    Tag heads keep their labels (prefixed ``head:`` only where two heads share a label);
    class heads (softmax, e.g. genre) are listed as ``head:label`` so they never clash.
    """

    def __init__(self, heads: dict):
        self.tag_heads = [name for name, spec in heads.items() if spec.kind in ("tags", "classes")]
        self.va_head = next((name for name, spec in heads.items() if spec.kind == "valence_arousal"), None)
        seen: dict[str, int] = {}
        for name in self.tag_heads:
            if heads[name].kind == "tags":
                for label in heads[name].labels:
                    seen[label] = seen.get(label, 0) + 1
        self.names = [
            label if heads[name].kind == "tags" and seen[label] == 1 else f"{name}:{label}"
            for name in self.tag_heads
            for label in heads[name].labels
        ]

    def tags(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        if not self.tag_heads:
            return np.zeros(0)
        return np.concatenate([outputs[name] for name in self.tag_heads])
