"""Do two runs of ``python -m realtime.analyze FILE --json`` say the same, window by window?

    python tools/compare_feeds.py CPU.jsonl CUDA.jsonl [--tolerance 0.002]

For the GPU checks (``tools/gpu-checks.sh``): the same file analysed on the CPU and on CUDA must
give the same windows, valence, arousal and tag probabilities to ``--tolerance`` (float rounding
of a different device's kernels; the feed rounds to 5 decimals), and the same mood states.
Prints the largest differences; exit 1 when they exceed it, 2 when the files cannot be compared.
"""

from __future__ import annotations

import argparse
import json
import sys


def read(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        sys.exit(f"compare_feeds: cannot read {path}: {exc}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", metavar="A.jsonl")
    parser.add_argument("b", metavar="B.jsonl")
    parser.add_argument("--tolerance", type=float, default=0.002, help="largest |difference| allowed (0.002)")
    args = parser.parse_args(argv)
    a, b = read(args.a), read(args.b)
    if not a or len(a) != len(b):
        print(f"compare_feeds: {len(a)} windows against {len(b)}: not the same run", file=sys.stderr)
        return 2
    worst = {"valence": 0.0, "arousal": 0.0, "tags": 0.0}
    states_differ = 0
    for x, y in zip(a, b, strict=True):
        if x["t_stream"] != y["t_stream"] or x["tags"].keys() != y["tags"].keys():
            print(
                f"compare_feeds: window {x['seq']} differs in time or tags: not the same run", file=sys.stderr
            )
            return 2
        for key in ("valence", "arousal"):
            if (x[key] is None) != (y[key] is None):
                worst[key] = float("inf")
            elif x[key] is not None:
                worst[key] = max(worst[key], abs(x[key] - y[key]))
        worst["tags"] = max([worst["tags"], *(abs(p - y["tags"][t]) for t, p in x["tags"].items())])
        states_differ += x.get("state") != y.get("state")
    ok = max(worst.values()) <= args.tolerance
    print(
        f"{len(a)} windows: max |d| valence {worst['valence']:.5f}, arousal {worst['arousal']:.5f}, "
        f"tags {worst['tags']:.5f} (tolerance {args.tolerance:g}); mood state differs in {states_differ}: "
        + ("same" if ok else "DIFFERENT")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
