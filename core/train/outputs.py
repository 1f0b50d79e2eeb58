"""What a finished fit leaves in its run folder: the model's manifest and provenance, env.json and
metrics.json (written last: they mark the run finished)."""

from __future__ import annotations

import csv
import gc
from pathlib import Path
from typing import Any

import torch

from core.base.config import RunConfig, to_dict
from core.data.loaders import loader_stats
from core.evaluation import bytask, tta
from core.models.savedmodel import Manifest
from core.runs import rundir
from core.runs.progress import Progress
from core.train.callbacks import append_csv_row
from core.train.fit import FitOutcome
from core.train.prepare import env_info


def manifest_for(
    cfg: RunConfig,
    classes: list[str],
    metrics: dict[str, Any],
    stats: tuple[list[float], list[float]] | None,
    best_epoch: int,
    model_epoch: int,
    model_weights: str,
    task: dict[str, Any] | None = None,
) -> Manifest:
    """What a saved model needs to be rebuilt and used for prediction; `stats` = the normalisation it was trained with."""
    return Manifest(
        arch=cfg.train.arch,
        classes=list(classes),
        n_in=1 if cfg.data.channels == "grey" else 3,
        img_size=cfg.data.img_size,
        channels=cfg.data.channels,
        resize=cfg.data.resize,
        mean=list(stats[0]) if stats else None,
        std=list(stats[1]) if stats else None,
        window=cfg.data.window or None,
        frame=cfg.data.frame,
        train_config=to_dict(cfg.train),
        metrics=metrics,
        best_epoch=best_epoch,
        model_epoch=model_epoch,
        model_weights=model_weights,
        task=task or {},
        extra={tta.KEY: tta.allowed(cfg.data.aug)},  # the flips test-time augmentation may use
    )


def outcome_manifest(
    cfg: RunConfig,
    classes: list[str],
    metrics: dict[str, Any],
    out: FitOutcome,
    task: dict[str, Any] | None = None,
) -> Manifest:
    """The manifest of a fitted model: the normalisation its DataLoaders applied, the epoch its weights are from."""
    return manifest_for(
        cfg, classes, metrics, loader_stats(out.learn.dls), out.best_epoch, out.model_epoch, out.weights, task
    )


def model_provenance(out: FitOutcome, cfg: RunConfig, n_items: dict[str, int]) -> dict[str, Any]:
    """Which epoch the saved model is from, which set each metric is measured on, and which is the headline."""
    best = out.weights == "best"
    sets = {
        "valid": f"validation split ({n_items['valid']} items), seen after every epoch"
        + (
            f"; it chose the saved epoch by {cfg.train.monitor}, so its metrics are optimistic"
            if best
            else "; not used to choose the saved epoch"
        )
    }
    if n_items.get("test"):
        sets["test"] = (
            f"held-out test split ({n_items['test']} items), never seen in training or epoch choice"
        )
    return {
        "model_epoch": out.model_epoch,
        "model_weights": out.weights,
        "epochs_planned": cfg.train.planned_epochs(),
        "headline_set": "test" if n_items.get("test") else "valid",
        "valid_used_for_selection": best,
        "sets": sets,
    }


def _append_csv(dest: Path, src: Path) -> None:
    """Append the rows of one CSV to another, unchanged (the first one also gives the header)."""
    if not src.is_file():
        return
    with src.open(newline="") as f:
        for row in csv.DictReader(f):
            append_csv_row(dest, row)


def _free(out: FitOutcome) -> None:
    """Release a fold's learner and GPU memory before the next fold."""
    out.learn.dls = None
    del out.learn
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _finish(run_dir: Path, summary: dict[str, Any], progress: Progress, cfg: RunConfig | None = None) -> None:
    """Write env.json and, last (it marks the run finished), metrics.json with the browser's "did not learn"
    warnings (also in log.txt); mark progress done."""
    run = rundir.RunFolder(run_dir)
    summary["warnings"] = bytask.run_warnings(run_dir, summary["classes"], summary.get("task") or {})
    for line in summary["warnings"]:
        progress.log(f"warning: {line}")
    run.write(rundir.ENV, env_info(cfg))
    run.write(rundir.METRICS, summary)
    progress.update(force=True, phase="done", message="finished")
