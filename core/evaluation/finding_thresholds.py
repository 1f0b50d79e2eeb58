"""Per-finding decision thresholds of a multi-label model: the rule thresholds (90 % sensitivity, Youden's J, the
run's own, 0.5) and sensitivity / specificity / PPV / NPV at a chosen one, all measured on validation (k-fold:
out-of-fold) predictions, never on a test set; a {finding: threshold} override parsed and checked against the
model's findings (`predict --thresholds`); a predictions table decided again at a thresholds dict.

The Evaluation page's threshold explorer (ui.task_view) and the CLI both use these; the decisions themselves are
core.evaluation.multilabel.with_thresholds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from core.evaluation import evaluate, multilabel
from core.models.heads import DEFAULT_FINDING_THRESHOLD

RULE_LABELS = {
    "sens90": "90 % sensitivity",
    "youden": "Youden",
    "chosen": "Validation-chosen",
    "default": "0.5",
}
RULE_HELP = {
    "sens90": "The highest threshold that still finds at least 90 % of the images with this finding",
    "youden": "The threshold that maximises sensitivity + specificity - 1 (Youden's J)",
    "chosen": "The threshold the run chose for this finding on its validation set (kept in the saved model)",
    "default": "The default threshold 0.5",
}


def floor3(x: float) -> float:
    """A threshold rounded down to 3 decimals (never above the exact one, so a sensitivity target still holds)."""
    return math.floor(x * 1000) / 1000


def validation_set(frames: dict[str, pd.DataFrame]) -> tuple[str, pd.DataFrame] | None:
    """(name, labelled rows) of the set thresholds are chosen on: out-of-fold (k-fold), else validation; never test."""
    name = "oof" if "oof" in frames else "valid"
    return (name, evaluate.labelled(frames[name])) if name in frames else None


def finding_sides(df: pd.DataFrame, findings: list[str], finding: str) -> tuple[np.ndarray, np.ndarray]:
    """(1/0 targets, probabilities) of one finding on the rows where its label is known (uncertain ones left out)."""
    y, p = multilabel.targets_and_probs(df, findings)
    i = findings.index(finding)
    known = y[:, i] >= 0
    return (y[known, i] == 1).astype(int), p[known, i]


def rule_thresholds(
    df: pd.DataFrame, findings: list[str], finding: str, chosen: float | None = None
) -> dict[str, float]:
    """Each rule's threshold for one finding on a labelled validation set (RULE_LABELS order); the rules that need
    both sides are left out when the set has only one, the run's own (`chosen`) when it has none."""
    y, p = finding_sides(df, findings, finding)
    out: dict[str, float] = {}
    if 0 < int(y.sum()) < len(y):
        out["sens90"] = floor3(evaluate.threshold_for_sensitivity(y, p, 0.90))
        out["youden"] = floor3(evaluate.youden_threshold(y, p))
    if chosen is not None:
        out["chosen"] = float(chosen)
    out["default"] = DEFAULT_FINDING_THRESHOLD
    return out


def metrics_at(
    df: pd.DataFrame, findings: list[str], finding: str, threshold: float, prevalence: float | None = None
) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV (at `prevalence`, default the set's) and the 2x2 counts of one finding."""
    y, p = finding_sides(df, findings, finding)
    return evaluate.metrics_at_threshold(y, p, threshold, prevalence)


def summary_table(df: pd.DataFrame, findings: list[str], thresholds: dict[str, float]) -> pd.DataFrame:
    """One row per finding at these thresholds: its threshold, 2x2 counts, sensitivity and specificity."""
    y, p = multilabel.targets_and_probs(df, findings)
    table = multilabel.per_finding_table(y, p, multilabel.threshold_vector(findings, thresholds), findings)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["sensitivity"] = table["tp"] / (table["tp"] + table["fn"]).replace(0, np.nan)
        table["specificity"] = table["tn"] / (table["tn"] + table["fp"]).replace(0, np.nan)
    return table


def merged(
    saved: dict[str, float] | None, override: dict[str, float] | None, findings: list[str]
) -> dict[str, float]:
    """Every finding's threshold: the override's where given, else the saved (validation-chosen) one, else 0.5."""
    out = {f: float((saved or {}).get(f, DEFAULT_FINDING_THRESHOLD)) for f in findings}
    out.update({f: float(t) for f, t in (override or {}).items()})
    return out


def parse(text: str, findings: list[str]) -> dict[str, float]:
    """ "Finding=0.3,Other=0.6" as {finding: threshold}; ValueError with a plain reason for a malformed pair, an
    unknown finding or a value outside (0, 1)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, sep, value = part.rpartition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{part!r} is not FINDING=VALUE (e.g. {findings[0]}=0.3)")
        if name not in findings:
            raise ValueError(f"{name!r} is not a finding of this model (its findings: {', '.join(findings)})")
        try:
            t = float(value)
        except ValueError:
            raise ValueError(f"the threshold of {name} is {value.strip()!r}, not a number") from None
        if not 0 < t < 1:
            raise ValueError(
                f"the threshold of {name} must lie strictly between 0 and 1, got {value.strip()}"
            )
        out[name] = t
    if not out:
        raise ValueError("no FINDING=VALUE pair given (e.g. " + f"{findings[0]}=0.3)")
    return out


def describe(thresholds: dict[str, float]) -> str:
    """Thresholds as one line: "effusion=0.300; line=0.500"."""
    return "; ".join(f"{f}={t:.3f}" for f, t in thresholds.items())


def decide(df: pd.DataFrame, findings: list[str], thresholds: dict[str, float]) -> pd.DataFrame:
    """A multi-label predictions table decided again at these thresholds, with a `threshold` column naming them."""
    out = multilabel.with_thresholds(df, findings, thresholds)
    out["threshold"] = describe(merged(None, thresholds, findings))
    return out
