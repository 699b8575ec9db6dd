"""Command-line options shared by ``listen`` and ``analyze``, and building what they name."""

from __future__ import annotations

import argparse
import sys
import tempfile

import torch

import models
from models.artifact import load_model
from models.export import OnnxRunner, TorchRunner
from models.weights import WeightsError
from realtime.analyzer import Windowing

DEFAULT_MODEL = "default"


def add_model_options(parser: argparse.ArgumentParser, smooth_default: float) -> None:
    g = parser.add_argument_group("model and windows")
    g.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a registered model name (default {DEFAULT_MODEL}) or a trained artifact directory; "
        f"registered: {', '.join(models.available())}",
    )
    g.add_argument(
        "--hop", type=float, default=1.0, metavar="S", help="seconds between analyses (default 1.0)"
    )
    g.add_argument(
        "--context",
        type=float,
        default=6.0,
        metavar="S",
        help="seconds of recent audio pooled into each result (default 6.0; at least one segment)",
    )
    g.add_argument(
        "--smooth",
        type=float,
        default=smooth_default,
        metavar="S",
        help=f"smoothing time constant in seconds, 0 = none (default {smooth_default})",
    )
    g.add_argument(
        "--silence-db",
        type=float,
        default=-60.0,
        metavar="DBFS",
        help="a hop quieter than this is reported as silent (default -60 dBFS)",
    )
    g.add_argument(
        "--compute",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the mel and the model run: cuda when present with auto (default)",
    )
    g.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="run the model with PyTorch (default) or ONNX Runtime (CUDA provider when present)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch / ONNX Runtime (default: the library's)",
    )


def compute_device(choice: str) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --compute cuda, but no CUDA device is available")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def build_model(args: argparse.Namespace) -> tuple[models.SegmentModel, Windowing, str]:
    """The model, windowing and compute device the options name; exits with a clear message if bad."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        windowing = Windowing(hop_s=args.hop, context_s=args.context, silence_dbfs=args.silence_db)
        model = load_model(args.model)
    except models.UnknownModelError as exc:
        raise SystemExit(f"error: {exc}; or 'default', or a trained artifact directory") from None
    except (ValueError, WeightsError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if not getattr(model, "pretrained", True):
        print(f"WARNING: {args.model} has untrained weights; its output is meaningless", file=sys.stderr)
    return model, windowing, compute_device(args.compute)


def build_runner(
    args: argparse.Namespace, model: models.SegmentModel, device: str
) -> TorchRunner | OnnxRunner:
    """The backend that runs the model's streaming parts (encoder; pooling + heads)."""
    if args.backend == "torch":
        return TorchRunner(model, device)
    # The sessions hold the graphs in memory once created: the exported files can go.
    with tempfile.TemporaryDirectory(prefix="moodstream-onnx-") as folder:
        runner = OnnxRunner(model.cpu(), folder, threads=args.threads)
    print(f"{args.model}: ONNX Runtime with {', '.join(runner.providers)}", file=sys.stderr)
    return runner
