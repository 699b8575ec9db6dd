"""Evaluation metrics, computed as the MTG-Jamendo / MediaEval benchmark computes them.

The benchmark's ``evaluate.py`` calls scikit-learn's ``roc_auc_score``,
``average_precision_score`` (average ``'macro'``) and ``precision_recall_fscore_support``
(``'macro'`` and ``'micro'``). These are numpy re-implementations with the same semantics, so
our figures are comparable with published ones without depending on scikit-learn:

- ROC-AUC is the Mann-Whitney statistic from average ranks, which equals the trapezoid area
  under sklearn's ROC curve, ties included (a tied positive/negative pair counts one half).
- PR-AUC is sklearn's *average precision*: the step-wise sum ``Σ (R_k − R_{k−1}) · P_k`` over
  distinct score thresholds, not the trapezoid and not the interpolated (11-point / VOC) AP.
- P/R/F give 0 where a denominator is 0 (sklearn's ``zero_division`` default, minus its warning),
  and the macro F-score is the mean of per-tag F-scores, not the F of macro P and R.

Where we differ on purpose: a tag whose ground truth makes a ranking metric undefined (ROC-AUC:
only one class; PR-AUC: no positive) gets NaN with ``average=None`` and is left out of the macro
mean, with an ``UndefinedMetricWarning`` that says how many were left out. sklearn instead
returns NaN for such a ROC-AUC (older versions raise), which makes the macro NaN, and 0 for
such an AP, which drags the macro down. ``tag_report`` lists the excluded tags.

Decisions are ``scores > threshold`` (strict), the rule that produced the benchmark's
``baseline_vggish_decisions.npy``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata

AVERAGES = ("macro", "micro", None)


class UndefinedMetricWarning(UserWarning):
    """A tag or dimension whose metric is undefined was excluded or set to NaN."""


def _binary_matrix(y_true, name: str = "y_true") -> np.ndarray:
    """``y_true`` as a bool (n_tracks, n_tags) matrix; a 1-D vector is one tag."""
    y = np.asarray(y_true)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (n_tracks, n_tags), got shape {y.shape}")
    if y.dtype != bool:
        if not np.issubdtype(y.dtype, np.number) or not np.isin(y, (0, 1)).all():
            raise ValueError(f"{name} must be binary (0/1 or bool)")
        y = y.astype(bool)
    return y


def _score_matrix(scores, shape: tuple[int, int], name: str = "scores") -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim == 1:
        s = s[:, None]
    if s.shape != shape:
        raise ValueError(f"{name} has shape {s.shape}, y_true has {shape}")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {s.dtype}")
    if not np.isfinite(s).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return s


def _check_average(average) -> None:
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")


def _macro(per_tag: np.ndarray, metric: str) -> float:
    """Mean over the tags where the metric is defined; warns with how many were not."""
    undefined = np.isnan(per_tag)
    if undefined.all():
        raise ValueError(f"{metric} is undefined for every tag (see UndefinedMetricWarning)")
    if undefined.any():
        warnings.warn(
            f"{metric}: {int(undefined.sum())} of {per_tag.size} tags excluded from the macro average "
            "(undefined for their ground truth)",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    return float(per_tag[~undefined].mean())


def _roc_auc_columns(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    n_pos = y.sum(axis=0).astype(np.float64)
    n_neg = y.shape[0] - n_pos
    # Average ranks give a tied positive/negative pair half a win: exactly the trapezoid on the ROC curve.
    ranks = rankdata(s, method="average", axis=0)  # (n_tracks, n_tags)
    u = (ranks * y).sum(axis=0) - n_pos * (n_pos + 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = u / (n_pos * n_neg)
    auc[(n_pos == 0) | (n_neg == 0)] = np.nan
    return auc


def roc_auc(y_true, scores, average: str | None = "macro") -> float | np.ndarray:
    """Area under the ROC curve per tag (``None``), its mean (``'macro'``) or over all cells (``'micro'``)."""
    _check_average(average)
    y = _binary_matrix(y_true)
    s = _score_matrix(scores, y.shape)
    if average == "micro":
        auc = _roc_auc_columns(y.reshape(-1, 1), s.reshape(-1, 1))[0]
        if np.isnan(auc):
            raise ValueError("micro ROC-AUC is undefined: y_true has only one class")
        return float(auc)
    per_tag = _roc_auc_columns(y, s)
    return per_tag if average is None else _macro(per_tag, "ROC-AUC")


def _average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """sklearn's ``average_precision_score`` for one tag (1-D bool ``y``, 1-D ``s``)."""
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    # One point per distinct score: tied tracks enter the prediction set together.
    last_of_each = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(y)[last_of_each]
    precision = tp / (last_of_each + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def pr_auc(y_true, scores, average: str | None = "macro") -> float | np.ndarray:
    """Average precision (sklearn's step-wise PR-AUC) per tag, macro or micro; see the module notes."""
    _check_average(average)
    y = _binary_matrix(y_true)
    s = _score_matrix(scores, y.shape)
    if average == "micro":
        ap = _average_precision(y.ravel(), s.ravel())
        if np.isnan(ap):
            raise ValueError("micro PR-AUC is undefined: y_true has no positive")
        return ap
    per_tag = np.array([_average_precision(y[:, j], s[:, j]) for j in range(y.shape[1])])
    return per_tag if average is None else _macro(per_tag, "PR-AUC")


def decisions(scores, thresholds) -> np.ndarray:
    """Binary decisions ``scores > thresholds`` (per tag, broadcast over tracks).

    Strict, as the benchmark's ``calculate_decisions.py``: it reproduces the official decision files.
    """
    s = np.asarray(scores)
    t = np.asarray(thresholds, dtype=np.float64)
    if s.ndim != 2 or t.shape != (s.shape[1],):
        raise ValueError(
            f"need scores (n_tracks, n_tags) and one threshold per tag; got {s.shape} and {t.shape}"
        )
    return s > t


def fit_thresholds(y_true_val, scores_val, beta: float = 1.0) -> np.ndarray:
    """Per-tag thresholds that maximise F1 of ``decisions(scores_val, t)`` on the validation split.

    ``beta`` < 1 maximises F-beta instead, weighting precision more (0.5: a tag that lights up
    wrongly costs twice a tag that stays dark).

    Fit on validation, never on test: the benchmark's own baseline thresholds were fitted on the test
    ground truth, which flatters its P/R/F. Each threshold sits midway between the lowest score of the
    F1-optimal positive set and the next lower score, so the strict ``>`` keeps exactly that set
    (the benchmark used the lowest positive score itself, which ``>`` then drops). Ties in F1 go to
    the larger set, as the benchmark's ``argmax`` does. A tag with no positive gets its highest score
    (it never fires on validation). Returns float64 thresholds, shape (n_tags,).
    """
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")
    y = _binary_matrix(y_true_val, "y_true_val")
    s = _score_matrix(scores_val, y.shape, "scores_val").astype(np.float64)
    thresholds = np.empty(y.shape[1])
    for j in range(y.shape[1]):
        col_s, col_y = s[:, j], y[:, j]
        n_pos = int(col_y.sum())
        if n_pos == 0:
            thresholds[j] = col_s.max()
            continue
        order = np.argsort(col_s, kind="mergesort")[::-1]
        ss, yy = col_s[order], col_y[order]
        last_of_each = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1]
        tp = np.cumsum(yy)[last_of_each]
        # (1 + b^2) TP / ((1 + b^2) TP + b^2 FN + FP) = (1 + b^2) TP / (predicted + b^2 positives)
        f1 = (1 + beta**2) * tp / (last_of_each + 1 + beta**2 * n_pos)
        best = np.flatnonzero(f1 == f1.max())[-1]
        cut = last_of_each[best]
        lowest_in = ss[cut]
        thresholds[j] = (
            (lowest_in + ss[cut + 1]) / 2 if cut + 1 < ss.size else np.nextafter(lowest_in, -np.inf)
        )
    return thresholds


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def precision_recall_f(y_true, decisions, average: str | None = "macro") -> tuple:
    """Precision, recall and F1 of binary decisions: per tag (arrays), ``'macro'`` or ``'micro'`` (floats).

    0 where undefined (no predicted or no true positive), like sklearn's default; every tag counts
    in the macro mean, as in the benchmark.
    """
    _check_average(average)
    y = _binary_matrix(y_true)
    d = _binary_matrix(decisions, "decisions")  # the argument shadows decisions(), unused here
    if d.shape != y.shape:
        raise ValueError(f"decisions have shape {d.shape}, y_true has {y.shape}")
    tp = (y & d).sum(axis=0)
    fp = (~y & d).sum(axis=0)
    fn = (y & ~d).sum(axis=0)
    if average == "micro":
        tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * tp, 2 * tp + fp + fn)
    if average == "macro":
        return float(precision.mean()), float(recall.mean()), float(f1.mean())
    if average == "micro":
        return float(precision), float(recall), float(f1)
    return precision, recall, f1


# Regression (valence/arousal): y is (n,) or (n, n_dims); results are per dimension.


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape or t.ndim not in (1, 2) or t.shape[0] < 2:
        raise ValueError(
            f"need y_true and y_pred of one shape (n >= 2,) or (n, n_dims); got {t.shape}, {p.shape}"
        )
    if not (np.isfinite(t).all() and np.isfinite(p).all()):
        raise ValueError("y_true and y_pred must be finite")
    return t, p


def _per_dim(values: np.ndarray, ndim: int) -> float | np.ndarray:
    return float(values) if ndim == 1 else values


def r2(y_true, y_pred) -> float | np.ndarray:
    """Coefficient of determination per dimension; a constant target gives 1.0 if predicted exactly, else 0.0 (sklearn)."""
    t, p = _pair(y_true, y_pred)
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ss_tot > 0, 1 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return _per_dim(out, t.ndim)


def rmse(y_true, y_pred) -> float | np.ndarray:
    """Root mean squared error per dimension."""
    t, p = _pair(y_true, y_pred)
    return _per_dim(np.sqrt(((t - p) ** 2).mean(axis=0)), t.ndim)


def pearson_r(y_true, y_pred) -> float | np.ndarray:
    """Pearson correlation per dimension; NaN where either side is constant."""
    t, p = _pair(y_true, y_pred)
    dt, dp = t - t.mean(axis=0), p - p.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (dt * dp).sum(axis=0) / np.sqrt((dt**2).sum(axis=0) * (dp**2).sum(axis=0))
    return _per_dim(np.clip(r, -1.0, 1.0), t.ndim)


def ccc(y_true, y_pred) -> float | np.ndarray:
    """Lin's (1989) concordance correlation coefficient per dimension, with 1/n (co)variances as in the paper."""
    t, p = _pair(y_true, y_pred)
    mt, mp = t.mean(axis=0), p.mean(axis=0)
    cov = ((t - mt) * (p - mp)).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 2 * cov / (t.var(axis=0) + p.var(axis=0) + (mt - mp) ** 2)
    return _per_dim(out, t.ndim)


# Single-label classes (genre, quadrant): integer class indices.


def confusion_matrix(y_true_idx, y_pred_idx, n_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class (sklearn's layout); int64 (n_classes, n_classes)."""
    t = np.asarray(y_true_idx)
    p = np.asarray(y_pred_idx)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"need two 1-D index vectors of one length; got {t.shape}, {p.shape}")
    if not (np.issubdtype(t.dtype, np.integer) and np.issubdtype(p.dtype, np.integer)):
        raise ValueError("class indices must be integers")
    for name, v in (("y_true_idx", t), ("y_pred_idx", p)):
        if v.size and (v.min() < 0 or v.max() >= n_classes):
            raise ValueError(f"{name} has indices outside [0, {n_classes})")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def accuracy(y_true_idx, y_pred_idx) -> float:
    """Fraction of exact matches."""
    t, p = np.asarray(y_true_idx), np.asarray(y_pred_idx)
    if t.shape != p.shape or t.size == 0:
        raise ValueError(f"need two non-empty vectors of one shape; got {t.shape}, {p.shape}")
    return float((t == p).mean())


def balanced_accuracy(y_true_idx, y_pred_idx, n_classes: int | None = None) -> float:
    """Mean per-class recall over the classes present in ``y_true_idx`` (sklearn's, ``adjusted=False``)."""
    t, p = np.asarray(y_true_idx), np.asarray(y_pred_idx)
    if n_classes is None:
        n_classes = int(max(t.max(), p.max())) + 1
    cm = confusion_matrix(t, p, n_classes)
    support = cm.sum(axis=1)
    present = support > 0
    if not present.any():
        raise ValueError("y_true_idx is empty")
    return float((np.diag(cm)[present] / support[present]).mean())


# The report written by `train score` and stored in model provenance.


def _json_float(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def tag_report(y_true, scores, tag_names: Sequence[str], thresholds=None, *, binary_decisions=None) -> dict:
    """Macro/micro ROC-AUC and PR-AUC, P/R/F when decisions are given, and a per-tag table (JSON-ready).

    Decisions come from ``thresholds`` (``scores > t``) or ready-made ``binary_decisions``, not both.
    NaN (undefined) values are written as ``None``.
    """
    y = _binary_matrix(y_true)
    s = _score_matrix(scores, y.shape)
    tag_names = list(tag_names)
    if len(tag_names) != y.shape[1]:
        raise ValueError(f"{len(tag_names)} tag names for {y.shape[1]} tags")
    if thresholds is not None and binary_decisions is not None:
        raise ValueError("give thresholds or binary_decisions, not both")
    roc_tag = roc_auc(y, s, average=None)
    ap_tag = pr_auc(y, s, average=None)
    with warnings.catch_warnings():
        # The exclusions are reported below by name; the warning would only repeat them.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        report = {
            "n_tracks": int(y.shape[0]),
            "n_tags": int(y.shape[1]),
            "roc_auc_macro": _macro(roc_tag, "ROC-AUC"),
            "roc_auc_micro": roc_auc(y, s, average="micro"),
            "pr_auc_macro": _macro(ap_tag, "PR-AUC"),
            "pr_auc_micro": pr_auc(y, s, average="micro"),
            "excluded_from_roc_auc_macro": [tag_names[j] for j in np.flatnonzero(np.isnan(roc_tag))],
            "excluded_from_pr_auc_macro": [tag_names[j] for j in np.flatnonzero(np.isnan(ap_tag))],
        }
    positives = y.sum(axis=0)
    rows = [
        {
            "tag": tag,
            "n_positive": int(positives[j]),
            "roc_auc": _json_float(roc_tag[j]),
            "pr_auc": _json_float(ap_tag[j]),
        }
        for j, tag in enumerate(tag_names)
    ]
    decided = binary_decisions
    if thresholds is not None:
        thresholds = np.asarray(thresholds, dtype=np.float64)
        decided = decisions(s, thresholds)
        for row, t in zip(rows, thresholds, strict=True):
            row["threshold"] = float(t)
    if decided is not None:
        for average in ("macro", "micro"):
            p, r, f = precision_recall_f(y, decided, average=average)
            report.update({f"precision_{average}": p, f"recall_{average}": r, f"f1_{average}": f})
        p, r, f = precision_recall_f(y, decided, average=None)
        for j, row in enumerate(rows):
            row.update(precision=float(p[j]), recall=float(r[j]), f1=float(f[j]))
    report["per_tag"] = rows
    return report
