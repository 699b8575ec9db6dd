"""train.metrics and train.score: hand-computed cases, and the MTG-Jamendo baseline's published scores."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

from train import metrics
from train.metrics import UndefinedMetricWarning
from train.score import main as score_main

# Computed from the official files with scikit-learn 1.9.1 (the benchmark's evaluate.py and its
# predictions > thresholds); the published baseline table gives the first two to 4 decimals.
OFFICIAL = {
    "roc_auc_macro": 0.7258213528253318,
    "pr_auc_macro": 0.10773357614614303,
    "roc_auc_micro": 0.7750290525516741,
    "pr_auc_micro": 0.14091322280906765,
    "precision_macro": 0.13821566255855888,
    "recall_macro": 0.30864982204435637,
    "f1_macro": 0.1656944422858208,
    "precision_micro": 0.11609748078740804,
    "recall_micro": 0.37347964040190373,
    "f1_micro": 0.17713264570335768,
}


@pytest.fixture(scope="module")
def official(shared_data):
    root = shared_data / "mtg-jamendo" / "results"
    lines = (root / "baseline_vggish_thresholds.txt").read_text().splitlines()
    return {
        "root": root,
        "truth": np.load(root / "groundtruth.npy", allow_pickle=False),
        "scores": np.load(root / "baseline_vggish_predictions.npy", allow_pickle=False),
        "decisions": np.load(root / "baseline_vggish_decisions.npy", allow_pickle=False),
        "tags": [line.split("\t")[0] for line in lines],
        "thresholds": np.array([float(line.split("\t")[1]) for line in lines]),
    }


# --- the official reproduction -------------------------------------------------------------------


def test_baseline_published_roc_and_pr_auc(official):
    y, s = official["truth"], official["scores"]
    assert y.shape == (4231, 56)
    assert round(metrics.roc_auc(y, s), 4) == 0.7258
    assert round(metrics.pr_auc(y, s), 4) == 0.1077
    for key, value in (
        ("roc_auc_macro", metrics.roc_auc(y, s)),
        ("pr_auc_macro", metrics.pr_auc(y, s)),
        ("roc_auc_micro", metrics.roc_auc(y, s, average="micro")),
        ("pr_auc_micro", metrics.pr_auc(y, s, average="micro")),
    ):
        assert value == pytest.approx(OFFICIAL[key], abs=1e-12), key


def test_official_thresholds_reproduce_official_decisions_and_prf(official):
    y, s, t = official["truth"], official["scores"], official["thresholds"]
    decided = metrics.decisions(s, t)
    assert np.array_equal(decided, official["decisions"])
    # The benchmark decides with a strict '>': '>=' flips the cells that sit exactly on a threshold.
    assert int((s >= t).sum() - decided.sum()) == 57
    for average in ("macro", "micro"):
        got = metrics.precision_recall_f(y, decided, average=average)
        want = [OFFICIAL[f"{m}_{average}"] for m in ("precision", "recall", "f1")]
        assert got == pytest.approx(want, abs=1e-12)


def test_official_thresholds_are_test_set_argmax_f_dropped_by_strict_comparison(official):
    """The official thresholds were fitted on the *test* ground truth (lowest score of the F-optimal
    set), then applied with '>', which drops that set's lowest track. Our fit keeps the whole set."""
    y, s, t = official["truth"], official["scores"], official["thresholds"]
    fitted = metrics.fit_thresholds(y, s)  # on test, only to compare with the benchmark's procedure
    assert np.array_equal(metrics.decisions(s, fitted), s >= t)
    _, _, f_ours = metrics.precision_recall_f(y, metrics.decisions(s, fitted), average=None)
    _, _, f_official = metrics.precision_recall_f(y, official["decisions"], average=None)
    assert (f_ours >= f_official).all() and f_ours.mean() == pytest.approx(0.17277596216500582, abs=1e-12)


def test_tag_report_and_cli_on_official_files(official, tmp_path):
    root = official["root"]
    out = tmp_path / "report.json"
    args = [
        "--predictions",
        str(root / "baseline_vggish_predictions.npy"),
        "--groundtruth",
        str(root / "groundtruth.npy"),
    ]
    args += ["--thresholds", str(root / "baseline_vggish_thresholds.txt"), "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from train.score import main; sys.exit(main())", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "ROC-AUC    macro 0.7258  micro 0.7750" in proc.stdout
    assert "PR-AUC     macro 0.1077  micro 0.1409" in proc.stdout
    assert "F1         macro 0.1657  micro 0.1771" in proc.stdout
    report = json.loads(out.read_text())
    for key, value in OFFICIAL.items():
        assert report[key] == pytest.approx(value, abs=1e-12), key
    assert [row["tag"] for row in report["per_tag"]] == official["tags"]
    assert report["per_tag"][0]["threshold"] == official["thresholds"][0]


# --- ranking metrics by hand ----------------------------------------------------------------------


def test_roc_auc_counts_a_tied_pair_as_one_half():
    # positives 0.8, 0.3 vs negatives 0.8, 0.1: pairs 1/2 + 1 + 0 + 1 = 2.5 of 4
    y, s = np.array([1, 0, 1, 0]), np.array([0.8, 0.8, 0.3, 0.1])
    assert metrics.roc_auc(y, s) == pytest.approx(0.625)
    assert metrics.roc_auc(y, np.full(4, 0.5)) == pytest.approx(0.5)


def test_average_precision_is_the_step_sum_over_distinct_thresholds():
    # thresholds 0.8 (P 1/2, R 1/2), 0.3 (P 2/3, R 1), 0.1 (R unchanged): 1/2·1/2 + 1/2·2/3 = 7/12;
    # the interpolated AP would be 2/3, the trapezoid yet another value.
    y, s = np.array([1, 0, 1, 0]), np.array([0.8, 0.8, 0.3, 0.1])
    assert metrics.pr_auc(y, s) == pytest.approx(7 / 12)
    assert metrics.pr_auc(y, np.full(4, 0.5)) == pytest.approx(0.5)  # all tied: the prevalence


def test_perfect_and_inverted_rankings():
    y = np.array([1, 1, 0, 0])
    assert metrics.roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert metrics.pr_auc(y, [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert metrics.roc_auc(y, [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert metrics.pr_auc(y, [0.1, 0.2, 0.3, 0.4]) == pytest.approx(1 / 2 * 1 / 3 + 1 / 2 * 2 / 4)


def test_macro_micro_and_per_tag():
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.4]])
    per_tag = metrics.roc_auc(y, s, average=None)
    assert per_tag == pytest.approx([1.0, 0.75])  # tag 1: 0.8 beats both negatives, 0.3 beats one
    assert metrics.roc_auc(y, s) == pytest.approx(0.875)
    assert metrics.roc_auc(y, s, average="micro") == pytest.approx(metrics.roc_auc(y.ravel(), s.ravel()))
    assert metrics.pr_auc(y, s, average=None) == pytest.approx([1.0, 1 / 2 * 1 + 1 / 2 * 2 / 3])
    assert metrics.pr_auc(y, s.astype(np.float32)) == pytest.approx(metrics.pr_auc(y, s))
    with pytest.raises(ValueError, match="average"):
        metrics.roc_auc(y, s, average="weighted")


def test_one_class_tags_are_excluded_from_macro_with_a_warning():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1], [0, 0, 1]])  # tag 1: no positive; tag 2: all positive
    s = np.array([[0.9, 0.5, 0.1], [0.2, 0.4, 0.2], [0.8, 0.3, 0.3], [0.1, 0.2, 0.4]])
    roc = metrics.roc_auc(y, s, average=None)
    assert roc[0] == 1.0 and np.isnan(roc[1:]).all()
    ap = metrics.pr_auc(y, s, average=None)
    assert ap[0] == 1.0 and np.isnan(ap[1]) and ap[2] == 1.0  # all-positive AP is defined (1.0)
    with pytest.warns(UndefinedMetricWarning, match="2 of 3 tags excluded"):
        assert metrics.roc_auc(y, s) == 1.0
    with pytest.warns(UndefinedMetricWarning, match="1 of 3 tags excluded"):
        assert metrics.pr_auc(y, s) == 1.0
    with pytest.raises(ValueError, match="undefined for every tag"):
        metrics.roc_auc(y[:, 1:], s[:, 1:])
    with pytest.raises(ValueError, match="only one class"):
        metrics.roc_auc(y[:, 1], s[:, 1], average="micro")


def test_ranking_metrics_reject_bad_inputs():
    with pytest.raises(ValueError, match="binary"):
        metrics.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        metrics.pr_auc([0, 1, 1], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="shape"):
        metrics.roc_auc([[0, 1], [1, 0]], [0.1, 0.2])


# --- decisions, thresholds, P/R/F ------------------------------------------------------------------


def test_precision_recall_f_macro_is_mean_of_per_tag_f():
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    d = np.array([[1, 1], [0, 1], [1, 1], [0, 0]])
    # tag 0: tp 1 fp 1 fn 1; tag 1: tp 1 fp 2 fn 1
    p, r, f = metrics.precision_recall_f(y, d, average=None)
    assert (
        p == pytest.approx([1 / 2, 1 / 3])
        and r == pytest.approx([1 / 2, 1 / 2])
        and f == pytest.approx([1 / 2, 2 / 5])
    )
    assert metrics.precision_recall_f(y, d) == pytest.approx((5 / 12, 1 / 2, 9 / 20))  # not 2PR/(P+R) = 5/11
    assert metrics.precision_recall_f(y, d, average="micro") == pytest.approx((2 / 5, 1 / 2, 4 / 9))
    # a tag never true and never predicted scores 0, and still counts in the macro mean
    y0, d0 = np.c_[y, np.zeros(4, bool)], np.c_[d, np.zeros(4, bool)]
    assert metrics.precision_recall_f(y0, d0) == pytest.approx((5 / 18, 1 / 3, 3 / 10))


def test_decisions_are_strictly_above_threshold():
    s = np.array([[0.5, 0.2], [0.6, 0.2], [0.4, 0.1]])
    assert metrics.decisions(s, [0.5, 0.1]).tolist() == [[False, True], [True, True], [False, False]]
    with pytest.raises(ValueError, match="one threshold per tag"):
        metrics.decisions(s, [0.5])


def test_fit_thresholds_picks_the_f1_optimal_cut():
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    y = np.array([1, 0, 1, 1, 0, 0])
    # F1 of the top k: 1/2, 2/5, 2/3, 6/7, 3/4, 2/3 -> top 4; threshold midway to the next score
    (t,) = metrics.fit_thresholds(y[:, None], s[:, None])
    assert t == pytest.approx(0.55)
    assert metrics.decisions(s[:, None], [t])[:, 0].tolist() == [True, True, True, True, False, False]


def test_fit_thresholds_ties_and_edge_cases():
    # equal F1 (2/3) for the top 1 and the top 4: the larger set wins, as in the benchmark
    s = np.array([[0.9, 0.9, 0.9], [0.8, 0.7, 0.8], [0.7, 0.7, 0.7], [0.6, 0.2, 0.6], [0.5, 0.1, 0.5]])
    y = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    t = metrics.fit_thresholds(y, s)
    # tag 1: the tied 0.7s enter together, so {0.9, one 0.7} (F1 1) is no option; {0.9, 0.7, 0.7} (F1 4/5) is
    assert t[0] == pytest.approx(0.55)
    assert t[1] == pytest.approx((0.7 + 0.2) / 2)
    assert t[2] == 0.9  # no positive: never fires on this split
    assert not metrics.decisions(s, t)[:, 2].any()
    (t_all,) = metrics.fit_thresholds(np.array([[1], [1]]), np.array([[0.3], [0.2]]))
    assert metrics.decisions(np.array([[0.3], [0.2]]), [t_all]).all()


# --- regression -------------------------------------------------------------------------------------


def test_regression_metrics_on_known_values():
    x = np.array([1.0, 2, 3, 4, 5])
    # y = 2x: var_x 2, var_y 8, cov 4, means 3 and 6 -> CCC 8 / (2 + 8 + 9)
    assert metrics.pearson_r(x, 2 * x) == pytest.approx(1.0)
    assert metrics.ccc(x, 2 * x) == pytest.approx(8 / 19)
    assert metrics.r2(x, 2 * x) == pytest.approx(1 - 55 / 10)
    assert metrics.rmse(x, 2 * x) == pytest.approx(np.sqrt(11))
    # y = x + 1: CCC 2·2 / (2 + 2 + 1), R² 1 − 5/10
    assert metrics.ccc(x, x + 1) == pytest.approx(0.8)
    assert metrics.r2(x, x + 1) == pytest.approx(0.5)
    assert metrics.ccc(x, 6 - x) == pytest.approx(-1.0) and metrics.ccc(x, x) == pytest.approx(1.0)
    both = metrics.ccc(np.c_[x, x], np.c_[2 * x, x + 1])  # per dimension (valence, arousal)
    assert both.shape == (2,) and both == pytest.approx([8 / 19, 0.8])


def test_regression_metrics_match_the_textbook_formulas():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(200, 2))
    p = 0.6 * t + rng.normal(scale=0.5, size=(200, 2)) + 0.1
    r = metrics.pearson_r(t, p)
    assert r == pytest.approx([np.corrcoef(t[:, k], p[:, k])[0, 1] for k in range(2)])
    assert metrics.r2(t, p) == pytest.approx(1 - ((t - p) ** 2).sum(0) / ((t - t.mean(0)) ** 2).sum(0))
    # CCC = r · 2 σx σy / (σx² + σy² + (μx − μy)²)
    sx, sy = t.std(0), p.std(0)
    assert metrics.ccc(t, p) == pytest.approx(
        r * 2 * sx * sy / (sx**2 + sy**2 + (t.mean(0) - p.mean(0)) ** 2)
    )


def test_regression_constant_inputs():
    c = np.full(4, 0.3)
    assert np.isnan(metrics.pearson_r(c, [0.1, 0.2, 0.3, 0.4]))
    assert metrics.r2(c, c) == 1.0 and metrics.r2(c, [0.1, 0.2, 0.3, 0.4]) == 0.0
    with pytest.raises(ValueError, match="finite"):
        metrics.rmse([0.1, np.nan], [0.1, 0.2])


# --- classes ----------------------------------------------------------------------------------------


def test_accuracy_balanced_accuracy_and_confusion_matrix():
    t = np.array([0, 0, 0, 0, 1, 1, 2])
    p = np.array([0, 0, 0, 1, 1, 0, 0])
    assert metrics.confusion_matrix(t, p, 3).tolist() == [[3, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert metrics.accuracy(t, p) == pytest.approx(4 / 7)
    assert metrics.balanced_accuracy(t, p) == pytest.approx((3 / 4 + 1 / 2 + 0) / 3)
    assert metrics.balanced_accuracy(t, p, n_classes=5) == pytest.approx(
        (3 / 4 + 1 / 2 + 0) / 3
    )  # absent classes skipped
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix(t, p, 2)


# --- tag_report -------------------------------------------------------------------------------------


def test_tag_report_is_json_ready_and_names_excluded_tags():
    y = np.array([[1, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]])
    s = np.array([[0.9, 0.5, 0.6], [0.2, 0.4, 0.2], [0.8, 0.3, 0.3], [0.1, 0.2, 0.7]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the report lists exclusions instead of warning
        report = metrics.tag_report(y, s, ["a", "b", "c"], thresholds=[0.5, 0.45, 0.25])
    json.dumps(report, allow_nan=False)
    assert report["excluded_from_roc_auc_macro"] == ["b"] and report["excluded_from_pr_auc_macro"] == ["b"]
    assert report["roc_auc_macro"] == pytest.approx(1.0)
    assert report["per_tag"][1] == {
        "tag": "b", "n_positive": 0, "roc_auc": None, "pr_auc": None, "threshold": 0.45,
        "precision": 0.0, "recall": 0.0, "f1": 0.0,
    }  # fmt: skip
    assert report["f1_macro"] == pytest.approx((1 + 0 + 4 / 5) / 3)
    assert "f1_macro" not in metrics.tag_report(y, s, ["a", "b", "c"])
    with pytest.raises(ValueError, match="tag names"):
        metrics.tag_report(y, s, ["a", "b"])


# --- the score CLI ----------------------------------------------------------------------------------


@pytest.fixture
def small_files(tmp_path):
    rng = np.random.default_rng(3)
    truth = rng.random((30, 4)) < 0.3
    truth[0] = True  # every tag has a positive and a negative
    truth[1] = False
    scores = np.clip(truth * 0.3 + rng.random((30, 4)) * 0.7, 0, 1).astype(np.float32)
    paths = {"truth": tmp_path / "g.npy", "scores": tmp_path / "p.npy"}
    np.save(paths["truth"], truth)
    np.save(paths["scores"], scores)
    return tmp_path, paths, truth, scores


def _run(paths, *extra):
    return score_main(["--predictions", str(paths["scores"]), "--groundtruth", str(paths["truth"]), *extra])


def test_score_cli_prints_and_writes_json(small_files, capsys):
    tmp, paths, truth, scores = small_files
    thresholds = tmp / "t.txt"
    thresholds.write_text("".join(f"t{j}\t{v!r}\n" for j, v in enumerate([0.5, 0.6, 0.55, 0.7])))
    assert _run(paths, "--thresholds", str(thresholds), "--per-tag", "--json", str(tmp / "r.json")) == 0
    out = capsys.readouterr().out
    assert f"ROC-AUC    macro {metrics.roc_auc(truth, scores):.4f}" in out
    assert "t3" in out and "precision" in out
    report = json.loads((tmp / "r.json").read_text())
    assert report["pr_auc_micro"] == pytest.approx(metrics.pr_auc(truth, scores, average="micro"))
    expected_f1 = metrics.precision_recall_f(truth, scores > np.array([0.5, 0.6, 0.55, 0.7]))[2]
    assert report["f1_macro"] == pytest.approx(expected_f1)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t, s: (t, s[:-1]), "differ in shape"),
        (lambda t, s: (t, np.where(np.eye(30, 4, dtype=bool), np.nan, s)), "NaN"),
        (lambda t, s: (t.astype(float) * 2, s), "must be binary"),
        (lambda t, s: (t[:, 0], s[:, 0]), "must be 2-D"),
        (lambda t, s: (t.astype(object), s), "cannot read groundtruth"),
    ],
)
def test_score_cli_rejects_bad_inputs(small_files, capsys, mutate, message):
    _, paths, truth, scores = small_files
    truth, scores = mutate(truth, scores)
    np.save(paths["truth"], truth, allow_pickle=True)
    np.save(paths["scores"], scores)
    assert _run(paths) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_score_cli_missing_files_and_inconsistent_options(small_files, capsys):
    tmp, paths, _, _ = small_files
    assert score_main(["--predictions", str(tmp / "nope.npy"), "--groundtruth", str(paths["truth"])]) == 1
    assert "predictions file not found" in capsys.readouterr().err
    assert _run(paths, "--thresholds", str(tmp / "nope.txt")) == 1
    assert "thresholds file not found" in capsys.readouterr().err
    (tmp / "short.txt").write_text("0.5\n0.5\n")
    assert _run(paths, "--thresholds", str(tmp / "short.txt")) == 1
    assert "has 2 values" in capsys.readouterr().err
    (tmp / "tags.txt").write_text("a\nb\nc\n")
    assert _run(paths, "--tags", str(tmp / "tags.txt")) == 1
    assert "has 3 tags" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        _run(paths, "--thresholds", str(tmp / "short.txt"), "--decisions", str(paths["truth"]))
    assert exc.value.code == 2
