"""Per-site recalibration: a temperature fitted on a new site's labelled images, judged on images it was not fitted on.

The site's images are cut into 5 folds (stratified by class); each fold's probabilities are rescaled with a
temperature fitted on the other four (cross-fitting), so the ECE after recalibration is measured on images the
temperature did not see; the temperature kept for the site is then fitted on all of its images. ECE and Brier
before / after come with paired bootstrap CIs (core.evaluation.calibration.compare). Folds are by image: several
images of one patient make the "after" slightly optimistic. The kept temperature goes to the saved model's manifest
(core.models.site_temperature) and Predict applies it when the user names the site.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold, StratifiedKFold

from core.base import fmt
from core.data import dicom_groups
from core.evaluation import calibration, evaluate, subgroups
from core.models import site_temperature
from core.models import temperature as temp

MIN_SITE = 40  # labelled images a site needs before a temperature is fitted and judged on it
FOLDS = 5


def cross_fitted(y: np.ndarray, probs: np.ndarray, k: int = FOLDS, seed: int = 0) -> np.ndarray:
    """Each image's probabilities rescaled with a temperature fitted on the other folds (unchanged where a fold's
    training part cannot pin a temperature down)."""
    y, probs = np.asarray(y, dtype=int), np.asarray(probs, dtype=float)
    counts = np.bincount(y)
    if counts[counts > 0].min() >= k:
        splitter: Any = StratifiedKFold(k, shuffle=True, random_state=seed)
    else:
        splitter = KFold(k, shuffle=True, random_state=seed)
    out = probs.copy()
    for tr, te in splitter.split(probs, y):
        t = temp.fit_temperature(y[tr], probs[tr], "site")
        if t is not None:
            out[te] = temp.scale_probs(probs[te], t.temperature)
    return out


def site_report(
    y: np.ndarray, probs: np.ndarray, n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, Any]:
    """One site: its temperature (fitted on all its images), and ECE / Brier before and after cross-fitting."""
    n = len(y)
    if n < MIN_SITE or len(np.unique(y)) < 2:
        why = f"{n} labelled images (fewer than {MIN_SITE})" if n < MIN_SITE else "one class only"
        return {"n": n, "fitted": False, "reason": f"{why}: too few to fit and judge a temperature"}
    t = temp.fit_temperature(y, probs, "site")
    if t is None:
        return {"n": n, "fitted": False, "reason": "the images do not pin a temperature down (no errors?)"}
    after = cross_fitted(y, probs, seed=seed)
    return {
        "n": n,
        "fitted": True,
        "temperature": t.temperature,
        **calibration.compare(y, probs, after, n_resamples, seed),
    }


def recalibrate(
    df: pd.DataFrame, classes: list[str], sites: np.ndarray, base: float, n_resamples: int = 1000
) -> dict[str, dict[str, Any]]:
    """site_report for each site of a labelled predictions table (probabilities as the model gives them, i.e.
    already divided by `base`); each fitted site also gets `divisor` = base x its temperature (of the raw logits)."""
    out = {}
    sites = np.asarray(sites, dtype=str)
    for s in sorted(set(sites) - {""}):
        y, probs = evaluate.labels_and_probs(evaluate.labelled(df[sites == s]), classes)
        rep = site_report(y, probs, n_resamples)
        if rep["fitted"]:
            rep["divisor"] = base * rep["temperature"]
        out[s] = rep
    return out


def manifest_entries(reports: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The manifest records of the fitted sites: the divisor of the raw logits, n, ECE before / after (cross-fitted)."""
    return {
        s: {
            "temperature": r["divisor"],
            "relative": r["temperature"],
            "n": r["n"],
            "ece_before": r["ece"]["before"]["value"],
            "ece_after_crossfitted": r["ece"]["after"]["value"],
        }
        for s, r in reports.items()
        if r["fitted"]
    }


def store(model_dir: str | Path, reports: dict[str, dict[str, Any]]) -> list[str]:
    """Keep the fitted sites' temperatures in the saved model; returns the sites stored."""
    entries = manifest_entries(reports)
    if entries:
        site_temperature.stamp(model_dir, entries)
    return sorted(entries)


def table(reports: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per site: n, its temperature, ECE before / after (cross-fitted) / change with CIs, or why not fitted."""
    rows = []
    for s, r in reports.items():
        row: dict[str, Any] = {"site": s, "n": r["n"]}
        if r["fitted"]:
            row |= {
                "temperature": round(r["temperature"], 3),
                **{f"ECE {k}": fmt.with_ci(v) for k, v in r["ece"].items()},
            }
        else:
            row["note"] = r["reason"]
        rows.append(row)
    return pd.DataFrame(rows)


def row_sites(
    df: pd.DataFrame, by: str, meta: pd.DataFrame | None = None, path_col: str = "path"
) -> np.ndarray:
    """The site of each prediction row: a `dicom:<Keyword>` from the headers, or a column of `meta` joined by path."""
    if dicom_groups.is_dicom_column(by):
        return dicom_groups.group_table(df["path"].astype(str), [by])[by].to_numpy(dtype=str)
    if meta is None or by not in meta.columns:
        raise ValueError(
            f"no site column {by!r} in the table (a CSV column, or a DICOM tag such as dicom:InstitutionName)"
        )
    joined = subgroups.attach(df[["path"]], meta[[path_col, by]], path_col)
    return joined[by].fillna("").astype(str).to_numpy(dtype=str)
