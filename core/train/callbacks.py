"""Training talks to fastai through small callbacks: EpochClock, TrainProgress (progress + cancel),
HistoryCSV, BestCheckpoint, EarlyStop; the LR finder shares the cancel part (LrFindProgress)."""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastai.callback.core import Callback, CancelFitException

from core.base.eta import EpochPace, eta
from core.base.fsutil import atomic_writer
from core.runs import rundir
from core.runs.progress import Progress
from core.train.learner import LOWER_IS_BETTER, TrainingError

# ---------------------------------------------------------------- callbacks (each one job, as fastai's own)


class EpochClock(Callback):
    """Numbers epochs continuously across fine_tune's two fits (frozen body, then all) and says which fit runs."""

    order = 55  # before the callbacks below read it

    def __init__(self, replay: list[dict[str, Any]] | None = None):
        self.offset, self.fits, self.cut_short = 0, 0, False
        self.replay = (
            replay or []
        )  # a resumed run: history rows of the epochs it skips (core.train.resume_state)

    def before_fit(self):
        """Count fits (fine_tune: frozen, then unfrozen)."""
        self.fits += 1
        self.cut_short = False

    def after_cancel_fit(self):
        """The fit ended before its last epoch (cancel or early stop)."""
        self.cut_short = True

    def after_fit(self):
        """Carry the epoch numbering into the next fit."""
        self.offset += self.epoch + 1 if self.cut_short else self.n_epoch

    def now(self) -> int:
        """This epoch's number, counted over every fit of the run (0-based)."""
        return self.offset + self.epoch

    def replaying(self) -> bool:
        """True during an epoch a resumed run skips (its row comes from history.csv)."""
        return self.now() < len(self.replay)

    def frozen(self) -> bool:
        """True during fine_tune's first (frozen body) fit."""
        return self.fits == 1 and self.learn.opt is not None and self.learn.opt.frozen_idx > 0


class CancelOnStop(Callback):
    """Stops within a batch once cancel was asked (STOP file or job store)."""

    order = 60  # after Recorder, so the batch's smoothed loss is there for subclasses to report

    def __init__(self, progress: Progress):
        self.progress, self.cancelled, self.t0 = progress, False, time.time()

    def after_batch(self):
        """Raise CancelFitException when cancel was asked."""
        if self.progress.cancelled():
            self.cancelled = True
            raise CancelFitException()


class TrainProgress(CancelOnStop):
    """progress.json while training: batch, epoch, loss, elapsed and ETA; written at once at each epoch's end."""

    order = (
        63  # its epoch-end write comes after the history row and the checkpoint news, before early stopping
    )

    def __init__(
        self, progress: Progress, clock: EpochClock, n_epochs: int, fold: int | None = None, n_folds: int = 0
    ):
        super().__init__(progress)
        self.clock, self.n_epochs, self.fold, self.n_folds = clock, n_epochs, fold, n_folds
        self.pace = EpochPace(n_epochs, t0=self.t0)

    def after_batch(self):
        """Report the batch (training batches only)."""
        super().after_batch()
        if not self.training:
            return
        now = time.time()
        elapsed = now - self.t0
        self.progress.update(
            phase="training",
            fold=self.fold,
            n_folds=self.n_folds,
            epoch=self.clock.now(),
            n_epochs=self.n_epochs,
            batch=self.iter + 1,
            n_batches=self.n_iter,
            train_loss=float(self.smooth_loss),
            eta_s=self.pace.tick(now, self.clock.now(), (self.iter + 1) / max(1, self.n_iter)),
            elapsed_s=elapsed,
        )

    def after_epoch(self):
        """Write the epoch's fields (its row, the best epoch so far) now; the epoch's length goes to the pace."""
        if not self.clock.replaying():
            self.pace.end(time.time())
        self.progress.update(force=True)


class LrFindProgress(CancelOnStop):
    """progress.json for the LR finder: iteration, loss, elapsed and ETA."""

    def __init__(self, progress: Progress, num_it: int):
        super().__init__(progress)
        self.num_it = num_it

    def after_batch(self):
        """Report the iteration."""
        super().after_batch()
        if self.training:
            elapsed = time.time() - self.t0
            self.progress.update(
                phase="lr_find",
                batch=self.train_iter,
                n_batches=self.num_it,
                train_loss=float(self.smooth_loss),
                elapsed_s=elapsed,
                eta_s=eta(elapsed, self.train_iter, self.num_it),
            )


def epoch_values(recorder) -> dict[str, float]:
    """The last epoch's losses and metrics by name, as plain floats (NaN when missing)."""
    return {n: _num(v) for n, v in zip(recorder.metric_names[1:-1], recorder.values[-1])}


class HistoryCSV(Callback):
    """One row per epoch in history.csv (epoch, phase, losses, metrics, time; fold first in k-fold runs)."""

    order = 61  # after Recorder, so this epoch's metrics are there

    def __init__(self, path: Path, progress: Progress, clock: EpochClock, fold: int | None = None):
        self.file, self.progress, self.clock, self.fold, self.t0 = (
            Path(path),
            progress,
            clock,
            fold,
            time.time(),
        )
        self.rows: list[dict[str, Any]] = []

    def after_epoch(self):
        """Record the epoch's row (in memory, in history.csv and as progress's last_epoch)."""
        if self.clock.replaying():  # a resumed run's skipped epoch: its row is already in history.csv
            self.rows.append(self.clock.replay[self.clock.now()])
            self.progress.update(last_epoch=self.rows[-1])
            return
        row = {
            "epoch": self.clock.now(),
            "phase": "frozen" if self.clock.frozen() else "unfrozen",
            **epoch_values(self.recorder),
            "time_s": round(time.time() - self.t0, 2),
        }
        if self.fold is not None:
            row = {"fold": self.fold, **row}
        self.rows.append(row)
        append_csv_row(self.file, row)
        self.progress.update(last_epoch=row)


def append_csv_row(path: Path, row: dict[str, Any]) -> None:
    """Append a row to a CSV file, writing the header when the file is new (an existing header decides columns)."""
    new = not path.exists()
    if not new:
        with path.open() as f:
            header = next(csv.reader(f), [])
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row) if new else header, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


class _Tracker(Callback):
    """Follows the monitored value over the epochs (valid_loss when it is missing) and whether this epoch beat it."""

    order = 62

    def __init__(self, monitor: str, clock: EpochClock):
        self.monitor, self.clock, self.best, self.best_epoch, self.new_best = monitor, clock, None, -1, False

    def after_epoch(self):
        """Compare this epoch's value with the best so far."""
        values = (
            self.clock.replay[self.clock.now()] if self.clock.replaying() else epoch_values(self.recorder)
        )
        value, lower = values.get(self.monitor), self.monitor in LOWER_IS_BETTER
        if value is None or math.isnan(value):
            value, lower = values.get("valid_loss"), True
        self.new_best = (
            value is not None
            and not math.isnan(value)
            and (self.best is None or (value < self.best if lower else value > self.best))
        )
        if self.new_best:
            self.best, self.best_epoch = float(value), self.clock.now()


class BestCheckpoint(_Tracker):
    """The best epoch's weights in one safetensors file (written atomically, with its checksum and epoch; never a
    pickle).

    An epoch that improves is copied in memory; the file is written when that costs at most WRITE_SHARE of the
    training time since the last write (the first best is written at once), before the resume state is written,
    and when the fit ends or fails (`flush`). On small images an epoch takes seconds and writing ~45 MB took
    10-15 % of it (bench/README.md); a run killed outright loses at most the best epochs since the last write, and
    the file says which epoch it holds (core.train.finish reads it).
    """

    WRITE_SHARE = 0.05

    def __init__(self, path: Path, progress: Progress, monitor: str, clock: EpochClock):
        super().__init__(monitor, clock)
        self.file, self.progress = Path(path), progress
        self.held: dict[str, torch.Tensor] | None = None  # the best weights not yet written
        self.held_epoch = -1
        # seconds of epochs since the last write (None: nothing written yet)
        self.trained_s: float | None = None
        self.last_s, self.t0 = 0.0, 0.0  # how long the last write took; when this epoch began

    def before_epoch(self):
        """Note when the epoch begins."""
        self.t0 = time.perf_counter()

    def after_epoch(self):
        """Keep the weights when the monitored value improved, write them when due; report the best epoch so far."""
        super().after_epoch()
        if not self.clock.replaying():  # a replayed best is already in the file
            if self.new_best:
                self.held = {
                    k: v.detach().to("cpu", copy=True) for k, v in self.learn.model.state_dict().items()
                }
                self.held_epoch = self.clock.now()
            if self.trained_s is not None:
                self.trained_s += time.perf_counter() - self.t0
            if self.trained_s is None or self.trained_s * self.WRITE_SHARE >= self.last_s:
                self.flush()
        self.progress.update(best_epoch=self.best_epoch, best_value=self.best, monitor=self.monitor)

    def after_fit(self):
        """Write what is held (fine_tune's frozen fit ends here too)."""
        self.flush()

    def flush(self) -> None:
        """Write the held best weights, if any, to the file."""
        if self.held is None:
            return
        start = time.perf_counter()
        write_state_atomic(self.held, self.file, epoch=self.held_epoch)
        self.held, self.trained_s, self.last_s = None, 0.0, time.perf_counter() - start

    def restore(self, model: torch.nn.Module) -> None:
        """Load the best weights back into the model (what is still held is written first, then read back)."""
        self.flush()
        if self.file.exists():
            from safetensors.torch import load_file

            model.load_state_dict(load_file(str(self.file), device=str(next(model.parameters()).device)))


class EarlyStop(_Tracker):
    """Ends training after `patience` epochs without a new best (never in fine_tune's frozen fit)."""

    order = 64  # last: the epoch is recorded, checkpointed and reported before the fit ends

    def __init__(self, monitor: str, patience: int, clock: EpochClock):
        super().__init__(monitor, clock)
        self.patience, self.wait, self.stopped = patience, 0, False

    def before_fit(self):
        """Each fit starts with full patience."""
        self.wait = 0

    def after_epoch(self):
        """Count epochs without a new best; stop at `patience`."""
        super().after_epoch()
        self.wait = 0 if self.new_best else self.wait + 1
        if self.patience and not self.clock.frozen() and self.wait >= self.patience:
            self.stopped = True
            raise CancelFitException()


class PruneTrial(Callback):
    """Reports a sweep trial's metric after each epoch (1-based, frozen epochs counted) to `report`, which
    raises to stop the trial (core.train.pruning)."""

    order = 65  # after the epoch is recorded, checkpointed and reported, and after early stopping

    def __init__(self, report: Callable[[int, float], None], metric: str):
        self.report, self.metric = report, metric

    def after_epoch(self):
        """Hand this epoch's metric to the pruner."""
        clock = next(cb for cb in self.learn.cbs if isinstance(cb, EpochClock))
        self.report(clock.now() + 1, epoch_values(self.recorder).get(self.metric, math.nan))


def _num(v) -> float:
    """A recorder value as a plain float (NaN when missing)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def save_state_atomic(model: torch.nn.Module, path: Path) -> None:
    """Write a model's weights as safetensors through a synced temp file and a rename (never a half-written file),
    with their checksum inside (core.models.checkpoints)."""
    write_state_atomic(model.state_dict(), path)


def write_state_atomic(state: dict[str, torch.Tensor], path: Path, epoch: int | None = None) -> None:
    """save_state_atomic for a state dict; `epoch`: the epoch the weights are from, written with them."""
    from safetensors.torch import save_file

    from core.models.checkpoints import checkpoint_metadata

    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    try:
        with atomic_writer(path) as tmp:
            save_file(state, str(tmp), metadata=checkpoint_metadata(state, epoch))
    except OSError as err:
        raise TrainingError(f"could not write checkpoint {Path(path).name}: {err.strerror or err}") from err


@dataclass
class Monitors:
    """The callbacks of one training fit, sharing one epoch clock."""

    clock: EpochClock
    progress: TrainProgress
    history: HistoryCSV
    checkpoint: BestCheckpoint
    early_stop: EarlyStop
    extra: list[Callback] = field(default_factory=list)  # a sweep trial's PruneTrial; saving / resuming state

    def callbacks(self) -> list[Callback]:
        """All of them, for fit(cbs=...)."""
        return [self.clock, self.progress, self.history, self.checkpoint, self.early_stop, *self.extra]


def monitors(
    run: rundir.RunFolder,
    progress: Progress,
    t,
    fold: int | None = None,
    n_folds: int = 0,
    extra: Sequence[Callback] = (),
    replay: list[dict[str, Any]] | None = None,
) -> Monitors:
    """Progress + cancel, history.csv, best checkpoint and early stopping for one fit of a run (t: TrainConfig);
    `replay`: the history rows of the epochs a resumed run skips."""
    clock = EpochClock(replay)
    return Monitors(
        clock,
        TrainProgress(progress, clock, t.planned_epochs(), fold, n_folds),
        HistoryCSV(run.history, progress, clock, fold),
        BestCheckpoint(run.checkpoint(fold), progress, t.monitor, clock),
        EarlyStop(t.monitor, t.early_stop_patience, clock),
        list(extra),
    )
