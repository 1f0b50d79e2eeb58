"""How much more data would help: a learning curve fitted to a train-fraction sweep, forecast at 2x and 4x the data.

The model is the inverse power law most learning-curve studies use, metric(f) = a - b * f^(-c), with f the fraction
of the full training set a trial used (1 = all of it), a the ceiling (at most 1 for scores in 0..1), b >= 0 and
c in (0, 2]. It is fitted by bounded least squares to every finished trial (several seeds per fraction all count)
and its uncertainty comes from a bootstrap over those points. Forecasts beyond f = 1 are extrapolation: the law is
an assumption, the validation set is small, and a different mix of images (another site) changes the curve, so
the interval is a guide, not a promise. At least `MIN_FRACTIONS` distinct fractions are needed.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd

MIN_FRACTIONS = 4
MULTIPLES = (1.0, 2.0, 4.0)  # forecast at the full data and at 2x and 4x of it
BOUNDS = ([0.0, 0.0, 0.01], [1.0, 10.0, 2.0])  # a, b, c
N_BOOT = 300
CAVEAT = (
    "Extrapolation: the curve assumes metric = a - b * n^-c keeps holding beyond the data you have; it is fitted to "
    "validation scores of single runs, and new images from another site or scanner can change it. Read the range, "
    "not the point."
)


def law(f: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """The inverse power law a - b * f^(-c)."""
    return a - b * np.power(f, -c)


def fit_law(f: np.ndarray, y: np.ndarray) -> tuple[float, float, float] | None:
    """(a, b, c) by bounded least squares; None when the fit fails."""
    from scipy.optimize import curve_fit

    start = [min(1.0, float(y.max()) + 0.02), max(1e-3, float(y.max() - y.min())), 0.5]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(law, f, y, p0=start, bounds=BOUNDS, maxfev=5000)
    except (RuntimeError, ValueError):
        return None
    return float(params[0]), float(params[1]), float(params[2])


def points(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """(train_fraction, metric) of the finished trials of a sweep's trial table."""
    if "train_fraction" not in table or metric not in table:
        return pd.DataFrame(columns=["train_fraction", metric])
    done = table[(table.get("status", "done") == "done") & table[metric].notna()]
    return done[["train_fraction", metric]].astype(float).reset_index(drop=True)


def forecast(
    fractions: np.ndarray, values: np.ndarray, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """The fitted law, the forecast at MULTIPLES of the full data with 95 % bootstrap intervals, and the curve.

    Raises ValueError with fewer than MIN_FRACTIONS distinct fractions or when the law cannot be fitted."""
    f, y = np.asarray(fractions, dtype=float), np.asarray(values, dtype=float)
    if len(np.unique(f)) < MIN_FRACTIONS:
        raise ValueError(
            f"a learning curve needs at least {MIN_FRACTIONS} different train fractions "
            f"(this sweep has {len(np.unique(f))}): e.g. --sweep train_fraction=0.125,0.25,0.5,1"
        )
    params = fit_law(f, y)
    if params is None:
        raise ValueError("the learning curve could not be fitted to these points")
    grid = np.geomspace(f.min(), max(MULTIPLES), 40)
    draws = _bootstrap(f, y, np.concatenate([MULTIPLES, grid]), n_boot, seed)
    lo, hi = (np.nanpercentile(draws, q, axis=0) for q in (2.5, 97.5)) if len(draws) else (None, None)
    at = law(np.concatenate([MULTIPLES, grid]), *params)
    k = len(MULTIPLES)
    return {
        "law": "metric = a - b * f^-c (f = fraction of the full training set)",
        "params": dict(zip("abc", params)),
        "n_points": int(len(f)),
        "fractions": sorted(float(v) for v in np.unique(f)),
        "forecast": [_entry(m, at[i], lo, hi, i) for i, m in enumerate(MULTIPLES)],
        "ceiling": float(params[0]),
        "curve": [_entry(float(g), at[k + j], lo, hi, k + j) for j, g in enumerate(grid)],
        "n_boot": int(len(draws)),
        "caveat": CAVEAT,
    }


def _entry(x: float, value: float, lo: Any, hi: Any, i: int) -> dict[str, float]:
    """One forecast point with its interval (NaN when no bootstrap fit succeeded)."""
    return {
        "multiple": float(x),
        "value": float(value),
        "lo": float(lo[i]) if lo is not None else math.nan,
        "hi": float(hi[i]) if hi is not None else math.nan,
    }


def _bootstrap(f: np.ndarray, y: np.ndarray, at: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The law refitted on points resampled with replacement, evaluated at `at` (resamples with too few distinct
    fractions, or failed fits, are skipped)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(f), len(f))
        if len(np.unique(f[idx])) < 3:
            continue
        params = fit_law(f[idx], y[idx])
        if params is not None:
            out.append(law(at, *params))
    return np.array(out)


def from_trials(table: pd.DataFrame, metric: str, n_boot: int = N_BOOT) -> dict[str, Any] | None:
    """The forecast of a sweep's trial table over train_fraction; None when it does not vary it, else the forecast
    or {"refused": reason}."""
    pts = points(table, metric)
    if pts.empty or pts["train_fraction"].nunique() < 2:
        return None
    try:
        return {"metric": metric, **forecast(pts["train_fraction"], pts[metric], n_boot)}
    except ValueError as err:
        return {"metric": metric, "refused": str(err)}
