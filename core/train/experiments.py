"""Experiments (sweeps): a parent record with ordinary child runs, one per trial of a grid or random search.

An experiment is `$XRT_HOME/experiments/<id>/experiment.json` (spec, base config, each trial's job id and
settings). Each trial is an ordinary "train" job with its own run folder, queued through the job queue
like any other run, so it can be watched, cancelled, evaluated and reused like any other. Nothing else is
kept: the experiment's status is derived from its children's job statuses whenever it is read, so it
survives a refresh, a server restart and a killed child. All trials share the base config's split (same
split seed; `seed` sweeps the training seed only; `train_fraction` drops training rows only).

Who enforces what: a trial carries its experiment's deadline ("not_after") and cancels itself if a worker
claims it later; `refresh` (every read by the page or the waiting CLI) also cancels queued trials past the
deadline and applies median stopping to running trials.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.base import choices
from core.base.config import AUG_PRESETS, ConfigError, RunConfig, aug_preset, from_dict, to_dict
from core.base.schema import Meta, Setting, put
from core.runs import jobs, removal, rundir
from core.runs.progress import ProgressRecord

MODES = ("grid", "random")
METRICS = (
    "balanced_accuracy",
    "accuracy",
    "roc_auc",
)  # validation metrics with bootstrap CIs; higher is better
DEFAULT_RANDOM_TRIALS = 8
DEFAULT_GRID_POINTS = 3  # points of a range without a count in grid mode
MIN_COMPLETED_FOR_MEDIAN = 2  # median stopping needs this many finished trials to compare with


SPECIAL = (  # sweep axes that are no single field (path ""): applied by apply_settings, preset before strength
    Setting(
        "aug",
        "",
        str,
        False,
        "default",
        Meta(sweep="augmentation preset", choices=tuple(AUG_PRESETS), aliases=("augment",)),
    ),
    Setting(
        "aug_strength",
        "",
        float,
        False,
        1.0,
        Meta(sweep="augmentation strength: multiplies rotation, zoom, warp and lighting"),
    ),
)
# the settings a sweep may vary: those declared sweepable beside their field (core.base.config), then SPECIAL
SETTINGS: dict[str, Setting] = {s.name: s for s in (*choices.SETTINGS.values(), *SPECIAL) if s.meta.sweep}
ALIASES = {alias: s.name for s in SETTINGS.values() for alias in s.meta.aliases}
SYNTAX = (
    "NAME=V1,V2,... (a list) or NAME=LO:HI[:N] (N evenly spaced points; LO:HI:logN log-spaced); "
    "random search draws from LO:HI uniformly (LO:HI:log: log-uniformly)"
)


# ---------------------------------------------------------------- axes (what varies) and their values


@dataclass(frozen=True)
class Axis:
    """One swept setting: a list of values, or a range [lo, hi] with a grid count and a log flag."""

    name: str
    values: tuple = ()
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0
    log: bool = False

    def grid(self) -> list:
        """The values a grid search tries (a range gives n points, DEFAULT_GRID_POINTS without a count)."""
        if self.values:
            return list(self.values)
        n = self.n or DEFAULT_GRID_POINTS
        pts = np.geomspace(self.lo, self.hi, n) if self.log else np.linspace(self.lo, self.hi, n)
        return list(dict.fromkeys(cast(self.name, float(p)) for p in pts))

    def draw(self, rng: np.random.Generator) -> Any:
        """One value for a random search: a list item, or a uniform / log-uniform draw from the range."""
        if self.values:
            return self.values[int(rng.integers(len(self.values)))]
        if self.log:
            return cast(self.name, float(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi)))))
        return cast(self.name, float(rng.uniform(self.lo, self.hi)))


def canonical(name: str) -> str:
    """The setting's name (aliases resolved); ConfigError for a setting that cannot be swept."""
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in SETTINGS:
        raise ConfigError(f"cannot sweep {name!r}; settings: {', '.join(SETTINGS)}")
    return key


def cast(name: str, value: Any) -> Any:
    """A value converted to the setting's type (ints rounded, floats to 4 significant digits)."""
    setting = SETTINGS[name]
    if setting.kind is int:
        return int(round(float(value)))
    if setting.kind is float:
        return float(f"{float(value):.4g}")
    return setting.check(str(value).strip())


def parse_axis(text: str) -> Axis:
    """Parse NAME=V1,V2 or NAME=LO:HI[:N | :logN | :log]; ConfigError with the syntax when it is not one."""
    name, sep, spec = text.partition("=")
    if not sep or not spec.strip():
        raise ConfigError(f"a sweep is NAME=VALUES, got {text!r}; {SYNTAX}")
    key, spec = canonical(name), spec.strip()
    try:
        if ":" in spec and SETTINGS[key].kind is not str:
            return _range_axis(key, spec)
        return Axis(key, values=tuple(dict.fromkeys(cast(key, v) for v in spec.split(",") if v.strip())))
    except ValueError as err:
        raise ConfigError(f"cannot read the values of {key} from {spec!r}: {err}; {SYNTAX}") from None


def _range_axis(key: str, spec: str) -> Axis:
    """A range axis from LO:HI[:N | :logN | :log]."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise ValueError("a range is LO:HI or LO:HI:N")
    lo, hi = float(parts[0]), float(parts[1])
    count = parts[2].strip().lower() if len(parts) == 3 else ""
    log = count.startswith("log")
    n = int(count[3:] if log else count) if count not in ("", "log") else 0
    if not lo < hi or (log and lo <= 0) or n < 0:
        raise ValueError("need LO < HI (both > 0 for log) and a count >= 1")
    return Axis(key, lo=lo, hi=hi, n=n, log=log)


# ---------------------------------------------------------------- the spec and its trials


@dataclass
class SweepSpec:
    """What a sweep varies and how: axes as text (NAME=...), grid or random, a trial and a time budget."""

    axes: list[str] = field(default_factory=list)
    mode: str = "grid"
    trials: int = 0  # most trials (grid: 0 = every point; random: 0 = DEFAULT_RANDOM_TRIALS)
    budget_min: float = 0.0  # 0 = no time budget; trials not started by then are cancelled
    metric: str = "balanced_accuracy"  # validation metric that ranks trials
    median_stop_epoch: int = 0  # > 0: stop a running trial below the median of finished ones after this epoch
    seed: int = 0  # seed of the random search (and of the grid subset when trials < grid points)
    name: str = ""

    def validate(self) -> SweepSpec:
        """Refuse a spec that cannot run; return self."""
        if self.mode not in MODES:
            raise ConfigError(f"sweep mode must be grid or random, got {self.mode!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}; got {self.metric!r}")
        if self.trials < 0 or self.budget_min < 0 or self.median_stop_epoch < 0:
            raise ConfigError("trials, budget and median-stop epoch must not be negative")
        parsed = [parse_axis(a) for a in self.axes]
        if not parsed:
            raise ConfigError(f"give at least one setting to sweep: {SYNTAX}")
        names = [a.name for a in parsed]
        if len(set(names)) < len(names):
            raise ConfigError(f"a setting is swept twice: {', '.join(names)}")
        return self

    def parsed(self) -> list[Axis]:
        """The axes, parsed."""
        return [parse_axis(a) for a in self.axes]


def plan_trials(spec: SweepSpec) -> list[dict[str, Any]]:
    """The settings of each trial: grid points (a seeded subset when `trials` is smaller) or random draws."""
    spec.validate()
    axes = spec.parsed()
    rng = np.random.default_rng(spec.seed)
    if spec.mode == "grid":
        points = [
            dict(zip([a.name for a in axes], combo)) for combo in itertools.product(*(a.grid() for a in axes))
        ]
        if spec.trials and spec.trials < len(points):
            keep = np.sort(rng.choice(len(points), size=spec.trials, replace=False))
            points = [points[i] for i in keep]
        return points
    want, tries = spec.trials or DEFAULT_RANDOM_TRIALS, 0
    found: dict[str, dict[str, Any]] = {}
    while len(found) < want and tries < 50 * want:
        draw = {a.name: a.draw(rng) for a in axes}
        found.setdefault(repr(sorted(draw.items())), draw)
        tries += 1
    return list(found.values())


def scale_aug(cfg: RunConfig, strength: float) -> None:
    """Multiply the augmentation's strengths (rotation, zoom beyond 1, warp, lighting), capped at their limits."""
    if strength < 0:
        raise ConfigError(f"aug_strength must be >= 0, got {strength}")
    a = cfg.data.aug
    a.rotate, a.zoom = min(180.0, a.rotate * strength), 1 + (a.zoom - 1) * strength
    a.warp, a.brightness, a.contrast = (min(1.0, v * strength) for v in (a.warp, a.brightness, a.contrast))


def apply_settings(base: RunConfig, settings: dict[str, Any]) -> RunConfig:
    """A validated copy of `base` with one trial's settings (preset before strength)."""
    cfg = copy.deepcopy(base)
    if "aug" in settings:
        cfg.data.aug = aug_preset(settings["aug"])
    if "aug_strength" in settings:
        scale_aug(cfg, float(settings["aug_strength"]))
    for name, value in settings.items():
        setting = SETTINGS[canonical(name)]
        if setting.path:
            put(cfg, setting.path, setting.check(value))
    return cfg.validate()


def settings_text(settings: dict[str, Any]) -> str:
    """'epochs=2, lr=0.001' for names and tables."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items())


# ---------------------------------------------------------------- the record


def start(
    spec: SweepSpec, base: RunConfig, owner: str = "", store: jobs.JobStore | None = None
) -> dict[str, Any]:
    """Plan the trials, queue one ordinary training job per trial, write experiment.json; returns the record."""
    store = store or jobs.JobStore()
    configs = [
        (s, apply_settings(base, s)) for s in plan_trials(spec)
    ]  # every trial checked before any is queued
    exp_id, now = jobs.new_job_id(), time.time()
    deadline = now + spec.budget_min * 60 if spec.budget_min else None
    name = spec.name or f"sweep {exp_id[:15]}"
    trials = []
    for i, (settings, cfg) in enumerate(configs):
        cfg.name = f"{name} #{i + 1}: {settings_text(settings)}"
        params = {
            "config": to_dict(cfg),
            "experiment": exp_id,
            "trial": i,
            **({"not_after": deadline} if deadline else {}),
        }
        job = jobs.submit_and_start("train", params, owner=owner, store=store)
        trials.append({"job": job.id, "run_dir": job.run_dir, "settings": settings, "name": cfg.name})
    record = {
        "id": exp_id,
        "name": name,
        "owner": owner,
        "created": now,
        "deadline": deadline,
        "spec": to_dict(spec),
        "base_config": to_dict(base),
        "trials": trials,
        "stopped": {},
    }
    rundir.write_json(rundir.experiment_file(exp_id), record)
    return record


def read(exp_id: str) -> dict[str, Any]:
    """An experiment's record; KeyError when there is none."""
    record = rundir.read_json(rundir.experiment_file(exp_id))
    if not record.get("trials") and not record.get("id"):
        raise KeyError(f"no experiment {exp_id!r}")
    return record


def exists(exp_id: str) -> bool:
    """True when an experiment with this id exists."""
    try:
        return rundir.experiment_file(exp_id).is_file()
    except ValueError:
        return False


def list_ids(owner: str | None = None) -> list[str]:
    """Experiment ids, newest first (only `owner`'s when given)."""
    found = sorted(
        (p.parent.name for p in rundir.experiments_dir().glob(f"*/{rundir.EXPERIMENT}")), reverse=True
    )
    return [
        i for i in found if owner is None or rundir.read_json(rundir.experiment_file(i)).get("owner") == owner
    ]


def spec_of(record: dict[str, Any]) -> SweepSpec:
    """The record's SweepSpec."""
    return from_dict(SweepSpec, record["spec"])


def base_of(record: dict[str, Any]) -> RunConfig:
    """The record's base RunConfig."""
    return from_dict(RunConfig, record["base_config"])


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


def child_jobs(record: dict[str, Any], store: jobs.JobStore) -> dict[str, jobs.Job | None]:
    """Each trial's job row (None when the job store no longer has it)."""
    return {t["job"]: store.get(t["job"]) for t in record["trials"]}


def derive_status(statuses: list[str]) -> str:
    """The experiment's status from its trials': running > queued > done (any) > cancelled (all) > failed."""
    if "running" in statuses:
        return "running"
    if "queued" in statuses:
        return "queued"
    if "done" in statuses:
        return "done"
    if statuses and all(s == "cancelled" for s in statuses):
        return "cancelled"
    return "failed" if statuses else "empty"


def status(record: dict[str, Any], store: jobs.JobStore) -> dict[str, Any]:
    """{"status", "counts": {status: n}} derived from the children's job statuses now."""
    statuses = [j.status if j else "interrupted" for j in child_jobs(record, store).values()]
    counts = {s: statuses.count(s) for s in jobs.STATUSES if s in statuses}
    return {"status": derive_status(statuses), "counts": counts}


def enforce_budget(record: dict[str, Any], store: jobs.JobStore, now: float | None = None) -> list[str]:
    """Past the deadline: cancel the trials still queued; returns their job ids."""
    deadline = record.get("deadline")
    if not deadline or (now or time.time()) <= deadline:
        return []
    queued = [i for i, j in child_jobs(record, store).items() if j and j.status == "queued"]
    for job_id in queued:
        store.cancel(job_id)
    return queued


def value_at_epoch(run_dir: str, metric: str, epoch: int) -> float | None:
    """The metric of a run's history after `epoch` epochs (1-based, frozen epochs included), or None."""
    try:
        hist = rundir.RunFolder(run_dir).read_history()
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None
    if metric not in hist or len(hist) < epoch:
        return None
    value = pd.to_numeric(hist[metric], errors="coerce").iloc[epoch - 1]
    return None if pd.isna(value) else float(value)


def median_stop(record: dict[str, Any], store: jobs.JobStore) -> dict[str, str]:
    """Stop running trials whose metric after the spec's epoch is below the median of finished trials there."""
    spec = spec_of(record)
    epoch = spec.median_stop_epoch
    if epoch < 1:
        return {}
    by_id = {t["job"]: t for t in record["trials"]}
    states = child_jobs(record, store)
    values = [
        value_at_epoch(by_id[i]["run_dir"], spec.metric, epoch)
        for i, j in states.items()
        if j and j.status == "done"
    ]
    done = [v for v in values if v is not None]
    if len(done) < MIN_COMPLETED_FOR_MEDIAN:
        return {}
    median, stopped = float(np.median(done)), {}
    for job_id, job in states.items():
        value = (
            value_at_epoch(by_id[job_id]["run_dir"], spec.metric, epoch)
            if job and job.status == "running"
            else None
        )
        if value is not None and value < median and job_id not in record.get("stopped", {}):
            store.cancel(job_id)
            stopped[job_id] = (
                f"{spec.metric} {value:.3f} after epoch {epoch} < median {median:.3f} of finished trials"
            )
    return stopped


def refresh(exp_id: str, store: jobs.JobStore | None = None, now: float | None = None) -> dict[str, Any]:
    """Read an experiment and bring it up to date: reap dead workers, apply the budget and median stopping."""
    store = store or jobs.JobStore()
    store.reap()
    record = read(exp_id)
    enforce_budget(record, store, now)
    stopped = median_stop(record, store)
    if stopped:
        record["stopped"] = {**record.get("stopped", {}), **stopped}
        rundir.write_json(rundir.experiment_file(exp_id), record)
    return {**record, **status(record, store)}


def cancel(exp_id: str, job_id: str | None = None, store: jobs.JobStore | None = None) -> list[str]:
    """Cancel one trial (job_id) or every queued / running trial; returns the job ids asked to stop."""
    store = store or jobs.JobStore()
    record = read(exp_id)
    ids = [t["job"] for t in record["trials"]]
    if job_id is not None and job_id not in ids:
        raise KeyError(f"job {job_id} is not a trial of experiment {exp_id}")
    targets = [job_id] if job_id else ids
    active = [i for i, j in child_jobs(record, store).items() if i in targets and j and j.active]
    for i in active:
        store.cancel(i)
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


def trial_metric(run_dir: str, metric: str, n_boot: int = 1000) -> dict[str, float] | None:
    """A finished trial's validation (k-fold: out-of-fold) metric with its bootstrap 95 % CI, else None."""
    folder = rundir.RunFolder(run_dir)
    classes = folder.read_metrics().get("classes")
    table = next((folder.predictions(w) for w in ("valid", "oof") if folder.predictions(w).is_file()), None)
    if not classes or table is None:
        return None
    from core.evaluation import bytask

    stat = table.stat()
    task = bytask.task_of(folder.read_metrics())
    return _metric_ci(
        str(table), tuple(str(c) for c in classes), metric, n_boot, stat.st_mtime_ns, stat.st_size, task
    )


@functools.lru_cache(maxsize=512)
def _metric_ci(
    path: str,
    classes: tuple[str, ...],
    metric: str,
    n_boot: int,
    _mtime_ns: int,
    _size: int,
    task: str = "single",
) -> dict | None:
    """The bootstrap CI of one predictions table, cached per file version (the page polls every 2 s)."""
    from core.evaluation import bytask, evaluate

    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if task != "single":  # multi-label / ordinal: the task's own evaluation (core.evaluation.bytask)
        return bytask.metric_ci(df, list(classes), task, metric, n_boot)
    y, probs = evaluate.labels_and_probs(df, list(classes))
    return evaluate.bootstrap_ci(y, probs, list(classes), n_resamples=n_boot).get(metric)


def varying(record: dict[str, Any]) -> list[str]:
    """The swept settings whose value differs between trials (every swept one when none differs)."""
    names = [a.name for a in spec_of(record).parsed()]
    differ = [n for n in names if len({repr(t["settings"].get(n)) for t in record["trials"]}) > 1]
    return differ or names


def trial_table(record: dict[str, Any], store: jobs.JobStore, n_boot: int = 1000) -> pd.DataFrame:
    """One row per trial: number, name, status, swept settings, metric with CI, duration, best flag, job."""
    metric, now = spec_of(record).metric, time.time()
    states, rows = child_jobs(record, store), []
    for i, t in enumerate(record["trials"]):
        job = states.get(t["job"])
        ci = trial_metric(t["run_dir"], metric, n_boot) if job and job.status == "done" else None
        started, finished = (job.started, job.finished) if job else (None, None)
        rows.append(
            {
                "trial": i + 1,
                "name": t.get("name", ""),
                "status": job.status if job else "interrupted",
                **{n: t["settings"].get(n) for n in varying(record)},
                metric: ci["value"] if ci else math.nan,
                "ci_lo": ci["lo"] if ci else math.nan,
                "ci_hi": ci["hi"] if ci else math.nan,
                "duration_s": ((finished or now) - started) if started else math.nan,
                "progress": progress_text(t["run_dir"]) if job and job.status == "running" else "",
                "note": record.get("stopped", {}).get(t["job"], job.error if job else ""),
                "job": t["job"],
            }
        )
    table = pd.DataFrame(rows)
    table["best"] = False
    best = best_trial(table, metric)
    if best is not None:
        table.loc[table["job"] == best, "best"] = True
    return table


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
    """What the CLI prints: id, name, dataset, status, counts, best trial and every trial's row."""
    store = store or jobs.JobStore()
    record = refresh(exp_id, store)
    table = trial_table(record, store, n_boot)
    metric = spec_of(record).metric
    return {
        "experiment": exp_id,
        "name": record["name"],
        "dataset": dataset_text(base_of(record)),
        "status": record["status"],
        "counts": record["counts"],
        "metric": f"valid {metric}",
        "best": best_trial(table, metric),
        "trials": rundir.json_safe(table.to_dict(orient="records")),
    }
