"""Losses and training metrics of the multi-label and ordinal tasks (single-label ones live in core.train.learner).

multilabel: binary cross-entropy per finding on the logits, uncertain targets (-1) masked out, optionally each
finding's positives weighted by negatives / positives in training (`TaskConfig.pos_weight`).
ordinal, head `ce`: cross-entropy over the K grades (`GradeCE`); head `corn`: the CORN loss (Shi, Cao & Raschka
2023): task k is "grade > k" trained only on items with grade > k-1, so the K-1 conditional probabilities multiply
into rank-consistent P(grade > k) (core.models.heads). CORN was preferred to a cumulative-link (CORAL) head because it
needs no shared-weight layer (any fastai head works unchanged); it is the default because it beat cross-entropy on
the synthetic ordinal sample (bench/README.md, "Ordinal heads").
The loss objects carry `activation` (fastai's get_preds turns logits into probabilities with it) and `task`.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from core.data import labels as lab
from core.evaluation import evaluate
from core.evaluation.ordinal import qwk
from core.models.heads import activation, predicted_grade


class MaskedBCE:
    """Per-finding BCE on logits; targets 1 / 0 count, -1 (uncertain) is masked out; optional positive weights."""

    task = "multilabel"

    def __init__(self, pos_weight: torch.Tensor | None = None):
        self.pos_weight = pos_weight

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean BCE over the known (finding, image) cells of the batch."""
        logits, target = logits.float(), target.float()
        known = (target >= 0).float()
        pw = None if self.pos_weight is None else self.pos_weight.to(logits.device)
        cell = F.binary_cross_entropy_with_logits(
            logits, target.clamp_min(0), reduction="none", pos_weight=pw
        )
        return (cell * known).sum() / known.sum().clamp_min(1)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """A sigmoid per finding."""
        return activation(self.task, logits)

    def decodes(self, probs: torch.Tensor) -> torch.Tensor:
        """Decisions at 0.5."""
        return probs >= 0.5


class CornLoss:
    """CORN: for k = 0..K-2, BCE of "grade > k" over the items with grade > k-1; mean over those terms."""

    task, head = "ordinal", "corn"

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The summed conditional BCE terms divided by the number of terms (coral-pytorch's corn_loss)."""
        logits, y = logits.float(), target.long().view(-1)
        total, count = logits.new_zeros(()), 0
        for k in range(logits.shape[1]):
            keep = y > k - 1
            if keep.any():
                total = total + F.binary_cross_entropy_with_logits(
                    logits[keep, k], (y[keep] > k).float(), reduction="sum"
                )
                count += int(keep.sum())
        return total / max(1, count)

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """The K grade probabilities."""
        return activation(self.task, logits, self.head)

    def decodes(self, probs: torch.Tensor) -> torch.Tensor:
        """The predicted grade: how many P(grade > k) exceed 0.5."""
        return torch.from_numpy(predicted_grade(probs.detach().cpu().numpy()))


class GradeCE(CornLoss):
    """Plain cross-entropy over the K grades (K outputs, softmax); the grade decoded as CORN's (the median grade)."""

    head = "ce"

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the batch."""
        return F.cross_entropy(logits.float(), target.long().view(-1))


def pos_weights(train_labels: pd.Series, findings: list[str]) -> torch.Tensor:
    """Negatives / positives per finding in training (1 where a finding has no positive), capped at 100."""
    y = lab.target_matrix(train_labels.astype(str), findings)
    pos, neg = (y == 1).sum(0), (y == 0).sum(0)
    w = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    return torch.tensor(np.clip(w, 1e-3, 100.0), dtype=torch.float32)


def task_loss(
    task: str, findings: list[str], train_labels: pd.Series | None, use_pos_weight: bool, head: str = "corn"
):
    """The loss object of a multi-label or ordinal run (ordinal: of its head)."""
    if task == "ordinal":
        return GradeCE() if head == "ce" else CornLoss()
    weight = pos_weights(train_labels, findings) if use_pos_weight and train_labels is not None else None
    return MaskedBCE(weight)


# ---------------------------------------------------------------- training metrics (history.csv, the monitor)


class TaskMetric:
    """One epoch metric from logits and targets (picklable): the monitor names accuracy, balanced_accuracy, roc_auc."""

    def __init__(self, task: str, name: str, head: str = "corn"):
        self.task, self.name, self.__name__, self.head = task, name, name, head

    def __call__(self, targ: np.ndarray, logits: np.ndarray) -> float:
        """The metric of one validation pass."""
        probs = activation(self.task, torch.as_tensor(logits), self.head).numpy()
        if self.task == "multilabel":
            return _multilabel_metric(self.name, np.asarray(targ, dtype=float), probs)
        return _ordinal_metric(self.name, np.asarray(targ, dtype=int).reshape(-1), probs)


def _multilabel_metric(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    """Cell accuracy at 0.5, mean per-finding balanced accuracy, or macro AUC, uncertain cells left out."""
    from core.evaluation.taskstats import fast_auc, sens_spec

    known, dec = y >= 0, probs >= 0.5
    if name == "accuracy":
        return float((dec == (y == 1))[known].mean()) if known.any() else math.nan
    values = []
    for i in range(y.shape[1]):
        k = known[:, i]
        if name == "roc_auc":
            values.append(fast_auc(y[k, i] == 1, probs[k, i]))
        else:
            values.append(float(np.mean(sens_spec(y[k, i] == 1, dec[k, i]))))
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _ordinal_metric(name: str, y: np.ndarray, probs: np.ndarray) -> float:
    """Exact accuracy, balanced accuracy, macro AUC, QWK or MAE of the predicted grade."""
    pred = predicted_grade(probs)
    if name == "accuracy":
        return float((pred == y).mean())
    if name == "balanced_accuracy":
        recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
        return float(np.mean(recalls))
    if name == "roc_auc":
        return evaluate.roc_auc(y, probs)
    if name == "qwk":
        return qwk(y, pred, probs.shape[1])
    return float(np.abs(pred - y).mean())


def task_metrics(task: str, head: str = "corn") -> list:
    """The fastai metrics of a multi-label or ordinal run (the monitor's names, plus QWK and MAE for grades)."""
    from fastai.metrics import AccumMetric

    names = ["accuracy", "balanced_accuracy", "roc_auc"] + (["qwk", "mae"] if task == "ordinal" else [])
    return [
        AccumMetric(TaskMetric(task, n, head), to_np=True, invert_arg=True, flatten=False, name=n)
        for n in names
    ]
