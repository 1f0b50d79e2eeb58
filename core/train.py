"""Training: vision_learner, lr_find, fine_tune with progress/cancel/early stop/best checkpoint, k-fold CV.

Every run writes a run folder (its files are named in core/runs.py): config.json, items.csv, history.csv,
progress.json, model/ (weights + manifest), predictions, metrics.json and env.json. Training talks to
fastai through small callbacks: EpochClock, TrainProgress (progress + cancel), HistoryCSV, BestCheckpoint,
EarlyStop; the LR finder shares the cancel part (LrFindProgress).

k-fold: `train_fold` trains one fold and `combine_folds` makes the summary, whether the folds run in
sequence inside the "train" job (one slot) or as "fold" child jobs side by side (several slots, see
`kfold_run`); a fold job's results wait in its folder (fold_jobs/fold<i>/) until the parent combines them.
"""

from __future__ import annotations

import csv
import gc
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fastai.callback.data  # noqa: F401  (patches weighted_dataloaders onto DataBlock)
import fastai.callback.fp16  # noqa: F401  (patches to_fp16 / to_bf16 onto Learner)
import fastai.callback.schedule  # noqa: F401  (patches fine_tune, fit_one_cycle, lr_find onto Learner)
import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback, CancelFitException

from core import evaluate, paths, runs
from core.config import RunConfig, from_dict, save_json, to_dict
from core.data import (
    assign_splits,
    build_dataloaders,
    group_leaks,
    kfold_splits,
    loader_stats,
    split_summary,
    train_subset,
)
from core.eta import eta
from core.fsutil import atomic_write_text, atomic_writer
from core.jobs import JobCancelled, Progress, WaitForChildren
from core.privacy import pseudonym

LOWER_IS_BETTER = {"valid_loss"}


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why in user terms."""


# ---------------------------------------------------------------- learner


def auc_metric():
    """fastai metric: ROC AUC from softmax probabilities (binary, or macro one-vs-rest)."""
    from fastai.metrics import AccumMetric, ActivationType

    return AccumMetric(
        _auc_fn,
        dim_argmax=-1,
        activation=ActivationType.Softmax,
        to_np=True,
        invert_arg=True,
        flatten=False,
        name="roc_auc",
    )  # dim_argmax: the softmax axis (None warns)


def _auc_fn(targ: np.ndarray, probs: np.ndarray) -> float:
    """AUC for AccumMetric (targets first)."""
    return evaluate.roc_auc(targ, probs)


def balanced_accuracy_metric():
    """fastai metric: balanced accuracy (mean per-class recall)."""
    from fastai.metrics import AccumMetric
    from sklearn.metrics import balanced_accuracy_score

    return AccumMetric(
        balanced_accuracy_score, dim_argmax=-1, to_np=True, invert_arg=True, name="balanced_accuracy"
    )


class _ClassRecall:
    """Recall of one class (picklable, unlike a closure)."""

    def __init__(self, index: int):
        self.index, self.__name__ = index, f"recall_{index}"

    def __call__(self, targ: np.ndarray, pred: np.ndarray) -> float:
        """Share of this class's items predicted as this class."""
        mask = targ == self.index
        return float((pred[mask] == self.index).mean()) if mask.any() else math.nan


def recall_metrics(classes: list[str]) -> list:
    """One fastai metric per class: recall (sensitivity) of that class."""
    from fastai.metrics import AccumMetric

    return [
        AccumMetric(_ClassRecall(i), dim_argmax=-1, to_np=True, invert_arg=True, name=f"recall_{c}")
        for i, c in enumerate(classes)
    ]


def class_weights(labels: pd.Series, classes: list[str]) -> torch.Tensor:
    """Inverse-frequency loss weights, normalised to mean 1."""
    counts = labels.astype(str).value_counts()
    w = np.array([len(labels) / (len(classes) * max(1, counts.get(c, 0))) for c in classes], dtype=np.float32)
    return torch.tensor(w / w.mean())


def use_gpu_tricks(setting: str) -> bool:
    """Resolve the auto/on/off mixed-precision setting for this machine (auto = on a CUDA GPU only)."""
    return setting == "on" or (setting == "auto" and torch.cuda.is_available())


def use_channels_last(setting: str) -> bool:
    """Resolve the auto/on/off channels_last setting for training: auto = on a CUDA GPU only.

    On this project's CPU, training in channels_last cost test accuracy and bought no time: chest_xray_224 at
    128 px, 5 seeds, test ACC 0.937 +/- 0.016 with it against 0.947 +/- 0.005 without, at the same seconds per
    run (bench/README.md); at 64 px it only shifted the results. Prediction keeps its own choice (predict.py):
    its outputs are the same in either layout.
    """
    if setting != "auto":
        return setting == "on"
    return torch.cuda.is_available()


def make_learner(dls, cfg: RunConfig, train_labels: pd.Series | None = None):
    """vision_learner with the app's metrics, loss weighting and GPU settings."""
    from fastai.callback.progress import ProgressCallback
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.vision.learner import vision_learner

    from core import pretrained

    t = cfg.train
    classes = list(dls.vocab)
    n_in = 1 if cfg.data.channels == "grey" else 3
    loss = None
    if t.imbalance == "weighted_loss" and train_labels is not None:
        loss = CrossEntropyLossFlat(weight=class_weights(train_labels, classes).to(dls.device))
    learn = vision_learner(
        dls,
        **pretrained.learner_args(t.arch, t.pretrained, t.weights_path),
        n_in=n_in,
        normalize=False,
        loss_func=loss,
        wd=t.weight_decay,
        metrics=[accuracy, balanced_accuracy_metric(), auc_metric(), *recall_metrics(classes)],
    )
    learn.remove_cb(ProgressCallback)  # progress goes to progress.json (TrainProgress) instead
    learn.logger = _no_log  # fastai prints every epoch's row to stdout; HistoryCSV keeps history.csv
    if torch.cuda.is_available() and use_gpu_tricks(t.mixed_precision):
        learn.to_bf16() if torch.cuda.is_bf16_supported() else learn.to_fp16()
    if use_channels_last(t.channels_last):
        learn.model.to(memory_format=torch.channels_last)
    return learn


def _no_log(*_args, **_kwargs) -> None:
    """A fastai logger that drops the per-epoch rows."""


# ---------------------------------------------------------------- callbacks (each one job, as fastai's own)


class EpochClock(Callback):
    """Numbers epochs continuously across fine_tune's two fits (frozen body, then all) and says which fit runs."""

    order = 55  # before the callbacks below read it

    def __init__(self):
        self.offset, self.fits, self.cut_short = 0, 0, False

    def before_fit(self):
        """Count fits (fine_tune: frozen, then unfrozen)."""
        self.fits += 1
        self.cut_short = False

    def after_cancel_fit(self):
        """The fit ended before its last epoch (cancel or early stop)."""
        self.cut_short = True

    def after_fit(self):
        """Carry the epoch numbering into the next fit."""
        self.offset += self.epoch + 1 if self.cut_short else self.n_epoch

    def now(self) -> int:
        """This epoch's number, counted over every fit of the run (0-based)."""
        return self.offset + self.epoch

    def frozen(self) -> bool:
        """True during fine_tune's first (frozen body) fit."""
        return self.fits == 1 and self.learn.opt is not None and self.learn.opt.frozen_idx > 0


class CancelOnStop(Callback):
    """Stops within a batch once cancel was asked (STOP file or job store)."""

    order = 60  # after Recorder, so the batch's smoothed loss is there for subclasses to report

    def __init__(self, progress: Progress):
        self.progress, self.cancelled, self.t0 = progress, False, time.time()

    def after_batch(self):
        """Raise CancelFitException when cancel was asked."""
        if self.progress.cancelled():
            self.cancelled = True
            raise CancelFitException()


class TrainProgress(CancelOnStop):
    """progress.json while training: batch, epoch, loss, elapsed and ETA; written at once at each epoch's end."""

    order = (
        63  # its epoch-end write comes after the history row and the checkpoint news, before early stopping
    )

    def __init__(
        self, progress: Progress, clock: EpochClock, n_epochs: int, fold: int | None = None, n_folds: int = 0
    ):
        super().__init__(progress)
        self.clock, self.n_epochs, self.fold, self.n_folds = clock, n_epochs, fold, n_folds

    def after_batch(self):
        """Report the batch (training batches only)."""
        super().after_batch()
        if not self.training:
            return
        elapsed = time.time() - self.t0
        done = self.clock.now() + self.iter / max(1, self.n_iter)
        self.progress.update(
            phase="training",
            fold=self.fold,
            n_folds=self.n_folds,
            epoch=self.clock.now(),
            n_epochs=self.n_epochs,
            batch=self.iter + 1,
            n_batches=self.n_iter,
            train_loss=float(self.smooth_loss),
            eta_s=eta(elapsed, done, self.n_epochs),
            elapsed_s=elapsed,
        )

    def after_epoch(self):
        """Write the epoch's fields (its row, the best epoch so far) now."""
        self.progress.update(force=True)


class LrFindProgress(CancelOnStop):
    """progress.json for the LR finder: iteration, loss, elapsed and ETA."""

    def __init__(self, progress: Progress, num_it: int):
        super().__init__(progress)
        self.num_it = num_it

    def after_batch(self):
        """Report the iteration."""
        super().after_batch()
        if self.training:
            elapsed = time.time() - self.t0
            self.progress.update(
                phase="lr_find",
                batch=self.train_iter,
                n_batches=self.num_it,
                train_loss=float(self.smooth_loss),
                elapsed_s=elapsed,
                eta_s=eta(elapsed, self.train_iter, self.num_it),
            )


def epoch_values(recorder) -> dict[str, float]:
    """The last epoch's losses and metrics by name, as plain floats (NaN when missing)."""
    return {n: _num(v) for n, v in zip(recorder.metric_names[1:-1], recorder.values[-1])}


class HistoryCSV(Callback):
    """One row per epoch in history.csv (epoch, phase, losses, metrics, time; fold first in k-fold runs)."""

    order = 61  # after Recorder, so this epoch's metrics are there

    def __init__(self, path: Path, progress: Progress, clock: EpochClock, fold: int | None = None):
        self.file, self.progress, self.clock, self.fold, self.t0 = (
            Path(path),
            progress,
            clock,
            fold,
            time.time(),
        )
        self.rows: list[dict[str, Any]] = []

    def after_epoch(self):
        """Record the epoch's row (in memory, in history.csv and as progress's last_epoch)."""
        row = {
            "epoch": self.clock.now(),
            "phase": "frozen" if self.clock.frozen() else "unfrozen",
            **epoch_values(self.recorder),
            "time_s": round(time.time() - self.t0, 2),
        }
        if self.fold is not None:
            row = {"fold": self.fold, **row}
        self.rows.append(row)
        append_csv_row(self.file, row)
        self.progress.update(last_epoch=row)


def append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Append a row to a CSV file, writing the header when the file is new (an existing header decides columns)."""
    new = not path.exists()
    if not new:
        with path.open() as f:
            header = next(csv.reader(f), [])
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row) if new else header, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


class _Tracker(Callback):
    """Follows the monitored value over the epochs (valid_loss when it is missing) and whether this epoch beat it."""

    order = 62

    def __init__(self, monitor: str, clock: EpochClock):
        self.monitor, self.clock, self.best, self.best_epoch, self.new_best = monitor, clock, None, -1, False

    def after_epoch(self):
        """Compare this epoch's value with the best so far."""
        values = epoch_values(self.recorder)
        value, lower = values.get(self.monitor), self.monitor in LOWER_IS_BETTER
        if value is None or math.isnan(value):
            value, lower = values.get("valid_loss"), True
        self.new_best = (
            value is not None
            and not math.isnan(value)
            and (self.best is None or (value < self.best if lower else value > self.best))
        )
        if self.new_best:
            self.best, self.best_epoch = float(value), self.clock.now()


class BestCheckpoint(_Tracker):
    """The best epoch's weights in one safetensors file (written atomically; never a pickle)."""

    def __init__(self, path: Path, progress: Progress, monitor: str, clock: EpochClock):
        super().__init__(monitor, clock)
        self.file, self.progress = Path(path), progress

    def after_epoch(self):
        """Save the weights when the monitored value improved; report the best epoch so far."""
        super().after_epoch()
        if self.new_best:
            save_state_atomic(self.learn.model, self.file)
        self.progress.update(best_epoch=self.best_epoch, best_value=self.best, monitor=self.monitor)

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best checkpoint back into the model."""
        if self.file.exists():
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(self.file), device=str(next(model.parameters()).device)))


class EarlyStop(_Tracker):
    """Ends training after `patience` epochs without a new best (never in fine_tune's frozen fit)."""

    order = 64  # last: the epoch is recorded, checkpointed and reported before the fit ends

    def __init__(self, monitor: str, patience: int, clock: EpochClock):
        super().__init__(monitor, clock)
        self.patience, self.wait, self.stopped = patience, 0, False

    def before_fit(self):
        """Each fit starts with full patience."""
        self.wait = 0

    def after_epoch(self):
        """Count epochs without a new best; stop at `patience`."""
        super().after_epoch()
        self.wait = 0 if self.new_best else self.wait + 1
        if self.patience and not self.clock.frozen() and self.wait >= self.patience:
            self.stopped = True
            raise CancelFitException()


def _num(v) -> float:
    """A recorder value as a plain float (NaN when missing)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def save_state_atomic(model: torch.nn.Module, path: Path) -> None:
    """Write a model's weights as safetensors through a synced temp file and a rename (never a half-written file)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        with atomic_writer(path) as tmp:
            save_file(state, str(tmp))
    except OSError as err:
        raise TrainingError(f"could not write checkpoint {Path(path).name}: {err.strerror or err}") from err


@dataclass
class Monitors:
    """The callbacks of one training fit, sharing one epoch clock."""

    clock: EpochClock
    progress: TrainProgress
    history: HistoryCSV
    checkpoint: BestCheckpoint
    early_stop: EarlyStop

    def callbacks(self) -> list[Callback]:
        """All of them, for fit(cbs=...)."""
        return [self.clock, self.progress, self.history, self.checkpoint, self.early_stop]


def monitors(
    run: runs.RunFolder, progress: Progress, t, fold: int | None = None, n_folds: int = 0
) -> Monitors:
    """Progress + cancel, history.csv, best checkpoint and early stopping for one fit of a run (t: TrainConfig)."""
    clock = EpochClock()
    return Monitors(
        clock,
        TrainProgress(progress, clock, t.planned_epochs(), fold, n_folds),
        HistoryCSV(run.history, progress, clock, fold),
        BestCheckpoint(run.checkpoint(fold), progress, t.monitor, clock),
        EarlyStop(t.monitor, t.early_stop_patience, clock),
    )


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


def fit_one(
    items: pd.DataFrame,
    cfg: RunConfig,
    run_dir: Path,
    progress: Progress,
    valid_idx=None,
    fold: int | None = None,
    n_folds: int = 0,
    classes: list[str] | None = None,
) -> FitOutcome:
    """Build DataLoaders + learner, fine-tune, restore the best epoch, predict the validation items.

    An explicit empty `valid_idx` trains on every non-test item (no validation, no checkpoint choice).
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
    mon = monitors(runs.RunFolder(run_dir), progress, t, fold=fold, n_folds=n_folds)
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
        learn.fine_tune(t.epochs, base_lr=t.lr or 2e-3, freeze_epochs=t.freeze_epochs, cbs=mon.callbacks())
    else:  # a random body gains nothing from a frozen phase: train everything, exactly t.epochs epochs
        learn.unfreeze()
        learn.fit_one_cycle(t.epochs, t.lr or 3e-3, cbs=mon.callbacks())
    if mon.progress.cancelled:
        raise JobCancelled("cancelled by the user")
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
    classes = list(learn.dls.vocab)
    dl = learn.dls.test_dl(frame, with_labels=True)
    probs, _ = learn.get_preds(dl=dl)
    probs = probs.float().numpy()
    lookup = {c: i for i, c in enumerate(classes)}
    y = frame["label"].astype(str).map(lookup)
    y = y.to_numpy() if y.notna().all() else None
    return evaluate.predictions_frame(frame["path"], y, probs, classes)


# ---------------------------------------------------------------- run tasks


def prepare(cfg: RunConfig, run_dir: Path, progress: Progress) -> pd.DataFrame:
    """Load the source, refuse untrainable data, assign splits; write config.json and items.csv."""
    from core.sources import load_source

    cfg.validate()
    run = runs.RunFolder(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)
    save_json(cfg, run.config)
    progress.update(force=True, phase="scanning", message="reading the dataset")
    # every file, however long the table (XRT_PROBE_MAX bounds scans only): each must decode before training
    ds = load_source(cfg.source, decode=warm_decoder(cfg), every_file=True)
    reasons = ds.check_trainable()
    if reasons:
        raise TrainingError("training refused: " + "; ".join(reasons))
    items = assign_splits(_grouped_duplicates(ds.items, cfg, progress), cfg.data.split)
    items = train_subset(items, cfg.data.train_fraction, cfg.data.split.seed + 2)
    leaks = group_leaks(items)
    if leaks and cfg.data.split.method == "group":
        raise TrainingError(f"{len(leaks)} patient(s) ended up in two splits")
    snapshot = items[["relpath", "label", "split", "kind"]].copy()
    snapshot["group"] = [pseudonym(g) for g in items["group"].fillna("").astype(str)]
    snapshot.to_csv(run.items, index=False)
    ds.problems.to_csv(run.problems, index=False)
    atomic_write_text(run.splits, split_summary(items).to_json(orient="records"))
    return items


def _grouped_duplicates(items: pd.DataFrame, cfg: RunConfig, progress: Progress) -> pd.DataFrame:
    """With keep_duplicates: near-duplicate images merged into one group (so one split / fold); else unchanged."""
    if not cfg.data.split.keep_duplicates:
        return items
    from core import checks

    progress.update(force=True, phase="scanning", message="finding near-duplicate images")
    feats = checks.image_features(items, size=cfg.data.img_size)
    dups = checks.find_duplicates(items, feats)
    progress.log(f"keep duplicates together: {len(dups)} near-duplicate pair(s) grouped")
    return checks.keep_duplicates_together(items, dups)


def warm_decoder(cfg: RunConfig):
    """The validating decode for `prepare`: decode as training will and keep it in the decode cache.

    Validation then doubles as the cache fill, so each file is decoded once per (size, window, frame), not
    once to validate and again in the first epoch; a later run on the same files validates from the cache.
    None (plain read_image) when the cache is off.
    """
    if not cfg.data.use_cache:
        return None
    from functools import partial

    from core.imaging import DecodeCache

    d = cfg.data
    return partial(DecodeCache().warm, size=d.img_size, window=d.window, frame=d.frame)


def manifest_for(
    cfg: RunConfig,
    classes: list[str],
    metrics: dict[str, Any],
    stats: tuple[list[float], list[float]] | None,
    best_epoch: int,
    model_epoch: int,
    model_weights: str,
) -> dict[str, Any]:
    """What a saved model needs to be rebuilt and used for prediction; `stats` = the normalisation it was trained with."""
    return {
        "arch": cfg.train.arch,
        "classes": classes,
        "n_in": 1 if cfg.data.channels == "grey" else 3,
        "img_size": cfg.data.img_size,
        "channels": cfg.data.channels,
        "resize": cfg.data.resize,
        "normalize": {"mean": stats[0], "std": stats[1]} if stats else None,
        "window": to_dict(cfg.data.window) if cfg.data.window else None,
        "frame": cfg.data.frame,
        "train_config": to_dict(cfg.train),
        "metrics": metrics,
        "best_epoch": best_epoch,
        "model_epoch": model_epoch,
        "model_weights": model_weights,
    }


def outcome_manifest(
    cfg: RunConfig, classes: list[str], metrics: dict[str, Any], out: FitOutcome
) -> dict[str, Any]:
    """The manifest of a fitted model: the normalisation its DataLoaders applied, the epoch its weights are from."""
    return manifest_for(
        cfg, classes, metrics, loader_stats(out.learn.dls), out.best_epoch, out.model_epoch, out.weights
    )


def resolve_threads(setting: int) -> tuple[int, str]:
    """(torch intra-op threads, where the number came from): the setting, $XRT_TORCH_THREADS, or every core given."""
    if setting > 0:
        return setting, "config"
    if (env := paths.env_int("XRT_TORCH_THREADS", 0)) > 0:
        return env, "XRT_TORCH_THREADS"
    return paths.cpu_cores(), "cores available to the process"


def apply_threads(cfg: RunConfig) -> None:
    """Let torch use the cores this run is given (recorded in env.json)."""
    n, _ = resolve_threads(cfg.train.torch_threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def env_info(cfg: RunConfig | None = None) -> dict[str, Any]:
    """Library versions and device, saved beside every run."""
    import fastai
    import PIL
    import pydicom
    import timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "fastai": fastai.__version__,
        "timm": timm.__version__,
        "pydicom": pydicom.__version__,
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "torch_threads_from": resolve_threads(cfg.train.torch_threads if cfg else 0)[1],
    }


def train_run(cfg: RunConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """A single train/valid(/test) run; k-fold when cfg.data.split.k_folds >= 2."""
    from core import savedmodel

    if cfg.data.split.k_folds >= 2:
        return kfold_run(cfg, run_dir, progress)
    t0, run = time.time(), runs.RunFolder(run_dir)
    items = prepare(cfg, run_dir, progress)
    classes = sorted(items["label"].astype(str).unique())
    out = fit_one(items, cfg, run_dir, progress, classes=classes)
    out.valid.to_csv(run.predictions("valid"), index=False)
    metrics = {"valid": evaluate.metrics_from_frame(out.valid, classes)}
    test = items[items["split"] == "test"]
    if len(test):
        progress.update(force=True, phase="testing")
        test_pred = predict_items(out.learn, test)
        test_pred.to_csv(run.predictions("test"), index=False)
        metrics["test"] = evaluate.metrics_from_frame(test_pred, classes)
    summary = {
        "type": "single",
        "classes": classes,
        "metrics": metrics,
        "best_epoch": out.best_epoch,
        "monitor": cfg.train.monitor,
        "stopped_early": out.stopped_early,
        "epochs_run": len(out.rows),
        "train_seconds": round(time.time() - t0, 2),
        **model_provenance(out, cfg, {"valid": len(out.valid), "test": len(test)}),
    }
    savedmodel.save_model(out.learn.model, run.model_dir, outcome_manifest(cfg, classes, metrics, out))
    _finish(run_dir, summary, progress, cfg)
    return summary


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


@dataclass
class FoldResult:
    """What training one fold left for the k-fold summary: its validation predictions and saved epoch."""

    fold: int
    valid: pd.DataFrame  # predictions_frame of the fold's validation items, with a fold column
    best_epoch: int
    model_epoch: int
    weights: str

    def row(self, classes: list[str]) -> dict[str, Any]:
        """The fold's line of metrics.json's per_fold: provenance + validation metrics."""
        return {
            "fold": self.fold,
            "best_epoch": self.best_epoch,
            "model_epoch": self.model_epoch,
            "model_weights": self.weights,
            **evaluate.metrics_from_frame(self.valid, classes),
        }


def kfold_run(cfg: RunConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """k models on k folds (patient-grouped when groups exist); out-of-fold predictions for every item.

    With more than one job slot (executors.max_jobs()) and a worker to record it, the folds become child
    jobs ("fold"): this job prepares items and folds, hands the folds over (jobs.WaitForChildren) and, run
    again once they are done, combines their results exactly as the folds trained here in sequence are.
    """
    from core import executors

    t0, run, k = time.time(), runs.RunFolder(run_dir), cfg.data.split.k_folds
    if progress.can_spawn and all(read_fold_job(run, i) for i in range(k)):
        return combine_fold_jobs(cfg, run, progress)
    items = prepare(cfg, run_dir, progress)
    classes = sorted(items["label"].astype(str).unique())
    folds = kfold_splits(items, k, method=cfg.data.split.method, seed=cfg.data.split.seed)
    items = items.assign(fold=_save_folds(run_dir, items, folds))
    if progress.can_spawn and executors.max_jobs() > 1:
        raise spawn_folds(cfg, run, items, progress)
    results: list[FoldResult] = []
    for i in range(k):
        results.append(train_fold(items, cfg, run_dir, i, progress, classes))
        progress.update(force=True, folds_done=i + 1, per_fold=[r.row(classes) for r in results])
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
    from core import savedmodel

    k, valid_idx = cfg.data.split.k_folds, fold_valid_idx(items, i)
    progress.log(f"fold {i + 1}/{k}: {len(valid_idx)} validation items")
    out = fit_one(
        items, cfg, work_dir or run_dir, progress, valid_idx=valid_idx, fold=i, n_folds=k, classes=classes
    )
    out.valid["fold"] = i
    result = FoldResult(i, out.valid, out.best_epoch, out.model_epoch, out.weights)
    manifest = outcome_manifest(cfg, classes, {"valid": evaluate.metrics_from_frame(out.valid, classes)}, out)
    savedmodel.save_model(out.learn.model, runs.RunFolder(run_dir).fold_dir(i), manifest)
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
    run, k = runs.RunFolder(run_dir), cfg.data.split.k_folds
    per_fold = [r.row(classes) for r in results]
    oof_df = pd.concat([r.valid for r in results], ignore_index=True)
    oof_df.to_csv(run.predictions("oof"), index=False)
    metric_names = [n for n in per_fold[0] if n not in ("fold", "best_epoch", "model_epoch", "model_weights")]
    metrics: dict[str, Any] = {
        "per_fold": per_fold,
        "mean_sd": evaluate.mean_sd([{n: f[n] for n in metric_names} for f in per_fold]),
        "pooled_oof": evaluate.metrics_from_frame(oof_df, classes),
    }
    summary = {
        "type": "kfold",
        "k": k,
        "classes": classes,
        "metrics": metrics,
        "train_seconds": round(time.time() - t0, 2),
    }
    if cfg.train.final_model_on_all:
        summary["final_model"] = final_model(
            items, cfg, run_dir, progress, classes, [f["model_epoch"] for f in per_fold], metrics["mean_sd"]
        )
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
) -> dict[str, Any]:
    """After k-fold: one model on all non-test items, trained for the folds' median saved-epoch count."""
    from core import savedmodel

    total = int(np.median(best_epochs)) + 1
    final = from_dict(RunConfig, to_dict(cfg))
    final.train.freeze_epochs = min(cfg.train.freeze_epochs, total - 1) if cfg.train.pretrained else 0
    final.train.epochs = max(1, total - final.train.freeze_epochs)
    final.train.early_stop_patience = 0
    progress.log(f"final model on all training data for {total} epoch(s)")
    out = fit_one(items, final, run_dir, progress, valid_idx=[], fold=None, classes=classes)
    run = runs.RunFolder(run_dir)
    savedmodel.save_model(
        out.learn.model, run.model_dir, outcome_manifest(final, classes, {"kfold_mean_sd": cv_metrics}, out)
    )
    _free(out)
    return {"epochs": total, "model": run.relative(run.model_manifest)}


def _save_folds(run_dir: Path, items: pd.DataFrame, folds) -> np.ndarray:
    """Record which fold validates each item (items.csv gains a fold column); returns that column."""
    fold_of = np.full(len(items), -1)
    for i, (_, v) in enumerate(folds):
        fold_of[v] = i
    path = runs.RunFolder(run_dir).items
    snap = pd.read_csv(path, keep_default_na=False)
    snap["fold"] = fold_of
    snap.to_csv(path, index=False)
    return fold_of


# ---------------------------------------------------------------- folds as child jobs


def spawn_folds(
    cfg: RunConfig, run: runs.RunFolder, items: pd.DataFrame, progress: Progress
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


def read_fold_items(run: runs.RunFolder) -> pd.DataFrame:
    """The items table the fold jobs of a run train on (as the parent had it in memory)."""
    items = pd.read_csv(run.fold_items, dtype=str, keep_default_na=False)
    return items.assign(fold=items["fold"].astype(int))


def write_fold_job(folder: runs.RunFolder, result: FoldResult, classes: list[str]) -> None:
    """A fold job's results in its own folder: validation predictions, then metrics.json (written last)."""
    result.valid.to_csv(folder.predictions("valid"), index=False)
    row = result.row(classes)
    folder.write(runs.METRICS, {"type": "fold", "classes": classes, **row})


def read_fold_job(run: runs.RunFolder, i: int) -> FoldResult | None:
    """Fold i's result from its child job's folder; None until that job finished."""
    folder = runs.RunFolder(run.fold_job_dir(i))
    summary = folder.read_metrics()
    if summary.get("type") != "fold" or not folder.predictions("valid").is_file():
        return None
    text = {"path": str, "label": str, "pred": str}
    valid = pd.read_csv(folder.predictions("valid"), dtype=text, keep_default_na=False)
    return FoldResult(i, valid, summary["best_epoch"], summary["model_epoch"], summary["model_weights"])


def combine_fold_jobs(cfg: RunConfig, run: runs.RunFolder, progress: Progress) -> dict[str, Any]:
    """The parent's second run: the fold jobs' histories merged in fold order, then combine_folds."""
    k = cfg.data.split.k_folds
    progress.update(force=True, phase="combining", message="combining the folds", n_folds=k, folds_done=k)
    items = read_fold_items(run)
    classes = sorted(items["label"].astype(str).unique())
    results = [r for r in (read_fold_job(run, i) for i in range(k)) if r is not None]
    if len(results) < k:
        raise TrainingError(f"{k - len(results)} fold job(s) left no results in {runs.FOLD_JOBS_DIR}/")
    run.history.unlink(missing_ok=True)  # this step may run again (e.g. after a crash of its worker)
    for i in range(k):
        _append_csv(run.history, runs.RunFolder(run.fold_job_dir(i)).history)
    t0 = float(run.read_job().get("started") or time.time())
    return combine_folds(cfg, run.path, progress, items, classes, results, t0)


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
    """Write env.json and, last (it marks the run finished), metrics.json; mark progress done."""
    run = runs.RunFolder(run_dir)
    run.write(runs.ENV, env_info(cfg))
    run.write(runs.METRICS, summary)
    progress.update(force=True, phase="done", message="finished")


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
    runs.RunFolder(run_dir).write(runs.LR_FIND, result)
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


# ---------------------------------------------------------------- job entry points


def run_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for training (and k-fold) runs: params = {"config": RunConfig as dict}.

    An experiment's trial also carries "not_after" (a time): started later, it is cancelled (budget spent).
    """
    if params.get("not_after") and time.time() > float(params["not_after"]):
        raise JobCancelled("not started: the experiment's time budget ran out")
    cfg = from_dict(RunConfig, params["config"])
    apply_threads(cfg)
    return train_run(cfg, Path(run_dir), progress)


def fold_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for one fold of a k-fold run: params = {"config", "parent_run", "fold"}."""
    cfg = from_dict(RunConfig, params["config"])
    apply_threads(cfg)
    parent, i = runs.RunFolder(params["parent_run"]), int(params["fold"])
    items = read_fold_items(parent)
    classes = sorted(items["label"].astype(str).unique())
    result = train_fold(items, cfg, parent.path, i, progress, classes, work_dir=Path(run_dir))
    write_fold_job(runs.RunFolder(run_dir), result, classes)
    progress.update(force=True, phase="done", message="finished")
    return {"fold": i}


def lr_find_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for the LR finder: params = {"config": ..., "num_it": 100}."""
    cfg = from_dict(RunConfig, params["config"])
    apply_threads(cfg)
    return lr_find_run(cfg, Path(run_dir), progress, num_it=int(params.get("num_it", 100)))
