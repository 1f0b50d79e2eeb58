"""Splits and k-fold indices: reproducible, stratified, never leaking a patient."""

import numpy as np
import pandas as pd
import pytest

from core.base.config import SplitConfig
from core.data.splits import SplitError, assign_splits, group_leaks, kfold_splits, split_summary


def make_items(n_patients=40, per_patient=(1, 5), seed=0, imbalance=0.5):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = "b" if rng.random() < imbalance else "a"
        for i in range(rng.integers(*per_patient, endpoint=True)):
            rows.append({"path": f"/x/p{p}_{i}.png", "label": label, "group": f"P{p:03d}", "split": ""})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("method", ["random", "stratified", "group"])
def test_every_row_gets_a_split_and_is_reproducible(method):
    items = make_items()
    cfg = SplitConfig(method=method, valid_pct=0.2, test_pct=0.1, seed=7)
    a, b = assign_splits(items, cfg), assign_splits(items, cfg)
    assert set(a["split"]) == {"train", "valid", "test"}
    assert (a["split"] == b["split"]).all()
    frac = (a["split"] == "valid").mean()
    assert 0.1 < frac < 0.3
    assert (
        a["split"] != assign_splits(items, SplitConfig(method=method, test_pct=0.1, seed=8))["split"]
    ).any()


def test_group_split_never_leaks_a_patient():
    items = make_items(n_patients=60)
    out = assign_splits(items, SplitConfig(method="group", valid_pct=0.2, test_pct=0.2, seed=3))
    assert group_leaks(out) == []
    # a random split of the same data does leak: the check is meaningful
    leaky = assign_splits(items, SplitConfig(method="random", valid_pct=0.3, seed=3))
    assert group_leaks(leaky) != []


def test_stratified_keeps_class_ratio():
    items = make_items(n_patients=200, per_patient=(1, 1), imbalance=0.2)
    out = assign_splits(items, SplitConfig(method="stratified", valid_pct=0.25, seed=1))
    overall = (items["label"] == "b").mean()
    valid = (out[out["split"] == "valid"]["label"] == "b").mean()
    assert abs(valid - overall) < 0.03


def test_source_test_rows_stay_holdout_and_column_method():
    items = make_items()
    items.loc[:9, "split"] = "test"
    out = assign_splits(items, SplitConfig(method="stratified", test_pct=0.3))
    assert (out.loc[:9, "split"] == "test").all()
    assert (out.loc[10:, "split"] != "test").all()
    col = make_items()
    col["split"] = np.where(np.arange(len(col)) % 5 == 0, "valid", "train")
    kept = assign_splits(col, SplitConfig(method="column"))
    assert (kept["split"] == col["split"]).all()
    # no valid rows given: valid is carved from train by patient
    col["split"] = "train"
    carved = assign_splits(col, SplitConfig(method="folder", valid_pct=0.2))
    assert (carved["split"] == "valid").any() and group_leaks(carved) == []


def test_column_method_errors():
    items = make_items()
    with pytest.raises(SplitError, match="split column"):
        assign_splits(items, SplitConfig(method="column"))
    items["split"] = "holdout"
    with pytest.raises(SplitError, match="unknown split"):
        assign_splits(items, SplitConfig(method="column"))


@pytest.mark.parametrize("method", ["random", "stratified", "group"])
def test_kfold_partitions_non_test_items(method):
    items = make_items(n_patients=50)
    items.loc[:4, "split"] = "test"
    if method != "group":
        items["group"] = ""
    folds = kfold_splits(items, 5, method=method, seed=0)
    assert len(folds) == 5
    valid_all = np.concatenate([v for _, v in folds])
    assert sorted(valid_all) == list(range(5, len(items)))  # every non-test item exactly once
    for tr, va in folds:
        assert set(tr).isdisjoint(va) and len(tr) + len(va) == len(items) - 5
        if method == "group":
            assert set(items.loc[tr, "group"]).isdisjoint(items.loc[va, "group"])
    assert [list(v) for _, v in folds] == [list(v) for _, v in kfold_splits(items, 5, method=method, seed=0)]


def test_kfold_groups_whenever_groups_exist():
    items = make_items(n_patients=30)
    for tr, va in kfold_splits(items, 3, method="stratified"):
        assert set(items.loc[tr, "group"]).isdisjoint(items.loc[va, "group"])


def test_kfold_too_few_patients():
    items = make_items(n_patients=3)
    with pytest.raises(SplitError, match="patients"):
        kfold_splits(items, 5, method="group")


def test_split_summary_counts():
    items = assign_splits(make_items(), SplitConfig(method="group", valid_pct=0.25, seed=0))
    summary = split_summary(items).set_index("split")
    assert summary["items"].sum() == len(items)
    assert (summary["a"] + summary["b"] == summary["items"]).all()
    assert summary["patients"].sum() == items["group"].nunique()


def test_class_balance_weights_equalise_classes():
    from core.data.loaders import class_balance_weights

    labels = np.array(["a"] * 90 + ["b"] * 10)
    w = class_balance_weights(labels)
    assert w[labels == "a"].sum() == pytest.approx(w[labels == "b"].sum())
