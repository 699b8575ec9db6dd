"""Command-line options shared by ``listen`` and ``analyze``, and building what they name."""

from __future__ import annotations

import argparse
import sys

import torch

import models
from models.runners import BACKENDS, Runner, make_runner
from models.weights import WeightsError
from realtime.analyzer import RESAMPLERS, Member, Windowing

DEFAULT_MODEL = models.DEFAULT_NAME


def add_model_options(parser: argparse.ArgumentParser, smooth_default: float) -> None:
    g = parser.add_argument_group("model and windows")
    g.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a registered model name (default {DEFAULT_MODEL}) or a trained artifact directory; "
        f"listen takes several, comma-separated (e.g. default,jamendo-baseline: one feed, the first "
        f"model sets the hop); registered: {', '.join(models.available())}",
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
        "--on",
        type=float,
        default=0.3,
        help="a tag turns active at this probability (0.3; trained models use their fitted per-tag thresholds)",
    )
    g.add_argument("--off", type=float, default=0.2, help="an active tag turns off below this (0.2)")
    g.add_argument(
        "--silence-db",
        type=float,
        default=-60.0,
        metavar="DBFS",
        help="a hop quieter than this is reported as silent (default -60 dBFS)",
    )
    g.add_argument(
        "--resampler",
        choices=("auto", *RESAMPLERS),
        default="auto",
        help="how audio at another rate than the model's is resampled: hq (soxr HQ; holds back "
        "~20 ms, in bursts) or low-delay (a linear-phase FIR, ~2.5 ms); auto (default): low-delay "
        "for live sources (a device, stdin, --realtime), hq otherwise",
    )
    g.add_argument(
        "--compute",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the mel and the model run: cuda when present with auto (default)",
    )
    g.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default="torch",
        help="run the model with PyTorch (default), ONNX Runtime (CUDA provider when present; the "
        "artifact's exported graphs, else exported once into the cache) or torch.compile",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for torch / ONNX Runtime (default: the library's)",
    )


def check_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make alone; exits through ``parser.error``."""
    if not 0 <= args.off < args.on <= 1:
        parser.error("need 0 <= --off < --on <= 1")
    # Names are checked before a source or a port opens (nothing loads here).
    for name in model_names(args.model):
        try:
            models.check_name(name)
        except models.UnknownModelError as exc:
            raise SystemExit(f"error: {exc}; or 'default', or a trained artifact directory") from None


def compute_device(choice: str) -> str:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --compute cuda, but no CUDA device is available")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def model_names(spec: str) -> list[str]:
    """``--model a,b`` -> ["a", "b"]; exits with a clear message on an empty or repeated name."""
    names = [n.strip() for n in spec.split(",")]
    if not all(names):
        raise SystemExit(
            f"error: --model {spec!r} has an empty name (comma-separated names, no spaces needed)"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SystemExit(f"error: --model names {', '.join(repeated)} more than once")
    return names


def _load(name: str) -> models.SegmentModel:
    try:
        model = models.resolve(name)
    except models.UnknownModelError as exc:
        raise SystemExit(f"error: {exc}; or 'default', or a trained artifact directory") from None
    except (ValueError, WeightsError) as exc:
        raise SystemExit(f"error: {name}: {exc}") from None
    if not model.pretrained:
        print(f"WARNING: {name} has untrained weights; its output is meaningless", file=sys.stderr)
    return model


def _windowing(args: argparse.Namespace) -> Windowing:
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        resampler = "hq" if args.resampler == "auto" else args.resampler  # listen decides auto per source
        return Windowing(
            hop_s=args.hop, context_s=args.context, silence_dbfs=args.silence_db, resampler=resampler
        )
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def build_model(args: argparse.Namespace) -> tuple[models.SegmentModel, Windowing, str]:
    """The one model, windowing and compute device the options name; exits with a clear message if bad."""
    windowing = _windowing(args)
    names = model_names(args.model)
    if len(names) > 1:
        raise SystemExit(f"error: this command runs one model at a time, not {args.model!r}")
    return _load(names[0]), windowing, compute_device(args.compute)


def build_members(args: argparse.Namespace) -> tuple[list[Member], Windowing, str]:
    """Every model ``--model a,b,...`` names, each with its runner, the windowing and compute device."""
    windowing = _windowing(args)
    compute = compute_device(args.compute)
    members = []
    for name in model_names(args.model):
        model = _load(name)
        members.append(Member(name, model, build_runner(args, model, compute, name)))
    return members, windowing, compute


def build_runner(args: argparse.Namespace, model: models.SegmentModel, device: str, name: str | None = None) -> Runner:
    """The backend that runs the model's streaming parts (encoder; pooling + heads)."""
    try:
        runner = make_runner(model, args.backend, device, args.threads)
        runner.warm_up()  # torch.compile compiles (and is checked against eager mode) here
    except Exception as exc:  # an export or a compilation that fails here: one line, not a traceback
        raise SystemExit(f"error: {name or args.model}: the {args.backend} backend cannot run it: {exc}") from None
    if args.backend == "onnx":
        print(f"{name or args.model}: ONNX Runtime with {', '.join(runner.providers)}", file=sys.stderr)
    return runner
