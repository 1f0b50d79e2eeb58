"""Resume an interrupted, failed or cancelled single run from its last complete epoch to its planned epochs.

Training writes checkpoints/resume.safetensors at each epoch's end (core.train.resume_state: weights, optimiser,
schedule position, RNG states). Resuming queues the run's own job again (same run folder, same job id); its
worker rebuilds the DataLoaders and learner from config.json and items.csv with the run's seed, skips the epochs
the state covers (their history rows replay, so the best epoch and early stopping count as before), restores the
state and trains the remaining epochs, appending to history.csv. The result matches an uninterrupted run within
floating-point tolerance.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from core.runs import jobs, rundir
from core.train.finish import NOT_FINISHABLE, run_status


def _folder_problem(run: rundir.RunFolder) -> str:
    """Why the run folder cannot be resumed, whatever its job's status ("" when it can)."""
    if not run.config.is_file() or not run.items.is_file():
        return f"{run} is not a training run folder (no {run.config.name} / {run.items.name})"
    if run.folds_dir.is_dir() or run.fold_items.is_file():
        return "k-fold runs cannot be resumed"
    if run.has_final_model():
        return f"the run already finished (it has a model: {run.model_dir})"
    if not run.resume_state.is_file():
        return (
            "the run has no resumable state: it stopped before its first epoch ended, or was made by a "
            "version that did not save one (Finish from checkpoint may still make a model)"
        )
    return ""


def read_state(run: rundir.RunFolder):
    """The verified resume state of a run (ModelFileError when damaged; TrainingError when nothing is left to
    train or it does not fit the run's config)."""
    from core.base.config import RunConfig, load_json
    from core.train import resume_state
    from core.train.learner import TrainingError

    state = resume_state.read(run.resume_state)
    planned = load_json(RunConfig, run.config).train.planned_epochs()
    if state.info.get("planned_epochs") != planned:
        raise TrainingError(
            f"the resume state plans {state.info.get('planned_epochs')} epochs but the run's config {planned}"
        )
    if state.epoch + 1 >= planned:
        raise TrainingError(f"all {planned} planned epochs completed; Finish from checkpoint makes its model")
    return state


def why_not_resumable(run_dir: str | os.PathLike, verify: bool = True) -> str:
    """ "" when the run can be resumed, else the reason in user terms; `verify` also reads and checks the state
    (its checksums: a whole file read, so pages pass False and the resume itself verifies)."""
    from core.models.weightfiles import ModelFileError
    from core.train.learner import TrainingError

    run = rundir.RunFolder(run_dir)
    reason = _folder_problem(run)
    if reason:
        return reason
    status, _ = run_status(run.path)
    if status in NOT_FINISHABLE:
        return (
            "the run finished"
            if status == "done"
            else f"the run is {status}; wait until it ends or cancel it"
        )
    if verify:
        try:
            read_state(run)
        except (ModelFileError, TrainingError) as err:
            return str(err)
    return ""


def queue_resume(run_dir: str | os.PathLike, store: jobs.JobStore | None = None, owner: str = "") -> jobs.Job:
    """Queue the run again to continue from its resume state (its own job row when the store has it, else a new
    job in the same folder); TrainingError with the reason when it cannot be resumed."""
    from core.base.config import RunConfig, load_json, to_dict
    from core.runs import executors
    from core.train.learner import TrainingError

    run = rundir.RunFolder(run_dir)
    reason = why_not_resumable(run)
    if reason:
        raise TrainingError(f"cannot resume {run.name}: {reason}")
    store = store or jobs.JobStore()
    old = store.get(run.name)
    params = {"config": to_dict(load_json(RunConfig, run.config)), "resume": True}
    job = None
    if old is not None and Path(old.run_dir).resolve() == run.path.resolve():
        if old.kind != "train":
            raise TrainingError(f"cannot resume {run.name}: it is a {old.kind} job, not a training run")
        kept = {k: v for k, v in old.params.items() if k != "not_after"}  # a sweep trial's start deadline
        job = store.requeue(old.id, {**kept, **params})
    if job is None:
        job = store.submit("train", params, run_dir=run.path, owner=owner or (old.owner if old else ""))
    executors.executor().start(store)
    return job


def _replayed_rows(run: rundir.RunFolder, epoch: int) -> list[dict[str, Any]]:
    """history.csv cut to epochs 0..epoch (rows of an epoch the state missed go), as rows to replay."""
    from core.base.fsutil import atomic_writer
    from core.train.learner import TrainingError

    try:
        hist = run.read_history()
    except (OSError, ValueError) as err:
        raise TrainingError(f"cannot resume: {run.history.name} is missing or unreadable ({err})") from None
    kept = hist[hist["epoch"] <= epoch]
    if list(kept["epoch"]) != list(range(epoch + 1)):
        raise TrainingError(
            f"cannot resume: {run.history.name} does not hold epochs 1 to {epoch + 1} once each"
        )
    with atomic_writer(run.history) as tmp:
        kept.to_csv(tmp, index=False)
    return kept.to_dict(orient="records")


def resume_run(cfg, run_dir: Path, progress) -> dict[str, Any]:
    """The worker side (cfg: RunConfig, progress: Progress): train the remaining epochs, then finish as a run does."""
    from core.train.finish import _run_items
    from core.train.fit import fit_one
    from core.train.learner import TrainingError
    from core.train.run import complete_run

    t0, run = time.time(), rundir.RunFolder(run_dir)
    reason = _folder_problem(run)
    if reason:
        raise TrainingError(f"cannot resume: {reason}")
    state = read_state(run)
    state.rows = _replayed_rows(run, state.epoch)
    planned = cfg.train.planned_epochs()
    progress.log(f"resuming after epoch {state.epoch + 1} of {planned} from {run.relative(run.resume_state)}")
    items, classes = _run_items(run, cfg)
    out = fit_one(items, cfg, run.path, progress, classes=classes, resume=state)
    return complete_run(cfg, run, items, classes, out, t0, progress, resumed_after_epoch=state.epoch)
