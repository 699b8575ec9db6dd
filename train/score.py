"""``python -m train score``: benchmark metrics of a prediction matrix against a ground truth.

    python -m train score --predictions P.npy --groundtruth G.npy [--thresholds T.txt | --decisions D.npy]
                          [--tags TAGLIST] [--per-tag] [--json OUT]

Both matrices are (n_tracks, n_tags) ``.npy`` files, loaded without unpickling. The thresholds file
is the benchmark's ``tag<TAB>threshold`` lines (or one number a line); decisions are ``scores > t``.
A tag list is one tag a line (the first tab-separated field), e.g. ``moodtheme_split.txt``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from moodstream.cli import Parser
from train import metrics


class ScoreInputError(ValueError):
    """An input file is missing, unreadable or inconsistent with the others."""


def _load_matrix(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise ScoreInputError(f"{what} file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:  # not an .npy, truncated, or an object array that would need pickle
        raise ScoreInputError(f"cannot read {what} {path} as a .npy array: {e}") from e
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise ScoreInputError(f"{what} {path} must be a single .npy array, not an archive")
    if array.ndim != 2:
        raise ScoreInputError(f"{what} {path} must be 2-D (n_tracks, n_tags), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ScoreInputError(f"{what} {path} must be numeric or bool, got dtype {array.dtype}")
    return array


def _require_binary(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ScoreInputError(
                f"{what} {path} must be binary (0/1 or bool); found values {_some_values(array)}"
            )
        array = array.astype(bool)
    return array


def _some_values(array: np.ndarray) -> str:
    odd = np.unique(array[~np.isin(array, (0, 1))])
    return ", ".join(str(v) for v in odd[:5]) + (", ..." if odd.size > 5 else "")


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise ScoreInputError(f"{what} file not found: {path}")
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _load_thresholds(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """Thresholds and, when the lines carry them, tag names."""
    names, values = [], []
    for i, line in enumerate(_read_lines(path, "thresholds"), start=1):
        fields = line.rstrip().split("\t")
        try:
            values.append(float(fields[-1]))
        except ValueError:
            raise ScoreInputError(
                f"{path}:{i}: expected 'tag<TAB>threshold' or a number, got {line!r}"
            ) from None
        names.append(fields[0] if len(fields) > 1 else None)
    thresholds = np.array(values, dtype=np.float64)
    if np.isnan(thresholds).any():
        raise ScoreInputError(f"thresholds {path} contain NaN")
    if all(n is not None for n in names) and names:
        return thresholds, names
    if any(n is not None for n in names):
        raise ScoreInputError(f"thresholds {path}: either every line names its tag or none does")
    return thresholds, None


def _load_inputs(args: argparse.Namespace) -> dict:
    scores = _load_matrix(args.predictions, "predictions")
    truth = _load_matrix(args.groundtruth, "groundtruth")
    if scores.shape != truth.shape:
        raise ScoreInputError(
            f"predictions {scores.shape} and groundtruth {truth.shape} differ in shape; both must be (n_tracks, n_tags)"
        )
    if not np.isfinite(scores).all():
        raise ScoreInputError(
            f"predictions {args.predictions} contain {int((~np.isfinite(scores)).sum())} NaN/inf values"
        )
    truth = _require_binary(truth, args.groundtruth, "groundtruth")
    n_tags = truth.shape[1]

    tags = None
    if args.tags is not None:
        tags = [line.split("\t")[0].strip() for line in _read_lines(args.tags, "tag list")]
        if len(tags) != n_tags:
            raise ScoreInputError(f"tag list {args.tags} has {len(tags)} tags, the matrices have {n_tags}")
    thresholds = decided = None
    if args.thresholds is not None:
        thresholds, threshold_tags = _load_thresholds(args.thresholds)
        if thresholds.size != n_tags:
            raise ScoreInputError(
                f"thresholds {args.thresholds} has {thresholds.size} values, the matrices have {n_tags} tags"
            )
        if tags is not None and threshold_tags is not None and threshold_tags != tags:
            raise ScoreInputError(
                f"the tags in {args.thresholds} are not the tag list {args.tags} (in order)"
            )
        tags = tags or threshold_tags
    if args.decisions is not None:
        decided = _load_matrix(args.decisions, "decisions")
        if decided.shape != truth.shape:
            raise ScoreInputError(f"decisions {decided.shape} and groundtruth {truth.shape} differ in shape")
        decided = _require_binary(decided, args.decisions, "decisions")
    if tags is None:
        tags = [f"tag{j}" for j in range(n_tags)]
    return {"truth": truth, "scores": scores, "tags": tags, "thresholds": thresholds, "decided": decided}


def _print_report(report: dict, per_tag: bool) -> None:
    print(f"{report['n_tracks']} tracks x {report['n_tags']} tags")
    rows = [
        ("ROC-AUC", "roc_auc"),
        ("PR-AUC", "pr_auc"),
        ("precision", "precision"),
        ("recall", "recall"),
        ("F1", "f1"),
    ]
    for label, key in rows:
        if f"{key}_macro" in report:
            print(f"{label:<10} macro {report[f'{key}_macro']:.4f}  micro {report[f'{key}_micro']:.4f}")
    for key, metric in (("excluded_from_roc_auc_macro", "ROC-AUC"), ("excluded_from_pr_auc_macro", "PR-AUC")):
        if report[key]:
            print(
                f"{metric} macro leaves out {len(report[key])} tag(s) with an undefined score: {', '.join(report[key])}"
            )
    if per_tag:
        width = max(len(row["tag"]) for row in report["per_tag"])
        has_prf = "f1" in report["per_tag"][0]
        header = f"{'tag':<{width}}  {'pos':>5}  {'ROC-AUC':>7}  {'PR-AUC':>7}"
        print("\n" + header + ("  precision  recall      F1" if has_prf else ""))

        def cell(value, size):
            return f"{'-':>{size}}" if value is None else f"{value:>{size}.4f}"

        for row in report["per_tag"]:
            line = f"{row['tag']:<{width}}  {row['n_positive']:>5}  {cell(row['roc_auc'], 7)}  {cell(row['pr_auc'], 7)}"
            if has_prf:
                line += f"  {cell(row['precision'], 9)}  {cell(row['recall'], 6)}  {cell(row['f1'], 6)}"
            print(line)


def build_parser(prog: str = "python -m train score") -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description="MTG-Jamendo/MediaEval metrics of tag predictions.")
    parser.add_argument("--predictions", type=Path, required=True, help="(n_tracks, n_tags) scores, .npy")
    parser.add_argument(
        "--groundtruth", type=Path, required=True, help="(n_tracks, n_tags) 0/1 or bool, .npy"
    )
    decide = parser.add_mutually_exclusive_group()
    decide.add_argument(
        "--thresholds", type=Path, help="per-tag thresholds (tag<TAB>threshold lines) for P/R/F"
    )
    decide.add_argument("--decisions", type=Path, help="(n_tracks, n_tags) bool decisions, .npy, for P/R/F")
    parser.add_argument("--tags", type=Path, help="tag list, one a line, in column order")
    parser.add_argument("--per-tag", action="store_true", help="also print the per-tag table")
    parser.add_argument(
        "--json", type=Path, help="write the full report (with the per-tag table) as JSON here"
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m train score") -> int:
    """Exit status: 0 scored, 1 invalid input (message on stderr); bad options exit 2 (one line)."""
    args = build_parser(prog).parse_args(argv)
    try:
        inputs = _load_inputs(args)
        report = metrics.tag_report(
            inputs["truth"],
            inputs["scores"],
            inputs["tags"],
            inputs["thresholds"],
            binary_decisions=inputs["decided"],
        )
    except (
        ValueError
    ) as e:  # ScoreInputError, or a metric undefined here (e.g. a ground truth with no positive)
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    _print_report(report, args.per_tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
