"""A low-delay streaming resampler for live capture: a short linear-phase polyphase FIR.

soxr's HQ stream (the analyzer's default) holds back ~20 ms of audio on average and releases it
in bursts (up to ~36 ms at 48 -> 16 kHz in 1024-frame blocks): fine for files, a third of the
lag budget for a live device.  This one holds back only its filter's group delay (~2 ms), the
same for every block: output sample ``n`` is ready as soon as the input sample it needs arrives.

Design: resampling by L/M (in lowest terms) as up-sampling by L, a Kaiser-windowed sinc low-pass
at the lower of the two Nyquist frequencies, and down-sampling by M, computed polyphase (only
the output samples, each from one of the L phases of the filter).  Pass band to 87.5 % of the
lower Nyquist frequency, stop band from 100 % (80 dB down): 7 to 8 kHz for a 16 kHz model.  The
group delay is trimmed off the start, as soxr does, so output sample ``n`` lies at input time
``n / out_rate``, and ``resample_chunk(..., last=True)`` flushes it at the end.

Computed as one matrix product: the outputs come in rows of ``G`` (a multiple of L), and row
``r``'s inputs are one window of the signal, ``r * G * M / L`` samples after row 0's, so the
rows are strided views of the signal (no copy per output) and a (G, window) matrix holds each
output's phase at its offset.  It does ~3x the multiply-adds of the polyphase sums (the zeros
around each phase) in one pass of numpy's ``einsum`` loops: a quarter second of 48 or 44.1 kHz
audio took 2.4 ms as a gather of each output's inputs and their sums, ~0.45 ms this way (first
EPYC's type).  Not through BLAS: numpy's OpenBLAS ran such a product on every core and its
workers spun between calls (a 48 kHz stream in ``listen`` used a third of a core), and torch's, on two
threads, took ~1 ms for a 10 ms block; ``einsum`` without ``optimize`` never calls BLAS.
"""

from __future__ import annotations

import math

import numpy as np

PASSBAND = 0.875  # pass band edge, as a fraction of the lower Nyquist frequency
STOPBAND_DB = 80.0
MIN_ROW_OUTPUTS = 64  # outputs per row of the product at least (a whole number of L's)
MAX_ROW_ENTRIES = 1 << 20  # the rows' matrix at most (4 MB); past it, each output's inputs gathered
GATHER_OUTPUTS = 4096  # outputs gathered at once then (bounds the (outputs, taps) scratch array)


def kaiser_lowpass(up: int, down: int) -> tuple[np.ndarray, int]:
    """The prototype filter at ``up`` times the input rate (gain ``up``: it follows zero-stuffing),
    zero-padded to whole phases, and its group delay in output samples."""
    # Normalised to the up-sampled rate: the lower Nyquist frequency is 1 / (2 max(up, down)).
    nyquist = 0.5 / max(up, down)
    transition = nyquist * (1.0 - PASSBAND)
    cutoff = nyquist - transition / 2  # half-amplitude point, mid transition band
    beta = 0.1102 * (STOPBAND_DB - 8.7)
    taps = math.ceil((STOPBAND_DB - 7.95) / (2.285 * 2 * math.pi * transition)) + 1
    # An odd length whose centre falls on an output sample: (taps - 1) / 2 = a whole number of downs,
    # so trimming whole output samples takes the delay off exactly.
    delay_out = math.ceil((taps - 1) / (2 * down))
    taps = 2 * delay_out * down + 1
    n = np.arange(taps) - (taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(taps, beta)
    h = np.concatenate([h / h.sum() * up, np.zeros((up - taps % up) % up)])  # whole phases
    return h, delay_out


class LowDelayResampler:
    """Streaming ``in_rate -> out_rate`` resampling of mono float32 blocks; soxr.ResampleStream's interface."""

    def __init__(self, in_rate_hz: int, out_rate_hz: int):
        if in_rate_hz <= 0 or out_rate_hz <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate_hz} -> {out_rate_hz}")
        g = math.gcd(int(in_rate_hz), int(out_rate_hz))
        self.up, self.down = int(out_rate_hz) // g, int(in_rate_hz) // g
        self.out_rate_hz = int(out_rate_hz)
        h, self.delay_out = kaiser_lowpass(self.up, self.down)
        self.taps_per_phase = taps = len(h) // self.up
        # phases[p, k] = h[p + k * up]: output n uses phase (n * down) % up on inputs i, i-1, ..., with
        # i = (n * down) // up.  Reversed along k so a window of inputs in time order dots with it.
        phases = h.reshape(taps, self.up).T[:, ::-1]
        # Rows of G outputs: output q of a row has its newest input ``newest[q]`` samples after
        # the row's first output's, and its window starts taps - 1 before that.
        self.row_outputs = -(-MIN_ROW_OUTPUTS // self.up) * self.up
        self.row_step = self.row_outputs * self.down // self.up  # input samples from row to row
        newest = np.arange(self.row_outputs) * self.down // self.up
        self.row_inputs = int(newest[-1]) + taps
        # A rate with a small gcd with the model's (44056 or 22254 Hz -> 16 kHz: L = 2000 or 8000)
        # makes a row L outputs over ~M inputs, for phases of ~K taps: an L x M matrix (360 MB at
        # 22254 Hz) and M / K times the work.  Such rates gather each output's K inputs instead.
        self.phases = np.ascontiguousarray(phases, dtype=np.float32)
        self.rows_t = None
        if self.row_outputs * self.row_inputs <= MAX_ROW_ENTRIES:
            rows = np.zeros((self.row_outputs, self.row_inputs), dtype=np.float32)
            for q, offset in enumerate(newest):
                rows[q, offset : offset + taps] = self.phases[(q * self.down) % self.up]
            self.rows_t = np.ascontiguousarray(rows.T)  # (row_inputs, row_outputs)
        # Input samples from absolute index _history_start on (zeros before the start), as far
        # back as the row of the next output reaches.
        self._history = np.zeros(taps - 1, dtype=np.float32)
        self._history_start = -(taps - 1)
        self._consumed = 0  # input samples seen
        self._n = 0  # next output index (before the trim)
        self._to_trim = self.delay_out
        self._real_in = 0  # input samples given (the flush's zeros not counted)
        self._flushed = False

    @property
    def delay_s(self) -> float:
        """The filter's group delay: how much later than its input time an output sample is ready."""
        return self.delay_out / self.out_rate_hz

    def inputs_for(self, outputs: int) -> int:
        """Input samples still to come before ``outputs`` more output samples are out (exact: an
        output is out once the newest input it needs is in, the same for every block size)."""
        if outputs <= 0:
            return 0
        # Outputs before the trim: the first delay_out are trimmed, so the last one wanted has
        # index max(_n, delay_out) + outputs - 1; ``resample_chunk`` computes output n once
        # n * down <= (inputs in - 1) * up.
        last = max(self._n, self.delay_out) + outputs - 1
        return max(0, -(-last * self.down // self.up) + 1 - self._consumed)

    def resample_chunk(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self._flushed:
            raise RuntimeError("the resampler was already flushed (last=True)")
        x = np.asarray(x, dtype=np.float32).reshape(-1)
        self._real_in += len(x)
        if last:  # zeros push the delayed tail out
            self._flushed = True
            x = np.concatenate([x, np.zeros(self.taps_per_phase + 1, np.float32)])
        buffer = np.concatenate([self._history, x])  # buffer[0] is input _history_start
        available = self._consumed + len(x)  # input samples seen so far
        # Outputs whose newest input (n * down) // up has arrived.
        end_n = ((available - 1) * self.up) // self.down + 1 if available else 0
        if last:  # as many outputs in all as the input is long at the output rate
            end_n = min(end_n, -(-self._real_in * self.up // self.down) + self.delay_out)
        out = self._rows(buffer, self._n, end_n)
        self._n = max(self._n, end_n)
        self._consumed = available
        # The next call's first row reaches back to here (never past the input: a phase is longer
        # than the inputs between two outputs).
        keep_from = (self._n // self.row_outputs) * self.row_step - (self.taps_per_phase - 1)
        self._history = buffer[keep_from - self._history_start :].copy()
        self._history_start = keep_from
        if self._to_trim:
            cut = min(self._to_trim, len(out))
            out, self._to_trim = out[cut:], self._to_trim - cut
        return out.astype(np.float32, copy=False)

    def _rows(self, buffer: np.ndarray, start_n: int, end_n: int) -> np.ndarray:
        """Outputs ``start_n`` .. ``end_n`` of the inputs ``buffer`` (from ``_history_start``): the
        rows that hold them, each a strided window of the buffer (zeros past its end: they meet
        only outputs after ``end_n``, which are dropped)."""
        if end_n <= start_n:
            return np.zeros(0, np.float32)
        if self.rows_t is None:
            return self._gathered(buffer, start_n, end_n)
        first_row, end_row = start_n // self.row_outputs, -(-end_n // self.row_outputs)
        offset = first_row * self.row_step - (self.taps_per_phase - 1) - self._history_start
        needed = offset + (end_row - first_row - 1) * self.row_step + self.row_inputs
        if needed > len(buffer):
            buffer = np.concatenate([buffer, np.zeros(needed - len(buffer), np.float32)])
        windows = np.lib.stride_tricks.sliding_window_view(buffer[offset:needed], self.row_inputs)
        out = np.einsum("ri,io->ro", windows[:: self.row_step], self.rows_t).ravel()
        skip = start_n - first_row * self.row_outputs
        return out[skip : skip + end_n - start_n]

    def _gathered(self, buffer: np.ndarray, start_n: int, end_n: int) -> np.ndarray:
        """``_rows``' outputs for rates whose rows would be too large: each output's inputs gathered
        from the buffer and summed with its phase."""
        taps, pieces = np.arange(self.taps_per_phase), []
        for first in range(start_n, end_n, GATHER_OUTPUTS):
            n = np.arange(first, min(end_n, first + GATHER_OUTPUTS), dtype=np.int64)
            oldest = (n * self.down) // self.up - (self.taps_per_phase - 1) - self._history_start
            gathered = buffer[oldest[:, None] + taps[None, :]]
            pieces.append(np.einsum("ok,ok->o", gathered, self.phases[(n * self.down) % self.up]))
        return np.concatenate(pieces)
