"""python -m models: list the registered models, or export one to ONNX.

python -m models list [--json]
python -m models export NAME OUT.onnx [--with-frontend] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

import models
from models.export import example_input, export_onnx, session
from models.weights import WeightsError


def describe(name: str) -> dict:
    """One row of the table: built for real, so parameter counts are the real ones."""
    model = models.build(name)
    rf = model.receptive_field()
    return {
        "name": name,
        "paper": models.entry(name).paper,
        "parameters": sum(p.numel() for p in model.parameters()),
        "input_shape": [model.frontend.n_mels, model.input_frames],
        "segment_frames": model.segment_frames,
        "sample_rate_hz": model.frontend.sample_rate_hz,
        "receptive_field": rf,
        "heads": {h: {"kind": spec.kind, "labels": len(spec.labels)} for h, spec in model.heads.items()},
        "pretrained": bool(getattr(model, "pretrained", False)),
    }


def _table(rows: list[dict]) -> str:
    def fmt(row: dict) -> list[str]:
        rf = row["receptive_field"]
        return [
            row["name"],
            f"{row['parameters'] / 1e6:.2f}M",
            "×".join(map(str, row["input_shape"])) + f" @{row['sample_rate_hz'] / 1000:g}k",
            f"{rf['frequency']}×{rf['time']}" if rf else "-",
            ", ".join(f"{h}:{spec['kind']}({spec['labels']})" for h, spec in row["heads"].items()),
            "yes" if row["pretrained"] else "no",
            row["paper"],
        ]

    header = ["name", "params", "input (mels×frames)", "RF (f×t)", "heads", "trained", "paper"]
    cells = [header] + [fmt(r) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) + "  " + c[-1] for c in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.split("\n", 2)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="table of registered models (built, so counts are real)")
    p_list.add_argument("--json", action="store_true", help="a JSON list instead of the table")
    p_exp = sub.add_parser("export", help="write a model as ONNX (dynamic batch)")
    p_exp.add_argument("name", help=f"one of: {', '.join(models.available())}")
    p_exp.add_argument("out", help="output .onnx path")
    p_exp.add_argument(
        "--with-frontend", action="store_true", help="the nnAudio mel inside the graph: input is audio"
    )
    p_exp.add_argument(
        "--check", action="store_true", help="compare ONNX Runtime with PyTorch on random input"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            rows = [describe(name) for name in models.available()]
            print(json.dumps(rows, indent=1) if args.json else _table(rows))
            return 0
        model = models.build(args.name).eval()
        names = export_onnx(model, args.out, with_frontend=args.with_frontend)
    except (models.UnknownModelError, WeightsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kind = "audio" if args.with_frontend else "mel"
    print(
        f"wrote {args.out}: input '{kind}' {tuple(example_input(model, 1, args.with_frontend).shape)[1:]}, "
        f"outputs {names}"
    )
    if args.check:
        x = example_input(model, batch=3, with_frontend=args.with_frontend, seed=1)
        with torch.inference_mode():
            x_mel = models.MelFrontend(model.frontend)(x) if args.with_frontend else x
            expected = model(x_mel)
        got = session(args.out).run(None, {kind: x.numpy()})
        worst = max(float(np.abs(g - expected[n].numpy()).max()) for n, g in zip(names, got, strict=True))
        print(f"ONNX Runtime vs PyTorch, batch 3: max abs difference {worst:.2e}")
        return 0 if worst <= 1e-4 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
