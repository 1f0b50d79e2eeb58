"""A training run: prepare, fit, evaluate, save the model and its manifest, write the run folder (k-fold runs
go to core.train.kfold).

Every run writes a run folder (its files are named in core/runs/rundir.py): config.json, items.csv, history.csv,
progress.json, model/ (weights + manifest), predictions, metrics.json and env.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.base.config import RunConfig
from core.runs import rundir
from core.runs.progress import Progress
from core.train import taskrun
from core.train.fit import fit_one, predict_items
from core.train.kfold import kfold_run
from core.train.outputs import _finish, model_provenance, outcome_manifest
from core.train.prepare import prepare


def train_run(cfg: RunConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """A single train/valid(/test) run; k-fold when cfg.data.split.k_folds >= 2."""
    from core.models import savedmodel

    if cfg.data.split.k_folds >= 2:
        return kfold_run(cfg, run_dir, progress)
    t0, run = time.time(), rundir.RunFolder(run_dir)
    items = prepare(cfg, run_dir, progress)
    classes = taskrun.run_classes(items, cfg)
    out = fit_one(items, cfg, run_dir, progress, classes=classes)
    task = taskrun.task_record(cfg, classes, out.valid)
    out.valid = taskrun.decided(out.valid, classes, task)
    out.valid.to_csv(run.predictions("valid"), index=False)
    metrics = {"valid": taskrun.set_metrics(out.valid, classes, cfg, task)}
    test = items[items["split"] == "test"]
    if len(test):
        progress.update(force=True, phase="testing")
        test_pred = taskrun.decided(predict_items(out.learn, test), classes, task)
        test_pred.to_csv(run.predictions("test"), index=False)
        metrics["test"] = taskrun.set_metrics(test_pred, classes, cfg, task)
    summary = {
        "type": "single",
        **({"task": task} if task else {}),
        "classes": classes,
        "metrics": metrics,
        "best_epoch": out.best_epoch,
        "monitor": cfg.train.monitor,
        "stopped_early": out.stopped_early,
        "epochs_run": len(out.rows),
        "train_seconds": round(time.time() - t0, 2),
        **model_provenance(out, cfg, {"valid": len(out.valid), "test": len(test)}),
    }
    savedmodel.save_model(out.learn.model, run.model_dir, outcome_manifest(cfg, classes, metrics, out, task))
    _finish(run_dir, summary, progress, cfg)
    return summary
