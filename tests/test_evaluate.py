"""Metrics against scikit-learn on known inputs, bootstrap CIs, operating points, calibration, run folders."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from core.evaluation import evaluate as ev


def _data(n: int, k: int = 2, seed: int = 0, signal: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """Labels and softmax probabilities with some signal (deterministic)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += signal
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def _frame(y: np.ndarray, p: np.ndarray, classes: list[str], **extra) -> pd.DataFrame:
    """A predictions table as the run folder stores it."""
    return ev.predictions_frame([f"img{i}.png" for i in range(len(y))], y, p, classes, **extra)


@pytest.mark.parametrize("k", [2, 3])
def test_point_metrics_match_sklearn(k):
    y, p = _data(300, k, seed=k)
    classes = [f"c{i}" for i in range(k)]
    pred = p.argmax(1)
    out = ev.evaluate_predictions(y, p, classes, n_resamples=50)
    m = out["metrics"]
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    if k == 2:
        assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p[:, 1]))
        assert m["pr_auc"] == pytest.approx(average_precision_score(y, p[:, 1]))
    else:
        assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
        assert m["pr_auc"] == pytest.approx(
            np.mean([average_precision_score(y == c, p[:, c]) for c in range(k)])
        )
    cm = confusion_matrix(y, pred)
    assert np.array_equal(out["confusion"], cm)
    assert np.allclose(out["confusion_normalized"], cm / cm.sum(1, keepdims=True))
    table = pd.DataFrame(out["per_class"])
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred)
    assert np.allclose(table["precision"], prec) and np.allclose(table["recall"], rec)
    assert np.allclose(table["f1"], f1) and list(table["support"]) == list(sup)
    spec = [((pred != c) & (y != c)).sum() / (y != c).sum() for c in range(k)]
    assert np.allclose(table["specificity"], spec)
    assert np.allclose(table["roc_auc"], [roc_auc_score(y == c, p[:, c]) for c in range(k)])


def test_fast_bootstrap_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.4 * y, 1)  # many ties
    order = np.argsort(y, kind="stable")
    auc = ev._fast_auc(y[order] == 1, s[order][None])[0]
    assert auc == pytest.approx(roc_auc_score(y, s))


@pytest.mark.parametrize("k", [2, 3])
def test_bootstrap_ci_contains_estimate_and_narrows_with_n(k):
    classes = [f"c{i}" for i in range(k)]
    small = ev.bootstrap_ci(*_data(80, k, seed=1), classes, n_resamples=300)
    large = ev.bootstrap_ci(*_data(2000, k, seed=1), classes, n_resamples=300)
    expected = {"accuracy", "balanced_accuracy", "roc_auc"} | (
        {"sensitivity", "specificity"}
        if k == 2
        else {f"{m}_{c}" for m in ("sensitivity", "specificity", "roc_auc") for c in classes}
    )
    assert set(small) == expected
    for name in expected:
        for ci in (small[name], large[name]):
            assert ci["lo"] <= ci["value"] <= ci["hi"], name
        assert large[name]["hi"] - large[name]["lo"] < 0.6 * (small[name]["hi"] - small[name]["lo"]), name


def test_bootstrap_is_seeded_and_documented():
    y, p = _data(120)
    a = ev.bootstrap_ci(y, p, ["a", "b"], seed=7, n_resamples=200)
    assert a == ev.bootstrap_ci(y, p, ["a", "b"], seed=7, n_resamples=200)
    assert a != ev.bootstrap_ci(y, p, ["a", "b"], seed=8, n_resamples=200)
    assert ev.BOOTSTRAP_RESAMPLES == 1000
    out = ev.evaluate_predictions(y, p, ["a", "b"])
    assert out["bootstrap"]["n_resamples"] == 1000 and out["bootstrap"]["level"] == 0.95
    idx = ev.bootstrap_indices(y, 50, seed=0)
    assert idx.shape == (50, len(y))
    assert all(
        np.bincount(y[row], minlength=2).tolist() == np.bincount(y).tolist() for row in idx
    )  # stratified


def test_point_stats_match_threshold_metrics():
    y, p = _data(150, seed=4)
    stats = ev.point_stats(y, p, ["neg", "pos"], threshold=0.3)
    at = ev.metrics_at_threshold(y, p[:, 1], 0.3)
    assert stats["sensitivity"] == pytest.approx(at["sensitivity"])
    assert stats["specificity"] == pytest.approx(at["specificity"])
    assert stats["accuracy"] == pytest.approx(at["accuracy"])
    cm = confusion_matrix(y, (p[:, 1] >= 0.3).astype(int))
    assert (at["tn"], at["fp"], at["fn"], at["tp"]) == tuple(cm.ravel())


def test_threshold_helpers():
    y, p = _data(400, seed=5, signal=1.0)
    s = p[:, 1]
    for target in (0.8, 0.9, 0.95):
        t = ev.threshold_for_sensitivity(y, s, target)
        assert ev.metrics_at_threshold(y, s, t)["sensitivity"] >= target
        higher = np.min(s[s > t]) if (s > t).any() else 1.1
        assert ev.metrics_at_threshold(y, s, higher)["sensitivity"] < target  # the highest such threshold
        t = ev.threshold_for_specificity(y, s, target)
        assert ev.metrics_at_threshold(y, s, t)["specificity"] >= target
        lower = np.max(s[s < t])
        assert ev.metrics_at_threshold(y, s, lower)["specificity"] < target  # the lowest such threshold
    best = max(ev.metrics_at_threshold(y, s, t)["youden_j"] for t in np.unique(s))
    assert ev.metrics_at_threshold(y, s, ev.youden_threshold(y, s))["youden_j"] == pytest.approx(best)
    table = ev.operating_points(y, s, threshold=0.42)
    assert table["rule"].tolist()[:3] == ["chosen", "default 0.5", "Youden's J"]
    assert table.loc[0, "threshold"] == 0.42


def test_ppv_npv_at_prevalence():
    ppv, npv = ev.ppv_npv(0.9, 0.8, 0.1)
    assert ppv == pytest.approx(0.09 / (0.09 + 0.18))
    assert npv == pytest.approx(0.72 / (0.72 + 0.01))
    y, p = _data(200, seed=6)
    at = ev.metrics_at_threshold(y, p[:, 1], 0.5, prevalence=0.02)
    assert at["ppv"] == pytest.approx(ev.ppv_npv(at["sensitivity"], at["specificity"], 0.02)[0])
    with pytest.raises(ValueError):
        ev.ppv_npv(0.9, 0.9, 0)


def test_calibration_matches_sklearn_and_hand_values():
    y, p = _data(500, seed=8)
    curve = ev.reliability_curve(y, p, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p[:, 1], n_bins=10)
    assert np.allclose(curve["observed"], prob_true) and np.allclose(curve["confidence"], prob_pred)
    assert curve["count"].sum() == 500
    assert ev.brier_score(y, p) == pytest.approx(brier_score_loss(y, p[:, 1]))
    y3, p3 = _data(300, 3, seed=9)
    assert ev.brier_score(y3, p3) == pytest.approx(np.mean(((p3 - np.eye(3)[y3]) ** 2).sum(1)))
    # hand example: two bins, |0.2 - 0| and |0.9 - 0.5|, weights 1/3 and 2/3
    yh = np.array([0, 1, 0])
    ph = np.array([[0.8, 0.2], [0.1, 0.9], [0.1, 0.9]])
    assert ev.expected_calibration_error(yh, ph) == pytest.approx(0.2 / 3 + 0.4 * 2 / 3)
    rng = np.random.default_rng(0)
    q = rng.random(20000)
    calibrated = (rng.random(20000) < q).astype(int)
    assert ev.expected_calibration_error(calibrated, np.c_[1 - q, q]) < 0.02


def test_labels_and_probs_refuses_unknown_labels():
    df = _frame(np.array([0, 1]), np.array([[0.7, 0.3], [0.2, 0.8]]), ["a", "b"])
    df.loc[0, "label"] = "zebra"
    with pytest.raises(ValueError, match="zebra"):
        ev.labels_and_probs(df, ["a", "b"])


def test_apply_threshold_changes_decisions():
    y, p = _data(50, seed=2)
    df = ev.apply_threshold(_frame(y, p, ["neg", "pos"]), ["neg", "pos"], 0.8)
    assert (df["pred"] == "pos").tolist() == (p[:, 1] >= 0.8).tolist()
    assert (df["threshold"] == 0.8).all()
    multi = ev.apply_threshold(_frame(*_data(20, 3), ["a", "b", "c"]), ["a", "b", "c"], 0.8)
    assert (multi["threshold"] == "argmax").all()


def _fake_run(tmp_path, kfold: bool):
    """A finished run folder without training: metrics.json + predictions (+ folds)."""
    classes = ["normal", "pneumonia"]
    y, p = _data(240, seed=11)
    df = _frame(y, p, classes)
    if kfold:
        df["fold"] = np.arange(len(df)) % 3
        df.to_csv(tmp_path / "oof_predictions.csv", index=False)
    else:
        df.to_csv(tmp_path / "valid_predictions.csv", index=False)
        _frame(*_data(60, seed=12), classes).to_csv(tmp_path / "test_predictions.csv", index=False)
    (tmp_path / "metrics.json").write_text(
        json.dumps(
            {"type": "kfold" if kfold else "single", "classes": classes, "best_epoch": 1, "metrics": {}}
        )
    )
    (tmp_path / "config.json").write_text("{}")
    return tmp_path, df


def test_evaluate_run_single_and_side_by_side(tmp_path):
    run, _ = _fake_run(tmp_path, kfold=False)
    external = _frame(*_data(90, seed=13), ["normal", "pneumonia"])
    out = ev.evaluate_run(run, external=external, n_resamples=100)
    assert list(out["sets"]) == ["valid", "test", "external"]
    assert out["sets"]["test"]["n"] == 60 and out["sets"]["external"]["n"] == 90
    table = ev.comparison_table(out["sets"], ev.HEADLINE)
    assert table["metric"].tolist() == list(ev.HEADLINE)
    assert set(table.columns) == {"metric", "valid", "test", "external"}
    assert table.loc[0, "valid"].startswith(f"{out['sets']['valid']['ci']['roc_auc']['value']:.3f} (")
    json.dumps(out, allow_nan=True)  # plain values only


def test_evaluate_run_kfold_per_fold_and_pooled(tmp_path):
    run, df = _fake_run(tmp_path, kfold=True)
    out = ev.evaluate_run(run, n_resamples=100)
    assert list(out["sets"]) == ["oof"] and out["sets"]["oof"]["n"] == len(df)
    table = pd.DataFrame(out["folds"]["table"])
    assert table["fold"].tolist() == [0, 1, 2] and table["n"].sum() == len(df)
    for _, row in table.iterrows():
        part = df[df["fold"] == row["fold"]]
        assert row["roc_auc"] == pytest.approx(
            roc_auc_score(part["label"] == "pneumonia", part["prob_pneumonia"])
        )
    ms = out["folds"]["mean_sd"]["roc_auc"]
    assert ms["mean"] == pytest.approx(table["roc_auc"].mean()) and ms["sd"] == pytest.approx(
        table["roc_auc"].std()
    )


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_class_distribution_and_unfinished_run(tmp_path):
    items = pd.DataFrame(
        {"label": ["a", "a", "b", "b", "b"], "split": ["train", "valid", "train", "train", "test"]}
    )
    table = ev.class_distribution(items)
    assert table.index.tolist() == ["train", "valid", "test"]
    assert table.loc["train", "b"] == 2 and table.loc["test", "a"] == 0
    with pytest.raises(FileNotFoundError, match="not finished"):
        ev.evaluate_run(tmp_path)
    one_class = ev.evaluate_predictions(
        np.zeros(4, int), np.array([[0.6, 0.3, 0.1]] * 4), ["a", "b", "c"], n_resamples=20
    )
    assert math.isnan(one_class["metrics"]["roc_auc"]) and one_class["metrics"]["accuracy"] == 1.0


def test_comparison_table_lists_each_metric_once():
    from core.evaluation.evaluate import comparison_table

    ev = {
        "ci": {"roc_auc": {"value": 0.9, "lo": 0.8, "hi": 0.95}},
        "metrics": {"roc_auc": 0.9, "accuracy": 0.8},
    }
    table = comparison_table({"validation": ev, "test": ev})
    assert list(table["metric"]) == ["roc_auc", "accuracy"]
    assert table.loc[0, "test"] == "0.900 (0.800-0.950)"


def test_provenance_says_which_epoch_and_set_and_where_validation_is_optimistic():
    from core.evaluation.evaluate import provenance

    last = {
        "type": "single",
        "model_epoch": 7,
        "model_weights": "last",
        "epochs_planned": 8,
        "headline_set": "test",
    }
    assert provenance(last).startswith("Model: epoch 8 of 8, the last epoch")
    assert "Headline: the held-out test" in provenance(last) and "optimistic" not in provenance(last)
    best = {
        "type": "single",
        "model_epoch": 2,
        "model_weights": "best",
        "epochs_run": 5,
        "monitor": "valid_loss",
        "headline_set": "valid",
    }
    assert (
        "epoch 3 of 5 run" in provenance(best)
        and "optimistic" in provenance(best)
        and "Headline" not in provenance(best)
    )
    assert "optimistic" in provenance({"type": "single", "best_epoch": 1})  # older runs kept the best epoch
    folds = {"type": "kfold", "metrics": {"per_fold": [{"model_weights": "last"}, {"model_weights": "last"}]}}
    assert "last epoch" in provenance(folds) and "optimistic" not in provenance(folds)


def test_model_warnings_for_one_class_and_chance_auc(tmp_path):
    classes = ["normal", "pneumonia"]
    y, p = _data(200, seed=3, signal=3.0)
    assert ev.model_warnings(y, p, classes) == []  # a model that learned something: no warning
    flat = np.column_stack([np.full(200, 0.8), np.full(200, 0.2)])  # "normal" for everything, no ranking
    warned = ev.model_warnings(y, flat, classes)
    assert "calls 100% of the 200 images 'normal' at threshold 0.50" in warned[0]
    assert "about chance" in warned[1] and warned[-1] == ev.ADVICE and "more epochs" in ev.ADVICE
    pairs = np.tile([0, 1], 100)  # both classes predicted, but each score is given to one item of each class
    score = np.repeat(np.linspace(0.05, 0.95, 100), 2)
    chance = ev.model_warnings(pairs, np.column_stack([1 - score, score]), classes)
    assert len(chance) == 2 and "about chance" in chance[0]
    assert ev.model_warnings(y, flat, classes, threshold=0.1)[0].startswith(
        "The model calls 100% of the 200 images 'pneumonia'"
    )
    y3, p3 = _data(300, k=3, seed=4, signal=3.0)
    one = np.tile([0.2, 0.7, 0.1], (300, 1))
    assert (
        ev.model_warnings(y3, p3, ["a", "b", "c"]) == []
        and "'b'" in ev.model_warnings(y3, one, ["a", "b", "c"])[0]
    )
    imbalanced = np.array(
        [0] * 97 + [1] * 3
    )  # a majority class predicted a bit less often than it occurs: fine
    probs = np.column_stack(
        [np.r_[np.full(96, 0.9), np.full(4, 0.1)], np.r_[np.full(96, 0.1), np.full(4, 0.9)]]
    )
    assert not any("calls" in w for w in ev.model_warnings(imbalanced, probs, classes))
    run, df = _fake_run(tmp_path, kfold=False)
    assert (
        ev.run_warnings(run) == [] and ev.evaluate_run(run, n_resamples=10)["sets"]["valid"]["warnings"] == []
    )
    df.assign(prob_normal=0.9, prob_pneumonia=0.1).to_csv(run / "valid_predictions.csv", index=False)
    assert len(ev.run_warnings(run)) == 3
    assert len(ev.evaluate_run(run, n_resamples=10)["sets"]["valid"]["warnings"]) == 3
