"""What a sweep varies and each trial's settings: axes (NAME=V1,V2 or LO:HI ranges over the settings the
schema marks sweepable, each bounded), the spec (grid / random / tpe, trial and time budgets, metric, pruner)
with its caps, the grid and random plans, a trial's RunConfig, and reading an experiment's record.

Caps: a sweep runs at most `max_trials()` trials ($XRT_MAX_TRIALS, default 100); every swept value must lie
within its setting's declared range (or its widget bounds), refused otherwise.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.base import choices, paths
from core.base.config import AUG_PRESETS, ConfigError, RunConfig, aug_preset, from_dict
from core.base.schema import Meta, Setting, put
from core.runs import jobs, rundir

MODES = ("grid", "random", "tpe")  # tpe: model-based (Optuna's TPE sampler, core.train.sweep_search)
METRICS = (
    "balanced_accuracy",
    "accuracy",
    "roc_auc",
)  # validation metrics with bootstrap CIs; higher is better
DEFAULT_RANDOM_TRIALS = 8
DEFAULT_GRID_POINTS = 3  # points of a range without a count in grid mode
DEFAULT_MAX_TRIALS = 100  # the cap on a sweep's trials unless $XRT_MAX_TRIALS says otherwise


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
        Meta(sweep="augmentation strength: multiplies rotation, zoom, warp and lighting", range=(0.0, 3.0)),
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
            axis = _range_axis(key, spec)
        else:
            axis = Axis(key, values=tuple(dict.fromkeys(cast(key, v) for v in spec.split(",") if v.strip())))
    except ValueError as err:
        raise ConfigError(f"cannot read the values of {key} from {spec!r}: {err}; {SYNTAX}") from None
    return check_bounds(axis)


def bounds(name: str) -> tuple[float, float] | None:
    """The values a setting may be swept over: its declared range, else its widget bounds (None: a choice)."""
    meta = SETTINGS[name].meta
    if meta.range is not None:
        return meta.range
    if meta.lo is not None and meta.hi is not None:
        return (meta.lo, meta.hi)
    return None


def check_bounds(axis: Axis) -> Axis:
    """The axis when every value (or both ends of its range) is within the setting's bounds; else ConfigError."""
    lo_hi = bounds(axis.name)
    ends = [v for v in axis.values if isinstance(v, (int, float))] or [axis.lo, axis.hi]
    if lo_hi is None or SETTINGS[axis.name].kind is str:
        return axis
    bad = [v for v in ends if not (isinstance(v, (int, float)) and lo_hi[0] <= v <= lo_hi[1])]
    if bad:
        raise ConfigError(
            f"{axis.name} can be swept within {lo_hi[0]:g}..{lo_hi[1]:g} only; got {', '.join(f'{v:g}' for v in bad)}"
        )
    return axis


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
    trials: int = 0  # most trials (grid: 0 = every point; random, tpe: 0 = DEFAULT_RANDOM_TRIALS)
    budget_min: float = 0.0  # 0 = no time budget; trials not started by then are cancelled
    metric: str = "balanced_accuracy"  # validation metric that ranks trials
    median_stop_epoch: int = 0  # > 0 (older spelling): the median pruner from this epoch on
    seed: int = 0  # seed of the random search / the sampler (and of the grid subset when trials < points)
    name: str = ""
    pruner: str = (
        "none"  # "median" or "asha": a trial stops itself when its pruner says so (core.train.pruning)
    )
    prune_epoch: int = 1  # the first epoch (1-based) the pruner may stop a trial at (asha: its first rung)
    parallel: int = 0  # tpe: trials running at once (0 = the job slots, executors.max_jobs())

    def validate(self) -> SweepSpec:
        """Refuse a spec that cannot run; return self."""
        if self.mode not in MODES:
            raise ConfigError(f"sweep mode must be grid or random, got {self.mode!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"metric must be one of {', '.join(METRICS)}; got {self.metric!r}")
        if self.pruner not in ("none", "median", "asha"):
            raise ConfigError(f"pruner must be none, median or asha; got {self.pruner!r}")
        if min(self.trials, self.budget_min, self.median_stop_epoch, self.prune_epoch, self.parallel) < 0:
            raise ConfigError("trials, budget, pruning epochs and parallel trials must not be negative")
        if self.trials > max_trials():
            raise ConfigError(f"at most {max_trials()} trials per sweep ($XRT_MAX_TRIALS); got {self.trials}")
        parsed = [parse_axis(a) for a in self.axes]
        if not parsed:
            raise ConfigError(f"give at least one setting to sweep: {SYNTAX}")
        names = [a.name for a in parsed]
        if len(set(names)) < len(names):
            raise ConfigError(f"a setting is swept twice: {', '.join(names)}")
        points = math.prod(len(a.grid()) for a in parsed)
        if self.mode == "grid" and not self.trials and points > max_trials():
            raise ConfigError(
                f"the grid has {points} points, more than the cap of {max_trials()} trials ($XRT_MAX_TRIALS); "
                "give a number of trials or fewer values"
            )
        return self

    def parsed(self) -> list[Axis]:
        """The axes, parsed."""
        return [parse_axis(a) for a in self.axes]


def max_trials() -> int:
    """The most trials one sweep may run ($XRT_MAX_TRIALS, default DEFAULT_MAX_TRIALS)."""
    return max(1, paths.env_int("XRT_MAX_TRIALS", DEFAULT_MAX_TRIALS))


def trial_budget(spec: SweepSpec) -> int:
    """How many trials the sweep runs in all (grid: its points, or `trials` of them)."""
    if spec.mode == "grid":
        points = math.prod(len(a.grid()) for a in spec.parsed())
        return min(points, spec.trials) if spec.trials else points
    return spec.trials or DEFAULT_RANDOM_TRIALS


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


def spec_of(record: dict[str, Any]) -> SweepSpec:
    """The record's SweepSpec."""
    return from_dict(SweepSpec, record["spec"])


def base_of(record: dict[str, Any]) -> RunConfig:
    """The record's base RunConfig."""
    return from_dict(RunConfig, record["base_config"])


def child_jobs(record: dict[str, Any], store: jobs.JobStore) -> dict[str, jobs.Job | None]:
    """Each queued trial's job row (None when the job store no longer has it; a trial being queued is left out)."""
    return {t["job"]: store.get(t["job"]) for t in record["trials"] if t.get("job")}


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
