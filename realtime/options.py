"""Command-line options shared by ``listen`` and ``analyze``, and building what they name.

Parsing and checking the options imports no torch and no model: ``listen`` opens the source and
binds the feed's port before anything heavy loads, so a wrong device, file or port is said at
once.  The ``build_*`` functions import what they build.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from moodstream.cli import number
from realtime.smoothing import MOOD_STATES

if TYPE_CHECKING:
    import models
    from models.runners import Runner
    from realtime.analyzer import Member, Windowing

# The names and defaults the options offer, kept here so that parsing loads nothing heavy
# (realtime.analyzer and realtime.engine take theirs from here; a test checks the other two
# against models.DEFAULT_NAME and models.runners.BACKENDS).
DEFAULT_MODEL = "default"
RESAMPLERS = ("hq", "low-delay")
BACKEND_NAMES = ("torch", "torch-whole", "onnx", "compile")
DWELL_S = 4.0


@dataclass(frozen=True)
class Reaction:
    """A ``--reaction`` preset: how fast the feed follows the music, against how steady it stays.

    Measured with ``python -m bench reaction`` (bench/RESULTS.md, "Reaction"): t50/t90 are the
    stream seconds the arousal takes to cover half / 90 % of a calm<->energetic change, flicker
    the state changes per minute in steady music, state the seconds until the mood state shows the
    new music's (medians over 8 spliced pairs of 4Q clips).
    """

    hop_s: float
    smooth_s: float  # the smoothing time constant at rest
    follow: float  # how much it shrinks while the estimate moves (realtime.smoothing.Smoother)
    dwell_s: float  # how long another mood state must lead to take over...
    margin: float  # ...and by how much (in the states' probabilities)
    measured: str  # what bench reaction gave, for --help


REACTIONS = {
    "fast": Reaction(0.25, 1.0, 20.0, 1.0, 0.15, "t50 0.49 s, t90 1.90 s, state 3.6 s, flicker 4.3 / min"),
    "balanced": Reaction(0.25, 2.0, 20.0, 3.0, 0.3, "t50 0.49 s, t90 1.90 s, state 6.5 s, flicker 0 / min"),
    "stable": Reaction(1.0, 2.0, 0.0, DWELL_S, 0.1, "t50 2.76 s, t90 5.74 s, state 8.2 s, flicker 0 / min"),
}
# listen's (analyze has no smoothing and hops of 1 s): lights should change when the music does,
# and balanced follows a change within a second without flickering in steady music.
DEFAULT_REACTION = "balanced"
HOP_RANGE_S = (0.05, 600.0)  # a hop shorter than ~3 mel frames is noise; longer than 10 min, a file job
CONTEXT_RANGE_S = (0.05, 600.0)  # below one segment: one segment is pooled


def refuse(message: str) -> NoReturn:
    """The exit-status convention of every command: 2, with a one-line ``error: ...`` on stderr,
    when it cannot start (a bad option, input, source, port or model); 1 when what it runs fails
    on the way (a source lost with --no-reconnect); 0 on a clean end or a stop asked for."""
    print(message if message.startswith("error: ") else f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def add_model_options(
    parser: argparse.ArgumentParser,
    smooth_default: float,
    reactions: bool = False,
    threads: tuple[int, str] | None = None,
    several_models: bool = False,
    reaction_default: str | None = DEFAULT_REACTION,
) -> None:
    """``reactions``: --reaction presets set the hop, smoothing and dwell unless those are given;
    without one (``reaction_default`` None: analyze's default) --hop 1, --smooth ``smooth_default``
    and --dwell 4.  ``threads``: --threads' default and why, for --help (None: the library's).
    ``several_models``: --model takes a comma-separated list (listen: one feed)."""
    g = parser.add_argument_group("model and windows")
    # What --hop, --smooth and --dwell are without a preset (check_model_options fills them in).
    parser.set_defaults(plain_windows=(1.0, smooth_default, DWELL_S))
    if reactions:
        plain = f"none: --hop 1, --smooth {smooth_default:g}, --dwell {DWELL_S:g}"
        g.add_argument(
            "--reaction",
            choices=tuple(REACTIONS),
            default=reaction_default,
            help="how fast the mood follows the music against how steady it stays: sets --hop, --smooth "
            "and --dwell (each may still be given). balanced and fast: a quarter-second hop and a "
            "smoothing that follows a real change within a second but not jitter (fast: the state "
            "changes sooner, and flickers more); stable: hops of 1 s, plain smoothing (a third of "
            f"the compute). Default {reaction_default or plain}. "
            "Measured (bench reaction): "
            + "; ".join(
                f"{name} (hop {r.hop_s:g} s, smooth {r.smooth_s:g} s{', adaptive' if r.follow else ''}, "
                f"dwell {r.dwell_s:g} s): {r.measured}"
                for name, r in REACTIONS.items()
            ),
        )
    preset = REACTIONS[reaction_default] if reactions and reaction_default else None
    # The help of --hop, --smooth and --dwell: the default preset's value, else the plain one.
    given_by = "" if preset or not reactions else ", or the --reaction's"
    g.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a registered model name (default {DEFAULT_MODEL}) or a trained artifact directory"
        + (
            "; several, comma-separated (e.g. default,jamendo-baseline: one feed, the first model sets "
            "the hop)"
            if several_models
            else ""
        )
        + "; python -m models list shows them all",
    )
    g.add_argument(
        "--hop",
        type=number(*HOP_RANGE_S, what="the hop in seconds"),
        default=None,
        metavar="S",
        help=f"seconds between analyses, {HOP_RANGE_S[0]:g}..{HOP_RANGE_S[1]:g} (default "
        + (f"the --reaction's: {preset.hop_s:g})" if preset else f"1.0{given_by})"),
    )
    g.add_argument(
        "--context",
        type=number(*CONTEXT_RANGE_S, what="the context in seconds"),
        default=6.0,
        metavar="S",
        help="seconds of recent audio pooled into each result (default 6.0; at least one segment, at most what the "
        "model pools: the default model pools one, 2.99 s, as listen's start-up line says)",
    )
    g.add_argument(
        "--smooth",
        type=number(0.0, 3600.0, what="the smoothing time constant in seconds"),
        default=None,
        metavar="S",
        help="smoothing time constant in seconds, 0 = none (default "
        + (f"the --reaction's: {preset.smooth_s:g})" if preset else f"{smooth_default:g}{given_by})"),
    )
    g.add_argument(
        "--on",
        type=number(0.0, 1.0, what="a probability"),
        default=0.3,
        help="a tag turns active at this probability (0.3; trained models use their fitted per-tag thresholds)",
    )
    g.add_argument(
        "--off",
        type=number(0.0, 1.0, what="a probability"),
        default=0.2,
        help="an active tag turns off below this (0.2)",
    )
    g.add_argument(
        "--dwell",
        type=number(0.0, 600.0, what="the dwell in seconds"),
        default=None,
        metavar="S",
        help=f"the mood state ({', '.join(MOOD_STATES)}) changes "
        "only after another state has led for this long (default "
        + (f"the --reaction's: {preset.dwell_s:g} s" if preset else f"{DWELL_S:g} s{given_by}")
        + "; 0: at once)",
    )
    g.add_argument(
        "--silence-db",
        type=number(-200.0, 0.0, what="a level in dBFS"),
        default=-60.0,
        metavar="DBFS",
        help="a hop quieter than this is reported as silent (default -60 dBFS)",
    )
    g.add_argument(
        "--resampler",
        choices=("auto", *RESAMPLERS),
        default="auto",
        help="how audio at another rate than the model's is resampled: hq (soxr HQ; holds back "
        "~20 ms, in bursts) or low-delay (a linear-phase FIR, ~2.6 ms); auto (default): low-delay "
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
        choices=BACKEND_NAMES,
        default="torch",
        help="run the model with PyTorch (default; musicnn-based models share the work of overlapping "
        "windows: a streaming encoder), PyTorch encoding every window whole (torch-whole), ONNX Runtime "
        "(CUDA provider when present; the artifact's exported graphs, else exported once into the "
        "cache) or torch.compile",
    )
    g.add_argument(
        "--threads",
        type=number(1, 1024, kind=int, what="the thread count"),
        default=None if threads is None else threads[0],
        metavar="N",
        help="CPU threads for torch / ONNX Runtime (default: "
        + ("the library's)" if threads is None else f"{threads[0]}: {threads[1]})"),
    )


def check_model_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The checks argparse cannot make alone; exits through ``parser.error``.  Fills in what the
    --reaction preset sets and was not given (follow and margin always come from it)."""
    chosen = getattr(args, "reaction", None)
    reaction = REACTIONS[chosen or "stable"]
    values = (reaction.hop_s, reaction.smooth_s, reaction.dwell_s) if chosen else args.plain_windows
    for name, value in zip(("hop", "smooth", "dwell"), values, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.follow = reaction.follow if chosen else 0.0
    args.state_margin = reaction.margin
    if not 0 <= args.off < args.on <= 1:
        parser.error("need 0 <= --off < --on <= 1")
    model_names(args.model)


def check_model_names(args: argparse.Namespace) -> None:
    """Every ``--model`` name is one that can be loaded (the registry is imported: torch loads)."""
    import models

    for name in model_names(args.model):
        try:
            models.check_name(name)
        except models.UnknownModelError as exc:
            refuse(f"error: {exc}; or 'default', or a trained artifact directory")


def compute_device(choice: str) -> str:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        refuse("error: --compute cuda, but no CUDA device is available")
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def model_names(spec: str) -> list[str]:
    """``--model a,b`` -> ["a", "b"]; exits with a clear message on an empty or repeated name."""
    names = [n.strip() for n in spec.split(",")]
    if not all(names):
        refuse(f"error: --model {spec!r} has an empty name (comma-separated names, no spaces needed)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        refuse(f"error: --model names {', '.join(repeated)} more than once")
    return names


def _load(name: str) -> models.SegmentModel:
    import models
    from models.weights import WeightsError

    try:
        model = models.resolve(name)
    except models.UnknownModelError as exc:
        refuse(f"error: {exc}; or 'default', or a trained artifact directory")
    except (ValueError, WeightsError) as exc:
        refuse(f"error: {name}: {exc}")
    if not model.pretrained:
        print(f"WARNING: {name} has untrained weights; its output is meaningless", file=sys.stderr)
    return model


def _windowing(args: argparse.Namespace) -> Windowing:
    import torch

    from realtime.analyzer import Windowing

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        resampler = "hq" if args.resampler == "auto" else args.resampler  # listen decides auto per source
        return Windowing(
            hop_s=args.hop, context_s=args.context, silence_dbfs=args.silence_db, resampler=resampler
        )
    except ValueError as exc:
        refuse(f"error: {exc}")


def build_model(args: argparse.Namespace) -> tuple[models.SegmentModel, Windowing, str]:
    """The one model, windowing and compute device the options name; exits with a clear message if bad."""
    windowing = _windowing(args)
    names = model_names(args.model)
    if len(names) > 1:
        refuse(f"error: this command runs one model at a time, not {args.model!r}")
    return _load(names[0]), windowing, compute_device(args.compute)


def build_members(args: argparse.Namespace) -> tuple[list[Member], Windowing, str]:
    """Every model ``--model a,b,...`` names, each with its runner, the windowing and compute device."""
    from realtime.analyzer import Member

    windowing = _windowing(args)
    compute = compute_device(args.compute)
    members = []
    for name in model_names(args.model):
        model = _load(name)
        members.append(Member(name, model, build_runner(args, model, compute, name)))
    return members, windowing, compute


def build_runner(
    args: argparse.Namespace, model: models.SegmentModel, device: str, name: str | None = None
) -> Runner:
    """The backend that runs the model's streaming parts (encoder; pooling + heads)."""
    from models.runners import make_runner

    try:
        runner = make_runner(model, args.backend, device, args.threads)
        runner.warm_up()  # torch.compile compiles (and is checked against eager mode) here
    except Exception as exc:  # an export or a compilation that fails here: one line, not a traceback
        refuse(f"error: {name or args.model}: the {args.backend} backend cannot run it: {exc}")
    if args.backend == "onnx":
        print(f"{name or args.model}: ONNX Runtime with {', '.join(runner.providers)}", file=sys.stderr)
    return runner
