"""The learning-rate finder as a run: fastai's lr_find with progress and cancel, and its suggestions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastai.callback.data  # noqa: F401  (patches weighted_dataloaders onto DataBlock)
import fastai.callback.fp16  # noqa: F401  (patches to_fp16 / to_bf16 onto Learner)
import fastai.callback.schedule  # noqa: F401  (patches fine_tune, fit_one_cycle, lr_find onto Learner)
import torch

from core.base.config import RunConfig
from core.data.loaders import build_dataloaders
from core.runs import rundir
from core.runs.progress import JobCancelled, Progress
from core.train.callbacks import LrFindProgress
from core.train.learner import make_learner
from core.train.prepare import prepare


def lr_find_run(cfg: RunConfig, run_dir: Path, progress: Progress, num_it: int = 100) -> dict[str, Any]:
    """The LR finder: loss against learning rate and the four fastai suggestions, as data."""
    from fastai.torch_core import set_seed

    items = prepare(cfg, run_dir, progress)
    set_seed(cfg.train.seed, reproducible=True)
    dls = build_dataloaders(items, cfg.data, from_weights=cfg.train.fine_tunes())
    learn = make_learner(dls, cfg, train_labels=dls.train_ds.items["label"])
    mon = LrFindProgress(progress, num_it)
    progress.update(force=True, phase="lr_find", batch=0, n_batches=num_it)
    learn.add_cb(mon)
    learn.lr_find(num_it=num_it, show_plot=False, suggest_funcs=None)
    if mon.cancelled:
        raise JobCancelled("cancelled by the user")
    lrs = [float(x) for x in learn.recorder.lrs]
    losses = [float(x) for x in learn.recorder.losses]
    result = {"lrs": lrs, "losses": losses, "suggestions": lr_suggestions(lrs, losses, num_it)}
    rundir.RunFolder(run_dir).write(rundir.LR_FIND, result)
    progress.update(force=True, phase="done", message="finished")
    return {"suggestions": result["suggestions"], "points": len(lrs)}


def lr_suggestions(lrs: list[float], losses: list[float], num_it: int) -> dict[str, float]:
    """fastai's four LR suggestions (minimum, steep, valley, slide); one the curve is too short for is left out."""
    from fastai.callback.schedule import minimum, slide, steep, valley

    lo, hi = num_it // 10, len(lrs) - 5
    x, y = torch.tensor(lrs[lo:hi]), torch.tensor(losses[lo:hi])
    nan = torch.nonzero(torch.isnan(y)).flatten()
    if len(nan):
        x, y = x[: int(nan[0])], y[: int(nan[0])]
    out = {}
    for fn in (minimum, steep, valley, slide):
        try:
            lr, _ = fn(x, y, num_it)
            out[fn.__name__] = float(lr)
        except (IndexError, ValueError, RuntimeError):
            continue
    return out
