"""The fastai Learner of a run: architecture, metrics, class weights, device tricks."""

from __future__ import annotations

import math

import fastai.callback.data  # noqa: F401  (patches weighted_dataloaders onto DataBlock)
import fastai.callback.fp16  # noqa: F401  (patches to_fp16 / to_bf16 onto Learner)
import fastai.callback.schedule  # noqa: F401  (patches fine_tune, fit_one_cycle, lr_find onto Learner)
import numpy as np
import pandas as pd
import torch

from core.base.config import RunConfig
from core.evaluation import evaluate

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


def loss_func(cfg: RunConfig, classes: list[str], train_labels: pd.Series | None, device=None):
    """The loss: cross-entropy weighted by class (imbalance "weighted_loss") and/or label-smoothed; None = fastai's."""
    from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat

    t = cfg.train
    weight = None
    if t.imbalance == "weighted_loss" and train_labels is not None:
        weight = class_weights(train_labels, classes).to(device)
    if (
        t.label_smoothing > 0
    ):  # with class weights, fastai weights the target term (F.nll_loss), not the smoothing
        return LabelSmoothingCrossEntropyFlat(eps=t.label_smoothing, weight=weight)
    return CrossEntropyLossFlat(weight=weight) if weight is not None else None


def make_learner(dls, cfg: RunConfig, train_labels: pd.Series | None = None):
    """vision_learner with the app's metrics, loss weighting and GPU settings."""
    from fastai.callback.progress import ProgressCallback
    from fastai.metrics import accuracy
    from fastai.vision.learner import vision_learner

    from core.models import pretrained
    from core.models.heads import n_outputs
    from core.train import losses
    from core.train.optim import FusedAdam

    t, task = cfg.train, cfg.data.task
    classes = list(dls.vocab)
    n_in = 1 if cfg.data.channels == "grey" else 3
    if task.type == "single":
        loss = loss_func(cfg, classes, train_labels, dls.device)
        metrics = [accuracy, balanced_accuracy_metric(), auc_metric(), *recall_metrics(classes)]
    else:  # multi-label: masked BCE per finding; ordinal: cross-entropy over the grades, or the CORN head and loss
        loss = losses.task_loss(task.type, classes, train_labels, task.pos_weight, task.ordinal_head)
        metrics = losses.task_metrics(task.type, task.ordinal_head)
    learn = vision_learner(
        dls,
        **pretrained.learner_args(t.arch, t.pretrained, t.weights_path),
        n_in=n_in,
        n_out=n_outputs(task.type, len(classes), task.ordinal_head),
        normalize=False,
        loss_func=loss,
        wd=t.weight_decay,
        metrics=metrics,
        opt_func=FusedAdam,  # fastai's Adam with torch's fused update (core/train/optim.py)
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
