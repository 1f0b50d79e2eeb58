"""Widgets of the multi-label and ordinal task types: the explorer's finding counts / grade histogram, the evaluation
of a multi-label or ordinal run (metrics with CIs, per finding or per cut-point, figures) and its predictions.

The pages call these instead of the single-label views when the source, run or model has another task type
(core.evaluation.bytask.task_of); all numbers come from core (multilabel, ordinal, taskplots).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.base import fmt
from core.base.config import SourceConfig
from core.data import labels as lab
from core.data.items import Dataset
from core.evaluation import bytask, evaluate, finding_thresholds, taskplots
from core.evaluation.taskreport import SET_NAMES, detail_table, headline_table
from core.runs import jobs
from core.runs.rundir import RunFolder, predictions_name
from core.web import hosting
from ui import common


def run_task(run_dir: str) -> str:
    """single, multilabel or ordinal: the task of a finished run (its metrics.json)."""
    return bytask.task_of(RunFolder(run_dir).read_metrics())


def model_task(model: str) -> str:
    """The task of a saved model (its manifest; no weights loaded)."""
    from core.evaluation.ensemble import member_path
    from core.models import savedmodel

    return savedmodel.read_manifest(member_path(model))[0].task_type


# ---------------------------------------------------------------- explorer


def explorer_panel(ds: Dataset, cfg: SourceConfig) -> None:
    """Per-finding counts and co-occurrence (a multi-label source), or the grade histogram (numbered classes)."""
    labels = ds.items["label"].astype(str)
    if cfg.multilabel():
        st.subheader("Findings (multi-label)")
        left, right = st.columns(2)
        left.plotly_chart(taskplots.finding_counts(lab.finding_counts(labels)), width="stretch")
        right.plotly_chart(
            taskplots.pair_matrix(lab.co_occurrence(labels), "Findings together (images)", "images"),
            width="stretch",
        )
        empty = int((labels == lab.EMPTY).sum())
        st.caption(
            f"{empty} image(s) with no finding. Train with task type **multilabel** (Training setup page). "
            f"Uncertain labels (-1): {cfg.uncertain} (see the source options above)."
        )
        return
    order = lab.infer_order(labels.unique())
    if order and len(order) >= 3:
        st.subheader("Grades (ordinal)")
        counts = labels.value_counts()
        st.plotly_chart(taskplots.grade_histogram({g: int(counts.get(g, 0)) for g in order}), width="stretch")
        st.caption(
            f"The classes look like ordered grades ({' < '.join(order)}): task type **ordinal** on the Training "
            "setup page trains an ordinal head and reports QWK, MAE, off-by-one accuracy and cut-points."
        )


# ---------------------------------------------------------------- evaluation


@st.cache_data(max_entries=32, show_spinner="Computing metrics with bootstrap confidence intervals...")
def evaluation(run_dir: str, version: tuple) -> dict[str, Any]:
    """bytask.evaluate_run of a multi-label or ordinal run folder."""
    return bytask.evaluate_run(run_dir)


def show_run(job: jobs.Job, checks: Callable[..., None] | None = None) -> None:
    """A multi-label or ordinal run: headline metrics, the per-finding or cut-point table, figures, curves, CSVs;
    `checks` (from the page) draws the errors of the shown set (top losses, matrix cells, suspect labels)."""
    run = RunFolder(job.run_dir)
    summary = run.read_metrics()
    version = common.file_version(*run.result_files())
    try:
        ev = evaluation(job.run_dir, version)
    except ValueError as err:
        st.error(f"This run's predictions cannot be evaluated: {err}")
        return
    kind = "multi-label findings" if ev["task"] == "multilabel" else "ordinal grades"
    st.caption(f"Task: {kind} ({', '.join(ev['classes'])}). " + evaluate.provenance(summary))
    st.subheader("Metrics (95 % confidence intervals)")
    st.dataframe(headline_table(ev), hide_index=True, width="stretch")
    first = next(iter(ev["sets"].values()))
    st.caption(f"Intervals: {first['bootstrap']['method']}, {first['bootstrap']['n_resamples']} resamples.")
    for name, set_ev in ev["sets"].items():
        for w in set_ev.get("warnings", [])[:1]:
            st.warning(f"**{SET_NAMES.get(name, name).capitalize()}:** {w}")
    name = st.selectbox(
        "Details for", list(ev["sets"]), key="tv_set", format_func=lambda n: SET_NAMES.get(n, n)
    )
    set_ev = ev["sets"][name]
    st.dataframe(detail_table(set_ev), hide_index=True, width="stretch")
    if ev["task"] == "multilabel":
        st.caption("Thresholds: " + str((summary.get("task") or {}).get("thresholds_from", "0.5")) + ".")
    figs = taskplots.task_figures(set_ev)
    tabs = st.tabs([*(k.replace("_", " ").capitalize() for k in figs), "Training curves"])
    for tab, (key, fig) in zip(tabs, figs.items()):
        tab.plotly_chart(fig, width="stretch", key=f"tv_fig_{key}")
    with tabs[-1]:
        common.curves(job, common.best_epochs(summary, None))
    frames = evaluate.load_run_predictions(job.run_dir)
    if ev["task"] == "multilabel":
        threshold_explorer(job, frames, list(ev["classes"]), (summary.get("task") or {}).get("thresholds"))
    downloads(job, frames, name, version)
    if checks is not None:
        checks(job, ev, frames, name)


# ---------------------------------------------------------------- per-finding thresholds (multi-label)


def chosen_thresholds(job_id: str) -> dict[str, float] | None:
    """The per-finding thresholds chosen for a multi-label run on the Evaluation page (None: the model's own)."""
    chosen = st.session_state.get(common.CHOSEN, {}).get(job_id)
    return dict(chosen) if isinstance(chosen, dict) else None


def _set_threshold(key: str, value: float) -> None:
    """Button callback: move a finding's threshold slider."""
    st.session_state[key] = value


def _rule_buttons(rules: dict[str, float], key: str) -> None:
    """One button per rule threshold of the finding (finding_thresholds.RULE_LABELS), each moving its slider."""
    cols = st.columns(len(finding_thresholds.RULE_LABELS))
    for col, (rule, label) in zip(cols, finding_thresholds.RULE_LABELS.items()):
        if rule in rules:
            col.button(
                f"{label} ({rules[rule]:.3f})" if rule != "default" else label,
                key=f"tv_rule_{rule}",
                on_click=_set_threshold,
                args=(key, rules[rule]),
                help=finding_thresholds.RULE_HELP[rule],
                width="stretch",
            )


def threshold_explorer(
    job: jobs.Job, frames: dict[str, pd.DataFrame], findings: list[str], saved: dict[str, float] | None
) -> None:
    """Pick a finding, move its threshold (rule buttons), see its validation sensitivity / specificity / PPV / NPV;
    every finding's threshold is kept per run ({finding: threshold}) and used on the Predict page."""
    chosen_set = finding_thresholds.validation_set(frames)
    if chosen_set is None:
        return
    set_name, df = chosen_set
    own = finding_thresholds.merged(saved, None, findings)
    chosen = finding_thresholds.merged(own, chosen_thresholds(job.id), findings)
    st.subheader("Decision thresholds per finding")
    finding = st.selectbox("Threshold of finding", findings, key="tv_thr_finding")
    key = f"tv_thr_{job.id}_{finding}"
    _rule_buttons(finding_thresholds.rule_thresholds(df, findings, finding, own[finding]), key)
    st.session_state.setdefault(key, chosen[finding])
    c1, c2 = st.columns([3, 1])
    t = c1.slider(
        f"P({finding}) at or above which {finding} is called present",
        0.0,
        1.0,
        step=0.001,
        format="%.3f",
        key=key,
    )
    prev = c2.number_input(
        "Prevalence for PPV/NPV (0 = as in this set)",
        0.0,
        0.999,
        0.0,
        0.01,
        key="tv_prevalence",
        format="%.3f",
    )
    m = finding_thresholds.metrics_at(df, findings, finding, float(t), float(prev) if prev > 0 else None)
    for col, name in zip(st.columns(4), ("sensitivity", "specificity", "ppv", "npv")):
        col.metric(name.upper() if len(name) == 3 else name.capitalize(), fmt.number(m[name]))
    chosen[finding] = float(t)
    carried = st.session_state.setdefault(common.CHOSEN, {})
    if chosen != own:  # Predict decides at these; at the run's own it keeps the model's (and says so)
        carried[job.id] = chosen
    else:
        carried.pop(job.id, None)
    where = "out-of-fold" if set_name == "oof" else "validation"
    st.caption(
        f"{finding} on the {m['tp'] + m['fn'] + m['fp'] + m['tn']} {where} images with a known label for it: "
        f"TP {m['tp']}, FP {m['fp']}, TN {m['tn']}, FN {m['fn']}; PPV/NPV at prevalence "
        f"{fmt.number(m['prevalence'])}. Thresholds are chosen on {where} data, never on a test set; the metrics "
        "above stay at the run's own thresholds. These thresholds are carried to the Predict page for this run."
    )
    table = finding_thresholds.summary_table(df, findings, chosen)
    st.dataframe(
        table[["finding", "threshold", "sensitivity", "specificity", "tp", "fn", "fp", "tn"]].assign(
            run_chose=[own[f] for f in findings]
        ),
        hide_index=True,
        width="stretch",
    )


@st.cache_data(max_entries=8, show_spinner="Writing the report (metrics with CIs, figures)...")
def report_html(run_dir: str, version: tuple) -> tuple[bytes, str]:
    """The task report (core.evaluation.report.build_report) built into the run folder; (its bytes, its path)."""
    from core.evaluation import report

    rep = report.build_report(run_dir, RunFolder(run_dir).report_folder(), png=False)
    return Path(rep["report"]).read_bytes(), rep["report"]


def downloads(job: jobs.Job, frames: dict[str, pd.DataFrame], name: str, version: tuple) -> None:
    """The shown set's predictions as CSV, and the HTML report (built on request into the run folder)."""
    shown = frames[name].assign(path=frames[name]["path"].map(_name)) if hosting.hosted() else frames[name]
    c1, c2 = st.columns(2)
    c1.download_button(
        f"Download the {SET_NAMES.get(name, name)} predictions (CSV)",
        shown.to_csv(index=False).encode(),
        file_name=predictions_name(name),
        key="tv_download",
    )
    if c2.button("Build the report (HTML)", key="tv_report"):
        st.session_state["tv_report_for"] = job.id
    if st.session_state.get("tv_report_for") == job.id:
        data, path = report_html(job.run_dir, version)
        c2.download_button(
            "Download report (HTML)",
            data,
            file_name=f"report_{job.id}.html",
            mime="text/html",
            key="tv_dl_report",
        )
        if not hosting.hosted():
            c2.caption(f"Also saved as {path}.")


def _name(path: str) -> str:
    """A file's name (hosted mode never shows server paths)."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------- predict


def tta_option(task: str) -> bool:
    """What decides for this model (no threshold slider: per-finding thresholds / the grade rule), and TTA."""
    c1, c2 = st.columns([3, 1])
    c1.caption(
        "Multi-label model: each finding is decided at its own threshold, chosen on the validation set (or on "
        "the Evaluation page's threshold explorer for this run)."
        if task == "multilabel"
        else "Ordinal model: the predicted grade is the number of cut-points P(grade > k) above 0.5."
    )
    return bool(c2.checkbox("Test-time augmentation", key="pr_tta", help=common.TTA_HELP))


def _decided_how(task: str, thresholds: dict[str, float] | None) -> str:
    """What decides the shown predictions: the thresholds chosen on the Evaluation page, the model's own, the grade."""
    if task != "multilabel":
        return "Predicted grade (rank-consistent), expected grade and each grade's probability."
    if thresholds:
        return (
            "Each finding decided at the threshold chosen for this run on the Evaluation page: "
            f"{finding_thresholds.describe(thresholds)}."
        )
    return "Each finding decided at its threshold (chosen on the validation set)."


def predict_results(result: dict[str, Any], task: str, thresholds: dict[str, float] | None = None) -> None:
    """A multi-label or ordinal model's predictions: table, download, and Grad-CAM per finding or grade;
    `thresholds` (multi-label: chosen on the Evaluation page) decide the findings instead of the model's own."""
    df = result["df"]
    st.subheader(f"Predictions ({len(df)})")
    if df.empty:
        st.warning(
            "No image could be predicted." if len(result["problems"]) else "No image or DICOM files found."
        )
        return
    classes = [c[len("prob_") :] for c in df.columns if c.startswith("prob_") and c != "prob_pred"]
    if task == "multilabel" and thresholds:
        df = finding_thresholds.decide(df, classes, thresholds)
    table = df.assign(path=df["path"].map(_name))
    st.caption(_decided_how(task, thresholds))
    st.dataframe(table, hide_index=True, width="stretch")
    full = table if hosting.hosted() else df
    st.download_button(
        "Download CSV", full.to_csv(index=False).encode(), file_name="predictions.csv", key="tv_pr_download"
    )
    i = st.selectbox(
        "Image", list(range(len(df))), key="tv_pr_pick", format_func=lambda k: table["path"].iloc[k]
    )
    default = classes.index(df["pred"].iloc[i]) if df["pred"].iloc[i] in classes else 0
    target = st.selectbox("Grad-CAM for", classes, index=default, key="tv_pr_class")
    common.show_cam(result["model"], str(df["path"].iloc[i]), target, caption=table["path"].iloc[i])
