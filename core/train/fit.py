"""One training fit: fine_tune or fit_one_cycle with the monitors, the saved weights chosen, predictions."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastai.callback.data  # noqa: F401  (patches weighted_dataloaders onto DataBlock)
import fastai.callback.fp16  # noqa: F401  (patches to_fp16 / to_bf16 onto Learner)
import fastai.callback.schedule  # noqa: F401  (patches fine_tune, fit_one_cycle, lr_find onto Learner)
import pandas as pd

from core.base.config import RunConfig, TrainConfig
from core.data import imaging, prefetch
from core.data.loaders import build_dataloaders
from core.evaluation import evaluate
from core.runs import rundir
from core.runs.progress import JobCancelled, Progress
from core.train import resume_state
from core.train.callbacks import Monitors, monitors
from core.train.learner import make_learner

# ---------------------------------------------------------------- one fit


@dataclass
class FitOutcome:
    """What one training fit produced; the model holds the weights of epoch `model_epoch` ("last" or "best")."""

    learn: Any
    valid: pd.DataFrame
    rows: list[dict[str, Any]]  # history.csv's rows of this fit
    best_epoch: int = -1  # by the monitored value (-1: none, e.g. no validation items)
    stopped_early: bool = False
    model_epoch: int = -1
    weights: str = "last"


def keeps_best(t) -> bool:
    """Whether the saved model is the best checkpoint (by the monitor) rather than the last epoch.

    auto = best only with early stopping: the annealed last epoch needs no choice on the validation set (so its
    validation metrics stay honest), as in a plain fastai notebook; on held-out test sets it measured within
    noise of the best epoch (PneumoniaMNIST +0.009 ACC, chest -0.011, sample equal; bench/README.md).
    """
    return t.final_weights == "best" or (t.final_weights == "auto" and t.early_stop_patience > 0)


FINE_TUNE_LR, SCRATCH_LR = (
    2e-3,
    3e-3,
)  # the schedule's learning rate when none is chosen (TrainConfig.lr help)


def default_lr(t: TrainConfig) -> float:
    """The learning rate a run uses when none is chosen: 2e-3 fine-tuning, 3e-3 from scratch."""
    return FINE_TUNE_LR if t.fine_tunes() else SCRATCH_LR


def _train(learn, t: TrainConfig, mon: Monitors, progress: Progress, fold: int | None, n_folds: int) -> None:
    """Announce the fit in progress, then fine-tune (from weights) or fit one cycle (from scratch); stop if cancelled."""
    progress.update(
        force=True,
        phase="training",
        fold=fold,
        n_folds=n_folds,
        epoch=0,
        eta_s=None,
        elapsed_s=0.0,
        n_epochs=t.planned_epochs(),
    )
    if t.fine_tunes():
        learn.fine_tune(
            t.epochs, base_lr=t.lr or default_lr(t), freeze_epochs=t.freeze_epochs, cbs=mon.callbacks()
        )
    else:  # a random body gains nothing from a frozen phase: train everything, exactly t.epochs epochs
        learn.unfreeze()
        learn.fit_one_cycle(t.epochs, t.lr or default_lr(t), cbs=mon.callbacks())
    if mon.progress.cancelled:
        raise JobCancelled("cancelled by the user")


def keep_step_blocks(device: Any, cfg: RunConfig) -> None:
    """On a CPU, a training step's activation blocks are reused batch after batch, not mapped afresh
    (imaging.keep_heap_blocks: 48k page faults a step -> 0 at 128 px, batch 32)."""
    if device.type == "cpu":
        imaging.keep_heap_blocks(prefetch.BLOCK_BYTES_PER_PIXEL * cfg.data.batch_size * cfg.data.img_size**2)


def fit_one(
    items: pd.DataFrame,
    cfg: RunConfig,
    run_dir: Path,
    progress: Progress,
    valid_idx=None,
    fold: int | None = None,
    n_folds: int = 0,
    classes: list[str] | None = None,
    extra_cbs: Sequence[Any] = (),
    resume=None,
) -> FitOutcome:
    """Build DataLoaders + learner, fine-tune, restore the best epoch, predict the validation items.

    An explicit empty `valid_idx` trains on every non-test item (no validation, no checkpoint choice);
    `extra_cbs` join the fit (a sweep trial's pruning callback).
    A single run saves the state to resume from at each epoch's end; `resume` (a ResumeState) continues from one.
    """
    from fastai.torch_core import set_seed

    set_seed(cfg.train.seed, reproducible=True)
    t = cfg.train
    dls = build_dataloaders(
        items,
        cfg.data,
        valid_idx=valid_idx,
        classes=classes,
        oversample=t.imbalance == "oversample",
        require_valid=valid_idx is None or len(valid_idx) > 0,
        from_weights=t.fine_tunes(),
    )
    learn = make_learner(dls, cfg, train_labels=dls.train_ds.items["label"])
    keep_step_blocks(dls.device, cfg)
    run = rundir.RunFolder(run_dir)
    replay = resume.rows if resume else None
    mon = monitors(run, progress, t, fold=fold, n_folds=n_folds, extra=extra_cbs, replay=replay)
    if fold is None and valid_idx is None:  # a single run (not a fold, not k-fold's final fit) can be resumed
        mon.extra += resume_state.callbacks(run, mon.clock, t, resume)
    try:
        _train(learn, t, mon, progress, fold, n_folds)
    except BaseException:
        # a failed fit still leaves its best epoch on disk (to `finish` from); its own error wins
        with contextlib.suppress(Exception):
            mon.checkpoint.flush()
        raise
    best = mon.checkpoint.best_epoch
    weights, epoch = "last", len(mon.history.rows) - 1
    if keeps_best(t) and best >= 0:
        mon.checkpoint.restore(learn.model)
        weights, epoch = "best", best
    valid = predict_items(learn, dls.valid_ds.items) if len(dls.valid_ds) else pd.DataFrame()
    return FitOutcome(
        learn,
        valid,
        mon.history.rows,
        best_epoch=best,
        stopped_early=mon.early_stop.stopped,
        model_epoch=epoch,
        weights=weights,
    )


def predict_items(learn, frame: pd.DataFrame) -> pd.DataFrame:
    """Probabilities for the rows of `frame` from a learner (no augmentation)."""
    task = getattr(learn.loss_func, "task", "single")
    if task != "single":  # multi-label / ordinal losses name their task (core.train.losses)
        from core.train.taskrun import task_predictions

        return task_predictions(learn, frame, task)
    classes = list(learn.dls.vocab)
    dl = learn.dls.test_dl(frame, with_labels=True)
    probs, _ = learn.get_preds(dl=dl)
    probs = probs.float().numpy()
    lookup = {c: i for i, c in enumerate(classes)}
    y = frame["label"].astype(str).map(lookup)
    y = y.to_numpy() if y.notna().all() else None
    return evaluate.predictions_frame(frame["path"], y, probs, classes)
