"""Errors of a multi-label or ordinal run on the Evaluation page: top losses, the clickable confusion matrix (per finding
for multi-label: its 2x2 table; the ordered grade matrix for ordinal), suspect labels (k-fold runs) and Grad-CAM of a
chosen finding or grade, and under each gallery the corrections of its images (ui.corrections: exclude, grade as
K, add / remove a finding). Every ranking comes from core.evaluation.taskerrors; the page hands this to
ui.task_view.show_run as its `checks` (as it hands ui.checks_view.eval_checks to the single-label view).

Session state: "tc_errors" (errors only), "tc_finding" / "tc_sus_finding" (the finding shown), "tc_cell" (the opened
cell, "t,p"), and one Grad-CAM pick per gallery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.base import fmt
from core.base.config import SourceConfig
from core.evaluation import checks, evaluate, plots, relabel, taskerrors
from core.evaluation.taskreport import SET_NAMES
from core.runs import jobs
from core.runs.rundir import RunFolder
from ui import common, corrections

TOP_K, COLS = 12, 6
CELL = "tc_cell"
SIDES = [taskerrors.ABSENT, taskerrors.PRESENT]


@st.cache_data(max_entries=16, show_spinner="Checking whether the model learned the grades...")
def _grades_withheld(run_dir: str, version: tuple, grades: tuple[str, ...]) -> str | None:
    """checks.suspects_withheld of an ordinal run's out-of-fold predictions (its ROC AUC bootstrapped once)."""
    oof = evaluate.labelled(evaluate.load_run_predictions(run_dir)["oof"])
    return checks.suspects_withheld(oof[oof["label"].astype(str).isin(grades)], list(grades))


def task_checks(job: jobs.Job, ev: dict[str, Any], frames: dict[str, pd.DataFrame], set_name: str) -> None:
    """Top losses, the clickable matrix and suspect labels of one set of a multi-label or ordinal run, each with
    corrections (exclude, or change the label) of the images it shows, and the corrections collected."""
    set_ev = ev["sets"][set_name]
    df = taskerrors.decided(set_ev, frames[set_name])
    run = corrections.run_config(job)
    # external images: not its source
    src = run.source if run is not None and set_name != "external" else None
    top_losses_section(job, set_ev, df, set_name, src)
    if set_ev["task"] == "multilabel":
        finding_cells(job, set_ev, df, src)
    else:
        grade_cells(job, set_ev, df, src)
    suspect_section(job, ev, frames, src)
    if run is not None:
        corrections.corrections_panel(run.source, run)


def _act(
    rows: pd.DataFrame,
    set_ev: dict[str, Any],
    src: SourceConfig | None,
    key: str,
    why: str,
    default: str = "",
) -> None:
    """Exclude the images of a gallery or change their labels (collected; written from the corrections panel)."""
    if src is None:
        return
    if set_ev.get("warnings"):  # a model that did not learn: its errors are no evidence against a label
        st.warning(
            "Look before you act on these images: the model has not learned (see the warnings at the top of this "
            "page). Its errors say nothing about the labels."
        )
    corrections.action_picker(
        rows, list(set_ev["classes"]), src, key, why, set_ev["task"], default or relabel.EXCLUDE
    )


def _caption(task: str):
    """The caption of a gallery cell: true and predicted findings or grades, and the loss."""
    if task == "multilabel":
        return lambda r: (
            f"#{r['rank']} true {taskerrors.shown_findings(r['label'])} · "
            f"pred {taskerrors.shown_findings(r['pred'])} · loss {r['loss']:.2f}"
        )
    return lambda r: (
        f"#{r['rank']} true {r['label']} · pred {r['pred']} (expected {r['expected_grade']:.1f}) "
        f"· loss {r['loss']:.2f}"
    )


def top_losses_section(
    job: jobs.Job, set_ev: dict[str, Any], df: pd.DataFrame, set_name: str, src: SourceConfig | None = None
) -> None:
    """The images the model got most wrong on this set by the task's loss, and Grad-CAM for one of them."""
    st.subheader(f"Top losses ({SET_NAMES.get(set_name, set_name)})")
    task, classes = set_ev["task"], list(set_ev["classes"])
    st.caption(
        "Loss per image: binary cross-entropy averaged over its findings (uncertain ones left out)."
        if task == "multilabel"
        else "Loss per image: the cumulative cross-entropy over the cut-points 'grade > k' (it grows with "
        "the distance to the true grade); 'expected' is the probability-weighted grade."
    )
    errors = st.checkbox("Errors only", key="tc_errors")
    rows = taskerrors.top_losses(df, classes, task, errors_only=errors).head(TOP_K)
    if rows.empty:
        st.info("No misclassified images in this set." if errors else "No labelled images in this set.")
        return
    common.gallery(rows, _caption(task), COLS)
    cam_picker(job, rows, task, classes, "tc_top")
    _act(rows, set_ev, src, "tc_top_act", f"top loss ({SET_NAMES.get(set_name, set_name)})")


def _default_target(row: dict, task: str, classes: list[str]) -> int:
    """The finding or grade a Grad-CAM starts on: a wrongly decided finding (else a predicted one) / the predicted grade."""
    if task == "multilabel":
        wrong = [f for f in str(row.get("wrong", "")).split(", ") if f]
        named = wrong or [f for f in classes if int(row.get(f"pred_{f}", 0)) == 1]
        return classes.index(named[0]) if named else 0
    return classes.index(str(row["pred"])) if str(row["pred"]) in classes else 0


def cam_picker(
    job: jobs.Job, rows: pd.DataFrame, task: str, classes: list[str], key: str, target: str | None = None
) -> None:
    """Grad-CAM of one gallery image for a chosen finding (multi-label) or grade (ordinal: the predicted one first)."""
    records = rows.to_dict("records")
    names = {i: f"#{r['rank']} {Path(str(r['path'])).name}" for i, r in enumerate(records)}
    c1, c2 = st.columns(2)
    pick = c1.selectbox("Grad-CAM for", list(names), format_func=names.get, key=f"{key}_cam")
    row = records[pick]
    if target is None:
        what = "Finding" if task == "multilabel" else "Grade"
        target = c2.selectbox(
            what, classes, index=_default_target(row, task, classes), key=f"{key}_cls_{pick}"
        )
    model = common.row_model(job.run_dir, row)
    if model is None:
        st.caption("This run has no saved model to explain with.")
        return
    words = taskerrors.shown_findings if task == "multilabel" else str
    common.show_cam(
        model, str(row["path"]), target, caption=f"true {words(row['label'])}, predicted {words(row['pred'])}"
    )


# ---------------------------------------------------------------- the clickable matrices


def _cell_pick(cm: list[list[int]], classes: list[str], chart_key: str, title: str, name) -> tuple[int, int]:
    """Draw a clickable confusion matrix and a cell picker kept in step with it; the (true, predicted) cell."""
    st.plotly_chart(
        plots.confusion_matrix_cells(cm, classes, title),
        width="stretch",
        key=chart_key,
        on_select=lambda: common.pick_clicked_cell(chart_key, classes, CELL),
        selection_mode="points",
    )
    n = len(classes)
    pairs = {f"{t},{p}": (t, p) for t in range(n) for p in range(n)}
    if st.session_state.get(CELL) not in pairs:  # start on the fullest error cell
        st.session_state[CELL] = max(
            pairs, key=lambda c: (pairs[c][0] != pairs[c][1], cm[pairs[c][0]][pairs[c][1]])
        )
    cell = st.selectbox("Cell", list(pairs), key=CELL, format_func=lambda c: name(*pairs[c]))
    return pairs[cell]


def finding_cells(
    job: jobs.Job, set_ev: dict[str, Any], df: pd.DataFrame, src: SourceConfig | None = None
) -> None:
    """Pick a finding; click a cell of its 2x2 table (TP / FP / FN / TN) to see those images by loss, with Grad-CAM."""
    st.subheader("Open a finding's 2x2 table")
    findings = list(set_ev["classes"])
    finding = st.selectbox("Finding", findings, key="tc_finding")
    cm = taskerrors.finding_confusion(df, findings, finding)

    def name(t: int, p: int) -> str:
        return f"{taskerrors.CELL_NAMES[(t, p)]}: {SIDES[t]}, decided {SIDES[p]} ({cm[t][p]})"

    thr = set_ev["thresholds"][finding]
    t, p = _cell_pick(cm, SIDES, "tc_cm_ml", f"{finding} at threshold {thr:.3f}: click a cell", name)
    rows = taskerrors.finding_cell(df, findings, finding, t, p).head(TOP_K)
    if rows.empty:
        st.info("No images in this cell.")
        return
    st.caption(f"{finding}, {name(t, p)}: the {len(rows)} with the highest loss on {finding} first.")
    common.gallery(
        rows,
        lambda r: f"#{r['rank']} {taskerrors.shown_findings(r['label'])} · P({finding}) {r['prob']:.2f}",
        COLS,
    )
    cam_picker(job, rows, "multilabel", findings, f"tc_cell_{finding}_{t}{p}", target=finding)
    fix = {(0, 1): relabel.ADD + finding, (1, 0): relabel.REMOVE + finding}.get((t, p), "")
    _act(rows, set_ev, src, f"tc_cell_act_{finding}_{t}{p}", f"{finding}: {name(t, p)}", fix)


def grade_cells(
    job: jobs.Job, set_ev: dict[str, Any], df: pd.DataFrame, src: SourceConfig | None = None
) -> None:
    """Click a cell of the confusion matrix in grade order to see its images by loss, with Grad-CAM of a grade."""
    st.subheader("Open a confusion-matrix cell (grades in order)")
    grades, cm = list(set_ev["classes"]), set_ev["confusion"]

    def name(t: int, p: int) -> str:
        return f"true {grades[t]} → predicted {grades[p]} ({int(cm[t][p])}; {abs(t - p)} grade(s) off)"

    t, p = _cell_pick(cm, grades, "tc_cm_od", "Click a cell to see its images", name)
    rows = taskerrors.top_losses(df, grades, "ordinal")
    rows = rows[(rows["label"].astype(str) == grades[t]) & (rows["pred"].astype(str) == grades[p])].head(
        TOP_K
    )
    if rows.empty:
        st.info("No images in this cell.")
        return
    st.caption(f"{name(t, p)}: the {len(rows)} with the highest loss first.")
    common.gallery(rows, _caption("ordinal"), COLS)
    cam_picker(job, rows, "ordinal", grades, f"tc_cell_{t}_{p}")
    _act(
        rows, set_ev, src, f"tc_cell_act_{t}_{p}", name(t, p), relabel.GRADE_AS + grades[p] if t != p else ""
    )


# ---------------------------------------------------------------- suspect labels


def suspect_section(
    job: jobs.Job, ev: dict[str, Any], frames: dict[str, pd.DataFrame], src: SourceConfig | None = None
) -> None:
    """Labels the out-of-fold model disagrees with (k-fold runs): per finding, or by grade distance."""
    st.subheader("Suspect labels")
    if "oof" not in frames or "oof" not in ev["sets"]:
        st.caption(
            "Suspect labels need a k-fold run: out-of-fold predictions give every image an honest second "
            "opinion. Turn on k-fold on the Training setup page."
        )
        return
    oof_ev = ev["sets"]["oof"]
    oof = taskerrors.decided(oof_ev, frames["oof"])
    if ev["task"] == "multilabel":
        suspect_findings(job, oof_ev, oof, src)
    else:
        suspect_grades(job, oof_ev, oof, src)


def _withheld(why: str) -> None:
    """The plain warning shown instead of suspects from a model that did not learn."""
    st.warning(
        f"Suspect labels are withheld: {why}. Its disagreements with the labels say nothing about them; train a "
        "model that does better than chance first (see the warnings at the top of this page)."
    )


def suspect_findings(
    job: jobs.Job, oof_ev: dict[str, Any], oof: pd.DataFrame, src: SourceConfig | None = None
) -> None:
    """One finding's given labels ranked by how likely each is wrong, unless the model did not learn that finding."""
    findings = list(oof_ev["classes"])
    finding = st.selectbox("Finding", findings, key="tc_sus_finding")
    labelled = oof[oof["label"].notna() & (oof["label"].astype(str) != "")]
    why = taskerrors.finding_withheld(
        labelled, findings, finding, oof_ev["ci"].get(f"roc_auc_{finding}"), "out-of-fold"
    )
    if why:
        _withheld(why)
        return
    ranked = taskerrors.finding_suspects(labelled, findings, finding)
    st.caption(
        f"{int(ranked['issue'].sum())} of {len(ranked)} images look mislabelled for {finding} (confident "
        "learning on the out-of-fold probability of this finding against its given label; images with an "
        "uncertain label for it are left out); the most suspect first. Look before changing a label."
    )
    top = ranked.head(TOP_K)
    common.gallery(
        top,
        lambda r: (
            f"#{r['rank']} given {r['given']} · model {r['suggested']} (p given {r['p_given']:.2f})"
            + (" ⚠" if r["issue"] else "")
        ),
        COLS,
    )
    cam_picker(job, top, "multilabel", findings, f"tc_sus_{finding}", target=finding)
    fix = (relabel.REMOVE if str(top["given"].iloc[0]) == taskerrors.PRESENT else relabel.ADD) + finding
    _act(
        top,
        oof_ev,
        src,
        f"tc_sus_act_{finding}",
        f"suspect label for {finding} (out-of-fold model disagrees)",
        fix,
    )


def suspect_grades(
    job: jobs.Job, oof_ev: dict[str, Any], oof: pd.DataFrame, src: SourceConfig | None = None
) -> None:
    """Given grades ranked by their distance from the expected grade, unless the model did not learn the grades."""
    grades = list(oof_ev["classes"])
    version = common.file_version(*RunFolder(job.run_dir).result_files())
    why = _grades_withheld(job.run_dir, version, tuple(grades))
    if why:
        _withheld(why)
        return
    ranked = taskerrors.grade_suspects(oof, grades)
    st.caption(
        f"{int(ranked['issue'].sum())} of {len(ranked)} images have an out-of-fold expected grade "
        f"{fmt.number(taskerrors.SUSPECT_GRADES)} grade(s) or more from their given grade; the farthest first. "
        "Look before changing a label."
    )
    top = ranked.head(TOP_K)
    common.gallery(
        top,
        lambda r: (
            f"#{r['rank']} given {r['label']} · expected {r['expected_grade']:.1f} ({r['suggested']})"
            + (" ⚠" if r["issue"] else "")
        ),
        COLS,
    )
    cam_picker(job, top, "ordinal", grades, "tc_sus_grades")
    fix = relabel.GRADE_AS + str(top["suggested"].iloc[0])
    _act(top, oof_ev, src, "tc_sus_grades_act", "suspect grade (out-of-fold model disagrees)", fix)
