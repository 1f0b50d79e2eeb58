"""Figures of the multi-label and ordinal task types, built only from their evaluation records and label tables
(core.evaluation.multilabel / ordinal, core.data.labels); the shared figure kinds come from core.evaluation.plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.evaluation import plots


def pair_matrix(matrix: pd.DataFrame, title: str, what: str) -> go.Figure:
    """A findings x findings heatmap of image counts (co-occurrence of labels, or of errors)."""
    names = [str(c) for c in matrix.columns]
    z = matrix.to_numpy(dtype=float)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale="Blues",
            text=z.astype(int).astype(str),
            texttemplate="%{text}",
            hovertemplate=f"%{{y}} and %{{x}}: %{{z}} {what}<extra></extra>",
        )
    )
    fig.update_layout(title=title, yaxis_autorange="reversed")
    return plots.style(fig)


def finding_counts(table: pd.DataFrame, title: str = "Images per finding") -> go.Figure:
    """One bar per finding (images with it), uncertain labels stacked on top."""
    fig = go.Figure(
        [
            go.Bar(x=table["finding"], y=table["images"], name="present", marker_color=plots.colour(0)),
            go.Bar(x=table["finding"], y=table["uncertain"], name="uncertain", marker_color=plots.colour(1)),
        ]
    )
    fig.update_layout(title=title, barmode="stack", yaxis_title="images")
    return plots.style(fig)


def grade_histogram(counts: Mapping[str, int], title: str = "Images per grade (in order)") -> go.Figure:
    """Images per grade with the grades in their order."""
    return plots.class_counts(counts, title)


def _curves(curves: Mapping[str, Any], kind: str) -> dict[str, pd.DataFrame]:
    """Per-finding curve tables of one kind ("roc" or "pr") from an evaluation record."""
    return {f: pd.DataFrame(c[kind]) for f, c in curves.items()}


def multilabel_figures(ev: Mapping[str, Any]) -> dict[str, go.Figure]:
    """Per-finding ROC and PR curves (AUC with CI in the legend) and where the errors fall together."""
    ci = ev["ci"]
    findings = list(ev["curves"])
    split = ev["error_co_occurrence"]
    errors = pd.DataFrame(split["data"], index=split["index"], columns=split["columns"])
    return {
        "roc": plots.roc_curves(
            _curves(ev["curves"], "roc"), {f: ci[f"roc_auc_{f}"] for f in findings}, "ROC curve per finding"
        ),
        "pr": plots.pr_curves(
            _curves(ev["curves"], "pr"),
            {f: ci[f"pr_auc_{f}"]["value"] for f in findings},
            title="Precision-recall per finding",
        ),
        "errors": pair_matrix(errors, "Errors on both findings (images)", "images wrong on both"),
    }


def cut_point_bars(rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Each cut-point's AUC, sensitivity and specificity with their 95 % CIs as error bars."""
    fig = go.Figure()
    for i, name in enumerate(("roc_auc", "sensitivity", "specificity")):
        values = np.array([r[name]["value"] for r in rows], dtype=float)
        lo = np.array([r[name]["lo"] for r in rows], dtype=float)
        hi = np.array([r[name]["hi"] for r in rows], dtype=float)
        fig.add_bar(
            x=[r["cut"] for r in rows],
            y=values,
            name=name.replace("_", " "),
            marker_color=plots.colour(i),
            error_y={"type": "data", "symmetric": False, "array": hi - values, "arrayminus": values - lo},
        )
    fig.update_layout(title="Cut-points as binary results (95 % CI)", barmode="group", yaxis_range=[0, 1.05])
    return plots.style(fig)


def ordinal_figures(ev: Mapping[str, Any]) -> dict[str, go.Figure]:
    """The confusion matrix with its axes in grade order, and the cut-point results."""
    return {
        "confusion": plots.confusion_matrix(
            ev["confusion"], list(ev["classes"]), "Confusion matrix (grades in order)"
        ),
        "cut_points": cut_point_bars(ev["cut_points"]),
    }


def task_figures(ev: Mapping[str, Any]) -> dict[str, go.Figure]:
    """The figures of one evaluated set of a multi-label or ordinal run."""
    return multilabel_figures(ev) if ev.get("task") == "multilabel" else ordinal_figures(ev)
