"""Where musicnn's streaming encoder spends a call: its front end's parts and its mid and back end.

    python tools/encoder-split.py [--hop-frames 16] [--calls 400] [--threads 2]

Encodes a stream of windows (random mel frames, the default model's weights), one per hop, each
once all its frames are in (no ``prepare`` ahead: as ``bench latency`` drives it, not a live
loop's early take), and times, per call, by wrapping the encoder's own methods:

- the front end's five blocks in all (``StreamingEncoder._block``), and in it the blocks' calls
  on the window's edges (its first ``pl`` and last ``pr`` frames, both in one batch of 2 per
  block) and on the new frames' interior (a batch of 1); the rest is the bookkeeping between;
- the mid end (``Musicnn._mid``: three 7-frame convolutions over the whole window);
- pooling and the dense layer (``Musicnn._pool``).

Used to weigh what an approximate encoder (real context across a window's left edge instead of
musicnn's zeros) could save: the left edges and the part of the mid end they reach
(bench/RESULTS.md, tenth session).  The wrappers cost a few microseconds a call.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402

WARM_CALLS = 50  # the first calls build the kept state


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hop-frames", type=int, default=16, help="frames between windows (16: 0.256 s)")
    parser.add_argument("--calls", type=int, default=400, help="windows encoded (default 400)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args()
    if args.hop_frames < 1 or args.calls <= WARM_CALLS:
        parser.error(f"need --hop-frames >= 1 and --calls > {WARM_CALLS}")
    torch.set_num_threads(args.threads)
    model = models.resolve("default").eval().encoder
    stream = model.streaming_encoder()
    spent = dict.fromkeys(("front", "edges", "interior", "mid", "pool"), 0.0)

    def timed(fn, key):
        """``fn``, its time added to ``spent[key(first argument)]``."""

        def call(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            spent[key(a[0])] += time.perf_counter() - t0
            return out

        return call

    stream._block = timed(stream._block, lambda _: "front")
    model._mid = timed(model._mid, lambda _: "mid")
    model._pool = timed(model._pool, lambda _: "pool")
    for block in model.front:  # on the edges (lefts and rights: a batch of 2) or the interior (1)
        block.folded = timed(block.folded, lambda x: "edges" if x.shape[0] == 2 else "interior")
    window = model.segment_frames
    frames = 1.0 + 0.5 * torch.randn(model.frontend.n_mels, window + args.hop_frames * args.calls)
    calls_ms = []
    with torch.inference_mode():
        for k in range(args.calls):
            if k == WARM_CALLS:
                spent.update(dict.fromkeys(spent, 0.0))
                calls_ms.clear()
            end = window + args.hop_frames * k
            start = max(0, end - 2 * window)  # the frames a live consumer keeps, about
            t0 = time.perf_counter()
            stream.encode(frames[:, start:end], start, [end])
            calls_ms.append((time.perf_counter() - t0) * 1000.0)
    n = args.calls - WARM_CALLS
    ms = {key: value / n * 1000.0 for key, value in spent.items()}
    print(
        f"hop {args.hop_frames} frames, {args.threads} thread(s): a call {np.median(calls_ms):.2f} ms p50, "
        f"{np.mean(calls_ms):.2f} mean; per call (mean): front end {ms['front']:.2f} (edges {ms['edges']:.2f}, "
        f"new frames' interior {ms['interior']:.2f}, the rest {ms['front'] - ms['edges'] - ms['interior']:.2f}), "
        f"mid end {ms['mid']:.2f}, pooling and dense {ms['pool']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
