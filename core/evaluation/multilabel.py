"""Multi-label evaluation: per finding AUC / AP / sensitivity / specificity with patient-level bootstrap CIs, macro and
micro AUC, a threshold per finding (chosen on validation, carried to Predict), per-finding ROC / PR curves and 2x2
tables, and which findings the errors fall on together. Uncertain labels (core.data.labels.UNKNOWN) are left out
of every number of that finding.

A predictions table holds `label` (canonical findings), `pred` (the findings decided), `prob_<finding>` and
`pred_<finding>` (1/0) per finding, and `group` (pseudonymised patient) where known.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from core.data import labels as lab
from core.evaluation import evaluate
from core.evaluation.taskstats import bootstrap, bootstrap_note, fast_auc, groups_of, sens_spec
from core.models.heads import DEFAULT_FINDING_THRESHOLD, decide_findings


def predictions_frame(
    paths, probs: np.ndarray, findings: list[str], thresholds: dict[str, float] | float | None = None, **extra
) -> pd.DataFrame:
    """One row per image: path, the findings decided (canonical), and each finding's probability and decision."""
    probs = np.asarray(probs, dtype=float).reshape(-1, len(findings))
    df = pd.DataFrame({"path": list(paths)})
    for k, v in extra.items():
        df[k] = v
    df["pred"] = ""
    for i, f in enumerate(findings):
        df[f"prob_{f}"] = probs[:, i]
    return with_thresholds(df, findings, thresholds)


def with_thresholds(
    df: pd.DataFrame, findings: list[str], thresholds: dict[str, float] | float | None
) -> pd.DataFrame:
    """A predictions table with its decisions (pred, pred_<finding>) made again at these thresholds."""
    decided = decide_findings(
        df[[f"prob_{f}" for f in findings]].to_numpy(dtype=float), threshold_vector(findings, thresholds)
    )
    out = df.copy()
    out["pred"] = [lab.canonical([f for f, d in zip(findings, row) if d]) for row in decided]
    for i, f in enumerate(findings):
        out[f"pred_{f}"] = decided[:, i].astype(int)
    return out


def threshold_vector(findings: list[str], thresholds: dict[str, float] | float | None) -> np.ndarray:
    """Each finding's threshold: a per-finding mapping (missing ones 0.5), one number for all, or 0.5."""
    if thresholds is None or isinstance(thresholds, (int, float)):
        value = DEFAULT_FINDING_THRESHOLD if thresholds is None else float(thresholds)
        return np.full(len(findings), value)
    return np.array([float(thresholds.get(f, DEFAULT_FINDING_THRESHOLD)) for f in findings])


def targets_and_probs(df: pd.DataFrame, findings: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Items x findings targets (1 / 0 / -1 uncertain) and probabilities of a labelled predictions table."""
    missing = [f"prob_{f}" for f in findings if f"prob_{f}" not in df]
    if missing:
        raise ValueError(f"the predictions table has no column(s) {', '.join(missing)}")
    y = lab.target_matrix(df["label"].astype(str), findings)
    return y, df[[f"prob_{f}" for f in findings]].to_numpy(dtype=float)


def choose_thresholds(df: pd.DataFrame, findings: list[str]) -> dict[str, float]:
    """Each finding's threshold by Youden's J on a labelled set (0.5 where the set has one side only)."""
    y, p = targets_and_probs(df, findings)
    out = {}
    for i, f in enumerate(findings):
        known = y[:, i] >= 0
        try:
            out[f] = evaluate.youden_threshold((y[known, i] == 1).astype(int), p[known, i])
        except ValueError:
            out[f] = DEFAULT_FINDING_THRESHOLD
    return out


def _average_precision(pos: np.ndarray, score: np.ndarray) -> float:
    """Average precision (step-wise area under the PR curve, as scikit-learn's); NaN without positives."""
    n_pos = int(pos.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-score, kind="stable")
    hits = pos[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / n_pos)


def _stats(
    y: np.ndarray, p: np.ndarray, t: np.ndarray, findings: list[str], idx: np.ndarray
) -> dict[str, float]:
    """Per-finding AUC / AP / sensitivity / specificity, macro and micro AUC, on the rows `idx`."""
    yy, pp = y[idx], p[idx]
    out: dict[str, float] = {}
    aucs = []
    for i, f in enumerate(findings):
        known = yy[:, i] >= 0
        pos, score = yy[known, i] == 1, pp[known, i]
        out[f"roc_auc_{f}"] = fast_auc(pos, score)
        out[f"pr_auc_{f}"] = _average_precision(pos, score)
        out[f"sensitivity_{f}"], out[f"specificity_{f}"] = sens_spec(pos, score >= t[i])
        aucs.append(out[f"roc_auc_{f}"])
    finite = [a for a in aucs if np.isfinite(a)]
    out["macro_roc_auc"] = float(np.mean(finite)) if finite else math.nan
    balanced = [np.mean([out[f"sensitivity_{f}"], out[f"specificity_{f}"]]) for f in findings]
    balanced = [b for b in balanced if np.isfinite(b)]
    out["balanced_accuracy"] = float(np.mean(balanced)) if balanced else math.nan
    known = yy >= 0
    out["micro_roc_auc"] = fast_auc(yy[known] == 1, pp[known])
    decided = pp >= t[None, :]
    out["label_accuracy"] = float((decided == (yy == 1))[known].mean()) if known.any() else math.nan
    out["exact_match"] = float(((decided == (yy == 1)) | ~known).all(1).mean()) if len(idx) else math.nan
    return out


def point_metrics(df: pd.DataFrame, findings: list[str], thresholds=None) -> dict[str, float]:
    """The summary numbers of a labelled predictions table (macro / micro AUC, per finding, exact match)."""
    y, p = targets_and_probs(df, findings)
    return _stats(y, p, threshold_vector(findings, thresholds), findings, np.arange(len(y)))


def per_finding_table(y: np.ndarray, p: np.ndarray, t: np.ndarray, findings: list[str]) -> pd.DataFrame:
    """One row per finding: positives, negatives, uncertain, threshold and its 2x2 table (tp, fn, fp, tn)."""
    rows = []
    for i, f in enumerate(findings):
        known = y[:, i] >= 0
        pos, dec = y[known, i] == 1, p[known, i] >= t[i]
        rows.append(
            {
                "finding": f,
                "positives": int(pos.sum()),
                "negatives": int((~pos).sum()),
                "uncertain": int((~known).sum()),
                "threshold": float(t[i]),
                "tp": int((pos & dec).sum()),
                "fn": int((pos & ~dec).sum()),
                "fp": int((~pos & dec).sum()),
                "tn": int((~pos & ~dec).sum()),
            }
        )
    return pd.DataFrame(rows)


def error_co_occurrence(y: np.ndarray, p: np.ndarray, t: np.ndarray, findings: list[str]) -> pd.DataFrame:
    """Findings x findings: images wrong on both (the diagonal: images wrong on that finding); uncertain ones left out."""
    wrong = ((p >= t[None, :]) != (y == 1)) & (y >= 0)
    w = wrong.astype(int)
    return pd.DataFrame(w.T @ w, index=findings, columns=findings)


def curves(y: np.ndarray, p: np.ndarray, findings: list[str]) -> dict[str, dict[str, list]]:
    """Per finding ROC and PR curves as plain lists (findings with both sides known only)."""
    out = {}
    for i, f in enumerate(findings):
        known = y[:, i] >= 0
        pos = y[known, i] == 1
        if pos.all() or not pos.any():
            continue
        roc = evaluate._roc_table(pos, p[known, i])
        pr = evaluate._pr_table(pos, p[known, i])
        out[f] = {"roc": roc.to_dict("list"), "pr": pr.to_dict("list")}
    return out


def evaluate_frame(
    df: pd.DataFrame,
    findings: list[str],
    thresholds: dict[str, float] | None = None,
    threshold: float | None = None,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Every multi-label number of one labelled set with CIs; `threshold` (one for all) overrides `thresholds`."""
    y, p = targets_and_probs(df, findings)
    t = threshold_vector(findings, threshold if threshold is not None else thresholds)
    groups = groups_of(df)
    ci = bootstrap(lambda idx: _stats(y, p, t, findings, idx), len(y), groups, n_resamples, seed)
    table = per_finding_table(y, p, t, findings)
    for name in ("roc_auc", "pr_auc", "sensitivity", "specificity"):
        table[name] = [ci[f"{name}_{f}"]["value"] for f in findings]
    return {
        "task": "multilabel",
        "n": int(len(y)),
        "classes": list(findings),
        "thresholds": dict(zip(findings, map(float, t))),
        "metrics": {k: v["value"] for k, v in ci.items()},
        "ci": ci,
        "per_finding": table.to_dict("records"),
        "error_co_occurrence": error_co_occurrence(y, p, t, findings).to_dict("split"),
        "curves": curves(y, p, findings),
        "bootstrap": bootstrap_note(n_resamples, seed, groups),
        "warnings": model_warnings(y, p, t, findings, {f: ci[f"roc_auc_{f}"] for f in findings}),
    }


# ---------------------------------------------------------------- "did not learn" (single-label: evaluate.model_warnings)


def same_set_share(y: np.ndarray, decided: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The most often decided set of findings (a 0/1 row), the share of images given it, and the share whose known
    labels are exactly it."""
    rows, counts = np.unique(decided.astype(int), axis=0, return_counts=True)
    top = rows[counts.argmax()]
    truly = ((y == top[None, :]) | (y < 0)).all(1)
    return top, float(counts.max() / len(decided)), float(truly.mean())


def model_warnings(
    y: np.ndarray, p: np.ndarray, t: np.ndarray, findings: list[str], auc_ci: dict[str, dict[str, float]]
) -> list[str]:
    """Plain sentences when a multi-label model has not learned: (almost) every image gets the same findings at the
    thresholds, or no finding ranks its images better than chance (each ROC AUC's 95 % CI includes 0.5); the advice
    last. `auc_ci`: each finding's {"value", "lo", "hi"} (findings with one side only are left out)."""
    if not len(y):
        return []
    out = []
    top, share, true_share = same_set_share(y, p >= t[None, :])
    if share >= evaluate.ONE_CLASS_SHARE and share > true_share:
        named = ", ".join(f for f, d in zip(findings, top) if d) or "no finding"
        out.append(
            f"The model gives {share:.0%} of the {len(y)} images the same findings ({named}) at its thresholds, "
            f"while {true_share:.0%} of them have exactly those: it has not learned to tell the images apart."
        )
    judged = {f: c for f, c in auc_ci.items() if np.isfinite(c["lo"]) and np.isfinite(c["hi"])}
    if judged and all(c["lo"] <= 0.5 <= c["hi"] for c in judged.values()):
        out.append(
            f"No finding's ROC AUC is distinguishable from chance: the 95 % CI of each of the {len(judged)} "
            "findings with positives and negatives includes 0.5, so the model's scores order the images no better "
            "than guessing."
        )
    return [*out, evaluate.ADVICE] if out else []


def frame_warnings(
    df: pd.DataFrame, findings: list[str], thresholds: Any = None, n_resamples: int = 200, seed: int = 0
) -> list[str]:
    """model_warnings of a labelled predictions table (training's validation / out-of-fold set): per-finding AUC CIs
    by a patient-level bootstrap of `n_resamples` (fewer than a full evaluation's: this only decides a warning)."""
    y, p = targets_and_probs(df, findings)
    t = threshold_vector(findings, thresholds)

    def aucs(idx: np.ndarray) -> dict[str, float]:
        known = y[idx] >= 0
        return {
            f: fast_auc(y[idx][known[:, i], i] == 1, p[idx][known[:, i], i]) for i, f in enumerate(findings)
        }

    return model_warnings(y, p, t, findings, bootstrap(aucs, len(y), groups_of(df), n_resamples, seed))
