"""A k-fold run's held-out test split, scored once its models are final (saved and, single-label, calibrated).

The run's test table (`test_predictions.csv`, the headline) comes from its final model when it trained one, else from
the fold ensemble (the mean of the fold models, core.evaluation.ensemble), the model the run offers in its place.
With a final model the ensemble's test metrics are kept beside it (metrics.json: metrics.test_ensemble), so the
report and the checklist can say which of the two did better on images neither saw. Multi-label and ordinal runs
write their task's table (patients pseudonymised; findings decided at the run's thresholds, grades by the grade
rule) and metrics, under the same names.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.base.config import RunConfig
from core.evaluation import bytask
from core.runs import rundir
from core.train import taskrun


def score_test(
    run: rundir.RunFolder,
    items: pd.DataFrame,
    classes: list[str],
    cfg: RunConfig,
    task: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict the test items with the final model and the fold ensemble; write the test table; metrics.json's
    additions ({} without a test split). `task`: a multi-label or ordinal run's task record (taskrun.task_record)."""
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor

    test = items[items["split"] == "test"]
    if not len(test) or len(list(run.fold_models())) < 2:
        return {}
    ensemble = predicted_test(EnsemblePredictor(run.path, task=task), test, classes, task)
    out: dict[str, Any] = {"test_ensemble": taskrun.set_metrics(ensemble, classes, cfg, task)}
    headline, source = ensemble, "fold ensemble"
    if run.has_final_model():
        headline, source = predicted_test(Predictor(run.model_dir), test, classes, task), "final model"
    headline.to_csv(run.predictions("test"), index=False)
    return {**out, "test": taskrun.set_metrics(headline, classes, cfg, task), "test_model": source}


def predicted_test(
    predictor: Any, test: pd.DataFrame, classes: list[str], task: dict[str, Any] | None
) -> pd.DataFrame:
    """A model's predictions table of the test items: a Predictor's (single-label), else the task's own table with
    the items' labels and pseudonymised patients, multi-label decided at the run's thresholds."""
    paths = test["path"].astype(str).tolist()
    df, _ = predictor.predict_paths(paths, labels=test["label"].astype(str).tolist())
    if task is None:
        return df
    rows = test.assign(path=paths).drop_duplicates("path").set_index("path").loc[df["path"]].reset_index()
    probs = df[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    return bytask.predictions_table(
        rows["path"], probs, classes, task["type"], task.get("thresholds"), **taskrun.table_extra(rows)
    )
