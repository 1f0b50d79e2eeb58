"""Experiments (sweeps): a parent record with ordinary child runs, one per trial of a grid, random or
model-based (TPE) search.

An experiment is `$XRT_HOME/experiments/<id>/experiment.json` (spec, base config, each trial's job id, run
folder and settings). Each trial is an ordinary "train" job with its own run folder, queued through the job
queue like any other run, so it can be watched, cancelled, evaluated and reused like any other. Nothing else
is kept: the experiment's status is derived from its children's job statuses whenever it is read, so it
survives a refresh, a server restart and a killed child. All trials share the base config's split (same
split seed; `seed` sweeps the training seed only; `train_fraction` drops training rows only).

What a sweep varies and each trial's settings live in `core.train.sweep_plan` (re-exported here); trials are
created by `core.train.sweep_loop.advance`, at the start and whenever a trial ends (the job's end hook), so
a sweep goes on with nobody watching. Who enforces what: a trial carries its experiment's deadline
("not_after") and cancels itself if a worker claims it later; a trial reports its metric each epoch and
stops itself when its pruner says so (`core.train.pruning`); `refresh` (every read by the page or the
waiting CLI) also cancels queued trials past the deadline and asks for trials that are due.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.base.config import RunConfig, from_dict, to_dict
from core.evaluation import learning_curve
from core.runs import jobs, removal, rundir
from core.runs.progress import ProgressRecord
from core.train import pruning, sweep_loop, sweep_report
from core.train.sweep_plan import (
    ALIASES,
    DEFAULT_GRID_POINTS,
    DEFAULT_RANDOM_TRIALS,
    METRICS,
    MODES,
    SETTINGS,
    SPECIAL,
    SYNTAX,
    Axis,
    SweepSpec,
    apply_settings,
    base_of,
    canonical,
    cast,
    child_jobs,
    exists,
    max_trials,
    parse_axis,
    plan_trials,
    read,
    scale_aug,
    settings_text,
    spec_of,
    trial_budget,
    trial_metric,
)

__all__ = [
    "ALIASES",
    "DEFAULT_GRID_POINTS",
    "DEFAULT_RANDOM_TRIALS",
    "METRICS",
    "MODES",
    "SETTINGS",
    "SPECIAL",
    "SYNTAX",
    "Axis",
    "SweepSpec",
    "apply_settings",
    "base_of",
    "canonical",
    "cast",
    "child_jobs",
    "exists",
    "max_trials",
    "parse_axis",
    "plan_trials",
    "read",
    "scale_aug",
    "settings_text",
    "spec_of",
    "trial_budget",
    "trial_metric",
]


# ---------------------------------------------------------------- the record


def start(
    spec: SweepSpec, base: RunConfig, owner: str = "", store: jobs.JobStore | None = None
) -> dict[str, Any]:
    """Check the spec (`check`), write experiment.json, then ask for the first trials (`sweep_loop.advance`);
    returns the record."""
    store = store or jobs.JobStore()
    check(spec, base)
    exp_id, now = jobs.new_job_id(), time.time()
    record = {
        "id": exp_id,
        "name": spec.name or f"sweep {exp_id[:15]}",
        "owner": owner,
        "created": now,
        "deadline": now + spec.budget_min * 60 if spec.budget_min else None,
        "spec": to_dict(spec),
        "base_config": to_dict(base),
        "trials": [],
        "stopped": {},
    }
    rundir.write_json(rundir.experiment_file(exp_id), record)  # the record first: trials are added to it
    sweep_loop.advance(exp_id, store)
    return read(exp_id)


def check(spec: SweepSpec, base: RunConfig) -> int:
    """The number of trials the sweep will run, once its spec and trial configs are known valid (grid / random:
    every planned trial's; tpe: both corners of the search space); ConfigError otherwise."""
    spec.validate()
    if spec.mode != "tpe":
        for settings in plan_trials(spec):
            apply_settings(base, settings)
    else:
        for corner in ("lo", "hi"):
            apply_settings(base, {a.name: _end(a, corner) for a in spec.parsed()})
    return trial_budget(spec)


def _end(axis: Axis, which: str) -> Any:
    """The lowest / highest value of an axis (a list's first / last)."""
    if axis.values:
        return axis.values[0 if which == "lo" else -1]
    return cast(axis.name, axis.lo if which == "lo" else axis.hi)


def list_ids(owner: str | None = None) -> list[str]:
    """Experiment ids, newest first (only `owner`'s when given)."""
    found = sorted(
        (p.parent.name for p in rundir.experiments_dir().glob(f"*/{rundir.EXPERIMENT}")), reverse=True
    )
    return [
        i for i in found if owner is None or rundir.read_json(rundir.experiment_file(i)).get("owner") == owner
    ]


def trial_config(record: dict[str, Any], job_id: str) -> RunConfig:
    """The full RunConfig one trial trained with (from its run folder, else rebuilt from the record)."""
    trial = next(t for t in record["trials"] if t["job"] == job_id)
    saved = rundir.RunFolder(trial["run_dir"]).read_config_dict()
    cfg = from_dict(RunConfig, saved) if saved else apply_settings(base_of(record), trial["settings"])
    cfg.name = ""
    return cfg


def dataset_text(cfg: RunConfig) -> str:
    """A short description of a run's data source for lists ('folder .../chest', 'csv labels.csv')."""
    src = cfg.source
    where = src.csv_path or src.root
    tail = "/".join(where.replace("\\", "/").rstrip("/").split("/")[-2:]) if where else ""
    return f"{src.kind} {tail}".strip()


# ---------------------------------------------------------------- status (derived), budget, stopping


def derive_status(statuses: list[str]) -> str:
    """The experiment's status from its trials': running > queued > done (any) > cancelled (all) > failed."""
    if "running" in statuses:
        return "running"
    if "queued" in statuses:
        return "queued"
    if "done" in statuses or "pruned" in statuses:
        return "done"
    if statuses and all(s == "cancelled" for s in statuses):
        return "cancelled"
    return "failed" if statuses else "empty"


def status(record: dict[str, Any], store: jobs.JobStore) -> dict[str, Any]:
    """{"status", "counts": {status: n}} derived from the children's job statuses now (a trial entered in the
    record whose job is not queued yet counts as queued; after "Cancel all" an ended sweep reads cancelled, not
    done, whatever finished first)."""
    states = child_jobs(record, store)
    statuses = [trial_status(t, states.get(t["job"])) if t.get("job") else "queued" for t in record["trials"]]
    counts = {s: statuses.count(s) for s in (*jobs.STATUSES, "pruned") if s in statuses}
    derived = derive_status(statuses)
    if record.get("cancelled") and derived not in jobs.ACTIVE:
        derived = "cancelled"
    return {"status": derived, "counts": counts}


def trial_status(trial: dict[str, Any], job: jobs.Job | None) -> str:
    """A trial's status: its job's, "pruned" for one its pruner stopped, "interrupted" when its job is gone."""
    if job is None:
        return "interrupted"
    if job.status == "cancelled" and pruning.pruned_info(trial["run_dir"]):
        return "pruned"
    return job.status


def enforce_budget(record: dict[str, Any], store: jobs.JobStore, now: float | None = None) -> list[str]:
    """Past the deadline: cancel the trials still queued; returns their job ids."""
    deadline = record.get("deadline")
    if not deadline or (now or time.time()) <= deadline:
        return []
    queued = [i for i, j in child_jobs(record, store).items() if j and j.status == "queued"]
    for job_id in queued:
        store.cancel(job_id)
    return queued


def refresh(exp_id: str, store: jobs.JobStore | None = None, now: float | None = None) -> dict[str, Any]:
    """Read an experiment and bring it up to date: reap dead workers, apply the budget, ask for due trials."""
    store = store or jobs.JobStore()
    store.reap()
    enforce_budget(read(exp_id), store, now)
    sweep_loop.advance(exp_id, store)
    record = read(exp_id)
    return {**record, **status(record, store)}


def cancel(exp_id: str, job_id: str | None = None, store: jobs.JobStore | None = None) -> list[str]:
    """Cancel one trial (job_id) or every queued / running trial; returns the job ids asked to stop."""
    store = store or jobs.JobStore()
    record = read(exp_id)
    ids = [t["job"] for t in record["trials"]]
    if job_id is not None and job_id not in ids:
        raise KeyError(f"job {job_id} is not a trial of experiment {exp_id}")
    targets = [job_id] if job_id else ids
    if job_id is None:
        sweep_loop.cancel_all(exp_id)  # no more trials are asked for
    active = [i for i, j in child_jobs(record, store).items() if i in targets and j and j.active]
    for i in active:
        store.cancel(i)
    if job_id is None and active:  # the whole experiment was cancelled: its status says so
        rundir.write_json(rundir.experiment_file(exp_id), {**record, "cancelled": time.time()})
    return active


def deletion(exp_id: str, store: jobs.JobStore | None = None) -> dict[str, Any]:
    """What deleting an experiment removes (its record's folder and every trial's run); DeleteRefused while a
    trial is queued or running, or when a folder is not inside the app home's folders."""
    store = store or jobs.JobStore()
    if not exists(exp_id):
        raise removal.DeleteRefused(f"no experiment {exp_id!r}")
    record = read(exp_id)
    busy = [i for i, j in child_jobs(record, store).items() if j and j.active]
    if busy:
        raise removal.DeleteRefused(
            f"experiment {exp_id} has {len(busy)} queued or running trial(s); cancel them and wait before deleting it"
        )
    runs = []
    for t in record["trials"]:  # a trial whose job row is gone may still have its folder
        known, folder = store.get(t["job"]) is not None, Path(t["run_dir"])
        if known or folder.exists() or folder.is_symlink():
            runs.append(removal.plan(t["job"] if known else t["run_dir"], store, trial_of=exp_id))
    folder = removal.contained(
        rundir.experiment_file(exp_id).parent, rundir.experiments_dir(), "experiments folder"
    )
    return {"experiment": exp_id, "name": record.get("name", ""), "runs": runs, "folder": folder}


def delete(exp_id: str, store: jobs.JobStore | None = None) -> dict[str, Any]:
    """Delete an experiment: every trial's run (job rows and folder), then its record; see `deletion`."""
    store = store or jobs.JobStore()
    plan = deletion(exp_id, store)
    for run in plan["runs"]:
        removal.delete(run.job_ids[0] if run.job_ids else str(run.folders[0]), store, trial_of=exp_id)
    shutil.rmtree(plan["folder"])
    return plan


# ---------------------------------------------------------------- comparing trials


def varying(record: dict[str, Any]) -> list[str]:
    """The swept settings whose value differs between trials (every swept one when none differs)."""
    names = [a.name for a in spec_of(record).parsed()]
    differ = [n for n in names if len({repr(t["settings"].get(n)) for t in record["trials"]}) > 1]
    return differ or names


def trial_table(record: dict[str, Any], store: jobs.JobStore, n_boot: int = 1000) -> pd.DataFrame:
    """One row per trial: number, name, status (pruned ones with their epoch), swept settings, metric with CI,
    duration, progress, note, best flag, job."""
    metric, states = spec_of(record).metric, child_jobs(record, store)
    rows = [
        _trial_row(i, t, states.get(t["job"]), record, metric, n_boot)
        for i, t in enumerate(record["trials"])
        if t.get("job")
    ]
    table = pd.DataFrame(rows)
    table["best"] = False
    best = best_trial(table, metric)
    if best is not None:
        table.loc[table["job"] == best, "best"] = True
    return table


def _trial_row(
    i: int, t: dict[str, Any], job: jobs.Job | None, record: dict[str, Any], metric: str, n_boot: int
) -> dict[str, Any]:
    """One trial's row of the trial table."""
    ci = trial_metric(t["run_dir"], metric, n_boot) if job and job.status == "done" else None
    started, finished = (job.started, job.finished) if job else (None, None)
    state, pruned = trial_status(t, job), pruning.pruned_info(t["run_dir"])
    note = f"pruned after epoch {pruned.get('epoch')}: {pruned.get('reason', '')}" if pruned else ""
    return {
        "trial": i + 1,
        "name": t.get("name", ""),
        "status": state,
        **{n: t["settings"].get(n) for n in varying(record)},
        metric: ci["value"] if ci else math.nan,
        "ci_lo": ci["lo"] if ci else math.nan,
        "ci_hi": ci["hi"] if ci else math.nan,
        "duration_s": ((finished or time.time()) - started) if started else math.nan,
        "progress": progress_text(t["run_dir"]) if state == "running" else "",
        "note": note or record.get("stopped", {}).get(t["job"], job.error if job else ""),
        "job": t["job"],
    }


def progress_text(run_dir: str) -> str:
    """'epoch 1/3, batch 4/7' from a running trial's progress.json ('' before training starts)."""
    p = ProgressRecord.read(run_dir)
    if not p.n_epochs:
        return p.phase
    batch = f", batch {p.batch}/{p.n_batches}" if p.n_batches else ""
    return f"epoch {p.epoch + 1}/{p.n_epochs}{batch}"


def best_trial(table: pd.DataFrame, metric: str) -> str | None:
    """Job id of the finished trial with the highest validation metric (None when none has finished)."""
    done = table[(table["status"] == "done") & table[metric].notna()] if len(table) else table
    return None if done.empty else str(done.loc[done[metric].idxmax(), "job"])


def trial_curves(record: dict[str, Any]) -> pd.DataFrame:
    """Every trial's history.csv stacked, with a "trial" column (1-based), for overlaid training curves."""
    frames = []
    for i, t in enumerate(record["trials"]):
        try:
            hist = rundir.RunFolder(t["run_dir"]).read_history()
        except (OSError, ValueError, pd.errors.EmptyDataError):
            continue
        frames.append(hist.assign(trial=i + 1))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary(exp_id: str, store: jobs.JobStore | None = None, n_boot: int = 1000) -> dict[str, Any]:
    """What the CLI prints: id, name, mode, dataset, status, counts, best trial, what mattered (importance,
    best vs base settings) and every trial's row."""
    store = store or jobs.JobStore()
    record = refresh(exp_id, store)
    table = trial_table(record, store, n_boot)
    spec = spec_of(record)
    best = best_trial(table, spec.metric)
    return {
        "experiment": exp_id,
        "name": record["name"],
        "mode": spec.mode,
        "pruner": pruning.rule_of(spec)[0],
        "dataset": dataset_text(base_of(record)),
        "status": record["status"],
        "counts": record["counts"],
        "metric": f"valid {spec.metric}",
        "best": best,
        "importance": sweep_report.importance(record, store),
        "best_vs_base": rundir.json_safe(sweep_report.best_vs_base(record, best)),
        "trials": rundir.json_safe(table.to_dict(orient="records")),
        "learning_curve": rundir.json_safe(
            learning_curve.from_trials(table, spec.metric)
        ),  # train_fraction sweeps
    }
