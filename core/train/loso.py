"""Leave-one-site-out cross-validation on k-fold's machinery: the folds are the sites (core.data.sites), one model
per held-out site, and the summary reports each held-out site's metrics with patient-level CIs
(core.evaluation.subgroups), the worst-site gap and the spread of the sites' values.

The held-out site also validates its fold's training (best epoch, early stopping) as in k-fold, so its numbers
are slightly optimistic; a separate test set or a fixed epoch count avoids that.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd

from core.base.config import RunConfig, to_dict
from core.data import sites
from core.evaluation import subgroups
from core.runs import rundir
from core.runs.progress import Progress
from core.train.learner import TrainingError

KEY = "loso"  # metrics.json's record of a leave-one-site-out run
SITE = (
    "site"  # the column of items.csv and of the out-of-fold predictions that names each row's held-out site
)


def is_loso(cfg: RunConfig) -> bool:
    """True for a leave-one-site-out run."""
    return cfg.data.split.method == "loso"


def resolved(cfg: RunConfig, run: rundir.RunFolder) -> RunConfig:
    """A loso run's config with k = its number of sites as planned by an earlier pass (config.json), else k = 0."""
    if not is_loso(cfg):
        return cfg
    saved = run.read_config_dict() if run.config.is_file() else {}
    out = copy.deepcopy(cfg)
    out.data.split.k_folds = int(saved.get("data", {}).get("split", {}).get("k_folds", 0) or 0)
    return out


def plan(
    cfg: RunConfig, items: pd.DataFrame, run: rundir.RunFolder, progress: Progress
) -> tuple[RunConfig, list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The folds (one per site; SplitError with the reason when they cannot be made), the config with k = the number
    of sites (written to config.json) and each item's site (recorded in items.csv by `record_sites`)."""
    col = cfg.data.split.site_col
    if cfg.data.task.type != "single":
        raise TrainingError("leave-one-site-out is for single-label runs (one class per image) for now")
    progress.update(force=True, phase="scanning", message=f"reading each image's site ({col})")
    try:
        site = sites.site_values(items, col)
        folds, names = sites.site_folds(items, site)
    except sites.SplitError as err:
        raise TrainingError(f"leave-one-site-out refused: {err}") from None
    out = copy.deepcopy(cfg)
    out.data.split.k_folds = len(names)
    run.write(rundir.CONFIG, to_dict(out))
    progress.log(f"leave-one-site-out over {len(names)} sites of {col}: " + ", ".join(names))
    return out, folds, site


def record_sites(run: rundir.RunFolder, site: np.ndarray) -> None:
    """items.csv gains the site column (after k-fold's fold column)."""
    snap = run.read_items()
    snap[SITE] = site
    snap.to_csv(run.items, index=False)


def with_sites(run: rundir.RunFolder, oof: pd.DataFrame) -> pd.DataFrame:
    """Out-of-fold predictions with the site each row was held out with (by fold, from items.csv)."""
    items = run.read_items()
    site_of = dict(zip(items["fold"], items[SITE].astype(str)))
    return oof.assign(**{SITE: oof["fold"].astype(int).map(site_of).fillna("").to_numpy()})


def summary(run: rundir.RunFolder, oof: pd.DataFrame, classes: list[str], site_col: str) -> dict:
    """metrics.json's "loso": each held-out site's metrics with patient-level CIs, the worst-site gap, the spread."""
    items = run.read_items()
    df = oof.assign(_patient=subgroups.patients_of(oof["path"], items) if "group" in items else "")
    by_patient = bool((df["_patient"] != "").all())
    rep = subgroups.subgroup_report(df, classes, SITE, "_patient" if by_patient else None)
    return {
        "site_col": site_col,
        "sites": [g["group"] for g in rep["groups"]],
        "patient_level": by_patient,
        "per_site": rep["groups"],
        "gap": rep["gap"],
        "spread": spread(rep["groups"], subgroups.default_metrics(classes)),
        "warnings": rep["warnings"],
    }


def spread(groups: list[dict], metrics: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Across the held-out sites, for each metric: min, max and sd of the sites' values (NaN values skipped)."""
    out = {}
    for m in metrics:
        v = np.array([g[m]["value"] for g in groups], dtype=float)
        v = v[np.isfinite(v)]
        out[m] = {
            "min": float(v.min()) if len(v) else math.nan,
            "max": float(v.max()) if len(v) else math.nan,
            "sd": float(v.std(ddof=1)) if len(v) > 1 else math.nan,
        }
    return out
