"""python -m realtime.analyze FILE: the live engine's analysis over a file, as fast as possible.

Prints one line per window: with --json a JSON object {"t", "silent", "tags", "valence",
"arousal"} per line (t = seconds into the file at the window's last sample), otherwise the
top tags.  Windows are exactly those ``listen`` would publish for the same audio (same hop,
context and model); smoothing is off unless --smooth is given, so windows can be averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import soundfile as sf

from realtime.analyzer import Analyzer, TagMerger
from realtime.options import add_model_options, build_model, build_runner
from realtime.smoothing import Smoother

BLOCK_FRAMES = 65536


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m realtime.analyze",
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "file", metavar="FILE", help="audio file (anything libsndfile reads: wav, flac, ogg, mp3…)"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per window")
    parser.add_argument("--top", type=int, default=5, metavar="N", help="tags per line without --json (5)")
    add_model_options(parser, smooth_default=0.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = sf.info(args.file)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    model, windowing, compute = build_model(args)
    analyzer = Analyzer(model, info.samplerate, windowing, compute, build_runner(args, model, compute))
    merger = TagMerger(model.heads)
    smooth_tags, smooth_va = Smoother(args.smooth), Smoother(args.smooth)
    started = time.perf_counter()
    n_windows = 0

    def emit(windows) -> None:
        nonlocal n_windows
        for w in windows:
            n_windows += 1
            tags = smooth_tags.update(merger.tags(w.outputs), analyzer.hop_s)
            va = w.outputs.get(merger.va_head) if merger.va_head else None
            valence, arousal = (
                (None, None) if va is None else (float(v) for v in smooth_va.update(va, analyzer.hop_s))
            )
            if args.json:
                record = {
                    "t": round(w.t_stream, 4),
                    "silent": bool(w.silent),
                    "tags": {n: round(float(p), 5) for n, p in zip(merger.names, tags, strict=True)},
                    "valence": valence,
                    "arousal": arousal,
                }
                print(json.dumps(record, allow_nan=False))
            else:
                order = np.argsort(-tags)[: args.top]
                top = "  ".join(f"{merger.names[i]} {tags[i]:.2f}" for i in order)
                va_text = "" if valence is None else f"V {valence:+.2f} A {arousal:+.2f}  "
                print(f"{w.t_stream:7.2f}s  {'(silent) ' if w.silent else ''}{va_text}{top}")

    try:
        with sf.SoundFile(args.file) as f:
            while True:
                block = f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)
                if not len(block):
                    break
                emit(analyzer.feed(block))
    except (sf.LibsndfileError, RuntimeError) as exc:
        print(f"error: cannot decode {args.file}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. piped into head
        return 0
    emit(analyzer.finish())
    elapsed = time.perf_counter() - started
    audio_s = analyzer.samples_in / info.samplerate
    if n_windows == 0:
        print(
            f"warning: {args.file} ({audio_s:.2f} s) is shorter than one {model.segment_seconds:.2f} s segment",
            file=sys.stderr,
        )
    print(
        f"analyzed {audio_s:.1f} s of audio in {elapsed:.2f} s ({audio_s / max(elapsed, 1e-9):.1f}x real time), "
        f"{n_windows} windows, {args.model}, hop {analyzer.hop_s:.3f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
