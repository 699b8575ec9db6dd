"""How many live streams one machine sustains: N concurrent ``realtime.listen --file CLIP --realtime``.

For N = 1, 2, 4, 8... (then bisecting between the last N that held and the first that did
not; or the N of ``--streams``), N listen processes run at once, each on its own loopback
port, and one subscriber times them all.  Once every
stream's engine runs (its first status), after ``--settle`` seconds and once every stream
keeps up (its newest window within a hop of its capture; at most 60 s more), ``--seconds`` of
feed are measured per N (the windows captured in that span):

- lag at the subscriber (receipt - t_capture), pooled over the streams, and its drift;
- the processing time per hop, as each engine times itself (its status's ``process_ms``:
  the pipeline's stages and the publish step);
- moods missed (gaps in seq) and samples the ring dropped;
- memory: each process's RSS and PSS from /proc (PSS shares the common library pages out
  between the processes that map them, so the PSS total is what N streams really cost), read
  once the span's windows are in: reading it takes the kernel ~20 ms a process.

N is *sustained* when, on every stream, p99 processing and p99 lag stay within the hop, and
nothing is missed or dropped.  Each ``--threads`` setting (torch threads per process) gets
its own series, and so does each ``--layout``: ``processes`` (one listen per stream, as a
user would run them) or ``threads`` (one host process, this module run as
``python -m bench.scale --host ...``, with one engine thread per stream and the model
loaded once: what several streams in one process would cost).
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.e2e import lag_figures
from bench.harness import START_TIMEOUT_S, Feed, ListenProcess, Subscriber, make_clip
from bench.report import (
    check_list,
    check_models,
    command_line,
    machine,
    machine_line,
    percentiles,
    pyplot,
    save_figure,
    to_json,
)
from moodstream.cli import number, output_file
from realtime.options import REACTIONS

LAYOUTS = ("processes", "threads")
SETTLE_S = 5.0  # default --settle: after the last stream started, before measuring (backlogs drain)
CATCH_UP_S = 10.0  # how long after the span a lagging stream may take to deliver its windows
# After --settle, how much longer the measurement may wait for every stream to have worked off
# the backlog of its start (N processes loading the model at once keep every core busy): 16
# streams that had not, 30 s after the last one started, read as not sustained.
DRAIN_MAX_S = 60.0
MEMORY_SAMPLES = 3  # memory read of every process, after the span (their median)
START_PER_STREAM_S = 10.0  # extra start-up allowance per stream (N processes load the model at once)
STOP_GRACE_S = 10.0  # after SIGTERM, how long the streams get to stop cleanly...
STOP_PER_STREAM_S = 1.0  # ...plus this per stream (N overloaded processes drain at once)


def memory_kb(pid: int) -> dict[str, int] | None:
    """{"rss", "pss", "uss"} of a process in kB, from /proc/PID/smaps_rollup (None once it is gone).

    USS (its private pages) is what the process alone holds: the least one more stream costs.
    """
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty"):
                    values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if len(values) != 4:
        return None
    return {
        "rss": values["Rss"],
        "pss": values["Pss"],
        "uss": values["Private_Clean"] + values["Private_Dirty"],
    }


def cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc/PID/stat (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class Step:
    """The figures of N concurrent streams at one thread setting."""

    streams: int
    threads: int | None
    layout: str
    figures: dict

    @property
    def sustained(self) -> bool:
        return self.figures["sustained"]


def measure(
    n: int,
    clip: Path,
    seconds: float,
    folder: Path,
    settle_s: float = SETTLE_S,
    layout: str = "processes",
    **listen,
) -> Step:
    """Run ``n`` streams of ``clip`` at once; figures over ``seconds`` after start-up + ``settle_s``.

    ``layout``: "processes" (n listen processes) or "threads" (one host process, n engines).
    """
    source = ["--file", str(clip), "--realtime"]
    if layout == "processes":
        procs = [ListenProcess(source, folder, f"s{i}", **listen) for i in range(n)]
    else:
        procs = [ListenProcess(source, folder, "host", streams=n, **listen)]
    endpoints = [e for p in procs for e in p.endpoints]
    sub = Subscriber(endpoints)
    samples: list[list[dict]] = []  # per memory sample: one {"rss", "pss", "uss"} per process
    try:
        deadline = time.monotonic() + START_TIMEOUT_S + START_PER_STREAM_S * n
        # A stream has started once its engine runs: its first status goes out as its source starts.
        while not all(sub.feeds[e].statuses for e in endpoints):
            dead = [p for p in procs if p.proc.poll() is not None]
            if dead:
                raise RuntimeError(f"a listen process exited during start-up: {dead[0].error()}")
            if time.monotonic() > deadline:
                started = sum(bool(sub.feeds[e].statuses) for e in endpoints)
                raise RuntimeError(f"only {started} of {n} streams started within the start-up allowance")
            sub.poll(0.1)
        settled = time.time() + settle_s
        while time.time() < settled or (
            not all(drained(sub.feeds[e]) for e in endpoints) and time.time() < settled + DRAIN_MAX_S
        ):
            sub.poll(0.05)
        begin = time.time()
        waited_s = begin - settled + settle_s
        end = begin + seconds
        cpu = {}  # "begin"/"end": (time.time(), each process's CPU seconds)

        def caught_up() -> bool:  # every stream published a window captured after the span
            return all(any(m["t_capture"] > end for _, m in sub.feeds[e].moods[-3:]) for e in endpoints)

        # Wait for the late windows too (an overloaded stream lags), up to CATCH_UP_S.
        while time.time() < end + 0.5 or (not caught_up() and time.time() < end + CATCH_UP_S):
            if any(p.proc.poll() is not None for p in procs):
                ended = next(p for p in procs if p.proc.poll() is not None)
                raise RuntimeError(f"a listen process ended early: {ended.error() or 'end of clip'}")
            now = time.time()
            for mark, at in (("begin", begin), ("end", end)):
                if mark not in cpu and now >= at:
                    cpu[mark] = (now, [cpu_s(p.pid) for p in procs])
            sub.poll(0.05)
        # Memory once the span's windows are in, not during it: the kernel walks a process's page
        # tables to sum smaps_rollup, ~20 ms for a listen process, and sampled every 2 s in the
        # span that held up this one subscriber ~0.3 s at 16 streams, which read as their lag.
        for _ in range(MEMORY_SAMPLES):
            sample = [memory_kb(p.pid) for p in procs]
            if all(sample):
                samples.append(sample)
    finally:
        for p in procs:  # all at once: an overloaded machine frees up for the others' clean stops
            p.terminate()
        codes = [p.stop(STOP_GRACE_S + STOP_PER_STREAM_S * n) for p in procs]
        sub.close()
    if any(codes):
        bad = next(p for p, c in zip(procs, codes, strict=True) if c)
        raise RuntimeError(f"a listen process exited with an error: {bad.error()}")
    per_stream = [lag_figures(sub.feeds[e], lambda r, m: begin <= m["t_capture"] <= end) for e in endpoints]
    figures = summarize(per_stream, samples, n)
    figures["waited_s"] = round(waited_s, 1)  # from the last start to the measurement
    if len(cpu) == 2 and all(c is not None for mark in cpu.values() for c in mark[1]):
        (t0, before), (t1, after) = cpu["begin"], cpu["end"]
        cores = (sum(after) - sum(before)) / (t1 - t0)  # CPU seconds per second, all processes
        figures["cpu"] = {"cores_total": round(cores, 3), "per_stream_pct": round(100.0 * cores / n, 1)}
    return Step(n, listen.get("threads"), layout, figures)


def drained(feed: Feed) -> bool:
    """Whether a stream keeps up now: its newest window arrived within a hop of its capture."""
    if not feed.moods:
        return False
    received, message = feed.moods[-1]
    return received - message["t_capture"] < message["hop_s"]


def summarize(per_stream: list[dict], samples: list[list[dict]], n: int) -> dict:
    """Pooled and worst-stream figures of one N, and whether it was sustained."""
    hop_s = next((f["hop_s"] for f in per_stream if f["hop_s"]), None)
    hop_ms = 1000.0 * hop_s if hop_s else 0.0  # no window at all: nothing is sustained
    lags = np.concatenate([f["_lags"] for f in per_stream])
    worst_lag_p99 = max(f["lag_ms"]["p99"] or math.inf for f in per_stream)
    # Each engine times its hops itself (status process_ms: its last minute, the span within it).
    process_p50 = [((f["parts_ms"] or {}).get("hop") or {}).get("p50") for f in per_stream]
    process_p99 = [((f["parts_ms"] or {}).get("hop") or {}).get("p99") for f in per_stream]
    worst_process_p99 = max(p if p is not None else math.inf for p in process_p99)
    drifts = [f["drift_ms_per_min"] for f in per_stream if f["drift_ms_per_min"] is not None]
    missed = sum(f["missed"] for f in per_stream)
    dropped = sum(f["dropped_samples"] for f in per_stream)
    memory = {}
    if samples:
        rss = np.array([[s["rss"] for s in sample] for sample in samples]) / 1024.0  # (samples, streams) MiB
        pss = np.array([[s["pss"] for s in sample] for sample in samples]) / 1024.0
        uss = np.array([[s["uss"] for s in sample] for sample in samples]) / 1024.0
        memory = {
            "processes": int(rss.shape[1]),
            "rss_total_mib": round(float(np.median(rss.sum(axis=1))), 1),
            "pss_total_mib": round(float(np.median(pss.sum(axis=1))), 1),
            "pss_per_stream_mib": round(float(np.median(pss.sum(axis=1))) / n, 1),
            "rss_per_process_mib": round(float(np.median(rss)), 1),
            "pss_per_process_mib": round(float(np.median(pss)), 1),
            "uss_per_process_mib": round(float(np.median(uss)), 1),
        }
    reasons = []
    if worst_process_p99 > hop_ms:
        reasons.append("processing p99 > hop")
    if worst_lag_p99 > hop_ms:
        reasons.append("lag p99 > hop")
    if missed:
        reasons.append(f"{missed} moods missed")
    if dropped:
        reasons.append(f"{dropped} samples dropped")
    if not all(f["moods"] for f in per_stream):
        reasons.append("a stream published nothing while measured")
    return {
        "hop_ms": round(hop_ms, 2) if hop_s else None,
        "moods": int(sum(f["moods"] for f in per_stream)),
        "lag_ms": percentiles(lags),
        "worst_stream_lag_p99_ms": round(worst_lag_p99, 2) if math.isfinite(worst_lag_p99) else None,
        # Per stream, each engine's own p50/p99 per hop; here their median p50 and their worst p99.
        "process_ms": {
            "p50": round(float(np.median([p for p in process_p50 if p is not None])), 2)
            if any(p is not None for p in process_p50)
            else None,
            "p99": round(worst_process_p99, 2) if math.isfinite(worst_process_p99) else None,
        },
        "worst_stream_process_p99_ms": (
            round(worst_process_p99, 2) if math.isfinite(worst_process_p99) else None
        ),
        "max_drift_ms_per_min": round(max(drifts), 2) if drifts else None,
        "missed": int(missed),
        "dropped_samples": int(dropped),
        "memory": memory,
        "sustained": not reasons,
        "why_not": reasons,
        "per_stream": [{k: v for k, v in f.items() if not k.startswith("_")} for f in per_stream],
    }


def schedule(max_streams: int, run) -> list[Step]:
    """N = 1, 2, 4... while sustained, then bisect between the last N that held and the first that did not."""
    steps: list[Step] = []
    good, bad, n = 0, None, 1
    while n <= max_streams:
        steps.append(run(n))
        if not steps[-1].sustained:
            bad = n
            break
        good = n
        n = max_streams if n < max_streams < 2 * n else 2 * n
    while bad is not None and bad - good > 1:
        n = (good + bad) // 2
        steps.append(run(n))
        good, bad = (n, bad) if steps[-1].sustained else (good, n)
    return sorted(steps, key=lambda s: s.streams)


def memory_shortfall(n: int, measured: list[Step]) -> str | None:
    """Why ``n`` streams should not be started (the memory they would need is not free), or None.

    The need is extrapolated from the largest N measured so far in the series, with a margin.
    """
    done = [s for s in measured if s.figures.get("memory")]
    if not done:
        return None
    last = max(done, key=lambda s: s.streams)
    need_mib = 1.25 * last.figures["memory"]["pss_total_mib"] * n / last.streams + 512.0
    try:
        with open("/proc/meminfo") as f:
            available_mib = (
                next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 1024.0
            )
    except (OSError, StopIteration, ValueError, IndexError):
        return None
    if need_mib <= available_mib:
        return None
    return f"not run: {n} streams would need about {need_mib:.0f} MiB, {available_mib:.0f} MiB is available"


def increments(steps: list[Step]) -> float | None:
    """Memory (PSS total, MiB) that one more stream costs: the slope of a line through the steps."""
    points = [(s.streams, s.figures["memory"]["pss_total_mib"]) for s in steps if s.figures.get("memory")]
    if len({n for n, _ in points}) < 2:
        return None
    n, pss = np.array(points, dtype=np.float64).T
    return round(float(np.polyfit(n, pss, 1)[0]), 1)


def series_label(layout: str, threads: int | None) -> str:
    return f"{layout}, threads {'default' if threads is None else threads}"


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def table(series: dict[str, list[Step]]) -> str:
    header = (
        f"{'layout':<9} {'thr':>7} {'N':>3} {'lag p50':>8} {'lag p99':>8} {'worst p99':>9} {'proc p50':>8} "
        f"{'proc p99':>8} {'drift/min':>9} {'missed':>6} {'dropped':>7} {'PSS MiB':>7} {'RSS/proc':>8} "
        f"{'USS/proc':>8} {'CPU/str':>7}  sustained"
    )
    lines = [header, "-" * len(header)]
    for steps in series.values():
        for s in steps:
            threads = "default" if s.threads is None else str(s.threads)
            if s.figures.get("skipped"):
                lines.append(f"{s.layout:<9} {threads:>7} {s.streams:>3}  {s.figures['why_not'][0]}")
                continue
            f, mem = s.figures, s.figures["memory"]
            drift = f["max_drift_ms_per_min"]
            lines.append(
                f"{s.layout:<9} {threads:>7} {s.streams:>3} {_num(f['lag_ms']['p50']):>8.1f} "
                f"{_num(f['lag_ms']['p99']):>8.1f} {_num(f['worst_stream_lag_p99_ms']):>9.1f} "
                f"{_num(f['process_ms']['p50']):>8.1f} {_num(f['process_ms']['p99']):>8.1f} {_num(drift):>9.1f} "
                f"{f['missed']:>6} {f['dropped_samples']:>7} {mem.get('pss_total_mib', math.nan):>7.0f} "
                f"{mem.get('rss_per_process_mib', math.nan):>8.0f} {mem.get('uss_per_process_mib', math.nan):>8.0f} "
                f"{f.get('cpu', {}).get('per_stream_pct', math.nan):>6.1f}%  "
                f"{'yes' if s.sustained else 'no: ' + ', '.join(f['why_not'])}"
            )
    return "\n".join(lines)


def plot(series: dict[str, list[Step]], path: str) -> None:
    """Left: p99 processing and lag per N against the hop; right: total PSS per N."""
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    hop_ms = None
    for label, all_steps in series.items():
        steps = [s for s in all_steps if not s.figures.get("skipped")]
        if not steps:
            continue
        n = [s.streams for s in steps]
        line = left.plot(
            n,
            [_num(s.figures["worst_stream_process_p99_ms"]) for s in steps],
            "o-",
            label=f"{label}: processing",
        )
        left.plot(n, [_num(s.figures["worst_stream_lag_p99_ms"]) for s in steps], "s--", color=line[0].get_color(),
                  label=f"{label}: lag")  # fmt: skip
        right.plot(n, [s.figures["memory"].get("pss_total_mib", math.nan) for s in steps], "o-", label=label)
        hop_ms = hop_ms or steps[0].figures["hop_ms"]
    if hop_ms:
        left.axhline(hop_ms, color="k", linestyle=":", linewidth=1, label=f"hop {hop_ms:.0f} ms")
    left.set_yscale("log")
    left.set_xlabel("concurrent streams")
    left.set_ylabel("ms, p99 of the worst stream")
    left.set_title("per-hop processing and lag")
    left.legend(fontsize=7)
    right.set_xlabel("concurrent streams")
    right.set_ylabel("MiB")
    right.set_title("memory: PSS of all listen processes")
    right.legend(fontsize=7)
    save_figure(fig, path)


# -- several streams in one process (--layout threads) --------------------------------------


def host_main(argv: list[str]) -> int:
    """``python -m bench.scale --host --endpoints E1,E2,... -- LISTEN OPTIONS``: N engines, one process.

    The models are loaded once and shared (their runners hold no per-stream state); each
    endpoint gets listen's own session (source, ring, pipeline, smoothing, publisher), and its
    engine runs in its own thread.  SIGTERM stops them all.
    """
    if len(argv) < 4 or argv[0] != "--host" or argv[1] != "--endpoints" or argv[3] != "--":
        print(
            "usage: python -m bench.scale --host --endpoints E1,E2,... -- [listen options]", file=sys.stderr
        )
        return 2
    from realtime import listen
    from realtime.options import build_members
    from realtime.publisher import Publisher
    from realtime.session import open_session
    from realtime.sources import make_source

    endpoints = argv[2].split(",")
    args = listen.parse_args([*argv[4:], "--pub", endpoints[0]])
    members, windowing, compute = build_members(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    rate_hz = members[0].model.frontend.sample_rate_hz
    # listen's own session per stream (its resampler choice included); the models are shared.
    sessions = [
        open_session(args, members, windowing, compute, make_source(args, rate_hz), Publisher(endpoint))
        for endpoint in endpoints
    ]
    engines = [session.engine for session in sessions]
    failures: list[str] = []

    def run(engine) -> None:
        try:
            if engine.run(stop):
                failures.append(str(engine.source.error))
        except Exception as exc:  # reported on stderr, and the host exits 1
            failures.append(repr(exc))
        stop.set()  # one stream ending (an error, or the end of the clip) ends the measurement

    threads = [threading.Thread(target=run, args=(e,), name=f"engine-{i}") for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    while not stop.wait(0.2):
        pass
    for t in threads:
        t.join(10)
    for session in sessions:
        session.close()
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


# -- command ---------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser(
        "scale",
        help="how many concurrent live streams one machine sustains, and memory per stream",
        description="Runs N concurrent `python -m realtime.listen --file CLIP --realtime` processes "
        "(N = 1, 2, 4... then bisecting, up to --max-streams; or --streams), each on its own loopback "
        "port, and times them all at one subscriber: per N, lag and per-hop processing p50/p99, drift, "
        "missed moods, dropped samples, and memory (RSS/PSS/USS from /proc). N is sustained while p99 "
        "processing and p99 lag stay within the hop with nothing lost. One series per --threads setting "
        "and --layout (processes: one listen per stream; threads: one process, one engine thread per "
        "stream, the model loaded once).",
    )
    p.add_argument("--model", default="default", metavar="NAME", help="the model every stream runs (default)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="torch or onnx (torch)")
    p.add_argument("--compute", choices=("cpu", "cuda"), default="cpu", help="where the model runs (cpu)")
    p.add_argument(
        "--max-streams",
        type=int,
        metavar="N",
        default=64,
        help="the most concurrent streams tried (64); an N whose memory is not free is not started",
    )
    p.add_argument(
        "--streams",
        metavar="N,N...",
        help="comma-separated N to run instead of the doubling/bisecting search",
    )
    p.add_argument(
        "--seconds",
        type=number(1, what="the seconds"),
        default=60,
        metavar="S",
        help="seconds measured per N, after start-up (60)",
    )
    p.add_argument(
        "--settle",
        type=float,
        metavar="S",
        default=SETTLE_S,
        help=f"seconds between the last stream's start and the measurement, at least ({SETTLE_S:g}); "
        f"then it waits until every stream keeps up, at most {DRAIN_MAX_S:g} s more",
    )
    p.add_argument(
        "--threads",
        default="1,default",
        metavar="N,...",
        help="comma-separated torch threads per process, 'default' = the library's (1,default)",
    )
    p.add_argument(
        "--layout",
        default="processes",
        metavar="NAMES",
        help="comma-separated: processes (one listen per stream), threads (one process, N engines) (processes)",
    )
    p.add_argument(
        "--clip",
        metavar="PATH",
        help="audio file to loop (default: shared 4Q clips end to end, ../shared/data)",
    )
    p.add_argument("--reaction", choices=tuple(REACTIONS), help="listen --reaction (its default)")
    p.add_argument("--json", type=output_file, metavar="OUT", help="write the figures as JSON here")
    p.add_argument("--plot", type=output_file, metavar="OUT.png", help="write a PNG chart here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:

    check_models(parser, [args.model])
    if args.max_streams < 1:
        parser.error("--max-streams must be at least 1")
    if not (math.isfinite(args.seconds) and args.seconds >= 5):
        parser.error("--seconds must be at least 5")
    if not (math.isfinite(args.settle) and args.settle >= 0):
        parser.error("--settle must be a number of seconds >= 0")
    layouts = check_list(parser, args.layout, LAYOUTS, "layout")
    threads: list[int | None] = []
    for item in check_list(parser, args.threads, None, "threads"):
        if item == "default":
            threads.append(None)
        elif item.isdigit() and int(item) >= 1:
            threads.append(int(item))
        else:
            parser.error(f"--threads: {item!r} is neither a positive number nor 'default'")
    fixed = None
    if args.streams:
        items = check_list(parser, args.streams, None, "streams")
        if not all(item.isdigit() and int(item) >= 1 for item in items):
            parser.error(f"--streams takes positive numbers, not {args.streams!r}")
        fixed = sorted({int(item) for item in items})
    if args.clip and not Path(args.clip).is_file():
        parser.error(f"--clip {args.clip}: no such file")
    if args.compute == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--compute cuda, but no CUDA device is available")
    # The streams are stopped after start-up + settling + --seconds; the clip outlasts that.
    longest = fixed[-1] if fixed else args.max_streams
    clip_s = (
        args.seconds
        + args.settle
        + DRAIN_MAX_S
        + CATCH_UP_S
        + START_TIMEOUT_S
        + START_PER_STREAM_S * longest
        + 10.0
    )
    series: dict[str, list[Step]] = {}
    with tempfile.TemporaryDirectory(prefix="moodstream-scale-") as tmp:
        folder = Path(tmp)
        try:
            clip, described = make_clip(clip_s, folder / "clip.wav", Path(args.clip) if args.clip else None)
        except (ValueError, RuntimeError) as exc:
            parser.error(str(exc))
        for layout in layouts:
            for t in threads:
                label = series_label(layout, t)

                measured: list[Step] = []

                def run(n: int, t=t, label=label, layout=layout, measured=measured) -> Step:
                    short = memory_shortfall(n, measured)
                    if short:
                        print(f"{label}: {n} stream(s): {short}", file=sys.stderr)
                        return Step(n, t, layout, {"sustained": False, "skipped": True, "why_not": [short]})
                    where = folder / f"{layout}-t{t or 0}-n{n}"
                    where.mkdir()
                    print(f"{label}: {n} stream(s), {args.seconds:g} s...", file=sys.stderr)
                    step = measure(
                        n, clip, args.seconds, where, args.settle, layout, model=args.model,
                        backend=args.backend, compute=args.compute, threads=t, reaction=args.reaction,
                    )  # fmt: skip
                    measured.append(step)
                    verdict = "sustained" if step.sustained else ", ".join(step.figures["why_not"])
                    waited = f"measured {step.figures['waited_s']:g} s after the last start"
                    print(f"  -> {verdict} ({waited})", file=sys.stderr)
                    return step

                try:
                    series[label] = [run(n) for n in fixed] if fixed else schedule(args.max_streams, run)
                except RuntimeError as exc:
                    print(f"error: {label}: {exc}", file=sys.stderr)
                    return 1
    summary = {}
    for label, steps in series.items():
        held = [s.streams for s in steps if s.sustained]
        failed = [s.streams for s in steps if not s.sustained and not s.figures.get("skipped")]
        skipped = [s.streams for s in steps if s.figures.get("skipped")]
        uss = [s.figures["memory"]["uss_per_process_mib"] for s in steps if s.figures.get("memory")]
        summary[label] = {
            "layout": steps[0].layout,
            "threads": steps[0].threads,
            "sustained_streams": max(held, default=0),
            "first_failing": min(failed, default=None),
            "not_run_for_memory": min(skipped, default=None),
            "pss_per_extra_stream_mib": increments(steps),
            "uss_per_process_mib": round(float(np.median(uss)), 1) if uss else None,
        }
    report = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": command_line(),
        "model": args.model,
        "backend": args.backend,
        "compute": args.compute,
        "clip": described,
        "seconds": args.seconds,
        "settle_s": args.settle,
        "summary": summary,
        "results": [
            {"layout": s.layout, "threads": s.threads, "streams": s.streams, **s.figures}
            for steps in series.values()
            for s in steps
        ],
        "table": table(series),
    }
    m = report["machine"]
    print(machine_line(m))
    print(f"{args.model} {args.backend} on {args.compute}; {args.seconds:g} s measured per N; {described}")
    print(
        "per N concurrent streams: lag (receipt - t_capture) and processing per hop, ms; memory, MiB;"
        " CPU per stream, % of one core"
    )
    print(report["table"])
    print()
    for label, s in summary.items():
        more = f", fails at {s['first_failing']}" if s["first_failing"] else ""
        if s["not_run_for_memory"]:
            more += f", too little memory for {s['not_run_for_memory']}"
        pss = "n/a" if s["pss_per_extra_stream_mib"] is None else f"{s['pss_per_extra_stream_mib']:.0f} MiB"
        print(
            f"{label}: sustains {s['sustained_streams']} stream(s){more}; one more stream costs {pss} (PSS slope)"
        )
    if args.json:
        with open(args.json, "w") as f:
            f.write(to_json(report) + "\n")
    if args.plot:
        plot(series, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(host_main(sys.argv[1:]))
