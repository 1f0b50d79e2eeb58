"""Subgroups and sites: each metric per group (sex, age band, site, scanner, view ...) with patient-level bootstrap
CIs, the worst-group gap with its CI, and plain warnings when a gap's CI excludes 0 or a group is too small.

Resampling is by patient (every image of a resampled patient comes along), within each group, so images of one
patient never make a group look surer than it is. The gap is the difference between the best and the worst group
on the full sample (their identity fixed), with a CI from the same resamples. Compute only: the groups come as a
column of a predictions table (join metadata with `attach`); site names should already be pseudonyms
(core.base.privacy) and are never written anywhere by this module.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.base import fmt
from core.data import dicom_groups
from core.evaluation import evaluate
from core.runs import rundir

MIN_GROUP = 30  # fewer images than this (or one class only): the group is too small to judge
METRICS = ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc")


@dataclass(frozen=True)
class GroupStat:
    """One metric of one group: value and patient-level bootstrap CI."""

    value: float
    lo: float
    hi: float


def _weighted_auc(pos: np.ndarray, score: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Binary ROC AUC for each row of weights (resamples x items): weighted Mann-Whitney, ties count half."""
    uniq, inv = np.unique(score, return_inverse=True)
    onehot = np.zeros((len(score), len(uniq)))
    onehot[np.arange(len(score)), inv] = 1
    wp, wn = (w * pos) @ onehot, (w * ~pos) @ onehot  # weight of positives / negatives at each distinct score
    below = np.cumsum(wn, axis=1) - wn
    total = wp.sum(1) * wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (wp * (below + 0.5 * wn)).sum(1) / total, np.nan)


def _weighted(y: np.ndarray, probs: np.ndarray, pred: np.ndarray, w: np.ndarray, name: str) -> np.ndarray:
    """One metric for each row of weights (a resample's count of every image; one row of ones = the sample)."""
    right = pred == y

    def rate(mask: np.ndarray) -> np.ndarray:
        den = (w * mask).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (w * (right & mask)).sum(1) / den, np.nan)

    if name == "accuracy":
        return rate(np.ones_like(right))
    if name in ("sensitivity", "specificity"):
        return rate(y == (1 if name == "sensitivity" else 0))
    present = np.unique(y)
    if name == "balanced_accuracy":
        return np.nanmean([rate(y == c) for c in present], axis=0)
    if probs.shape[1] == 2:
        return _weighted_auc(y == 1, probs[:, 1], w)
    return np.nanmean([_weighted_auc(y == c, probs[:, c], w) for c in present], axis=0)


def _patient_weights(patients: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Resamples x images: how often each image's patient was drawn (patients with replacement)."""
    codes, uniq = pd.factorize(pd.Series(patients))
    picks = rng.integers(0, len(uniq), size=(n_resamples, len(uniq)))
    counts = np.zeros((n_resamples, len(uniq)))
    np.add.at(counts, (np.arange(n_resamples)[:, None], picks), 1)
    return counts[:, codes]


def default_metrics(classes: list[str]) -> tuple[str, ...]:
    """Binary: accuracy, sensitivity, specificity, ROC AUC; multi-class: accuracy, balanced accuracy, ROC AUC."""
    return (
        ("accuracy", "sensitivity", "specificity", "roc_auc")
        if len(classes) == 2
        else METRICS[:2] + ("roc_auc",)
    )


def _group_stats(
    y: np.ndarray, probs: np.ndarray, pred: np.ndarray, w: np.ndarray, metrics: tuple[str, ...]
) -> tuple[dict[str, GroupStat], dict[str, list[float]]]:
    """Each metric of one group with its CI, and the per-resample values (for the gap)."""
    stats, values = {}, {}
    ones = np.ones((1, len(y)))
    for m in metrics:
        values[m] = _weighted(y, probs, pred, w, m).tolist()
        ci = evaluate.draws_ci(values[m], float(_weighted(y, probs, pred, ones, m)[0]))
        stats[m] = GroupStat(ci["value"], ci["lo"], ci["hi"])
    return stats, values


def subgroup_report(
    df: pd.DataFrame,
    classes: list[str],
    group_col: str,
    patient_col: str | None = None,
    threshold: float | None = None,
    headline: str = "accuracy",
    n_resamples: int = 500,
    seed: int = evaluate.BOOTSTRAP_SEED,
    min_group: int = MIN_GROUP,
) -> dict[str, Any]:
    """Per-group metrics with patient-level CIs, the worst-group gap of `headline` with its CI, and warnings."""
    lab = evaluate.labelled(df)
    y, probs = evaluate.labels_and_probs(lab, classes)
    t = (0.5 if threshold is None else threshold) if evaluate.is_binary(classes) else None
    pred = evaluate.predict_labels(probs, t)
    groups = lab[group_col].astype(str).replace({"": "(missing)", "nan": "(missing)"}).to_numpy()
    patients = lab[patient_col].astype(str).to_numpy() if patient_col else np.arange(len(lab)).astype(str)
    metrics, rng = default_metrics(classes), np.random.default_rng(seed)
    rows, per_draw = [], {}
    for g in sorted(set(groups)):
        idx = np.flatnonzero(groups == g)
        w = _patient_weights(patients[idx], n_resamples, rng)
        stats, per_draw[g] = _group_stats(y[idx], probs[idx], pred[idx], w, metrics)
        small = len(idx) < min_group or len(np.unique(y[idx])) < 2
        rows.append(
            {"group": g, "n": len(idx), "patients": len(set(patients[idx])), "too_small": small, **stats}
        )
    gap = _gap(rows, per_draw, headline)
    return {
        "column": group_col,
        "headline": headline,
        "threshold": t,
        "patient_level": patient_col is not None,
        "groups": [{**r, **{m: dataclasses.asdict(r[m]) for m in metrics}} for r in rows],
        "gap": gap,
        "warnings": _warnings(rows, gap, group_col, min_group),
    }


def _gap(rows: list[dict[str, Any]], per_draw: dict[str, dict[str, list[float]]], metric: str) -> dict | None:
    """Best minus worst group on `metric` (groups large enough to judge), with the CI of that difference."""
    judged = [r for r in rows if not r["too_small"] and math.isfinite(r[metric].value)]
    if len(judged) < 2:
        return None
    best = max(judged, key=lambda r: r[metric].value)
    worst = min(judged, key=lambda r: r[metric].value)
    diffs = np.array(per_draw[best["group"]][metric]) - np.array(per_draw[worst["group"]][metric])
    ci = evaluate.draws_ci(diffs, best[metric].value - worst[metric].value)
    return {"metric": metric, "best": best["group"], "worst": worst["group"], **ci}


def _warnings(rows: list[dict[str, Any]], gap: dict | None, column: str, min_group: int) -> list[str]:
    """Plain sentences: a gap whose CI excludes 0, and groups too small to judge."""
    out = []
    if gap is not None and gap["lo"] > 0:
        out.append(
            f"{column} = {gap['worst']} has a lower {gap['metric'].replace('_', ' ')} than {gap['best']}: "
            f"a gap of {fmt.with_ci(gap)}, whose 95 % CI excludes 0. Look at this group's images before "
            "using the model for it."
        )
    for r in rows:
        if r["too_small"]:
            out.append(
                f"{column} = {r['group']}: {r['n']} images"
                + (" of one class only" if r["n"] >= min_group else f" (fewer than {min_group})")
                + ": too small to judge; its numbers are shown but not compared."
            )
    return out


def table(report: dict[str, Any]) -> pd.DataFrame:
    """One row per group: n, patients, each metric as a value with its CI, and whether it is too small."""
    metrics = [m for m in METRICS if m in report["groups"][0]] if report["groups"] else []
    return pd.DataFrame(
        [
            {
                report["column"]: g["group"],
                "n": g["n"],
                "patients": g["patients"],
                **{m: fmt.with_ci(g[m]) for m in metrics},
                "judged": "no: too small" if g["too_small"] else "yes",
            }
            for g in report["groups"]
        ]
    )


def attach(df: pd.DataFrame, meta: pd.DataFrame, path_col: str = "path") -> pd.DataFrame:
    """Predictions joined with metadata columns by path (exact, then by file name when that is unique)."""
    meta = meta.rename(columns={path_col: "path"}).drop_duplicates("path")
    cols = [c for c in meta.columns if c != "path" and c not in df.columns]
    out = df.merge(meta[["path", *cols]], on="path", how="left")
    names = meta.assign(_name=meta["path"].astype(str).map(lambda p: p.replace("\\", "/").rsplit("/", 1)[-1]))
    names = names.drop_duplicates("_name", keep=False).set_index("_name")
    missing = out[cols].isna().all(axis=1) if cols else pd.Series(False, index=out.index)
    if missing.any():
        key = out.loc[missing, "path"].astype(str).map(lambda p: p.replace("\\", "/").rsplit("/", 1)[-1])
        for c in cols:
            out.loc[missing, c] = key.map(names[c]).to_numpy()
    return out


def patients_of(paths: pd.Series, items: pd.DataFrame) -> pd.Series:
    """The run's (pseudonymised) patient of each predicted path, matched by its path relative to the source."""
    group_of = dict(zip(items["relpath"].astype(str), items["group"].astype(str)))

    def one(p: str) -> str:
        parts = p.replace("\\", "/").split("/")
        return next(
            (group_of[k] for k in ("/".join(parts[-i:]) for i in range(1, len(parts) + 1)) if k in group_of),
            "",
        )

    return paths.astype(str).map(one)


def with_dicom_columns(df: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Predictions with the `dicom:<Keyword>` columns among `names` read from each image's header (banded /
    pseudonymised by core.data.dicom_groups); other names are left to the metadata table."""
    wanted = [n for n in names if dicom_groups.is_dicom_column(n) and n not in df.columns]
    if not wanted:
        return df
    tags = dicom_groups.group_table(df["path"].astype(str), wanted)
    return df.assign(**{n: tags[n].to_numpy() for n in wanted})


def run_subgroups(
    run_dir: str | Path,
    meta: pd.DataFrame | None,
    by: list[str],
    path_col: str = "path",
    set_name: str | None = None,
    threshold: float | None = None,
    n_resamples: int = 500,
) -> dict[str, Any]:
    """subgroup_report of a run's test set (else out-of-fold / validation) for each metadata column in `by`.

    Columns the predictions already hold (a leave-one-site-out run's `site`) need no table. The metadata table
    is joined by path (`attach`); `dicom:<Keyword>` names are read from the images' headers
    (no table needed, `meta` may be None); patients come from the run's items.csv (its pseudonyms),
    so resampling is by patient whenever the run was split by patient.
    """
    run = rundir.RunFolder(run_dir)
    classes = list(evaluate.run_summary(run_dir)["classes"])
    frames = evaluate.load_run_predictions(run_dir)
    name = set_name or next(n for n in ("test", "oof", "valid") if n in frames)
    from_meta = [c for c in by if not dicom_groups.is_dicom_column(c) and c not in frames[name].columns]
    have = list(meta.columns) if meta is not None else []
    missing = [c for c in from_meta if c not in have]
    if missing:
        raise ValueError(
            f"the metadata table has no column(s) {', '.join(missing)} (it has {', '.join(have) or 'none'})"
            if meta is not None
            else f"no column(s) {', '.join(missing)} in the predictions: give a metadata CSV (--meta), or use "
            "DICOM tags (dicom:<Keyword>)"
        )
    df = with_dicom_columns(frames[name], by)
    if from_meta and meta is not None:
        df = attach(df, meta[[path_col, *from_meta]], path_col)
    items = run.read_items() if run.items.is_file() else pd.DataFrame(columns=["relpath", "group"])
    df["_patient"] = patients_of(df["path"], items) if "group" in items else ""
    by_patient = bool((df["_patient"] != "").all())
    reports = {
        col: subgroup_report(
            df, classes, col, "_patient" if by_patient else None, threshold, n_resamples=n_resamples
        )
        for col in by
    }
    return {"set": name, "patient_level": by_patient, "reports": reports}
