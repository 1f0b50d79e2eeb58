"""Stand-in "train" tasks for sweep tests (imported by worker processes via $XRT_EXTRA_TASKS; no torch)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.runs import rundir
from core.runs.progress import Progress


def fake_train(params: dict, run_dir: Path, progress: Progress) -> dict:
    """Write what a finished run holds (config, history, valid predictions, metrics); accuracy grows with lr."""
    cfg = params["config"]
    folder = rundir.RunFolder(run_dir)
    rundir.write_json(folder.config, cfg)
    lr, epochs = float(cfg["train"]["lr"] or 1e-3), int(cfg["train"]["epochs"])
    fraction = float(cfg.get("data", {}).get("train_fraction") or 1.0)
    skill = min(0.95, 0.5 + 40 * lr) * (
        1 - 0.3 * (1 - fraction**0.5)
    )  # less data, less skill (1 at all of it)
    pd.DataFrame(
        {
            "epoch": range(epochs),
            "valid_loss": [1 / (e + 1) for e in range(epochs)],
            "balanced_accuracy": [skill * (e + 1) / epochs for e in range(epochs)],
            "accuracy": [skill * (e + 1) / epochs for e in range(epochs)],
        }
    ).to_csv(folder.history, index=False)
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b"] * 20)
    hit = rng.random(40) < skill
    p_b = np.where((labels == "b") == hit, 0.8, 0.2)
    pd.DataFrame(
        {
            "path": [f"x{i}.png" for i in range(40)],
            "label": labels,
            "pred": np.where(p_b > 0.5, "b", "a"),
            "prob_a": 1 - p_b,
            "prob_b": p_b,
        }
    ).to_csv(folder.predictions("valid"), index=False)
    rundir.write_json(folder.metrics, {"type": "single", "classes": ["a", "b"]})
    progress.update(force=True, pid=os.getpid())
    return {"lr": lr}


def scripted_value(lr: float) -> float:
    """The final validation metric a scripted trial reaches: highest (0.9) at lr = 1e-2, 0.5 far from it."""
    return 0.5 + 0.4 * float(np.exp(-((np.log10(lr) + 2.0) ** 2)))


def scripted(params: dict, run_dir: Path, progress: Progress) -> dict:
    """A trial whose metric the test decides: value(lr) * epoch / epochs, one history row and one report to
    the pruner per epoch (which may stop it), then a finished run folder with that value in metrics.json."""
    from core.train import pruning

    cfg = params["config"]
    folder = rundir.RunFolder(run_dir)
    rundir.write_json(folder.config, cfg)
    lr, epochs, metric = float(cfg["train"]["lr"]), int(cfg["train"]["epochs"]), params["metric"]
    value = 0.0
    for e in range(epochs):
        progress.check()
        value = scripted_value(lr) * (e + 1) / epochs
        pd.DataFrame({"epoch": [e], metric: [value]}).to_csv(
            folder.history, mode="a", header=e == 0, index=False
        )
        progress.update(force=True, pid=os.getpid(), epoch=e, n_epochs=epochs)
        pruning.report(params, run_dir, e + 1, value)
        time.sleep(float(os.environ.get("XRT_TEST_EPOCH_S", "0.05")))
    value = planted_predictions(folder, value)
    rundir.write_json(
        folder.metrics, {"type": "single", "classes": ["a", "b"], "metrics": {"valid": {metric: value}}}
    )
    return {"value": value}


def planted_predictions(folder: rundir.RunFolder, value: float, n: int = 100) -> float:
    """valid predictions with round(value * n) of the n items of each class right; returns their (balanced)
    accuracy."""
    k = int(round(value * n))
    labels = np.array(["a"] * n + ["b"] * n)
    right = np.tile(np.arange(n) < k, 2)
    p_b = np.where((labels == "b") == right, 0.8, 0.2)
    pd.DataFrame(
        {
            "path": [f"x{i}.png" for i in range(2 * n)],
            "label": labels,
            "pred": np.where(p_b > 0.5, "b", "a"),
            "prob_a": 1 - p_b,
            "prob_b": p_b,
        }
    ).to_csv(folder.predictions("valid"), index=False)
    return k / n


def hold(params: dict, run_dir: Path, progress: Progress) -> None:
    """Run until cancelled (a trial that keeps its slot)."""
    while True:
        progress.check()
        progress.update(pid=os.getpid())
        time.sleep(0.02)
