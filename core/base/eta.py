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


class Rate:
    """Seconds per unit of work, exponentially smoothed (`alpha`: the weight of the newest measurement)."""

    def __init__(self, alpha: float = 0.3):
        self.alpha = alpha
        self.value: float | None = None

    def add(self, seconds: float, units: float) -> None:
        """Fold in `units` of work that took `seconds`."""
        if units <= 0 or not math.isfinite(seconds):
            return
        per = seconds / units
        self.value = per if self.value is None else self.alpha * per + (1 - self.alpha) * self.value

    def left(self, units: float) -> float | None:
        """Seconds for `units` more at the smoothed rate; None before any measurement."""
        return None if self.value is None else max(0.0, self.value * units)


class EpochPace:
    """Time left of a fit whose first epoch is slow by design (it fills the decode cache): the first epoch is
    timed apart, later epochs feed a smoothed per-epoch rate, and the estimate uses that rate once it exists."""

    def __init__(self, n_epochs: int, t0: float | None = None, alpha: float = 0.5):
        self.n_epochs, self.t0 = n_epochs, t0
        self.first: float | None = None
        self.later = Rate(alpha)
        self.epoch, self.started = -1, 0.0
        self.ended: float | None = None  # when the current epoch ended (validation included), if it has

    def tick(self, now: float, epoch: int, frac: float) -> float | None:
        """Seconds left at time `now`, `frac` (0..1) of the way through `epoch` (0-based, counted over the run)."""
        if epoch != self.epoch:
            if self.ended is None and self.epoch >= 0:
                self.end(now)
            start = self.ended if self.ended is not None else self.t0 if self.t0 is not None else now
            self.epoch, self.started, self.ended = epoch, start, None
        in_epoch, rest = now - self.started, max(0, self.n_epochs - epoch - 1)
        pace = in_epoch / frac if frac > 0 else None  # this epoch's length at its training batches' pace
        rate = self.later.value
        if (
            rate is None and self.first is not None
        ):  # second epoch: the first's length until half of it is done
            rate = pace if pace is not None and frac >= 0.5 else self.first
        if rate is None:  # still in the first epoch: its own pace, for itself and (pessimistically) the rest
            return None if pace is None else pace - in_epoch + rest * pace
        # the rate's epoch length includes validation, which the batches do not show; an epoch running slower
        # than the rate says (unfrozen after frozen) is followed at its own pace
        now_left = max(rate, pace if pace is not None and frac >= 0.5 else 0.0) - in_epoch
        return max(0.0, now_left) + rest * rate

    def end(self, now: float) -> None:
        """The current epoch (validation included) ended at `now`: the first is kept apart, later ones smoothed."""
        if self.epoch < 0 or self.ended is not None:
            return
        self.ended, seconds = now, now - self.started
        if self.first is None:
            self.first = seconds
        else:
            self.later.add(seconds, 1)
