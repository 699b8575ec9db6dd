"""python -m train: fit, evaluate, export and score models.

  python -m train fit --model NAME --dataset KIND --data PATH [--dataset KIND --data PATH ...]
                      [--recipe NAME] [--epochs N] [--out DIR] [--set key=value] [--model-arg key=value]
  python -m train evaluate ARTIFACT --dataset KIND --data PATH [--split test] [--fold I/K]
  python -m train export ARTIFACT [--with-frontend] [--check]
  python -m train score --predictions P.npy --groundtruth G.npy
  python -m train probe --dataset 4q --data PATH [--encoder A,B] [--features embedding,tags] [--folds K]
                      (linear-probe floor on frozen musicnn features)

Dataset kinds: jamendo (official TSV splits; --jamendo-npy DIR or --jamendo-audio DIR),
4q (labels.csv; artist-grouped validation), emotify (ratings.csv; track-grouped),
va-table (a CSV of path, valence, arousal; --va-preset deam|pmemo|1000songs), folder (a CSV of
path + tags or path, valence, arousal).  Several --dataset/--data pairs train one model on all
of them, each supervising only its own heads.  Validation is a grouped --val-fraction split,
or with --fold I/K the I-th of K group-disjoint folds.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # before the imports that load torch: a stop there is one line too
    from moodstream.cli import stop_while_importing

    stop_while_importing()

import argparse
import json
import shlex
from pathlib import Path

import numpy as np
import torch

import models
from models.artifact import ArtifactError, load
from models.export import export_command
from models.weights import WeightsError, cache_dir
from moodstream.cli import Parser, number, output_file, output_folder, run
from train import datasets
from train.features import FeatureCache
from train.fit import Data, cross_validate, evaluate, examples, fit, stack_targets, validate
from train.loop import DivergedError, Example
from train.probe import probe_valence_arousal
from train.recipes import RECIPES, recipe_for

KINDS = ("jamendo", "4q", "emotify", "va-table", "folder")


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{what} must be key=value, got {item!r}")
        out[key] = value
    return out


def _model_args(items: list[str]) -> dict:
    """key=value with JSON values where they parse (numbers, booleans, lists), else strings."""
    out = {}
    for key, text in _pairs(items, "--model-arg").items():
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def load_dataset(kind: str, path: str, args, subset: str) -> datasets.TrackSet:
    if kind == "jamendo":
        return datasets.load_jamendo(
            path, args.jamendo_split, subset, args.jamendo_audio, args.jamendo_npy, on_missing=args.on_missing
        )
    if kind == "4q":
        return datasets.load_4q(path, min_mood_count=args.min_mood_count, on_missing=args.on_missing)
    if kind == "emotify":
        return datasets.load_emotify(path, on_missing=args.on_missing)
    if kind == "va-table":
        csv = Path(path)
        return datasets.load_va_table(
            csv, args.audio_root or csv.parent, preset=args.va_preset, on_missing=args.on_missing
        )
    if kind == "folder":
        csv = Path(path)
        return datasets.load_folder_csv(csv, args.audio_root or csv.parent, on_missing=args.on_missing)
    raise ValueError(f"unknown dataset kind {kind!r}; kinds: {', '.join(KINDS)}")


def fold_arg(text: str) -> tuple[int, int]:
    """``--fold I/K`` -> (I, K), 1 <= I <= K, K >= 2."""
    index, sep, count = text.partition("/")
    try:
        i, k = int(index), int(count)
    except ValueError:
        i = k = 0
    if not sep or k < 2 or not 1 <= i <= k:
        raise argparse.ArgumentTypeError(f"takes I/K with 1 <= I <= K and K >= 2 (e.g. 2/5), not {text!r}")
    return i, k


def two_parts(whole: datasets.TrackSet, args) -> list[datasets.TrackSet]:
    """[train, validation] of a non-Jamendo set: the grouped --val-fraction split, or with
    ``--fold I/K`` the I-th of K group-disjoint folds held out (the folds of ``probe --folds K``)."""
    if args.fold:
        i, k = args.fold
        return list(whole.k_fold(k, seed=args.split_seed)[i - 1])
    return whole.split((1 - args.val_fraction, args.val_fraction), seed=args.split_seed)


def split_name(args) -> str:
    if args.fold:
        return f"grouped, fold {args.fold[0]} of {args.fold[1]}, seed {args.split_seed}"
    return f"grouped, seed {args.split_seed}, val {args.val_fraction}"


def splits(args, quiet: bool) -> tuple[list, list, dict, dict]:
    """(train tracks, validation tracks, heads, description) over every --dataset/--data pair."""
    if len(args.dataset) != len(args.data):
        raise ValueError("give one --data PATH for each --dataset KIND")
    train, val, heads, description = [], [], {}, {}
    for kind, path in zip(args.dataset, args.data, strict=True):
        if kind == "jamendo":  # the official splits
            parts = [load_dataset(kind, path, args, "train"), load_dataset(kind, path, args, "validation")]
            whole = parts[0]
        else:
            whole = load_dataset(kind, path, args, "train")
            parts = two_parts(whole, args)
        if args.limit:
            parts = [p.subset(p.tracks[: args.limit], p.name) for p in parts]
        for name, spec in whole.heads.items():
            if name in heads and heads[name] != spec:
                raise ValueError(f"two datasets define head {name!r} differently")
            heads[name] = spec
        train += parts[0].tracks
        val += parts[1].tracks
        if not quiet:
            print(whole.report(), file=sys.stderr)
        description[kind] = {
            "path": str(path),
            "train": len(parts[0]),
            "validation": len(parts[1]),
            "split": "official" if kind == "jamendo" else split_name(args),
            "missing": len(whole.missing),
        }
    return train, val, heads, description


def fold_splits(args, quiet: bool) -> tuple[list, list[tuple[list, list]], dict, dict]:
    """(every track, K (train, validation) track lists, heads, description) for ``fit --folds K``:
    each dataset's group-disjoint folds (those of ``--fold I/K``), fold I of every set held out
    together.  ``--limit N`` keeps each set's first N tracks before they are dealt."""
    tracks, heads, description = [], {}, {}
    folds: list[tuple[list, list]] = [([], []) for _ in range(args.folds)]
    for kind, path in zip(args.dataset, args.data, strict=True):
        if kind == "jamendo":
            raise ValueError(
                "fit --folds: MTG-Jamendo has official splits; cross-validate 4q, emotify or folder sets"
            )
        whole = load_dataset(kind, path, args, "train")
        if args.limit:
            whole = whole.subset(whole.tracks[: args.limit], whole.name)
        for (train, val), (part_train, part_val) in zip(folds, whole.k_fold(args.folds, seed=args.split_seed),
                                                        strict=True):  # fmt: skip
            train += part_train.tracks
            val += part_val.tracks
        for name, spec in whole.heads.items():
            if name in heads and heads[name] != spec:
                raise ValueError(f"two datasets define head {name!r} differently")
            heads[name] = spec
        tracks += whole.tracks
        if not quiet:
            print(whole.report(), file=sys.stderr)
        description[kind] = {"path": str(path), "train": len(whole), "validation": 0,
                             "split": f"all; cross-validated on {args.folds} grouped folds, seed {args.split_seed}",
                             "missing": len(whole.missing)}  # fmt: skip
    return tracks, folds, heads, description


def cmd_fit(args) -> int:
    overrides = _model_args(args.model_arg)
    recipe = recipe_for(args.model, args.recipe).with_overrides(_pairs(args.set, "--set"))
    if args.epochs:
        recipe = recipe.with_overrides({"epochs": str(args.epochs)})
    if args.folds:
        if args.folds < 2 or args.fold or args.resume:
            raise ValueError(f"--folds takes K >= 2 (not {args.folds}), without --fold or --resume")
        train_tracks, fold_tracks, heads, description = fold_splits(args, args.quiet)
        val_tracks = []
    else:
        train_tracks, val_tracks, heads, description = splits(args, args.quiet)
    grow = models.entry(args.model).heads_from_data
    if grow is not None:  # a model that takes the heads the data supervises (segment-attention)
        overrides.update(grow(heads, overrides))
    torch.manual_seed(recipe.seed)  # the initial weights too: the same command gives the same model
    model = models.build(args.model, **overrides)
    unknown = set(heads) - set(model.heads)
    if unknown:
        raise ValueError(
            f"{args.model} has no head(s) {sorted(unknown)} that the data supervises; its heads: "
            f"{', '.join(model.heads)} (segment-attention: --model-arg tag_heads=...)"
        )
    for name in heads:
        if heads[name].labels != model.heads[name].labels or heads[name].kind != model.heads[name].kind:
            raise ValueError(f"head {name!r}: the model's labels/kind differ from the data's")
    cache = FeatureCache(args.cache or cache_dir() / "features", model.frontend)
    data = Data(
        examples(model, train_tracks, cache, recipe, "train", args.quiet),
        examples(model, val_tracks, cache, recipe, "validation", args.quiet),
        heads,
        description,
    )
    command = "python -m train " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if args.folds:
        of_track = {id(t): ex for t, ex in zip(train_tracks, data.train, strict=True)}
        folds = [
            Data(
                [of_track[id(t)] for t in train],
                [of_track[id(t)] for t in val],
                heads,
                {"split": f"fold {i} of {args.folds}"},
            )  # fmt: skip
            for i, (train, val) in enumerate(fold_tracks, start=1)
        ]

        def build():
            torch.manual_seed(recipe.seed)  # every fold's model starts from the same weights
            return models.build(args.model, **overrides)

        summary = cross_validate(build, args.model, overrides, folds, data, recipe, Path(args.out), command,
                                 args.quiet)  # fmt: skip
        print(json.dumps({"artifact": str(args.out), "cross_validation": summary["validation"],
                          "best_epochs": summary["best_epochs"], "epochs": summary["epochs"]}, indent=1))  # fmt: skip
        return 0
    final = fit(model, args.model, overrides, data, recipe, Path(args.out), args.resume, command, args.quiet)
    if final:
        print(json.dumps({"artifact": str(args.out), "validation": final}, indent=1))
    return 0


def cmd_evaluate(args) -> int:
    model, artifact = load(args.artifact)
    recipe = RECIPES["small"].with_overrides(_pairs(args.set, "--set"))
    tracks, heads, description = [], {}, {}
    for kind, path in zip(args.dataset, args.data, strict=True):
        subset = args.split if kind == "jamendo" else "train"
        ts = load_dataset(kind, path, args, subset)
        if kind != "jamendo" and args.split != "all":
            index = {"train": 0, "validation": 1}[args.split] if args.split in ("train", "validation") else 1
            ts = two_parts(ts, args)[index]
        tracks += ts.tracks[: args.limit] if args.limit else ts.tracks
        heads.update({k: v for k, v in ts.heads.items() if k in model.heads})
        description[kind] = {"path": str(path), "tracks": len(ts)}
    cache = FeatureCache(args.cache or cache_dir() / "features", model.frontend)
    ex = examples(model, tracks, cache, recipe, args.split, args.quiet)
    data = Data([], ex, heads, description)
    result, per_head = validate(model, data, recipe)
    targets, _ = stack_targets(heads, ex)
    table = []
    for name, spec in heads.items():
        if spec.kind == "tags" and len(targets[name]):
            for i, label in enumerate(spec.labels):
                sub = evaluate({name: models.HeadSpec("tags", (label,))}, {name: targets[name][:, i : i + 1]},
                               {name: per_head[name][:, i : i + 1]})  # fmt: skip
                table.append({"head": name, "tag": label, **{k.split("/")[-1]: v for k, v in sub.items()}})
    out = {
        "artifact": str(args.artifact),
        "split": args.split,
        "data": description,
        "metrics": result,
        "per_tag": table,
    }
    text = json.dumps(out, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(json.dumps({"metrics": result}, indent=1))
    for row in table:
        print(f"  {row['head']:>8} {row['tag']:<24} ROC-AUC {row.get('roc_auc_macro', float('nan')):.3f}")
    return 0


PROBE_FEATURES = ("embedding", "tags")


def cmd_probe(args) -> int:
    """Linear probe on clip-averaged features of frozen encoders: the floor for trained heads.

    ``--encoder a,b`` concatenates the encoders' features window by window; ``--features``
    picks each encoder's penultimate embedding, its tag logits (its own head applied to each
    window's embedding), or both.  ``--folds K`` scores K group-disjoint folds of the same
    tracks instead of the one split: one validation split of ~150 clips moves by a few points
    with the artists it happens to hold.
    """
    if args.folds < 0 or args.folds == 1:
        raise ValueError(f"--folds takes 0 (the one split) or at least 2, not {args.folds}")
    if args.folds and args.fold:
        raise ValueError("--folds K scores every fold; --fold I/K picks one: give one of them")
    recipe = recipe_for("segment-attention", "heads").with_overrides(_pairs(args.set, "--set"))
    encoders = [e.strip() for e in args.encoder.split(",")]
    features = [f.strip() for f in args.features.split(",")]
    unknown = [f for f in features if f not in PROBE_FEATURES]
    if unknown or not features or not all(encoders):
        raise ValueError(
            f"--features takes {', '.join(PROBE_FEATURES)} (comma-separated), not {args.features!r}; "
            f"--encoder takes comma-separated registered encoders, not {args.encoder!r}"
        )
    built = {encoder: models.build("segment-attention", encoder=encoder).eval() for encoder in encoders}
    if len({model.frontend for model in built.values()}) > 1:
        raise ValueError(
            f"--encoder {args.encoder}: the encoders cut different windows (different frontends)"
        )
    for encoder, model in built.items():
        if "tags" in features and "tags" not in model.encoder.heads:
            raise ValueError(f"--features tags: {encoder} has no tag head")
    train_tracks, val_tracks, heads, description = splits(args, args.quiet)
    tracks = train_tracks + val_tracks
    per_encoder: list[list[Example]] = []
    for encoder, model in built.items():
        cache = FeatureCache(args.cache or cache_dir() / "features", model.frontend)
        chosen = []
        for ex in examples(model, tracks, cache, recipe, encoder, args.quiet):
            blocks = [ex.data] if "embedding" in features else []
            if "tags" in features:
                with torch.no_grad():
                    emb = torch.from_numpy(ex.data).float()
                    blocks.append(model.encoder.predict(emb)["tags"].numpy())
            chosen.append(Example(ex.key, ex.group, np.concatenate(blocks, axis=1), ex.targets))
        per_encoder.append(chosen)
    joined = [
        Example(exs[0].key, exs[0].group, np.concatenate([ex.data for ex in exs], axis=1), exs[0].targets)
        for exs in zip(*per_encoder, strict=True)
    ]
    what = f"logistic regression on clip-averaged {' + '.join(features)} of {' + '.join(encoders)}"
    if not args.folds:
        result = probe_valence_arousal(joined[: len(train_tracks)], joined[len(train_tracks) :])
        result["features_per_window"] = int(joined[0].data.shape[1])
        print(json.dumps({"probe": what, "data": description, "validation": result}, indent=1))
        return 0
    # Cross-validation: the same tracks, dealt into k folds by group (artist), strata balanced.
    of_track = {id(t): ex for t, ex in zip(tracks, joined, strict=True)}
    rated = [t for t in tracks if "valence_arousal" in t.targets]
    # (k_fold refuses fewer groups than folds, naming the set.)
    pool = datasets.TrackSet("--folds: the valence/arousal tracks", dict(heads), rated, [], {})
    folds = pool.k_fold(args.folds, seed=args.split_seed)
    if not all(len(train) and len(val) for train, val in folds):
        raise ValueError(f"--folds {args.folds}: {len(rated)} tracks leave a fold empty; give fewer folds")
    runs = [
        {
            "fold": f"{i}/{args.folds}",
            **probe_valence_arousal(
                [of_track[id(t)] for t in train.tracks], [of_track[id(t)] for t in val.tracks]
            ),
        }
        for i, (train, val) in enumerate(folds, start=1)
    ]
    scores = ("valence_balanced_accuracy", "arousal_balanced_accuracy", "quadrant_accuracy")
    summary = {}
    for key in scores:
        values = np.array([r[key] for r in runs])
        summary[key] = {
            "mean": float(values.mean()),
            "sd": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
        }
    description["folds"] = (
        f"{args.folds} folds of the {len(rated)} valence/arousal tracks, grouped, seed {args.split_seed}"
    )
    print(json.dumps({"probe": what, "data": description, "folds": runs, "cross_validation": summary,
                      "features_per_window": int(joined[0].data.shape[1])}, indent=1))  # fmt: skip
    return 0


def cmd_export(args) -> int:
    """The artifact's streaming graphs (what --backend onnx loads) into it, and its whole model as ONNX."""
    model, _ = load(args.artifact)
    out = Path(args.out or Path(args.artifact) / "model.onnx")
    streaming = export_command(
        model, Path(args.artifact), streaming=True, with_frontend=False, check=args.check
    )
    whole = export_command(model, out, streaming=False, with_frontend=args.with_frontend, check=args.check)
    return max(streaming, whole)


def main(argv: list[str] | None = None, prog: str = "python -m train") -> int:
    parser = Parser(
        prog=prog,
        description=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p):
        p.add_argument(
            "--dataset", action="append", default=[], choices=KINDS, help="dataset kind (repeatable)"
        )
        p.add_argument("--data", action="append", default=[], help="its path (repeatable, in the same order)")
        p.add_argument(
            "--audio-root", help="va-table/folder: where the CSV's paths are (default: the CSV's folder)"
        )
        p.add_argument(
            "--va-preset", choices=sorted(datasets.VA_PRESETS), help="va-table column/scale preset"
        )
        p.add_argument("--jamendo-split", type=int, default=0, help="official split 0-4 (0)")
        p.add_argument("--jamendo-npy", help="folder of the official .npy mels")
        p.add_argument("--jamendo-audio", help="folder of the MP3s")
        p.add_argument(
            "--min-mood-count", type=int, default=20, help="4q: keep AllMusic moods with this many clips"
        )
        p.add_argument(
            "--on-missing", choices=("skip", "error"), default="skip", help="files listed but absent"
        )
        p.add_argument("--val-fraction", type=float, default=0.2, help="grouped validation share (0.2)")
        p.add_argument("--split-seed", type=int, default=0)
        p.add_argument(
            "--fold",
            type=fold_arg,
            metavar="I/K",
            help="validate on the I-th of K group-disjoint folds instead of the --val-fraction split "
            "(the same folds as probe --folds K)",
        )
        p.add_argument("--cache", help="feature cache folder (default: the moodstream cache)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe setting")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument(
            "--limit",
            type=number(0, kind=int, what="a track count"),
            default=0,
            help="at most N tracks per split and dataset, for quick runs (0, the default: all)",
        )

    p = sub.add_parser("fit", help="train a registered model")
    p.add_argument("--model", required=True, help=f"one of: {', '.join(models.available())}")
    p.add_argument("--recipe", help=f"one of: {', '.join(RECIPES)} (default: the model's paper)")
    p.add_argument("--epochs", type=number(1, kind=int, what="the epochs"), help="(default: the recipe's)")
    p.add_argument("--out", type=output_folder, default="runs/latest", help="artifact folder (runs/latest)")
    p.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE", help="model override")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        metavar="K",
        help="cross-validate, then fit on every clip: K fits each validated on the group-disjoint "
        "fold it holds out (OUT/folds/I; the folds of --fold I/K), their metrics' mean/sd/min/max; "
        "then the shipped model on all clips for the folds' median best epoch, its temperatures "
        "and thresholds fitted on the folds' out-of-fold outputs (0: one --val-fraction split)",
    )
    data_options(p)
    p = sub.add_parser("evaluate", help="metrics of an artifact on a dataset split")
    p.add_argument("artifact")
    p.add_argument("--split", default="test", help="jamendo: train|validation|test; others: validation|all")
    p.add_argument("--json", type=output_file, help="write metrics and the per-tag table here")
    data_options(p)
    p = sub.add_parser(
        "export", help="ONNX into the artifact: the streaming graphs --backend onnx loads, and model.onnx"
    )
    p.add_argument("artifact")
    p.add_argument("--out", type=output_file, help="where the whole model goes (default ARTIFACT/model.onnx)")
    p.add_argument("--with-frontend", action="store_true", help="the nnAudio mel inside model.onnx")
    p.add_argument("--check", action="store_true", help="compare ONNX Runtime with PyTorch")
    p = sub.add_parser("probe", help="linear-probe floor for valence/arousal on frozen embeddings")
    p.add_argument(
        "--encoder",
        default="musicnn-msd",
        help="the frozen encoder, or several comma-separated (their features concatenated; musicnn-msd)",
    )
    p.add_argument(
        "--features",
        default="embedding",
        help="per encoder: embedding (penultimate), tags (its tag logits), or embedding,tags (embedding)",
    )
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        help="cross-validate: K group-disjoint folds over the train + validation tracks, each "
        "held out once; prints every fold and the mean/sd/min/max (0: the one split). Without "
        "--limit, fold I holds out the clips that --fold I/K does in fit and evaluate",
    )
    data_options(p)
    sub.add_parser("score", help="official MTG-Jamendo metrics of prediction files", add_help=False)
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "score":
        from train.score import main as score_main

        return score_main(argv[1:], prog=f"{prog} score")
    args = parser.parse_args(argv)
    try:
        commands = {"fit": cmd_fit, "evaluate": cmd_evaluate, "export": cmd_export, "probe": cmd_probe}
        return commands[args.command](args)
    except DivergedError:
        return 3  # already reported, with the checkpoint to resume from
    except (
        ValueError,
        KeyError,
        ArtifactError,
        WeightsError,
        datasets.DatasetError,
        FileNotFoundError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(run(main))
