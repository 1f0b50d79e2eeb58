"""An items table -> the numbers a run's schedule is planned from (core.base.plan.DataFacts)."""

from __future__ import annotations

import pandas as pd

from core.base.config import ConfigError, SourceConfig, SplitConfig
from core.base.plan import DataFacts
from core.data.splits import SplitError, assign_splits


def typical_side(items: pd.DataFrame) -> int | None:
    """The median longer side (pixels) of the items whose size is known; None when none is."""
    if not {"width", "height"} <= set(items.columns):
        return None
    sides = pd.concat(
        [pd.to_numeric(items["width"], errors="coerce"), pd.to_numeric(items["height"], errors="coerce")],
        axis=1,
    ).max(axis=1)
    sides = sides[sides > 0]
    return int(sides.median()) if len(sides) else None


def split_counts(items: pd.DataFrame, split: SplitConfig) -> tuple[int, int, int]:
    """(training items, validation items, folds) as a run with these split settings will make them."""
    k = split.k_folds
    if k >= 2:
        pool = (
            int((items["split"].fillna("").astype(str) != "test").sum()) if "split" in items else len(items)
        )
        return pool * (k - 1) // k, pool - pool * (k - 1) // k, k
    try:
        s = assign_splits(items, split)["split"]
    except (SplitError, ConfigError, ValueError):  # a split that cannot be made: the run will say why
        n_train = int(len(items) * (1 - split.valid_pct - split.test_pct))
        return n_train, int(len(items) * split.valid_pct), 1
    return int((s == "train").sum()), int((s == "valid").sum()), 1


def data_facts(items: pd.DataFrame, split: SplitConfig) -> DataFacts:
    """What the schedule is planned from: split sizes, the sources' typical side, the number of classes."""
    n_train, n_valid, folds = split_counts(items, split)
    n_classes = int(items["label"].astype(str).nunique()) if "label" in items else 2
    return DataFacts(n_train, n_valid, typical_side(items), n_classes, folds)


def quick_items(source: SourceConfig) -> pd.DataFrame:
    """A source's items table for planning: class folders from their headers only (fast), others as loaded."""
    if source.kind == "folder":
        from core.data.folders import scan_folder

        return scan_folder(source.root, source.test_root, validate=False).items
    from core.data.sources import load_source

    return load_source(source).items
