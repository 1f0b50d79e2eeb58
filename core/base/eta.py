"""Time estimates for long steps (LR finder, each fold, the whole job) from progress fields: plain numbers."""

from __future__ import annotations

import math
from typing import Any


def eta(elapsed: float | None, done: float, total: float) -> float | None:
    """Seconds left at the pace so far; None until some work is done (no pace yet)."""
    if elapsed is None or not math.isfinite(elapsed) or done <= 0 or total <= 0:
        return None
    return max(0.0, elapsed / done * (total - min(done, total)))


def step_fraction(prog: dict[str, Any]) -> float | None:
    """How far the current fit is (0..1): from its elapsed time and ETA, else from epochs and batches."""
    elapsed, left = prog.get("elapsed_s"), prog.get("eta_s")
    if elapsed is not None and left is not None and elapsed + left > 0:
        return min(1.0, elapsed / (elapsed + left))
    n_epochs, n_batches = int(prog.get("n_epochs") or 0), int(prog.get("n_batches") or 0)
    if not n_epochs:
        return None
    batch = int(prog.get("batch") or 0) / n_batches if n_batches else 0.0
    return min(1.0, (int(prog.get("epoch") or 0) + batch) / n_epochs)


def job_eta(prog: dict[str, Any], job_elapsed: float | None) -> float | None:
    """Whole-job time left for a k-fold run: the folds done plus this fold's fraction, at the job's pace so far."""
    n_folds = int(prog.get("n_folds") or 0)
    if not n_folds or prog.get("fold") is None:
        return None
    frac = step_fraction(prog)
    if frac is None:
        return None
    return eta(job_elapsed, int(prog["fold"]) + frac, n_folds)


def folds_eta(folds: list[tuple[str, dict[str, Any]]]) -> float | None:
    """Time left for folds running as parallel jobs, from (status, progress) per fold: the slowest running
    fold's time left, plus the queued folds in rounds of as many as run now at a running fold's length."""
    running = [p for s, p in folds if s == "running"]
    queued = sum(1 for s, _ in folds if s == "queued")
    if not running:
        return 0.0 if not queued and folds else None
    lefts = [float(p["eta_s"]) for p in running if p.get("eta_s") is not None]
    if len(lefts) < len(running):
        return None
    lengths = [float(p.get("elapsed_s") or 0.0) + left for p, left in zip(running, lefts)]
    return max(lefts) + math.ceil(queued / len(running)) * sum(lengths) / len(lengths)
