"""A k-fold run used as one model: the mean of its fold models' probabilities (each calibrated with the temperature
the out-of-fold predictions fitted), with the same preprocessing, decoding, tables and threshold as a Predictor.

The fold models of one run share their decoding (one RunConfig), so every image is decoded once and each fold
model normalises and scores the same tensor. Test-time augmentation (core.evaluation.tta) applies to each member. Conformal
prediction sets are not offered for an ensemble: the held-out scores the fold models carry are those of single
folds, not of their mean, so the coverage guarantee would not be the ensemble's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.evaluation.conformal import SetRule
from core.evaluation.predict import Predictor
from core.models.fold_task import ensemble_manifest
from core.models.savedmodel import Manifest
from core.models.weightfiles import ModelFileError
from core.runs import rundir

REF_PREFIX = (
    "ensemble:"  # a model reference naming a k-fold run's fold models as one model (the app's pickers)
)


def ensemble_ref(run_dir: str | Path) -> str:
    """The model reference of a k-fold run's fold ensemble, usable wherever the app takes a model path."""
    return f"{REF_PREFIX}{Path(run_dir)}"


def ref_run(model: str | Path) -> Path | None:
    """The run folder an ensemble reference names; None for an ordinary model path."""
    text = str(model)
    return Path(text[len(REF_PREFIX) :]) if text.startswith(REF_PREFIX) else None


def member_path(model: str | Path) -> str:
    """The model whose manifest describes `model`: for an ensemble its first fold model (classes, task, input)."""
    run = ref_run(model)
    return str(fold_model_dirs(run)[0]) if run is not None else str(model)


def model_dirs(model: str | Path) -> list[Path]:
    """The model folders behind a reference: every fold's for an ensemble, else the one (for cache keys)."""
    run = ref_run(model)
    if run is not None:
        return fold_model_dirs(run)
    p = Path(model)
    return [p if p.is_dir() else p.parent]


def model_choices(run_dir: str | Path) -> dict[str, str]:
    """A run's models by name ("final model", "fold 1", ...) plus, with two or more fold models, the ensemble."""
    run = rundir.RunFolder(run_dir)
    found = {k: str(v) for k, v in run.models().items()}
    k = len(list(run.fold_models()))
    if k >= 2:
        found[f"all {k} folds as one model (average)"] = ensemble_ref(run.path)
    return found


def load_predictor(
    model: str | Path, device: str | None = None, calibrated: bool = True, site: str = ""
) -> Predictor:
    """A Predictor for a model path (with a site's temperature when named), or an EnsemblePredictor for an
    ensemble reference (a site temperature belongs to one model, so none is applied to an ensemble)."""
    run = ref_run(model)
    if run is not None:
        if site:
            raise ValueError("a site's temperature is kept by one model, not by a fold ensemble")
        return EnsemblePredictor(run, device=device, calibrated=calibrated)
    return Predictor(model, device=device, calibrated=calibrated, site=site)


def fold_model_dirs(run_dir: str | Path) -> list[Path]:
    """The saved fold models of a k-fold run, in fold order; a clear error when there are none."""
    run = rundir.RunFolder(run_dir)
    dirs = [p for _, p in run.fold_models()]
    if len(dirs) < 2:
        raise ModelFileError(
            f"{run.path.name} has {len(dirs)} saved fold model(s): an ensemble needs a k-fold run's folds"
        )
    return dirs


def decoding(m: Manifest) -> tuple:
    """What the members of an ensemble must share: classes, task and how a file becomes the 0..1 tensor. The
    normalisation may differ (from-scratch folds measure it on their own training images): each member applies its
    own to the shared tensor."""
    return (m.classes, m.task_type, m.img_size, m.n_in, m.channels, m.resize, m.window, m.frame)


class EnsemblePredictor(Predictor):
    """The fold models of a k-fold run as one Predictor: probabilities are the mean of the folds' (softmax, a sigmoid
    per finding or the grade probabilities, each by its own model), decided as one model's are (argmax / binary
    threshold, the grade rule on the mean, multi-label at the run's thresholds: core.models.fold_task)."""

    def __init__(
        self,
        run_dir: str | Path,
        device: str | None = None,
        calibrated: bool = True,
        task: dict[str, Any] | None = None,
    ):
        """Load every fold model; the first one's manifest gives the decoding, all must agree on it (`decoding`);
        `task`: the run's task record (default: its metrics.json's)."""
        dirs = fold_model_dirs(run_dir)
        super().__init__(dirs[0], device=device, calibrated=calibrated)
        self.members = [self] + [
            Predictor(d, device=str(self.device), calibrated=calibrated) for d in dirs[1:]
        ]
        for d, m in zip(dirs[1:], self.members[1:]):
            if decoding(m.manifest) != decoding(self.manifest):
                raise ModelFileError(
                    f"{d.name} does not share the classes or preprocessing of {dirs[0].name}"
                )
        self.conformal = None  # see the module's docstring
        self.manifest = ensemble_manifest(self.manifest, run_dir, task)

    @property
    def n_members(self) -> int:
        """How many fold models are averaged."""
        return len(self.members)

    def use_sets(self, rule: SetRule | None) -> None:
        """Prediction sets are refused for an ensemble (no held-out scores of the mean exist)."""
        if rule is not None:
            raise ValueError(
                "prediction sets are calibrated for single models: use the final model or one fold model for sets"
            )
        self.set_rule = None

    @torch.no_grad()
    def probs(self, batch: torch.Tensor, tta: bool = False) -> np.ndarray:
        """The mean of the fold models' probabilities for a batch of preprocessed tensors."""
        own = Predictor.probs(self, batch, tta=tta)
        others = [Predictor.probs(m, batch, tta=tta) for m in self.members[1:]]
        return np.mean([own, *others], axis=0)
