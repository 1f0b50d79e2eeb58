"""Figures for binary and multi-class results: the right traces, values and labels; theme-neutral styling."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from core.evaluation import evaluate as ev
from core.evaluation import plots

REPO = Path(__file__).resolve().parents[1]


def _data(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities with some signal."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def _theme_neutral(fig: go.Figure) -> None:
    """Transparent backgrounds and no hard-coded text colour: readable under light and dark themes."""
    assert fig.layout.paper_bgcolor == "rgba(0,0,0,0)" and fig.layout.plot_bgcolor == "rgba(0,0,0,0)"
    assert fig.layout.font.color is None and fig.layout.title.font.color is None
    # no template is forced: the active default (Streamlit's theme inside the app) applies
    assert fig.layout.template == go.layout.Template(pio.templates[pio.templates.default])


@pytest.mark.parametrize("k", [2, 3])
def test_confusion_matrix_counts_percentages_and_hover(k):
    classes = [f"c{i}" for i in range(k)]
    y, p = _data(200, k)
    cm = ev.confusion(y, p.argmax(1), k)
    fig = plots.confusion_matrix(cm, classes)
    (trace,) = fig.data
    assert isinstance(trace, go.Heatmap) and list(trace.x) == classes and list(trace.y) == classes
    assert np.allclose(np.asarray(trace.z), ev.normalize_rows(cm))
    assert trace.text[0][0] == f"{cm[0, 0]}<br>{100 * cm[0, 0] / cm[0].sum():.1f}%"
    assert "true: %{y}" in trace.hovertemplate and "predicted: %{x}" in trace.hovertemplate
    assert fig.layout.yaxis.autorange == "reversed"
    _theme_neutral(fig)


@pytest.mark.parametrize("k", [2, 3])
def test_roc_and_pr_curves_traces_and_legend(k):
    classes = [f"c{i}" for i in range(k)]
    y, p = _data(300, k)
    rocs = ev.roc_curves(y, p, classes)
    assert list(rocs) == (["c1"] if k == 2 else classes)  # binary: the positive class only
    ci = ev.bootstrap_ci(y, p, classes, n_resamples=100)
    auc = {c: ci["roc_auc" if k == 2 else f"roc_auc_{c}"] for c in rocs}
    fig = plots.roc_curves(rocs, auc)
    assert len(fig.data) == len(rocs) + 1 and fig.data[-1].name == "chance"
    for trace, (name, df) in zip(fig.data, rocs.items()):
        a = auc[name]
        assert trace.name == f"{name} (AUC {a['value']:.3f} [{a['lo']:.3f}-{a['hi']:.3f}])"
        assert np.allclose(trace.x, df["fpr"]) and np.allclose(trace.y, df["tpr"])
    prs = ev.pr_curves(y, p, classes)
    per = ev.per_class_table(y, p, classes).set_index("class")
    fig = plots.pr_curves(
        prs, {c: per.loc[c, "pr_auc"] for c in prs}, {c: float(np.mean(y == classes.index(c))) for c in prs}
    )
    assert len(fig.data) == 2 * len(prs)
    assert fig.data[0].name == f"{list(prs)[0]} (PR AUC {per.loc[list(prs)[0], 'pr_auc']:.3f})"
    assert np.allclose(fig.data[1].y, np.mean(y == classes.index(list(prs)[0])))
    _theme_neutral(fig)


@pytest.mark.parametrize("k", [2, 3])
def test_reliability_diagram(k):
    y, p = _data(300, k)
    curve = ev.reliability_curve(y, p)
    fig = plots.reliability_diagram(
        curve,
        ev.expected_calibration_error(y, p),
        ev.brier_score(y, p),
        mode="positive class" if k == 2 else "top label",
    )
    diag, model = fig.data
    assert (
        list(diag.x) == [0, 1]
        and np.allclose(model.x, curve["confidence"])
        and np.allclose(model.y, curve["observed"])
    )
    assert "ECE" in model.name and "Brier" in model.name
    assert ("positive" in fig.layout.xaxis.title.text) == (k == 2)


def test_threshold_tradeoff_marks_threshold():
    y, p = _data(200, 2)
    fig = plots.threshold_tradeoff(ev.tradeoff_table(y, p[:, 1]), threshold=0.3)
    assert [t.name for t in fig.data] == ["sensitivity", "specificity"]
    assert fig.layout.shapes[0].x0 == 0.3


def test_training_curves_single_and_kfold():
    hist = pd.DataFrame(
        {
            "epoch": [0, 1, 2],
            "phase": ["frozen", "unfrozen", "unfrozen"],
            "train_loss": [0.9, 0.6, 0.4],
            "valid_loss": [0.8, 0.5, 0.55],
            "accuracy": [0.6, 0.7, 0.72],
            "roc_auc": [0.7, 0.8, 0.82],
            "time_s": [1.0, 2.0, 3.0],
        }
    )
    fig = plots.training_curves(hist, best_epoch=1)
    names = [t.name for t in fig.data]
    assert names == ["train_loss", "valid_loss", "accuracy", "roc_auc"]
    assert list(fig.data[1].y) == [0.8, 0.5, 0.55] and fig.data[2].yaxis == "y2"
    assert {s.x0 for s in fig.layout.shapes} == {
        2
    }  # on both panels; epochs shown from 1 (best_epoch is 0-based)
    folds = pd.concat([hist.assign(fold=0), hist.assign(fold=1)])
    fig = plots.training_curves(folds, best_epoch={0: 1, 1: 2})
    assert len(fig.data) == 8 and fig.data[4].name == "fold 2 train_loss"  # folds shown 1..k
    assert {s.x0 for s in fig.layout.shapes} == {2, 3}
    _theme_neutral(fig)


def test_training_curves_count_epochs_from_one_and_keep_best_labels_off_the_titles():
    hist = pd.DataFrame(
        {"epoch": [0, 1], "train_loss": [0.9, 0.6], "valid_loss": [0.8, 0.5], "accuracy": [0.6, 0.7]}
    )
    fig = plots.training_curves(hist, best_epoch=1)
    assert list(fig.data[0].x) == [1, 2]  # as the progress bar says "Epoch 2 / 2"
    titles = [a for a in fig.layout.annotations if a.text in ("loss", "validation metrics")]
    best = [a for a in fig.layout.annotations if a.text.startswith("best")]
    assert len(titles) == 2 and len(best) == 1  # one label, not one per panel
    assert best[0].yref == "y2 domain" and best[0].y == 0 and best[0].yanchor == "bottom" and best[0].x == 2
    folds = pd.concat([hist.assign(fold=0), hist.assign(fold=1)])
    labels = [a.text for a in plots.training_curves(folds, {0: 1, 1: 1}).layout.annotations]
    assert labels.count("best f1, f2") == 1  # folds shown 1..k; sharing a best epoch share one label


def test_training_curves_with_one_epoch_label_the_points():
    hist = pd.DataFrame({"epoch": [0], "train_loss": [0.9], "valid_loss": [0.8], "accuracy": [0.6]})
    fig = plots.training_curves(hist, best_epoch=0)
    assert {t.mode for t in fig.data} == {"markers+text"}
    assert [t.text[0] for t in fig.data] == ["0.900", "0.800", "0.600"]
    assert tuple(fig.layout.xaxis2.range) == (0.5, 1.5) and "one epoch" in fig.layout.title.text


def test_lr_finder_marks_suggestions():
    lrs = np.logspace(-7, 1, 50)
    losses = 2 - np.exp(-((np.log10(lrs) + 3) ** 2))
    sugg = {"minimum": 1e-3, "valley": 3e-4}
    fig = plots.lr_finder(lrs, losses, sugg)
    assert fig.layout.xaxis.type == "log" and len(fig.data) == 3
    assert fig.data[1].name == "minimum: 1.0e-03" and fig.data[1].x[0] == 1e-3
    k = int(np.argmin(np.abs(np.log10(lrs) + 3)))
    assert fig.data[1].y[0] == pytest.approx(losses[k])


def test_class_distribution_and_fold_bars():
    items = pd.DataFrame({"label": ["a"] * 5 + ["b"] * 3, "split": ["train"] * 4 + ["valid"] * 4})
    fig = plots.class_distribution(ev.class_distribution(items))
    assert [t.name for t in fig.data] == ["a", "b"]
    assert (
        list(fig.data[0].x) == ["train", "valid"]
        and list(fig.data[0].y) == [4, 1]
        and list(fig.data[1].y) == [0, 3]
    )
    table = pd.DataFrame({"fold": [0, 1, 2], "accuracy": [0.7, 0.8, 0.9], "roc_auc": [0.8, 0.85, 0.9]})
    fig = plots.fold_bars(table, ("accuracy", "roc_auc", "missing_metric"))
    assert [t.name for t in fig.data] == ["fold 1", "fold 2", "fold 3", "mean +/- sd"]  # shown 1..k
    assert list(fig.data[0].x) == ["accuracy", "roc_auc"]
    assert np.allclose(fig.data[-1].y, [0.8, 0.85]) and np.allclose(fig.data[-1].error_y.array, [0.1, 0.05])


def test_plots_only_draw():
    """core/plots imports plotly, numpy and pandas (and core.base.fmt for labels) only: no metric computation, no streamlit."""
    tree = ast.parse((REPO / "core" / "evaluation" / "plots.py").read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    froms = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    assert all([a.name for a in n.names] == ["fmt"] for n in froms if n.module == "core.base")
    assert not [n.module for n in froms if n.module.startswith("core") and n.module != "core.base"]
    mods |= {n.module.split(".")[0] for n in froms if not n.module.startswith("core")}
    assert mods <= {"__future__", "math", "collections", "numpy", "pandas", "plotly"}


def test_explorer_figures_class_counts_and_image_sizes():
    fig = plots.class_counts({"normal": 5, "pneumonia": 3})
    assert list(fig.data[0].x) == ["normal", "pneumonia"] and list(fig.data[0].y) == [5, 3]
    items = pd.DataFrame({"width": [100, 120, 90], "height": [80, 100, 90], "label": ["b", "a", "b"]})
    fig = plots.image_sizes(items)
    assert [t.name for t in fig.data] == ["a", "b"] and list(fig.data[1].x) == [100, 90]
    assert fig.layout.paper_bgcolor == "rgba(0,0,0,0)"
