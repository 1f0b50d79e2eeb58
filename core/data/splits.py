"""Items table -> train / valid / test splits (stratified, grouped by patient, from folders) and k-fold indices."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from core.base.config import ConfigError, SplitConfig
from core.data.items import SourceError
from core.data.labels import class_counts, iterative_folds

if TYPE_CHECKING:
    pass


SPLITS = ("train", "valid", "test")


class SplitError(ValueError):
    """A split that cannot be made from these items; the message says why."""


# ---------------------------------------------------------------- splits


def assign_splits(items: pd.DataFrame, cfg: SplitConfig, task: str = "single") -> pd.DataFrame:
    """A copy of `items` with `split` set to train / valid / test for every row.

    Rows a source already marked "test" (a separate test folder) stay the holdout whatever the method.
    `keep_duplicates` holds out whole groups (checks.keep_duplicates_together merges duplicates into groups).
    "column" and "folder" keep the source's splits; rows without one train, and when no row is "valid"
    a validation part is carved out of train (grouped by patient when groups exist). A multi-label `task` holds
    out parts stratified over the findings (core.data.labels.iterative_folds), whole patients at a time.
    """
    cfg.validate()
    out = items.copy().reset_index(drop=True)
    if "split" not in out:
        out["split"] = ""
    out["split"] = out["split"].fillna("").astype(str)
    if cfg.method in ("column", "folder"):
        return _splits_from_source(out, cfg, task)
    method = "group" if cfg.keep_duplicates and _has_groups(out) else cfg.method  # merged duplicate groups
    if method == "loso":  # leave one site out: its folds are the sites; a test part is held out by patient
        method = "group" if _has_groups(out) else "stratified"
    fixed_test = out["split"] == "test"
    out.loc[~fixed_test, "split"] = "train"
    pool = np.flatnonzero(~fixed_test.to_numpy())
    if cfg.test_pct > 0 and not fixed_test.any():
        test_idx = _holdout(out.iloc[pool], cfg.test_pct, method, cfg.seed, task)
        out.loc[pool[test_idx], "split"] = "test"
        pool = np.flatnonzero((out["split"] == "train").to_numpy())
    valid_pct = (
        cfg.valid_pct / (1 - cfg.test_pct) if cfg.test_pct > 0 and not fixed_test.any() else cfg.valid_pct
    )
    if valid_pct > 0:
        valid_idx = _holdout(out.iloc[pool], valid_pct, method, cfg.seed + 1, task)
        out.loc[pool[valid_idx], "split"] = "valid"
    return out


def train_subset(items: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """`items` without the training rows beyond `fraction` of the train split (seeded, stratified by label).

    Validation and test rows are kept as they are, so runs with different fractions share those sets.
    """
    if fraction >= 1:
        return items
    train_pos = np.flatnonzero((items["split"] == "train").to_numpy())
    labels = items["label"].astype(str).to_numpy()[train_pos]
    n_keep = max(1, int(round(fraction * len(train_pos))))
    if n_keep >= len(train_pos):
        return items
    stratify = labels if _can_stratify(labels, 1 - fraction) and n_keep >= len(set(labels)) else None
    keep, _ = train_test_split(train_pos, train_size=n_keep, random_state=seed, stratify=stratify)
    drop = np.setdiff1d(train_pos, keep)
    return items.drop(index=items.index[drop]).reset_index(drop=True)


def _splits_from_source(out: pd.DataFrame, cfg: SplitConfig, task: str = "single") -> pd.DataFrame:
    """Keep the source's split column; fill blanks with train; carve valid when there is none."""
    bad = sorted(set(out["split"]) - {"", *SPLITS})
    if bad:
        raise SplitError(f"unknown split value(s) {bad}; use train, valid or test")
    if (out["split"] == "").all():
        raise SplitError("split method 'column' needs a split column with train/valid/test values")
    out.loc[out["split"] == "", "split"] = "train"
    if not (out["split"] == "valid").any():
        pool = np.flatnonzero((out["split"] == "train").to_numpy())
        method = "group" if _has_groups(out) else "stratified"
        valid_idx = _holdout(out.iloc[pool], cfg.valid_pct or 0.2, method, cfg.seed + 1, task)
        out.loc[pool[valid_idx], "split"] = "valid"
    return out


def _has_groups(items: pd.DataFrame) -> bool:
    """True when a non-empty group column exists."""
    return "group" in items and (items["group"].fillna("").astype(str) != "").any()


def _groups(items: pd.DataFrame) -> np.ndarray:
    """Group per row; rows without a group are their own group."""
    g = items["group"].fillna("").astype(str).to_numpy() if "group" in items else np.full(len(items), "")
    return np.where(g == "", np.array([f"__row{i}" for i in range(len(items))]), g)


def patient_groups(items: pd.DataFrame) -> np.ndarray | None:
    """The patient of each row (rows without one are their own), or None when the table has no patients."""
    return _groups(items) if _has_groups(items) else None


def _holdout(items: pd.DataFrame, pct: float, method: str, seed: int, task: str = "single") -> np.ndarray:
    """Positions (into `items`) of a held-out fraction `pct` chosen by `method`."""
    n = len(items)
    if n < 2:
        raise SplitError(f"cannot split {n} item(s)")
    idx = np.arange(n)
    labels = items["label"].astype(str).to_numpy()
    if task == "multilabel" and method != "random":  # one fold of round(1/pct), stratified over the findings
        groups = _groups(items) if method == "group" else np.arange(n).astype(str)
        return np.flatnonzero(iterative_folds(labels, groups, max(2, int(round(1 / pct))), seed) == 0)
    if method == "group":
        return _group_holdout(labels, _groups(items), pct, seed)
    stratify = labels if method == "stratified" and _can_stratify(labels, pct) else None
    _, held = train_test_split(idx, test_size=pct, random_state=seed, stratify=stratify)
    return np.sort(held)


def _can_stratify(labels: np.ndarray, pct: float) -> bool:
    """Stratification needs every class at least twice and room for each in the holdout."""
    counts = pd.Series(labels).value_counts()
    return counts.min() >= 2 and round(pct * len(labels)) >= len(counts)


def _group_holdout(labels: np.ndarray, groups: np.ndarray, pct: float, seed: int) -> np.ndarray:
    """Held-out positions with whole groups only, class-balanced when the data allows."""
    n_splits = max(2, int(round(1 / pct)))
    n_groups = len(set(groups))
    if n_groups < 2:
        raise SplitError("a split by patient needs at least 2 patients (groups)")
    if n_groups >= n_splits and pd.Series(labels).value_counts().min() >= n_splits:
        sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        _, held = next(sgkf.split(np.zeros(len(labels)), labels, groups))
        return np.sort(held)
    gss = GroupShuffleSplit(n_splits=1, test_size=pct, random_state=seed)
    _, held = next(gss.split(np.zeros(len(labels)), labels, groups))
    return np.sort(held)


def kfold_splits(
    items: pd.DataFrame, k: int, method: str = "stratified", seed: int = 42, task: str = "single"
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_idx, valid_idx) positions for k folds over the non-test rows of `items`.

    Positions index `items` itself; test rows never appear. "group" keeps every patient in one fold
    (class-balanced when possible) and is used whenever the items have a group column, whatever the
    method, so that no patient is ever in two folds; "stratified" keeps class ratios; "random" is a
    plain shuffled KFold.
    """
    if k < 2:
        raise ConfigError(f"k-fold needs k >= 2, got {k}")
    split = items["split"].fillna("").astype(str).to_numpy() if "split" in items else np.full(len(items), "")
    pool = np.flatnonzero(split != "test")
    sub = items.iloc[pool]
    labels = sub["label"].astype(str).to_numpy()
    if len(pool) < k:
        raise SplitError(f"{len(pool)} items cannot make {k} folds")
    x = np.zeros(len(pool))
    if task == "multilabel" and method != "random":  # iterative stratification over the findings, by patient
        fold = iterative_folds(labels, _groups(sub), k, seed)
        return [(pool[fold != j], pool[fold == j]) for j in range(k)]
    if method == "group" or _has_groups(sub):
        groups = _groups(sub)
        if len(set(groups)) < k:
            raise SplitError(f"{len(set(groups))} patients cannot make {k} folds without sharing a patient")
        min_class = pd.Series(labels).value_counts().min()
        splitter = (
            StratifiedGroupKFold(k, shuffle=True, random_state=seed) if min_class >= k else GroupKFold(k)
        )
        folds = splitter.split(x, labels, groups)
    elif method == "stratified" and pd.Series(labels).value_counts().min() >= k:
        folds = StratifiedKFold(k, shuffle=True, random_state=seed).split(x, labels)
    else:
        folds = KFold(k, shuffle=True, random_state=seed).split(x)
    return [(pool[tr], pool[va]) for tr, va in folds]


def label_counts(labels: pd.Series, task: str = "single", order: Sequence[str] = ()) -> dict[str, int]:
    """Images per class of a split table's part, by task type (core.data.labels.class_counts): per finding and with
    none (multilabel: not per combination of findings), per grade in order (ordinal), else per label. Grades whose
    order is not known yet are counted per label."""
    try:
        return class_counts(labels, task, order)
    except SourceError:
        return class_counts(labels, "single")


def split_summary(items: pd.DataFrame, task: str = "single", order: Sequence[str] = ()) -> pd.DataFrame:
    """One row per split: item count, images per class (`label_counts`), number of patients (groups)."""
    classes = list(label_counts(items["label"], task, order))
    rows = []
    for name in [s for s in SPLITS if (items["split"] == s).any()]:
        part = items[items["split"] == name]
        counts = label_counts(part["label"], task, order)
        row = {"split": name, "items": len(part), **{c: int(counts.get(c, 0)) for c in classes}}
        row["patients"] = int(part["group"].replace("", np.nan).nunique()) if "group" in part else 0
        rows.append(row)
    return pd.DataFrame(rows)


def group_leaks(items: pd.DataFrame) -> list[str]:
    """Groups (patients) that appear in more than one split; empty when the split is clean."""
    if not _has_groups(items):
        return []
    g = items[items["group"].fillna("").astype(str) != ""]
    per_group = g.groupby("group")["split"].nunique()
    return sorted(per_group[per_group > 1].index.astype(str))
