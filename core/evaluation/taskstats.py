"""The patient-level bootstrap and small statistics the multi-label and ordinal evaluations share
(core.evaluation.multilabel, core.evaluation.ordinal); the dispatch on a run's task is core.evaluation.bytask.

The bootstrap resamples patients (the `group` column of a predictions table, pseudonymised) with replacement when the
table has groups, else items; percentile intervals with the resamples, seed and level of core.evaluation.evaluate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from core.data.splits import patient_groups
from core.evaluation import evaluate

Stat = Callable[[np.ndarray], dict[str, float]]  # row positions -> named statistics


def groups_of(df: pd.DataFrame) -> np.ndarray | None:
    """The patient of each row of a predictions table when it has them (core.data.splits.patient_groups)."""
    return patient_groups(df)


def resamples(n: int, groups: np.ndarray | None, n_resamples: int, seed: int) -> list[np.ndarray]:
    """Row positions of each bootstrap resample: whole patients drawn with replacement (items when no groups)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return list(rng.integers(0, n, size=(n_resamples, n)))
    codes, uniq = pd.factorize(pd.Series(groups))
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(len(uniq) + 1))
    members = [order[starts[g] : starts[g + 1]] for g in range(len(uniq))]
    return [
        np.concatenate([members[g] for g in rng.integers(0, len(uniq), len(uniq))])
        for _ in range(n_resamples)
    ]


def bootstrap(
    stat: Stat,
    n: int,
    groups: np.ndarray | None = None,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
    level: float = evaluate.CI_LEVEL,
) -> dict[str, dict[str, float]]:
    """{name: {"value", "lo", "hi"}}: `stat` on every row, and its percentile interval over the resamples."""
    point = stat(np.arange(n))
    if not n or n_resamples < 1:
        return {k: {"value": v, "lo": math.nan, "hi": math.nan} for k, v in point.items()}
    draws: dict[str, list[float]] = {k: [] for k in point}
    for idx in resamples(n, groups, n_resamples, seed):
        for k, v in stat(idx).items():
            if k in draws:
                draws[k].append(v)
    alpha = (1 - level) / 2
    out = {}
    for k, v in point.items():
        d = np.asarray(draws[k], dtype=float)
        d = d[np.isfinite(d)]
        lo, hi = np.quantile(d, [alpha, 1 - alpha]) if len(d) else (math.nan, math.nan)
        out[k] = {"value": float(v), "lo": float(lo), "hi": float(hi)}
    return out


def bootstrap_note(n_resamples: int, seed: int, groups: np.ndarray | None) -> dict[str, Any]:
    """How the intervals were made (resamples, seed, level, and whether patients or items were resampled)."""
    unit = "patients" if groups is not None else "items"
    return {
        "n_resamples": n_resamples,
        "seed": seed,
        "level": evaluate.CI_LEVEL,
        "method": f"percentile, {unit} resampled with replacement",
    }


def fast_auc(pos: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC AUC (Mann-Whitney with tied ranks); NaN when one side is empty."""
    from scipy.stats import rankdata

    pos = np.asarray(pos, dtype=bool)
    n1 = int(pos.sum())
    n0 = len(pos) - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(score)
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def sens_spec(pos: np.ndarray, decided: np.ndarray) -> tuple[float, float]:
    """Sensitivity and specificity of binary decisions (NaN where a side is empty)."""
    pos, decided = np.asarray(pos, dtype=bool), np.asarray(decided, dtype=bool)
    sens = float(decided[pos].mean()) if pos.any() else math.nan
    spec = float((~decided[~pos]).mean()) if (~pos).any() else math.nan
    return sens, spec


# ---------------------------------------------------------------- the dispatch
