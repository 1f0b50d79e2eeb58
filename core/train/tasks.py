"""The job entry points of training (named in core.runs.jobs.TASKS): train, one fold, LR finder."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.base.config import RunConfig, from_dict
from core.runs import rundir
from core.runs.progress import JobCancelled, Progress
from core.train import pruning
from core.train.kfold import train_fold, write_fold_job
from core.train.lr_find import lr_find_run
from core.train.prepare import apply_threads
from core.train.run import train_run
from core.train.taskrun import run_classes

# ---------------------------------------------------------------- job entry points


def run_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for training (and k-fold) runs: params = {"config": RunConfig as dict}.

    An experiment's trial also carries "not_after" (a time): started later, it is cancelled (budget spent);
    and "experiment" + "metric": it reports the metric each epoch to its pruner (core.train.pruning).
    "resume": true continues the run in run_dir from its resume state.
    """
    if params.get("not_after") and time.time() > float(params["not_after"]):
        raise JobCancelled("not started: the experiment's time budget ran out")
    cfg = from_dict(RunConfig, params["config"])
    apply_threads(cfg)
    if params.get("resume"):  # queued again by core.train.resume: continue from the last complete epoch
        from core.train.resume import resume_run

        return resume_run(cfg, Path(run_dir), progress)
    return train_run(cfg, Path(run_dir), progress, pruning.callbacks(params, run_dir))


def fold_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for one fold of a k-fold run: params = {"config", "parent_run", "fold"}."""
    cfg = from_dict(RunConfig, params["config"])
    apply_threads(cfg)
    parent, i = rundir.RunFolder(params["parent_run"]), int(params["fold"])
    items = parent.read_fold_items()
    classes = run_classes(items, cfg)
    result = train_fold(items, cfg, parent.path, i, progress, classes, work_dir=Path(run_dir))
    write_fold_job(rundir.RunFolder(run_dir), result, classes, cfg.data.task.type)
    progress.update(force=True, phase="done", message="finished")
    return {"fold": i}


def lr_find_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for the LR finder: params = {"config": ..., "num_it": 100}."""
    cfg = from_dict(RunConfig, params["config"])
    apply_threads(cfg)
    return lr_find_run(cfg, Path(run_dir), progress, num_it=int(params.get("num_it", 100)))
