"""Two versions of musicnn's streaming encoder timed in one process, call by call.

    python tools/encoder-ab.py OLD_CHECKOUT [--hop-frames 16] [--calls 600] [--threads 1]

OLD_CHECKOUT is another checkout of this repository (``git worktree add ../old REV``); its
``models/musicnn.py`` is loaded beside this one's, both encoders get the default model's weights,
and each hop's window is encoded by both, in alternating order, on the same frames.  On a host
whose speed drifts by 1.7x within an hour (the first EPYC's type, bench/RESULTS.md), runs minutes
apart compare the hour, and two processes side by side contend for the caches; calls side by
side in one process see the same moment.  Prints each one's p50 / p90 ms per call, the median
of the paired differences (new - old), and the largest difference between their outputs.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import models  # noqa: E402
import models.registry  # noqa: E402
from models import musicnn  # noqa: E402


def load_old(checkout: Path):
    """The other checkout's musicnn module, under another name (its models register nothing)."""
    path = checkout / "models" / "musicnn.py"
    if not path.is_file():
        sys.exit(f"encoder-ab: {path} is not there; OLD_CHECKOUT is a checkout of this repository")
    register = models.registry.register
    models.registry.register = lambda *args, **kwargs: lambda factory: factory
    try:
        spec = importlib.util.spec_from_file_location("old_musicnn", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        models.registry.register = register
    return module


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the other checkout")
    parser.add_argument("--hop-frames", type=int, default=16, help="frames between windows (16: 0.256 s)")
    parser.add_argument("--calls", type=int, default=600, help="windows encoded by each (default 600)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    if args.hop_frames < 1 or args.calls < 60:
        parser.error("need --hop-frames >= 1 and --calls >= 60")
    torch.set_num_threads(args.threads)
    new_model = models.resolve("default").eval().encoder
    old_model = load_old(args.old.resolve()).Musicnn(musicnn.MSD_LABELS).eval()
    old_model.load_state_dict(new_model.state_dict())
    streams = {"old": old_model.streaming_encoder(), "new": new_model.streaming_encoder()}
    window = new_model.segment_frames
    frames = 1.0 + 0.5 * torch.randn(new_model.frontend.n_mels, window + args.hop_frames * args.calls)
    times: dict[str, list[float]] = {"old": [], "new": []}
    worst = 0.0
    with torch.inference_mode():
        for k in range(args.calls):
            end = window + args.hop_frames * k
            start = max(0, end - 2 * window)  # the frames a live consumer keeps, about
            out = {}
            for name in ("old", "new") if k % 2 else ("new", "old"):
                t0 = time.perf_counter()
                out[name] = streams[name].encode(frames[:, start:end], start, [end])
                times[name].append((time.perf_counter() - t0) * 1000.0)
            worst = max(worst, float((out["new"] - out["old"]).abs().max()))
    warm = 50  # the first calls build the kept state
    for name in ("old", "new"):
        ms = np.array(times[name][warm:])
        print(f"{name}: p50 {np.percentile(ms, 50):.3f} ms, p90 {np.percentile(ms, 90):.3f} ms per call")
    paired = np.array(times["new"][warm:]) - np.array(times["old"][warm:])
    print(f"new - old, paired: median {np.median(paired):+.3f} ms; outputs differ by at most {worst:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
