"""A training run: prepare, fit, evaluate, save the model and its manifest, write the run folder (k-fold runs
go to core.train.kfold).

Every run writes a run folder (its files are named in core/runs/rundir.py): config.json, items.csv, history.csv,
progress.json, model/ (weights + manifest), predictions, metrics.json and env.json."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from core.base.config import RunConfig
from core.runs import rundir
from core.runs.progress import Progress
from core.train import taskrun
from core.train.calibrate import calibrate_sets, stamp_models, summary_entry
from core.train.fit import FitOutcome, fit_one, predict_items
from core.train.kfold import kfold_run
from core.train.outputs import _finish, model_provenance, outcome_manifest
from core.train.prepare import prepare


def train_run(
    cfg: RunConfig, run_dir: Path, progress: Progress, extra_cbs: Sequence[Any] = ()
) -> dict[str, Any]:
    """A single train/valid(/test) run (`extra_cbs` join its fit); k-fold when cfg.data.split.k_folds >= 2."""
    if cfg.data.split.k_folds >= 2 or cfg.data.split.method == "loso":  # loso: one fold per site
        return kfold_run(cfg, run_dir, progress)
    t0, run = time.time(), rundir.RunFolder(run_dir)
    items = prepare(cfg, run_dir, progress)
    classes = taskrun.run_classes(items, cfg)
    out = fit_one(items, cfg, run_dir, progress, classes=classes, extra_cbs=extra_cbs)
    return complete_run(cfg, run, items, classes, out, t0, progress)


def complete_run(
    cfg: RunConfig,
    run: rundir.RunFolder,
    items: pd.DataFrame,
    classes: list[str],
    out: FitOutcome,
    t0: float,
    progress: Progress,
    resumed_after_epoch: int | None = None,
) -> dict[str, Any]:
    """After a single run's fit (a fresh one, or a resumed one): predictions (single-label: calibrated unless
    opted out; multi-label: decided at thresholds chosen on validation), metrics, model, env and metrics.json."""
    from core.models import savedmodel

    task = taskrun.task_record(cfg, classes, out.valid)
    frames = {"valid": taskrun.decided(out.valid, classes, task)}
    test = items[items["split"] == "test"]
    if len(test):
        progress.update(force=True, phase="testing")
        frames["test"] = taskrun.decided(predict_items(out.learn, test), classes, task)
    frames, temp = calibrate_sets(cfg, frames, "valid", classes, progress)
    for name, frame in frames.items():
        frame.to_csv(run.predictions(name), index=False)
    metrics = {name: taskrun.set_metrics(frame, classes, cfg, task) for name, frame in frames.items()}
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
        **({"resumed_after_epoch": resumed_after_epoch} if resumed_after_epoch is not None else {}),
        **model_provenance(out, cfg, {"valid": len(out.valid), "test": len(test)}),
        **summary_entry(temp),
    }
    savedmodel.save_model(out.learn.model, run.model_dir, outcome_manifest(cfg, classes, metrics, out, task))
    if task is None:  # single-label: the temperature and the conformal scores
        stamp_models(run, frames["valid"], classes, "valid", temp)
    _finish(run.path, summary, progress, cfg)
    run.resume_state.unlink(missing_ok=True)  # a finished run is not resumed: its ~3x model size goes
    return summary
