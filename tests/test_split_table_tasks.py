"""The split table (setup page, the run folder's splits record) by task type (issue 25): a multi-label source is
counted per finding and images with none, not per combination of findings; ordinal grades come in their order."""

from __future__ import annotations

import pandas as pd

from core.base.config import SplitConfig, TaskConfig
from core.data import labels as lab
from core.data.augment_preview import fold_preview, split_preview
from core.data.splits import split_summary


def _items(labels: list[str], splits: list[str]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "path": [f"{i}.png" for i in range(n)],
            "label": labels,
            "split": splits,
            "group": [f"p{i}" for i in range(n)],
        }
    )


def test_multilabel_counts_each_finding_and_images_without_one():
    labels = ["Edema|Effusion", "Edema", lab.EMPTY, "Effusion|Mass", "Edema|?Mass", "Edema|Effusion"]
    items = _items(labels, ["train", "train", "train", "valid", "valid", "test"])
    table = split_summary(items, "multilabel").set_index("split")
    assert list(table.columns) == ["items", "Edema", "Effusion", "Mass", lab.EMPTY, "patients"]
    assert table.loc["train", ["Edema", "Effusion", "Mass", lab.EMPTY]].tolist() == [2, 1, 0, 1]
    assert table.loc["valid", ["Edema", "Effusion", "Mass"]].tolist() == [
        1,
        1,
        1,
    ]  # an uncertain Mass is no Mass
    assert "Edema|Effusion" not in table.columns
    assert split_summary(items).columns.tolist()[1:4] == [
        "items",
        "(no finding)",
        "Edema",
    ]  # single: per label


def test_ordinal_grades_are_counted_in_their_order():
    order = ["none", "mild", "moderate", "severe"]
    items = _items(order * 3, ["train"] * 8 + ["valid"] * 4)
    table = split_summary(items, "ordinal", order)
    assert list(table.columns) == ["split", "items", *order, "patients"]
    numbered = _items(["KL10", "KL2", "KL1"], ["train"] * 3)  # inferred: 1, 2, 10 (not KL1, KL10, KL2)
    assert list(split_summary(numbered, "ordinal").columns[2:5]) == ["KL1", "KL2", "KL10"]
    unordered = _items(["b", "a"], ["train"] * 2)  # no order yet: per label, as single
    assert list(split_summary(unordered, "ordinal").columns[2:4]) == ["a", "b"]


def test_the_setup_previews_split_and_fold_by_task():
    labels = ["Edema|Effusion", "Edema", lab.EMPTY, "Effusion", "Mass|Edema"] * 6
    items = _items(labels, [""] * len(labels))
    task = TaskConfig(type="multilabel")
    summary, leaks = split_preview(items, SplitConfig(method="group", valid_pct=0.2, test_pct=0.2), task)
    assert not leaks and {"Edema", "Effusion", "Mass", lab.EMPTY} <= set(summary.columns)
    assert summary["Edema"].sum() == 18 and "Edema|Effusion" not in summary.columns
    folds = fold_preview(items, SplitConfig(method="group", k_folds=3, test_pct=0.0), task)
    assert len(folds) == 3 and folds["Mass"].sum() == 6 and folds["valid items"].sum() == 30
