"""Evaluation by task type: the one dispatch on a run's task (single -> core.evaluation.evaluate, multilabel ->
core.evaluation.multilabel, ordinal -> core.evaluation.ordinal). The patient-level bootstrap both new tasks use is
core.evaluation.taskstats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.evaluation import evaluate


def task_of(summary: dict[str, Any]) -> str:
    """The task type a run's metrics.json or a manifest's task record names (absent: single-label)."""
    task = summary.get("task") or "single"
    return str(task.get("type", "single") if isinstance(task, dict) else task)


def predictions_table(
    paths, probs: np.ndarray, classes: list[str], task: str, thresholds: Any = None, **extra: Any
) -> pd.DataFrame:
    """A multi-label (decided at `thresholds`: per finding or one for all) or ordinal model's predictions table
    (`extra`: columns after the path, e.g. label and group)."""
    if task == "multilabel":
        from core.evaluation import multilabel

        return multilabel.predictions_frame(paths, probs, classes, thresholds, **extra)
    from core.evaluation import ordinal

    return ordinal.predictions_frame(paths, probs, classes, **extra)


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


def run_warnings(
    run_dir: str | Path, classes: list[str] | None = None, task: dict[str, Any] | None = None
) -> list[str]:
    """The "did not learn" sentences of a run's validation (k-fold: out-of-fold) predictions, by task type: for a
    multi-label run at its per-finding thresholds (core.evaluation.multilabel.frame_warnings), an ordinal run's with
    its QWK (core.evaluation.ordinal.frame_warnings), else core.evaluation.evaluate.run_warnings. `classes` /
    `task` (the task record) None: read from metrics.json."""
    if classes is None or task is None:
        summary = evaluate.run_summary(run_dir)
        classes = list(summary["classes"]) if classes is None else classes
        task = (summary.get("task") or {}) if task is None else task
    kind = task_of({"task": task})
    if kind == "single":
        return evaluate.run_warnings(run_dir, classes, kind)
    from core.evaluation import multilabel, ordinal

    sets = evaluate.load_run_predictions(run_dir)
    name = "oof" if "oof" in sets else "valid"
    if name not in sets:
        return []
    if kind == "ordinal":  # QWK at chance as well as one grade for everything
        return ordinal.frame_warnings(evaluate.labelled(sets[name]), classes)
    return multilabel.frame_warnings(evaluate.labelled(sets[name]), classes, task.get("thresholds"))


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
        "head": (summary.get("task") or {}).get("head", "corn") if task == "ordinal" else None,
        "classes": classes,
        "best_epoch": summary.get("best_epoch"),
        "monitor": summary.get("monitor"),
        "sets": {
            name: evaluate_frame(evaluate.labelled(df), classes, task, **kw) for name, df in sets.items()
        },
    }
