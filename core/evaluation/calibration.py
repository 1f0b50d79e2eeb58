"""Calibration that is fitted and kept: temperature fitted on held-out predictions, and ECE / Brier before and after.

The temperature itself (fitting, the saved-model record, applying it to logits) is core.models.temperature. Here:
fitting it on a predictions table, rescaling predictions tables, and the before/after comparison with bootstrap CIs
(the resampling of core.evaluation.evaluate). A run's prediction tables hold calibrated probabilities (as Predict
gives them), and its metrics.json names the temperature under "calibration"; the raw probabilities are recovered
exactly with T' = 1/T.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.base import fmt
from core.evaluation import evaluate
from core.models import temperature as temp
from core.models.temperature import Temperature

SUMMARY_KEY = temp.KEY  # metrics.json's key for the temperature the run's tables are scaled with


def prob_columns(classes: list[str]) -> list[str]:
    """The probability columns of a predictions table, in class order."""
    return [f"prob_{c}" for c in classes]


def fit_on_frame(df: pd.DataFrame, classes: list[str], fitted_on: str) -> Temperature | None:
    """A temperature fitted on the labelled rows of a predictions table (None when too few to fit)."""
    y, probs = evaluate.labels_and_probs(evaluate.labelled(df), classes)
    return temp.fit_temperature(y, probs, fitted_on)


def scale_frame(df: pd.DataFrame, classes: list[str], temperature: float) -> pd.DataFrame:
    """A copy of a predictions table with its probabilities softmax(log p / T) (prob_pred follows pred)."""
    out = df.copy()
    cols = prob_columns(classes)
    if not len(out):
        return out
    probs = temp.scale_probs(out[cols].to_numpy(dtype=float), temperature)
    out[cols] = probs
    if "pred" in out:
        pos = out["pred"].astype(str).map({c: i for i, c in enumerate(classes)}).fillna(0).astype(int)
        out["prob_pred"] = probs[np.arange(len(out)), pos.to_numpy()]
    return out


def run_temperature(summary: Mapping[str, Any]) -> Temperature | None:
    """The temperature a run's prediction tables were scaled with (metrics.json), None when uncalibrated."""
    record = summary.get(SUMMARY_KEY)
    return Temperature.from_dict(record) if isinstance(record, Mapping) else None


def _stats(y: np.ndarray, probs: np.ndarray, n_bins: int) -> np.ndarray:
    """(ECE, Brier) of one sample."""
    return np.array([evaluate.expected_calibration_error(y, probs, n_bins), evaluate.brier_score(y, probs)])


def before_after(
    y_true: np.ndarray,
    raw: np.ndarray,
    temperature: float,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
    n_bins: int = evaluate.CALIBRATION_BINS,
) -> dict[str, dict[str, dict[str, float]]]:
    """ECE and Brier score of raw and temperature-scaled probabilities, and the change (after - before), each
    with a paired, class-stratified percentile bootstrap CI: {"ece": {"before", "after", "change"}, "brier": ...}."""
    raw = np.asarray(raw, dtype=float)
    return compare(y_true, raw, temp.scale_probs(raw, temperature), n_resamples, seed, n_bins)


def compare(
    y_true: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
    n_bins: int = evaluate.CALIBRATION_BINS,
) -> dict[str, dict[str, dict[str, float]]]:
    """ECE and Brier of two sets of probabilities of the same images (e.g. before / after a cross-fitted temperature)
    and their change, each with a paired, class-stratified bootstrap CI (the layout of before_after)."""
    y, raw, scaled = (
        np.asarray(y_true, dtype=int),
        np.asarray(before, dtype=float),
        np.asarray(after, dtype=float),
    )
    point_b, point_a = _stats(y, raw, n_bins), _stats(y, scaled, n_bins)
    idx = evaluate.bootstrap_indices(y, n_resamples, seed) if len(y) else np.zeros((0, 0), int)
    draws = np.array([[_stats(y[i], raw[i], n_bins), _stats(y[i], scaled[i], n_bins)] for i in idx])
    draws = draws.reshape(len(idx), 2, 2)
    out = {}
    for k, name in enumerate(("ece", "brier")):
        out[name] = {
            "before": evaluate.draws_ci(draws[:, 0, k], point_b[k]),
            "after": evaluate.draws_ci(draws[:, 1, k], point_a[k]),
            "change": evaluate.draws_ci(draws[:, 1, k] - draws[:, 0, k], point_a[k] - point_b[k]),
        }
    return out


def set_report(df: pd.DataFrame, classes: list[str], temperature: Temperature, **kw: Any) -> dict[str, Any]:
    """before_after of one calibrated predictions table: its raw probabilities are recovered with 1/T."""
    y, probs = evaluate.labels_and_probs(evaluate.labelled(df), classes)
    raw = temp.scale_probs(probs, 1.0 / temperature.temperature) if len(y) else probs
    return {"n": int(len(y)), **before_after(y, raw, temperature.temperature, **kw)}


def calibration_report(run_dir: str | Path, **kw: Any) -> dict[str, Any] | None:
    """The run's temperature and ECE / Brier before and after it on each of its sets (None: not calibrated).

    The set the temperature was fitted on is marked: its "after" is optimistic; the test set is the honest one.
    """
    summary = evaluate.run_summary(run_dir)
    t = run_temperature(summary)
    if t is None:
        return None
    classes = list(summary["classes"])
    sets = {
        name: {**set_report(df, classes, t, **kw), "fitted_here": name == t.fitted_on}
        for name, df in evaluate.load_run_predictions(run_dir).items()
        if len(evaluate.labelled(df))
    }
    return {"temperature": t.to_dict(), "sets": sets}


def report_table(report: Mapping[str, Any]) -> pd.DataFrame:
    """One row per set and score: before, after and change, each as a value with its CI (text)."""
    rows = []
    for name, s in report["sets"].items():
        for metric in ("ece", "brier"):
            rows.append(
                {
                    "set": name + (" (T fitted here)" if s["fitted_here"] else ""),
                    "n": s["n"],
                    "score": metric.upper() if metric == "ece" else "Brier",
                    **{k: fmt.with_ci(v) for k, v in s[metric].items()},
                }
            )
    return pd.DataFrame(rows)
