"""What a multi-label or ordinal run adds to the single-label path: its classes (findings, grades in order), its
prediction tables, its metrics and the task record that metrics.json and the saved model's manifest carry.

A single-label run has no task record, so its metrics.json and manifest stay exactly as before; a reader takes a
missing record as single-label (core.evaluation.bytask.task_of).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.base.config import RunConfig
from core.base.privacy import pseudonym
from core.data import labels
from core.evaluation import bytask, multilabel


def run_classes(items: pd.DataFrame, cfg: RunConfig) -> list[str]:
    """The classes of a run: sorted labels (single), its findings (multilabel), its grades in order (ordinal)."""
    task = cfg.data.task
    return labels.task_classes(items["label"].astype(str), task.type, task.order)


def task_predictions(learn, frame: pd.DataFrame, task: str) -> pd.DataFrame:
    """The predictions table of a multi-label or ordinal learner on the rows of `frame` (patients pseudonymised)."""
    classes = list(learn.dls.vocab)
    dl = learn.dls.test_dl(frame, with_labels=True)
    probs, _ = learn.get_preds(dl=dl)
    return bytask.predictions_table(frame["path"], probs.float().numpy(), classes, task, **table_extra(frame))


def table_extra(frame: pd.DataFrame) -> dict[str, Any]:
    """The columns a task predictions table takes from its items: the label and, with patients, their pseudonyms."""
    extra: dict[str, Any] = {"label": frame["label"].astype(str).to_numpy()}
    if "group" in frame:
        extra["group"] = [pseudonym(g) if g else "" for g in frame["group"].fillna("").astype(str)]
    return extra


def set_metrics(
    frame: pd.DataFrame, classes: list[str], cfg: RunConfig, task: dict[str, Any] | None = None
) -> dict[str, float]:
    """metrics.json's numbers of one predictions table, by the run's task (multi-label: at its thresholds)."""
    return bytask.metrics_from_frame(frame, classes, cfg.data.task.type, (task or {}).get("thresholds"))


def decided(frame: pd.DataFrame, classes: list[str], task: dict[str, Any] | None) -> pd.DataFrame:
    """A multi-label predictions table decided at the run's per-finding thresholds; other tables unchanged."""
    if not task or task.get("type") != "multilabel" or not len(frame):
        return frame
    return multilabel.with_thresholds(frame, classes, task.get("thresholds"))


def task_record(cfg: RunConfig, classes: list[str], valid: pd.DataFrame | None) -> dict[str, Any] | None:
    """metrics.json's and the manifest's "task": the type, and per finding thresholds (Youden on validation) or the
    grade order and head; None for a single-label run (its files stay as they were)."""
    task = cfg.data.task.type
    if task == "single":
        return None
    if task == "ordinal":
        return {"type": task, "order": list(classes), "head": cfg.data.task.ordinal_head}
    chosen = valid is not None and len(valid) > 0
    thresholds = multilabel.choose_thresholds(valid, classes) if chosen else {}
    return {
        "type": task,
        "findings": list(classes),
        "thresholds": thresholds,
        "thresholds_from": "validation set, Youden's J per finding" if chosen else "0.5 (no validation set)",
    }
