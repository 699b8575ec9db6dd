"""python -m bench reaction: how fast the feed follows a change of mood, and how steady it stays.

Spliced pairs of real 4Q clips of contrasting arousal (a calm clip, Q3 or Q4, then an energetic
one, Q1 or Q2, and the reverse; 29 s each) go through the live analysis — the engine's
pipeline, smoothing, thresholds and mood state, exactly as ``listen`` runs them, fed as fast as
it goes (the smoothing and the dwell count stream time, so pace does not matter).  The models
run once per pair and hop; each setting replays the feed logic on the same windows.  Per model
and setting (a ``--reaction`` preset, or ``--smooth`` x ``--follow`` x ``--dwell`` at ``--hop``)
it reports, as the median over the pairs:

- t50 / t90: stream seconds after the splice until arousal has covered 50 % / 90 % of the step
  from the first clip's steady half (its last 14 s) to the second's (its last 14 s);
- state: stream seconds after the splice until the mood state first shows the state the second
  clip settles on (the scene change a lighting rig makes);
- flicker: changes of the mood state per minute inside those steady halves (the median over
  the pairs, and the mean).

A table, JSON (``--json``) and a PNG (``--plot``) like the other bench commands.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.harness import SHARED_AUDIO
from bench.report import check_list, check_models, command_line, machine, pyplot, save_figure, to_json
from moodstream.cli import number, output_file

# Each side of a pair: most of a 30 s 4Q clip.  Its steady half is its last 14 s, so the change
# at the splice (t90 plus the dwell: ~12 s at most) is over before the second side's steady half.
CLIP_S = 29.0
STEADY_S = 14.0
BLOCK_S = 0.1  # what is fed to the engine at a time
CALM, ENERGETIC = ("Q3", "Q4"), ("Q1", "Q2")


def pairs(count: int) -> list[tuple[Path, Path]]:
    """``count`` (first, second) clip pairs: calm -> energetic and energetic -> calm alternately,
    each quadrant pairing in turn (Q4->Q1, Q1->Q4, Q3->Q2, Q2->Q3, Q4->Q2, Q2->Q4, ...)."""
    by_q = {q: sorted((SHARED_AUDIO / q).glob("*.ogg")) for q in (*CALM, *ENERGETIC)}
    if not all(by_q.values()):
        raise SystemExit(f"error: the 4Q clips are missing under {SHARED_AUDIO}")
    combos = [("Q4", "Q1"), ("Q3", "Q2"), ("Q4", "Q2"), ("Q3", "Q1")]
    out = []
    for i in range(count):
        calm_q, energetic_q = combos[(i // 2) % len(combos)]
        k = i // (2 * len(combos))  # the next clips once every combination was used
        calm = by_q[calm_q][(7 * k + i) % len(by_q[calm_q])]
        energetic = by_q[energetic_q][(11 * k + i) % len(by_q[energetic_q])]
        out.append((calm, energetic) if i % 2 == 0 else (energetic, calm))
    return out


def spliced(first: Path, second: Path) -> tuple[np.ndarray, int]:
    parts, rate = [], None
    for path in (first, second):
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)
        if rate is not None and file_rate != rate:
            raise SystemExit(f"error: {path} is at {file_rate} Hz, not {rate}")
        rate = file_rate
        n = int(CLIP_S * rate)
        if len(audio) < n:
            raise SystemExit(f"error: {path} is shorter than {CLIP_S:g} s")
        parts.append(audio[:n].mean(axis=1))
    return np.concatenate(parts), rate


def windows_of(members, audio: np.ndarray, rate: int, hop_s: float) -> list:
    """The pipeline's windows for ``audio``: what the models say, before the feed logic (the
    smoothing, thresholds and state, which every setting then replays on the same windows)."""
    from realtime.analyzer import Pipeline, Windowing

    pipeline = Pipeline(members, rate, Windowing(hop_s=hop_s))
    block = int(BLOCK_S * rate)
    windows = []
    for start in range(0, len(audio), block):
        windows += pipeline.feed(audio[start : start + block, None])
    return windows + pipeline.finish()


def moods_of(
    members,
    windows: list,
    rate: int,
    hop_s: float,
    smooth_s: float,
    dwell_s: float,
    follow: float = 0.0,
    margin: float = 0.1,
) -> list[dict]:
    """The mood messages ``listen`` would publish for these windows (no feed: collected)."""
    from realtime.analyzer import Windowing
    from realtime.engine import Engine, FeedConfig

    moods: list[dict] = []
    config = FeedConfig(smooth_s=smooth_s, dwell_s=dwell_s, follow=follow, state_margin=margin)
    engine = Engine(None, members, Windowing(hop_s=hop_s), None, config, on_mood=moods.append)
    engine.open(rate)
    engine.handle(windows)
    return moods


def figures(moods: list[dict]) -> dict:
    """t50, t90 (s after the splice) and the state's flicker (changes per minute) of one pair."""
    t = np.array([m["t_stream"] for m in moods])
    arousal = np.array([np.nan if m["arousal"] is None else m["arousal"] for m in moods])
    before = np.nanmedian(arousal[(t >= CLIP_S - STEADY_S) & (t < CLIP_S)])
    after = np.nanmedian(arousal[t >= 2 * CLIP_S - STEADY_S])
    step = after - before
    reached = {}
    for share in (0.5, 0.9):
        covered = (arousal - before) / step if step else np.zeros_like(arousal)
        late = np.nonzero((t >= CLIP_S) & (covered >= share))[0]
        reached[share] = float(t[late[0]] - CLIP_S) if len(late) else None
    # The state's own reaction: when it first shows the state the second clip settles on.
    settled = [m["state"] for m in moods if m["t_stream"] >= 2 * CLIP_S - STEADY_S]
    target = max(set(settled), key=settled.count) if settled else None
    shown = [m["t_stream"] - CLIP_S for m in moods if m["t_stream"] >= CLIP_S and m["state"] == target]
    changes, steady_s = 0, 0.0
    for lo, hi in ((CLIP_S - STEADY_S, CLIP_S), (2 * CLIP_S - STEADY_S, 2 * CLIP_S)):
        states = [m["state"] for m in moods if lo <= m["t_stream"] < hi]
        changes += sum(a != b for a, b in itertools.pairwise(states))
        steady_s += STEADY_S
    return {
        "step": float(step),
        "t50_s": reached[0.5],
        "t90_s": reached[0.9],
        "state_s": shown[0] if shown else None,
        "flicker_per_min": changes / (steady_s / 60.0),
        "_t": t.tolist(),
        "_arousal": arousal.tolist(),
        "_states": [m["state"] for m in moods],
    }


def _median(values) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def settings_of(args: argparse.Namespace, smooths, dwells, follows) -> list[dict]:
    """What to measure: each --reaction preset as listen runs it, else the grid of --smooth x
    --follow x --dwell at --hop (state margin 0.1, as stable)."""
    from realtime.options import REACTIONS

    if args.reaction:
        return [
            {"reaction": name, "hop_s": r.hop_s, "smooth_s": r.smooth_s, "follow": r.follow,
             "dwell_s": r.dwell_s, "margin": r.margin}
            for name, r in ((n, REACTIONS[n]) for n in args.reaction)
        ]  # fmt: skip
    return [
        {"reaction": None, "hop_s": args.hop, "smooth_s": s, "follow": f, "dwell_s": d, "margin": 0.1}
        for s, f, d in itertools.product(smooths, follows, dwells)
    ]


def run(args: argparse.Namespace, names: list[str], settings: list[dict]) -> dict:
    import models
    from models.runners import TorchRunner
    from realtime.analyzer import Member

    clips = pairs(args.pairs)
    audio = [spliced(a, b) for a, b in clips]
    results = []
    for name in names:
        model = models.resolve(name)
        members = [Member(name, model, TorchRunner(model, "cpu"))]
        if not any(h.kind == "valence_arousal" for h in model.heads.values()):
            print(f"note: {name} has no valence/arousal head: nothing to measure", file=sys.stderr)
            continue
        windows = {}  # per hop: the models run once per pair and hop
        for setting in settings:
            hop_s = setting["hop_s"]
            if hop_s not in windows:
                windows[hop_s] = [(windows_of(members, x, rate, hop_s), rate) for x, rate in audio]
            per_pair = [
                figures(moods_of(members, w, rate, hop_s, setting["smooth_s"], setting["dwell_s"],
                                 setting["follow"], setting["margin"]))
                for w, rate in windows[hop_s]
            ]  # fmt: skip
            results.append(
                {
                    "model": name,
                    **setting,
                    "t50_s": _median(p["t50_s"] for p in per_pair),
                    "t90_s": _median(p["t90_s"] for p in per_pair),
                    "state_s": _median(p["state_s"] for p in per_pair),
                    "flicker_per_min": _median(p["flicker_per_min"] for p in per_pair),
                    "flicker_mean_per_min": float(np.mean([p["flicker_per_min"] for p in per_pair])),
                    "pairs": per_pair,
                }
            )
            if not args.quiet:
                r = results[-1]
                said = ", ".join(f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}"
                                 for key, value in setting.items())  # fmt: skip
                t50 = "n/a" if r["t50_s"] is None else f"{r['t50_s']:.2f} s"
                print(f"{name} ({said}): t50 {t50}, flicker {r['flicker_per_min']:.2f}/min", file=sys.stderr)
    return {
        "command": command_line(),
        "machine": machine(),
        "pairs": [[str(a.relative_to(SHARED_AUDIO)), str(b.relative_to(SHARED_AUDIO))] for a, b in clips],
        "results": results,
    }


def _cell(value, fmt: str = ".1f") -> str:
    return "n/a" if value is None else format(value, fmt)


def table(report: dict) -> str:
    lines = [
        f"{report['machine']['cpu']}; {len(report['pairs'])} spliced pair{'s' if len(report['pairs']) != 1 else ''} of 4Q clips, {CLIP_S:g} s each; "
        f"medians over the pairs",
        f"{'model':<10} {'reaction':<9} {'hop s':>6} {'smooth s':>9} {'follow':>7} {'dwell s':>8} {'margin':>7} "
        f"{'t50 s':>6} {'t90 s':>6} {'state s':>8} {'flicker/min (mean)':>19}",
        "-" * 105,
    ]
    for r in report["results"]:
        lines.append(
            f"{r['model']:<10} {r['reaction'] or '-':<9} {r['hop_s']:>6g} {r['smooth_s']:>9g} {r['follow']:>7g} "
            f"{r['dwell_s']:>8g} {r['margin']:>7g} {_cell(r['t50_s'], '.2f'):>6} {_cell(r['t90_s'], '.2f'):>6} {_cell(r['state_s']):>8} "
            f"{_cell(r['flicker_per_min'], '.2f'):>11} ({r['flicker_mean_per_min']:.2f})"
        )
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    plt = pyplot()

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    first = report["results"][0]
    for pair in first["pairs"]:
        left.plot(np.array(pair["_t"]) - CLIP_S, pair["_arousal"], alpha=0.7)
    left.axvline(0, color="k", linestyle=":")
    left.set_xlabel("stream seconds after the splice")
    left.set_ylabel("arousal")
    left.set_title(f"{first['model']}, smooth {first['smooth_s']:g} s: arousal of each pair")
    for model in dict.fromkeys(r["model"] for r in report["results"]):
        rows = [r for r in report["results"] if r["model"] == model]
        for key in dict.fromkeys((r["reaction"], r["smooth_s"], r["follow"]) for r in rows):
            pts = [
                (r["dwell_s"], r["flicker_per_min"])
                for r in rows
                if (r["reaction"], r["smooth_s"], r["follow"]) == key
            ]
            label = key[0] or f"smooth {key[1]:g} s" + (f", follow {key[2]:g}" if key[2] else "")
            right.plot(*zip(*pts, strict=True), marker="o", label=f"{model}, {label}")
    right.axhline(1.0, color="k", linestyle=":", linewidth=1, label="1 change / min")
    right.set_xlabel("--dwell (s)")
    right.set_ylabel("state changes per minute, steady music")
    right.set_title("flicker")
    right.legend(fontsize=8)
    save_figure(fig, path)


def _numbers(parser, text: str, what: str) -> list[float]:
    values = []
    for item in check_list(parser, text, None, what):
        try:
            value = float(item)
        except ValueError:
            parser.error(f"--{what}: {item!r} is not a number")
        if not (math.isfinite(value) and 0 <= value <= 60):
            parser.error(f"--{what}: {item} is out of range (0..60 s)")
        values.append(value)
    return values


def add_parser(sub) -> None:
    p = sub.add_parser(
        "reaction",
        help="how fast the feed follows a change of mood (t50, t90) and how steady its state stays",
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--models", default="default", metavar="NAMES", help="comma-separated model names (default)"
    )
    p.add_argument(
        "--smooth", default="2", metavar="S,S", help="smoothing time constants to try, seconds (2)"
    )
    p.add_argument(
        "--follow",
        default="0",
        metavar="F,F",
        help="adaptive smoothing: how much the time constant shrinks while the estimate moves (0: plain "
        "exponential; see realtime.smoothing.Smoother) (0)",
    )
    p.add_argument(
        "--dwell", default="0,2,4,6", metavar="S,S", help="state dwell times to try, seconds (0,2,4,6)"
    )
    p.add_argument("--hop", type=float, default=1.0, metavar="S", help="listen's --hop (1.0)")
    p.add_argument(
        "--reaction",
        metavar="NAME,NAME",
        help="measure listen's --reaction presets (fast, balanced, stable: each its own hop, smoothing, "
        "dwell and margin) instead of the --smooth x --follow x --dwell grid",
    )
    p.add_argument(
        "--pairs",
        type=number(1, kind=int, what="the pairs"),
        default=8,
        metavar="N",
        help="spliced clip pairs (8)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--json", type=output_file, metavar="OUT", help="write the figures as JSON here")
    p.add_argument("--plot", type=output_file, metavar="OUT.png", help="write a PNG chart here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    names = check_list(parser, args.models, None, "models")
    check_models(parser, names)
    smooths = _numbers(parser, args.smooth, "smooth")
    dwells = _numbers(parser, args.dwell, "dwell")
    follows = _numbers(parser, args.follow, "follow")
    if not (math.isfinite(args.hop) and 0.05 <= args.hop <= 10):
        parser.error("--hop must be within 0.05..10 s")
    if not 1 <= args.pairs <= 64:
        parser.error("--pairs must be within 1..64")
    if args.reaction:
        from realtime.options import REACTIONS

        args.reaction = check_list(parser, args.reaction, tuple(REACTIONS), "reaction")
    report = run(args, names, settings_of(args, smooths, dwells, follows))
    if not report["results"]:
        print("error: no model with a valence/arousal head to measure", file=sys.stderr)
        return 2
    print(table(report))
    if args.json:
        Path(args.json).write_text(to_json(report) + "\n")
    if args.plot:
        plot(report, args.plot)
    return 0
