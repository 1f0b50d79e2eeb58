"""Ordinal evaluation: quadratic weighted kappa (QWK), mean absolute error and off-by-one accuracy with patient-level
bootstrap CIs, the confusion matrix with its axes in grade order, and each cut-point (grade >= k) as a binary result
(AUC of P(grade >= k), sensitivity and specificity of the predicted grade >= k, with CIs).

A predictions table holds `label` and `pred` (grades), `expected_grade` (the probability-weighted grade index),
`prob_<grade>` per grade in order, and `group` (pseudonymised patient) where known. The predicted grade is CORN's
rank (core.models.heads.predicted_grade), not the most probable grade.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from core.evaluation import evaluate
from core.evaluation.taskstats import bootstrap, bootstrap_note, fast_auc, groups_of, sens_spec
from core.models.heads import exceed_probs, expected_grade, predicted_grade


def predictions_frame(paths, probs: np.ndarray, grades: list[str], **extra) -> pd.DataFrame:
    """One row per image: path, the predicted grade, its probability, the expected grade, every grade's probability."""
    probs = np.asarray(probs, dtype=float).reshape(-1, len(grades))
    pred = predicted_grade(probs) if len(probs) else np.zeros(0, dtype=int)
    df = pd.DataFrame({"path": list(paths)})
    for k, v in extra.items():
        df[k] = v
    df["pred"] = [grades[i] for i in pred]
    df["prob_pred"] = probs[np.arange(len(probs)), pred] if len(probs) else []
    df["expected_grade"] = expected_grade(probs) if len(probs) else []
    for i, g in enumerate(grades):
        df[f"prob_{g}"] = probs[:, i]
    return df


def qwk(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Cohen's kappa with quadratic weights (1 = perfect agreement, 0 = chance); NaN when undefined."""
    observed = np.zeros((k, k))
    np.add.at(observed, (y, pred), 1)
    n = observed.sum()
    if n == 0:
        return math.nan
    i, j = np.indices((k, k))
    weights = (i - j) ** 2 / max(1, (k - 1) ** 2)
    expected = np.outer(observed.sum(1), observed.sum(0)) / n
    denom = (weights * expected).sum()
    return float(1 - (weights * observed).sum() / denom) if denom > 0 else math.nan


def _stats(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, grades: list[str], idx: np.ndarray
) -> dict[str, float]:
    """QWK, MAE, off-by-one and exact accuracy, and each cut-point's AUC / sensitivity / specificity, on rows `idx`."""
    yy, pp, pr = y[idx], pred[idx], probs[idx]
    err = np.abs(pp - yy)
    out = {
        "qwk": qwk(yy, pp, len(grades)),
        "mae": float(err.mean()) if len(idx) else math.nan,
        "off_by_one_accuracy": float((err <= 1).mean()) if len(idx) else math.nan,
        "accuracy": float((err == 0).mean()) if len(idx) else math.nan,
        "balanced_accuracy": _balanced_accuracy(yy, pp),
    }
    above = exceed_probs(pr)  # P(grade > k-1) = P(grade >= k), column k-1
    for k in range(1, len(grades)):
        pos = yy >= k
        out[f"roc_auc_ge_{grades[k]}"] = fast_auc(pos, above[:, k - 1])
        out[f"sensitivity_ge_{grades[k]}"], out[f"specificity_ge_{grades[k]}"] = sens_spec(pos, pp >= k)
    return out


def _balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """The mean over the grades present of the share predicted exactly."""
    recalls = [float((pred[y == g] == g).mean()) for g in np.unique(y)]
    return float(np.mean(recalls)) if recalls else math.nan


def grades_and_probs(df: pd.DataFrame, grades: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Grade indices of the `label` column and the prob_<grade> matrix (evaluate.labels_and_probs)."""
    return evaluate.labels_and_probs(df, grades)


def point_metrics(df: pd.DataFrame, grades: list[str]) -> dict[str, float]:
    """The summary numbers of a labelled predictions table (QWK, MAE, off-by-one, accuracy, cut-points)."""
    y, probs = grades_and_probs(df, grades)
    return _stats(y, probs, predicted_grade(probs), grades, np.arange(len(y)))


def cut_points(ci: dict[str, dict[str, float]], grades: list[str], y: np.ndarray) -> list[dict[str, Any]]:
    """One row per cut-point "grade >= k": positives, negatives and AUC / sensitivity / specificity with CIs."""
    rows = []
    for k in range(1, len(grades)):
        row: dict[str, Any] = {
            "cut": f">= {grades[k]}",
            "positives": int((y >= k).sum()),
            "negatives": int((y < k).sum()),
        }
        for name in ("roc_auc", "sensitivity", "specificity"):
            row[name] = ci[f"{name}_ge_{grades[k]}"]
        rows.append(row)
    return rows


def evaluate_frame(
    df: pd.DataFrame,
    grades: list[str],
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
    **_ignored: Any,
) -> dict[str, Any]:
    """Every ordinal number of one labelled set with CIs (a binary threshold does not apply and is ignored)."""
    y, probs = grades_and_probs(df, grades)
    pred = predicted_grade(probs) if len(y) else np.zeros(0, dtype=int)
    groups = groups_of(df)
    ci = bootstrap(lambda idx: _stats(y, probs, pred, grades, idx), len(y), groups, n_resamples, seed)
    cm = evaluate.confusion(y, pred, len(grades))
    return {
        "task": "ordinal",
        "n": int(len(y)),
        "classes": list(grades),
        "counts": dict(zip(grades, np.bincount(y, minlength=len(grades)).tolist())),
        "metrics": {k: v["value"] for k, v in ci.items()},
        "ci": ci,
        "cut_points": cut_points(ci, grades, y),
        "confusion": cm.tolist(),
        "confusion_normalized": evaluate.normalize_rows(cm).tolist(),
        "bootstrap": bootstrap_note(n_resamples, seed, groups),
        "warnings": grade_warnings(y, probs, grades, ci.get("qwk")) if len(y) else [],
    }


def grade_warnings(
    y: np.ndarray, probs: np.ndarray, grades: list[str], qwk_ci: dict[str, float] | None
) -> list[str]:
    """evaluate.model_warnings of the grades, and a sentence when the predicted grades agree with the given ones no
    better than chance: the 95 % CI of QWK reaches 0 (a grading model can be at chance with a ROC AUC of 0.55)."""
    out = [w for w in evaluate.model_warnings(y, probs, grades) if w != evaluate.ADVICE]
    if qwk_ci and math.isfinite(qwk_ci.get("lo", math.nan)) and qwk_ci["lo"] <= 0:
        out.append(
            f"The quadratic weighted kappa is {qwk_ci['value']:.2f} (95 % CI {qwk_ci['lo']:.2f} to "
            f"{qwk_ci['hi']:.2f}), which includes 0: the predicted grades agree with the given ones no better "
            "than chance."
        )
    return [*out, evaluate.ADVICE] if out else []


def frame_warnings(df: pd.DataFrame, grades: list[str], n_resamples: int = 200) -> list[str]:
    """grade_warnings of a labelled predictions table (training's validation / out-of-fold set), its QWK CI by a
    patient-level bootstrap of `n_resamples` (fewer than a full evaluation's: this only decides a warning)."""
    return list(evaluate_frame(df, grades, n_resamples=n_resamples)["warnings"])
