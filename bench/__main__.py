"""python -m bench: latency measurements on the machine at hand.

python -m bench latency [--models default,musicnn-msd|all] [--backends torch,onnx]
                        [--device cpu|cuda] [--seconds N] [--json OUT] [--plot OUT.png]
"""

from __future__ import annotations

import argparse
import sys

import torch

import models
from bench import latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("latency", help="per-stage time of one hop, per model and backend")
    p.add_argument(
        "--models", default="default,musicnn-msd", help="comma-separated, or 'all' (default,musicnn-msd)"
    )
    p.add_argument("--backends", default="torch,onnx", help="comma-separated: torch, onnx (both)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seconds", type=float, default=60, help="seconds of audio (hops of ~1 s) per model (60)")
    p.add_argument("--warmup", type=int, default=5, help="hops before measuring (5)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", help="write the figures as JSON here")
    p.add_argument("--plot", help="write a PNG chart here")
    args = parser.parse_args(argv)
    names = models.available() + ["default"] if args.models == "all" else args.models.split(",")
    backends = args.backends.split(",")
    bad = [b for b in backends if b not in ("torch", "onnx")]
    if bad:
        parser.error(f"unknown backend(s) {bad}; backends: torch, onnx")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but no CUDA device is available")
    if args.device == "cuda" and "onnx" in backends:
        print(
            "note: the onnx backend places itself (CUDA provider when ONNX Runtime has it)", file=sys.stderr
        )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = latency.run(names, backends, args.device, args.seconds, args.warmup)
    except (models.UnknownModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{report['machine']['cpu']}, {report['machine']['cores']} threads, torch {report['machine']['torch']}, "
          f"onnxruntime {report['machine']['onnxruntime']}, GPU {report['machine']['gpu']}")  # fmt: skip
    print("milliseconds per hop (p50/p99)")
    print(report["table"])
    if args.json:
        with open(args.json, "w") as f:
            f.write(latency.to_json(report) + "\n")
    if args.plot:
        latency.plot(report["_objects"], args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
