"""The analysis path: samples in, one result per hop out (no threads, no sockets).

``Pipeline``: mono mix + sanitise (``Sanitizer``, once) -> streaming resample, once per model
sample rate (soxr HQ, or the low-delay FIR of ``realtime.resample`` for live capture) ->
streaming mel and hop levels, once per distinct frontend (``Front``) -> per model
(``Consumer``): a window every hop, each segment encoded once and its embedding cached,
pooling over the last K segments, heads, probabilities.  The engine drives it from the ring
buffer, for ``listen`` and ``analyze`` alike; ``Analyzer`` is the one-model case for the tools
and tests that want windows without an engine.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import soxr
import torch

from models import SegmentModel, probabilities
from models.runners import Runner, TorchRunner
from models.vocab import vocabulary_of
from models.windowing import hop_frames
from realtime.frontend import StreamingMel
from realtime.options import RESAMPLERS
from realtime.resample import LowDelayResampler
from realtime.smoothing import rms_dbfs


@dataclass(frozen=True)
class Windowing:
    """How often to analyse and how much of the past the pooling sees."""

    hop_s: float = 1.0
    context_s: float = 6.0
    silence_dbfs: float = -60.0  # a hop whose level is below this is silence
    # How audio at another rate reaches the model's: "hq" (soxr HQ; holds back ~20 ms, released in
    # bursts) or "low-delay" (realtime.resample: a ~2.6 ms linear-phase FIR, for live capture).
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


class Sanitizer:
    """(n, channels) -> mono float32, NaN/Inf zeroed and counted, |x| >= 1 counted and clamped."""

    def __init__(self):
        self.samples_in = 0
        self.sanitized_samples = 0
        self.clipped_samples = 0

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = np.asarray(frames, dtype=np.float32)
        self.samples_in += len(frames)
        if frames.ndim == 2 and frames.shape[1] > 1:
            mono = frames.mean(axis=1, dtype=np.float32)
        else:  # one channel: no mean to take (numpy's costs more than the rest of a 10 ms block)
            mono = frames.reshape(-1)
        # One pass each for the common case (finite, within [-1, 1)); the counts only when not.
        if not np.isfinite(mono.sum(dtype=np.float64)):
            bad = ~np.isfinite(mono)
            self.sanitized_samples += int(bad.sum())
            mono = np.where(bad, np.float32(0.0), mono)
        if mono.size and (mono.max() >= 1.0 or mono.min() <= -1.0):
            self.clipped_samples += int((np.abs(mono) >= 1.0).sum())
            mono = np.clip(mono, -1.0, 1.0)
        return mono


def make_resampler(input_rate_hz: int, rate_hz: int, kind: str):
    """A streaming resampler (``resample_chunk(x, last)``), or None when the rates agree."""
    if input_rate_hz == rate_hz:
        return None
    if kind == "low-delay":
        return LowDelayResampler(input_rate_hz, rate_hz)
    return soxr.ResampleStream(input_rate_hz, rate_hz, 1, dtype="float32", quality="HQ")


class Front:
    """One frontend's share of the stream: audio at its rate in, mel frames and hop levels out.

    Models whose frontends agree share one front (``default`` and ``musicnn-mtt``): the mel
    frames are computed once for all of them.  ``keep_bins`` is how many levels the slowest of
    its consumers looks back on.
    """

    def __init__(self, config, device: torch.device, keep_bins: int):
        self.config = config
        self.mel = StreamingMel(config, device)
        self.keep_bins = keep_bins
        # Mean square of the audio per hop_length bin, for silence: bins[i] is bin bin_start + i.
        self.bins: list[float] = []
        self.bin_start = 0
        self._partial = np.zeros(0, dtype=np.float32)
        self._unmeasured: list[np.ndarray] = []  # audio pushed since the levels were last tracked

    def push(self, mono: np.ndarray, min_frames: int = 1) -> torch.Tensor:
        """Audio at the frontend's rate -> the (n_mels, new) frames it completes, once at least
        ``min_frames`` are complete (until then none: see ``StreamingMel.push``)."""
        self._unmeasured.append(np.array(mono, dtype=np.float32))  # a copy: the caller may reuse its buffer
        frames = self.mel.push(mono, min_frames)
        if frames.shape[1]:
            self._measure()  # the levels of every sample up to the new frames' centres
        return frames

    def flush(self) -> torch.Tensor:
        self._measure()
        return self.mel.flush()

    def _measure(self) -> None:
        if self._unmeasured:
            self._track_level(np.concatenate(self._unmeasured))
            self._unmeasured.clear()

    def _track_level(self, mono: np.ndarray) -> None:
        hop = self.config.hop_length
        data = np.concatenate([self._partial, mono]) if self._partial.size else mono
        n_bins = data.size // hop
        if n_bins:
            squares = np.square(data[: n_bins * hop], dtype=np.float64).reshape(n_bins, hop)
            self.bins.extend(squares.mean(axis=1).tolist())
        self._partial = data[n_bins * hop :].copy()
        excess = len(self.bins) - self.keep_bins
        if excess > 0:
            del self.bins[:excess]
            self.bin_start += excess

    def level_dbfs(self, end_frame: int, hop_frames: int) -> float:
        """dBFS of the audio in the hop before the window's last frame centre."""
        stop = end_frame - 1 - self.bin_start
        start = max(0, stop - hop_frames)
        values = self.bins[start:stop]
        # (A hop's ~16 floats: numpy's mean of a list cost ~0.15 ms of a live hop, this ~µs.)
        return rms_dbfs(math.fsum(values) / len(values)) if values else rms_dbfs(0.0)


class Consumer:
    """One model's windows: cut from its front's frames every hop, each segment encoded once
    (the embeddings of the last K kept), pooled, through the heads, as probabilities."""

    def __init__(self, member: Member, front: Front, windowing: Windowing, spent_ms: dict[str, float]):
        self.member = member
        self.model = member.model
        self.runner = member.runner
        self.front = front
        self.windowing = windowing
        self.segment_frames = self.model.segment_frames
        self.hop_frames, self.hop_s, self.context_segments, self.context_s = effective_windows(
            self.model, windowing
        )
        self._frames = torch.zeros((self.model.frontend.n_mels, 0), device=front.mel.device)
        self._start = 0  # absolute index of the first frame kept in _frames
        self._next_end = self.segment_frames
        self._embeddings: deque[torch.Tensor] = deque(maxlen=self.context_segments)
        # Windows overlap: a streaming encoder shares their common work (None: each is encoded whole).
        self._stream = self.runner.streaming_encoder()
        self._spent_ms = spent_ms  # the pipeline's: encoder and pooling + heads add to it
        self.seq = 0

    @property
    def streaming(self) -> bool:
        """Whether its encoder streams (shares work between windows and prepares the next ahead)."""
        return self._stream is not None

    @property
    def next_end(self) -> int:
        """Frame index one past the next window's last frame."""
        return self._next_end

    @property
    def keep_bins(self) -> int:
        return 4 * (self.segment_frames + self.hop_frames)

    def take(self, new_frames: torch.Tensor) -> list[Window]:
        """The front's new frames -> the windows they complete."""
        if new_frames.shape[1]:
            self._frames = torch.cat([self._frames, new_frames], dim=1)
        available_end = self._start + self._frames.shape[1]
        ends = []
        while self._next_end <= available_end:
            ends.append(self._next_end)
            self._next_end += self.hop_frames
        if ends:
            windows = self._run(ends)
        else:
            windows = []
            if (
                new_frames.shape[1]
                and self.streaming
                and self._next_end - available_end <= PREPARE_MISSING_MAX
            ):
                # The next window is nearly complete: do what of it the frames allow now (a live
                # loop's early take), so that its lag holds only the rest.
                t0 = time.perf_counter()
                with torch.inference_mode():
                    self._stream.prepare(self._frames, self._start, self._next_end)
                self._spent_ms["encoder"] += (time.perf_counter() - t0) * 1000.0
        # Keep only what the next window needs.  With a hop longer than a segment the next
        # window may start past the frames received so far: drop those, and the rest as it comes.
        keep_from = min(self._next_end - self.segment_frames, available_end)
        drop = keep_from - self._start
        if drop > 0:
            self._frames = self._frames[:, drop:]
            self._start = keep_from
        return windows

    def _run(self, ends: list[int]) -> list[Window]:
        t0 = time.perf_counter()
        if self._stream is not None:
            with torch.inference_mode():
                embeddings = self._stream.encode(self._frames, self._start, ends)  # (B, D)
        else:
            patches = torch.stack(
                [self._frames[:, e - self.segment_frames - self._start : e - self._start] for e in ends]
            )  # (B, n_mels, segment_frames)
            embeddings = self.runner.encode(patches)  # (B, D)
        t1 = time.perf_counter()
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
        t2 = time.perf_counter()
        self._spent_ms["encoder"] += (t1 - t0) * 1000.0
        self._spent_ms["pool_heads"] += (t2 - t1) * 1000.0
        fe = self.model.frontend
        windows = []
        for i, end in enumerate(ends):
            # The last frame is centred on sample (end - 1) * hop and reaches n_fft / 2 past it.
            last_sample = (end - 1) * fe.hop_length + (fe.n_fft // 2 if fe.center else fe.n_fft) - 1
            level = self.front.level_dbfs(end, self.hop_frames)
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


STAGES = ("resample", "mel", "encoder", "pool_heads")  # what the pipeline times (spent_ms)
# The mel runs once this many frames, or all the next window still needs, are complete: a call
# costs ~1 ms whatever it computes, and a live source's 10 ms blocks complete a frame or none.
MEL_BATCH_FRAMES = 8

# The encoder prepares the next window (``StreamingEncoder.prepare``) only once at most this many of
# its frames are missing (the early take leaves ~3; a resampler's delay a few more): prepared at
# every quarter-second read of a 1 s hop instead, each call with its own reach and fixed cost,
# the hop cost ~2.5x the CPU of one call.
PREPARE_MISSING_MAX = 8

# A live source's audio is taken twice per window: this long before the window's audio is all
# in (the resampling and mel of what came so far, and the encoder's work those frames allow,
# ``StreamingEncoder.prepare``: most of the window's, off the lag's path) and when it is
# (``Engine.run``'s reads; the mel's batches leave the early take's frames to it).
EARLY_TAKE_S = 0.04


class Pipeline:
    """Audio frames in, every model's windows out: one sanitiser, one resampler per model sample
    rate, one front per distinct frontend, one consumer per model.

    The first member (the primary) sets the feed's hop.  ``feed``/``finish`` return ``(member
    index, window)`` pairs in stream order; at equal stream times the other members come before
    the primary, so a message built at the primary's window already holds theirs.  A single
    model is the one-member case.  ``spent_ms`` adds up the milliseconds each stage took.
    """

    def __init__(
        self,
        members: list[Member],
        input_rate_hz: int,
        windowing: Windowing | None = None,
        device: str | torch.device = "cpu",
    ):
        if not members:
            raise ValueError("a pipeline needs at least one model")
        windowing = windowing or Windowing()
        device = torch.device(device)
        self.input_rate_hz = int(input_rate_hz)
        self.windowing = windowing
        self.sanitizer = Sanitizer()
        self.spent_ms = dict.fromkeys(STAGES, 0.0)
        for m in members:
            m.model.eval().to(device)
        rates = list(dict.fromkeys(m.model.frontend.sample_rate_hz for m in members))
        self.resamplers = {r: make_resampler(self.input_rate_hz, r, windowing.resampler) for r in rates}
        self.fronts: dict[object, Front] = {}
        for m in members:
            self.fronts.setdefault(m.model.frontend, Front(m.model.frontend, device, 0))
        self.consumers = [
            Consumer(m, self.fronts[m.model.frontend], windowing, self.spent_ms) for m in members
        ]
        for c in self.consumers:
            c.front.keep_bins = max(c.front.keep_bins, c.keep_bins)
        self.primary = self.consumers[0]

    @property
    def mel_streams(self) -> int:
        """How many streaming mels run (one per distinct frontend)."""
        return len(self.fronts)

    @property
    def hop_s(self) -> float:
        return self.primary.hop_s

    @property
    def context_s(self) -> float:
        return self.primary.context_s

    def _push(self, by_rate: dict[int, np.ndarray], flush: bool = False) -> list[tuple[int, Window]]:
        t0 = time.perf_counter()
        frames = {
            key: front.flush()
            if flush
            else front.push(by_rate[front.config.sample_rate_hz], self._batch(front))
            for key, front in self.fronts.items()
        }
        self.spent_ms["mel"] += (time.perf_counter() - t0) * 1000.0
        out = []
        for i, consumer in enumerate(self.consumers):
            out.extend((i, w) for w in consumer.take(frames[consumer.model.frontend]))
        out.sort(key=lambda iw: (iw[1].t_stream, iw[0] == 0))
        return out

    def _batch(self, front: Front) -> int:
        """Frames the mel waits for before it runs: ``MEL_BATCH_FRAMES``, or what the next window
        still needs; and never so many that the early take's read (``EARLY_TAKE_S`` before the
        window's end) leaves its frames uncomputed: at a 1 s hop that read brought 7 of a batch
        of 8, so the encoder prepared nothing then and ~10 frames were left for after the end."""
        wanted = self._frames_wanted(front)
        batch = min(wanted, MEL_BATCH_FRAMES)
        if not any(c.front is front and c.streaming for c in self.consumers):
            return batch  # nothing is prepared ahead from this front's frames
        # What the early take leaves missing (with what the resampler holds back), and one more
        # for a frame's edge.
        rate_hz, hop = front.config.sample_rate_hz, front.config.hop_length
        left = math.ceil((EARLY_TAKE_S + self._held_s(rate_hz)) * rate_hz / hop) + 1
        return min(batch, wanted - left) if wanted > left else batch

    def _frames_wanted(self, front: Front) -> int:
        """Frames its earliest next window still needs: the front computes them at once."""
        return min(c.next_end for c in self.consumers if c.front is front) - front.mel.frames_out

    def samples_wanted(self) -> int:
        """Input frames that will arrive before the next window of any model completes, at least.

        The engine sleeps until they are in (``RingBuffer.wait``).  Exact without a resampler and
        through the low-delay one (``LowDelayResampler.inputs_for``: a live source's, whose
        group delay of ~2.6 ms this counts; estimated from it, a 48 kHz stream woke a block early
        in every other window and read once more).  A lower bound through soxr HQ, which holds up
        to ~25 ms back in bursts: the engine may wake that much early and wait for the rest.
        """
        wanted = None
        for front in self.fronts.values():
            rate_hz = front.config.sample_rate_hz
            samples = front.mel.samples_for(self._frames_wanted(front))
            resampler = self.resamplers[rate_hz]
            if isinstance(resampler, LowDelayResampler):
                samples = resampler.inputs_for(samples)
            else:
                samples = samples * self.input_rate_hz // rate_hz
                samples -= math.ceil(self._held_s(rate_hz) * self.input_rate_hz)
            wanted = samples if wanted is None else min(wanted, samples)
        return max(1, wanted or 0)

    def _held_s(self, rate_hz: int) -> float:
        """Seconds of audio the resampler to ``rate_hz`` may hold back (none without one)."""
        resampler = self.resamplers[rate_hz]
        if resampler is None:
            return 0.0
        return 2 * resampler.delay_s if isinstance(resampler, LowDelayResampler) else 0.05

    def _resample(self, mono: np.ndarray, last: bool) -> dict[int, np.ndarray]:
        t0 = time.perf_counter()
        by_rate = {
            rate: mono if resampler is None else resampler.resample_chunk(mono, last=last)
            for rate, resampler in self.resamplers.items()
        }
        self.spent_ms["resample"] += (time.perf_counter() - t0) * 1000.0
        return by_rate

    def feed(self, frames: np.ndarray) -> list[tuple[int, Window]]:
        """Frames (n, channels) or (n,) at ``input_rate_hz`` -> the windows they complete."""
        return self._push(self._resample(self.sanitizer(frames), last=False))

    def finish(self) -> list[tuple[int, Window]]:
        """End of stream: the resamplers' tails, then the mels' end padding; every model's last windows."""
        empty = np.zeros(0, dtype=np.float32)
        tails = self._resample(empty, last=True)
        out = self._push(tails) if any(t.size for t in tails.values()) else []
        return out + self._push({rate: empty for rate in tails}, flush=True)


class Analyzer:
    """One model on one stream: the one-member ``Pipeline``, its windows without member indices."""

    def __init__(
        self,
        model: SegmentModel,
        input_rate_hz: int,
        windowing: Windowing | None = None,
        device: str | torch.device = "cpu",
        runner: Runner | None = None,
    ):
        member = Member(
            model.registry_name or type(model).__name__, model, runner or TorchRunner(model, device)
        )
        self.pipeline = Pipeline([member], input_rate_hz, windowing, device)
        self.model = model
        self.hop_s = self.pipeline.hop_s
        self.context_s = self.pipeline.context_s
        self.hop_frames = self.pipeline.primary.hop_frames
        self.context_segments = self.pipeline.primary.context_segments

    @property
    def samples_in(self) -> int:
        return self.pipeline.sanitizer.samples_in

    @property
    def sanitized_samples(self) -> int:
        return self.pipeline.sanitizer.sanitized_samples

    @property
    def clipped_samples(self) -> int:
        return self.pipeline.sanitizer.clipped_samples

    def feed(self, frames: np.ndarray) -> list[Window]:
        return [w for _, w in self.pipeline.feed(frames)]

    def finish(self) -> list[Window]:
        return [w for _, w in self.pipeline.finish()]


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
        # The feed vocabulary (moods, emotions, descriptors) of each name, in the same order.
        self.vocabularies = [
            vocabulary_of(name, heads[name].kind, heads[name].labels)
            for name in self.tag_heads
            for _ in heads[name].labels
        ]

    def tags(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        if not self.tag_heads:
            return np.zeros(0)
        return np.concatenate([outputs[name] for name in self.tag_heads])
