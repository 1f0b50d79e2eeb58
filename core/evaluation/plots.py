"""Plotly figures built from evaluate's arrays and tables only (no metrics are computed here).

Figures leave background and font colours to the theme (Streamlit light/dark, or the template a report
chooses): backgrounds are transparent, grid lines are translucent grey and the line colours are the
Okabe-Ito colour-blind-safe palette without black, so they read on light and dark pages alike.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.base import fmt

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
GRID = "rgba(128, 128, 128, 0.3)"
GUIDE = "rgba(128, 128, 128, 0.8)"  # chance lines, best-epoch markers
HEATMAP_SCALE = "Blues"


def colour(i: int) -> str:
    """The i-th line colour (cycled)."""
    return PALETTE[i % len(PALETTE)]


def style(fig: go.Figure, title: str = "", height: int = 420) -> go.Figure:
    """Theme-neutral layout: transparent backgrounds, translucent grids, compact margins."""
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left"} if title else None,
        height=height,
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        colorway=list(PALETTE),
        margin={"l": 60, "r": 20, "t": 60 if title else 30, "b": 50},
        legend={"bgcolor": "rgba(0,0,0,0)"},
    )
    fig.update_xaxes(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID)
    fig.update_yaxes(gridcolor=GRID, zerolinecolor=GRID, linecolor=GRID)
    return fig


# ---------------------------------------------------------------- classification results


def confusion_matrix(
    cm: Sequence[Sequence[float]], classes: list[str], title: str = "Confusion matrix"
) -> go.Figure:
    """Heatmap coloured by row share; each cell shows count and row percentage; hover says what it means."""
    counts = np.asarray(cm, dtype=float)
    sums = counts.sum(1, keepdims=True)
    share = np.divide(counts, sums, out=np.zeros_like(counts), where=sums > 0)
    text = [[f"{int(c)}<br>{100 * s:.1f}%" for c, s in zip(rc, rs)] for rc, rs in zip(counts, share)]
    custom = np.dstack([counts, 100 * share, np.repeat(sums, counts.shape[1], axis=1)])
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=classes,
            y=classes,
            text=text,
            texttemplate="%{text}",
            customdata=custom,
            zmin=0,
            zmax=1,
            colorscale=HEATMAP_SCALE,
            colorbar={"title": {"text": "row share"}, "tickformat": ".0%"},
            hovertemplate="true: %{y}<br>predicted: %{x}<br>%{customdata[0]:.0f} of %{customdata[2]:.0f} "
            "(%{customdata[1]:.1f}% of true %{y})<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="predicted", type="category", side="bottom")
    fig.update_yaxes(title_text="true", type="category", autorange="reversed")
    return style(fig, title, height=max(360, 90 * len(classes) + 140))


def roc_curves(
    curves: Mapping[str, pd.DataFrame],
    auc: Mapping[str, Mapping[str, float] | float] | None = None,
    title: str = "ROC curve",
) -> go.Figure:
    """One ROC line per class (fpr/tpr tables) with its AUC and CI in the legend, plus the chance line."""
    fig = go.Figure()
    for i, (name, df) in enumerate(curves.items()):
        label = (
            f"{name} (AUC {fmt.with_ci((auc or {}).get(name), brackets='[]')})"
            if auc and name in auc
            else name
        )
        fig.add_trace(
            go.Scatter(
                x=df["fpr"],
                y=df["tpr"],
                mode="lines",
                name=label,
                line={"color": colour(i), "width": 2},
                customdata=df[["threshold"]],
                hovertemplate="1 - specificity %{x:.3f}<br>sensitivity %{y:.3f}"
                "<br>threshold %{customdata[0]:.3f}<extra>" + name + "</extra>",
            )
        )
    fig.add_trace(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            name="chance",
            hoverinfo="skip",
            line={"color": GUIDE, "dash": "dash", "width": 1},
        )
    )
    fig.update_xaxes(title_text="1 - specificity (false positive rate)", range=[0, 1], constrain="domain")
    fig.update_yaxes(title_text="sensitivity (true positive rate)", range=[0, 1.02], scaleanchor="x")
    return style(fig, title, height=460)


def pr_curves(
    curves: Mapping[str, pd.DataFrame],
    ap: Mapping[str, float] | None = None,
    baseline: Mapping[str, float] | None = None,
    title: str = "Precision-recall curve",
) -> go.Figure:
    """One precision-recall line per class with its PR AUC, plus the no-skill line at the class prevalence."""
    fig = go.Figure()
    for i, (name, df) in enumerate(curves.items()):
        label = f"{name} (PR AUC {fmt.with_ci(ap[name], brackets='[]')})" if ap and name in ap else name
        fig.add_trace(
            go.Scatter(
                x=df["recall"],
                y=df["precision"],
                mode="lines",
                name=label,
                line={"color": colour(i), "width": 2, "shape": "hv"},
                customdata=df[["threshold"]],
                hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}"
                "<br>threshold %{customdata[0]:.3f}<extra>" + name + "</extra>",
            )
        )
        if baseline and name in baseline:
            fig.add_trace(
                go.Scatter(
                    x=[0, 1],
                    y=[baseline[name]] * 2,
                    mode="lines",
                    hoverinfo="skip",
                    name=f"no skill ({name})",
                    line={"color": colour(i), "dash": "dot", "width": 1},
                )
            )
    fig.update_xaxes(title_text="recall (sensitivity)", range=[0, 1])
    fig.update_yaxes(title_text="precision (PPV)", range=[0, 1.02])
    return style(fig, title, height=460)


def diagonal(start: float, name: str) -> go.Scatter:
    """The dashed y = x guide from (start, start) to (1, 1): what a calibrated model or a kept promise draws."""
    return go.Scatter(
        x=[start, 1],
        y=[start, 1],
        mode="lines",
        name=name,
        hoverinfo="skip",
        line={"color": GUIDE, "dash": "dash", "width": 1},
    )


def reliability_diagram(
    curve: pd.DataFrame,
    ece: float | None = None,
    brier: float | None = None,
    mode: str = "positive class",
    title: str = "Reliability diagram",
) -> go.Figure:
    """Observed frequency against mean predicted probability per bin (marker size ~ count), and the diagonal."""
    extra = [
        f"ECE {ece:.3f}" if ece is not None and math.isfinite(ece) else "",
        f"Brier {brier:.3f}" if brier is not None and math.isfinite(brier) else "",
    ]
    name = "model" + (f" ({', '.join(e for e in extra if e)})" if any(extra) else "")
    size = 8 + 16 * np.sqrt(curve["count"] / max(1, curve["count"].max())) if len(curve) else []
    fig = go.Figure(
        [
            diagonal(0.0, "perfect calibration"),
            go.Scatter(
                x=curve["confidence"],
                y=curve["observed"],
                mode="lines+markers",
                name=name,
                marker={"size": size, "color": colour(0)},
                line={"color": colour(0)},
                customdata=curve[["lower", "upper", "count"]],
                hovertemplate="bin %{customdata[0]:.1f}-%{customdata[1]:.1f}<br>mean predicted %{x:.3f}"
                "<br>observed %{y:.3f}<br>%{customdata[2]} items<extra></extra>",
            ),
        ]
    )
    what = "P(positive class)" if mode == "positive class" else "confidence of the predicted class"
    seen = "share positive" if mode == "positive class" else "share correct"
    fig.update_xaxes(title_text=f"mean predicted {what}", range=[0, 1])
    fig.update_yaxes(title_text=f"observed {seen}", range=[0, 1.02])
    return style(fig, title, height=440)


def threshold_tradeoff(
    table: pd.DataFrame,
    threshold: float | None = None,
    title: str = "Sensitivity and specificity by threshold",
) -> go.Figure:
    """Sensitivity and specificity against the decision threshold (evaluate.tradeoff_table; positive: p >= t)."""
    df = table.sort_values("threshold")
    hover = "threshold %{x:.3f}<br>%{y:.3f}<extra>%{fullData.name}</extra>"
    fig = go.Figure(
        [
            go.Scatter(
                x=df["threshold"],
                y=df[col],
                mode="lines",
                name=col,
                line={"color": colour(i), "shape": "vh"},
                hovertemplate=hover,
            )
            for i, col in enumerate(("sensitivity", "specificity"))
        ]
    )
    if threshold is not None:
        fig.add_vline(
            x=threshold, line={"color": GUIDE, "dash": "dot"}, annotation_text=f"threshold {threshold:.2f}"
        )
    fig.update_xaxes(title_text="threshold on P(positive)", range=[0, 1])
    fig.update_yaxes(title_text="rate", range=[0, 1.02])
    return style(fig, title)


# ---------------------------------------------------------------- training


def training_curves(
    history: pd.DataFrame, best_epoch: int | Mapping[int, int] | None = None, title: str = "Training curves"
) -> go.Figure:
    """Losses (top) and metrics (bottom) per epoch from history.csv; one set of lines per fold; best epoch marked.

    history.csv and best epochs count from 0; the figure counts from 1, as the progress bar does. With one epoch
    per line the values are drawn as labelled points, with a note that curves need a second epoch.
    """
    skip = {"epoch", "phase", "train_loss", "valid_loss", "time_s", "fold"}
    metrics = [c for c in history.columns if c not in skip and pd.api.types.is_numeric_dtype(history[c])]
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.12,
        subplot_titles=("loss", "validation metrics"),
    )
    groups = list(history.groupby("fold", sort=True)) if "fold" in history else [(None, history)]
    single = all(part["epoch"].nunique() <= 1 for _, part in groups)
    for g, (fold, part) in enumerate(groups):
        tag = "" if fold is None else fmt.fold(fold) + " "
        x = part["epoch"] + 1
        for j, col in enumerate(c for c in ("train_loss", "valid_loss") if c in part):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=part[col],
                    name=f"{tag}{col}",
                    legendgroup=tag or col,
                    line={"color": colour(j if fold is None else g), "dash": "solid" if j else "dot"},
                    **_epoch_marks(part[col], single),
                ),
                row=1,
                col=1,
            )
        for j, col in enumerate(metrics):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=part[col],
                    name=f"{tag}{col}",
                    legendgroup=tag or col,
                    line={"color": colour(2 + j if fold is None else g)},
                    visible=True if j < 3 or fold is None else "legendonly",
                    **_epoch_marks(part[col], single),
                ),
                row=2,
                col=1,
            )
    _mark_best(fig, _best_epochs(best_epoch))
    fig.update_xaxes(title_text="epoch", row=2, col=1, dtick=1)
    if single:
        fig.update_xaxes(range=[0.5, 1.5])
        title += " (one epoch: values as points; curves from the second epoch)"
    return style(fig, title, height=600)


def _epoch_marks(values: pd.Series, single: bool) -> dict:
    """Scatter mode (and value labels when each line is a single point)."""
    if not single:
        return {"mode": "lines+markers"}
    text = [f"{v:.3f}" if pd.notna(v) else "" for v in values]
    return {"mode": "markers+text", "text": text, "textposition": "middle right", "marker": {"size": 10}}


def _mark_best(fig: go.Figure, best: list[tuple[int | None, int]]) -> None:
    """Dashed lines at the best epoch(s) (1-based) on both panels; one label per epoch inside the lower panel's
    bottom edge, clear of the subplot titles above each panel."""
    labels: dict[int, list[str]] = {}
    for fold, epoch in best:
        fig.add_vline(x=epoch + 1, line={"color": GUIDE, "dash": "dash", "width": 1})
        labels.setdefault(epoch + 1, []).append("best" if fold is None else f"f{int(fold) + 1}")
    for x, names in labels.items():
        text = "best" if names == ["best"] else "best " + ", ".join(names)
        fig.add_annotation(
            x=x,
            xref="x2",
            y=0,
            yref="y2 domain",
            yanchor="bottom",
            xanchor="left",
            text=text,
            showarrow=False,
        )


def _best_epochs(best: int | Mapping[int, int] | None) -> list[tuple[int | None, int]]:
    """(fold, epoch) pairs to mark."""
    if best is None:
        return []
    if isinstance(best, Mapping):
        return [(int(f), int(e)) for f, e in best.items() if e is not None and e >= 0]
    return [(None, int(best))] if best >= 0 else []


def lr_finder(
    lrs: Sequence[float],
    losses: Sequence[float],
    suggestions: Mapping[str, float] | None = None,
    title: str = "Learning rate finder",
) -> go.Figure:
    """Loss against learning rate (log scale) with fastai's suggestions marked on the curve."""
    lrs_a, loss_a = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    fig = go.Figure(
        go.Scatter(
            x=lrs_a,
            y=loss_a,
            mode="lines",
            name="loss",
            line={"color": colour(0)},
            hovertemplate="lr %{x:.2e}<br>loss %{y:.4f}<extra></extra>",
        )
    )
    for i, (name, lr) in enumerate((suggestions or {}).items()):
        if lr is None or not len(lrs_a):
            continue
        k = int(np.argmin(np.abs(np.log10(lrs_a) - np.log10(lr))))
        fig.add_trace(
            go.Scatter(
                x=[lr],
                y=[loss_a[k]],
                mode="markers",
                name=f"{name}: {lr:.1e}",
                marker={"size": 12, "color": colour(i + 1), "symbol": "diamond"},
                hovertemplate=f"{name}<br>lr %{{x:.2e}}<extra></extra>",
            )
        )
    fig.update_xaxes(title_text="learning rate", type="log")
    fig.update_yaxes(title_text="loss")
    return style(fig, title)


# ---------------------------------------------------------------- data and folds


def class_distribution(table: pd.DataFrame, title: str = "Images per class") -> go.Figure:
    """Grouped bars: one bar per class within each split (rows of `table` = splits, columns = classes)."""
    fig = go.Figure(
        [
            go.Bar(
                x=[str(s) for s in table.index],
                y=table[c],
                name=str(c),
                marker_color=colour(i),
                text=table[c],
                textposition="auto",
                hovertemplate="%{x}: %{y} " + str(c) + "<extra></extra>",
            )
            for i, c in enumerate(table.columns)
        ]
    )
    fig.update_layout(barmode="group")
    fig.update_xaxes(title_text="split", type="category")
    fig.update_yaxes(title_text="images")
    return style(fig, title)


def class_counts(counts: Mapping[str, int], title: str = "Images per class") -> go.Figure:
    """One bar per class: how many images it has."""
    fig = go.Figure(
        go.Bar(
            x=[str(c) for c in counts],
            y=list(counts.values()),
            marker_color=colour(0),
            text=list(counts.values()),
            textposition="auto",
            hovertemplate="%{x}: %{y} images<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="class", type="category")
    fig.update_yaxes(title_text="images")
    return style(fig, title)


def image_sizes(items: pd.DataFrame, title: str = "Image sizes (pixels)") -> go.Figure:
    """Width against height of every image (columns width, height, label), one colour per class."""
    fig = go.Figure(
        [
            go.Scatter(
                x=part["width"],
                y=part["height"],
                mode="markers",
                name=str(label),
                opacity=0.6,
                marker_color=colour(i),
                hovertemplate="%{x} x %{y} px<extra>" + str(label) + "</extra>",
            )
            for i, (label, part) in enumerate(items.groupby("label", sort=True))
        ]
    )
    fig.update_xaxes(title_text="width")
    fig.update_yaxes(title_text="height")
    return style(fig, title)


def fold_bars(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("accuracy", "balanced_accuracy", "roc_auc"),
    title: str = "Per-fold validation metrics",
) -> go.Figure:
    """Bars per fold for each metric, with the mean +/- sd across folds as a point with error bars."""
    metrics = [m for m in metrics if m in table]
    fig = go.Figure()
    for i, (_, row) in enumerate(table.iterrows()):
        fig.add_trace(
            go.Bar(
                x=metrics,
                y=[row[m] for m in metrics],
                name=fmt.fold(row["fold"]),
                marker_color=colour(i),
                hovertemplate="%{x}: %{y:.3f}<extra>" + fmt.fold(row["fold"]) + "</extra>",
            )
        )
    mean = [float(table[m].mean()) for m in metrics]
    sd = [float(table[m].std(ddof=1)) if len(table) > 1 else 0.0 for m in metrics]
    fig.add_trace(
        go.Scatter(
            x=metrics,
            y=mean,
            mode="markers",
            name="mean +/- sd",
            marker={"symbol": "line-ew-open", "size": 30, "color": GUIDE, "line": {"width": 3}},
            error_y={"type": "data", "array": sd, "visible": True, "color": GUIDE},
            hovertemplate="%{x}: mean %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="value", range=[0, 1.05])
    return style(fig, title)


# ---------------------------------------------------------------- checks of the data


def confusion_matrix_cells(
    cm: Sequence[Sequence[float]], classes: list[str], title: str = "Confusion matrix"
) -> go.Figure:
    """The confusion matrix with one clickable marker per cell (customdata = [true index, predicted index])."""
    fig = confusion_matrix(cm, classes, title)
    n = len(classes)
    t_idx, p_idx = np.divmod(np.arange(n * n), n)
    fig.add_trace(
        go.Scatter(
            x=[classes[p] for p in p_idx],
            y=[classes[t] for t in t_idx],
            mode="markers",
            marker={"size": 28, "opacity": 0.01, "color": GUIDE},
            customdata=np.stack([t_idx, p_idx], axis=1),
            hovertemplate="true: %{y}<br>predicted: %{x}<br>click to see these images<extra></extra>",
            showlegend=False,
        )
    )
    return fig


def shortcut_features(
    features: Sequence[Mapping[str, float | str]],
    auc: Mapping[str, float] | None = None,
    threshold: float = 0.7,
    title: str = "What predicts the label without the anatomy",
) -> go.Figure:
    """Horizontal bars: cross-validated AUC of each metadata feature alone; the warning threshold and chance marked."""
    rows = list(features)[::-1]
    fig = go.Figure(
        go.Bar(
            x=[float(r["auc"]) for r in rows],
            y=[str(r["what"]) for r in rows],
            orientation="h",
            marker={"color": [colour(5) if float(r["auc"]) >= threshold else colour(0) for r in rows]},
            hovertemplate="%{y}: AUC %{x:.3f}<extra></extra>",
        )
    )
    above = {"annotation_position": "top", "annotation_yanchor": "bottom"}  # over the plot area, not on a bar
    fig.add_vline(x=0.5, line={"dash": "dot", "color": GUIDE}, annotation_text="chance", **above)
    fig.add_vline(x=threshold, line={"dash": "dash", "color": GUIDE}, annotation_text="warning", **above)
    if auc:
        title = f"{title} (all together: AUC {fmt.with_ci(auc, brackets='[]')})"
    fig.update_xaxes(title_text="AUC of this feature alone (cross-validated)", range=[0.4, 1.0])
    return style(fig, title, height=max(260, 36 * len(rows) + 120))


# ---------------------------------------------------------------- sweeps (experiments)


def sweep_metric(table: pd.DataFrame, setting: str, metric: str, title: str = "") -> go.Figure:
    """A trial table's metric (with its 95 % CI as error bars) against one swept setting; the best trial starred."""
    done = table[table[metric].notna()].sort_values(
        setting, key=lambda s: s.astype(str) if s.dtype == object else s
    )
    numeric = pd.api.types.is_numeric_dtype(done[setting]) if len(done) else False
    x = done[setting] if numeric else done[setting].astype(str)
    best = done["best"].astype(bool) if "best" in done else pd.Series(False, index=done.index)
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=done[metric],
            mode="markers",
            name=metric,
            text=[f"trial {t}" for t in done["trial"]],
            error_y={
                "type": "data",
                "symmetric": False,
                "array": done["ci_hi"] - done[metric],
                "arrayminus": done[metric] - done["ci_lo"],
                "color": GUIDE,
            },
            marker={
                "size": [16 if b else 10 for b in best],
                "symbol": ["star" if b else "circle" for b in best],
                "color": [PALETTE[1] if b else PALETTE[0] for b in best],
            },
        )
    )
    wide = (
        numeric
        and len(done)
        and (done[setting] > 0).all()
        and done[setting].max() / done[setting].min() >= 10
    )
    fig.update_xaxes(title_text=setting, type="log" if wide else None if numeric else "category")
    fig.update_yaxes(title_text=f"validation {metric} (95% CI)")
    return style(fig, title or f"{metric} vs {setting}", height=360)


def sweep_parallel(
    table: pd.DataFrame, settings: Sequence[str], metric: str, title: str = "Trials across the swept settings"
) -> go.Figure:
    """Parallel coordinates: one line per finished trial through each swept setting, coloured by the metric."""
    done = table[table[metric].notna()]
    dims = []
    for s in settings:
        col = done[s]
        if pd.api.types.is_numeric_dtype(col):
            dims.append({"label": s, "values": col})
        else:
            names = sorted(col.astype(str).unique())
            dims.append(
                {
                    "label": s,
                    "values": [names.index(v) for v in col.astype(str)],
                    "tickvals": list(range(len(names))),
                    "ticktext": names,
                }
            )
    dims.append({"label": metric, "values": done[metric]})
    fig = go.Figure(
        go.Parcoords(
            line={"color": done[metric], "colorscale": HEATMAP_SCALE, "showscale": True}, dimensions=dims
        )
    )
    return style(fig, title, height=400)


def sweep_curves(curves: pd.DataFrame, metric: str, title: str = "") -> go.Figure:
    """Each trial's validation metric per epoch (history rows stacked with a "trial" column), overlaid."""
    fig = go.Figure()
    if len(curves) and metric in curves:
        for i, (trial, part) in enumerate(curves.groupby("trial", sort=True)):
            fig.add_trace(
                go.Scatter(
                    x=np.arange(1, len(part) + 1),
                    y=part[metric],
                    mode="lines+markers",
                    name=f"trial {int(trial)}",
                    line={"color": colour(i)},
                )
            )
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_yaxes(title_text=f"validation {metric}")
    return style(fig, title or f"{metric} per epoch, every trial", height=360)


def sweep_importance(values: Mapping[str, float], note: str = "", title: str = "What mattered") -> go.Figure:
    """Each swept setting's importance (share of the metric's variance, fANOVA) as horizontal bars; the note
    (how far to trust it) under the title."""
    names = sorted(values, key=lambda n: values[n])
    fig = go.Figure(
        go.Bar(
            x=[values[n] for n in names],
            y=names,
            orientation="h",
            marker={"color": PALETTE[0]},
            text=[f"{values[n]:.0%}" for n in names],
            textposition="auto",
        )
    )
    fig.update_xaxes(title_text="importance (share of the metric's variance)", range=[0, 1], tickformat=".0%")
    return style(
        fig, f"{title}<br><sup>{note}</sup>" if note else title, height=max(220, 80 + 40 * len(names))
    )


def sweep_contour(
    table: pd.DataFrame,
    x: str,
    y: str,
    metric: str,
    surface: Mapping[str, object] | None = None,
    title: str = "",
) -> go.Figure:
    """The finished trials over two numeric swept settings coloured by the metric, over `surface` (the metric
    interpolated between them: {"x", "y", "z", "log_x", "log_y"}, core.train.sweep_report.contour_surface; None:
    the points alone)."""
    done = table[table[metric].notna()]
    logs = {
        a: bool(len(done)) and (done[a] > 0).all() and done[a].max() / done[a].min() >= 10 for a in (x, y)
    }  # log axes for wide positive ranges (the surface is log-spaced by the same rule)
    fig = go.Figure()
    if surface is not None:
        fig.add_trace(
            go.Contour(
                x=surface["x"],
                y=surface["y"],
                z=surface["z"],
                colorscale=HEATMAP_SCALE,
                opacity=0.6,
                showscale=False,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=done[x],
            y=done[y],
            mode="markers",
            text=[f"trial {t}: {v:.3f}" for t, v in zip(done["trial"], done[metric])],
            marker={
                "color": done[metric],
                "colorscale": HEATMAP_SCALE,
                "showscale": True,
                "size": 11,
                "line": {"color": GUIDE, "width": 1},
            },
            name="trials",
        )
    )
    fig.update_xaxes(title_text=x, type="log" if logs[x] else None)
    fig.update_yaxes(title_text=y, type="log" if logs[y] else None)
    return style(fig, title or f"validation {metric} over {x} and {y}", height=420)


def coverage_referral(
    curve: pd.DataFrame, title: str = "Prediction sets: coverage and referral"
) -> go.Figure:
    """Against the chosen coverage: the coverage reached, the share referred (set not one class) and the accuracy
    of the answered images; the diagonal is the promise."""
    fig = go.Figure(diagonal(0.5, "target"))
    for i, (col, name) in enumerate(
        (
            ("coverage", "coverage reached"),
            ("referral_rate", "referred"),
            ("accuracy_answered", "accuracy of the answered"),
        )
    ):
        fig.add_trace(
            go.Scatter(x=curve["target"], y=curve[col], mode="lines", name=name, line={"color": colour(i)})
        )
    fig.update_xaxes(title="chosen coverage", range=[0.5, 1])
    fig.update_yaxes(title="share of images", range=[0, 1.02])
    return style(fig, title)


def learning_curve(fc: dict, points: pd.DataFrame) -> go.Figure:
    """A learning-curve forecast (core.evaluation.learning_curve): the trials' points, the fitted law with its 95 %
    band, and the forecasts at 1x, 2x and 4x the training data with their intervals; log x axis."""
    metric, curve = fc["metric"], pd.DataFrame(fc["curve"])
    ahead = pd.DataFrame(fc["forecast"])
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(x=curve["multiple"], y=curve["hi"], mode="lines", line={"width": 0}, showlegend=False)
    )
    fig.add_trace(
        go.Scatter(
            x=curve["multiple"],
            y=curve["lo"],
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(0, 114, 178, 0.15)",
            name="95 % band",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=curve["multiple"], y=curve["value"], mode="lines", name="fitted law", line={"color": PALETTE[0]}
        )
    )
    fig.add_trace(
        go.Scatter(
            x=points["train_fraction"],
            y=points[metric],
            mode="markers",
            name="trials",
            marker={"color": PALETTE[1]},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=ahead["multiple"],
            y=ahead["value"],
            mode="markers",
            name="forecast",
            marker={"symbol": "diamond", "size": 11, "color": PALETTE[2]},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": ahead["hi"] - ahead["value"],
                "arrayminus": ahead["value"] - ahead["lo"],
            },
        )
    )
    fig.add_vline(x=1.0, line_dash="dot", line_color=GUIDE)
    fig.update_xaxes(type="log", title="training data (1 = all of this dataset's training split)")
    fig.update_yaxes(title=f"valid {metric}")
    return style(fig, "Learning curve and forecast (beyond the dotted line: extrapolation)")
