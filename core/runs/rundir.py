"""The run folder: every file a run writes is named here once, and read or written through `RunFolder`.

A run folder (`$XRT_HOME/runs/<job id>/` by default) holds a run's config, items, progress, log, history,
checkpoints, models, predictions and metrics. Nothing outside this module spells one of these names;
it asks a `RunFolder` ("the models this run holds", "is it finished", "its predictions for set X").
The folder lives on a file system every process that touches the run can see (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.base import fmt, paths
from core.base.fsutil import atomic_write_text

if TYPE_CHECKING:  # pandas is imported where a table is read, not by everything that names a run's files
    import pandas as pd

# Files of a run folder (and of a model folder inside it).
CONFIG = "config.json"
ITEMS = "items.csv"
PROBLEMS = "problems.csv"
SPLITS = "splits.json"
HISTORY = "history.csv"
PROGRESS = "progress.json"
STOP = "STOP"
LOG = "log.txt"
WORKER_LOG = "worker.log"
JOB = "job.json"
METRICS = "metrics.json"
ENV = "env.json"
LR_FIND = "lr_find.json"
PRUNED = "pruned.json"  # a sweep trial its pruner stopped: the epoch, the value and why
CHECKPOINTS = "checkpoints"
BEST_CHECKPOINT = "best.safetensors"
RESUME_STATE = "resume.safetensors"  # last complete epoch: weights, optimiser, schedule position, RNG
MODEL_DIR = "model"
FOLDS_DIR = "folds"
FOLD_PREFIX = "fold"
FOLD_JOBS_DIR = "fold_jobs"  # k-fold with several slots: one child job's run folder per fold
FOLD_ITEMS = "fold_items.csv"  # ... and the items table (path, label, split, fold) they train on
REPORT_DIR = "report"
EXTERNAL_REPORT_DIR = "report_external"
REPORT_METRICS = "metrics_report.json"  # inside a report folder: the report's metrics with CIs
# Inside a model folder (the saved-model format, core.models.savedmodel, reads and writes these).
MODEL_MANIFEST = "model.json"
MODEL_WEIGHTS = "model.safetensors"
# Prediction tables, by the set they were made on.
PREDICTION_SETS = ("valid", "oof", "test")
PREDICTIONS_SUFFIX = "_predictions.csv"
CHECKPOINT_SUFFIX = ".safetensors"


# The one dtype policy of a run's tables: names, labels, ids, groups and paths stay text exactly as written ("0", "01",
# "007", "" for none); counters are integers; history's losses and metrics are numbers (NaN where not measured).
HISTORY_TEXT_COLUMNS = ("phase",)
ITEMS_INT_COLUMNS = ("fold",)


def read_items_csv(path: str | os.PathLike) -> pd.DataFrame:
    """An items table (items.csv, fold_items.csv): every column text, empty cells "" (never NaN); fold an int."""
    import pandas as pd

    items = pd.read_csv(path, dtype=str, keep_default_na=False)
    for col in ITEMS_INT_COLUMNS:
        if col in items:
            items[col] = pd.to_numeric(items[col], errors="coerce").fillna(-1).astype(int)
    return items


def read_history_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A history table: one row per epoch, numbers as numbers (NaN where not measured), the phase as text."""
    import pandas as pd

    return pd.read_csv(path, dtype={c: str for c in HISTORY_TEXT_COLUMNS})


def predictions_name(which: str) -> str:
    """File name of a predictions table: valid / oof (out-of-fold) / test."""
    if which not in PREDICTION_SETS:
        raise ValueError(f"unknown prediction set {which!r} (one of {', '.join(PREDICTION_SETS)})")
    return f"{which}{PREDICTIONS_SUFFIX}"


def checkpoint_name(fold: int | None = None) -> str:
    """File name of the best-epoch checkpoint of a single run (None) or of one fold (0-based)."""
    return BEST_CHECKPOINT if fold is None else f"best_{FOLD_PREFIX}{fold}{CHECKPOINT_SUFFIX}"


def json_safe(x: Any) -> Any:
    """A JSON-ready copy: NaN/inf -> None, numpy scalars -> Python numbers, tuples -> lists (recursively)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 0) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_json(path: str | os.PathLike, data: Any, durable: bool = True) -> None:
    """Atomic, strict JSON (NaN written as null) - the one way run and model files are written (durable: fsynced;
    off for files rewritten many times a second, such as progress.json)."""
    atomic_write_text(path, json.dumps(json_safe(data), indent=2, allow_nan=False, default=str), durable)


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object file; {} when absent, unreadable or not an object (e.g. caught mid-write elsewhere)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass(frozen=True)
class RunFolder:
    """One run's folder: the path of each of its files, and the questions asked about it."""

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        """The run's name on disk (its job id for default folders)."""
        return self.path.name

    # -- files -------------------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """The path of one of this module's file names inside the run folder."""
        return self.path / name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def items(self) -> Path:
        return self.path / ITEMS

    @property
    def problems(self) -> Path:
        return self.path / PROBLEMS

    @property
    def splits(self) -> Path:
        return self.path / SPLITS

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def progress(self) -> Path:
        return self.path / PROGRESS

    @property
    def stop(self) -> Path:
        return self.path / STOP

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def worker_log(self) -> Path:
        return self.path / WORKER_LOG

    @property
    def job(self) -> Path:
        return self.path / JOB

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def env(self) -> Path:
        return self.path / ENV

    @property
    def lr_find(self) -> Path:
        return self.path / LR_FIND

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def best_checkpoint(self) -> Path:
        return self.path / CHECKPOINTS / BEST_CHECKPOINT

    @property
    def resume_state(self) -> Path:
        """The state a run resumes from (core.train.resume_state), rewritten at each epoch's end."""
        return self.path / CHECKPOINTS / RESUME_STATE

    def checkpoint(self, fold: int | None = None) -> Path:
        """The best-epoch checkpoint written while training (one per fold in a k-fold run)."""
        return self.path / CHECKPOINTS / checkpoint_name(fold)

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def folds_dir(self) -> Path:
        return self.path / FOLDS_DIR

    def fold_dir(self, i: int) -> Path:
        """Folder of fold i's model (0-based, as the code counts; shown to users as i + 1)."""
        return self.path / FOLDS_DIR / f"{FOLD_PREFIX}{i}"

    def fold_job_dir(self, i: int) -> Path:
        """Run folder of fold i's child job (k-fold with several slots: each fold trains as its own job)."""
        return self.path / FOLD_JOBS_DIR / f"{FOLD_PREFIX}{i}"

    @property
    def fold_items(self) -> Path:
        return self.path / FOLD_ITEMS

    def predictions(self, which: str) -> Path:
        """The predictions table of one set: valid / oof / test."""
        return self.path / predictions_name(which)

    def result_files(self) -> list[Path]:
        """The files a finished run's results are read from (metrics, history, predictions): a cache key's parts."""
        return [self.metrics, self.history, *(self.predictions(s) for s in PREDICTION_SETS)]

    def report_folder(self, external: bool = False) -> Path:
        """Where the run's evaluation report goes (report_external/ for a report with an external test set)."""
        return self.external_report_dir if external else self.report_dir

    @property
    def report_dir(self) -> Path:
        return self.path / REPORT_DIR

    @property
    def external_report_dir(self) -> Path:
        return self.path / EXTERNAL_REPORT_DIR

    # -- questions ---------------------------------------------------------------------------------------
    def is_finished(self) -> bool:
        """Training ended with results: metrics are written (last, after the models and predictions)."""
        return self.metrics.is_file()

    def fold_models(self) -> Iterator[tuple[int, Path]]:
        """(fold index, model folder) of each saved fold model, in fold order."""
        found = []
        for p in self.folds_dir.glob(f"{FOLD_PREFIX}*"):
            idx = p.name[len(FOLD_PREFIX) :]
            if idx.isdigit() and (p / MODEL_MANIFEST).is_file():
                found.append((int(idx), p))
        yield from sorted(found)

    def fold_model(self, i: int) -> Path | None:
        """Fold i's saved model folder (0-based), None when that fold saved none."""
        folder = self.fold_dir(i)
        return folder if (folder / MODEL_MANIFEST).is_file() else None

    @property
    def model_manifest(self) -> Path:
        """The final model's manifest (model/model.json)."""
        return self.model_dir / MODEL_MANIFEST

    def relative(self, path: str | os.PathLike) -> str:
        """A path inside the run as the run records it: relative, with forward slashes (e.g. model/model.json)."""
        return Path(path).relative_to(self.path).as_posix()

    def has_final_model(self) -> bool:
        return self.model_manifest.is_file()

    def models(self) -> dict[str, Path]:
        """The saved models of this run: {"final model": model/, "fold 1": folds/fold0/, ...} (existing only)."""
        found = {"final model": self.model_dir} if self.has_final_model() else {}
        found.update({fmt.fold(i): p for i, p in self.fold_models()})
        return found

    def has_checkpoint(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.glob(f"*{CHECKPOINT_SUFFIX}"))

    def read_metrics(self) -> dict:
        return read_json(self.metrics)

    def read_config_dict(self) -> dict:
        return read_json(self.config)

    def read_progress(self) -> dict:
        return read_json(self.progress)

    def read_items(self) -> pd.DataFrame:
        """items.csv (relpath, label, split, kind, group[, fold]) by the one dtype policy; OSError when absent."""
        return read_items_csv(self.items)

    def read_fold_items(self) -> pd.DataFrame:
        """fold_items.csv (path, label, split, fold): the items the fold jobs of a run train on."""
        return read_items_csv(self.fold_items)

    def read_history(self) -> pd.DataFrame:
        """history.csv by the one dtype policy; OSError when absent, ValueError when empty or torn."""
        return read_history_csv(self.history)

    def read_lr_find(self) -> dict:
        return read_json(self.lr_find)

    def read_job(self) -> dict:
        return read_json(self.job)

    def read_env(self) -> dict:
        return read_json(self.env)

    def write(self, name: str, data: Any, durable: bool = True) -> Path:
        """Write one JSON file of the run (atomic, NaN-free; durable: fsynced); returns its path."""
        path = self.file(name)
        write_json(path, data, durable)
        return path


def run_folder(arg: str | os.PathLike) -> RunFolder:
    """A run folder given by path, or by its name under the runs folder (the path need not exist yet)."""
    p = Path(arg)
    if p.is_dir() or p.is_absolute() or len(p.parts) > 1:
        return RunFolder(p)
    cand = paths.runs_dir() / p
    return RunFolder(cand if cand.is_dir() else p)


def of_model(model: str | os.PathLike) -> RunFolder | None:
    """The finished run a model (manifest or model folder) belongs to, or None for a stand-alone model."""
    p = Path(model)
    folder = p if p.is_dir() else p.parent
    for cand in (folder, folder.parent, folder.parent.parent):
        run = RunFolder(cand)
        if run.is_finished():
            return run
    return None


# Experiments (sweeps): a parent folder per experiment, its child runs are ordinary run folders.
EXPERIMENTS_DIR = "experiments"
EXPERIMENT = "experiment.json"


def experiments_dir() -> Path:
    """Folder holding one sub-folder per experiment ($XRT_HOME/experiments)."""
    return paths.sub(EXPERIMENTS_DIR)


def experiment_file(exp_id: str) -> Path:
    """The record of one experiment: experiments/<id>/experiment.json."""
    if not exp_id or Path(exp_id).name != exp_id or exp_id in (".", ".."):
        raise ValueError(f"not an experiment id: {exp_id!r}")
    return experiments_dir() / exp_id / EXPERIMENT
