"""python -m models: list the registered models, or export one to ONNX.

python -m models list [--json]
python -m models export NAME_OR_ARTIFACT [OUT] [--streaming] [--with-frontend] [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import models
from models.artifact import ArtifactError
from models.export import export_command
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
        "pretrained": model.pretrained,
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
    p_exp = sub.add_parser(
        "export",
        help="write a model as ONNX: the whole forward graph, or (--streaming) the two graphs --backend onnx runs",
    )
    p_exp.add_argument(
        "name", help="'default', a trained artifact directory, or one of: " + ", ".join(models.available())
    )
    p_exp.add_argument(
        "out",
        nargs="?",
        help="a .onnx file (default: ARTIFACT/model.onnx), or with --streaming a folder (default: the artifact's)",
    )
    p_exp.add_argument(
        "--streaming", action="store_true", help="encoder.onnx and pool_predict.onnx, what the engine runs"
    )
    p_exp.add_argument(
        "--with-frontend", action="store_true", help="the nnAudio mel inside the graph: input is audio"
    )
    p_exp.add_argument(
        "--check", action="store_true", help="compare ONNX Runtime with PyTorch on random input"
    )
    args = parser.parse_args(argv)
    if args.command == "export" and args.streaming and args.with_frontend:
        parser.error("--with-frontend applies to the whole forward graph, not to --streaming")
    try:
        if args.command == "list":
            rows = [describe(name) for name in models.available()]
            print(json.dumps(rows, indent=1) if args.json else _table(rows))
            return 0
        return export(args, parser)
    except (models.UnknownModelError, ArtifactError, WeightsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def export(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    model = models.resolve(args.name)
    out = args.out
    if out is None:
        if model.artifact_folder is None:
            parser.error(f"{args.name} is not an artifact: name the OUT to write")
        out = model.artifact_folder if args.streaming else model.artifact_folder / "model.onnx"
    return export_command(
        model, Path(out), streaming=args.streaming, with_frontend=args.with_frontend, check=args.check
    )


if __name__ == "__main__":
    sys.exit(main())
