"""Finish a run that crashed (kill -9, full disk, power cut) from its best checkpoint: a usable model folder.

The checkpoint is the best epoch's weights (safetensors, written atomically while training). Finishing
turns it into `model/` (manifest + weights, labelled as taken from epoch N of an interrupted run),
predicts the validation (and test) items with it and writes `valid_predictions.csv`, `metrics.json` and
`env.json`, so evaluation, reports and prediction work as for a run that ended normally. Continuing the
training instead is core.train.resume (from the state of the last complete epoch).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.runs import jobs, rundir

if TYPE_CHECKING:
    import torch

    from core.base.config import RunConfig
    from core.models.savedmodel import Manifest

NOT_FINISHABLE = ("queued", "running", "done")
ENDED = {"failed": "failed", "interrupted": "was interrupted", "cancelled": "was cancelled"}


def run_status(run_dir: Path) -> tuple[str, str]:
    """(status, error) of a run: the job store's view after reaping dead workers, else job.json's."""
    store = jobs.JobStore()
    store.reap()
    job = store.get(run_dir.name)
    if job is not None and Path(job.run_dir).resolve() == run_dir.resolve():
        return job.status, job.error
    data = rundir.RunFolder(run_dir).read_job()
    return str(data.get("status", "unknown")), str(data.get("error", ""))


def why_not_finishable(run_dir: str | os.PathLike) -> str:
    """ "" when the run can be finished from its checkpoint, else the reason in user terms."""
    run = rundir.RunFolder(run_dir)
    if not run.config.is_file() or not run.items.is_file():
        return f"{run} is not a training run folder (no {run.config.name} / {run.items.name})"
    if run.folds_dir.is_dir():
        return f"k-fold runs are not finished from checkpoints; the folds that completed are in {run.folds_dir.name}/"
    if run.has_final_model():
        return f"the run already has a model ({run.model_dir})"
    task = ((run.read_config_dict().get("data") or {}).get("task") or {}).get("type", "single")
    if task != "single":  # a multi-label / ordinal checkpoint needs its task's head, thresholds and metrics
        return f"{task} runs are not finished from checkpoints yet: train again (the checkpoint stays in the folder)"
    if not run.best_checkpoint.is_file():
        return f"the run has no checkpoint ({run.best_checkpoint}): it stopped before its first epoch ended"
    status, _ = run_status(run.path)
    if status in NOT_FINISHABLE:
        return f"the run is {status}" + ("; wait until it ends or cancel it" if status != "done" else "")
    return ""


def finished_from_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The provenance a finished-from-checkpoint run carries in metrics.json ({} for any other run)."""
    return rundir.RunFolder(run_dir).read_metrics().get("finished_from_checkpoint") or {}


def best_epoch(run_dir: Path, monitor: str) -> tuple[int, int]:
    """(epoch of the best checkpoint, epochs recorded) from history.csv, by the rule training used (-1 unknown)."""
    from core.train.learner import LOWER_IS_BETTER

    try:
        hist = rundir.RunFolder(run_dir).read_history()
    except (OSError, ValueError):
        return -1, 0
    col = monitor if monitor in hist and hist[monitor].notna().any() else "valid_loss"
    if col not in hist or not hist[col].notna().any():
        return -1, len(hist)
    values = hist[col]
    best = values.idxmin() if col in LOWER_IS_BETTER or col != monitor else values.idxmax()
    return int(hist.loc[best, "epoch"]), len(hist)


def _checkpoint_epoch(run: rundir.RunFolder, by_history: int) -> int:
    """The epoch the checkpoint file holds: the one written in it (training writes the best epoch's weights
    every few epochs, so a killed run's file can be older than the best epoch in history.csv), else history's."""
    from core.models.checkpoints import checkpoint_epoch

    said = checkpoint_epoch(run.best_checkpoint)
    return by_history if said is None else said


def _predict(model_dir: Path, items: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, int]:
    """Predictions (training's table format) for labelled items, and how many files could not be read."""
    from core.evaluation import evaluate
    from core.evaluation.predict import Predictor

    pred = Predictor(model_dir)
    df, problems = pred.predict_paths(items["path"].tolist(), labels=items["label"].tolist())
    probs = df[[f"prob_{c}" for c in classes]].to_numpy()
    y = df["label"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return evaluate.predictions_frame(df["path"], y, probs, classes), len(problems)


def _run_items(run: rundir.RunFolder, cfg: RunConfig) -> tuple[pd.DataFrame, list[str]]:
    """The run's items table with full paths under its source root, and its classes (sorted labels; a multi-label
    or ordinal run's findings or grades in order, core.train.taskrun)."""
    from core.data.sources import source_root
    from core.train.taskrun import run_classes

    items = run.read_items()
    root = source_root(cfg.source)
    items["path"] = [os.path.normpath(os.path.join(root, r)) for r in items["relpath"]]
    return items, run_classes(items, cfg)


def _origin(run: rundir.RunFolder, cfg: RunConfig, epoch: int, recorded: int) -> dict[str, Any]:
    """Where the model comes from: the checkpoint's epoch, epochs recorded and planned, how the run ended."""
    status, error = run_status(run.path)
    planned = cfg.train.planned_epochs()
    return {
        "epoch": epoch,
        "epochs_recorded": recorded,
        "epochs_planned": planned,
        "run_status": status,
        "run_error": error,
        "checkpoint": run.relative(run.best_checkpoint),
        "note": f"model from epoch {epoch + 1 if epoch >= 0 else '?'} of {planned} of a run that "
        f"{ENDED.get(status, 'ended as ' + status)} (its best checkpoint); training did not complete",
    }


def _save_checkpoint_model(
    run: rundir.RunFolder, cfg: RunConfig, items: pd.DataFrame, classes: list[str], origin: dict[str, Any]
) -> tuple[torch.nn.Module, Manifest]:
    """The best checkpoint rebuilt as a model and saved as model/ (manifest says so); (model, manifest)."""
    from core.data import loaders
    from core.models import archs, checkpoints, savedmodel, weightfiles
    from core.train.outputs import manifest_for

    model = archs.create_model(cfg.train.arch, len(classes), 1 if cfg.data.channels == "grey" else 3)
    # readable, checksum unchanged, finite, the right shapes: checked before anything is written
    weightfiles.load_weights_into(model, checkpoints.read_checkpoint(run.best_checkpoint), strict=True)
    stats = loaders.input_stats(
        items[items["split"] == "train"], cfg.data, cfg.train.fine_tunes()
    )  # what the run's DataLoaders applied
    epoch = origin["epoch"]
    manifest = dataclasses.replace(
        manifest_for(cfg, classes, {}, stats, epoch, epoch, "best"),
        finished_from_checkpoint={k: v for k, v in origin.items() if k != "run_error"},
    )
    savedmodel.save_model(model, run.model_dir, manifest)
    return model, manifest


def _predict_sets(run: rundir.RunFolder, items: pd.DataFrame, classes: list[str]) -> tuple[dict, int]:
    """Predict the valid and test items with model/, write their tables; (metrics per set, unreadable files)."""
    from core.evaluation import evaluate

    metrics, unreadable = {}, 0
    for split in ("valid", "test"):
        part = items[items["split"] == split]
        if len(part):
            frame, bad = _predict(run.model_dir, part, classes)
            frame.to_csv(run.predictions(split), index=False)
            metrics[split], unreadable = evaluate.metrics_from_frame(frame, classes), unreadable + bad
    return metrics, unreadable


def finish_from_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Turn an interrupted run's best checkpoint into model/, predictions and metrics.json; return the summary."""
    from core.base.config import RunConfig, load_json
    from core.evaluation import evaluate
    from core.models import savedmodel
    from core.train.learner import TrainingError
    from core.train.prepare import env_info

    run = rundir.RunFolder(run_dir)
    reason = why_not_finishable(run)
    if reason:
        raise TrainingError(f"cannot finish {run.name}: {reason}")
    cfg = load_json(RunConfig, run.config)
    items, classes = _run_items(run, cfg)
    epoch, recorded = best_epoch(run.path, cfg.train.monitor)
    epoch = _checkpoint_epoch(run, epoch)
    origin = _origin(run, cfg, epoch, recorded)
    model, manifest = _save_checkpoint_model(run, cfg, items, classes, origin)
    metrics, unreadable = _predict_sets(run, items, classes)
    savedmodel.save_model(model, run.model_dir, dataclasses.replace(manifest, metrics=metrics))
    summary = {
        "type": "single",
        "classes": classes,
        "metrics": metrics,
        "best_epoch": epoch,
        "monitor": cfg.train.monitor,
        "stopped_early": False,
        "epochs_run": recorded,
        "finished_from_checkpoint": {**origin, "unreadable_items": unreadable},
        "warnings": evaluate.run_warnings(run.path, classes, "single"),
    }
    run.write(rundir.ENV, env_info())
    run.write(rundir.METRICS, summary)
    return summary
