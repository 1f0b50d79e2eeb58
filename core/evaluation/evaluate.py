"""Metrics as numbers, arrays and DataFrames (no drawing)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from core.base import fmt
from core.runs import rundir


def roc_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC: binary on the positive (second) class, macro one-vs-rest otherwise; NaN if undefined."""
    y_true = np.asarray(y_true)
    n_classes = probs.shape[1]
    present = np.unique(y_true)
    if len(present) < 2:
        return math.nan
    if n_classes == 2:
        return float(roc_auc_score(y_true, probs[:, 1]))
    if len(present) < n_classes:
        return float(np.mean([roc_auc_score(y_true == c, probs[:, c]) for c in present]))
    return float(roc_auc_score(y_true, probs, multi_class="ovr", labels=list(range(n_classes))))


def basic_metrics(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, ROC AUC and per-class recall from class indices and probabilities."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(1)
    out = {
        "accuracy": float((pred == y_true).mean()) if len(y_true) else math.nan,
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)) if len(y_true) else math.nan,
        "roc_auc": roc_auc(y_true, probs) if len(y_true) else math.nan,
    }
    recalls = recall_score(y_true, pred, labels=list(range(len(classes))), average=None, zero_division=np.nan)
    out.update({f"recall_{c}": float(r) for c, r in zip(classes, recalls)})
    return out


def predictions_frame(paths, y_true, probs: np.ndarray, classes: list[str], **extra) -> pd.DataFrame:
    """One row per item: path, true label, predicted label, its probability and every class probability."""
    probs = np.asarray(probs, dtype=float)
    pred = probs.argmax(1)
    df = pd.DataFrame({"path": list(paths)})
    if y_true is not None:
        df["label"] = [classes[i] for i in np.asarray(y_true, dtype=int)]
    df["pred"] = [classes[i] for i in pred]
    df["prob_pred"] = probs.max(1)
    for i, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, i]
    for k, v in extra.items():
        df[k] = v
    return df


def metrics_from_frame(df: pd.DataFrame, classes: list[str]) -> dict[str, float]:
    """basic_metrics from a predictions_frame table with a label column."""
    lookup = {c: i for i, c in enumerate(classes)}
    y = df["label"].map(lookup).to_numpy()
    probs = df[[f"prob_{c}" for c in classes]].to_numpy()
    return basic_metrics(y, probs, classes)


def mean_sd(per_fold: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and sample standard deviation of each metric across folds (NaNs ignored)."""
    keys = sorted({k for d in per_fold for k in d})
    out = {}
    for k in keys:
        vals = np.array([d.get(k, math.nan) for d in per_fold], dtype=float)
        vals = vals[~np.isnan(vals)]
        out[k] = {
            "mean": float(vals.mean()) if len(vals) else math.nan,
            "sd": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
        }
    return out


# ---------------------------------------------------------------- settings

BOOTSTRAP_RESAMPLES = 1000  # default number of bootstrap resamples for every confidence interval
BOOTSTRAP_SEED = 0  # default seed of the numpy Generator that draws them
CI_LEVEL = 0.95  # two-sided percentile interval
CALIBRATION_BINS = 10  # equal-width probability bins for the reliability curve and ECE
TARGETS = (0.90, 0.95)  # sensitivity / specificity targets listed among the operating points
_BOOT_CELLS = 4_000_000  # resample x item cells per bootstrap chunk (bounds memory)


# ---------------------------------------------------------------- inputs


def labels_and_probs(df: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Class indices of the `label` column and the prob_<class> matrix of a predictions table."""
    missing = [f"prob_{c}" for c in classes if f"prob_{c}" not in df]
    if missing:
        raise ValueError(f"the predictions table has no column(s) {', '.join(missing)}")
    if "label" not in df:
        raise ValueError("the predictions table has no 'label' column (unlabelled data cannot be scored)")
    lookup = {c: i for i, c in enumerate(classes)}
    y = df["label"].astype(str).map(lookup)
    if y.isna().any():
        bad = sorted(set(df["label"].astype(str)[y.isna()]))
        raise ValueError(f"labels {bad} are not classes of this model ({classes})")
    return y.to_numpy(dtype=int), df[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of a table that carry a label (none without a label column): the rows that can be scored."""
    if "label" not in df:
        return df.iloc[:0]
    return df[df["label"].notna() & (df["label"].astype(str) != "")]


def is_binary(classes_or_probs) -> bool:
    """True for a two-class problem (a class list or a probability matrix)."""
    return (
        classes_or_probs.shape[1] if isinstance(classes_or_probs, np.ndarray) else len(classes_or_probs)
    ) == 2


def predict_labels(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Predicted class indices: binary -> positive (second) class when p >= threshold; else argmax."""
    probs = np.asarray(probs, dtype=float)
    if threshold is not None and probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(int)
    return probs.argmax(1)


def apply_threshold(df: pd.DataFrame, classes: list[str], threshold: float | None) -> pd.DataFrame:
    """A copy of a predictions table with pred / prob_pred / threshold for a binary decision threshold."""
    out = df.copy()
    probs = out[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    binary = is_binary(classes)
    t = (0.5 if threshold is None else float(threshold)) if binary else None
    pred = predict_labels(probs, t)
    out["pred"] = [classes[i] for i in pred]
    out["prob_pred"] = probs[np.arange(len(out)), pred] if len(out) else []
    out["threshold"] = t if binary else "argmax"
    return out


# ---------------------------------------------------------------- point metrics


def confusion(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix counts: rows = true class, columns = predicted class."""
    return confusion_matrix(
        np.asarray(y_true, dtype=int), np.asarray(pred, dtype=int), labels=list(range(n_classes))
    )


def normalize_rows(cm: np.ndarray) -> np.ndarray:
    """Row-normalised confusion matrix (share of each true class; empty rows stay 0)."""
    cm = np.asarray(cm, dtype=float)
    sums = cm.sum(1, keepdims=True)
    return np.divide(cm, sums, out=np.zeros_like(cm), where=sums > 0)


def specificities(cm: np.ndarray) -> np.ndarray:
    """One-vs-rest specificity TN / (TN + FP) of each class from a confusion matrix (NaN when undefined)."""
    cm = np.asarray(cm, dtype=float)
    fp = cm.sum(0) - np.diag(cm)
    tn = cm.sum() - cm.sum(1) - fp
    return np.divide(tn, tn + fp, out=np.full(len(cm), math.nan), where=(tn + fp) > 0)


def roc_auc_per_class(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC AUC of each class (NaN for a class that is absent or alone)."""
    y_true = np.asarray(y_true, dtype=int)
    out = np.full(probs.shape[1], math.nan)
    for c in range(probs.shape[1]):
        pos = y_true == c
        if 0 < pos.sum() < len(y_true):
            out[c] = roc_auc_score(pos, probs[:, c])
    return out


def pr_auc_per_class(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """One-vs-rest PR AUC (average precision) of each class (NaN for an absent class)."""
    y_true = np.asarray(y_true, dtype=int)
    out = np.full(probs.shape[1], math.nan)
    for c in range(probs.shape[1]):
        pos = y_true == c
        if pos.any():
            out[c] = average_precision_score(pos, probs[:, c])
    return out


def pr_auc(y_true: np.ndarray, probs: np.ndarray) -> float:
    """PR AUC (average precision): of the positive class for binary, macro one-vs-rest otherwise."""
    per = pr_auc_per_class(y_true, probs)
    if probs.shape[1] == 2:
        return float(per[1])
    return float(np.nanmean(per)) if np.isfinite(per).any() else math.nan


def per_class_table(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float | None = None
) -> pd.DataFrame:
    """Per class: precision, recall (= sensitivity), specificity, F1, support, ROC AUC and PR AUC."""
    y_true = np.asarray(y_true, dtype=int)
    pred = predict_labels(probs, threshold)
    labels = list(range(len(classes)))
    prec, rec, f1, sup = precision_recall_fscore_support(y_true, pred, labels=labels, zero_division=np.nan)
    cm = confusion(y_true, pred, len(classes))
    return pd.DataFrame(
        {
            "class": classes,
            "precision": prec,
            "recall": rec,
            "sensitivity": rec,
            "specificity": specificities(cm),
            "f1": f1,
            "support": sup.astype(int),
            "roc_auc": roc_auc_per_class(y_true, probs),
            "pr_auc": pr_auc_per_class(y_true, probs),
        }
    )


# ---------------------------------------------------------------- operating point (binary)


def ppv_npv(sensitivity: float, specificity: float, prevalence: float) -> tuple[float, float]:
    """Positive and negative predictive values at a stated prevalence (Bayes' rule)."""
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be within (0, 1), got {prevalence}")
    tp, fp = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    tn, fn = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return (tp / (tp + fp) if tp + fp > 0 else math.nan), (tn / (tn + fn) if tn + fn > 0 else math.nan)


def metrics_at_threshold(
    y_true: np.ndarray, p_pos: np.ndarray, threshold: float, prevalence: float | None = None
) -> dict[str, float]:
    """Binary metrics when p >= threshold means positive; PPV/NPV at `prevalence` (default: the sample's)."""
    y = np.asarray(y_true, dtype=int) == 1
    hit = np.asarray(p_pos, dtype=float) >= threshold
    tp, fp = int((hit & y).sum()), int((hit & ~y).sum())
    fn, tn = int((~hit & y).sum()), int((~hit & ~y).sum())
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    prev = float(y.mean()) if prevalence is None and len(y) else prevalence
    if prevalence is None:
        ppv = tp / (tp + fp) if tp + fp else math.nan
        npv = tn / (tn + fn) if tn + fn else math.nan
    else:
        ppv, npv = ppv_npv(sens, spec, prevalence)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "sensitivity": sens,
        "specificity": spec,
        "ppv": ppv,
        "npv": npv,
        "prevalence": prev if prev is not None else math.nan,
        "accuracy": (tp + tn) / len(y) if len(y) else math.nan,
        "f1": f1,
        "balanced_accuracy": (sens + spec) / 2,
        "youden_j": sens + spec - 1,
    }


def _roc(y_true: np.ndarray, p_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """fpr, tpr and thresholds (every distinct score; the first threshold is +inf)."""
    y = np.asarray(y_true, dtype=int) == 1
    if y.all() or not y.any():
        raise ValueError("choosing a threshold needs both positive and negative items")
    return roc_curve(y, p_pos, drop_intermediate=False)


def tradeoff_table(y_true: np.ndarray, p_pos: np.ndarray) -> pd.DataFrame:
    """Sensitivity and specificity (positive: p >= t) at every distinct score, plus t = 0 and t = 1, ascending.

    Between two listed thresholds the rates are those of the higher one (a step drawn with shape "vh").
    """
    fpr, tpr, thr = _roc(y_true, p_pos)  # every distinct score, descending; +inf first
    t = np.where(np.isfinite(thr), thr, math.nan)
    df = pd.DataFrame({"threshold": t, "sensitivity": tpr, "specificity": 1 - fpr}).dropna()
    p = np.asarray(p_pos, dtype=float)
    pos = np.asarray(y_true, dtype=int) == 1
    ends = pd.DataFrame(
        [
            {"threshold": e, "sensitivity": (p[pos] >= e).mean(), "specificity": (p[~pos] < e).mean()}
            for e in (0.0, 1.0)
        ]
    )
    return pd.concat([df, ends]).drop_duplicates("threshold").sort_values("threshold", ignore_index=True)


def _finite(t: float, p_pos: np.ndarray) -> float:
    """A usable threshold: +inf (nothing positive) becomes just above the highest score, capped at 1."""
    return float(t) if np.isfinite(t) else float(min(1.0, np.nextafter(np.max(p_pos), np.inf)))


def threshold_for_sensitivity(y_true: np.ndarray, p_pos: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity is at least `target` (the best specificity that keeps it)."""
    _fpr, tpr, thr = _roc(y_true, p_pos)
    return _finite(thr[int(np.argmax(tpr >= target - 1e-12))], p_pos)


def threshold_for_specificity(y_true: np.ndarray, p_pos: np.ndarray, target: float) -> float:
    """The lowest threshold whose specificity is at least `target` (the best sensitivity that keeps it)."""
    fpr, _tpr, thr = _roc(y_true, p_pos)
    ok = np.flatnonzero(1 - fpr >= target - 1e-12)
    return _finite(thr[ok[-1]], p_pos)


def youden_threshold(y_true: np.ndarray, p_pos: np.ndarray) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1."""
    fpr, tpr, thr = _roc(y_true, p_pos)
    return _finite(thr[int(np.argmax(tpr - fpr))], p_pos)


def operating_points(
    y_true: np.ndarray,
    p_pos: np.ndarray,
    prevalence: float | None = None,
    threshold: float | None = None,
    targets: tuple[float, ...] = TARGETS,
) -> pd.DataFrame:
    """Metrics at the usual thresholds: 0.5, Youden's J, sensitivity and specificity targets (+ a chosen one)."""
    rows = [("default 0.5", 0.5)]
    if threshold is not None:
        rows.insert(0, ("chosen", float(threshold)))
    try:
        rows.append(("Youden's J", youden_threshold(y_true, p_pos)))
        rows += [(f"sensitivity >= {t:.2f}", threshold_for_sensitivity(y_true, p_pos, t)) for t in targets]
        rows += [(f"specificity >= {t:.2f}", threshold_for_specificity(y_true, p_pos, t)) for t in targets]
    except ValueError:
        pass  # one class only: no curve to choose from
    return pd.DataFrame(
        [{"rule": name, **metrics_at_threshold(y_true, p_pos, t, prevalence)} for name, t in rows]
    )


# ---------------------------------------------------------------- curves


def roc_curves(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, pd.DataFrame]:
    """ROC curve(s) as fpr/tpr/threshold tables: the positive class for binary, one-vs-rest per class otherwise."""
    return _curves(y_true, probs, classes, _roc_table)


def pr_curves(y_true: np.ndarray, probs: np.ndarray, classes: list[str]) -> dict[str, pd.DataFrame]:
    """Precision-recall curve(s) as recall/precision/threshold tables (same classes as roc_curves)."""
    return _curves(y_true, probs, classes, _pr_table)


def _curves(y_true, probs, classes, fn) -> dict[str, pd.DataFrame]:
    """Apply a one-vs-rest curve function to the classes that can have a curve."""
    y_true = np.asarray(y_true, dtype=int)
    wanted = [1] if len(classes) == 2 else range(len(classes))
    return {classes[c]: fn(y_true == c, probs[:, c]) for c in wanted if 0 < (y_true == c).sum() < len(y_true)}


def _roc_table(pos: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """One ROC curve."""
    fpr, tpr, thr = roc_curve(pos, score)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.where(np.isfinite(thr), thr, math.nan)})


def _pr_table(pos: np.ndarray, score: np.ndarray) -> pd.DataFrame:
    """One precision-recall curve (threshold NaN at the recall-0 end)."""
    prec, rec, thr = precision_recall_curve(pos, score)
    return pd.DataFrame({"recall": rec, "precision": prec, "threshold": np.append(thr, math.nan)})


# ---------------------------------------------------------------- calibration


def _calibration_target(y_true: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """(score, outcome, mode): binary -> P(positive) vs is-positive; multi-class -> top confidence vs correct."""
    y_true = np.asarray(y_true, dtype=int)
    if probs.shape[1] == 2:
        return probs[:, 1], (y_true == 1).astype(float), "positive class"
    return probs.max(1), (probs.argmax(1) == y_true).astype(float), "top label"


def reliability_curve(y_true: np.ndarray, probs: np.ndarray, n_bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Equal-width bins: mean predicted probability vs observed frequency, with counts (empty bins dropped).

    Binary: the positive class's probability against how often the item is positive (as sklearn's
    calibration_curve). Multi-class: the top-label confidence against how often the top label is right.
    """
    score, outcome, _ = _calibration_target(y_true, probs)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], score)
    count = np.bincount(ids, minlength=n_bins)
    conf = np.bincount(ids, weights=score, minlength=n_bins)
    obs = np.bincount(ids, weights=outcome, minlength=n_bins)
    keep = count > 0
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins)[keep],
            "lower": edges[:-1][keep],
            "upper": edges[1:][keep],
            "confidence": conf[keep] / count[keep],
            "observed": obs[keep] / count[keep],
            "count": count[keep],
        }
    )


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, n_bins: int = CALIBRATION_BINS
) -> float:
    """ECE: count-weighted mean |observed - predicted| over the reliability curve's bins."""
    curve = reliability_curve(y_true, probs, n_bins)
    if not len(curve):
        return math.nan
    w = curve["count"] / curve["count"].sum()
    return float((w * (curve["observed"] - curve["confidence"]).abs()).sum())


def brier_score(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Brier score: binary mean (p_pos - y)^2 (0..1); multi-class mean sum_k (p_k - onehot_k)^2 (0..2)."""
    y_true = np.asarray(y_true, dtype=int)
    if not len(y_true):
        return math.nan
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - (y_true == 1)) ** 2))
    onehot = np.eye(probs.shape[1])[y_true]
    return float(np.mean(((probs - onehot) ** 2).sum(1)))


# ---------------------------------------------------------------- bootstrap


def bootstrap_indices(
    y_true: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    stratified: bool = True,
) -> np.ndarray:
    """An n_resamples x n matrix of resampled row positions (with replacement).

    Stratified (the default used for every CI here): each true class is resampled within itself, so class
    counts (prevalence) stay fixed and AUC, sensitivity and specificity are defined in every resample.
    Columns are ordered by class, so column j always holds an item of the same true class.
    """
    y_true = np.asarray(y_true, dtype=int)
    rng = np.random.default_rng(seed)
    if not stratified:
        return rng.integers(0, len(y_true), size=(n_resamples, len(y_true)))
    parts = []
    for c in np.unique(y_true):
        pos = np.flatnonzero(y_true == c)
        parts.append(pos[rng.integers(0, len(pos), size=(n_resamples, len(pos)))])
    return np.concatenate(parts, axis=1) if parts else np.zeros((n_resamples, 0), dtype=int)


def _fast_auc(pos_cols: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Row-wise binary ROC AUC (Mann-Whitney with tied ranks) for a resamples x items score matrix."""
    from scipy.stats import rankdata

    n1 = int(pos_cols.sum())
    n0 = scores.shape[1] - n1
    if n1 == 0 or n0 == 0:
        return np.full(scores.shape[0], math.nan)
    ranks = rankdata(scores, axis=1)
    return (ranks[:, pos_cols].sum(1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _boot_stats(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, idx: np.ndarray, classes: list[str]
) -> dict[str, np.ndarray]:
    """Every bootstrapped statistic for one chunk of resamples (rows of idx)."""
    yy, pp = y[idx[0]], pred[idx]  # stratified: the true class of each column is the same in every row
    correct = pp == yy
    out = {"accuracy": correct.mean(1)}
    recalls, present = [], [c for c in range(len(classes)) if (yy == c).any()]
    for c in present:
        is_c = yy == c
        recalls.append(correct[:, is_c].mean(1))
        spec = (pp[:, ~is_c] != c).mean(1) if (~is_c).any() else np.full(len(idx), math.nan)
        name = "" if len(classes) == 2 else f"_{classes[c]}"
        if len(classes) > 2 or c == 1:
            out[f"sensitivity{name}"], out[f"specificity{name}"] = recalls[-1], spec
            if len(classes) > 2:
                out[f"roc_auc{name}"] = _fast_auc(is_c, probs[idx, c])
    out["balanced_accuracy"] = np.mean(recalls, axis=0)
    if len(classes) == 2:
        out["roc_auc"] = _fast_auc(yy == 1, probs[idx, 1])
    else:
        aucs = [out[f"roc_auc_{classes[c]}"] for c in present if (yy != c).any()]
        out["roc_auc"] = np.mean(aucs, axis=0) if aucs else np.full(len(idx), math.nan)
    return out


def point_stats(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float | None = None
) -> dict[str, float]:
    """The statistics that get bootstrap CIs, on the full sample (same names as bootstrap_ci)."""
    y_true = np.asarray(y_true, dtype=int)
    idx = np.argsort(y_true, kind="stable")[None]
    stats = _boot_stats(y_true, np.asarray(probs, float), predict_labels(probs, threshold), idx, classes)
    return {k: float(v[0]) for k, v in stats.items()}


def bootstrap_ci(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    threshold: float | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = CI_LEVEL,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap CIs (class-stratified resampling) for accuracy, balanced accuracy, ROC AUC,
    sensitivity and specificity (binary: of the positive = second class; multi-class: one-vs-rest per class).

    Returns {metric: {"value", "lo", "hi"}}; the value is the full-sample estimate.
    """
    y_true, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=float)
    point = point_stats(y_true, probs, classes, threshold)
    if not len(y_true) or n_resamples < 1:
        return {k: {"value": v, "lo": math.nan, "hi": math.nan} for k, v in point.items()}
    idx = bootstrap_indices(y_true, n_resamples, seed)
    pred = predict_labels(probs, threshold)
    step = max(1, _BOOT_CELLS // max(1, len(y_true)))
    chunks = [
        _boot_stats(y_true, probs, pred, idx[i : i + step], classes) for i in range(0, n_resamples, step)
    ]
    alpha = (1 - level) / 2
    out = {}
    for k, v in point.items():
        draws = np.concatenate([c[k] for c in chunks])
        draws = draws[np.isfinite(draws)]
        lo, hi = np.quantile(draws, [alpha, 1 - alpha]) if len(draws) else (math.nan, math.nan)
        out[k] = {"value": v, "lo": float(lo), "hi": float(hi)}
    return out


def draws_ci(draws, point: float, level: float = CI_LEVEL) -> dict[str, float]:
    """{value, lo, hi}: a point estimate and the percentile interval of its finite bootstrap draws."""
    d = np.asarray(draws, dtype=float)
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha]) if len(d) else (math.nan, math.nan)
    return {"value": float(point), "lo": float(lo), "hi": float(hi)}


# ---------------------------------------------------------------- a model that learned nothing

ONE_CLASS_SHARE = 0.95  # at least this share of the items predicted as one class (more than are that class)
CHANCE_MARGIN = 0.05  # |ROC AUC - 0.5| below this is about chance
ADVICE = (
    "What to try: train for more epochs; another learning rate (the LR finder on the Training setup page); "
    "class balancing (weighted loss or oversampling) when one class dominates the data; and check that the "
    "labels are right and that the classes differ visibly in the images."
)


def dominant_class(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> tuple[int, float, float]:
    """The most predicted class, the share of items predicted as it and the share that truly are it."""
    top = int(np.bincount(pred, minlength=n_classes).argmax())
    return top, float((pred == top).mean()), float((y_true == top).mean())


def predicts_one_class(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> bool:
    """Whether (almost) every item is predicted as one class, more often than items are that class."""
    _top, share, true_share = dominant_class(y_true, pred, n_classes)
    return share >= ONE_CLASS_SHARE and share > true_share


def missed_classes(y_true: np.ndarray, pred: np.ndarray, classes: list[str]) -> list[str]:
    """One sentence per class with images in the set of which the model recognises none (recall 0)."""
    return [
        f"The model recognises none of the {n} '{c}' images (recall 0 for '{c}'): it misses that class entirely."
        for i, c in enumerate(classes)
        if (n := int((y_true == i).sum())) and not (pred[y_true == i] == i).any()
    ]


def model_warnings(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float | None = None
) -> list[str]:
    """Plain sentences when a model predicts (almost) one class for everything, misses a class or ranks at chance.

    The last sentence, when there are warnings, says what to try. Binary models decide at `threshold` (0.5).
    """
    y_true, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=float)
    n = len(y_true)
    if n == 0 or len(np.unique(y_true)) < 2:
        return []
    t = (0.5 if threshold is None else float(threshold)) if is_binary(classes) else None
    pred = predict_labels(probs, t)
    top, share, true_share = dominant_class(y_true, pred, len(classes))
    out = []
    if predicts_one_class(y_true, pred, len(classes)):
        at = f" at threshold {t:.2f}" if t is not None else ""
        out.append(
            f"The model calls {share:.0%} of the {n} images '{classes[top]}'{at}, while {true_share:.0%} of "
            "them are: it predicts one class for (almost) everything and has not learned to tell the classes apart."
        )
    else:
        out += missed_classes(y_true, pred, classes)
    auc = roc_auc(y_true, probs)
    if math.isfinite(auc) and abs(auc - 0.5) < CHANCE_MARGIN:
        out.append(
            f"The ROC AUC is {auc:.2f}, about chance (0.5): the model's scores order the images no better "
            "than guessing."
        )
    return [*out, ADVICE] if out else []


# ---------------------------------------------------------------- a whole evaluation


def _set_metrics(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    t: float | None,
    prevalence: float | None,
    n_bins: int,
) -> tuple[dict[str, float], pd.DataFrame]:
    """Point metrics of one set (at threshold `t` when binary, recall per class included) and its per-class table."""
    metrics = {
        **basic_metrics(y_true, probs, classes),
        "pr_auc": pr_auc(y_true, probs) if len(y_true) else math.nan,
        "brier": brier_score(y_true, probs),
        "ece": expected_calibration_error(y_true, probs, n_bins),
    }
    if t is not None:  # binary
        metrics.update(
            {
                k: v
                for k, v in metrics_at_threshold(y_true, probs[:, 1], t, prevalence).items()
                if k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
            }
        )
    per_class = per_class_table(y_true, probs, classes, t)
    metrics.update({f"recall_{c}": float(r) for c, r in zip(classes, per_class["recall"])})
    return metrics, per_class


def _calibration(
    y_true: np.ndarray, probs: np.ndarray, metrics: dict[str, float], n_bins: int
) -> dict[str, Any]:
    """ECE and Brier score of one set beside its reliability curve and what it is measured on."""
    return {
        "ece": metrics["ece"],
        "brier": metrics["brier"],
        "n_bins": n_bins,
        "mode": _calibration_target(y_true, probs)[2],
        "curve": reliability_curve(y_true, probs, n_bins).to_dict("records"),
    }


def _bootstrap_note(n_resamples: int, seed: int) -> dict[str, Any]:
    """How the confidence intervals were made (resamples, seed, level, method)."""
    return {
        "n_resamples": n_resamples,
        "seed": seed,
        "level": CI_LEVEL,
        "method": "percentile, resampled within each true class",
    }


def evaluate_predictions(
    y_true: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    threshold: float | None = None,
    prevalence: float | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    n_bins: int = CALIBRATION_BINS,
) -> dict[str, Any]:
    """Every metric of one labelled set as plain JSON-able values (NaN where undefined).

    Binary problems use the second class as positive with `threshold` (default 0.5); multi-class uses argmax.
    """
    y_true, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=float)
    binary = is_binary(classes)
    t = (0.5 if threshold is None else float(threshold)) if binary else None
    cm = confusion(y_true, predict_labels(probs, t), len(classes))
    metrics, per_class = _set_metrics(y_true, probs, classes, t, prevalence, n_bins)
    counts = np.bincount(y_true, minlength=len(classes)).tolist()
    out: dict[str, Any] = {
        "n": int(len(y_true)),
        "classes": list(classes),
        "counts": dict(zip(classes, counts)),
        "threshold": t,
        "positive_class": classes[1] if binary else None,
        "prevalence": prevalence,
        "metrics": metrics,
        "ci": bootstrap_ci(y_true, probs, classes, t, n_resamples, seed),
        "per_class": per_class.to_dict("records"),
        "confusion": cm.tolist(),
        "confusion_normalized": normalize_rows(cm).tolist(),
        "calibration": _calibration(y_true, probs, metrics, n_bins),
        "bootstrap": _bootstrap_note(n_resamples, seed),
    }
    out["warnings"] = model_warnings(y_true, probs, classes, t)
    if binary:
        out["operating_points"] = operating_points(y_true, probs[:, 1], prevalence, threshold).to_dict(
            "records"
        )
    return out


def evaluate_frame(df: pd.DataFrame, classes: list[str], **kwargs: Any) -> dict[str, Any]:
    """evaluate_predictions on a predictions table (label + prob_<class> columns)."""
    y, probs = labels_and_probs(df, classes)
    return evaluate_predictions(y, probs, classes, **kwargs)


def fold_table(oof: pd.DataFrame, classes: list[str], threshold: float | None = None) -> pd.DataFrame:
    """One row per fold of out-of-fold predictions: n, accuracy, balanced accuracy, AUCs, sens./spec."""
    rows = []
    for fold, part in oof.groupby("fold", sort=True):
        y, probs = labels_and_probs(part, classes)
        stats = point_stats(y, probs, classes, threshold)
        rows.append(
            {
                "fold": int(fold),
                "n": len(part),
                **stats,
                "pr_auc": pr_auc(y, probs),
                "brier": brier_score(y, probs),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- run folders


def load_run_predictions(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """The prediction tables a run folder holds: "valid" or "oof" (k-fold), and "test" when present."""
    run = rundir.RunFolder(run_dir)
    out = {}
    for name in rundir.PREDICTION_SETS:
        path = run.predictions(name)
        if path.is_file():
            out[name] = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return out


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """metrics.json of a run folder (type, classes, best epoch ...); refuses a run that has not finished."""
    run = rundir.RunFolder(run_dir)
    if not run.is_finished():
        raise FileNotFoundError(
            f"{run_dir} has no {run.metrics.name}: the run has not finished (or is not a run folder)"
        )
    return json.loads(run.metrics.read_text())


def evaluate_run(
    run_dir: str | Path,
    threshold: float | None = None,
    external: pd.DataFrame | None = None,
    prevalence: float | None = None,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Evaluate every prediction set of a run folder (+ an external labelled test table), side by side.

    k-fold runs add per-fold values with mean and sd; their "oof" set is the pooled out-of-fold evaluation.
    """
    summary = run_summary(run_dir)
    classes = list(summary["classes"])
    sets = load_run_predictions(run_dir)
    if external is not None:
        sets["external"] = external
    kw = dict(threshold=threshold, prevalence=prevalence, n_resamples=n_resamples, seed=seed)
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "type": summary.get("type", "single"),
        "classes": classes,
        "best_epoch": summary.get("best_epoch"),
        "monitor": summary.get("monitor"),
        "sets": {name: evaluate_frame(labelled(df), classes, **kw) for name, df in sets.items()},
    }
    if "oof" in sets and "fold" in sets["oof"]:
        table = fold_table(sets["oof"], classes, out["sets"]["oof"]["threshold"])
        stats = [{k: v for k, v in r.items() if k not in ("fold", "n")} for r in table.to_dict("records")]
        out["folds"] = {"table": table.to_dict("records"), "mean_sd": mean_sd(stats)}
    return out


def run_warnings(run_dir: str | Path, classes: list[str] | None = None, task: str | None = None) -> list[str]:
    """model_warnings of a run's validation (k-fold: out-of-fold) predictions at the default decision.

    `classes` / `task` None: read from the finished run's metrics.json (training passes them while it writes that
    file). A multi-label run's rule is core.evaluation.multilabel.model_warnings (core.evaluation.bytask.run_warnings
    dispatches); here it gets none.
    """
    if classes is None or task is None:
        summary = run_summary(run_dir)
        classes = list(summary["classes"]) if classes is None else classes
        task = (summary.get("task") or {}).get("type", "single") if task is None else task
    if task == "multilabel":
        return []
    sets = load_run_predictions(run_dir)
    name = "oof" if "oof" in sets else "valid"
    if name not in sets:
        return []
    y, probs = labels_and_probs(labelled(sets[name]), classes)
    return model_warnings(y, probs, classes)


def provenance(summary: dict[str, Any]) -> str:
    """One sentence: which epoch the saved model is from, which set is the headline, where validation is optimistic."""
    if summary.get("type") == "kfold":
        weights = {f.get("model_weights", "best") for f in summary.get("metrics", {}).get("per_fold", [])}
        if weights == {"last"}:
            return "Each fold's model is the last epoch of its schedule; the out-of-fold metrics did not choose it."
        return (
            "Each fold's model is its best checkpoint, chosen on that fold's validation items: the out-of-fold "
            "metrics are optimistic."
        )
    if "model_weights" not in summary:  # a run from before the rule was recorded: it kept the best epoch
        best = summary.get("best_epoch")
        where = f" (epoch {int(best) + 1})" if isinstance(best, int) and best >= 0 else ""
        return (
            f"Model: the best checkpoint by {summary.get('monitor', 'valid_loss')}{where}, chosen on the "
            "validation set, so the validation metrics are optimistic."
        )
    epoch, planned = (
        int(summary.get("model_epoch", -1)) + 1,
        summary.get("epochs_planned", summary.get("epochs_run")),
    )
    if summary["model_weights"] == "best":
        text = (
            f"Model: epoch {epoch} of {summary.get('epochs_run')} run, the best checkpoint by "
            f"{summary.get('monitor', 'valid_loss')} (early stopping). It was chosen on the validation set, "
            "so the validation metrics are optimistic."
        )
    else:
        text = (
            f"Model: epoch {epoch} of {planned}, the last epoch of the schedule; the validation set did not "
            "choose it."
        )
    if summary.get("headline_set") == "test":
        text += " Headline: the held-out test set, never seen in training or in choosing the epoch."
    return text


HEADLINE = ("roc_auc", "accuracy", "balanced_accuracy", "sensitivity", "specificity")


def comparison_table(sets: dict[str, dict[str, Any]], metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Metric rows x set columns ("0.912 (0.871-0.948)"), for showing validation and test side by side."""
    names = list(dict.fromkeys(k for ev in sets.values() for k in [*ev["ci"], *ev["metrics"]]))
    if metrics is not None:
        names = [m for m in metrics if m in names]
    rows = []
    for m in names:
        row = {"metric": m}
        for set_name, ev in sets.items():
            row[set_name] = (
                fmt.with_ci(ev["ci"][m], missing="-")
                if m in ev["ci"]
                else fmt.number(ev["metrics"].get(m), missing="-")
            )
        rows.append(row)
    return pd.DataFrame(rows)


def class_distribution(items: pd.DataFrame) -> pd.DataFrame:
    """Item counts per split (rows) and class (columns) from an items table."""
    split = (
        items["split"].fillna("").replace("", "unsplit")
        if "split" in items
        else pd.Series("all", index=items.index)
    )
    order = [s for s in ("train", "valid", "test") if (split == s).any()] + sorted(
        set(split) - {"train", "valid", "test"}
    )
    table = pd.crosstab(split, items["label"].astype(str)).reindex(order)
    table.index.name, table.columns.name = "split", None
    return table
