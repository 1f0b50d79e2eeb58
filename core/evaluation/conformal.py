"""Split-conformal prediction sets: a set of classes that holds the true class with probability >= the chosen
coverage, and "refer to a reader" when the set is not one class.

Calibrated on held-out predictions (the validation split, or out-of-fold after k-fold), which must be exchangeable
with the images the sets are made for: another site, scanner or population breaks the guarantee. The guarantee is
marginal (over images); the class-conditional (Mondrian) variant holds it within each true class, which matters
when one class is rare. Nonconformity scores:
- "lac" (least ambiguous set-valued classifier): 1 - p(class). Smallest sets on average.
- "aps" (adaptive prediction sets, not randomised): the probability mass of the classes at least as probable as
  this one. Larger sets, more even coverage across easy and hard images; slightly conservative (no tie-breaking
  by chance, so one image always gets the same set).
The held-out scores travel with the saved model (manifest key "conformal"), so any coverage can be chosen later.
Scores are per class of a single-label task; a multi-label or ordinal task adds its own `class_scores` entry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from core.base import fmt
from core.evaluation import evaluate

KEY = "conformal"  # the manifest key of the held-out scores
METHODS = ("lac", "aps")
METHOD_LABELS = {
    "lac": "LAC (1 - probability: smallest sets)",
    "aps": "APS (adaptive: cumulative probability)",
}
TASK_SINGLE = "single"
MIN_ITEMS = 1  # the guarantee holds for any number; with few, high coverages give every class (quantile inf)
SEP = "|"  # between the classes of a set in the `set` column
DIGITS = 6  # scores kept to this many decimals in the manifest


def _lac(probs: np.ndarray) -> np.ndarray:
    """1 - p for every class."""
    return 1.0 - probs


def _aps(probs: np.ndarray) -> np.ndarray:
    """For every class: the summed probability of the classes at least as probable as it (itself included)."""
    order = np.argsort(-probs, axis=1, kind="stable")
    sorted_p = np.take_along_axis(probs, order, axis=1)
    cum = np.cumsum(sorted_p, axis=1)
    out = np.empty_like(probs)
    np.put_along_axis(out, order, cum, axis=1)
    return out


SCORES: dict[str, Callable[[np.ndarray], np.ndarray]] = {"lac": _lac, "aps": _aps}


def class_scores(probs: np.ndarray, method: str) -> np.ndarray:
    """n x K nonconformity scores (lower = the class fits the image better)."""
    if method not in SCORES:
        raise ValueError(f"unknown conformal method {method!r}: choose one of {', '.join(METHODS)}")
    return SCORES[method](np.asarray(probs, dtype=float))


@dataclass(frozen=True)
class Calibration:
    """Held-out nonconformity scores of the true classes, per method and per true class (the manifest record)."""

    fitted_on: str  # "valid" or "oof"
    classes: list[str]
    scores: dict[str, dict[str, list[float]]] = field(
        default_factory=dict
    )  # method -> class -> sorted scores
    task: str = TASK_SINGLE

    @property
    def n(self) -> int:
        """Held-out items behind the scores."""
        return sum(len(v) for v in self.scores.get(METHODS[0], {}).values())

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored under the manifest's "conformal" key."""
        return {
            "fitted_on": self.fitted_on,
            "classes": self.classes,
            "scores": self.scores,
            "task": self.task,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """The record from its JSON object; refuses a task or method it does not know."""
        if d.get("task", TASK_SINGLE) != TASK_SINGLE or set(d.get("scores", {})) - set(METHODS):
            raise ValueError(
                f"unknown conformal record (task {d.get('task')!r}, {sorted(d.get('scores', {}))})"
            )
        scores = {
            m: {str(c): [float(v) for v in s] for c, s in per.items()} for m, per in d["scores"].items()
        }
        return cls(str(d.get("fitted_on", "")), [str(c) for c in d["classes"]], scores)


def calibrate(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], fitted_on: str
) -> Calibration | None:
    """The held-out scores of every method (None without held-out items)."""
    y, probs = np.asarray(y_true, dtype=int), np.asarray(probs, dtype=float)
    if len(y) < MIN_ITEMS:
        return None
    scores = {}
    for m in METHODS:
        true = class_scores(probs, m)[np.arange(len(y)), y]
        scores[m] = {c: sorted(np.round(true[y == i], DIGITS).tolist()) for i, c in enumerate(classes)}
    return Calibration(fitted_on, list(classes), scores)


def calibrate_frame(df: pd.DataFrame, classes: list[str], fitted_on: str) -> Calibration | None:
    """calibrate on the labelled rows of a predictions table."""
    y, probs = evaluate.labels_and_probs(evaluate.labelled(df), classes)
    return calibrate(y, probs, classes, fitted_on)


def of_manifest(manifest: Any) -> Calibration | None:
    """The held-out scores a saved model carries (None: saved without them, or a record of a task or score this
    version does not know: the model still predicts, only without prediction sets)."""
    rec = manifest.extra.get(KEY)
    try:
        return Calibration.from_dict(rec) if isinstance(rec, Mapping) else None
    except (ValueError, KeyError, TypeError):
        return None


def quantile(scores: np.ndarray | list[float], coverage: float) -> float:
    """The split-conformal threshold: the ceil((n+1) * coverage)-th smallest score (inf when n is too small)."""
    s = np.sort(np.asarray(scores, dtype=float))
    k = math.ceil((len(s) + 1) * coverage)
    return float(s[k - 1]) if 1 <= k <= len(s) else math.inf


def thresholds(cal: Calibration, coverage: float, method: str, mondrian: bool) -> np.ndarray:
    """One threshold per class: the class's own scores (Mondrian), or all scores pooled."""
    if not 0 < coverage < 1:
        raise ValueError(f"coverage must be between 0 and 1 (e.g. 0.9), got {coverage}")
    per = cal.scores[method]
    if mondrian:
        return np.array([quantile(per.get(c, []), coverage) for c in cal.classes])
    return np.full(len(cal.classes), quantile([v for s in per.values() for v in s], coverage))


def prediction_sets(
    probs: np.ndarray, cal: Calibration, coverage: float, method: str = "lac", mondrian: bool = False
) -> np.ndarray:
    """An n x K boolean matrix: class k is in image i's set when its score is within the class's threshold."""
    probs = np.asarray(probs, dtype=float)
    if probs.shape[1] != len(cal.classes):
        raise ValueError(f"{probs.shape[1]} probability columns for {len(cal.classes)} calibrated classes")
    return class_scores(probs, method) <= thresholds(cal, coverage, method, mondrian)[None, :] + 1e-12


def set_columns(sets: np.ndarray, classes: list[str]) -> tuple[list[str], np.ndarray]:
    """The `set` column ("a|b", "" for an empty set) and the `refer` flag (set size != 1)."""
    names = [SEP.join(c for c, keep in zip(classes, row) if keep) for row in sets]
    return names, sets.sum(1) != 1


@dataclass(frozen=True)
class SetRule:
    """What a user chose for prediction sets: coverage, score and whether per class."""

    coverage: float = 0.9
    method: str = "lac"
    mondrian: bool = False

    def describe(self) -> str:
        """One line for tables and captions."""
        kind = "class-conditional (Mondrian)" if self.mondrian else "marginal"
        return f"{self.coverage:.0%} coverage, {self.method.upper()} score, {kind}"


def add_sets(df: pd.DataFrame, classes: list[str], cal: Calibration, rule: SetRule) -> pd.DataFrame:
    """A predictions table with `set` and `refer` columns (the probabilities must be the calibrated ones)."""
    out = df.copy()
    probs = out[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    sets = prediction_sets(probs, cal, rule.coverage, rule.method, rule.mondrian) if len(out) else None
    names, refer = set_columns(sets, classes) if sets is not None else ([], np.zeros(0, bool))
    out["set"], out["refer"] = names, refer
    return out


# ---------------------------------------------------------------- how the sets did on a labelled set


def _outcomes(y: np.ndarray, sets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image: true class in the set, referred (size != 1), answered and right."""
    covered = sets[np.arange(len(y)), y]
    refer = sets.sum(1) != 1
    return covered, refer, covered & ~refer


def _rates(covered: np.ndarray, refer: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Rows of resamples (or one row) -> columns coverage, referral rate, accuracy among the answered."""
    kept = (~refer).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(kept > 0, right.sum(-1) / np.maximum(kept, 1), np.nan)
    return np.stack([covered.mean(-1), refer.mean(-1), acc], axis=-1)


def coverage_report(
    y_true: np.ndarray,
    probs: np.ndarray,
    cal: Calibration,
    rule: SetRule,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Empirical coverage, referral rate and accuracy among the answered images, each with a class-stratified
    bootstrap CI; mean set size, coverage per true class, and what the guarantee assumes."""
    y = np.asarray(y_true, dtype=int)
    sets = prediction_sets(probs, cal, rule.coverage, rule.method, rule.mondrian)
    covered, refer, right = _outcomes(y, sets)
    point = _rates(covered, refer, right)
    idx = evaluate.bootstrap_indices(y, n_resamples, seed) if len(y) else np.zeros((0, 0), int)
    draws = _rates(covered[idx], refer[idx], right[idx]) if len(idx) else np.zeros((0, 3))
    out: dict[str, Any] = {
        "n": int(len(y)),
        "rule": dataclasses.asdict(rule),
        "calibrated_on": cal.fitted_on,
        "n_cal": cal.n,
    }
    for k, name in enumerate(("coverage", "referral_rate", "accuracy_answered")):
        out[name] = evaluate.draws_ci(draws[:, k], point[k])
    out["mean_set_size"] = float(sets.sum(1).mean()) if len(y) else math.nan
    out["coverage_per_class"] = {
        c: float(covered[y == i].mean()) if (y == i).any() else math.nan for i, c in enumerate(cal.classes)
    }
    return out


def coverage_curve(
    y_true: np.ndarray, probs: np.ndarray, cal: Calibration, method: str, mondrian: bool, targets=None
) -> pd.DataFrame:
    """Target coverage vs empirical coverage, referral rate and accuracy among the answered (no CIs)."""
    y = np.asarray(y_true, dtype=int)
    rows = []
    for target in targets if targets is not None else np.round(np.arange(0.5, 0.995, 0.01), 2):
        covered, refer, right = _outcomes(y, prediction_sets(probs, cal, float(target), method, mondrian))
        cov, ref, acc = _rates(covered, refer, right)
        rows.append(
            {"target": float(target), "coverage": cov, "referral_rate": ref, "accuracy_answered": acc}
        )
    return pd.DataFrame(rows)


def abstain_band(y_true: np.ndarray, p_pos: np.ndarray, threshold: float, widths=None) -> pd.DataFrame:
    """Binary selective prediction: abstain (refer) when |p - threshold| < width; what is left for each width.

    Sensitivity and specificity are those of the answered images; the referral rate says how many go to a reader.
    """
    y, p = np.asarray(y_true, dtype=int), np.asarray(p_pos, dtype=float)
    rows = []
    for w in widths if widths is not None else np.round(np.arange(0.0, 0.5, 0.05), 2):
        keep = np.abs(p - threshold) >= w
        pred = (p >= threshold).astype(int)
        pos, neg = keep & (y == 1), keep & (y == 0)
        rows.append(
            {
                "band": f"{max(0.0, threshold - w):.2f}-{min(1.0, threshold + w):.2f}" if w else "none",
                "half_width": float(w),
                "referral_rate": float(1 - keep.mean()) if len(y) else math.nan,
                "accuracy_answered": float((pred == y)[keep].mean()) if keep.any() else math.nan,
                "sensitivity_answered": float(pred[pos].mean()) if pos.any() else math.nan,
                "specificity_answered": float(1 - pred[neg].mean()) if neg.any() else math.nan,
            }
        )
    return pd.DataFrame(rows)


def run_conformal(
    run_dir: str,
    rule: SetRule,
    external: pd.DataFrame | None = None,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
) -> dict[str, Any] | None:
    """Prediction sets of a run calibrated on its validation (k-fold: out-of-fold) predictions and judged on its
    test set and an external one: coverage report per set, and the curve of the last one. None: nothing to judge."""
    summary = evaluate.run_summary(run_dir)
    classes = list(summary["classes"])
    frames = evaluate.load_run_predictions(run_dir)
    fit_on = "oof" if "oof" in frames else "valid"
    cal = calibrate_frame(frames[fit_on], classes, fit_on) if fit_on in frames else None
    judged = {k: v for k, v in {"test": frames.get("test"), "external": external}.items() if v is not None}
    judged = {k: evaluate.labelled(v) for k, v in judged.items() if len(evaluate.labelled(v))}
    if cal is None or not judged:
        return None
    out: dict[str, Any] = {
        "calibrated_on": fit_on,
        "n_cal": cal.n,
        "rule": dataclasses.asdict(rule),
        "sets": {},
    }
    for name, df in judged.items():
        y, probs = evaluate.labels_and_probs(df, classes)
        out["sets"][name] = coverage_report(y, probs, cal, rule, n_resamples, seed)
        out["curve"] = coverage_curve(y, probs, cal, rule.method, rule.mondrian).to_dict("records")
        out["curve_set"] = name
        if len(classes) == 2:
            out["abstain"] = abstain_band(y, probs[:, 1], 0.5).to_dict("records")
    return out


def report_table(reports: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per rule and judged set: coverage reached, referral rate, accuracy of the answered (with CIs)."""
    rows = []
    for rep in reports:
        rule = SetRule(**rep["rule"])
        for name, s in rep["sets"].items():
            rows.append(
                {
                    "rule": rule.describe(),
                    "set": name,
                    "n": s["n"],
                    "coverage reached": fmt.with_ci(s["coverage"]),
                    "referred": fmt.with_ci(s["referral_rate"]),
                    "accuracy of the answered": fmt.with_ci(s["accuracy_answered"]),
                    "mean set size": fmt.number(s["mean_set_size"], 2),
                }
            )
    return pd.DataFrame(rows)
