"""Training: vision_learner, lr_find, fine_tune with progress/cancel/early stop/best checkpoint, k-fold CV.

Every run writes a run folder (see docs/ARCHITECTURE.md): config.json, items.csv, history.csv,
progress.json, model/ (weights + manifest), predictions, metrics.json and env.json.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import os
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

from core import evaluate
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
from core.jobs import JobCancelled, Progress
from core.privacy import pseudonym

LOWER_IS_BETTER = {"valid_loss"}


class TrainingError(RuntimeError):
    """Training cannot start or go on; the message says why in user terms."""


# ---------------------------------------------------------------- learner


def auc_metric():
    """fastai metric: ROC AUC from softmax probabilities (binary, or macro one-vs-rest)."""
    from fastai.metrics import AccumMetric, ActivationType

    return AccumMetric(_auc_fn, dim_argmax=-1, activation=ActivationType.Softmax, to_np=True, invert_arg=True,
                       flatten=False, name="roc_auc")  # dim_argmax: the softmax axis (None warns)


def _auc_fn(targ: np.ndarray, probs: np.ndarray) -> float:
    """AUC for AccumMetric (targets first)."""
    return evaluate.roc_auc(targ, probs)


def balanced_accuracy_metric():
    """fastai metric: balanced accuracy (mean per-class recall)."""
    from fastai.metrics import AccumMetric
    from sklearn.metrics import balanced_accuracy_score

    return AccumMetric(balanced_accuracy_score, dim_argmax=-1, to_np=True, invert_arg=True,
                       name="balanced_accuracy")


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

    return [AccumMetric(_ClassRecall(i), dim_argmax=-1, to_np=True, invert_arg=True, name=f"recall_{c}")
            for i, c in enumerate(classes)]


def class_weights(labels: pd.Series, classes: list[str]) -> torch.Tensor:
    """Inverse-frequency loss weights, normalised to mean 1."""
    counts = labels.astype(str).value_counts()
    w = np.array([len(labels) / (len(classes) * max(1, counts.get(c, 0))) for c in classes], dtype=np.float32)
    return torch.tensor(w / w.mean())


def use_gpu_tricks(setting: str) -> bool:
    """Resolve the auto/on/off mixed-precision setting for this machine (auto = on a CUDA GPU only)."""
    return setting == "on" or (setting == "auto" and torch.cuda.is_available())


CHANNELS_LAST_CPU_MIN_SIZE = 128  # below this, channels_last on a CPU measured no faster (bench/README.md)


def use_channels_last(setting: str, img_size: int = 224) -> bool:
    """Resolve the auto/on/off channels_last setting: auto = on a GPU; on a CPU from 128 px up.

    On this project's CPU channels_last measured 5-30 % faster fwd+bwd at 128-224 px (resnet18 224 px end to
    end: 7 %) but no faster at 64 px, where its different kernels only shifted the results.
    """
    if setting != "auto":
        return setting == "on"
    return torch.cuda.is_available() or img_size >= CHANNELS_LAST_CPU_MIN_SIZE


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
        dls, **pretrained.learner_args(t.arch, t.pretrained, t.weights_path), n_in=n_in, normalize=False,
        loss_func=loss, wd=t.weight_decay,
        metrics=[accuracy, balanced_accuracy_metric(), auc_metric(), *recall_metrics(classes)],
    )
    learn.remove_cb(ProgressCallback)  # progress goes to progress.json (TrainMonitor) instead
    learn.logger = _no_log  # fastai prints every epoch's row to stdout; TrainMonitor keeps history.csv
    if torch.cuda.is_available() and use_gpu_tricks(t.mixed_precision):
        learn.to_bf16() if torch.cuda.is_bf16_supported() else learn.to_fp16()
    if use_channels_last(t.channels_last, cfg.data.img_size):
        learn.model.to(memory_format=torch.channels_last)
    return learn


def _no_log(*_args, **_kwargs) -> None:
    """A fastai logger that drops the per-epoch rows."""


# ---------------------------------------------------------------- callback


class TrainMonitor(Callback):
    """Writes progress and history, honours cancel, stops early, keeps the best epoch's weights.

    One instance spans both phases of fine_tune so epochs are numbered continuously.
    """

    order = 60  # after Recorder, so this epoch's metrics are there

    def __init__(self, run_dir: Path, progress: Progress, monitor: str, patience: int, n_epochs: int,
                 fold: int | None = None, n_folds: int = 0, ckpt_name: str = "best.safetensors"):
        self.run_dir, self.progress, self.monitor, self.patience = Path(run_dir), progress, monitor, patience
        self.n_epochs, self.fold, self.n_folds = n_epochs, fold, n_folds
        self.ckpt = self.run_dir / "checkpoints" / ckpt_name
        self.epoch_offset, self.fits, self.best, self.best_epoch, self.wait = 0, 0, None, -1, 0
        self.cancelled, self.stopped_early, self.t0 = False, False, time.time()
        self.rows: list[dict[str, Any]] = []

    def before_fit(self):
        """Count fit phases (frozen, then unfrozen)."""
        self.fits += 1
        self.wait = 0

    def after_batch(self):
        """Report batch progress; stop within a batch when cancel was asked."""
        if self.progress.cancelled():
            self.cancelled = True
            raise CancelFitException()
        if not self.training:
            return
        done = self.epoch_offset + self.epoch + self.iter / max(1, self.n_iter)
        elapsed = time.time() - self.t0
        eta = elapsed / done * (self.n_epochs - done) if done > 0 else None
        self.progress.update(phase="training", fold=self.fold, n_folds=self.n_folds,
                             epoch=self.epoch_offset + self.epoch, n_epochs=self.n_epochs,
                             batch=self.iter + 1, n_batches=self.n_iter,
                             train_loss=float(self.smooth_loss), eta_s=eta, elapsed_s=elapsed)

    def after_epoch(self):
        """Record the epoch row, checkpoint the best, and decide on early stopping."""
        names = [n for n in self.recorder.metric_names[1:-1]]
        row = {"epoch": self.epoch_offset + self.epoch, "phase": "frozen" if self._frozen_phase() else "unfrozen"}
        row.update({n: _num(v) for n, v in zip(names, self.recorder.values[-1])})
        row["time_s"] = round(time.time() - self.t0, 2)
        if self.fold is not None:
            row = {"fold": self.fold, **row}
        self.rows.append(row)
        self._append_history(row)
        improved = self._maybe_checkpoint(row)
        self.progress.update(force=True, last_epoch=row, best_epoch=self.best_epoch, best_value=self.best,
                             monitor=self.monitor)
        self.wait = 0 if improved else self.wait + 1
        if self.patience and not self._frozen_phase() and self.wait >= self.patience:
            self.stopped_early = True
            raise CancelFitException()

    def after_fit(self):
        """Carry epoch numbering into the next phase."""
        self.epoch_offset += self.n_epoch if not (self.cancelled or self.stopped_early) else self.epoch + 1

    def _frozen_phase(self) -> bool:
        """True during fine_tune's first (frozen body) fit."""
        return self.fits == 1 and self.learn.opt is not None and self.learn.opt.frozen_idx > 0

    def _maybe_checkpoint(self, row: dict[str, Any]) -> bool:
        """Save the weights when the monitored value improved; return whether it did."""
        value = row.get(self.monitor)
        if value is None or math.isnan(value):
            value = row.get("valid_loss")
            lower = True
        else:
            lower = self.monitor in LOWER_IS_BETTER
        if value is None or math.isnan(value):
            return False
        better = self.best is None or (value < self.best if lower else value > self.best)
        if better:
            self.best, self.best_epoch = float(value), row["epoch"]
            save_state_atomic(self.learn.model, self.ckpt)
        return better

    def _append_history(self, row: dict[str, Any]) -> None:
        """Append one epoch row to history.csv (header written once)."""
        path = self.run_dir / "history.csv"
        new = not path.exists()
        if not new:
            with path.open() as f:
                header = next(csv.reader(f), [])
        fields = header if not new else list(row)
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def restore_best(self, model: torch.nn.Module) -> None:
        """Load the best checkpoint back into the model (the final model is the best epoch)."""
        if self.ckpt.exists():
            from safetensors.torch import load_file

            state = load_file(str(self.ckpt), device=str(next(model.parameters()).device))
            model.load_state_dict(state)


def _num(v) -> float:
    """A recorder value as a plain float (NaN when missing)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def save_state_atomic(model: torch.nn.Module, path: Path) -> None:
    """Write a model's weights as safetensors to a temp file, then rename (never a half-written file)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        save_file(state, str(tmp))
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TrainingError(f"could not write checkpoint {path.name}: {err.strerror or err}") from err


# ---------------------------------------------------------------- one fit


@dataclass
class FitOutcome:
    """What one training fit produced; the model holds the weights of epoch `model_epoch` ("last" or "best")."""

    learn: Any
    monitor: TrainMonitor
    valid: pd.DataFrame
    model_epoch: int = -1
    weights: str = "last"


def keeps_best(t) -> bool:
    """Whether the saved model is the best checkpoint (by the monitor) rather than the last epoch.

    auto = best only with early stopping: the annealed last epoch needs no choice on the validation set (so its
    validation metrics stay honest), as in a plain fastai notebook; on held-out test sets it measured within
    noise of the best epoch (PneumoniaMNIST +0.009 ACC, chest -0.011, sample equal; bench/README.md).
    """
    return t.final_weights == "best" or (t.final_weights == "auto" and t.early_stop_patience > 0)


def fit_one(items: pd.DataFrame, cfg: RunConfig, run_dir: Path, progress: Progress, valid_idx=None,
            fold: int | None = None, n_folds: int = 0, classes: list[str] | None = None) -> FitOutcome:
    """Build DataLoaders + learner, fine-tune, restore the best epoch, predict the validation items.

    An explicit empty `valid_idx` trains on every non-test item (no validation, no checkpoint choice).
    """
    from fastai.torch_core import set_seed

    set_seed(cfg.train.seed, reproducible=True)
    t = cfg.train
    dls = build_dataloaders(items, cfg.data, valid_idx=valid_idx, classes=classes,
                            oversample=t.imbalance == "oversample", require_valid=valid_idx is None or len(valid_idx) > 0)
    learn = make_learner(dls, cfg, train_labels=dls.train_ds.items["label"])
    name = "best.safetensors" if fold is None else f"best_fold{fold}.safetensors"
    mon = TrainMonitor(run_dir, progress, t.monitor, t.early_stop_patience, t.planned_epochs(),
                       fold=fold, n_folds=n_folds, ckpt_name=name)
    progress.update(force=True, phase="training", fold=fold, n_folds=n_folds, epoch=0, eta_s=None, elapsed_s=0.0,
                    n_epochs=t.planned_epochs())
    if t.fine_tunes():
        learn.fine_tune(t.epochs, base_lr=t.lr or 2e-3, freeze_epochs=t.freeze_epochs, cbs=[mon])
    else:  # a random body gains nothing from a frozen phase: train everything, exactly t.epochs epochs
        learn.unfreeze()
        learn.fit_one_cycle(t.epochs, t.lr or 3e-3, cbs=[mon])
    if mon.cancelled:
        raise JobCancelled("cancelled by the user")
    weights, epoch = "last", len(mon.rows) - 1
    if keeps_best(t) and mon.best_epoch >= 0:
        mon.restore_best(learn.model)
        weights, epoch = "best", mon.best_epoch
    valid = predict_items(learn, dls.valid_ds.items) if len(dls.valid_ds) else pd.DataFrame()
    return FitOutcome(learn, mon, valid, model_epoch=epoch, weights=weights)


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
    run_dir.mkdir(parents=True, exist_ok=True)
    save_json(cfg, run_dir / "config.json")
    progress.update(force=True, phase="scanning", message="reading the dataset")
    ds = load_source(cfg.source, decode=warm_decoder(cfg))
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
    snapshot.to_csv(run_dir / "items.csv", index=False)
    ds.problems.to_csv(run_dir / "problems.csv", index=False)
    (run_dir / "splits.json").write_text(split_summary(items).to_json(orient="records"))
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


def manifest_for(cfg: RunConfig, classes: list[str], metrics: dict[str, Any],
                 stats: tuple[list[float], list[float]] | None, best_epoch: int, model_epoch: int,
                 model_weights: str) -> dict[str, Any]:
    """What a saved model needs to be rebuilt and used for prediction; `stats` = the normalisation it was trained with."""
    return {
        "arch": cfg.train.arch, "classes": classes, "n_in": 1 if cfg.data.channels == "grey" else 3,
        "img_size": cfg.data.img_size, "channels": cfg.data.channels, "resize": cfg.data.resize,
        "normalize": {"mean": stats[0], "std": stats[1]} if stats else None,
        "window": to_dict(cfg.data.window) if cfg.data.window else None, "frame": cfg.data.frame,
        "train_config": to_dict(cfg.train), "metrics": metrics, "best_epoch": best_epoch,
        "model_epoch": model_epoch, "model_weights": model_weights,
    }


def outcome_manifest(cfg: RunConfig, classes: list[str], metrics: dict[str, Any], out: FitOutcome) -> dict[str, Any]:
    """The manifest of a fitted model: the normalisation its DataLoaders applied, the epoch its weights are from."""
    return manifest_for(cfg, classes, metrics, loader_stats(out.learn.dls), out.monitor.best_epoch,
                        out.model_epoch, out.weights)


def resolve_threads(setting: int) -> tuple[int, str]:
    """(torch intra-op threads, where the number came from): the setting, $XRT_TORCH_THREADS, or every core given."""
    from core.data import _cpus

    if setting > 0:
        return setting, "config"
    env = os.environ.get("XRT_TORCH_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env), "XRT_TORCH_THREADS"
    return _cpus(), "cores available to the process"


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
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "fastai": fastai.__version__, "timm": timm.__version__, "pydicom": pydicom.__version__,
        "pillow": PIL.__version__, "numpy": np.__version__, "pandas": pd.__version__,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        "torch_threads_from": resolve_threads(cfg.train.torch_threads if cfg else 0)[1],
    }


def _write_json(path: Path, data: Any) -> None:
    """Indented JSON with NaN written as null."""
    path.write_text(json.dumps(_nan_to_none(data), indent=2, default=str))


def _nan_to_none(x: Any) -> Any:
    """Replace float NaN by None recursively (valid JSON)."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def train_run(cfg: RunConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """A single train/valid(/test) run; k-fold when cfg.data.split.k_folds >= 2."""
    from core import savedmodel

    if cfg.data.split.k_folds >= 2:
        return kfold_run(cfg, run_dir, progress)
    t0 = time.time()
    items = prepare(cfg, run_dir, progress)
    classes = sorted(items["label"].astype(str).unique())
    out = fit_one(items, cfg, run_dir, progress, classes=classes)
    out.valid.to_csv(run_dir / "valid_predictions.csv", index=False)
    metrics = {"valid": evaluate.metrics_from_frame(out.valid, classes)}
    test = items[items["split"] == "test"]
    if len(test):
        progress.update(force=True, phase="testing")
        test_pred = predict_items(out.learn, test)
        test_pred.to_csv(run_dir / "test_predictions.csv", index=False)
        metrics["test"] = evaluate.metrics_from_frame(test_pred, classes)
    summary = {"type": "single", "classes": classes, "metrics": metrics, "best_epoch": out.monitor.best_epoch,
               "monitor": cfg.train.monitor, "stopped_early": out.monitor.stopped_early,
               "epochs_run": len(out.monitor.rows), "train_seconds": round(time.time() - t0, 2),
               **model_provenance(out, cfg, {"valid": len(out.valid), "test": len(test)})}
    savedmodel.save_model(out.learn.model, run_dir / "model", outcome_manifest(cfg, classes, metrics, out))
    _finish(run_dir, summary, progress, cfg)
    return summary


def model_provenance(out: FitOutcome, cfg: RunConfig, n_items: dict[str, int]) -> dict[str, Any]:
    """Which epoch the saved model is from, which set each metric is measured on, and which is the headline."""
    best = out.weights == "best"
    sets = {"valid": f"validation split ({n_items['valid']} items), seen after every epoch"
                     + (f"; it chose the saved epoch by {cfg.train.monitor}, so its metrics are optimistic" if best
                        else "; not used to choose the saved epoch")}
    if n_items.get("test"):
        sets["test"] = f"held-out test split ({n_items['test']} items), never seen in training or epoch choice"
    return {"model_epoch": out.model_epoch, "model_weights": out.weights, "epochs_planned": cfg.train.planned_epochs(),
            "headline_set": "test" if n_items.get("test") else "valid", "valid_used_for_selection": best,
            "sets": sets}


def kfold_run(cfg: RunConfig, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """k models on k folds (patient-grouped when groups exist); out-of-fold predictions for every item."""
    from core import savedmodel

    t0 = time.time()
    items = prepare(cfg, run_dir, progress)
    classes = sorted(items["label"].astype(str).unique())
    k = cfg.data.split.k_folds
    folds = kfold_splits(items, k, method=cfg.data.split.method, seed=cfg.data.split.seed)
    _save_folds(run_dir, items, folds)
    oof, per_fold = [], []
    for i, (_, valid_idx) in enumerate(folds):
        progress.log(f"fold {i + 1}/{k}: {len(valid_idx)} validation items")
        out = fit_one(items, cfg, run_dir, progress, valid_idx=valid_idx, fold=i, n_folds=k, classes=classes)
        out.valid["fold"] = i
        oof.append(out.valid)
        m = evaluate.metrics_from_frame(out.valid, classes)
        per_fold.append({"fold": i, "best_epoch": out.monitor.best_epoch, "model_epoch": out.model_epoch,
                         "model_weights": out.weights, **m})
        savedmodel.save_model(out.learn.model, run_dir / "folds" / f"fold{i}",
                           outcome_manifest(cfg, classes, {"valid": m}, out))
        progress.update(force=True, folds_done=i + 1, per_fold=per_fold)
        _free(out)
    oof_df = pd.concat(oof, ignore_index=True)
    oof_df.to_csv(run_dir / "oof_predictions.csv", index=False)
    metric_names = [n for n in per_fold[0] if n not in ("fold", "best_epoch", "model_epoch", "model_weights")]
    metrics = {"per_fold": per_fold,
               "mean_sd": evaluate.mean_sd([{n: f[n] for n in metric_names} for f in per_fold]),
               "pooled_oof": evaluate.metrics_from_frame(oof_df, classes)}
    summary = {"type": "kfold", "k": k, "classes": classes, "metrics": metrics,
               "train_seconds": round(time.time() - t0, 2)}
    if cfg.train.final_model_on_all:
        summary["final_model"] = final_model(items, cfg, run_dir, progress, classes,
                                             [f["model_epoch"] for f in per_fold], metrics["mean_sd"])
    _finish(run_dir, summary, progress, cfg)
    return summary


def final_model(items: pd.DataFrame, cfg: RunConfig, run_dir: Path, progress: Progress, classes: list[str],
                best_epochs: list[int], cv_metrics: dict[str, Any]) -> dict[str, Any]:
    """After k-fold: one model on all non-test items, trained for the folds' median saved-epoch count."""
    from core import savedmodel

    total = int(np.median(best_epochs)) + 1
    final = from_dict(RunConfig, to_dict(cfg))
    final.train.freeze_epochs = min(cfg.train.freeze_epochs, total - 1) if cfg.train.pretrained else 0
    final.train.epochs = max(1, total - final.train.freeze_epochs)
    final.train.early_stop_patience = 0
    progress.log(f"final model on all training data for {total} epoch(s)")
    out = fit_one(items, final, run_dir, progress, valid_idx=[], fold=None, classes=classes)
    savedmodel.save_model(out.learn.model, run_dir / "model",
                       outcome_manifest(final, classes, {"kfold_mean_sd": cv_metrics}, out))
    _free(out)
    return {"epochs": total, "model": "model/model.json"}


def _save_folds(run_dir: Path, items: pd.DataFrame, folds) -> None:
    """Record which fold validates each item (items.csv gains a fold column)."""
    fold_of = np.full(len(items), -1)
    for i, (_, v) in enumerate(folds):
        fold_of[v] = i
    snap = pd.read_csv(run_dir / "items.csv", keep_default_na=False)
    snap["fold"] = fold_of
    snap.to_csv(run_dir / "items.csv", index=False)


def _free(out: FitOutcome) -> None:
    """Release a fold's learner and GPU memory before the next fold."""
    out.learn.dls = None
    del out.learn
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _finish(run_dir: Path, summary: dict[str, Any], progress: Progress, cfg: RunConfig | None = None) -> None:
    """Write metrics.json and env.json; mark progress done."""
    _write_json(run_dir / "metrics.json", summary)
    _write_json(run_dir / "env.json", env_info(cfg))
    progress.update(force=True, phase="done", message="finished")


def lr_find_run(cfg: RunConfig, run_dir: Path, progress: Progress, num_it: int = 100) -> dict[str, Any]:
    """The LR finder: loss against learning rate and the four fastai suggestions, as data."""
    from fastai.torch_core import set_seed

    items = prepare(cfg, run_dir, progress)
    set_seed(cfg.train.seed, reproducible=True)
    dls = build_dataloaders(items, cfg.data)
    learn = make_learner(dls, cfg, train_labels=dls.train_ds.items["label"])
    mon = _LrFindMonitor(progress, num_it)
    progress.update(force=True, phase="lr_find", batch=0, n_batches=num_it)
    learn.add_cb(mon)
    learn.lr_find(num_it=num_it, show_plot=False, suggest_funcs=None)
    if mon.cancelled:
        raise JobCancelled("cancelled by the user")
    lrs = [float(x) for x in learn.recorder.lrs]
    losses = [float(x) for x in learn.recorder.losses]
    result = {"lrs": lrs, "losses": losses, "suggestions": lr_suggestions(lrs, losses, num_it)}
    _write_json(run_dir / "lr_find.json", result)
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


class _LrFindMonitor(Callback):
    """Progress and cancel for the LR finder."""

    order = 60

    def __init__(self, progress: Progress, num_it: int):
        self.progress, self.num_it, self.cancelled, self.t0 = progress, num_it, False, time.time()

    def after_batch(self):
        """Report the iteration; stop when cancel was asked."""
        if self.progress.cancelled():
            self.cancelled = True
            raise CancelFitException()
        if self.training:
            elapsed = time.time() - self.t0
            self.progress.update(phase="lr_find", batch=self.train_iter, n_batches=self.num_it,
                                 train_loss=float(self.smooth_loss), elapsed_s=elapsed,
                                 eta_s=eta(elapsed, self.train_iter, self.num_it))


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


def kfold_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for k-fold runs (k from the config, at least 2)."""
    cfg = from_dict(RunConfig, params["config"])
    if cfg.data.split.k_folds < 2:
        cfg.data.split.k_folds = 5
    apply_threads(cfg)
    return kfold_run(cfg, Path(run_dir), progress)


def lr_find_task(params: dict, run_dir: Path, progress: Progress) -> dict[str, Any]:
    """Job entry point for the LR finder: params = {"config": ..., "num_it": 100}."""
    cfg = from_dict(RunConfig, params["config"])
    apply_threads(cfg)
    return lr_find_run(cfg, Path(run_dir), progress, num_it=int(params.get("num_it", 100)))
