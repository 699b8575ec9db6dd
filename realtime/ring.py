"""A preallocated single-producer/single-consumer ring of audio frames with an absolute clock.

The producer (a PortAudio callback or a source thread) only copies into preallocated memory
and advances ``write_index``; the consumer (the engine thread) copies out and advances
``read_index``.  Each index is written by one side only, and an int assignment is atomic
under the GIL, so no lock guards the data.  (A write also sets a ``threading.Event`` to wake a
waiting consumer at once, when the unread frames reach what the consumer waits for: that takes
the event's own lock for a moment, never a lock the consumer holds while it works.)  When the consumer falls behind,
the producer drops the *new* block (it never touches unread data) and counts it, so the
engine can report ``dropped_samples``; the absolute index of every kept sample stays exact.
"""

from __future__ import annotations

import threading
import time

import numpy as np


class RingBuffer:
    """Frames of ``channels`` float32 samples; indices count frames since the stream began."""

    def __init__(self, capacity_frames: int, channels: int = 1):
        if capacity_frames <= 0 or channels <= 0:
            raise ValueError("ring capacity and channel count must be positive")
        self.capacity = capacity_frames
        self.channels = channels
        self._data = np.zeros((capacity_frames, channels), dtype=np.float32)
        self.write_index = 0  # producer only
        self.read_index = 0  # consumer only
        self.dropped_frames = 0  # producer only
        self.overflows = 0  # producer only: blocks the device itself flagged as overflowed
        # Capture time (time.time()) of the last frame written, and that frame's index + 1.
        self.last_capture = (0, 0.0)  # producer only, replaced as one tuple
        self.last_write_time = 0.0  # producer only: when the last block went in (the engine's pickup)
        self.last_write_monotonic = 0.0  # producer only: the same on the monotonic clock (0: none yet)
        self._ready = threading.Event()  # set by a write that brings the unread frames to _wanted
        self._wanted = 1  # consumer only: how many unread frames are worth waking it for

    def free(self) -> int:
        return self.capacity - (self.write_index - self.read_index)

    def available(self) -> int:
        return self.write_index - self.read_index

    def write(self, block: np.ndarray, capture_time: float | None = None, overflow: bool = False) -> bool:
        """Copy ``block`` (frames, channels) in; False (and counted) if it did not fit.

        ``capture_time`` is the wall-clock time of the block's last frame (``time.time()``
        when not given).  Safe to call from a real-time callback: no allocation beyond views.
        """
        if overflow:
            self.overflows += 1
        n = block.shape[0]
        if n > self.free():
            self.dropped_frames += n
            return False
        start = self.write_index % self.capacity
        first = min(n, self.capacity - start)
        self._data[start : start + first] = block[:first]
        if first < n:
            self._data[: n - first] = block[first:]
        self.write_index += n
        now = time.time()
        self.last_capture = (self.write_index, now if capture_time is None else capture_time)
        self.last_write_time = now
        self.last_write_monotonic = time.monotonic()
        if self.write_index - self.read_index >= self._wanted:
            self._ready.set()
        return True

    def wait(self, timeout_s: float, frames: int = 1) -> bool:
        """Consumer: block until at least ``frames`` unread frames are available (True) or
        ``timeout_s`` passes (False).

        The writes in between do not wake it: a live source writes every 10 ms or so, and a
        thread woken from sleep runs its first ~0.1 ms of Python several times slower (cold
        caches), so an engine that only needs the audio of its next window sleeps until it is in.
        """
        self._wanted = max(1, int(frames))  # before the clear: a write from here on sees it
        self._ready.clear()
        if self.available() >= self._wanted:  # written between the last read and the clear
            return True
        return self._ready.wait(timeout_s)

    def read(self, max_frames: int | None = None) -> tuple[np.ndarray, int]:
        """Copy out up to ``max_frames`` unread frames -> (frames (n, channels), index of the first)."""
        n = self.available()
        if max_frames is not None:
            n = min(n, max_frames)
        start_index = self.read_index
        start = start_index % self.capacity
        first = min(n, self.capacity - start)
        out = np.empty((n, self.channels), dtype=np.float32)
        out[:first] = self._data[start : start + first]
        if first < n:
            out[first:] = self._data[: n - first]
        self.read_index = start_index + n
        return out, start_index
