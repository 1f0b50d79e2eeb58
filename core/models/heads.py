"""What a network's outputs mean per task type: how many it has and how they become probabilities.

single: one logit per class, softmax. multilabel: one logit per finding, a sigmoid each (findings are independent).
ordinal, head `corn`: CORN (Shi, Cao & Raschka 2023, "Deep neural networks for rank-consistent ordinal regression
based on conditional probabilities"): K-1 logits for K grades, logit k = P(grade > k | grade > k-1); their running
product gives P(grade > k), monotone by construction, and differences of it the K grade probabilities. Head `ce`:
K logits, softmax. Either way the predicted grade is the number of P(grade > k) above 0.5 (the median grade of the
K probabilities; CORN's rank rule); the expected grade is the probability-weighted mean grade index.
Used by training (core.train.losses) and by every consumer of a saved model (predict, ONNX export).
"""

from __future__ import annotations

import numpy as np
import torch

TASKS = ("single", "multilabel", "ordinal")
DEFAULT_FINDING_THRESHOLD = 0.5
CORN = "corn"  # an ordinal model's head when its record names none (the only head before `ce` existed)


def n_outputs(task: str, n_classes: int, head: str = CORN) -> int:
    """Outputs of the network's last layer: K-1 for K grades with the CORN head, else one per class / finding."""
    return n_classes - 1 if task == "ordinal" and head == CORN else n_classes


def corn_probs(logits: torch.Tensor) -> torch.Tensor:
    """K grade probabilities from K-1 CORN logits (rows sum to 1, none negative)."""
    above = torch.cumprod(torch.sigmoid(logits.float()), dim=1)  # P(grade > k), k = 0..K-2, non-increasing
    ones = torch.ones_like(above[:, :1])
    zeros = torch.zeros_like(above[:, :1])
    upper = torch.cat([ones, above], dim=1)  # P(grade > k-1)
    lower = torch.cat([above, zeros], dim=1)  # P(grade > k)
    return (upper - lower).clamp_min(0)


def activation(task: str, logits: torch.Tensor, head: str = CORN) -> torch.Tensor:
    """Probabilities from a batch of logits: sigmoid per finding (multilabel), CORN (ordinal, CORN head), else
    softmax (single; ordinal with the cross-entropy head)."""
    if task == "multilabel":
        return torch.sigmoid(logits.float())
    if task == "ordinal" and head == CORN:
        return corn_probs(logits)
    return torch.softmax(logits.float(), dim=1)


def exceed_probs(probs: np.ndarray) -> np.ndarray:
    """P(grade > k) for k = 0..K-2 from K grade probabilities (items x K-1)."""
    probs = np.asarray(probs, dtype=float)
    return 1 - np.cumsum(probs, axis=1)[:, :-1]


def predicted_grade(probs: np.ndarray) -> np.ndarray:
    """The grade index CORN predicts: how many P(grade > k) are above 0.5 (rank-consistent)."""
    return (exceed_probs(probs) > 0.5).sum(1).astype(int)


def expected_grade(probs: np.ndarray) -> np.ndarray:
    """The probability-weighted mean grade index of each item."""
    probs = np.asarray(probs, dtype=float)
    return probs @ np.arange(probs.shape[1], dtype=float)


def decide_findings(probs: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
    """Items x findings decisions (bool): each finding's probability at or above its threshold (default 0.5)."""
    probs = np.asarray(probs, dtype=float)
    t = np.full(probs.shape[1], DEFAULT_FINDING_THRESHOLD) if thresholds is None else np.asarray(thresholds)
    return probs >= t[None, :]
