"""The progress channel of a running task: the writer (`Progress`), its typed record (`ProgressRecord`), and reads.

A task reports through `Progress` (progress.json, atomic and throttled; log.txt; cancel by the STOP file or the job
store's flag). Whoever shows progress (the run view, the LR finder's bar, the CLI's progress line, experiments, time
estimates) reads a `ProgressRecord`: typed fields with defaults, so a file from an older version or one caught before
training starts reads the same way. progress.json keeps its format: one JSON object of the fields written so far.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from core.runs import rundir

__all__ = ["JobCancelled", "Progress", "ProgressRecord", "read_progress"]


class JobCancelled(Exception):
    """Raised by a task (or by the worker) to end a job as "cancelled"."""


def _int(v: Any) -> int | None:
    """An int from a JSON value (bools and non-numbers give None)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        return int(float(v))
    except (TypeError, ValueError, OverflowError):
        return None


def _float(v: Any) -> float | None:
    """A float from a JSON value (None stays None; NaN is kept: a diverged loss says so)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class ProgressRecord:
    """What progress.json says; every field has a default, so a missing key reads as "not reported yet"."""

    written: bool = False  # False: no progress.json yet (or unreadable)
    job_id: str = ""
    updated: float | None = None  # time of the last write (epoch seconds)
    phase: str = ""  # starting / scanning / training / lr_find / testing / folds / combining / done
    message: str = ""
    fold: int | None = None  # 0-based fold being trained (k-fold)
    n_folds: int = 0
    folds_done: int | None = None
    per_fold: list[dict[str, Any]] = field(default_factory=list)
    epoch: int = 0  # 0-based, counted over every fit of the run
    n_epochs: int = 0  # 0: not training epochs (yet)
    batch: int = 0  # batches (LR finder: steps) done in this epoch
    n_batches: int = 0  # 0: not known yet
    train_loss: float | None = None  # smoothed
    elapsed_s: float | None = None  # of the current fit (or LR finder)
    eta_s: float | None = None  # its time left; None until there is a pace
    last_epoch: dict[str, Any] = field(default_factory=dict)  # the last history.csv row
    best_epoch: int | None = None
    best_value: float | None = None
    monitor: str = ""
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # fields a task adds of its own

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ProgressRecord:
        """The record of a progress.json object; missing or ill-typed keys take their defaults, unknown ones go to extra."""
        d = dict(data or {})
        known = {f.name for f in fields(cls)} - {"written", "extra"}
        n = {
            k: _int(d.get(k))
            for k in ("fold", "n_folds", "folds_done", "epoch", "n_epochs", "batch", "n_batches")
        }
        n.update({k: _int(d.get(k)) for k in ("best_epoch", "pid")})
        x = {k: _float(d.get(k)) for k in ("updated", "train_loss", "elapsed_s", "eta_s", "best_value")}
        per_fold, last = d.get("per_fold"), d.get("last_epoch")
        return cls(
            written=bool(d),
            job_id=str(d.get("job_id") or ""),
            updated=x["updated"],
            phase=str(d.get("phase") or ""),
            message=str(d.get("message") or ""),
            fold=n["fold"],
            n_folds=n["n_folds"] or 0,
            folds_done=n["folds_done"],
            per_fold=[r for r in per_fold if isinstance(r, dict)] if isinstance(per_fold, list) else [],
            epoch=n["epoch"] or 0,
            n_epochs=n["n_epochs"] or 0,
            batch=n["batch"] or 0,
            n_batches=n["n_batches"] or 0,
            train_loss=x["train_loss"],
            elapsed_s=x["elapsed_s"],
            eta_s=x["eta_s"],
            last_epoch=dict(last) if isinstance(last, dict) else {},
            best_epoch=n["best_epoch"],
            best_value=x["best_value"],
            monitor=str(d.get("monitor") or ""),
            pid=n["pid"],
            extra={k: v for k, v in d.items() if k not in known},
        )

    @classmethod
    def read(cls, run_dir: str | os.PathLike) -> ProgressRecord:
        """The record of a run folder's progress.json (an empty one when absent or unreadable)."""
        return cls.from_dict(read_progress(run_dir))

    def to_dict(self) -> dict[str, Any]:
        """The fields as progress.json holds them (extra fields merged back; `from_dict` reads it back equal)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("written", "extra")}
        return {**out, **self.extra}

    def last_valid_loss(self) -> float | None:
        """The last epoch's validation loss (None when not reported or not a number)."""
        value = _float(self.last_epoch.get("valid_loss"))
        return value if value is not None and not math.isnan(value) else None


def read_progress(run_dir: str | os.PathLike) -> dict[str, Any]:
    """progress.json's raw fields; {} when absent or unreadable (caught mid-write on odd filesystems). The app reads
    `ProgressRecord.read` instead."""
    return rundir.RunFolder(run_dir).read_progress()


def _finite_or_text(v: Any) -> Any:
    """A NaN/inf number as text ("nan"), so a diverged loss still reads as one (strict JSON has no NaN)."""
    return str(v) if isinstance(v, float) and not math.isfinite(v) else v


class _CancelFlag(Protocol):
    """What Progress asks the job store: the job's cancel flag (a `core.runs.jobs.JobStore`)."""

    def get(self, job_id: str) -> Any: ...


class Progress:
    """Handed to a running task: progress fields, cancel flag, log lines; all in the run folder."""

    MIN_INTERVAL = 0.5  # at most 2 disk writes a second unless forced (pages redraw every 2 s)
    FORCE_KEYS = ("epoch", "stage", "fold", "phase")  # a change of these is written at once
    DB_CHECK_S = 1.0

    def __init__(
        self,
        run_dir: str | os.PathLike,
        job_id: str = "",
        store: _CancelFlag | None = None,
        can_spawn: bool = False,
    ):
        self.run_dir = Path(run_dir)
        self.can_spawn = can_spawn  # the task may raise WaitForChildren (a worker records it)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.folder = rundir.RunFolder(self.run_dir)
        self.job_id, self.store = job_id, store
        self._data: dict[str, Any] = {"job_id": job_id} if job_id else {}
        self._last_write = 0.0
        self._dirty = False
        self._stop = False
        self._last_db_check = 0.0

    def update(self, force: bool = False, **fields: Any) -> None:
        """Merge fields into progress.json (atomic), throttled unless forced or a stage/epoch changed."""
        force = force or any(k in self.FORCE_KEYS and self._data.get(k) != v for k, v in fields.items())
        if "phase" in fields and fields["phase"] != self._data.get("phase"):
            fields.setdefault("message", "")  # the last phase's message does not describe the new one
        self._data.update(fields)
        self._dirty = True
        if force or time.time() - self._last_write >= self.MIN_INTERVAL:
            self.flush()

    def flush(self) -> None:
        """Write pending fields now."""
        if not self._dirty:
            return
        now = time.time()
        self._data["updated"] = now
        # atomic but not fsynced: rewritten up to 5 times a second, a power cut may only lose the latest state
        # (an fsync per write cost about 4 % of a small-image epoch on CPU, bench/README.md)
        data = {k: _finite_or_text(v) for k, v in self._data.items()}
        self.folder.write(rundir.PROGRESS, data, durable=False)
        self._last_write, self._dirty = now, False

    def snapshot(self) -> ProgressRecord:
        """The record of the fields set so far."""
        return ProgressRecord.from_dict(self._data)

    def cancelled(self) -> bool:
        """True once cancel was requested (STOP file; the DB too, at most once a second)."""
        if self._stop:
            return True
        self._stop = self.folder.stop.exists()
        now = time.time()
        if (
            not self._stop
            and self.store is not None
            and self.job_id
            and now - self._last_db_check >= self.DB_CHECK_S
        ):
            self._last_db_check = now
            with contextlib.suppress(sqlite3.Error):
                job = self.store.get(self.job_id)
                self._stop = bool(job and job.cancel_requested)
        return self._stop

    def check(self) -> None:
        """Raise JobCancelled if cancel was requested."""
        if self.cancelled():
            raise JobCancelled("cancelled by user")

    def log(self, msg: str) -> None:
        """Append a timestamped line to log.txt."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.folder.log, "a", encoding="utf-8") as fh:
            for line in str(msg).rstrip("\n").splitlines() or [""]:
                fh.write(f"{stamp} {line}\n")
