"""The report of a multi-label or ordinal run: the headline table (metrics with 95 % CIs per set), the table per
finding or per cut-point, and the task's figures, as one self-contained report.html plus metrics_report.json.

Single-label runs keep core.evaluation.report; its `build_report` hands other task types here. The tables are the
ones the Evaluation page shows (ui.task_view reads them from here).
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

import pandas as pd

from core.base import fmt, steps
from core.base.steps import OnStep
from core.evaluation import bytask, evaluate, taskerrors, taskplots
from core.runs import rundir

SET_NAMES = {
    "valid": "validation",
    "oof": "out-of-fold (k-fold)",
    "test": "hold-out test",
    "external": "external",
}
HEADLINES = {
    "multilabel": ("macro_roc_auc", "micro_roc_auc", "label_accuracy", "exact_match"),
    "ordinal": ("qwk", "mae", "off_by_one_accuracy", "accuracy"),
}
NAMES = {
    "macro_roc_auc": "Macro ROC AUC",
    "micro_roc_auc": "Micro ROC AUC",
    "label_accuracy": "Accuracy per finding and image",
    "exact_match": "Exact match (every finding right)",
    "qwk": "Quadratic weighted kappa",
    "mae": "Mean absolute error (grades)",
    "off_by_one_accuracy": "Off-by-one accuracy",
    "accuracy": "Exact grade accuracy",
}
STEPS = 3


def headline_table(ev: dict[str, Any]) -> pd.DataFrame:
    """One row per headline metric of the task, one column per set (a hold-out test first), values with 95 % CIs."""
    sets = {k: ev["sets"][k] for k in sorted(ev["sets"], key=lambda k: k != "test")}
    rows = []
    for name in HEADLINES[ev["task"]]:
        row = {"metric": NAMES[name]}
        row.update({SET_NAMES.get(s, s): fmt.with_ci(e["ci"].get(name)) for s, e in sets.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def detail_table(set_ev: dict[str, Any]) -> pd.DataFrame:
    """Per finding (AUC / AP / sensitivity / specificity with CIs, its threshold and 2x2) or per cut-point."""
    ci = set_ev["ci"]
    if set_ev["task"] == "multilabel":
        rows = []
        for r in set_ev["per_finding"]:
            f = r["finding"]
            cis = {
                m: fmt.with_ci(ci[f"{m}_{f}"]) for m in ("roc_auc", "pr_auc", "sensitivity", "specificity")
            }
            keep = ("positives", "negatives", "uncertain", "threshold", "tp", "fn", "fp", "tn")
            rows.append({"finding": f, **cis, **{k: r[k] for k in keep}})
        return pd.DataFrame(rows)
    return pd.DataFrame(
        [
            {"cut-point": r["cut"], "positives": r["positives"], "negatives": r["negatives"]}
            | {m: fmt.with_ci(r[m]) for m in ("roc_auc", "sensitivity", "specificity")}
            for r in set_ev["cut_points"]
        ]
    )


def _page(run_dir: Path, ev: dict[str, Any], frames: dict[str, pd.DataFrame]) -> str:
    """The report page: headline, then per set its table, figures (plotly.js embedded once) and top losses."""
    first = next(iter(ev["sets"].values()))
    head = "CORN head" if ev.get("head", "corn") == "corn" else "cross-entropy head"
    kind = "multi-label findings" if ev["task"] == "multilabel" else f"ordinal grades ({head})"
    parts = [
        f"<h1>Evaluation report: {html.escape(run_dir.name)}</h1>",
        f"<p>Task: {kind}; classes: {html.escape(', '.join(ev['classes']))}. 95% CIs: "
        f"{html.escape(first['bootstrap']['method'])}, {first['bootstrap']['n_resamples']} resamples.</p>",
        "<h2>Summary</h2>",
        headline_table(ev).to_html(index=False),
    ]
    js = True
    for name, set_ev in ev["sets"].items():
        parts += [f"<h2>{html.escape(SET_NAMES.get(name, name))} ({set_ev['n']} images)</h2>"]
        parts += [detail_table(set_ev).to_html(index=False)]
        parts += [w for w in map(html.escape, set_ev.get("warnings", []))]
        for fig in taskplots.task_figures(set_ev).values():
            parts.append(fig.to_html(full_html=False, include_plotlyjs=js))
            js = False
        if name in frames:
            parts += ["<h3>Top losses</h3>", taskerrors.loss_table(set_ev, frames[name]).to_html(index=False)]
    body = "\n".join(parts)
    return f"<!doctype html><html><head><meta charset='utf-8'><title>Report</title></head><body>{body}</body></html>"


def build_task_report(
    run_dir: str | Path,
    out_dir: Path,
    test_predictions: pd.DataFrame | None = None,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
    progress: OnStep | None = None,
) -> dict[str, Any]:
    """report.html and metrics_report.json of a multi-label or ordinal run (+ an external labelled table)."""
    run_dir = Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps.report(progress, "steps", 0, STEPS)
    ev = bytask.evaluate_run(run_dir, external=test_predictions, n_resamples=n_resamples, seed=seed)
    steps.report(progress, "steps", 1, STEPS)
    frames = evaluate.load_run_predictions(run_dir)
    if test_predictions is not None:
        frames["external"] = test_predictions
    (out_dir / "report.html").write_text(_page(run_dir, ev, frames), encoding="utf-8")
    steps.report(progress, "steps", 2, STEPS)
    comparison = headline_table(ev)
    record = {**ev, "comparison": comparison.to_dict("records"), "created": time.time()}
    rundir.write_json(out_dir / rundir.REPORT_METRICS, record)
    steps.report(progress, "steps", STEPS, STEPS)
    headline = HEADLINES[ev["task"]]
    return {
        "report": str(out_dir / "report.html"),
        "metrics": str(out_dir / rundir.REPORT_METRICS),
        "figures": [],
        "png": [],
        "png_ok": False,
        "png_note": "figures are embedded in report.html (no PNGs for this task type)",
        "headline": {
            n: {k: rundir.json_safe(s["ci"][k]) for k in headline if k in s["ci"]}
            for n, s in ev["sets"].items()
        },
        "comparison": comparison.to_dict("records"),
    }
