"""k-fold: `train_fold` trains one fold and `combine_folds` makes the summary, whether the folds run in
sequence inside the "train" job (one slot) or as "fold" child jobs side by side (several slots, see
`kfold_run`); a fold job's results wait in its folder (fold_jobs/fold<i>/) until the parent combines them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.base.config import RunConfig, from_dict, to_dict
from core.data.splits import kfold_splits
from core.evaluation import bytask, evaluate
from core.runs import rundir
from core.runs.jobs import WaitForChildren
from core.runs.progress import Progress
from core.train import loso, taskrun
from core.train.calibrate import calibrate_sets, stamp_models, summary_entry
from core.train.fit import fit_one
from core.train.kfold_test import score_test
from core.train.learner import TrainingError
from core.train.outputs import _append_csv, _finish, _free, outcome_manifest
from core.train.prepare import prepare


@dataclass
class FoldResult:
    """What training one fold left for the k-fold summary: its validation predictions and saved epoch."""

    fold: int
    valid: pd.DataFrame  # predictions_frame of the fold's validation items, with a fold column
    best_epoch: int
    model_epoch: int
    weights: str

    def row(self, classes: list[str], task: str = "single") -> dict[str, Any]:
        """The fold's line of metrics.json's per_fold: provenance + validation metrics (by task type)."""
        return {
            "fold": self.fold,
            "best_epoch": self.best_epoch,
            "model_epoch": self.model_epoch,
            "model_weights": self.weights,
            **bytask.metrics_from_frame(self.valid, classes, task),
        }


def kfold_run(cfg: RunConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """k models on k folds (patient-grouped when groups exist); out-of-fold predictions for every item.

    With more than one job slot (executors.max_jobs()) and a worker to record it, the folds become child
    jobs ("fold"): this job prepares items and folds, hands the folds over (jobs.WaitForChildren) and, run
    again once they are done, combines their results exactly as the folds trained here in sequence are.
    """
    from core.runs import executors

    t0, run = time.time(), rundir.RunFolder(run_dir)
    cfg = loso.resolved(cfg, run)  # leave one site out: k = the sites an earlier pass of this job planned
    k = cfg.data.split.k_folds
    if k >= 2 and progress.can_spawn and all(read_fold_job(run, i) for i in range(k)):
        return combine_fold_jobs(cfg, run, progress)
    items = prepare(cfg, run_dir, progress)
    classes = taskrun.run_classes(items, cfg)
    site = None
    if loso.is_loso(cfg):
        cfg, folds, site = loso.plan(cfg, items, run, progress)
        k = cfg.data.split.k_folds
    else:
        folds = kfold_splits(
            items, k, method=cfg.data.split.method, seed=cfg.data.split.seed, task=cfg.data.task.type
        )
    items = items.assign(fold=_save_folds(run_dir, items, folds))
    if site is not None:
        loso.record_sites(run, site)
    if progress.can_spawn and executors.max_jobs() > 1:
        raise spawn_folds(cfg, run, items, progress)
    results: list[FoldResult] = []
    for i in range(k):
        results.append(train_fold(items, cfg, run_dir, i, progress, classes))
        per_fold = [r.row(classes, cfg.data.task.type) for r in results]
        progress.update(force=True, folds_done=i + 1, per_fold=per_fold)
    return combine_folds(cfg, run_dir, progress, items, classes, results, t0)


def fold_valid_idx(items: pd.DataFrame, i: int) -> np.ndarray:
    """Positions of fold i's validation rows (items' fold column, as _save_folds set it)."""
    return np.flatnonzero(items["fold"].to_numpy() == i)


def train_fold(
    items: pd.DataFrame,
    cfg: RunConfig,
    run_dir: Path,
    i: int,
    progress: Progress,
    classes: list[str],
    work_dir: Path | None = None,
) -> FoldResult:
    """Train fold i and save its model in the run's folds/; history and checkpoint go to `work_dir` (the
    fold's own job folder when folds run as child jobs, else the run folder)."""
    from core.models import savedmodel

    k, valid_idx = cfg.data.split.k_folds, fold_valid_idx(items, i)
    progress.log(f"fold {i + 1}/{k}: {len(valid_idx)} validation items")
    out = fit_one(
        items, cfg, work_dir or run_dir, progress, valid_idx=valid_idx, fold=i, n_folds=k, classes=classes
    )
    out.valid["fold"] = i
    result = FoldResult(i, out.valid, out.best_epoch, out.model_epoch, out.weights)
    task = taskrun.task_record(cfg, classes, out.valid)
    metrics = {"valid": taskrun.set_metrics(out.valid, classes, cfg, task)}
    manifest = outcome_manifest(cfg, classes, metrics, out, task)
    savedmodel.save_model(out.learn.model, rundir.RunFolder(run_dir).fold_dir(i), manifest)
    _free(out)
    return result


def combine_folds(
    cfg: RunConfig,
    run_dir: Path,
    progress: Progress,
    items: pd.DataFrame,
    classes: list[str],
    results: list[FoldResult],
    t0: float,
) -> dict[str, Any]:
    """The k-fold summary from the folds' results: out-of-fold predictions, metrics, the optional final model."""
    run, k = rundir.RunFolder(run_dir), cfg.data.split.k_folds
    per_fold = [r.row(classes, cfg.data.task.type) for r in results]
    pooled = pd.concat([r.valid for r in results], ignore_index=True)
    task = taskrun.task_record(
        cfg, classes, pooled
    )  # multi-label: thresholds chosen on the pooled out-of-fold set
    scaled, temp = calibrate_sets(
        cfg, {"oof": taskrun.decided(pooled, classes, task)}, "oof", classes, progress
    )
    oof_df = loso.with_sites(run, scaled["oof"]) if loso.is_loso(cfg) else scaled["oof"]
    oof_df.to_csv(run.predictions("oof"), index=False)
    metric_names = [n for n in per_fold[0] if n not in ("fold", "best_epoch", "model_epoch", "model_weights")]
    metrics: dict[str, Any] = {
        "per_fold": per_fold,
        "mean_sd": evaluate.mean_sd([{n: f[n] for n in metric_names} for f in per_fold]),
        "pooled_oof": taskrun.set_metrics(oof_df, classes, cfg, task),
    }
    summary = {
        "type": "kfold",
        **({"task": task} if task else {}),
        "k": k,
        "classes": classes,
        "metrics": metrics,
        "train_seconds": round(time.time() - t0, 2),
        **summary_entry(temp),
    }
    if loso.is_loso(cfg):
        summary[loso.KEY] = loso.summary(run, oof_df, classes, cfg.data.split.site_col)
    if cfg.train.final_model_on_all:
        summary["final_model"] = final_model(
            items,
            cfg,
            run_dir,
            progress,
            classes,
            [f["model_epoch"] for f in per_fold],
            metrics["mean_sd"],
            task,
        )
    if task is None:  # single-label: fold models and the final model get the OOF's temperature and scores
        stamp_models(run, oof_df, classes, "oof", temp)
    progress.update(force=True, phase="testing")
    # the test split: final model (else ensemble) + ensemble
    scored = score_test(run, items, classes, cfg, task)
    summary.update({"test_model": scored.pop("test_model")} if scored else {})
    metrics.update(scored)
    _finish(run_dir, summary, progress, cfg)
    return summary


def final_model(
    items: pd.DataFrame,
    cfg: RunConfig,
    run_dir: Path,
    progress: Progress,
    classes: list[str],
    best_epochs: list[int],
    cv_metrics: dict[str, Any],
    task: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """After k-fold: one model on all non-test items, trained for the folds' median saved-epoch count."""
    from core.models import savedmodel

    total = int(np.median(best_epochs)) + 1
    final = from_dict(RunConfig, to_dict(cfg))
    final.train.freeze_epochs = min(cfg.train.freeze_epochs, total - 1) if cfg.train.pretrained else 0
    final.train.epochs = max(1, total - final.train.freeze_epochs)
    final.train.early_stop_patience = 0
    progress.log(f"final model on all training data for {total} epoch(s)")
    out = fit_one(items, final, run_dir, progress, valid_idx=[], fold=None, classes=classes)
    run = rundir.RunFolder(run_dir)
    savedmodel.save_model(
        out.learn.model,
        run.model_dir,
        outcome_manifest(final, classes, {"kfold_mean_sd": cv_metrics}, out, task),
    )
    _free(out)
    return {"epochs": total, "model": run.relative(run.model_manifest)}


def _save_folds(run_dir: Path, items: pd.DataFrame, folds) -> np.ndarray:
    """Record which fold validates each item (items.csv gains a fold column); returns that column."""
    fold_of = np.full(len(items), -1)
    for i, (_, v) in enumerate(folds):
        fold_of[v] = i
    run = rundir.RunFolder(run_dir)
    snap = run.read_items()
    snap["fold"] = fold_of
    snap.to_csv(run.items, index=False)
    return fold_of


# ---------------------------------------------------------------- folds as child jobs


def spawn_folds(
    cfg: RunConfig, run: rundir.RunFolder, items: pd.DataFrame, progress: Progress
) -> WaitForChildren:
    """Hand the folds to child jobs: the items they train on written once, one "fold" job per fold."""
    k = cfg.data.split.k_folds
    items[["path", "label", "split", "fold"]].to_csv(run.fold_items, index=False)
    progress.update(force=True, phase="folds", message=f"{k} folds as separate jobs", n_folds=k, folds_done=0)
    progress.log(f"{k} folds handed to separate jobs (more than one job slot)")
    return WaitForChildren(
        [
            {
                "kind": "fold",
                "params": {"config": to_dict(cfg), "parent_run": str(run.path), "fold": i},
                "run_dir": str(run.fold_job_dir(i)),
                "label": f"fold {i + 1}/{k}",
            }
            for i in range(k)
        ]
    )


def write_fold_job(
    folder: rundir.RunFolder, result: FoldResult, classes: list[str], task: str = "single"
) -> None:
    """A fold job's results in its own folder: validation predictions, then metrics.json (written last)."""
    result.valid.to_csv(folder.predictions("valid"), index=False)
    row = result.row(classes, task)
    folder.write(rundir.METRICS, {"type": "fold", "classes": classes, **row})


def read_fold_job(run: rundir.RunFolder, i: int) -> FoldResult | None:
    """Fold i's result from its child job's folder; None until that job finished."""
    folder = rundir.RunFolder(run.fold_job_dir(i))
    summary = folder.read_metrics()
    if summary.get("type") != "fold" or not folder.predictions("valid").is_file():
        return None
    text = {"path": str, "label": str, "pred": str}
    valid = pd.read_csv(folder.predictions("valid"), dtype=text, keep_default_na=False)
    return FoldResult(i, valid, summary["best_epoch"], summary["model_epoch"], summary["model_weights"])


def combine_fold_jobs(cfg: RunConfig, run: rundir.RunFolder, progress: Progress) -> dict[str, Any]:
    """The parent's second run: the fold jobs' histories merged in fold order, then combine_folds."""
    k = cfg.data.split.k_folds
    progress.update(force=True, phase="combining", message="combining the folds", n_folds=k, folds_done=k)
    items = run.read_fold_items()
    classes = taskrun.run_classes(items, cfg)
    results = [r for r in (read_fold_job(run, i) for i in range(k)) if r is not None]
    if len(results) < k:
        raise TrainingError(f"{k - len(results)} fold job(s) left no results in {rundir.FOLD_JOBS_DIR}/")
    run.history.unlink(missing_ok=True)  # this step may run again (e.g. after a crash of its worker)
    for i in range(k):
        _append_csv(run.history, rundir.RunFolder(run.fold_job_dir(i)).history)
    t0 = float(run.read_job().get("started") or time.time())
    return combine_folds(cfg, run.path, progress, items, classes, results, t0)
