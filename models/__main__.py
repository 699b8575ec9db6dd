"""python -m models: list the models (default first), show one's vocabularies, or export one to ONNX.

python -m models list [--json] [ARTIFACT ...]
python -m models show NAME_OR_ARTIFACT
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
from moodstream.cli import Parser, output_path, run


def _built_without_weights(name: str) -> models.SegmentModel:
    """The registered model, built without loading (or converting) pretrained weights."""
    allowed = models.entry(name).overrides()
    off = {key: False for key in ("pretrained", "encoder_pretrained") if key in allowed}
    return models.build(name, **off)


def describe(name: str) -> dict:
    """One row of the table: built for real (without its weights), so parameter counts are real."""
    model = _built_without_weights(name)
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
        "pretrained": bool(models.entry(name).overrides().get("pretrained", False)),
    }


def _artifact_config(folder: Path) -> dict:
    """A trained artifact's config.json, read as it is (nothing is built or loaded)."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"cannot read {folder / 'config.json'}: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("heads"), dict):
        raise ArtifactError(f"{folder / 'config.json'} is not a model artifact's config")
    return config


def describe_artifact(name: str) -> dict:
    """A row for ``default`` or an artifact directory, from its config.json alone."""
    folder = models.DEFAULT if name == models.DEFAULT_NAME else Path(name)
    config = _artifact_config(folder)
    frontend = config["frontend"]
    return {
        "name": name,
        "paper": f"{config['model']} trained by moodstream ("
        + ("shipped: the model listen runs" if name == models.DEFAULT_NAME else str(folder))
        + ")",
        "parameters": None,
        "input_shape": [frontend["n_mels"], config["segment_frames"]],
        "segment_frames": config["segment_frames"],
        "sample_rate_hz": frontend["sample_rate_hz"],
        "receptive_field": None,
        "heads": {
            h: {"kind": spec["kind"], "labels": len(spec["labels"])} for h, spec in config["heads"].items()
        },
        "pretrained": True,
    }


def show(name: str) -> str:
    """A model's vocabularies: every head, its tags by feed vocabulary, and which can turn active."""
    from models.vocab import vocabulary_of

    if name == models.DEFAULT_NAME or models.is_artifact(name):
        config = _artifact_config(models.DEFAULT if name == models.DEFAULT_NAME else Path(name))
        heads = {h: (spec["kind"], tuple(spec["labels"])) for h, spec in config["heads"].items()}
        thresholds = config.get("thresholds", {})
        source = f"{name}: a trained {config['model']}; per-tag thresholds fitted on held-out clips"
    else:
        model = _built_without_weights(name)
        heads = {h: (spec.kind, spec.labels) for h, spec in model.heads.items()}
        thresholds = {}
        source = f"{name}: {models.entry(name).paper}; every tag turns active at --on (0.3)"
    lines = [source]
    for head, (kind, labels) in heads.items():
        vocabulary = vocabulary_of(head, kind, labels)
        if vocabulary is None:
            lines.append(f"\n{head} ({kind}): valence -1 sad/negative .. +1 happy/positive, "
                         "arousal -1 calm .. +1 energetic (2p - 1 of calibrated probabilities)")  # fmt: skip
            continue
        on = thresholds.get(head)
        never = [label for label, t in zip(labels, on, strict=True) if t >= 1.0] if on else []
        lines.append(f"\n{head} ({kind}, {len(labels)} tags, feed vocabulary: {vocabulary})")
        if on:
            can = [f"{label} >= {t:.2f}" for label, t in zip(labels, on, strict=True) if t < 1.0]
            lines.append(f"  can turn active ({len(can)}): " + ", ".join(can))
            if never:
                lines.append(
                    f"  never active (unreliable on held-out clips, {len(never)}): " + ", ".join(never)
                )
        else:
            lines.append("  each turns active at --on (0.3): " + ", ".join(labels))
    return "\n".join(lines)


def _table(rows: list[dict]) -> str:
    def fmt(row: dict) -> list[str]:
        rf = row["receptive_field"]
        return [
            row["name"],
            "-" if row["parameters"] is None else f"{row['parameters'] / 1e6:.2f}M",
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


def main(argv: list[str] | None = None, prog: str = "python -m models") -> int:
    parser = Parser(prog=prog, description=__doc__.split("\n", 2)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="table of registered models (built, so counts are real)")
    p_list.add_argument("--json", action="store_true", help="a JSON list instead of the table")
    p_list.add_argument(
        "artifacts", nargs="*", metavar="ARTIFACT", help="trained artifact directories to list too"
    )
    p_show = sub.add_parser("show", help="a model's vocabularies, thresholds and which tags can turn active")
    p_show.add_argument("name", help="'default', a trained artifact directory, or a registered name")
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
        type=output_path,
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
            rows = [describe_artifact(models.DEFAULT_NAME)]
            rows += [describe_artifact(path) for path in args.artifacts]
            rows += [describe(name) for name in models.available()]
            print(json.dumps(rows, indent=1) if args.json else _table(rows))
            return 0
        if args.command == "show":
            models.check_name(args.name)
            print(show(args.name))
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
    sys.exit(run(main))
