"""The learning-rate finder as a run: fastai's lr_find with progress and cancel, and its suggestions."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import fastai.callback.data  # noqa: F401  (patches weighted_dataloaders onto DataBlock)
import fastai.callback.fp16  # noqa: F401  (patches to_fp16 / to_bf16 onto Learner)
import fastai.callback.schedule  # noqa: F401  (patches fine_tune, fit_one_cycle, lr_find onto Learner)
import numpy as np
import torch

from core.base.config import RunConfig
from core.data.loaders import build_dataloaders
from core.runs import rundir
from core.runs.progress import JobCancelled, Progress
from core.train.callbacks import LrFindProgress
from core.train.fit import default_lr
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
    with tempfile.TemporaryDirectory(
        dir=run_dir
    ) as scratch:  # fastai saves its start weights under learn.path
        learn.path = Path(scratch)  # (default: the working directory, i.e. the app's own folder)
        learn.lr_find(num_it=num_it, show_plot=False, suggest_funcs=None)
    if mon.cancelled:
        raise JobCancelled("cancelled by the user")
    lrs = [float(x) for x in learn.recorder.lrs]
    losses = [float(x) for x in learn.recorder.losses]
    suggestions = lr_suggestions(lrs, losses, num_it)
    verdict = curve_verdict(lrs, losses, suggestions.get("valley"), default_lr(cfg.train))
    result = {"lrs": lrs, "losses": losses, "suggestions": suggestions, "verdict": verdict}
    rundir.RunFolder(run_dir).write(rundir.LR_FIND, result)
    progress.update(force=True, phase="done", message="finished")
    return {"suggestions": suggestions, "points": len(lrs), "verdict": verdict}


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


# The rule that keeps a flat or noisy curve from sinking a run (measured basis: bench/README.md "LR finder curves").
FLAT_DROP = 0.10  # the smoothed loss falls less than this share below its start before rising: a flat curve
FALL_SHARE = 1 / 3  # a suggestion where the loss has not yet fallen this share of its drop lies on the start


def curve_verdict(
    lrs: list[float], losses: list[float], suggestion: float | None, default: float
) -> dict[str, Any]:
    """Whether the finder's curve can choose a learning rate: {"usable", "reason", "default_lr"}.

    The start is the median loss of the curve's first third. Flat (the loss never falls FLAT_DROP below it) or
    noisy (the suggestion sits where the loss has not fallen FALL_SHARE of its drop yet, i.e. on the curve's
    start): not usable, keep the schedule's default.
    """
    y = np.asarray(losses, dtype=float)
    x = np.asarray(lrs, dtype=float)[: len(y)]
    bad = np.flatnonzero(~np.isfinite(y))
    x, y = (x[: bad[0]], y[: bad[0]]) if len(bad) else (x, y)
    out: dict[str, Any] = {"usable": False, "reason": "", "default_lr": default}
    if len(y) < 5:
        out["reason"] = f"the curve has {len(y)} points, too few to read; run the finder with more steps"
        return out
    start = float(np.median(y[: max(3, len(y) // 3)]))  # robust: a random model's first losses jump about
    low = float(y.min())
    drop = (start - low) / abs(start) if start else 0.0
    if drop < FLAT_DROP:
        out["reason"] = (
            f"the curve is too flat: the loss falls only {max(drop, 0):.0%} below its start before it rises, "
            "so no learning rate stands out"
        )
        return out
    fallen = np.flatnonzero(y <= start - FALL_SHARE * (start - low))
    if suggestion is None or suggestion < x[fallen[0]]:
        out["reason"] = (
            "the curve is too noisy: its suggestion lies at the curve's start, before the loss begins to fall"
        )
        return out
    out["usable"] = True
    return out
