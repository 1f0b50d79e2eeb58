"""Metrics as numbers, arrays and DataFrames (no drawing)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score


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
        out[k] = {"mean": float(vals.mean()) if len(vals) else math.nan,
                  "sd": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan}
    return out
