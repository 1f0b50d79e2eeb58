"""Temperature scaling: one number T fitted on held-out predictions, kept in the saved model, applied to its logits.

Softmax(z / T) with T > 1 softens an over-confident model and T < 1 sharpens an under-confident one; the predicted
class (argmax) and the ranking of images (ROC AUC) do not change, and for a binary model neither does the decision
at 0.5. T is fitted by minimising the negative log-likelihood on the validation split (k-fold: out-of-fold
predictions), never on the test set. Stored probabilities suffice: log p differs from the logits by a constant per
row, which softmax ignores. The record lives in the manifest's "calibration" key (JSON, no pickle); Predict, ONNX
export and evaluation read it through `of_manifest`. A task type is named so multi-label (sigmoid per label) and
ordinal models can add their own scaling beside "single" without changing the record.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.models.savedmodel import Manifest, record

KEY = "calibration"  # the manifest key that holds the record
METHOD = "temperature"
TASK_SINGLE = "single"  # softmax over the classes: one label per image
T_BOUNDS = (0.05, 20.0)  # search range of T (log-spaced)
MIN_ITEMS = 20  # fewer held-out items than this: no temperature is fitted (it would chase noise)
_EPS = 1e-12


@dataclass(frozen=True)
class Temperature:
    """A fitted temperature and what it was fitted on (the manifest's "calibration" record)."""

    temperature: float
    fitted_on: str  # "valid" or "oof" (out-of-fold)
    n: int  # held-out items it was fitted on
    nll_before: float
    nll_after: float
    method: str = METHOD
    task: str = TASK_SINGLE

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored under the manifest's "calibration" key."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Temperature:
        """The record from its JSON object; refuses a method or a temperature it cannot apply."""
        if d.get("method") != METHOD or d.get("task", TASK_SINGLE) != TASK_SINGLE:
            raise ValueError(f"unknown calibration {d.get('method')!r} for task {d.get('task')!r}")
        t = float(d["temperature"])
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"a temperature must be a positive number, got {t}")
        return cls(
            temperature=t,
            fitted_on=str(d.get("fitted_on", "")),
            n=int(d.get("n", 0)),
            nll_before=float(d.get("nll_before", math.nan)),
            nll_after=float(d.get("nll_after", math.nan)),
        )


def _log_probs(probs: np.ndarray) -> np.ndarray:
    """log of probabilities, clipped away from 0 (the logits up to a constant per row)."""
    return np.log(np.clip(np.asarray(probs, dtype=float), _EPS, 1.0))


def scale_probs(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities softmax(log p / T): what the model gives with its logits divided by T."""
    z = _log_probs(probs) / float(temperature)
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def nll(y_true: np.ndarray, probs: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes."""
    y = np.asarray(y_true, dtype=int)
    return float(-_log_probs(probs)[np.arange(len(y)), y].mean()) if len(y) else math.nan


def fit_temperature(y_true: np.ndarray, probs: np.ndarray, fitted_on: str = "valid") -> Temperature | None:
    """T minimising the NLL of held-out predictions (bounded search over log T).

    None with too few items, one class only, or an optimum at the search bound (held-out predictions without
    errors always prefer a sharper model: no temperature is then better than an extreme one)."""
    from scipy.optimize import minimize_scalar

    y, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=float)
    if len(y) < MIN_ITEMS or len(np.unique(y)) < 2:
        return None
    lo, hi = (math.log(b) for b in T_BOUNDS)

    def loss(s: float) -> float:
        return nll(y, scale_probs(probs, math.exp(s)))

    res = minimize_scalar(loss, bounds=(lo, hi), method="bounded")
    if min(loss(lo), loss(hi)) <= res.fun + 1e-9:  # as good at an edge: the data do not pin T down
        return None
    t = float(math.exp(res.x))
    return Temperature(t, fitted_on, int(len(y)), nll(y, probs), nll(y, scale_probs(probs, t)))


def of_manifest(manifest: Manifest) -> Temperature | None:
    """The temperature a saved model carries, None when it has none (opted out, or saved before calibration)."""
    record = manifest.extra.get(KEY)
    return Temperature.from_dict(record) if isinstance(record, Mapping) else None


def with_temperature(manifest: Manifest, temperature: Temperature | None) -> Manifest:
    """The manifest with this temperature recorded (None: without one)."""
    extra = {k: v for k, v in manifest.extra.items() if k != KEY}
    if temperature is not None:
        extra[KEY] = temperature.to_dict()
    return dataclasses.replace(manifest, extra=extra)


def stamp(model_dir: str | Path, temperature: Temperature | None) -> None:
    """Record a temperature in a saved model's manifest (the weights and their sha256 stay as they are)."""
    record(model_dir, KEY, temperature.to_dict() if temperature is not None else None)


def divisor(manifest: Manifest) -> float:
    """What the model's logits are divided by before softmax: its temperature, else 1."""
    t = of_manifest(manifest)
    return t.temperature if t is not None else 1.0


class Scaled(torch.nn.Module):
    """A network whose logits are divided by a fixed temperature (what ONNX export writes)."""

    def __init__(self, model: torch.nn.Module, temperature: float):
        super().__init__()
        self.model, self.temperature = model, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits / T."""
        return self.model(x) / self.temperature
