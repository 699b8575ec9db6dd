"""Two checkouts' whole hops of the default model's engine, timed in turns: the same moment of a host
whose speed drifts.

    python tools/hop-ab.py OLD_CHECKOUT [--hop 0.25] [--hops 400] [--threads 2] [--pause-ms 0]

OLD_CHECKOUT is another checkout of this repository (``git worktree add ../old REV``).  Each
checkout runs in a process of its own (its own packages): it builds the engine as ``bench
latency`` does (the default model, torch's runner, a real ZeroMQ publisher) and processes a hop of
noise each time it is told to, timing it as ``bench latency`` does (stages from the engine,
"publish" the rest of the call).  The two take turns hop by hop (old-new, then new-old), so
neither runs while the other does and each hop of one has a hop of the other beside it.
``tools/encoder-ab.py`` compares the streaming encoder alone; this, everything a hop does.
Prints each one's p50 / p99 per stage and the median of the paired differences (new - old).
``--pause-ms``: a sleep before each turn, so each hop starts with caches others' work left, as a
live stream's does.  With more than one thread, the other process's OpenMP threads still spin for
a while after its turn (tens of ms here, past a 20 ms pause): the first stage's (the mel's) p99 is
then the harness's, ~10 ms on the first EPYC's type, not the hop's (``--threads 1`` has none of
it); the p50s and the paired medians hold.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
STAGES = ("mel", "encoder", "pool_heads", "publish", "hop")

# Run in each checkout (its own ``models``, ``realtime``): only what both old and new have.
WORKER = """
import sys, time
import numpy as np, torch
import models
from models.runners import make_runner
from realtime.analyzer import Member, Windowing, effective_windows
from realtime.engine import Engine, FeedConfig
from realtime.publisher import Publisher

hop_s, threads = float(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
model = models.resolve("default").eval()
fe = model.frontend
runner = make_runner(model, "torch", "cpu")
runner.warm_up()
with Publisher("tcp://127.0.0.1:0") as publisher:
    windowing = Windowing(hop_s=hop_s)
    engine = Engine(None, [Member("default", model, runner)], windowing, publisher, FeedConfig(), compute="cpu")
    engine.open(fe.sample_rate_hz)
    hop, _, k, _ = effective_windows(model, windowing)
    rng = np.random.default_rng(0)
    noise = lambda n: 0.1 * rng.standard_normal(n).astype(np.float32)
    engine.process(noise((model.segment_frames + 2) * fe.hop_length + (k - 1) * hop * fe.hop_length))
    for _ in range(20):  # warm-up
        engine.process(noise(hop * fe.hop_length))
    print("ready", flush=True)
    for line in sys.stdin:
        audio = noise(hop * fe.hop_length)
        seq = engine.mood_seq
        t0 = time.perf_counter()
        engine.process(audio)
        hop_ms = (time.perf_counter() - t0) * 1000.0
        assert engine.mood_seq == seq + 1, "a hop of audio gave no window"
        s = engine.last_stages
        publish = hop_ms - sum(s[x] for x in ("resample", "mel", "encoder", "pool_heads"))
        print(s["mel"], s["encoder"], s["pool_heads"], publish, hop_ms, flush=True)
"""


def start(checkout: Path, hop_s: float, threads: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(checkout)!r})\n{WORKER}",
            str(hop_s),
            str(threads),
        ],
        cwd=checkout,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    if process.stdout.readline().strip() != "ready":
        sys.exit(f"hop-ab: the engine of {checkout} did not start (its error is above)")
    return process


def turn(process: subprocess.Popen) -> list[float]:
    process.stdin.write("go\n")
    process.stdin.flush()
    line = process.stdout.readline()
    if not line:
        sys.exit("hop-ab: a worker ended (its error is above)")
    return [float(v) for v in line.split()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the other checkout")
    parser.add_argument(
        "--hop", type=float, default=0.25, help="the hop in seconds, as listen's --hop (0.25)"
    )
    parser.add_argument("--hops", type=int, default=400, help="hops timed in each (400)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in each (2)")
    parser.add_argument("--pause-ms", type=float, default=0.0, help="sleep before each turn (0)")
    args = parser.parse_args()
    old = args.old.resolve()
    if not (old / "realtime" / "engine.py").is_file():
        parser.error(f"{old} is not a checkout of this repository")
    if args.hops < 20 or not 0.05 <= args.hop <= 2.0 or args.threads < 1 or args.pause_ms < 0:
        parser.error("need --hops >= 20, 0.05 <= --hop <= 2, --threads >= 1, --pause-ms >= 0")
    workers = {"old": start(old, args.hop, args.threads), "new": start(REPO, args.hop, args.threads)}
    times: dict[str, list[list[float]]] = {"old": [], "new": []}
    try:
        for i in range(args.hops):
            for name in ("old", "new") if i % 2 == 0 else ("new", "old"):
                time.sleep(args.pause_ms / 1000.0)
                times[name].append(turn(workers[name]))
    finally:
        for process in workers.values():
            process.stdin.close()
            process.wait(timeout=30)
    ms = {name: np.array(rows) for name, rows in times.items()}
    print(f"{'ms (p50 / p99)':<10}" + "".join(f"{s:>20}" for s in STAGES))
    for name in ("old", "new"):
        cells = [f"{np.percentile(c, 50):.2f} / {np.percentile(c, 99):.2f}" for c in ms[name].T]
        print(f"{name:<10}" + "".join(f"{c:>20}" for c in cells))
    paired = np.median(ms["new"] - ms["old"], axis=0)
    print(
        f"{'new - old':<10}"
        + "".join(f"{d:>+20.3f}" for d in paired)
        + "   (median of the paired differences)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
