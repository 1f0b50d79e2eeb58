"""Evaluation by task type: the one dispatch on a run's task (single -> core.evaluation.evaluate, multilabel ->
core.evaluation.multilabel, ordinal -> core.evaluation.ordinal) and the patient-level bootstrap both new tasks use.

The bootstrap resamples patients (the `group` column of a predictions table, pseudonymised) with replacement when the
table has groups, else items; percentile intervals with the resamples, seed and level of core.evaluation.evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.data.splits import patient_groups
from core.evaluation import evaluate

Stat = Callable[[np.ndarray], dict[str, float]]  # row positions -> named statistics


def task_of(summary: dict[str, Any]) -> str:
    """The task type a run's metrics.json or a manifest's task record names (absent: single-label)."""
    task = summary.get("task") or "single"
    return str(task.get("type", "single") if isinstance(task, dict) else task)


def groups_of(df: pd.DataFrame) -> np.ndarray | None:
    """The patient of each row of a predictions table when it has them (core.data.splits.patient_groups)."""
    return patient_groups(df)


def resamples(n: int, groups: np.ndarray | None, n_resamples: int, seed: int) -> list[np.ndarray]:
    """Row positions of each bootstrap resample: whole patients drawn with replacement (items when no groups)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return list(rng.integers(0, n, size=(n_resamples, n)))
    codes, uniq = pd.factorize(pd.Series(groups))
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    members = [order[starts[g] : starts[g + 1]] for g in range(len(uniq))]
    return [
        np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for _ in range(n_resamples)
    ]


def bootstrap(
    stat: Stat,
    n: int,
    groups: np.ndarray | None = None,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
    level: float = evaluate.CI_LEVEL,
) -> dict[str, dict[str, float]]:
    """{name: {"value", "lo", "hi"}}: `stat` on every row, and its percentile interval over the resamples."""
    point = stat(np.arange(n))
    if not n or n_resamples < 1:
        return {k: {"value": v, "lo": math.nan, "hi": math.nan} for k, v in point.items()}
    draws: dict[str, list[float]] = {k: [] for k in point}
    for idx in resamples(n, groups, n_resamples, seed):
        for k, v in stat(idx).items():
            if k in draws:
                draws[k].append(v)
    alpha = (1 - level) / 2
    out = {}
    for k, v in point.items():
        d = np.asarray(draws[k], dtype=float)
        d = d[np.isfinite(d)]
        lo, hi = np.quantile(d, [alpha, 1 - alpha]) if len(d) else (math.nan, math.nan)
        out[k] = {"value": float(v), "lo": float(lo), "hi": float(hi)}
    return out


def bootstrap_note(n_resamples: int, seed: int, groups: np.ndarray | None) -> dict[str, Any]:
    """How the intervals were made (resamples, seed, level, and whether patients or items were resampled)."""
    unit = "patients" if groups is not None else "items"
    return {
        "n_resamples": n_resamples,
        "seed": seed,
        "level": evaluate.CI_LEVEL,
        "method": f"percentile, {unit} resampled with replacement",
    }


def fast_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC (Mann-Whitney with tied ranks); NaN when one side is empty."""
    from scipy.stats import rankdata

    pos = np.asarray(pos, dtype=bool)
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def sens_spec(pos: np.ndarray, decided: np.ndarray) -> tuple[float, float]:
    """Sensitivity and specificity of binary decisions (NaN where a side is empty)."""
    pos, decided = np.asarray(pos, dtype=bool), np.asarray(decided, dtype=bool)
    sens = float(decided[pos].mean()) if pos.any() else math.nan
    spec = float((~decided[~pos]).mean()) if (~pos).any() else math.nan
    return sens, spec


# ---------------------------------------------------------------- the dispatch


def predictions_table(
    paths, probs: np.ndarray, classes: list[str], task: str, thresholds: Any = None
) -> pd.DataFrame:
    """A multi-label (decided at `thresholds`: per finding or one for all) or ordinal model's predictions table."""
    if task == "multilabel":
        from core.evaluation import multilabel

        return multilabel.predictions_frame(paths, probs, classes, thresholds)
    from core.evaluation import ordinal

    return ordinal.predictions_frame(paths, probs, classes)


def metrics_from_frame(
    df: pd.DataFrame, classes: list[str], task: str = "single", thresholds: Any = None
) -> dict[str, float]:
    """The summary metrics of a labelled predictions table (metrics.json's per-set numbers), by task type;
    `thresholds`: a multi-label model's per-finding thresholds (default 0.5)."""
    if task == "multilabel":
        from core.evaluation import multilabel

        return multilabel.point_metrics(df, classes, thresholds)
    if task == "ordinal":
        from core.evaluation import ordinal

        return ordinal.point_metrics(df, classes)
    return evaluate.metrics_from_frame(df, classes)


def evaluate_frame(df: pd.DataFrame, classes: list[str], task: str = "single", **kw: Any) -> dict[str, Any]:
    """Every metric of one labelled predictions table with CIs, by task type (kw: threshold(s), n_resamples, seed)."""
    if task == "multilabel":
        from core.evaluation import multilabel

        return multilabel.evaluate_frame(df, classes, **kw)
    if task == "ordinal":
        from core.evaluation import ordinal

        return ordinal.evaluate_frame(df, classes, **kw)
    kw.pop("thresholds", None)  # per-finding thresholds are multi-label only
    return evaluate.evaluate_frame(df, classes, **kw)


# the single-label metric names (sweep rankings, monitors) as each task reports them
ALIASES = {"multilabel": {"roc_auc": "macro_roc_auc", "accuracy": "label_accuracy"}, "ordinal": {}}


def metric_ci(
    df: pd.DataFrame,
    classes: list[str],
    task: str,
    metric: str,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
) -> dict[str, float] | None:
    """One metric with its CI from a predictions table of a multi-label or ordinal run (None when it has none)."""
    ev = evaluate_frame(evaluate.labelled(df), classes, task, n_resamples=n_resamples)
    return ev["ci"].get(ALIASES.get(task, {}).get(metric, metric))


def evaluate_run(run_dir: str | Path, **kw: Any) -> dict[str, Any]:
    """evaluate.evaluate_run for a single-label run; a multi-label or ordinal run's sets evaluated by its task."""
    summary = evaluate.run_summary(run_dir)
    task = task_of(summary)
    if task == "single":
        return evaluate.evaluate_run(run_dir, **kw)
    classes = list(summary["classes"])
    sets = evaluate.load_run_predictions(run_dir)
    external = kw.pop("external", None)
    if external is not None:
        sets["external"] = external
    kw.pop("prevalence", None)
    if (
        task == "multilabel"
    ):  # each finding at the threshold chosen on validation, unless one is given for all
        kw["thresholds"] = (summary.get("task") or {}).get("thresholds")
    else:
        kw.pop("threshold", None)
    return {
        "run_dir": str(run_dir),
        "type": summary.get("type", "single"),
        "task": task,
        "classes": classes,
        "best_epoch": summary.get("best_epoch"),
        "monitor": summary.get("monitor"),
        "sets": {
            name: evaluate_frame(evaluate.labelled(df), classes, task, **kw) for name, df in sets.items()
        },
    }
