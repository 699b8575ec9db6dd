"""Streaming mel: push audio blocks, get exactly the frames a one-pass ``MelFrontend`` gives.

``models.frontend.MelFrontend`` is the one-pass computation shared with ``train`` and the
ONNX export; it leaves the centring pad to its caller, so this module can emit each frame as
soon as the samples that complete it arrive.
"""

from __future__ import annotations

import numpy as np
import torch

from models.frontend import FrontendConfig, MelFrontend


class StreamingMel:
    """Push audio blocks, get the mel frames they complete; equal to ``MelFrontend`` in one pass.

    With ``center`` the first frame needs the reflection of the first n_fft/2 samples, so
    output starts once n_fft/2 + 1 samples arrived; ``flush`` adds the end reflection and
    returns the last frames, as a one-pass computation over the whole signal would.  With
    ``pad_mode="zero"`` (Essentia's centring) the start pad is known at once, and ``flush``
    appends the zeros that give ``config.n_frames(samples_in)`` frames in all.
    """

    def __init__(self, config: FrontendConfig, device: torch.device | str = "cpu"):
        self.config = config
        self.device = torch.device(device)
        self.module = MelFrontend(config).to(self.device).eval()
        self._half = config.n_fft // 2
        self._reflect = config.center and config.pad_mode == "reflect"
        # padded signal from the next frame's start; zero centring's pad is there from the start
        self._buffer = np.zeros(config.start_pad if not self._reflect else 0, dtype=np.float32)
        self._head = np.zeros(0, dtype=np.float32)  # first samples, until the start pad is known
        self._tail = np.zeros(0, dtype=np.float32)  # last n_fft/2 + 1 samples, for the end pad
        self._started = not self._reflect
        self.frames_out = 0
        self.samples_in = 0
        self._none = torch.zeros((config.n_mels, 0), device=self.device)  # a push that completes none

    def push(self, samples: np.ndarray, min_frames: int = 1) -> torch.Tensor:
        """Mono float32 samples -> (n_mels, new_frames) on the frontend's device.

        Frames are computed once at least ``min_frames`` of them are complete (the rest stay
        buffered until then): a live source's 10 ms blocks complete a frame or none, and each
        call into the mel has a fixed cost whatever it computes (~0.8 ms for 3 frames in a
        thread that slept, 0.2 ms back to back), so the pipeline asks for a batch
        (``MEL_BATCH_FRAMES``, or what its next window still needs).
        """
        samples = np.asarray(samples, dtype=np.float32)
        self.samples_in += samples.size
        if self._reflect:
            self._tail = np.concatenate([self._tail, samples])[-(self._half + 1) :]
        if not self._started:
            self._head = np.concatenate([self._head, samples])
            if self._head.size <= self._half:
                return self._empty()
            start_pad = self._head[1 : self._half + 1][::-1]
            samples, self._head, self._started = np.concatenate([start_pad, self._head]), None, True
        self._buffer = np.concatenate([self._buffer, samples])
        if self.pending_frames < max(1, min_frames):
            return self._empty()
        return self._emit()

    def samples_for(self, frames: int) -> int:
        """How many more samples complete ``frames`` frames not yet emitted."""
        if frames <= 0:
            return 0
        needed = self.config.n_fft + (frames - 1) * self.config.hop_length
        if not self._started:  # the reflected start pad comes from the first n_fft/2 + 1 samples
            return max(needed - self._half, self._half + 1) - self._head.size
        return max(0, needed - self._buffer.size)

    @property
    def pending_frames(self) -> int:
        """Frames complete in the buffer, not yet emitted."""
        n_fft, hop = self.config.n_fft, self.config.hop_length
        return 0 if self._buffer.size < n_fft else (self._buffer.size - n_fft) // hop + 1

    def flush(self) -> torch.Tensor:
        """The frames that need the end of the signal (its end pad); call once at the end."""
        if not self.config.center:
            return self._empty()
        if not self._reflect:
            missing = self.config.n_frames(self.samples_in) - self.frames_out
            if missing <= 0:
                return self._empty()
            needed = (missing - 1) * self.config.hop_length + self.config.n_fft - self._buffer.size
            self._buffer = np.concatenate([self._buffer, np.zeros(max(needed, 0), np.float32)])
            return self._emit()
        if not self._started:  # shorter than n_fft/2 + 1 samples: zero padding, as MelFrontend
            self._buffer = np.concatenate([np.zeros(self._half, np.float32), self._head])
            self._started, self._head = True, None
            end_pad = np.zeros(self._half, np.float32)
        else:
            end_pad = self._tail[-self._half - 1 : -1][::-1]
        self._buffer = np.concatenate([self._buffer, end_pad])
        return self._emit()

    def _emit(self) -> torch.Tensor:
        n_fft, hop = self.config.n_fft, self.config.hop_length
        n_frames = self.pending_frames
        if not n_frames:
            return self._empty()
        used = (n_frames - 1) * hop + n_fft
        chunk = torch.from_numpy(self._buffer[:used].copy()).to(self.device)
        with torch.inference_mode():
            frames = self.module.few_frames(chunk)  # (n_mels, n_frames)
        self._buffer = self._buffer[n_frames * hop :]
        self.frames_out += n_frames
        return frames

    def _empty(self) -> torch.Tensor:
        return self._none
