"""A run's evaluation report: metrics with CIs (JSON), every figure (HTML, PNG when kaleido works), report.html.

report.html is self-contained and works offline: plotly.js is embedded once in its head and every figure
follows without its own copy. figures/*.html share one plotly.min.js written beside them.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from core.base import fmt, steps
from core.base.steps import OnStep
from core.evaluation import (
    bytask,
    calibration,
    checklist,
    conformal,
    evaluate,
    explain,
    plots,
    subgroups,
    taskreport,
)
from core.runs import rundir

REPORT_TEMPLATE = "plotly_white"  # the report page is a light document; pages in the app follow their theme
REPORT_LAYOUT = {
    "template": REPORT_TEMPLATE,
    "paper_bgcolor": "white",
    "plot_bgcolor": "white",
}  # opaque PNGs
SET_TITLES = {
    "valid": "Validation",
    "oof": "Out-of-fold (pooled k-fold validation)",
    "test": "Hold-out test",
    "external": "External test",
}
TOP_LOSSES_SHOWN = 12
PNG_SKIPPED = (  # why a report built with png=False (the app's) has no PNGs
    "not made for this report (interactive HTML figures only); `python -m core report` adds PNGs where kaleido "
    "and Chrome are installed"
)
REPORT_STEPS = 4  # build_report tells its progress in these steps


# ---------------------------------------------------------------- figures


def set_figures(name: str, ev: dict[str, Any], df: pd.DataFrame) -> dict[str, go.Figure]:
    """Confusion matrix, ROC, PR, reliability (and threshold trade-off for binary) of one evaluated set."""
    classes = ev["classes"]
    title = SET_TITLES.get(name, name)
    y, probs = evaluate.labels_and_probs(evaluate.labelled(df), classes)
    rocs, prs = evaluate.roc_curves(y, probs, classes), evaluate.pr_curves(y, probs, classes)
    per = {r["class"]: r for r in ev["per_class"]}
    binary = len(classes) == 2
    auc = {
        c: ev["ci"]["roc_auc" if binary else f"roc_auc_{c}"]
        for c in rocs
        if ("roc_auc" if binary else f"roc_auc_{c}") in ev["ci"]
    }
    figs = {
        f"{name}_confusion": plots.confusion_matrix(ev["confusion"], classes, f"{title}: confusion matrix"),
        f"{name}_roc": plots.roc_curves(rocs, auc, f"{title}: ROC curve"),
        f"{name}_pr": plots.pr_curves(
            prs,
            {c: per[c]["pr_auc"] for c in prs},
            {c: ev["counts"][c] / max(1, ev["n"]) for c in prs},
            f"{title}: precision-recall",
        ),
        f"{name}_reliability": plots.reliability_diagram(
            pd.DataFrame(ev["calibration"]["curve"]),
            ev["calibration"]["ece"],
            ev["calibration"]["brier"],
            ev["calibration"]["mode"],
            f"{title}: reliability",
        ),
    }
    if binary and rocs:
        figs[f"{name}_threshold"] = plots.threshold_tradeoff(
            evaluate.tradeoff_table(y, probs[:, 1]),
            ev["threshold"],
            f"{title}: sensitivity / specificity by threshold",
        )
    return figs


def run_figures(run_dir: Path, ev: dict[str, Any]) -> dict[str, go.Figure]:
    """Figures of the run itself: class distribution, training curves, LR finder, per-fold bars."""
    figs: dict[str, go.Figure] = {}
    run = rundir.RunFolder(run_dir)
    if run.items.is_file():
        items = run.read_items()
        figs["class_distribution"] = plots.class_distribution(evaluate.class_distribution(items))
    if run.history.is_file():
        hist = run.read_history()
        best: Any = ev.get("best_epoch")
        if "folds" in ev:
            summary = evaluate.run_summary(run_dir)
            best = {f["fold"]: f.get("best_epoch") for f in summary["metrics"].get("per_fold", [])}
        figs["training_curves"] = plots.training_curves(hist, best)
    if run.lr_find.is_file():
        lr = json.loads(run.lr_find.read_text())
        figs["lr_finder"] = plots.lr_finder(lr["lrs"], lr["losses"], lr.get("suggestions"))
    if "folds" in ev:
        figs["fold_bars"] = plots.fold_bars(
            pd.DataFrame(ev["folds"]["table"]),
            ("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity"),
        )
    return figs


# ---------------------------------------------------------------- files


def png_support() -> tuple[bool, str]:
    """Whether plotly can write PNG here (kaleido + a Chrome), and why not."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return False, "PNG export needs the 'kaleido' package (and a Chrome/Chromium): pip install kaleido"
    return True, ""


def save_figures(figs: dict[str, go.Figure], folder: Path, png: bool | None = None) -> dict[str, Any]:
    """figures/<name>.html for each (one shared plotly.min.js) and <name>.png when asked and possible."""
    folder.mkdir(parents=True, exist_ok=True)
    html_files = []
    for name, fig in figs.items():
        fig = go.Figure(fig).update_layout(**REPORT_LAYOUT)
        path = folder / f"{name}.html"
        fig.write_html(path, include_plotlyjs="directory", full_html=True)
        html_files.append(str(path))
    status: dict[str, Any] = {
        "html": html_files,
        "png": [],
        "png_ok": False,
        "png_note": PNG_SKIPPED,
    }
    if png is False:
        return status
    ok, why = png_support()
    status["png_note"] = why
    if not ok:
        return status
    paths = [folder / f"{name}.png" for name in figs]
    try:
        write_pngs([go.Figure(f).update_layout(**REPORT_LAYOUT) for f in figs.values()], paths)
        status.update(png=[str(p) for p in paths], png_ok=True, png_note="")
    except Exception as err:  # kaleido raises many kinds (no Chrome, sandbox, timeouts); HTML is there anyway
        text = (str(err).strip().splitlines() or [""])[0][:160]
        status["png_note"] = (
            f"PNG export failed ({type(err).__name__}: {text}); the HTML figures were written"
        )
    return status


def write_pngs(figs: list[go.Figure], paths: list[Path]) -> None:
    """Write PNGs through kaleido, in one browser session when plotly supports it."""
    import plotly.io as pio

    if hasattr(pio, "write_images"):
        pio.write_images(figs, paths, width=900, scale=2)
    else:  # older plotly: one call per figure
        for fig, path in zip(figs, paths):
            fig.write_image(path, width=900, scale=2)


# ---------------------------------------------------------------- the report

SET_RULES = (  # prediction-set rules the report shows
    conformal.SetRule(0.90),
    conformal.SetRule(0.95),
    conformal.SetRule(0.90, mondrian=True),
)


def defend_sections(
    run_dir: Path, external: pd.DataFrame | None, n_resamples: int, seed: int
) -> dict[str, Any]:
    """Temperature scaling before/after and prediction sets (coverage, referral) for the report."""
    sets = [conformal.run_conformal(str(run_dir), r, external, n_resamples, seed) for r in SET_RULES]
    return {
        "temperature_scaling": calibration.calibration_report(run_dir, n_resamples=n_resamples, seed=seed),
        "prediction_sets": [s for s in sets if s is not None],
        "checklist": checklist.table(checklist.checklist(run_dir, n_resamples)).to_dict("records"),
        "loso": evaluate.run_summary(run_dir).get("loso"),  # a leave-one-site-out run's per-site record
    }


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    test_predictions: pd.DataFrame | None = None,
    threshold: float | None = None,
    prevalence: float | None = None,
    n_resamples: int = evaluate.BOOTSTRAP_RESAMPLES,
    seed: int = evaluate.BOOTSTRAP_SEED,
    png: bool | None = None,
    progress: OnStep | None = None,
) -> dict[str, Any]:
    """Evaluate a run (+ an external labelled table); write report.html, figures/, metrics_report.json to out_dir
    (default run_dir/report). png None: when kaleido is there. `progress` hears of its REPORT_STEPS steps."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else rundir.RunFolder(run_dir).report_folder()
    if bytask.task_of(evaluate.run_summary(run_dir)) != "single":  # multi-label / ordinal: their own report
        return taskreport.build_task_report(run_dir, out, test_predictions, n_resamples, seed, progress)
    out.mkdir(parents=True, exist_ok=True)
    steps.report(progress, "steps", 0, REPORT_STEPS)
    ev = evaluate.evaluate_run(
        run_dir,
        threshold=threshold,
        external=test_predictions,
        prevalence=prevalence,
        n_resamples=n_resamples,
        seed=seed,
    )
    ev.update(defend_sections(run_dir, test_predictions, n_resamples, seed))
    extra = {} if test_predictions is None else {"external": test_predictions}
    frames = {**evaluate.load_run_predictions(run_dir), **extra}
    steps.report(progress, "steps", 1, REPORT_STEPS)
    figs = run_figures(run_dir, ev)
    for name, set_ev in ev["sets"].items():
        figs.update(set_figures(name, set_ev, frames[name]))
    steps.report(progress, "steps", 2, REPORT_STEPS)
    saved = save_figures(figs, out / "figures", png)
    steps.report(progress, "steps", 3, REPORT_STEPS)
    losses = {
        n: explain.top_losses(evaluate.labelled(frames[n]), ev["classes"], TOP_LOSSES_SHOWN)
        for n in ev["sets"]
    }
    page = render_html(run_dir, ev, figs, losses, saved)
    (out / "report.html").write_text(page, encoding="utf-8")
    comparison = evaluate.comparison_table(ev["sets"], evaluate.HEADLINE + ("pr_auc", "brier", "ece"))
    record = {**ev, "comparison": comparison.to_dict("records"), "figures": saved, "created": time.time()}
    rundir.write_json(out / rundir.REPORT_METRICS, record)
    steps.report(progress, "steps", REPORT_STEPS, REPORT_STEPS)
    return _result(out, ev, saved, comparison)


def _result(out: Path, ev: dict[str, Any], saved: dict[str, Any], comparison: pd.DataFrame) -> dict[str, Any]:
    """What build_report returns: where the report went, its figures and the headline numbers."""
    return {
        "report": str(out / "report.html"),
        "metrics": str(out / rundir.REPORT_METRICS),
        "figures": saved["html"],
        "png": saved["png"],
        "png_ok": saved["png_ok"],
        "png_note": saved["png_note"],
        "headline": {
            n: {k: rundir.json_safe(s["ci"][k]) for k in evaluate.HEADLINE if k in s["ci"]}
            for n, s in ev["sets"].items()
        },
        "comparison": comparison.to_dict("records"),
        "calibration": ev["temperature_scaling"],
        "prediction_sets": ev["prediction_sets"],
    }


# ---------------------------------------------------------------- HTML


_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #1f2430; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.6rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .92rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: right; }
th { background: #f3f5f8; } td:first-child, th:first-child { text-align: left; }
.note { color: #555; font-size: .9rem; } .grid { display: flex; flex-direction: column; gap: 1rem; }
.grid > div { width: 100%; max-width: 900px; }
.gallery { display: flex; flex-wrap: wrap; gap: .8rem; } .gallery figure { margin: 0; width: 150px; font-size: .8rem; }
.gallery img { width: 150px; height: 150px; object-fit: contain; background: #000; }
"""


def render_html(
    run_dir: Path,
    ev: dict[str, Any],
    figs: dict[str, go.Figure],
    losses: dict[str, pd.DataFrame],
    saved: dict[str, Any],
) -> str:
    """The whole report page as one HTML string (plotly.js embedded once)."""
    from plotly.offline import get_plotlyjs

    parts = [f"<h1>Evaluation report: {html.escape(run_dir.name)}</h1>", _intro(ev, saved)]
    parts += [
        "<h2>Summary</h2>",
        _table(evaluate.comparison_table(ev["sets"], evaluate.HEADLINE + ("pr_auc", "brier", "ece"))),
    ]
    parts += _calibration_section(ev.get("temperature_scaling"))
    parts += _sets_section(ev.get("prediction_sets") or [])
    parts += _loso_section(ev.get("loso"))
    if ev.get("checklist"):
        parts += [
            "<h2>Reporting checklist (CLAIM 2024 / TRIPOD+AI topics)</h2>",
            _table(pd.DataFrame(ev["checklist"])),
        ]
    parts += _run_section(ev, figs)
    for name, set_ev in ev["sets"].items():
        parts += _set_section(name, set_ev, figs, losses.get(name))
    body = "\n".join(parts)
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Report {html.escape(run_dir.name)}</title>"
        f"<style>{_CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body>{body}</body></html>"
    )


def _intro(ev: dict[str, Any], saved: dict[str, Any]) -> str:
    """Run type, classes, threshold and how the CIs were made."""
    first: dict[str, Any] = next(iter(ev["sets"].values()), {})
    boot = first.get("bootstrap", {})
    thr = first.get("threshold")
    lines = [
        f"Run type: {html.escape(str(ev['type']))}; classes: {html.escape(', '.join(ev['classes']))}.",
        (
            f"Positive class: <b>{html.escape(ev['classes'][1])}</b>; decision threshold {thr:.3f} on its probability."
            if thr is not None
            else "Multi-class: the predicted class is the most probable one."
        ),
        f"95% confidence intervals: bootstrap, {boot.get('n_resamples')} resamples (seed {boot.get('seed')}), "
        f"{html.escape(str(boot.get('method', '')))}.",
        "PNG figures: "
        + ("written beside the HTML figures." if saved["png_ok"] else html.escape(saved["png_note"])),
    ]
    return "<p class='note'>" + "<br>".join(lines) + "</p>"


def _calibration_section(rep: dict[str, Any] | None) -> list[str]:
    """The temperature the run's probabilities are scaled with, and ECE / Brier before and after it."""
    if rep is None:
        return []
    t = rep["temperature"]
    return [
        "<h2>Calibration (temperature scaling)</h2>",
        f"<p class='note'>Temperature {t['temperature']:.3f}, fitted on {t['n']} {html.escape(t['fitted_on'])} "
        "predictions; every probability in this report, in Predict and in the ONNX file is scaled with it "
        "(decisions at the argmax / 0.5 and ROC AUC do not change). The set it was fitted on flatters the "
        "'after'; judge it on the test set.</p>",
        _table(calibration.report_table(rep)),
    ]


def _sets_section(reports: list[dict[str, Any]]) -> list[str]:
    """Prediction sets: coverage reached, referral rate and accuracy of the answered, and the coverage curve."""
    if not reports:
        return []
    first = reports[0]
    parts = [
        "<h2>Prediction sets and referral (split conformal)</h2>",
        f"<p class='note'>Calibrated on {first['n_cal']} {html.escape(first['calibrated_on'])} predictions. "
        "A set holds the true class with probability at least the chosen coverage when the images are "
        "exchangeable with those (same site, scanner, population); another site breaks it. An image is "
        "referred to a reader when its set is not exactly one class.</p>",
        _table(conformal.report_table(reports)),
    ]
    curve = pd.DataFrame(first.get("curve", []))
    if len(curve):
        parts.append(_figure(plots.coverage_referral(curve, f"Coverage and referral ({first['curve_set']})")))
    if first.get("abstain"):
        parts += [
            "<h3>Abstain band around the threshold 0.5 (binary)</h3>",
            _table(pd.DataFrame(first["abstain"])),
        ]
    return parts


def _loso_section(rec: dict[str, Any] | None) -> list[str]:
    """A leave-one-site-out run: each held-out site's metrics with CIs, the spread across sites, the warnings."""
    if not rec:
        return []
    spread = "; ".join(
        f"{m.replace('_', ' ')} {v['min']:.3f} to {v['max']:.3f} (sd {v['sd']:.3f})"
        for m, v in rec["spread"].items()
    )
    by = "patients" if rec.get("patient_level") else "images"
    return [
        f"<h2>Leave one site out ({len(rec['sites'])} sites of '{html.escape(rec['site_col'])}')</h2>",
        f"<p class='note'>One model per site, trained on the other sites and measured on the held-out one "
        f"(95 % CIs by bootstrap over {by}). Across sites: {html.escape(spread)}. The held-out site also chose "
        "its model's saved epoch, as in k-fold, which flatters its numbers a little.</p>",
        _table(subgroups.table({"column": "site", "groups": rec["per_site"]})),
        *(f"<p class='note'><b>Warning:</b> {html.escape(w)}</p>" for w in rec.get("warnings", [])),
    ]


def _run_section(ev: dict[str, Any], figs: dict[str, go.Figure]) -> list[str]:
    """Data and training figures, and the k-fold table."""
    parts = ["<h2>Data and training</h2>", "<div class='grid'>"]
    parts += [_figure(figs[k]) for k in ("class_distribution", "training_curves", "lr_finder") if k in figs]
    parts.append("</div>")
    if "folds" in ev:
        table = pd.DataFrame(ev["folds"]["table"])
        ms = ev["folds"]["mean_sd"]
        summary = {"fold": "mean +/- sd", "n": int(table["n"].sum())}
        summary.update({k: fmt.mean_sd(v["mean"], v["sd"]) for k, v in ms.items() if k in table})
        parts += [
            "<h3>Per fold</h3>",
            _table(pd.concat([table.astype(object), pd.DataFrame([summary])], ignore_index=True)),
            _figure(figs["fold_bars"]),
        ]
    return parts


def _set_section(
    name: str, ev: dict[str, Any], figs: dict[str, go.Figure], losses: pd.DataFrame | None
) -> list[str]:
    """Metrics with CIs, per-class table, operating points, calibration and figures of one set."""
    ci = pd.DataFrame(
        [
            {"metric": k, "value": v["value"], "95% CI low": v["lo"], "95% CI high": v["hi"]}
            for k, v in ev["ci"].items()
        ]
    )
    other = pd.DataFrame([{"metric": k, "value": v} for k, v in ev["metrics"].items() if k not in ev["ci"]])
    parts = [
        f"<h2>{html.escape(SET_TITLES.get(name, name))} (n = {ev['n']})</h2>",
        "<h3>Metrics with 95% bootstrap CI</h3>",
        _table(ci),
        _table(other),
        "<h3>Per class</h3>",
        _table(pd.DataFrame(ev["per_class"])),
    ]
    if ev.get("operating_points"):
        parts += [
            "<h3>Operating points</h3>",
            "<p class='note'>PPV/NPV at the sample prevalence unless a prevalence was stated.</p>",
            _table(pd.DataFrame(ev["operating_points"])),
        ]
    parts.append("<div class='grid'>")
    parts += [
        _figure(figs[k])
        for k in (
            f"{name}_confusion",
            f"{name}_roc",
            f"{name}_pr",
            f"{name}_reliability",
            f"{name}_threshold",
        )
        if k in figs
    ]
    parts.append("</div>")
    if losses is not None and len(losses):
        parts += ["<h3>Top losses</h3>", _gallery(losses)]
    return parts


def _table(df: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table with 3-decimal floats."""
    return df.to_html(index=False, escape=True, na_rep="-", float_format=fmt.number, border=0)


def _figure(fig: go.Figure) -> str:
    """A figure's div (plotly.js is already in the page head)."""
    fig = go.Figure(fig).update_layout(**REPORT_LAYOUT)
    return (
        "<div>"
        + fig.to_html(full_html=False, include_plotlyjs=False, config={"displaylogo": False})
        + "</div>"
    )


def _gallery(losses: pd.DataFrame, size: int = 150) -> str:
    """Thumbnails of the top-loss images with true label, prediction and probability."""
    from core.data import imaging

    cells = []
    for r in losses.to_dict("records"):
        try:
            img = imaging.read_image(r["path"])
            img.thumbnail((size, size))
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=80)
            src = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
            pic = f"<img src='{src}' alt=''>"
        except Exception:  # a file moved or unreadable since training: show the row without a picture
            pic = "<div class='note'>(image unavailable)</div>"
        cells.append(
            f"<figure>{pic}<figcaption>#{r['rank']} {html.escape(Path(str(r['path'])).name)}<br>"
            f"true {html.escape(str(r['label']))}, pred {html.escape(str(r['pred']))} "
            f"({r['prob_pred']:.2f})<br>loss {r['loss']:.2f}</figcaption></figure>"
        )
    return "<div class='gallery'>" + "".join(cells) + "</div>"
