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
import json
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import models
from bench import alternatives
from models.runners import BACKENDS, make_runner
from realtime.analyzer import TagMerger, Windowing, effective_windows
from realtime.feed import SCHEMA_VERSION
from realtime.frontend import StreamingMel
from realtime.publisher import Publisher
from realtime.smoothing import Hysteresis, Smoother

STAGES = ("mel", "encoder", "pool_heads", "feed")


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
        out = {}
        for stage, values in self.samples_ms.items():
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            out[stage] = {
                "p50": round(float(p50), 3),
                "p95": round(float(p95), 3),
                "p99": round(float(p99), 3),
            }
        total = np.sum([self.samples_ms[s] for s in STAGES], axis=0)
        p50, p95, p99 = np.percentile(total, [50, 95, 99])
        out["hop"] = {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}
        return out


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class FeedStep:
    """The feed stage of one hop, as the engine does it: sigmoid, smoothing, hysteresis, JSON, send."""

    def __init__(self, name: str, heads: dict, publisher: Publisher):
        self.name, self.heads, self.publisher = name, heads, publisher
        self.merger = TagMerger(heads)
        self.smoother = Smoother(2.0)
        self.hysteresis = Hysteresis(len(self.merger.names), 0.3, 0.2)

    def __call__(self, seq: int, logits: dict[str, np.ndarray]) -> dict:
        probs = {h: 1 / (1 + np.exp(-logits[h][0])) for h in self.heads}
        tags = self.smoother.update(self.merger.tags(probs), 1.0)
        active = self.hysteresis.update(tags)
        message = {
            "schema": SCHEMA_VERSION,
            "seq": seq,
            "model": self.name,
            "t_capture": time.time(),
            "t_stream": float(seq),
            "hop_s": 1.0,
            "context_s": 3.0,
            "smooth_s": 2.0,
            "silent": False,
            "tags": {n: round(float(p), 5) for n, p in zip(self.merger.names, tags, strict=True)},
            "active": [n for n, on in zip(self.merger.names, active, strict=True) if on],
            "valence": None,
            "arousal": None,
        }
        self.publisher.send("mood", message)
        return message


def measure(name: str, backend: str, device: str, hops: int, warmup: int, publisher: Publisher) -> StageTimes:
    """Time ``hops`` hops of the engine's stages for one model and backend."""
    model = models.resolve(name).eval()
    fe = model.frontend
    patch = torch.randn(1, fe.n_mels, model.segment_frames, device=device)
    t_setup = time.perf_counter()
    try:
        runner = make_runner(model, backend, device)
        runner.warm_up()  # an ONNX export or a compilation happens here
    except Exception as exc:  # e.g. torch.compile without a working C++ compiler: say so, go on
        return StageTimes(name, backend, device, {s: [] for s in STAGES}, skipped=_reason(exc))
    setup_s = time.perf_counter() - t_setup
    hop, _, k, _ = effective_windows(model, Windowing())
    hop_samples = hop * fe.hop_length
    mel = StreamingMel(fe, device)
    rng = np.random.default_rng(0)
    # Fill the mel history with one segment first, as a running stream has it.
    mel.push(0.1 * rng.standard_normal(model.segment_frames * fe.hop_length).astype(np.float32))
    feed = FeedStep(name, model.heads, publisher)
    embeddings = [runner.encode(patch)[0] for _ in range(k)]
    samples = {stage: [] for stage in STAGES}
    for i in range(warmup + hops):
        audio = 0.1 * rng.standard_normal(hop_samples).astype(np.float32)
        t0 = time.perf_counter()
        mel.push(audio)
        _sync(device)
        t1 = time.perf_counter()
        embedding = runner.encode(patch)[0]
        _sync(device)
        t2 = time.perf_counter()
        embeddings = embeddings[1:] + [embedding]
        logits = runner.pool_predict(torch.stack(embeddings).unsqueeze(0))
        t3 = time.perf_counter()
        feed(i, logits)
        t4 = time.perf_counter()
        if i >= warmup:
            for stage, (a, b) in zip(STAGES, ((t0, t1), (t1, t2), (t2, t3), (t3, t4)), strict=True):
                samples[stage].append((b - a) * 1000.0)
    return StageTimes(name, backend, device, samples, setup_s=round(setup_s, 2))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def table(results: list[StageTimes]) -> str:
    header = f"{'model':<20} {'backend':<7} {'device':<6} " + " ".join(
        f"{s + ' p50/p99':>19}" for s in (*STAGES, "hop")
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if r.skipped:
            lines.append(f"{r.model:<20} {r.backend:<7} {r.device:<6} skipped: {r.skipped}")
            continue
        p = r.percentiles()
        cells = " ".join(f"{p[s]['p50']:>9.2f}/{p[s]['p99']:<9.2f}" for s in (*STAGES, "hop"))
        lines.append(f"{r.model:<20} {r.backend:<7} {r.device:<6} {cells}")
    return "\n".join(lines)


def plot(results: list[StageTimes], path: str, alternatives_report: dict | None = None) -> None:
    """Stacked p50 per stage, one bar per model × backend, with the p99 of the whole hop marked;
    beside it, the alternatives panel when the run has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in results if not r.skipped]
    labels = [f"{r.model}\n{r.backend}/{r.device}" for r in results]
    width = max(6, 1.6 * len(results))
    if alternatives_report:
        fig, (ax, ax_alt) = plt.subplots(1, 2, figsize=(width + 7, 4.5), width_ratios=[width, 7])
        alternatives.plot(alternatives_report, ax_alt)
    else:
        fig, ax = plt.subplots(figsize=(width, 4))
    bottom = np.zeros(len(results))
    for stage in STAGES:
        values = np.array([r.percentiles()[stage]["p50"] for r in results])
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run(
    models: list[str],
    backends: list[str],
    device: str,
    seconds: float,
    warmup: int,
    alternatives_model: str | None = None,
) -> dict:
    results = []
    hops = max(10, int(seconds))  # one hop per second of audio
    with Publisher("tcp://127.0.0.1:0") as publisher:
        for name in models:
            for backend in backends:
                results.append(measure(name, backend, device, hops, warmup, publisher))
    extra = {}
    if alternatives_model:
        extra["alternatives"] = alternatives.measure(alternatives_model, device, hops, warmup)
        extra["alternatives_table"] = alternatives.table(extra["alternatives"])
    return {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
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


def to_json(report: dict) -> str:
    return json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=1)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "latency",
        help="per-stage time of one hop, per model and backend",
        description="Per-stage time of one hop (new mel frames, encoder, pooling + heads, smoothing + "
        "publish), p50/p95/p99 after warm-up, per model x backend x device.",
    )
    p.add_argument(
        "--models", default="default,musicnn-msd", help="comma-separated, or 'all' (default,musicnn-msd)"
    )
    p.add_argument(
        "--backends",
        default="torch,onnx",
        help="comma-separated: torch, onnx, compile (torch.compile'd encoder; slow to start) (torch,onnx)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seconds", type=float, default=60, help="seconds of audio (hops of ~1 s) per model (60)")
    p.add_argument("--warmup", type=int, default=5, help="hops before measuring (5)")
    p.add_argument(
        "--alternatives",
        default="default",
        metavar="MODEL",
        help="also time, in the same run, the hand-rolled librosa / torchaudio pipelines and ours for "
        "this model, as ratios to ours; 'none' to skip (default)",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", help="write the figures as JSON here")
    p.add_argument("--plot", help="write a PNG chart here")
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
        report = run(names, backends, args.device, args.seconds, args.warmup, alternatives_model)
    except (models.UnknownModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = report["machine"]
    print(
        f"{m['cpu']}, {m['cores']} threads, torch {m['torch']}, onnxruntime {m['onnxruntime']}, GPU {m['gpu']}"
    )
    print("milliseconds per hop (p50/p99)")
    print(report["table"])
    if "alternatives" in report:
        a = report["alternatives"]
        print(
            f"\nalternatives, {a['model']} model, per hop of {a['hop_s']:g} s (one {a['segment_s']:g} s "
            "segment): milliseconds p50/p99, and the ratio of each to ours (its time / ours)"
        )
        print(f"ours = {a['ours']}")
        print(report["alternatives_table"])
    if args.json:
        with open(args.json, "w") as f:
            f.write(to_json(report) + "\n")
    if args.plot:
        plot(report["_objects"], args.plot, report.get("alternatives"))
    return 0
