"""Asking for a sweep's trials: when it starts, and again whenever one of its trials ends.

`advance` is the one place trials are created. It runs under the experiment's lock file and is idempotent:
it tops the experiment up to its window of active trials (grid / random: every planned trial at once;
model-based: `parallel` at a time, so each new point is asked with the latest results) until the trial
budget is reached, the time budget is spent or the experiment was cancelled. Each trial is an ordinary
"train" job whose params name the "sweep" end hook (`core.runs.jobs.END_HOOKS`): wherever its end is
recorded (its worker, its supervisor, a reap after a server restart) `on_trial_end` calls `advance`, so a
sweep goes on with `--background`, no page open, on several GPUs and on Ray.

No orphan jobs: a trial is written into experiment.json (settings and its run folder) before its job is
queued, and the job id after; an entry without a job id is finished on the next `advance` (its job found
through the run folder's job.json, else queued then).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.base import fsutil, paths
from core.base.config import to_dict
from core.runs import executors, jobs, rundir
from core.train import pruning, sweep_search
from core.train import sweep_plan as ex

LOCK = ".lock"


def lock(exp_id: str):
    """The experiment's lock (held while its record and trials change)."""
    return fsutil.file_lock(rundir.experiment_file(exp_id).parent / LOCK)


def window(spec: ex.SweepSpec) -> int:
    """How many of its trials may be queued or running at once."""
    if spec.mode != "tpe":
        return ex.trial_budget(spec)
    return max(1, spec.parallel or executors.max_jobs())


def _value(run_dir: str, metric: str) -> float | None:
    """A finished trial's validation metric (metrics.json, else from its predictions)."""
    valid = rundir.RunFolder(run_dir).read_metrics().get("metrics", {}).get("valid", {})
    if isinstance(valid.get(metric), (int, float)):
        return float(valid[metric])
    found = ex.trial_metric(run_dir, metric, n_boot=50)
    return None if found is None else float(found["value"])


def told(record: dict[str, Any], store: jobs.JobStore) -> list[sweep_search.Told]:
    """Every trial so far as the sampler sees it (from job rows and run folders)."""
    metric, states, out = ex.spec_of(record).metric, ex.child_jobs(record, store), []
    for t in record["trials"]:
        job = states.get(t.get("job", ""))
        curve = pruning.curve_of(t["run_dir"], metric)
        points = {i + 1: v for i, v in enumerate(curve.values) if v == v}
        if not t.get("job") or (job is not None and job.active):  # being queued, queued or running
            out.append(sweep_search.Told(t["settings"], "running"))
        elif job is None:  # its job row is gone
            out.append(sweep_search.Told(t["settings"], "failed"))
        elif job.status == "done":
            out.append(sweep_search.Told(t["settings"], "complete", _value(t["run_dir"], metric), points))
        elif pruning.pruned_info(t["run_dir"]):
            out.append(sweep_search.Told(t["settings"], "pruned", None, points))
        else:
            out.append(sweep_search.Told(t["settings"], "failed"))
    return out


def next_settings(record: dict[str, Any], store: jobs.JobStore, n: int) -> list[dict[str, Any]]:
    """The settings of the next `n` trials: the plan's next points, or the sampler's asks."""
    spec, made = ex.spec_of(record), len(record["trials"])
    if spec.mode != "tpe":
        return ex.plan_trials(spec)[made : made + n]
    axes = spec.parsed()
    dists = sweep_search.distributions(axes, {a.name: ex.SETTINGS[a.name].kind for a in axes})
    history, out = told(record, store), []
    for i in range(n):
        point = sweep_search.suggest(history, dists, spec.seed * 100_003 + made + i, ex.trial_budget(spec))
        point = {k: ex.cast(k, v) for k, v in point.items()}
        history.append(sweep_search.Told(point, "running"))
        out.append(point)
    return out


def _reserve(record: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A new trial entry (no job yet) with its run folder chosen: runs/<experiment id>-trial<NNN>."""
    i = len(record["trials"])
    name = f"{record['name']} #{i + 1}: {ex.settings_text(settings)}"
    folder = paths.runs_dir() / f"{record['id']}-trial{i + 1:03d}"
    return {"job": "", "run_dir": str(folder), "settings": settings, "name": name}


def _params(record: dict[str, Any], i: int) -> dict[str, Any]:
    """The job params of trial i: its config, its experiment, the end hook and the deadline."""
    t, spec = record["trials"][i], ex.spec_of(record)
    cfg = ex.apply_settings(ex.base_of(record), t["settings"])
    cfg.name = t["name"]
    deadline = record.get("deadline")
    return {
        "config": to_dict(cfg),
        "experiment": record["id"],
        "trial": i,
        "metric": spec.metric,
        "on_end": "sweep",
        **({"not_after": deadline} if deadline else {}),
    }


def _submit(record: dict[str, Any], i: int, store: jobs.JobStore) -> None:
    """Queue trial i's job and make sure it will run (or adopt the job a killed advance queued); note its id."""
    t = record["trials"][i]
    known = rundir.read_json(Path(t["run_dir"]) / rundir.JOB).get("id")
    if known and store.get(str(known)) is not None:
        t["job"] = str(known)
        return
    job = jobs.submit_and_start(
        "train", _params(record, i), run_dir=t["run_dir"], owner=record["owner"], store=store
    )
    t["job"], t["run_dir"] = job.id, job.run_dir


def closed(record: dict[str, Any], now: float | None = None) -> bool:
    """No more trials: cancelled, or its time budget is spent."""
    deadline = record.get("deadline")
    return bool(record.get("cancelled")) or bool(deadline and (now or time.time()) > deadline)


def advance(exp_id: str, store: jobs.JobStore | None = None) -> list[str]:
    """Create the trials the experiment is due now (see the module doc); returns the new job ids."""
    store = store or jobs.JobStore()
    with lock(exp_id):
        record = ex.read(exp_id)
        spec = ex.spec_of(record)
        pending = [i for i, t in enumerate(record["trials"]) if not t.get("job")]
        active = sum(1 for j in ex.child_jobs(record, store).values() if j and j.active)
        room = min(ex.trial_budget(spec) - len(record["trials"]), window(spec) - active - len(pending))
        if not closed(record) and room > 0:
            for settings in next_settings(record, store, room):
                record["trials"].append(_reserve(record, settings))
            pending += list(range(len(record["trials"]) - room, len(record["trials"])))
            rundir.write_json(rundir.experiment_file(exp_id), record)  # reserved before any job is queued
        for i in pending:
            _submit(record, i, store)
        if pending:
            rundir.write_json(rundir.experiment_file(exp_id), record)
    return [record["trials"][i]["job"] for i in pending]


def on_trial_end(job: jobs.Job) -> None:
    """The "sweep" end hook: a trial ended, so ask for the next ones."""
    exp_id = str(job.params.get("experiment") or "")
    if exp_id and ex.exists(exp_id):
        advance(exp_id)


def cancel_all(exp_id: str) -> None:
    """Mark the experiment cancelled, so that no more trials are asked for."""
    with lock(exp_id):
        record = ex.read(exp_id)
        record["cancelled"] = True
        rundir.write_json(rundir.experiment_file(exp_id), record)
