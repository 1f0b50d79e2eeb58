"""A k-fold run's fold models as ONE ONNX graph that averages them (the app's fold ensemble,
core.evaluation.ensemble), for runtimes other than this app.

The graph takes the input the first fold's metadata describes (its normalisation) and gives each member the input
its own training normalised (from-scratch folds measure their own statistics). Each member's probabilities are
computed with its temperature and averaged; the output `logits` is the log of that mean (single-label: softmax of
it gives the mean back exactly) or its logit (multi-label: a sigmoid each gives it back), so a consumer treats the
file like a single model's. Ordinal (CORN) ensembles are not exported: a mean of grade probabilities has no such
output. The metadata says it is an ensemble, of how many folds, and how they were combined.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.models import heads, onnx_export, savedmodel, temperature
from core.models.fold_task import ensemble_manifest
from core.models.savedmodel import Manifest
from core.models.weightfiles import ModelFileError
from core.runs.rundir import RunFolder

EPS = 1e-7  # keeps log(0) finite


def _stats(m: Manifest, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) as 1 x C x 1 x 1 tensors; (0, 1) for a model trained without normalisation."""
    if m.stats is None:
        return torch.zeros(1, n_in, 1, 1), torch.ones(1, n_in, 1, 1)
    return torch.tensor(m.mean).view(1, -1, 1, 1), torch.tensor(m.std).view(1, -1, 1, 1)


class MeanOfFolds(nn.Module):
    """The fold models as one module: input normalised as the first fold's, output as `logits` (module docstring)."""

    means: torch.Tensor
    stds: torch.Tensor

    def __init__(self, models: list[nn.Module], manifests: list[Manifest]):
        """Members, each with its manifest (normalisation, temperature); all share the task."""
        super().__init__()
        self.members = nn.ModuleList(models)
        self.task = manifests[0].task_type
        stats = [_stats(m, manifests[0].n_in) for m in manifests]
        self.register_buffer("means", torch.stack([mean for mean, _ in stats]))  # k x 1 x C x 1 x 1
        self.register_buffer("stds", torch.stack([std for _, std in stats]))
        self.temps = [temperature.divisor(m) for m in manifests]

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the members' (calibrated) probabilities for an input normalised as the first fold's."""
        raw = x * self.stds[0] + self.means[0]
        out = []
        for i, model in enumerate(self.members):
            xi = (raw - self.means[i]) / self.stds[i]
            out.append(heads.activation(self.task, model(xi) / self.temps[i]))
        return torch.stack(out).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """log of the mean probabilities (single-label) or their logit (multi-label)."""
        p = self.probs(x).clamp(EPS, 1 - EPS)
        return torch.log(p) if self.task == "single" else torch.log(p) - torch.log1p(-p)


def load_folds(run_dir: str | Path) -> tuple[MeanOfFolds, list[Manifest]]:
    """The fold models of a k-fold run as a MeanOfFolds (a clear error without two fold models, or for ordinal)."""
    dirs = [p for _, p in RunFolder(run_dir).fold_models()]
    if len(dirs) < 2:
        raise ModelFileError(
            f"{Path(run_dir).name} has {len(dirs)} saved fold model(s): no ensemble to export"
        )
    loaded = [savedmodel.load_model(d) for d in dirs]
    manifests = [m for _, m in loaded]
    if manifests[0].task_type == "ordinal":
        raise ModelFileError("ordinal fold ensembles are not exported to ONNX: export one fold model instead")
    first = manifests[0]
    for d, m in zip(dirs, manifests):
        if (m.classes, m.task_type, m.img_size, m.n_in) != (
            first.classes,
            first.task_type,
            first.img_size,
            first.n_in,
        ):
            raise ModelFileError(f"{d.name} does not share the classes or input of {dirs[0].name}")
    manifests[0] = ensemble_manifest(first, run_dir)  # multi-label: the metadata's thresholds are the run's
    return MeanOfFolds([mod.eval() for mod, _ in loaded], manifests).eval(), manifests


def ensemble_metadata(manifests: list[Manifest], threshold: float | None) -> dict[str, str]:
    """The first fold's ONNX metadata, with the temperature applied inside and what the ensemble is."""
    meta = onnx_export.onnx_metadata(manifests[0], threshold)
    combine = (
        "softmax of 'logits' = the mean of the folds' calibrated probabilities"
        if manifests[0].task_type == "single"
        else "sigmoid of each 'logits' entry = the mean of the folds' calibrated probabilities"
    )
    meta.update(
        temperature=json.dumps(1.0),  # each fold's own is applied inside the graph
        ensemble=json.dumps({"members": len(manifests), "combine": combine}),
        output=json.dumps(f"logits: {combine} (the fold ensemble of {len(manifests)} models)"),
    )
    return meta


def export_ensemble_onnx(
    run_dir: str | Path, out_path: str | Path, verify: bool = True, threshold: float | None = None
) -> dict[str, Any]:
    """Export a k-fold run's fold ensemble as one ONNX graph; checked against PyTorch with onnxruntime."""
    module, manifests = load_folds(run_dir)
    result = onnx_export.export_onnx(
        module,
        manifests[0],
        out_path,
        verify=verify,
        threshold=threshold,
        metadata=ensemble_metadata(manifests, threshold),
    )
    return {**result, "members": len(manifests)}
