"""Time estimates for long steps (LR finder, each fold, the whole job) from progress fields: plain numbers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol


def eta(elapsed: float | None, done: float, total: float) -> float | None:
    """Seconds left at the pace so far; None until some work is done (no pace yet)."""
    if elapsed is None or not math.isfinite(elapsed) or done <= 0 or total <= 0:
        return None
    return max(0.0, elapsed / done * (total - min(done, total)))


class Pace(Protocol):
    """The progress fields time estimates read (a `core.runs.progress.ProgressRecord` has them)."""

    @property
    def elapsed_s(self) -> float | None: ...
    @property
    def eta_s(self) -> float | None: ...
    @property
    def epoch(self) -> int: ...
    @property
    def n_epochs(self) -> int: ...
    @property
    def batch(self) -> int: ...
    @property
    def n_batches(self) -> int: ...
    @property
    def fold(self) -> int | None: ...
    @property
    def n_folds(self) -> int: ...


def step_fraction(prog: Pace) -> float | None:
    """How far the current fit is (0..1): from its elapsed time and ETA, else from epochs and batches."""
    elapsed, left = prog.elapsed_s, prog.eta_s
    if elapsed is not None and left is not None and elapsed + left > 0:
        return min(1.0, elapsed / (elapsed + left))
    if not prog.n_epochs:
        return None
    batch = prog.batch / prog.n_batches if prog.n_batches else 0.0
    return min(1.0, (prog.epoch + batch) / prog.n_epochs)


def job_eta(prog: Pace, job_elapsed: float | None) -> float | None:
    """Whole-job time left for a k-fold run: the folds done plus this fold's fraction, at the job's pace so far."""
    if not prog.n_folds or prog.fold is None:
        return None
    frac = step_fraction(prog)
    if frac is None:
        return None
    return eta(job_elapsed, prog.fold + frac, prog.n_folds)


def folds_eta(folds: Sequence[tuple[str, Pace]]) -> float | None:
    """Time left for folds running as parallel jobs, from (status, progress) per fold: the slowest running
    fold's time left, plus the queued folds in rounds of as many as run now at a running fold's length."""
    running = [p for s, p in folds if s == "running"]
    queued = sum(1 for s, _ in folds if s == "queued")
    if not running:
        return 0.0 if not queued and folds else None
    lefts = [p.eta_s for p in running if p.eta_s is not None]
    if len(lefts) < len(running):
        return None
    lengths = [(p.elapsed_s or 0.0) + left for p, left in zip(running, lefts)]
    return max(lefts) + math.ceil(queued / len(running)) * sum(lengths) / len(lengths)
