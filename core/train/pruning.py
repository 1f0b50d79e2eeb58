"""Pruning inside a sweep trial: after each epoch the trial reports its validation metric and stops itself
when its experiment's pruner says so, whoever watches (nobody needs the page or a waiting CLI open).

The rules read only what is on disk: the other trials' history.csv (their curves) and whether each finished
(metrics.json) or was pruned (pruned.json). A pruned trial writes pruned.json (epoch, value, reason), keeps
its history.csv and checkpoint, and ends as a cancelled job; the experiment labels it "pruned".

- median: from epoch `warmup` on, stop a trial whose metric is below the median of the finished trials'
  metric at the same epoch (needs MIN_FINISHED of them), as Optuna's MedianPruner.
- asha (asynchronous successive halving): at the rung epochs warmup * eta**k, keep a trial only when its
  metric is among the top 1/eta of every trial's metric at that rung (the best one always goes on), as
  Optuna's SuccessiveHalvingPruner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.runs import rundir
from core.runs.progress import JobCancelled

PRUNERS = ("none", "median", "asha")
MIN_FINISHED = 2  # median pruning compares with at least this many finished trials
ETA = 3  # asha: keep the top 1/ETA at each rung


class Pruned(JobCancelled):
    """A trial stopped by its experiment's pruner (the job ends as cancelled; pruned.json says why)."""


@dataclass(frozen=True)
class Curve:
    """One other trial's metric per epoch (index 0 = epoch 1) and whether it finished."""

    values: tuple[float, ...]
    finished: bool

    def at(self, epoch: int) -> float | None:
        """The metric after `epoch` epochs (1-based), or None when the trial did not reach it."""
        if len(self.values) < epoch or math.isnan(self.values[epoch - 1]):
            return None
        return self.values[epoch - 1]


def median_rule(value: float, epoch: int, others: list[Curve], warmup: int) -> str | None:
    """Why to stop a trial at `epoch` under the median rule, or None to go on."""
    done = [v for c in others if c.finished and (v := c.at(epoch)) is not None]
    if epoch < max(1, warmup) or len(done) < MIN_FINISHED:
        return None
    median = float(np.median(done))
    if value >= median:
        return None
    return f"{value:.3f} after epoch {epoch} < median {median:.3f} of {len(done)} finished trials"


def rungs(warmup: int, eta: int = ETA, last: int = 10_000) -> list[int]:
    """The epochs (1-based) at which successive halving compares trials: warmup, warmup*eta, ..."""
    out, r = [], max(1, warmup)
    while r <= last:
        out.append(r)
        r *= eta
    return out


def asha_rule(value: float, epoch: int, others: list[Curve], warmup: int, eta: int = ETA) -> str | None:
    """Why to stop a trial at `epoch` under successive halving, or None to go on (also off the rungs)."""
    if epoch not in rungs(warmup, eta, epoch):
        return None
    rivals = [v for c in others if (v := c.at(epoch)) is not None]
    ranked = sorted([*rivals, value], reverse=True)
    keep = max(1, len(ranked) // eta)
    if value >= ranked[keep - 1]:
        return None
    return f"{value:.3f} at rung epoch {epoch} is not in the top {keep} of {len(ranked)} trials there"


RULES = {"median": median_rule, "asha": asha_rule}


def curve_of(run_dir: str | Path, metric: str) -> Curve:
    """A trial's metric per epoch from its history.csv (empty when it has none yet)."""
    folder = rundir.RunFolder(run_dir)
    try:
        hist = folder.read_history()
    except (OSError, ValueError, pd.errors.EmptyDataError):
        hist = pd.DataFrame()
    values = pd.to_numeric(hist[metric], errors="coerce").tolist() if metric in hist else []
    finished = folder.is_finished() and not folder.file(rundir.PRUNED).is_file()
    return Curve(tuple(float(v) for v in values), finished)


def rule_of(spec: Any) -> tuple[str, int]:
    """(pruner, warmup epoch) of a sweep spec; the older median_stop_epoch means the median rule from there."""
    if spec.pruner != "none":
        return spec.pruner, max(1, spec.prune_epoch)
    if spec.median_stop_epoch > 0:
        return "median", spec.median_stop_epoch
    return "none", 0


def decide(record: dict[str, Any], run_dir: str | Path, epoch: int, value: float) -> str | None:
    """Why this trial of the experiment should stop after `epoch` epochs with `value`, or None."""
    from core.train.sweep_plan import spec_of

    spec = spec_of(record)
    pruner, warmup = rule_of(spec)
    if pruner == "none" or value is None or math.isnan(value):
        return None
    me = Path(run_dir).resolve()
    others = [
        curve_of(t["run_dir"], spec.metric)
        for t in record["trials"]
        if t.get("run_dir") and Path(t["run_dir"]).resolve() != me
    ]
    return RULES[pruner](value, epoch, others, warmup)


def report(params: dict[str, Any], run_dir: str | Path, epoch: int, value: float) -> None:
    """A trial's metric after `epoch` epochs (1-based): raise Pruned (after writing pruned.json) when its
    experiment's pruner says stop; nothing for a run that is no sweep trial."""
    exp_id = str(params.get("experiment") or "")
    if not exp_id:
        return
    from core.train.sweep_plan import read

    try:
        record = read(exp_id)
    except (KeyError, ValueError, OSError):
        return
    reason = decide(record, run_dir, epoch, value)
    if reason is None:
        return
    run = rundir.RunFolder(run_dir)
    run.write(rundir.PRUNED, {"epoch": epoch, "value": value, "reason": reason})
    run.resume_state.unlink(missing_ok=True)  # a pruned trial is not resumed: its state (~3x the model) goes
    raise Pruned(f"pruned after epoch {epoch}: {reason}")


def pruned_info(run_dir: str | Path) -> dict[str, Any]:
    """What pruned.json says about a trial ({} when it was not pruned)."""
    return rundir.read_json(rundir.RunFolder(run_dir).file(rundir.PRUNED))


def callbacks(params: dict[str, Any], run_dir: str | Path) -> list:
    """The fastai callback that reports a sweep trial's metric each epoch ([] for a run that is no trial)."""
    if not params.get("experiment"):
        return []
    from core.train.callbacks import PruneTrial

    metric = str(params.get("metric") or "balanced_accuracy")
    return [PruneTrial(lambda epoch, value: report(params, run_dir, epoch, value), metric)]
