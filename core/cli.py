"""Command line: everything the UI does, scriptable. JSON to stdout, non-zero exit with a clear message."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from core.base import fmt, schema
from core.base.choices import (
    KFOLD_DEFAULT,
    SETTINGS,
    Choices,
    build_config,
    device_defaults,
    has_gpu,
    on_devices,
)
from core.base.config import (
    AUG,
    AUG_PRESETS,
    OPTION_GROUPS,
    ConfigError,
    RunConfig,
    SourceConfig,
    SplitConfig,
    load_json,
)
from core.base.plan import DataFacts
from core.base.version import label
from core.runs import rundir


class CliError(Exception):
    """Bad input from the command line; printed without a traceback."""


def _source_args(p: argparse.ArgumentParser) -> None:
    """Options that describe a data source (shared by several commands)."""
    p.add_argument(
        "--kind",
        choices=["folder", "csv", "dicom", "sample"],
        default=None,
        help="source kind (default: csv when --csv is given, else folder)",
    )
    p.add_argument("--root", default="", help="image folder (folder per class), or image root for --csv")
    p.add_argument("--csv", dest="csv_path", default="", help="CSV of file names and labels")
    p.add_argument("--path-col", default="path", help="CSV column with file paths (default path)")
    p.add_argument("--label-col", default="label", help="CSV column with labels (default label)")
    p.add_argument("--group-col", default="", help="patient / group column (keeps a patient in one split)")
    p.add_argument("--split-col", default="", help="column with train/valid/test")
    p.add_argument("--label-tag", default="", help="DICOM: take the label from this header tag")
    p.add_argument("--group-tag", default="", help="DICOM: take the group from this tag (e.g. PatientID)")
    p.add_argument("--test-root", default="", help="separate test folder (same layout)")
    p.add_argument(
        "--label-delimiter",
        default="",
        help="multi-label: the label column holds findings split on this, e.g. '|' or ';' (default: one label a row)",
    )
    p.add_argument(
        "--finding-cols",
        default="",
        help="multi-label: comma-separated columns, one per finding, holding 1 / 0 / blank / -1 (uncertain)",
    )
    p.add_argument(
        "--uncertain",
        choices=["ignore", "positive", "negative"],
        default="ignore",
        help="multi-label: a -1 in a finding column is left out of the loss and metrics, or counted as 1 / 0 "
        "(default ignore)",
    )
    p.add_argument(
        "--no-finding",
        default="No Finding",
        help="multi-label: the label meaning no finding (default 'No Finding')",
    )


def source_config(ns: argparse.Namespace) -> SourceConfig:
    """A SourceConfig from parsed source options."""
    kind = ns.kind or ("csv" if ns.csv_path else "folder")
    if kind in ("folder", "dicom") and not ns.root:
        raise CliError(f"--root is required for a {kind} source")
    if kind == "csv" and not ns.csv_path:
        raise CliError("--csv is required for a csv source")
    return SourceConfig(
        kind=kind,
        root=ns.root,
        csv_path=ns.csv_path,
        path_col=ns.path_col,
        label_col=ns.label_col,
        group_col=ns.group_col,
        split_col=ns.split_col,
        label_tag=ns.label_tag,
        group_tag=ns.group_tag,
        test_root=ns.test_root,
        label_delimiter=ns.label_delimiter,
        finding_cols=[c.strip() for c in ns.finding_cols.split(",") if c.strip()],
        uncertain=ns.uncertain,
        no_finding=ns.no_finding,
    )


class StepLine:
    """The CLI's progress display for a core step's `progress(what, done, total)` calls (core.base.steps), on
    stderr: a tqdm bar when stderr is a terminal, else a plain line every `every` seconds and at the end
    ("scan: 1200/5000 files, 42 s left"); the time left is from a smoothed rate (core.base.eta.Rate)."""

    def __init__(
        self,
        command: str,
        every: float = 5.0,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.command, self.every, self.clock = command, every, clock
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.what, self.bar = "", None  # type: str, Any
        self._reset("")

    def _reset(self, what: str) -> None:
        """A new kind of step begins (files, then images, ...): a fresh clock and rate."""
        from core.base.eta import Rate

        self.close()
        self.what, self.rate, self.t0 = what, Rate(), self.clock()
        self.last_t, self.last_done = self.t0, 0

    def __call__(self, what: str, done: int, total: int) -> None:
        """Show that `done` of `total` `what` are done."""
        if what != self.what:
            self._reset(what)
        if self.tty and self._tqdm(what, done, total):
            return
        now = self.clock()
        if done < total and now - self.last_t < self.every:
            return
        if done > self.last_done:
            self.rate.add(now - self.last_t, done - self.last_done)
        self.last_t, self.last_done = now, done
        left = self.rate.left(total - done)
        tail = f", {fmt.seconds(left)} left" if left is not None and done < total else ""
        print(f"{self.command}: {done}/{total} {what}{tail}", file=self.stream, flush=True)

    def _tqdm(self, what: str, done: int, total: int) -> bool:
        """Move the terminal bar; False when tqdm is not installed."""
        try:
            from tqdm import tqdm
        except ImportError:
            return False
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.command, unit=f" {what}", file=self.stream, leave=True)
        self.bar.update(done - self.bar.n)
        return True

    def close(self) -> None:
        """End the terminal bar, if one is drawn."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_sample(ns: argparse.Namespace) -> dict[str, Any]:
    """Generate (once) the built-in synthetic sample dataset and say where it is."""
    from core.data import sample

    if ns.task != "single":
        from core.data import sample_tasks

        return sample_tasks.describe(ns.task, Path(ns.root) if ns.root else None)
    root = sample.ensure_sample(Path(ns.root) if ns.root else None)
    return {
        "root": str(root),
        "folder": str(sample.folder_root(root)),
        "csv": str(sample.labels_csv(root)),
        "dicom": str(sample.dicom_root(root)),
        "note": "SYNTHETIC images for trying the app, not real X-rays",
    }


def cmd_scan(ns: argparse.Namespace) -> dict[str, Any]:
    """Scan a source: summary as JSON, items and problems optionally to CSV."""
    from core.base.exports import write_for_people
    from core.data.labels import trainable_reasons
    from core.data.sources import load_source

    line = StepLine("scan")
    ds = load_source(source_config(ns), progress=line)
    line.close()
    if ns.items_out:
        write_for_people(ds.items, ns.items_out)
    if ns.problems_out:
        write_for_people(ds.problems, ns.problems_out)
    out = ds.summary()
    out["problems"] = ds.problems.head(ns.show_problems).to_dict("records")
    cfg = source_config(ns)
    out["refused"] = trainable_reasons(ds, "multilabel" if cfg.multilabel() else "single")
    out["suggested_task"] = suggest_for_source(cfg)
    return out


def suggest_for_source(cfg: SourceConfig) -> dict[str, Any] | None:
    """The task type a CSV source's table suggests (core.data.labels.suggest_task); None for other sources."""
    if cfg.kind != "csv":
        return None
    from core.data.labels import suggest_task
    from core.data.tables import read_table

    exclude = [c for c in (cfg.path_col, cfg.group_col, cfg.split_col) if c]
    return suggest_task(read_table(cfg.csv_path), cfg.label_col, exclude)


def cmd_check(ns: argparse.Namespace) -> dict[str, Any]:
    """Checks of the data: metadata shortcut (AUC with CI, per feature) and (near-)duplicates with leak flags."""
    from core.data.sources import load_source
    from core.evaluation import checks

    t0, line = time.perf_counter(), StepLine("check")
    ds = load_source(source_config(ns), progress=line)
    res = checks.check_source(
        ds.items, size=ns.size, max_distance=ns.max_distance, n_boot=ns.n_boot, progress=line
    )
    line.close()
    if ns.pairs_out:
        res["pairs"].to_csv(ns.pairs_out, index=False)
    pairs = res["pairs"].drop(columns=["i", "j"]).head(ns.show)
    return {
        "n_items": len(ds.items),
        "n_problems": len(ds.problems),
        "shortcut": res["shortcut"],
        "duplicates": res["duplicates"],
        "pairs": pairs.to_dict("records"),
        "seconds": round(time.perf_counter() - t0, 2),
    }


KFOLD_HELPS = {  # the kfold command's own wording of two split options
    "k_folds": f"number of folds (default {KFOLD_DEFAULT})",
    "final_model_on_all": "after the folds, also train one model on all training data for prediction (default off)",
}


def _run_args(p: argparse.ArgumentParser, kfold: bool = False) -> None:
    """Options of a training run, one per setting declared in core.base.config (help states the real default)."""
    p.add_argument(
        "--config", default="", help=f"a {rundir.CONFIG} (RunConfig); the options given here override it"
    )
    groups = schema.add_options(p, SETTINGS.values(), OPTION_GROUPS, KFOLD_HELPS if kfold else None)
    groups[AUG].add_argument(
        "--aug-preset",
        choices=list(AUG_PRESETS),
        default=None,
        help="start from a preset, then apply the options below: default = the app's X-ray-safe set, "
        "fastai = aug_transforms() defaults (warp 0.2), none = no augmentation (default: none applied, the "
        "base settings stay)",
    )
    p.add_argument(
        "--grade-order",
        default="",
        help="ordinal: the grades lowest first, comma-separated (default: inferred from names like 0..4 or KL0..KL4)",
    )
    p.add_argument("--background", action="store_true", help="queue as a job and return its id at once")


def train_choices(ns: argparse.Namespace) -> Choices:
    """The training options given on the command line (not given: the base config's value stays)."""
    chosen = schema.given(ns, SETTINGS.values()) | {"aug_preset": ns.aug_preset}
    if getattr(ns, "kfold", False) and not chosen.get("k_folds"):
        chosen["k_folds"] = KFOLD_DEFAULT
    return chosen


def run_config(ns: argparse.Namespace) -> RunConfig:
    """A RunConfig from --config (else this machine's defaults, planned for the data) plus command-line overrides."""
    base = load_json(RunConfig, ns.config) if ns.config else None
    source = source_config(ns) if ns.kind or ns.root or ns.csv_path or not ns.config else None
    chosen = train_choices(ns)
    facts = planning_facts(source, chosen) if base is None else None
    cfg = build_config(chosen, base=base, source=source, facts=facts)
    if ns.grade_order:
        cfg.data.task.order = [g.strip() for g in ns.grade_order.split(",") if g.strip()]
    return cfg.validate()


PLANNED = ("img_size", "batch_size", "epochs")  # the settings core.base.plan chooses from the data


def source_facts(source: SourceConfig, split: SplitConfig) -> DataFacts | None:
    """The numbers a schedule is planned from (core.data.facts); None when the source cannot be read."""
    from core.data.facts import data_facts, quick_items
    from core.data.items import SourceError

    try:
        return data_facts(quick_items(source), split)
    except (SourceError, OSError, ValueError):  # the run itself says why it cannot start
        return None


def planning_facts(source: SourceConfig | None, chosen: Choices) -> DataFacts | None:
    """The data's facts the default schedule is planned from (None: all of it chosen, or the source unreadable)."""
    if source is None or all(chosen.get(n) is not None for n in PLANNED):
        return None
    try:
        split = build_config(chosen, source=source).data.split
    except ConfigError:  # refused again, with the reason, when the run's config is built
        return None
    return source_facts(source, split)


def plan_of(cfg: RunConfig) -> dict[str, Any]:
    """The run's schedule with its optimiser steps and rough time, and quicker / better alternatives."""
    from core.base import plan

    facts = source_facts(cfg.source, cfg.data.split)
    if facts is None:
        raise CliError("the data source cannot be read to plan a schedule; `python -m core scan` says why")
    gpu = has_gpu()
    dd = device_defaults(gpu)
    return plan.summary(facts, plan.schedule_of(facts, cfg, dd, gpu), dd, gpu)


def _run_job(kind: str, params: dict, background: bool) -> dict[str, Any]:
    """Queue a job in a worker process; unless `background`, wait for it with a progress line (Ctrl+C cancels)."""
    from core.runs import jobs

    store = jobs.JobStore()
    return _follow_job(store, jobs.submit_and_start(kind, params, store=store), background)


def _follow_job(store: Any, job: Any, background: bool) -> dict[str, Any]:
    """Return a queued job at once (`background`) or wait for it with a progress line (Ctrl+C cancels)."""
    from core.runs import jobs

    if background:
        return {"job": job.id, "status": job.status, "run_dir": job.run_dir}
    watcher = _TerminalProgress(Path(job.run_dir), tty=sys.stderr.isatty())
    watcher.start()
    try:
        job = jobs.wait(job.id, store=store, timeout=7 * 24 * 3600)
    except KeyboardInterrupt:
        store.cancel(job.id)
        job = jobs.wait(job.id, store=store, timeout=120)
    finally:
        watcher.stop()
    out = {"job": job.id, "status": job.status, "run_dir": job.run_dir, "result": job.result}
    if job.status != "done":
        raise CliError(
            f"job {job.id} {job.status}: {job.error or f'see {rundir.RunFolder(job.run_dir).log}'}"
        )
    return out


class _TerminalProgress:
    """A job's progress on stderr, read from the run's progress.json: one line redrawn twice a second on a
    terminal, else a plain line when the phase or epoch changes and at most every `every` seconds otherwise."""

    def __init__(self, run_dir: Path, tty: bool = True, every: float = 10.0):
        import threading

        self.run_dir, self._stop, self.tty, self.every = run_dir, threading.Event(), tty, every
        self._shown: tuple = ()
        self._last = 0.0
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        """Begin redrawing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and end the line."""
        self._stop.set()
        self._thread.join(timeout=2)
        if self.tty:
            print(file=sys.stderr)

    def _loop(self) -> None:
        """Redraw twice a second."""
        from core.runs.progress import ProgressRecord

        while not self._stop.wait(0.5):
            p = ProgressRecord.read(self.run_dir)
            if not p.written:
                continue
            fold = f"fold {p.fold + 1}/{p.n_folds} " if p.fold is not None else ""
            ep = f"epoch {p.epoch + 1}/{p.n_epochs} " if p.n_epochs else ""
            bt = f"batch {p.batch}/{p.n_batches} " if p.n_batches else ""
            loss = f"loss {p.train_loss:.4f} " if p.train_loss is not None else ""
            eta = f"ETA {fmt.seconds(p.eta_s)}" if p.eta_s is not None else ""
            text = f"{p.phase}: {fold}{ep}{bt}{loss}{eta}".rstrip()
            if self.tty:
                print(f"\r{text}".ljust(100), end="", file=sys.stderr)
            elif self._due((p.phase, p.fold, p.epoch)):
                print(text, file=sys.stderr, flush=True)

    def _due(self, state: tuple) -> bool:
        """A plain line is due: the phase, fold or epoch changed, or `every` seconds passed."""
        now = time.monotonic()
        if state == self._shown and now - self._last < self.every:
            return False
        self._shown, self._last = state, now
        return True


def cmd_train(ns: argparse.Namespace) -> dict[str, Any]:
    """Train (single split, or k-fold with --k-folds) and print the run summary."""
    from core.base.config import to_dict

    cfg = run_config(ns)
    if getattr(ns, "plan", False):
        return plan_of(cfg)
    print(
        f"schedule: {cfg.data.img_size} px, batch size {cfg.data.batch_size}, {cfg.train.planned_epochs()} epochs "
        "(--plan shows the rough time and alternatives)",
        file=sys.stderr,
    )
    out = _run_job("train", {"config": to_dict(cfg)}, ns.background)
    for line in (out.get("result") or {}).get("warnings", []):  # also in the JSON, metrics.json and log.txt
        print(f"warning: {line}", file=sys.stderr)
    return out


def cmd_lr_find(ns: argparse.Namespace) -> dict[str, Any]:
    """Run the LR finder; print the suggestions (the curve is in the run folder's lr_find.json)."""
    from core.base.config import to_dict

    cfg = run_config(ns)
    return _run_job(
        "lr_find",
        {"config": to_dict(cfg), "num_it": ns.num_it or device_defaults().lr_find_steps},
        ns.background,
    )


def cmd_runs(ns: argparse.Namespace) -> list[dict[str, Any]] | dict[str, Any]:
    """List jobs/runs with their status (orphaned running jobs are marked first); --experiment: its trials."""
    from core.runs import jobs

    if getattr(ns, "experiment", ""):
        return _experiment_summary(ns.experiment)
    store = jobs.JobStore()
    store.reap()
    return [
        {"job": j.id, "kind": j.kind, "status": j.status, "run_dir": j.run_dir, "error": j.error or None}
        for j in store.list(limit=ns.limit)
    ]


def cmd_cancel(ns: argparse.Namespace) -> dict[str, Any]:
    """Ask a queued or running job to stop."""
    from core.runs import jobs
    from core.train import experiments

    if experiments.exists(ns.job):  # an experiment id: every queued / running trial
        return {"experiment": ns.job, "cancelled": experiments.cancel(ns.job)}
    job = jobs.JobStore().cancel(ns.job)
    return {"job": job.id, "status": job.status, "cancel_requested": job.cancel_requested}


def cmd_delete(ns: argparse.Namespace) -> dict[str, Any]:
    """Delete a finished run (its folder and job rows) or an experiment (its record and trial runs); without
    --yes only say what would go and exit non-zero."""
    from core.runs import removal
    from core.train import experiments

    try:
        if experiments.exists(ns.target):
            plan = experiments.deletion(ns.target)
            what = {
                "experiment": ns.target,
                "name": plan["name"],
                "folder": str(plan["folder"]),
                "runs": [r.to_dict() for r in plan["runs"]],
            }
            if ns.yes:
                experiments.delete(ns.target)
        else:
            what = removal.plan(ns.target).to_dict()
            if ns.yes:
                removal.delete(ns.target)
    except removal.DeleteRefused as err:
        raise CliError(str(err)) from err
    if not ns.yes:
        print(json.dumps({"would_delete": what}, indent=2, default=str))
        raise CliError("nothing was deleted; run again with --yes to delete the above")
    return {"deleted": what}


SWEEP_EPILOG = """\
--sweep NAME=VALUES, once per setting that varies:
  a list       epochs=2,4,8   arch=resnet18,resnet34   aug=none,default,fastai   imbalance=none,oversample
  a range      lr=1e-4:1e-2:log3 (3 log-spaced points)   img_size=64:128:3 (3 evenly spaced, ints rounded)
               a range without a count gives 3 grid points; --random draws from LO:HI (LO:HI:log log-uniformly)
settings (the split keeps --seed, so every trial has the same validation and test sets):
{settings}
Every trial is an ordinary training job (its own run folder, cancellable with `cancel JOB`); `cancel EXP`
cancels all. --budget-min: no trial starts after it. --tpe: a model-based search (Optuna's TPE sampler) asks for
each trial's settings from the results so far, --parallel at a time (default: the job slots); the next trial is
asked for whenever one ends, so it goes on with --background and no page open. --pruner median|asha: a trial
stops itself from --prune-epoch on when it is below the median of finished trials at the same epoch (median)
or not in the top third at a rung epoch (asha, successive halving); --median-stop N = --pruner median
--prune-epoch N. At most $XRT_MAX_TRIALS (100) trials; every swept value must be within its setting's bounds.
examples:
  python -m core sweep --kind sample --epochs 2 --img-size 64 --sweep lr=1e-3,3e-3 --sweep aug=none,default
  python -m core sweep --root data/ --sweep train_fraction=0.25,0.5,1 --sweep seed=1,2 --background
  python -m core sweep --root data/ --random --trials 6 --budget-min 30 --sweep lr=1e-4:1e-2:log --sweep bs=16,32
  python -m core sweep --root data/ --tpe --trials 16 --pruner asha --sweep lr=1e-4:1e-2:log --sweep wd=0:0.1
  python -m core runs --experiment EXP
"""


def sweep_epilog() -> str:
    """The sweep command's epilog, listing every sweepable setting (core.base.config declares which)."""
    from core.train import experiments

    rows = [
        f"  {s.name}{' (' + ', '.join(s.meta.aliases) + ')' if s.meta.aliases else ''}: {s.meta.sweep}"
        for s in experiments.SETTINGS.values()
    ]
    return SWEEP_EPILOG.format(settings="\n".join(rows))


def _sweep_args(p: argparse.ArgumentParser) -> None:
    """Options of a sweep (the base run's options come from _run_args)."""
    from core.train import experiments

    g = p.add_argument_group("sweep")
    g.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=VALUES",
        help="a setting and its values: V1,V2,... or LO:HI[:N|:logN] (see below); repeat per setting",
    )
    mode = g.add_mutually_exclusive_group()
    mode.add_argument(
        "--grid", dest="mode", action="store_const", const="grid", help="every combination (default)"
    )
    mode.add_argument(
        "--random",
        dest="mode",
        action="store_const",
        const="random",
        help=f"random draws (default {experiments.DEFAULT_RANDOM_TRIALS} trials)",
    )
    mode.add_argument(
        "--tpe",
        dest="mode",
        action="store_const",
        const="tpe",
        help=f"model-based search, Optuna TPE (default {experiments.DEFAULT_RANDOM_TRIALS} trials)",
    )
    g.add_argument("--trials", type=int, default=0, help="most trials (grid: a seeded subset of the points)")
    g.add_argument("--budget-min", type=float, default=0.0, help="time budget in minutes (0 = none)")
    g.add_argument(
        "--metric",
        choices=experiments.METRICS,
        default="balanced_accuracy",
        help="validation metric that ranks trials (default balanced_accuracy)",
    )
    g.add_argument(
        "--median-stop",
        type=int,
        default=0,
        metavar="EPOCH",
        help="stop trials below the median of finished ones after this epoch (0 = off)",
    )
    g.add_argument(
        "--pruner", choices=("none", "median", "asha"), default="none", help="stop poor trials early"
    )
    g.add_argument(
        "--prune-epoch", type=int, default=1, help="first epoch a trial may be pruned at (default 1)"
    )
    g.add_argument("--parallel", type=int, default=0, help="--tpe: trials at once (default: the job slots)")
    g.add_argument(
        "--sweep-seed", type=int, default=0, help="seed of the random search / sampler (default 0)"
    )
    p.set_defaults(mode="grid")


def cmd_sweep(ns: argparse.Namespace) -> dict[str, Any]:
    """Start a sweep: one ordinary training job per trial; wait for all of them unless --background."""
    from core.runs import jobs
    from core.train import experiments

    base = run_config(ns)
    spec = experiments.SweepSpec(
        axes=ns.sweep,
        mode=ns.mode,
        trials=ns.trials,
        budget_min=ns.budget_min,
        metric=ns.metric,
        median_stop_epoch=ns.median_stop,
        seed=ns.sweep_seed,
        name=base.name,
        pruner=ns.pruner,
        prune_epoch=ns.prune_epoch,
        parallel=ns.parallel,
    )
    base.name = ""
    store = jobs.JobStore()
    record = experiments.start(spec, base, store=store)
    if ns.background:
        return {
            "experiment": record["id"],
            "name": record["name"],
            "trials": [t["job"] for t in record["trials"]],
            "planned": experiments.trial_budget(experiments.spec_of(record)),
        }
    try:
        _wait_sweep(record["id"], store)
    except KeyboardInterrupt:
        experiments.cancel(record["id"], store=store)
    return _experiment_summary(record["id"])


def sweep_line(exp_id: str, record: dict[str, Any], store: Any) -> str:
    """One line about a sweep under way: trials done / planned, running, queued, pruned, stopped, best so
    far, time left at the pace so far."""
    from core.train import experiments, sweep_report

    counts, todo = record["counts"], sweep_report.progress(record)
    ended = sum(counts.get(s, 0) for s in ("failed", "cancelled", "interrupted"))
    text = (
        f"sweep {exp_id}: {counts.get('done', 0)}/{todo['planned']} trials done, "
        f"{counts.get('running', 0)} running, {counts.get('queued', 0)} queued"
        + (f", {counts['pruned']} pruned" if counts.get("pruned") else "")
        + (f", {ended} stopped or failed" if ended else "")
    )
    if todo["eta_s"] is not None and record.get("status") in ("queued", "running"):
        text += f", about {fmt.seconds(todo['eta_s'])} left"
    if not counts.get("done"):
        return text
    metric = experiments.spec_of(record).metric
    table = experiments.trial_table(record, store, n_boot=200)
    best = experiments.best_trial(table, metric)
    if best is None:
        return text
    row = table[table["job"] == best].iloc[0]
    return text + f"; best so far: trial {row['trial']}, valid {metric} {fmt.number(row[metric])}"


def _wait_sweep(exp_id: str, store: Any, every: float = 2.0) -> None:
    """Wait for a sweep's trials, printing a line to stderr whenever the counts change."""
    from core.runs import jobs
    from core.train import experiments

    shown = None
    while True:
        record = experiments.refresh(exp_id, store)
        if (record["counts"], len(record["trials"])) != shown:
            shown = (record["counts"], len(record["trials"]))
            print(sweep_line(exp_id, record, store), file=sys.stderr, flush=True)
        if record["status"] not in jobs.ACTIVE:
            return
        time.sleep(every)


def _experiment_summary(exp_id: str) -> dict[str, Any]:
    """An experiment's trials, metric with CI and best trial; CliError when there is no such experiment."""
    from core.train import experiments

    if not experiments.exists(exp_id):
        raise CliError(f"no experiment {exp_id!r} (list them with: python -m core experiments)")
    return experiments.summary(exp_id)


def cmd_experiments(ns: argparse.Namespace) -> list[dict[str, Any]]:
    """List experiments: id, name, dataset, derived status, trial counts."""
    from core.runs import jobs
    from core.train import experiments

    store = jobs.JobStore()
    out = []
    for exp_id in experiments.list_ids()[: ns.limit]:
        rec = experiments.refresh(exp_id, store)
        out.append(
            {
                "experiment": exp_id,
                "name": rec["name"],
                "dataset": experiments.dataset_text(experiments.base_of(rec)),
                "status": rec["status"],
                "counts": rec["counts"],
            }
        )
    return out


def _model_path(arg: str) -> Path:
    """The manifest of a run folder (or its name), model folder or manifest; see savedmodel.find_manifest."""
    from core.models import savedmodel

    p = Path(arg) if Path(arg).exists() else rundir.run_folder(arg).path
    if not p.exists():
        raise CliError(
            f"no model at {arg} (give a run folder, its {rundir.MODEL_DIR}/ folder or a {rundir.MODEL_MANIFEST})"
        )
    return savedmodel.find_manifest(p)


def _scored(
    df, classes: list[str], threshold: float | None, task: str = "single", thresholds: Any = None
) -> dict[str, Any] | None:
    """Headline metrics with CIs of the labelled rows of a predictions table (None when unlabelled)."""
    from core.evaluation.predict import score_predictions

    ev = score_predictions(df, classes, threshold=threshold, task=task, thresholds=thresholds)
    if ev is None:
        return None
    return {
        "n": ev["n"],
        "threshold": ev.get("threshold", ev.get("thresholds")),
        "metrics": ev["metrics"],
        "ci": ev["ci"],
    }


def cmd_predict(ns: argparse.Namespace) -> dict[str, Any]:
    """Predict a folder, a single file or a CSV of paths to CSV; a labelled CSV or a folder of class sub-folders
    (named after the model's classes) is also scored."""
    from core.evaluation.predict import predict_csv, predict_folder

    if not ns.input and not ns.csv_path:
        raise CliError("give an image/DICOM file or folder, or --csv with a table of paths")
    pred = _predictor(ns, _model_arg(ns))
    thresholds = _finding_thresholds(ns, pred)
    line = StepLine("predict")
    opts = dict(batch_size=ns.bs, tta=ns.tta, threshold=ns.threshold, progress=line)
    if ns.csv_path:
        preds, problems = predict_csv(
            pred, ns.csv_path, path_col=ns.path_col, label_col=ns.label_col, image_root=ns.root, **opts
        )
    elif Path(ns.input).is_dir():
        preds, problems = predict_folder(pred, ns.input, **opts)
    else:
        preds, problems = pred.predict_paths([str(ns.input)], **opts)
    line.close()
    if thresholds is not None:  # a multi-label model's findings decided at --thresholds (the rest: its own)
        from core.evaluation import finding_thresholds

        preds = finding_thresholds.decide(preds, pred.classes, thresholds)
    if ns.out:
        preds.to_csv(ns.out, index=False)
    return {
        "predicted": len(preds),
        "problems": problems.to_dict("records"),
        "out": ns.out or None,
        "threshold": pred.threshold_used(ns.threshold),
        "thresholds": thresholds,
        "tta": ns.tta,
        "site": {"name": ns.site, "temperature": pred.temperature} if getattr(ns, "site", "") else None,
        "scored": None
        if pred.task == "multilabel"
        else _scored(preds, pred.classes, ns.threshold, pred.task),
        "scored_note": None
        if "label" in preds
        else "no labels: give --csv with a label column, or a folder whose sub-folders are the model's classes",
        "prediction_sets": _set_coverage(pred, preds),
        "rows": preds.head(ns.show).to_dict("records"),
    }


def _finding_thresholds(ns: argparse.Namespace, pred: Any) -> dict[str, float] | None:
    """predict --thresholds: every finding's threshold (the given ones, the model's own for the rest); None when
    not given. Refused with the reason for a model that is not multi-label, with --threshold, an unknown finding
    or a value outside (0, 1)."""
    from core.evaluation import finding_thresholds

    if not ns.thresholds:
        return None
    if pred.task != "multilabel":
        raise CliError(
            "--thresholds sets a multi-label model's per-finding thresholds; this model is not one"
        )
    if ns.threshold is not None:
        raise CliError("give --threshold (one for every finding) or --thresholds (per finding), not both")
    try:
        given = finding_thresholds.parse(ns.thresholds, list(pred.classes))
    except ValueError as err:
        raise CliError(f"--thresholds: {err}") from None
    return finding_thresholds.merged(pred.manifest.task.get("thresholds"), given, list(pred.classes))


def _model_arg(ns: argparse.Namespace) -> Path:
    """--model as a manifest, or (with --ensemble) as the k-fold run folder whose fold models are averaged."""
    if not ns.ensemble:
        return _model_path(ns.model)
    return Path(ns.model) if Path(ns.model).exists() else rundir.run_folder(ns.model).path


def _predictor(ns: argparse.Namespace, model: Path | str) -> Any:
    """The Predictor the flags ask for: calibrated unless --uncalibrated, prediction sets with --coverage,
    the mean of a k-fold run's fold models with --ensemble."""
    from core.evaluation.conformal import SetRule
    from core.evaluation.ensemble import EnsemblePredictor
    from core.evaluation.predict import Predictor

    if ns.ensemble and ns.site:
        raise CliError("--site applies one model's site temperature: not with --ensemble")
    pred: Any = (
        EnsemblePredictor(model, calibrated=not ns.uncalibrated)
        if ns.ensemble
        else Predictor(model, calibrated=not ns.uncalibrated, site=ns.site)
    )
    if ns.coverage is not None:
        pred.use_sets(SetRule(ns.coverage, ns.set_score, ns.mondrian))
    return pred


def _set_coverage(pred: Any, df: Any) -> dict[str, Any] | None:
    """Coverage, referral rate and accuracy of the answered on a labelled prediction table (with --coverage)."""
    from core.evaluation import conformal, evaluate

    labelled = evaluate.labelled(df)
    if pred.set_rule is None or not len(labelled):
        return None
    y, probs = evaluate.labels_and_probs(labelled, pred.classes)
    return conformal.coverage_report(y, probs, pred.conformal, pred.set_rule)


def cmd_evaluate(ns: argparse.Namespace) -> dict[str, Any]:
    """Score a saved model on a labelled test set (folder or CSV, DICOM included); report beside validation."""
    from core.evaluation.predict import score_source

    model = _model_arg(ns)
    pred = _predictor(ns, model)
    line = StepLine("evaluate")
    scored = score_source(pred, source_config(ns), tta=ns.tta, threshold=ns.threshold, progress=line)
    line.close()
    df = scored.predictions
    if ns.out:
        df.to_csv(ns.out, index=False)
    out = {
        "n": len(df),
        "metrics": scored.metrics,
        "problems": len(scored.problems),
        "out": ns.out or None,
        "scored": _scored(df, pred.classes, ns.threshold, pred.task, pred.manifest.task.get("thresholds")),
        "prediction_sets": _set_coverage(pred, df),
    }
    if ns.recalibrate_site or ns.recalibrate_by:
        out["site_calibration"] = _recalibrate_sites(ns, model, pred, df)
    run = rundir.of_model(model)
    if ns.no_report:
        return out
    if run is None:
        out["report"] = None
        out["report_note"] = (
            "the model is not inside a run folder: no validation metrics to set beside the test"
        )
        return out
    from core.evaluation.report import build_report

    rep = build_report(
        run.path,
        ns.report_dir or run.report_folder(external=True),
        test_predictions=df,
        threshold=ns.threshold,
        png=False if ns.no_png else None,
        progress=line,
    )
    line.close()
    out.update(report=rep["report"], comparison=rep["comparison"], png_note=rep["png_note"] or None)
    return out


def _recalibrate_sites(ns: argparse.Namespace, model: Path | str, pred: Any, df: Any) -> dict[str, Any]:
    """evaluate --recalibrate-site / --recalibrate-by: a temperature per site with cross-fitted ECE before / after,
    kept in the saved model (core.evaluation.site_calibration)."""
    import numpy as np
    import pandas as pd

    from core.evaluation import site_calibration
    from core.models.savedmodel import find_manifest

    if ns.site or ns.ensemble or pred.task != "single":
        raise CliError("recalibrating a site needs one single-label model without --site or --ensemble")
    if ns.recalibrate_site:
        sites = np.full(len(df), ns.recalibrate_site.strip())
    else:
        meta = pd.read_csv(ns.csv_path, dtype=str, keep_default_na=False) if ns.csv_path else None
        sites = site_calibration.row_sites(df, ns.recalibrate_by, meta, ns.path_col)
    reports = site_calibration.recalibrate(df, pred.classes, sites, pred.temperature)
    stored = site_calibration.store(find_manifest(model).parent, reports)
    return {
        "sites": site_calibration.table(reports).to_dict("records"),
        "stored": stored,
        "note": "ECE after is cross-fitted (5 folds: each image rescaled by a temperature fitted without it); "
        "use a stored site with `predict --site NAME`",
    }


def _finished_run(arg: str) -> Path:
    """A finished run folder given by path or by its name under the runs folder."""
    run = rundir.run_folder(arg)
    if run.is_finished():
        return run.path
    from core.train.finish import why_not_finishable

    hint = (
        f"; make a model from its best checkpoint with `python -m core finish {run}`"
        if (run.path.is_dir() and not why_not_finishable(run))
        else ""
    )
    raise CliError(
        f"no finished run at {arg} (a run folder holds {rundir.METRICS} once training is done){hint}"
    )


def cmd_report(ns: argparse.Namespace) -> dict[str, Any]:
    """A run's evaluation report: metrics with CIs, figures (HTML, PNG when possible), report.html."""
    from core.evaluation.report import build_report

    run = _finished_run(ns.run)
    rep = build_report(
        run,
        ns.out or None,
        threshold=ns.threshold,
        prevalence=ns.prevalence,
        n_resamples=ns.n_boot,
        seed=ns.seed,
        png=False if ns.no_png else None,
        progress=(line := StepLine("report")),
    )
    line.close()
    return {
        k: rep[k]
        for k in ("report", "metrics", "png_ok", "png_note", "headline", "comparison", "calibration")
    } | {"figures": len(rep["figures"])}


def cmd_finish(ns: argparse.Namespace) -> dict[str, Any]:
    """Turn a crashed / interrupted run's best checkpoint into a model folder with predictions and metrics."""
    from core.train.finish import finish_from_checkpoint

    run = rundir.run_folder(ns.run)
    if not run.path.is_dir():
        raise CliError(f"no run folder at {ns.run}")
    summary = finish_from_checkpoint(run.path)
    return {
        "run": str(run),
        "model": str(run.model_dir),
        "metrics": summary["metrics"],
        "note": summary["finished_from_checkpoint"]["note"],
    }


def cmd_resume(ns: argparse.Namespace) -> dict[str, Any]:
    """Queue a failed / interrupted / cancelled run again to continue from its last complete epoch."""
    from core.runs import jobs
    from core.train.resume import queue_resume

    run = rundir.run_folder(ns.run)
    if not run.path.is_dir():
        raise CliError(f"no run folder at {ns.run}")
    store = jobs.JobStore()
    return _follow_job(store, queue_resume(run.path, store=store), ns.background)


def _decision_args(p: argparse.ArgumentParser) -> None:
    """--threshold and --tta (prediction and evaluation)."""
    p.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="binary models: predict the second class when its probability >= this (default 0.5)",
    )
    p.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average over shifted / zoomed views and the mirror images training allowed "
        "(about 8x slower)",
    )
    p.add_argument(
        "--coverage",
        type=float,
        default=None,
        help="add conformal prediction sets at this coverage (e.g. 0.9): columns set and refer (set size != 1)",
    )
    p.add_argument("--set-score", choices=("lac", "aps"), default="lac", help="conformal score (default lac)")
    p.add_argument(
        "--mondrian", action="store_true", help="class-conditional sets: the coverage holds within each class"
    )
    p.add_argument(
        "--ensemble",
        action="store_true",
        help="--model is a k-fold run: average its fold models' probabilities (one model made of k)",
    )
    p.add_argument(
        "--uncalibrated",
        action="store_true",
        help="raw probabilities: ignore the temperature the model carries (default: apply it)",
    )
    p.add_argument(
        "--site",
        default="",
        help="the images come from this site: apply the temperature the model keeps for it "
        "(fitted with evaluate --recalibrate-site; a DICOM site by its name or pseudonym)",
    )


def cmd_calibrate(ns: argparse.Namespace) -> dict[str, Any]:
    """(Re)fit a finished run's temperature on its validation / out-of-fold predictions, or remove it (--off)."""
    from core.evaluation.calibration import report_table
    from core.train.calibrate import calibrate_run

    run = _finished_run(ns.run)
    t = calibrate_run(run, off=ns.off)
    out: dict[str, Any] = {"run": str(run), "temperature": t.to_dict() if t else None}
    if t is None and not ns.off:
        out["note"] = "too few validation predictions (or no errors among them) to fit a temperature"
    if t is not None:
        from core.evaluation.calibration import calibration_report

        rep = calibration_report(run, n_resamples=ns.n_boot)
        out["before_after"] = report_table(rep).to_dict("records") if rep else []
    return out


def cmd_subgroups(ns: argparse.Namespace) -> dict[str, Any]:
    """Metrics per metadata group (patient-level CIs), the worst-group gap and warnings, on a run's test set."""
    import pandas as pd

    from core.evaluation import subgroups

    run = _finished_run(ns.run)
    by = [c.strip() for c in ns.by.split(",") if c.strip()]
    meta = pd.read_csv(ns.meta, dtype=str, keep_default_na=False) if ns.meta else None
    if meta is not None and ns.path_col not in meta:
        raise CliError(f"{ns.meta} has no column {ns.path_col!r} (choose it with --path-col)")
    out = subgroups.run_subgroups(
        run,
        meta,
        by,
        ns.path_col,
        ns.set or None,
        ns.threshold,
        ns.n_boot,
    )
    return {
        "set": out["set"],
        "patient_level": out["patient_level"],
        "groups": {c: subgroups.table(r).to_dict("records") for c, r in out["reports"].items()},
        "gaps": {c: r["gap"] for c, r in out["reports"].items()},
        "warnings": [w for r in out["reports"].values() for w in r["warnings"]],
    }


def cmd_checklist(ns: argparse.Namespace) -> dict[str, Any]:
    """The reporting checklist of a run as Markdown, and a model card in its saved model folder."""
    from core.base.fsutil import atomic_write_text
    from core.evaluation import checklist, evaluate

    run = rundir.RunFolder(_finished_run(ns.run))
    items = checklist.checklist(run.path, ns.n_boot)
    out = Path(ns.out) if ns.out else run.report_folder() / "checklist.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, checklist.to_markdown(items, run.path.name))
    cards = []
    for model_dir in run.models().values():
        classes = list(evaluate.run_summary(run.path)["classes"])
        atomic_write_text(model_dir / "MODEL_CARD.md", checklist.model_card(items, run.path.name, classes))
        cards.append(str(model_dir / "MODEL_CARD.md"))
    return {
        "checklist": str(out),
        "model_cards": cards,
        "filled": sum(not i.by_person for i in items),
        "for_a_person": [i.topic for i in items if i.by_person],
    }


def cmd_export(ns: argparse.Namespace) -> dict[str, Any]:
    """Export a saved model to ONNX; verified against PyTorch with onnxruntime unless --no-verify."""
    from core.models import onnx_export, package, savedmodel

    if ns.ensemble:
        return _export_ensemble(ns)
    path = _model_path(ns.model)
    model, manifest = savedmodel.load_model(path)
    run = rundir.of_model(path)  # a binary run's threshold (its report's, else 0.5) goes into the metadata
    threshold = package.run_threshold(run, len(manifest.classes)) if run else None
    result = onnx_export.export_onnx(model, manifest, ns.onnx, verify=not ns.no_verify, threshold=threshold)
    if not ns.no_verify and not result.get("verified"):
        raise CliError(
            f"ONNX output differs from PyTorch (max abs diff {result.get('max_abs_diff')})"
            if result.get("max_abs_diff") is not None
            else result.get("note", "not verified")
        )
    return {
        **result,
        "classes": manifest.classes,
        "input": [1, manifest.n_in, manifest.img_size, manifest.img_size],
    }


def _export_ensemble(ns: argparse.Namespace) -> dict[str, Any]:
    """export --ensemble: a k-fold run's fold models as one ONNX graph (core.models.onnx_ensemble)."""
    from core.evaluation.ensemble import ensemble_ref, member_path
    from core.models import onnx_ensemble, package, savedmodel

    run = rundir.RunFolder(_model_arg(ns))
    manifest = savedmodel.read_manifest(member_path(ensemble_ref(run.path)))[0]
    threshold = package.run_threshold(run, len(manifest.classes)) if run.is_finished() else None
    result = onnx_ensemble.export_ensemble_onnx(
        run.path, ns.onnx, verify=not ns.no_verify, threshold=threshold
    )
    if not ns.no_verify and not result.get("verified"):
        raise CliError(result.get("note", "not verified"))
    return {
        **result,
        "classes": manifest.classes,
        "input": [1, manifest.n_in, manifest.img_size, manifest.img_size],
    }


def cmd_download(ns: argparse.Namespace) -> dict[str, Any]:
    """A finished run's model as a zip: weights + manifest, checked ONNX with its preprocessing, README, metrics."""
    from core.models import package

    run = rundir.run_folder(ns.run)
    if not run.path.is_dir():
        raise CliError(f"no run folder at {ns.run}")
    out = Path(ns.out) if ns.out else Path(f"{run.name}_model.zip")
    return package.package_model(run.path, out)


def _data_commands(sub: Any) -> None:
    """Commands that read a data source: sample, scan, check."""
    p = sub.add_parser("sample", help="generate the built-in synthetic sample dataset")
    p.add_argument("--root", default="", help="where (default: workspace/sample)")
    p.add_argument(
        "--task",
        choices=["single", "multilabel", "ordinal"],
        default="single",
        help="single: the pneumonia-like sample; multilabel: three findings per image; ordinal: grades KL0..KL4 "
        "(all SYNTHETIC; default single)",
    )
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("scan", help="scan a dataset: counts per class, unreadable files with reasons")
    _source_args(p)
    p.add_argument("--items-out", default="", help="write the items table to this CSV")
    p.add_argument("--problems-out", default="", help="write the problems table to this CSV")
    p.add_argument("--show-problems", type=int, default=20, help="problems listed in the output (default 20)")
    p.set_defaults(func=cmd_scan)
    p = sub.add_parser(
        "check", help="checks of the data: metadata shortcuts, duplicates across splits/patients"
    )
    _source_args(p)
    p.add_argument(
        "--size", type=int, default=224, help="decode-cache size the features read (training size)"
    )
    p.add_argument(
        "--max-distance", type=int, default=4, help="perceptual-hash bits (of 64) for near-duplicates"
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the AUC's 95%% CI")
    p.add_argument("--pairs-out", default="", help="write every duplicate pair to this CSV")
    p.add_argument("--show", type=int, default=20, help="duplicate pairs shown in the JSON")
    p.set_defaults(func=cmd_check)


def _training_commands(sub: Any) -> None:
    """Commands that train: train, kfold, lr-find, sweep."""
    p = sub.add_parser(
        "train",
        help="train a model (k-fold with --k-folds); writes a run folder",
        description="Train one model on a train/valid(/test) split and write a run folder "
        f"(config, history, model, predictions, {rundir.METRICS}).",
    )
    _source_args(p)
    _run_args(p)
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the schedule (image size, batch size, epochs: planned from the data unless given), its "
        "optimiser steps and rough time, and quicker / better alternatives; train nothing",
    )
    p.set_defaults(func=cmd_train)
    p = sub.add_parser(
        "kfold",
        help=f"k-fold cross-validation (default k={KFOLD_DEFAULT}): one model per fold",
        description="k-fold cross-validation: k models, each validated on one fold (patients kept "
        "in one fold when groups are known); out-of-fold predictions for every item, "
        "metrics per fold and their mean +- sd. Test rows stay out of every fold. "
        "--final-model adds one model on all training data for prediction.",
    )
    _source_args(p)
    _run_args(p, kfold=True)
    p.set_defaults(func=cmd_train, kfold=True)
    p = sub.add_parser("lr-find", help="LR finder: loss vs learning rate and suggestions")
    _source_args(p)
    _run_args(p)
    p.add_argument(
        "--num-it", type=int, default=None, help=f"LR finder steps (default {on_devices('lr_find_steps')})"
    )
    p.set_defaults(func=cmd_lr_find)
    p = sub.add_parser(
        "sweep",
        help="a sweep (experiment): one training run per combination of settings",
        description="Train one ordinary run per trial of a grid or random search over settings, "
        "all on the same split; the options below set the base run.",
        epilog=sweep_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _source_args(p)
    _run_args(p)
    _sweep_args(p)
    p.set_defaults(func=cmd_sweep)


def _job_commands(sub: Any) -> None:
    """Commands about jobs and runs: runs, experiments, cancel, delete, finish, resume."""
    p = sub.add_parser("runs", help="list runs/jobs and their status")
    p.add_argument("--limit", type=int, default=50, help="most recent runs listed (default 50)")
    p.add_argument("--experiment", default="", help="the trials of this experiment (sweep) instead")
    p.set_defaults(func=cmd_runs)
    p = sub.add_parser("experiments", help="list experiments (sweeps) and their status")
    p.add_argument("--limit", type=int, default=50, help="most recent experiments listed (default 50)")
    p.set_defaults(func=cmd_experiments)
    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser(
        "delete",
        help="delete a finished run (folder + job) or an experiment (record + its trial runs)",
        description="Delete a run that is not queued or running (its run folder and its job rows, fold jobs "
        "included) or an experiment with no active trial (its record and every trial's run). Without --yes "
        "it only prints what would be deleted and exits 1.",
    )
    p.add_argument("target", metavar="RUN_OR_EXPERIMENT_ID", help="job id, run folder, or experiment id")
    p.add_argument("--yes", action="store_true", help="really delete")
    p.set_defaults(func=cmd_delete)
    p = sub.add_parser("finish", help="make a model from the best checkpoint of a failed or interrupted run")
    p.add_argument("run", help="run folder (or its id)")
    p.set_defaults(func=cmd_finish)
    p = sub.add_parser(
        "resume",
        help="continue a failed, interrupted or cancelled run from its last complete epoch",
        description="Queue the run again in its own folder: it continues from the state saved at the end of "
        "its last complete epoch (weights, optimiser, schedule, random generators) to its planned epochs, "
        f"appending to {rundir.HISTORY}. Refused with the reason when the run finished, is k-fold, has no "
        "resumable state or the state is damaged.",
    )
    p.add_argument("run", help="run folder (or its id)")
    p.add_argument("--background", action="store_true", help="queue it and return at once")
    p.set_defaults(func=cmd_resume)


def _defend_commands(sub: Any) -> None:
    """calibrate and subgroups: results a lab can defend."""
    p = sub.add_parser(
        "calibrate", help="fit (again) the temperature of a finished run, or remove it with --off"
    )
    p.add_argument("run", help="run folder (or its name under the runs folder)")
    p.add_argument("--off", action="store_true", help="remove the temperature: raw probabilities again")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.set_defaults(func=cmd_calibrate)
    p = sub.add_parser("subgroups", help="metrics per subgroup / site with CIs and the worst-group gap")
    p.add_argument("run", help="run folder (or its name under the runs folder)")
    p.add_argument("--meta", default="", help="CSV with a path column and the metadata columns")
    p.add_argument(
        "--by",
        required=True,
        help="column(s), comma-separated (e.g. sex,site); DICOM tags as dicom:<Keyword>: "
        "dicom:PatientSex, dicom:PatientAge (a band), dicom:Manufacturer, dicom:ManufacturerModelName, "
        "dicom:ViewPosition, dicom:BodyPartExamined, dicom:InstitutionName (a pseudonymised site)",
    )
    p.add_argument("--path-col", default="path", help="the metadata CSV's path column (default path)")
    p.add_argument("--set", default="", help="test, oof or valid (default: test when the run has one)")
    p.add_argument("--threshold", type=float, default=None, help="binary decision threshold (default 0.5)")
    p.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples (patients) for the 95%% CIs")
    p.set_defaults(func=cmd_subgroups)
    p = sub.add_parser("checklist", help="CLAIM / TRIPOD+AI checklist from a run (Markdown) + a model card")
    p.add_argument("run", help="run folder (or its name under the runs folder)")
    p.add_argument(
        "--out", default="", help=f"Markdown file (default <run>/{rundir.REPORT_DIR}/checklist.md)"
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.set_defaults(func=cmd_checklist)


def _recalibrate_args(p: argparse.ArgumentParser) -> None:
    """evaluate's per-site recalibration options."""
    p.add_argument(
        "--recalibrate-site",
        default="",
        help="these images come from one new site of this name: fit its temperature (cross-fitted ECE before / "
        "after) and keep it in the model for `predict --site NAME`",
    )
    p.add_argument(
        "--recalibrate-by",
        default="",
        help="as --recalibrate-site, one temperature per site of this column: a CSV column, or a DICOM tag "
        "such as dicom:InstitutionName (kept as a pseudonym)",
    )


def _model_commands(sub: Any) -> None:
    """Commands that use a trained model: predict, evaluate, report, export, download."""
    p = sub.add_parser("predict", help="predict a folder or a file with a trained model; CSV out")
    p.add_argument("--model", required=True, help=f"run folder, model folder or {rundir.MODEL_MANIFEST}")
    p.add_argument("input", nargs="?", default="", help="image/DICOM file or folder (or use --csv)")
    p.add_argument("--csv", dest="csv_path", default="", help="CSV of paths (labelled or names only)")
    p.add_argument("--path-col", default="path")
    p.add_argument("--label-col", default="label", help="labels to score against, when the CSV has them")
    p.add_argument("--root", default="", help="image root for --csv paths (default: the CSV's folder)")
    p.add_argument("--out", default="", help="CSV file for the predictions")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--show", type=int, default=10)
    p.add_argument(
        "--thresholds",
        default="",
        help="multi-label models: per-finding thresholds, e.g. Effusion=0.3,Nodule=0.6 (the others keep the "
        "ones chosen on the validation set)",
    )
    _decision_args(p)
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("evaluate", help="score a trained model on a labelled test folder/CSV")
    p.add_argument("--model", required=True, help=f"run folder, model folder or {rundir.MODEL_MANIFEST}")
    _source_args(p)
    p.add_argument("--out", default="", help="CSV file for the per-item predictions")
    _decision_args(p)
    p.add_argument(
        "--report-dir",
        default="",
        help=f"where the report goes (default: <run>/{rundir.EXTERNAL_REPORT_DIR})",
    )
    _recalibrate_args(p)
    p.add_argument("--no-report", action="store_true", help="metrics only, no report")
    p.add_argument("--no-png", action="store_true", help="HTML figures only")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("report", help="evaluation report of a run: metrics with CIs, figures, report.html")
    p.add_argument("run", help="run folder (or its name under the runs folder)")
    p.add_argument("--out", default="", help=f"output folder (default: <run>/{rundir.REPORT_DIR})")
    p.add_argument("--threshold", type=float, default=None, help="binary decision threshold (default 0.5)")
    p.add_argument(
        "--prevalence", type=float, default=None, help="prevalence for PPV/NPV (default: the sample's)"
    )
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--no-png", action="store_true", help="HTML figures only")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("export", help="export a trained model to ONNX (checked against PyTorch)")
    p.add_argument("--model", required=True, help=f"run folder, model folder or {rundir.MODEL_MANIFEST}")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument(
        "--ensemble", action="store_true", help="--model is a k-fold run: one graph averaging its fold models"
    )
    p.set_defaults(func=cmd_export)
    p = sub.add_parser(
        "download",
        help="a finished run's model as a zip a lab can take away: weights + manifest, ONNX, README, metrics",
    )
    p.add_argument("--run", required=True, help="run folder (or its name under the runs folder)")
    p.add_argument("--out", default="", help="output .zip (default: <run name>_model.zip here)")
    p.set_defaults(func=cmd_download)


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of all commands."""
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    parser.add_argument("--version", action="version", version=label())
    sub = parser.add_subparsers(dest="command", required=True)
    from core.web import users_cli

    for add in (
        _data_commands,
        _training_commands,
        _job_commands,
        _model_commands,
        _defend_commands,
        users_cli.add_commands,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; print its JSON result; exit 1 with a message on bad input."""
    ns = build_parser().parse_args(argv)
    try:
        result = ns.func(ns)
    except (CliError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0
