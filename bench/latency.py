"""Per-stage time of one hop, per model and backend: new mel frames, encoder, pooling + heads, feed.

Each stage runs the engine's own code on one hop of audio (the default 0.992 s) after a
warm-up, and its p50/p95/p99 are reported in milliseconds.  The audio is noise: none of the
stages' costs depends on what the music is.

Backends: ``torch`` (eager), ``onnx`` (ONNX Runtime) and ``compile`` (eager, with the segment
encoder through ``torch.compile``; its compilation happens before the warm-up and is
reported apart as ``setup_s``).  A backend that cannot run here is reported as skipped, with
the reason.  ``--alternatives`` adds, in the same run, what a user would otherwise write
(``bench.alternatives``: librosa / torchaudio mel of the whole window + the eager model),
as times per hop and ratios to ours.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

import models
import models as models_module  # run()'s parameter is called models
from bench import alternatives
from bench.report import machine, machine_line, percentiles, pyplot, save_figure, to_json
from models.runners import BACKENDS, make_runner
from moodstream.cli import output_file
from realtime.analyzer import Member, Windowing, effective_windows
from realtime.engine import EARLY_TAKE_S, LIVE_READ_S, Engine, FeedConfig, live_read_wanted
from realtime.options import HOP_RANGE_S, number
from realtime.publisher import Publisher
from realtime.sources import FileSource

STAGES = ("mel", "encoder", "pool_heads", "publish")  # the engine's own stages (a file at the model's rate)
# With --early-take, a hop is the reads a live source's loop makes: "early" is those before the
# window's last EARLY_TAKE_S (their mel and the encoder's ``prepare``), the stages above the last.
EARLY = "early"
EARLY_LABEL = f", read as listen reads a paced file (early take {EARLY_TAKE_S * 1000:g} ms)"  # in headers


def _reason(exc: BaseException) -> str:
    """One line for a table cell: the exception's type and the first line of its message."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return f"{type(exc).__name__}: {first[:200]}"


@dataclass
class StageTimes:
    model: str
    backend: str
    device: str
    samples_ms: dict[str, list[float]]
    setup_s: float | None = None  # runner creation + first call (ONNX export, torch.compile)
    skipped: str | None = None  # why the backend could not run here

    def percentiles(self) -> dict[str, dict[str, float]]:
        out = {stage: percentiles(values) for stage, values in self.samples_ms.items()}
        out["hop"] = percentiles(np.sum(list(self.samples_ms.values()), axis=0))
        return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def encoder_gflop(model) -> float:
    """GFLOP of one segment's ``encode`` (PyTorch's FLOP counter).  Counted with oneDNN off: the
    inference path of musicnn runs its front end in oneDNN calls the counter does not see (a
    frozen encoder, as the default model's, runs that path even with autograd on).  That path
    convolves only musicnn's live filters (``models.musicnn``): musicnn-msd 0.28 GFLOP, 2.80
    with every filter."""
    from torch.utils.flop_counter import FlopCounterMode

    patch = torch.zeros(1, model.frontend.n_mels, model.segment_frames)
    onednn = torch.backends.mkldnn.enabled  # (its flags() context warns about TF32 on every call)
    torch.backends.mkldnn.enabled = False
    try:
        with FlopCounterMode(display=False) as counter:
            model.eval().encode(patch)
    finally:
        torch.backends.mkldnn.enabled = onednn
    return counter.get_total_flops() / 1e9


def measure(
    name: str,
    backend: str,
    device: str,
    hops: int,
    warmup: int,
    publisher: Publisher,
    hop_s: float = 1.0,
    early_take: bool = False,
    paced: bool = False,
) -> StageTimes:
    """Time ``hops`` hops of the real engine (its pipeline and publish step) for one model and backend.

    The engine is driven by hand, a hop of noise at a time, and times itself (``last_stages``):
    the same stages, the same code as ``listen``'s status reports; but its publish stage stops at
    the message's stamp (a subscriber's transport starts there), so here "publish" is the rest of
    the hop, the message's encoding and send included: the stages add up to the whole call.

    ``early_take``: each hop in the calls ``Engine.run`` makes for a paced file that it keeps up
    with (``_reads``): those before the window's last audio summed as "early", then the rest.

    ``paced``: each call when its audio would be in from a live source, so the loop sleeps between
    them as ``listen``'s does and each hop starts with the caches others' work left (a stream's CPU
    in ``bench scale`` is this hop's, not the back-to-back one's).
    """
    model = models.resolve(name).eval()
    fe = model.frontend
    t_setup = time.perf_counter()
    try:
        runner = make_runner(model, backend, device)
        runner.warm_up()  # an ONNX export or a compilation happens here
    except Exception as exc:  # e.g. torch.compile without a working C++ compiler: say so, go on
        return StageTimes(name, backend, device, {s: [] for s in STAGES}, skipped=_reason(exc))
    setup_s = time.perf_counter() - t_setup
    windowing = Windowing(hop_s=hop_s)
    engine = Engine(None, [Member(name, model, runner)], windowing, publisher, FeedConfig(), compute=device)
    engine.open(fe.sample_rate_hz)
    hop, _, k, _ = effective_windows(model, windowing)
    hop_samples = hop * fe.hop_length
    rng = np.random.default_rng(0)
    # The first window and K segments first, as a running stream has them.
    fill = (model.segment_frames + 2) * fe.hop_length + (k - 1) * hop_samples
    engine.process(0.1 * rng.standard_normal(fill).astype(np.float32))
    samples = {stage: [] for stage in ((EARLY,) if early_take else ()) + STAGES}
    begin, fed = time.perf_counter(), 0  # with ``paced``: when the audio fed so far was all in
    for i in range(warmup + hops):
        seq = engine.mood_seq
        early_ms = 0.0
        for n in _reads(engine, hop_samples, early_take):
            audio = 0.1 * rng.standard_normal(n).astype(np.float32)
            fed += n
            if paced:  # this read's last sample is in now (none sooner; behind, at once)
                time.sleep(max(0.0, begin + fed / fe.sample_rate_hz - time.perf_counter()))
            t0 = time.perf_counter()
            engine.process(audio)
            _sync(device)
            hop_ms = (time.perf_counter() - t0) * 1000.0
            if engine.mood_seq == seq:
                early_ms += hop_ms
        if engine.mood_seq != seq + 1:
            raise RuntimeError(f"{name}: a hop of audio gave {engine.mood_seq - seq} windows, not one")
        if i >= warmup:
            if early_take:
                samples[EARLY].append(early_ms)
            stages = engine.last_stages
            for stage in STAGES[:-1]:
                samples[stage].append(stages[stage])
            samples["publish"].append(hop_ms - sum(stages[s] for s in ("resample", *STAGES[:-1])))
    return StageTimes(name, backend, device, samples, setup_s=round(setup_s, 2))


def _reads(engine: Engine, hop_samples: int, early_take: bool) -> Iterator[int]:
    """The samples of each call up to the one that completes the next window, processed by the
    caller between them: one hop; or with ``early_take`` the reads ``Engine.run`` makes of a paced
    file it keeps up with: woken when ``live_read_wanted`` samples are in, it takes what has come,
    whole blocks of the file source's (10 ms), at most ``LIVE_READ_S``."""
    if not early_take:
        yield hop_samples
        return
    rate_hz = engine.pipeline.input_rate_hz
    block, most = FileSource.paced_blocksize(rate_hz), int(rate_hz * LIVE_READ_S)
    seq = engine.mood_seq
    while engine.mood_seq == seq:
        yield min(most, -(-live_read_wanted(engine.pipeline) // block) * block)


PROFILE_HOPS = 40  # --profile's default: steady averages; torch.profiler's events take ~0.3 s a hop to read


def profile(
    name: str, backend: str, hop_s: float, hops: int = PROFILE_HOPS, rows: int = 12, early_take: bool = False
) -> str:
    """Where one hop's time goes, by operator and input shape (torch.profiler; eager backends)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = models.resolve(name).eval()
    fe = model.frontend
    runner = make_runner(model, backend, "cpu")
    windowing = Windowing(hop_s=hop_s)
    engine = Engine(None, [Member(name, model, runner)], windowing, None, FeedConfig(), compute="cpu")
    engine.open(fe.sample_rate_hz)
    hop, _, k, _ = effective_windows(model, windowing)
    rng = np.random.default_rng(0)
    noise = lambda n: 0.1 * rng.standard_normal(n).astype(np.float32)  # noqa: E731
    engine.process(noise((model.segment_frames + 2) * fe.hop_length + (k + 5) * hop * fe.hop_length))
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(hops):
            for samples in _reads(engine, hop * fe.hop_length, early_take):
                engine.process(noise(samples))
    events = sorted(prof.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total_ms = sum(e.self_cpu_time_total for e in events) / 1000 / hops
    taken = EARLY_LABEL if early_take else ""
    lines = [f"{name}, {backend}, hop {hop / fe.frame_rate_hz:.3g} s{taken}: {total_ms:.2f} ms of operators per hop",
             f"{'ms per hop':>10} {'calls':>6}  operator, input shapes"]  # fmt: skip
    for e in events[:rows]:
        shapes = ", ".join(str(tuple(s)) for s in e.input_shapes if s)[:80]
        lines.append(f"{e.self_cpu_time_total / 1000 / hops:>10.2f} {e.count / hops:>6.1f}  {e.key} {shapes}")
    return "\n".join(lines)


def table(results: list[StageTimes]) -> str:
    columns = (*((EARLY,) if any(EARLY in r.samples_ms for r in results) else ()), *STAGES, "hop")
    # The hops each p99 is over: a short run's p99 is its slowest hop or two.
    header = f"{'model':<20} {'backend':<7} {'device':<6} {'hops':>5} " + " ".join(
        f"{s + ' p50/p99':>19}" for s in columns
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.skipped:
            lines.append(f"{r.model:<20} {r.backend:<7} {r.device:<6} {'':>5} skipped: {r.skipped}")
            continue
        p = r.percentiles()
        cells = " ".join(
            f"{p[s]['p50']:>9.2f}/{p[s]['p99']:<9.2f}" if s in p else f"{'-':^19}" for s in columns
        )
        hops = len(next(iter(r.samples_ms.values()), []))
        lines.append(f"{r.model:<20} {r.backend:<7} {r.device:<6} {hops:>5} {cells}")
    return "\n".join(lines)


def plot(results: list[StageTimes], path: str, alternatives_report: dict | None = None) -> None:
    """Stacked p50 per stage, one bar per model × backend, with the p99 of the whole hop marked;
    beside it, the alternatives panel when the run has one."""
    plt = pyplot()

    results = [r for r in results if not r.skipped]
    labels = [f"{r.model}\n{r.backend}/{r.device}" for r in results]
    width = max(6, 1.6 * len(results))
    if alternatives_report:
        fig, (ax, ax_alt) = plt.subplots(1, 2, figsize=(width + 7, 4.5), width_ratios=[width, 7])
        alternatives.plot(alternatives_report, ax_alt)
    else:
        fig, ax = plt.subplots(figsize=(width, 4))
    bottom = np.zeros(len(results))
    for stage in (EARLY, *STAGES):
        if not any(stage in r.samples_ms for r in results):
            continue
        values = np.array([r.percentiles().get(stage, {"p50": 0.0})["p50"] for r in results])
        ax.bar(labels, values, bottom=bottom, label=stage)
        bottom += values
    ax.scatter(
        labels,
        [r.percentiles()["hop"]["p99"] for r in results],
        color="k",
        marker="_",
        s=400,
        label="hop p99",
    )
    ax.set_ylabel("ms per hop")
    ax.set_title("per-hop processing time by stage (p50 stacked)")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def run(
    models: list[str],
    backends: list[str],
    device: str,
    seconds: float,
    warmup: int,
    alternatives_model: str | None = None,
    hop_s: float = 1.0,
    early_take: bool = False,
    paced: bool = False,
) -> dict:
    results = []
    hops = max(3, int(seconds / hop_s))
    with Publisher("tcp://127.0.0.1:0") as publisher:
        for name in models:
            for backend in backends:
                results.append(
                    measure(name, backend, device, hops, warmup, publisher, hop_s, early_take, paced)
                )
    extra = {}
    if alternatives_model:
        extra["alternatives"] = alternatives.measure(alternatives_model, device, hops, warmup)
        extra["alternatives_table"] = alternatives.table(extra["alternatives"])
    resolved = {name: models_module.resolve(name) for name in models}  # loaded once for the report
    return {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "hop_s": hop_s,
        # The hop each model ran at: --hop in its whole frames (musicnn's 0.25 s is 16 frames, 0.256 s).
        "model_hop_s": {
            name: round(effective_windows(model, Windowing(hop_s=hop_s))[1], 4)
            for name, model in resolved.items()
        },
        "early_take_s": EARLY_TAKE_S if early_take else None,
        "paced": paced,
        "encoder_gflop_per_segment": {
            name: round(encoder_gflop(model), 3) for name, model in resolved.items()
        },
        "results": [_result(r) for r in results],
        "table": table(results),
        **extra,
        "_objects": results,
    }


def _result(r: StageTimes) -> dict:
    if r.skipped:
        return {"model": r.model, "backend": r.backend, "device": r.device, "skipped": r.skipped}
    return {
        "model": r.model,
        "backend": r.backend,
        "device": r.device,
        "hops": len(r.samples_ms["mel"]),
        "setup_s": r.setup_s,
        "ms": r.percentiles(),
    }


def add_parser(sub) -> None:
    p = sub.add_parser(
        "latency",
        help="per-stage time of one hop, per model and backend",
        description="Per-stage time of one hop of the real engine, driven by hand (new mel frames, encoder, pooling + heads, the "
        "publish step: smoothing, the message, its send), p50/p95/p99 after warm-up, per model x backend x device.",
    )
    p.add_argument(
        "--models", default="default,musicnn-msd", help="comma-separated, or 'all' (default,musicnn-msd)"
    )
    p.add_argument(
        "--backends",
        default="torch,onnx",
        help="comma-separated: torch (musicnn's streaming encoder where the model has one), torch-whole "
        "(every window encoded whole), onnx, compile (torch.compile'd encoder; slow to start) (torch,onnx)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--seconds", type=number(1, what="the seconds"), default=60, help="seconds of audio per model (60)"
    )
    p.add_argument(
        "--hop",
        type=number(*HOP_RANGE_S, what="a hop in seconds"),
        default=1.0,
        metavar="S",
        help="the hop, as listen's --hop (1.0; 0.992 s in whole frames)",
    )
    p.add_argument(
        "--warmup", type=number(0, kind=int, what="the hops"), default=5, help="hops before measuring (5)"
    )
    p.add_argument(
        "--early-take",
        action="store_true",
        help="each hop in the reads listen makes of a paced file (10 ms blocks, at most 0.25 s a read): the "
        f"'early' column sums those before the window's last {EARLY_TAKE_S * 1000:g} ms (their mel, and with the "
        "torch backend the encoder's work done ahead), the other columns are the last read (what a window's "
        "lag holds, the message's send included); 'hop' is their sum",
    )
    p.add_argument(
        "--paced",
        action="store_true",
        help="feed the audio in real time (--seconds of it take that long): the loop sleeps between reads "
        "as listen's does, so each hop starts with cold caches, as a live stream's does; without it, "
        "hops run back to back",
    )
    p.add_argument(
        "--alternatives",
        default="default",
        metavar="MODEL",
        help="also time, in the same run, the hand-rolled librosa / torchaudio pipelines and ours for "
        "this model, as ratios to ours (default: the default model); 'none' to skip them",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--profile",
        nargs="?",
        const=PROFILE_HOPS,
        type=number(1, 1000, kind=int, what="--profile's hops"),
        metavar="HOPS",
        help="also print where each model's hop goes, by operator (torch.profiler; the first eager "
        f"backend), averaged over HOPS hops ({PROFILE_HOPS}; each adds ~0.3 s of the profiler's own "
        "processing on a 2-core CPU)",
    )
    p.add_argument("--json", type=output_file, help="write the figures as JSON here")
    p.add_argument("--plot", type=output_file, help="write a PNG chart here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    names = models.available() + ["default"] if args.models == "all" else args.models.split(",")
    backends = args.backends.split(",")
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        parser.error(f"unknown backend(s) {bad}; backends: {', '.join(BACKENDS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is available")
    if args.device == "cuda" and "onnx" in backends:
        print(
            "note: the onnx backend places itself (CUDA provider when ONNX Runtime has it)", file=sys.stderr
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        alternatives_model = None if args.alternatives == "none" else args.alternatives
        report = run(
            names,
            backends,
            args.device,
            args.seconds,
            args.warmup,
            alternatives_model,
            args.hop,
            args.early_take,
            args.paced,
        )
    except (models.UnknownModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = report["machine"]
    print(f"{machine_line(m)}; torch threads {m['torch_threads']}")
    flops = ", ".join(f"{name} {g:.2f}" for name, g in report["encoder_gflop_per_segment"].items())
    print(f"encoder GFLOP per segment (whole window): {flops}")
    early = (EARLY_LABEL if args.early_take else "") + (", paced in real time" if args.paced else "")
    hops = sorted(set(report["model_hop_s"].values()))
    in_frames = f" ({' / '.join(f'{h:g}' for h in hops)} s in whole frames)" if hops != [args.hop] else ""
    print(f"milliseconds per hop of {report['hop_s']:g} s{in_frames}{early} (p50/p99)")
    print(report["table"])
    if "alternatives" in report:
        a = report["alternatives"]
        unpaced = " (back to back: --paced times the engine only)" if args.paced else ""
        print(
            f"\nalternatives, {a['model']} model, per hop of {a['hop_s']:g} s (one {a['segment_s']:g} s "
            f"segment){unpaced}: milliseconds p50/p99, and the ratio of each to ours (its time / ours)"
        )
        print(f"ours = {a['ours']}")
        print(report["alternatives_table"])
    if args.profile:
        eager = [b for b in backends if b in ("torch", "torch-whole")]
        for name in names if eager else []:
            print("\n" + profile(name, eager[0], args.hop, hops=args.profile, early_take=args.early_take))
    if args.json:
        with open(args.json, "w") as f:
            f.write(to_json(report) + "\n")
    if args.plot:
        plot(report["_objects"], args.plot, report.get("alternatives"))
    return 0
