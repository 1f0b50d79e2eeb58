"""A k-fold run's held-out test split, scored once its models are final (saved and calibrated).

The run's test table (`test_predictions.csv`, the headline) comes from its final model when it trained one, else from
the fold ensemble (the mean of the fold models, core.evaluation.ensemble), the model the run offers in its place.
With a final model the ensemble's test metrics are kept beside it (metrics.json: metrics.test_ensemble), so the
report and the checklist can say which of the two did better on images neither saw. Single-label runs only.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from core.base.config import RunConfig
from core.runs import rundir
from core.train import taskrun


def score_test(
    run: rundir.RunFolder, items: pd.DataFrame, classes: list[str], cfg: RunConfig
) -> dict[str, Any]:
    """Predict the test items with the final model and the fold ensemble; write the test table; metrics.json's
    additions ({} without a test split, or for multi-label / ordinal runs)."""
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor

    test = items[items["split"] == "test"]
    if not len(test) or cfg.data.task.type != "single" or len(list(run.fold_models())) < 2:
        return {}
    paths, labels = test["path"].astype(str).tolist(), test["label"].astype(str).tolist()
    ensemble, _ = EnsemblePredictor(run.path).predict_paths(paths, labels=labels)
    out: dict[str, Any] = {"test_ensemble": taskrun.set_metrics(ensemble, classes, cfg)}
    headline, source = ensemble, "fold ensemble"
    if run.has_final_model():
        headline, _ = Predictor(run.model_dir).predict_paths(paths, labels=labels)
        source = "final model"
    headline.to_csv(run.predictions("test"), index=False)
    return {**out, "test": taskrun.set_metrics(headline, classes, cfg), "test_model": source}
