"""Deleting a run: its folder (only inside the runs folder, never through a link) and its job rows, fold
child jobs with their parent; refused with a plain reason while it is queued, running or waiting."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from core.base import paths
from core.base.fsutil import inside
from core.runs import jobs, rundir


class DeleteRefused(Exception):
    """A run or experiment that may not be deleted now; the message says why in plain words."""


@dataclass
class Deletion:
    """What deleting one run removes: job rows (the run's and its fold jobs') and folders."""

    what: str  # "run 2026...": for messages
    job_ids: list[str] = field(default_factory=list)
    folders: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        """Plain values for JSON output."""
        return {"what": self.what, "jobs": self.job_ids, "folders": [str(f) for f in self.folders]}


def contained(folder: str | Path, root: Path, what: str = "runs folder") -> Path:
    """The resolved folder when it lies strictly inside `root` and is no link; else DeleteRefused."""
    given = Path(folder).expanduser()
    if given.is_symlink():
        raise DeleteRefused(f"{given} is a link; only folders inside the {what} are deleted")
    real, base = given.resolve(), root.expanduser().resolve()
    if real == base or not inside(real, base):
        raise DeleteRefused(f"{given} is not inside the {what} ({base}); nothing was deleted")
    return real


def _job_of(arg: str, store: jobs.JobStore) -> jobs.Job | None:
    """The job given by id, else the top-level job whose run folder the argument names."""
    job = store.get(arg)
    if job is not None:
        return job
    folder = rundir.run_folder(arg).path
    real = folder.resolve() if folder.exists() else None
    return next(
        (j for j in store.list(limit=100_000) if real is not None and Path(j.run_dir).resolve() == real),
        None,
    )


def plan(arg: str, store: jobs.JobStore | None = None, trial_of: str = "") -> Deletion:
    """What deleting the run `arg` (job id, run id or folder) would remove; DeleteRefused when it may not go.

    `trial_of`: the experiment deleting its trials (a trial alone is deleted with its experiment only)."""
    store = store or jobs.JobStore()
    job = _job_of(arg, store)
    if job is None:
        folder = rundir.run_folder(arg).path
        if not folder.is_dir():
            raise DeleteRefused(f"no run {arg!r}")
        return Deletion(f"run folder {folder.name}", [], [contained(folder, paths.runs_dir())])
    if job.parent_id:
        raise DeleteRefused(f"job {job.id} is a fold of run {job.parent_id}; delete that run instead")
    exp = str((job.params or {}).get("experiment") or "")
    if exp and exp != trial_of:
        raise DeleteRefused(f"run {job.id} is a trial of experiment {exp}; delete the experiment instead")
    kids = store.list(parent_id=job.id, limit=100_000)
    busy = [j for j in (job, *kids) if j.active]
    if busy:
        state = "waiting for its fold jobs" if job.waiting else busy[0].status
        raise DeleteRefused(f"run {job.id} is {state}; cancel it and wait until it stops before deleting it")
    folder = Path(job.run_dir)
    folders = [contained(folder, paths.runs_dir())] if folder.exists() or folder.is_symlink() else []
    return Deletion(f"run {job.id}", [job.id, *(k.id for k in kids)], folders)


def delete(arg: str, store: jobs.JobStore | None = None, trial_of: str = "") -> Deletion:
    """Delete a run (see `plan`): its job rows first (refused if one became active meanwhile), then its folder."""
    store = store or jobs.JobStore()
    what = plan(arg, store, trial_of)
    if what.job_ids and not store.delete(what.job_ids):
        raise DeleteRefused(f"{what.what} became active; nothing was deleted")
    for folder in what.folders:
        shutil.rmtree(folder)
    return what
