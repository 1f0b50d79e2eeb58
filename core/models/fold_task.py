"""The task record of a k-fold run's fold models used as one model (the app's fold ensemble and its ONNX graph).

A multi-label fold model carries the thresholds chosen on its own fold's validation images; the fold ensemble is
decided at the run's, chosen on the pooled out-of-fold predictions (metrics.json's task record, the one the final
model carries too), so the ensemble, the final model and the run's tables agree on what "decided" means.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from core.models.savedmodel import Manifest
from core.runs.rundir import RunFolder


def run_task(run_dir: str | Path) -> dict[str, Any] | None:
    """The task record of a run's metrics.json; None when it has none (single-label, or not finished)."""
    record = RunFolder(run_dir).read_metrics().get("task")
    return dict(record) if isinstance(record, dict) else None


def ensemble_manifest(first: Manifest, run_dir: str | Path, record: dict[str, Any] | None = None) -> Manifest:
    """`first` (fold 1's manifest) with the run's multi-label thresholds in place of its fold's own; `record`: the
    run's task record (default: its metrics.json's). Unchanged for other tasks or when the run records none."""
    record = run_task(run_dir) if record is None else record
    if first.task_type != "multilabel" or not record or not record.get("thresholds"):
        return first
    keep: dict[str, Any] = {k: record[k] for k in ("thresholds", "thresholds_from") if k in record}
    return dataclasses.replace(first, task={**first.task, **keep})
