"""Evaluation widgets: pick runs, metrics with CIs, figures, threshold, folds, top losses, external test, downloads.

Session state: "ev_run" (the run shown), "ev_thr_<run id>" (its threshold slider), "chosen_thresholds" ({run id:
threshold}, read by the Predict page) and "ev_external" (an external test set's predictions for one run).
Everything expensive is cached by run folder + file versions (common.file_version).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.base import fmt
from core.base.config import SourceConfig
from core.data import dicom_groups, imaging
from core.data.items import SourceError
from core.evaluation import (
    calibration,
    conformal,
    ensemble,
    evaluate,
    explain,
    plots,
    predict,
    report,
    site_calibration,
    subgroups,
)
from core.evaluation.finding_thresholds import floor3  # one rounding rule for every threshold button
from core.runs import jobs
from core.runs.rundir import REPORT_METRICS, RunFolder
from core.train import calibrate
from core.web import hosting, uploads
from ui import common
from ui.common import CHOSEN, METRICS, TTA_HELP, run_label  # shared with the Predict view

LAST_RUN, RUN = common.LAST_EVAL_RUN, common.EVAL_RUN
COMPARE, SET, PREV, EXTERNAL = "ev_compare", "ev_set", "ev_prevalence", "ev_external"
SET_NAMES = {
    "valid": "validation",
    "oof": "out-of-fold (k-fold)",
    "test": "hold-out test",
    "external": "external test",
}
DICOM_GROUPS_NOTE = (
    "`dicom:` columns come from the images' headers: the age as a band (<40, 40-59, 60-79, 80+), the institution "
    "as a pseudonymised site (never its name)."
)
SITE_NOTE = (
    "If these images come from a new site, a temperature fitted on them makes its probabilities honest there. The "
    "ECE after is cross-fitted (each image rescaled by a temperature fitted without it); the kept temperature is fitted "
    "on all of them and applied on the Predict page when you choose the site. It assumes later images of the site "
    "look like these; it does not change which class is predicted."
)
FOLD_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity")
TOP_K, GALLERY_COLS, THUMB = 12, 6, 160


# ---------------------------------------------------------------- plain helpers


def run_version(run_dir: str) -> tuple:
    """Cache key of a run's results: versions of metrics.json, history and every predictions file."""
    return common.file_version(*RunFolder(run_dir).result_files())


def shown_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A predictions table for display/download: hosted mode shows file names, not server paths."""
    return df.assign(path=[Path(str(p)).name for p in df["path"]]) if hosting.hosted() else df


# ---------------------------------------------------------------- cached computations


@st.cache_data(max_entries=16, show_spinner=False)
def predictions(run_dir: str, version: tuple) -> dict[str, pd.DataFrame]:
    """The run's prediction tables (valid / oof / test)."""
    return evaluate.load_run_predictions(run_dir)


@st.cache_data(max_entries=64, show_spinner="Computing metrics with bootstrap confidence intervals...")
def evaluation(
    run_dir: str,
    version: tuple,
    threshold: float | None,
    prevalence: float | None,
    external: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """evaluate_run of a run folder (+ external set) at a threshold and prevalence."""
    return evaluate.evaluate_run(run_dir, threshold=threshold, external=external, prevalence=prevalence)


@st.cache_data(max_entries=8, show_spinner="Writing the report (metrics, figures, top losses)...")
def report_html(
    run_dir: str,
    version: tuple,
    threshold: float | None,
    prevalence: float | None,
    external: pd.DataFrame | None = None,
) -> tuple[bytes, str]:
    """report.html built into the run folder (report/ or report_external/); (its bytes, its path)."""
    out = RunFolder(run_dir).report_folder(external=external is not None)
    rep = report.build_report(
        run_dir, out, test_predictions=external, threshold=threshold, prevalence=prevalence, png=False
    )
    return Path(rep["report"]).read_bytes(), rep["report"]


@st.cache_data(max_entries=16, show_spinner="Comparing calibration before and after temperature scaling...")
def temperature_fit(run_dir: str, version: tuple) -> dict[str, Any] | None:
    """ECE / Brier before and after the run's temperature, with bootstrap CIs (None: not calibrated)."""
    return calibration.calibration_report(run_dir)


def calibration_section(job: jobs.Job, version: tuple) -> None:
    """The run's temperature and ECE / Brier before and after it on each set; a button to fit one when absent."""
    st.subheader("Calibration (temperature scaling)")
    rep = temperature_fit(job.run_dir, version)
    if rep is None:
        st.caption(
            "This run's probabilities are not calibrated (it was trained with calibration off, before it "
            "existed, or with too few validation images to fit one)."
        )
        if st.button("Fit a temperature on the validation predictions", key="ev_calibrate"):
            fitted = calibrate.calibrate_run(job.run_dir)
            st.toast(
                "Temperature fitted." if fitted else "Too few validation predictions to fit a temperature."
            )
            st.rerun()
        return
    t = rep["temperature"]
    st.caption(
        f"Temperature {t['temperature']:.3f}, fitted on {t['n']} {SET_NAMES.get(t['fitted_on'], t['fitted_on'])} "
        "predictions and kept in the saved model: every probability on this page, in Predict and in the ONNX "
        "export is scaled with it (decisions and ROC AUC do not change). Lower ECE / Brier is better; the set "
        "it was fitted on flatters the 'after', so judge it on the test set."
    )
    st.dataframe(calibration.report_table(rep), hide_index=True, width="stretch")


@st.cache_data(max_entries=32, show_spinner="Making prediction sets...")
def set_reports(
    run_dir: str, version: tuple, rule: tuple[float, str, bool], external: pd.DataFrame | None
) -> dict[str, Any] | None:
    """Coverage, referral and the coverage curve of the run's prediction sets on its test / external sets."""
    return conformal.run_conformal(run_dir, conformal.SetRule(*rule), external)


def sets_section(job: jobs.Job, version: tuple, external: pd.DataFrame | None) -> None:
    """Prediction sets and referral: the user's coverage, score and variant; what the test set says about them."""
    st.subheader("Prediction sets and referral (conformal)")
    if "test" not in predictions(job.run_dir, version) and external is None:
        st.caption(
            "Prediction sets are judged on a labelled test set: this run has none (add an external one)."
        )
        return
    c1, c2, c3 = st.columns(3)
    coverage = c1.slider("Coverage", 0.80, 0.99, 0.90, 0.01, key="ev_coverage")
    method = c2.radio("Score", conformal.METHODS, format_func=conformal.METHOD_LABELS.get, key="ev_set_score")
    mondrian = c3.checkbox(
        "Per class (Mondrian)",
        key="ev_mondrian",
        help="the coverage holds within each true class (rare classes)",
    )
    rule = conformal.SetRule(coverage, str(method), mondrian)
    rep = set_reports(job.run_dir, version, (coverage, str(method), mondrian), external)
    if rep is None:
        st.caption(
            "Prediction sets are judged on a labelled test set: this run has none (add an external one)."
        )
        return
    st.caption(
        f"{rule.describe()}; calibrated on {rep['n_cal']} {SET_NAMES.get(rep['calibrated_on'], '')} predictions. "
        "Each image gets the set of classes that holds its true class with probability >= the coverage, if the "
        "images are exchangeable with those (same site, scanner, population: another site breaks it). An image "
        "is referred to a reader when its set is not exactly one class. Predict adds these as `set` and `refer`."
    )
    st.dataframe(conformal.report_table([rep]), hide_index=True, width="stretch")
    st.plotly_chart(plots.coverage_referral(pd.DataFrame(rep["curve"])), width="stretch", key="ev_fig_sets")
    if rep.get("abstain"):
        with st.expander("Abstain band around the 0.5 threshold (binary)"):
            st.dataframe(pd.DataFrame(rep["abstain"]), hide_index=True, width="stretch")


@st.cache_data(max_entries=16, show_spinner="Metrics per subgroup with patient-level bootstrap CIs...")
def subgroup_fit(
    run_dir: str, version: tuple, csv_path: str, csv_version: tuple, path_col: str, by: tuple[str, ...]
) -> dict[str, Any]:
    """subgroups.run_subgroups of the run with a metadata CSV and/or DICOM tags (cached by the files' versions)."""
    meta = pd.read_csv(csv_path, dtype=str, keep_default_na=False) if csv_path else None
    return subgroups.run_subgroups(run_dir, meta, list(by), path_col)


@st.cache_data(max_entries=16, show_spinner=False)
def run_group_columns(run_dir: str, version: tuple) -> list[str]:
    """Groups a run offers without a CSV: a leave-one-site-out run's `site`, and the allow-listed DICOM tag columns
    when its evaluated images are DICOM files."""
    frames = evaluate.load_run_predictions(run_dir)
    name = next((n for n in ("test", "oof", "valid") if n in frames), None)
    if name is None:
        return []
    own = ["site"] if "site" in frames[name] else []
    return own + (dicom_groups.columns() if dicom_groups.any_dicom(frames[name]["path"].astype(str)) else [])


def subgroups_section(job: jobs.Job, version: tuple) -> None:
    """Metrics per metadata group (CSV columns, DICOM tags) with patient-level CIs, the worst-group gap, warnings."""
    st.subheader("Subgroups and sites")
    tags = run_group_columns(job.run_dir, version)
    csv_path = common.csv_picker(
        "Metadata CSV (a path column and columns such as sex, age band, site)", "ev_sg_csv"
    )
    if not csv_path and not tags:
        st.caption("Give a CSV with the images' paths and metadata columns to see each metric per group.")
        return
    try:
        columns = list(pd.read_csv(csv_path, nrows=0).columns) if csv_path else []
        c1, c2 = st.columns([1, 2])
        path_col = c1.selectbox("Path column", columns, key="ev_sg_path") if columns else "path"
        by = c2.multiselect("Group by", [c for c in columns if c != path_col] + tags, key="ev_sg_by")
        if any(dicom_groups.is_dicom_column(t) for t in tags):
            st.caption(DICOM_GROUPS_NOTE)
        if not by:
            return
        csv_version = common.file_version(csv_path) if csv_path else ()
        out = subgroup_fit(job.run_dir, version, csv_path or "", csv_version, path_col, tuple(by))
    except (OSError, ValueError, KeyError) as err:
        st.error(f"Cannot use this metadata CSV: {err}")
        return
    st.caption(
        f"On the {SET_NAMES.get(out['set'], out['set'])} set; 95 % CIs by bootstrap over "
        + (
            "patients (all images of a patient together)."
            if out["patient_level"]
            else "images (no patients known)."
        )
    )
    for rep in out["reports"].values():
        st.dataframe(subgroups.table(rep), hide_index=True, width="stretch")
        for w in rep["warnings"]:
            st.warning(w)


# ---------------------------------------------------------------- run choice


def no_runs() -> None:
    """The empty state: where runs come from."""
    st.info(
        "No finished training runs yet. Start one on the **Training run** page; it appears here when done."
    )
    common.page_link("pages/3_train.py", "Training run", icon=":material/model_training:")


def pick_run(runs: list[jobs.Job]) -> jobs.Job:
    """The run to evaluate (default: the one watched on the Training run page, else the newest)."""
    ids = [j.id for j in runs]
    if st.session_state.get(RUN) not in ids:
        st.session_state[RUN] = (
            st.session_state.get(common.PICK) if st.session_state.get(common.PICK) in ids else ids[0]
        )
    labels = {j.id: run_label(j) for j in runs}
    chosen = st.selectbox("Run", ids, key=RUN, format_func=labels.get)
    st.session_state[LAST_RUN] = chosen  # kept when this page's widget state is dropped (Predict reads it)
    return next(j for j in runs if j.id == chosen)


def config_line(run_dir: str) -> None:
    """One caption describing how the run was trained."""
    cfg = RunFolder(run_dir).read_config_dict()
    try:
        st.caption("Settings: " + common.config_caption(cfg))
    except (TypeError, ValueError, KeyError):
        pass


# ---------------------------------------------------------------- threshold (binary)


def _set_threshold(key: str, value: float) -> None:
    """Button callback: move the threshold slider."""
    st.session_state[key] = value


def threshold_panel(job: jobs.Job, classes: list[str], df: pd.DataFrame) -> tuple[float, float | None]:
    """Threshold slider + rule buttons + prevalence; live sensitivity/specificity/PPV/NPV. (threshold, prevalence)."""
    y, probs = evaluate.labels_and_probs(df, classes)
    p_pos, key = probs[:, 1], f"ev_thr_{job.id}"
    st.subheader(f"Decision threshold (positive class: {classes[1]})")
    both = 0 < int(y.sum()) < len(y)
    c = st.columns([1, 1, 1, 2])
    if both:
        c[0].button(
            "90 % sensitivity",
            key="ev_t90",
            on_click=_set_threshold,
            width="stretch",
            args=(key, floor3(evaluate.threshold_for_sensitivity(y, p_pos, 0.90))),
            help="The highest threshold that still finds at least 90 % of the positive images",
        )
        c[1].button(
            "Youden",
            key="ev_youden",
            on_click=_set_threshold,
            width="stretch",
            args=(key, floor3(evaluate.youden_threshold(y, p_pos))),
            help="The threshold that maximises sensitivity + specificity - 1 (Youden's J)",
        )
    c[2].button("Default 0.5", key="ev_t50", on_click=_set_threshold, args=(key, 0.5), width="stretch")
    prev = c[3].number_input(
        "Prevalence for PPV/NPV (0 = as in this set)", 0.0, 0.999, 0.0, 0.01, key=PREV, format="%.3f"
    )
    st.session_state.setdefault(key, st.session_state.get(CHOSEN, {}).get(job.id, 0.5))
    t = st.slider(
        f"P({classes[1]}) at or above which an image is called {classes[1]}",
        0.0,
        1.0,
        step=0.001,
        format="%.3f",
        key=key,
    )
    prevalence = float(prev) if prev > 0 else None
    m = evaluate.metrics_at_threshold(y, p_pos, t, prevalence)
    cols = st.columns(4)
    for col, name in zip(cols, ("sensitivity", "specificity", "ppv", "npv")):
        col.metric(name.upper() if len(name) == 3 else name.capitalize(), fmt.number(m[name]))
    st.caption(
        f"On the {len(y)} {'out-of-fold' if 'fold' in df else 'validation'} images: TP {m['tp']}, "
        f"FP {m['fp']}, TN {m['tn']}, FN {m['fn']}; PPV/NPV at prevalence {fmt.number(m['prevalence'])}. "
        "Thresholds are chosen on validation data, never on a test set. The chosen threshold is carried "
        "to the Predict page for this run."
    )
    st.session_state.setdefault(CHOSEN, {})[job.id] = float(t)
    return float(t), prevalence


# ---------------------------------------------------------------- metrics and figures


def metrics_section(ev: dict[str, Any]) -> None:
    """Metrics of every set side by side, 95 % bootstrap CIs in brackets."""
    st.subheader("Metrics")
    sets = {k: ev["sets"][k] for k in sorted(ev["sets"], key=lambda k: k != "test")}  # a hold-out test leads
    table = evaluate.comparison_table(sets, METRICS).rename(columns=SET_NAMES)
    st.dataframe(table, hide_index=True, width="stretch", height="content")
    first = next(iter(ev["sets"].values()))
    boot = first["bootstrap"]
    with_ci = ", ".join(m for m in table["metric"] if m in first["ci"])
    st.caption(
        f"In brackets: 95 % confidence intervals of {with_ci} ({boot['method']} bootstrap, "
        f"{boot['n_resamples']} resamples); the other rows are point estimates. "
        + (
            f"Decision threshold {first['threshold']:.3f}."
            if first["threshold"] is not None
            else "Predicted class = the most probable one."
        )
    )


def warnings_section(ev: dict[str, Any]) -> None:
    """core.evaluation.evaluate's warnings (one class for everything, AUC about chance) of every set, the advice once."""
    found = {name: s["warnings"] for name, s in ev["sets"].items() if s.get("warnings")}
    if not found:
        return
    lines = [
        f"**{SET_NAMES.get(name, name).capitalize()}:** {w}" for name, ws in found.items() for w in ws[:-1]
    ]
    st.warning("\n\n".join([*lines, next(iter(found.values()))[-1]]))


def compare_section(job: jobs.Job, runs: list[jobs.Job], prevalence: float | None) -> None:
    """Optionally, this run's headline metrics beside another run's (each at its default decision rule)."""
    others = [j for j in runs if j.id != job.id]
    if not others or not st.checkbox("Compare with another run", key="ev_compare_on"):
        return
    labels = {j.id: run_label(j) for j in others}
    other = st.selectbox("Other run", list(labels), key=COMPARE, format_func=labels.get)
    sets = {}
    for j in (job, next(o for o in others if o.id == other)):
        ev = evaluation(j.run_dir, run_version(j.run_dir), None, prevalence)
        sets[j.id] = ev["sets"]["oof" if "oof" in ev["sets"] else "valid"]
    if len({tuple(s["classes"]) for s in sets.values()}) > 1:
        st.warning("The two runs have different classes: their metrics are not directly comparable.")
    st.dataframe(evaluate.comparison_table(sets, METRICS), hide_index=True, width="stretch")
    st.caption("Validation (k-fold: pooled out-of-fold) sets, each at threshold 0.5 / most probable class.")


def figures_section(job: jobs.Job, ev: dict[str, Any], frames: dict[str, pd.DataFrame]) -> str:
    """Confusion matrix, ROC, PR, calibration, threshold and training curves of one chosen set; its name."""
    names = list(ev["sets"])
    name = st.selectbox("Figures for", names, key=SET, format_func=lambda n: SET_NAMES.get(n, n))
    set_ev = ev["sets"][name]
    figs = report.set_figures(name, set_ev, frames[name])
    tabs = st.tabs(
        ["Confusion matrix", "ROC curve", "Precision-recall", "Calibration", "Training curves"]
        + (["Threshold"] if f"{name}_threshold" in figs else [])
    )
    for tab, key in zip(tabs, ("confusion", "roc", "pr", "reliability")):
        tab.plotly_chart(figs[f"{name}_{key}"], width="stretch", key=f"ev_fig_{key}")
    cal = set_ev["calibration"]
    tabs[3].caption(
        f"ECE {fmt.number(cal['ece'])} (lower is better; {cal['n_bins']} bins), Brier score {fmt.number(cal['brier'])}."
    )
    with tabs[4]:
        common.curves(job, common.best_epochs(RunFolder(job.run_dir).read_metrics(), {}))
    if len(tabs) > 5:
        tabs[5].plotly_chart(figs[f"{name}_threshold"], width="stretch", key="ev_fig_threshold")
    st.markdown("**Per-class metrics**")
    st.dataframe(per_class_frame(set_ev), hide_index=True, width="stretch", key="ev_per_class")
    return name


def per_class_frame(set_ev: dict[str, Any]) -> pd.DataFrame:
    """The per-class table as shown: how often each class was predicted, and precision said in words when undefined."""
    table = pd.DataFrame(set_ev["per_class"]).drop(columns="sensitivity", errors="ignore")
    predicted = pd.DataFrame(set_ev["confusion"]).sum(0).astype(int).tolist()
    table.insert(table.columns.get_loc("support") + 1, "predicted", predicted)
    for col in ("recall", "specificity", "f1", "roc_auc", "pr_auc"):
        table[col] = [fmt.number(v) for v in table[col]]
    table["precision"] = [
        fmt.number(p) if n else "never predicted" for p, n in zip(table["precision"], predicted)
    ]
    return table


def folds_section(ev: dict[str, Any]) -> None:
    """k-fold runs: one row per fold, mean ± sd, pooled out-of-fold; bars per fold."""
    if "folds" not in ev:
        return
    st.subheader("Per fold")
    table = pd.DataFrame(ev["folds"]["table"])
    ms = ev["folds"]["mean_sd"]
    rows = [
        {
            "fold": "mean ± sd",
            "n": int(table["n"].sum()),
            **{k: fmt.mean_sd(v["mean"], v["sd"]) for k, v in ms.items() if k in table},
        }
    ]
    pooled = ev["sets"]["oof"]["metrics"]
    rows.append(
        {
            "fold": "pooled out-of-fold",
            "n": ev["sets"]["oof"]["n"],
            **{k: fmt.number(pooled[k]) for k in table.columns if k in pooled},
        }
    )
    shown = pd.concat(
        [
            table.assign(fold=table["fold"].map(fmt.fold))
            .map(lambda v: fmt.number(v) if isinstance(v, float) else v)
            .astype(str),
            pd.DataFrame(rows).astype(str),
        ],
        ignore_index=True,
    )
    st.dataframe(shown, hide_index=True, width="stretch")
    st.plotly_chart(plots.fold_bars(table, FOLD_METRICS), width="stretch", key="ev_fig_folds")


# ---------------------------------------------------------------- top losses and Grad-CAM


def model_for(job: jobs.Job, set_name: str, row: pd.Series) -> str | None:
    """The model that predicted a row: its fold's model for out-of-fold rows, the external set's, else the run's."""
    run = RunFolder(job.run_dir)
    fold = run.fold_model(int(row["fold"])) if set_name == "oof" and "fold" in row else None
    if fold is not None:
        return str(fold)
    ext = st.session_state.get(EXTERNAL) or {}
    if set_name == "external" and ext.get("run") == job.id:
        return ensemble.member_path(ext["model"])  # an ensemble's Grad-CAM: its first fold's
    return next((str(m) for m in run.models().values()), None)


def _thumb(col, row: dict) -> None:
    """One gallery cell: thumbnail and caption (true / pred / probability)."""
    caption = f"#{row['rank']} true {row['label']} · pred {row['pred']} ({row['prob_pred']:.2f})"
    try:
        col.image(common.thumbnail(str(row["path"]), THUMB), caption=caption, width="stretch")
    except (imaging.ImageError, OSError) as err:
        col.caption(f"{caption}: image unavailable ({err})")


def top_losses_section(
    job: jobs.Job, ev: dict[str, Any], frames: dict[str, pd.DataFrame], set_name: str
) -> None:
    """The images the model got most wrong (highest loss) of the chosen set, and Grad-CAM for one of them."""
    st.subheader(f"Top losses ({SET_NAMES.get(set_name, set_name)})")
    classes, set_ev = ev["classes"], ev["sets"][set_name]
    df = evaluate.apply_threshold(evaluate.labelled(frames[set_name]), classes, set_ev["threshold"])
    errors = st.checkbox("Errors only", key="ev_errors_only")
    losses = explain.top_losses(df, classes, TOP_K, errors_only=errors)
    if losses.empty:
        st.info("No misclassified images in this set." if errors else "No labelled images in this set.")
        return
    records = losses.to_dict("records")
    for start in range(0, len(records), GALLERY_COLS):
        for col, row in zip(st.columns(GALLERY_COLS), records[start : start + GALLERY_COLS]):
            _thumb(col, row)
    c1, c2 = st.columns(2)
    names = {r["rank"]: f"#{r['rank']} {Path(str(r['path'])).name}" for r in records}
    rank = c1.selectbox("Grad-CAM for", list(names), key="ev_cam_pick", format_func=names.get)
    target = c2.selectbox("Explain class", ["predicted", "true", *classes], key="ev_cam_class")
    row = losses[losses["rank"] == rank].iloc[0]
    model = model_for(job, set_name, row)
    if model is None:
        st.info("This run has no saved model to explain with.")
        return
    cls = {"predicted": None, "true": str(row["label"])}.get(target, target)
    common.show_cam(model, str(row["path"]), cls, caption=f"true {row['label']}, predicted {row['pred']}")


# ---------------------------------------------------------------- external test set


def _external_source() -> SourceConfig | None:
    """Folder (class sub-folders, images or DICOM) or CSV (path, label) of the external test set."""
    kind = st.radio(
        "Labelled test set",
        ["folder", "csv"],
        horizontal=True,
        key="ev_ext_kind",
        format_func={
            "folder": "A folder (one sub-folder per class; images or DICOM)",
            "csv": "A CSV of paths and labels",
        }.get,
    )
    if kind == "folder":
        root = common.folder_picker("Test folder", "ev_ext_root")
        return SourceConfig(kind="folder", root=root) if root else None
    csv_path = common.csv_picker("Test CSV", "ev_ext_csv")
    c1, c2 = st.columns(2)
    path_col = c1.text_input("Path column", "path", key="ev_ext_pathcol")
    label_col = c2.text_input("Label column", "label", key="ev_ext_labelcol")
    return (
        SourceConfig(kind="csv", csv_path=csv_path, path_col=path_col, label_col=label_col)
        if csv_path
        else None
    )


def _predict_external(job: jobs.Job, cfg: SourceConfig, model: str, tta: bool) -> None:
    """Scan the test set, predict it with the chosen model (core.evaluation.predict.score_source), keep it for this run."""
    try:
        hosting.check_source(cfg, common.owner_id())
        with st.spinner("Predicting the test images..."):
            scored = predict.score_source(common.predictor(model), cfg, tta=tta)
    except (SourceError, uploads.UploadError, ValueError, OSError) as err:
        st.error(f"Cannot use this test set: {err}")
        return
    st.session_state[EXTERNAL] = {
        "run": job.id,
        "model": model,
        "df": scored.predictions,
        "source": cfg.root or cfg.csv_path,
        "problems": scored.problems,
    }
    st.rerun()


def _forget_external() -> None:
    """Button callback: drop the external test set."""
    st.session_state.pop(EXTERNAL, None)


def external_section(job: jobs.Job) -> None:
    """Evaluate the run's model on an external labelled test set; its metrics then sit beside validation."""
    ext = st.session_state.get(EXTERNAL) or {}
    mine = ext.get("run") == job.id
    with st.expander("External labelled test set", expanded=mine):
        if mine:
            st.success(
                f"External test set: {len(ext['df'])} images from {common.shown_path(ext['source'])} "
                "(metrics above, in the 'external test' column)."
            )
            if len(ext["problems"]):
                st.dataframe(shown_frame(ext["problems"]), hide_index=True, width="stretch")
            st.button("Forget this test set", key="ev_ext_clear", on_click=_forget_external)
            if ensemble.ref_run(ext.get("model", "")) is None:  # a site temperature is one model's
                site_recalibration(job, ext)
        models = ensemble.model_choices(job.run_dir)  # the fold ensemble too (k-fold runs)
        if not models:
            st.info("This run has no saved model.")
            return
        cfg = _external_source()
        c1, c2 = st.columns(2)
        model = c1.selectbox("Model", list(models), key="ev_ext_model")
        tta = c2.checkbox("Test-time augmentation", help=TTA_HELP, key="ev_ext_tta")
        if st.button("Evaluate on this test set", key="ev_ext_go", disabled=cfg is None):
            _predict_external(job, cfg, models[model], tta)


def site_recalibration(job: jobs.Job, ext: dict[str, Any]) -> None:
    """A new site's temperature fitted on the external set (cross-fitted ECE before / after), kept in the model."""
    st.markdown("**Recalibrate for this site**")
    st.caption(SITE_NOTE)
    dicom = dicom_groups.any_dicom(ext["df"]["path"].astype(str))
    c1, c2 = st.columns([2, 1])
    name = c1.text_input("Site name (stored as written: use a code)", key="ev_site_name")
    per_row = c2.checkbox("One per DICOM institution", key="ev_site_dicom", disabled=not dicom)
    go = st.button(
        "Fit and keep the site's temperature",
        key="ev_site_go",
        disabled=not (name.strip() or per_row) or not common.own_run(job),
    )
    if not go:
        return
    df = ext["df"]
    try:
        pred = common.predictor(ext["model"])
        by = dicom_groups.PREFIX + dicom_groups.SITE_TAG
        sites = site_calibration.row_sites(df, by) if per_row else np.full(len(df), name.strip())
        reports = site_calibration.recalibrate(df, pred.classes, sites, pred.temperature)
        stored = site_calibration.store(ext["model"], reports)
    except (ValueError, OSError) as err:
        st.error(f"Cannot recalibrate: {err}")
        return
    st.dataframe(site_calibration.table(reports), hide_index=True, width="stretch")
    if stored:
        st.success(f"Kept in the model for: {', '.join(stored)}. Choose the site on the Predict page.")
    else:
        st.info("No site had enough labelled images to fit a temperature: nothing was kept.")


def external_frame(job: jobs.Job) -> pd.DataFrame | None:
    """The external predictions kept for this run, if any."""
    ext = st.session_state.get(EXTERNAL) or {}
    return ext["df"] if ext.get("run") == job.id else None


def external_by_ensemble(job: jobs.Job) -> bool:
    """True when the kept external predictions are a fold ensemble's: prediction sets, calibrated for one model,
    are not judged on them."""
    ext = st.session_state.get(EXTERNAL) or {}
    return ext.get("run") == job.id and ensemble.ref_run(ext.get("model", "")) is not None


# ---------------------------------------------------------------- downloads


def downloads(
    job: jobs.Job,
    ev: dict[str, Any],
    frames: dict[str, pd.DataFrame],
    threshold: float | None,
    prevalence: float | None,
    external: pd.DataFrame | None,
) -> None:
    """The HTML report (built on request, into the run folder), every set's predictions as CSV, the model zip."""
    st.subheader("Downloads")
    all_sets = pd.concat(
        [
            evaluate.apply_threshold(frames[n], ev["classes"], threshold).assign(set=n)
            for n in ev["sets"]
            if n in frames
        ],
        ignore_index=True,
    )
    c1, c2, c3 = st.columns(3)
    with c3:
        common.model_download(job, key="ev_dl_model")
    c1.download_button(
        "Download predictions (CSV)",
        shown_frame(all_sets).to_csv(index=False).encode(),
        file_name=f"predictions_{job.id}.csv",
        mime="text/csv",
        key="ev_dl_preds",
    )
    key = (job.id, threshold, prevalence, external is not None)
    if c2.button("Build the report (HTML)", key="ev_report"):
        st.session_state["ev_report_for"] = key
    if st.session_state.get("ev_report_for") == key:
        data, path = report_html(job.run_dir, run_version(job.run_dir), threshold, prevalence, external)
        c2.download_button(
            "Download report (HTML)",
            data,
            file_name=f"report_{job.id}.html",
            mime="text/html",
            key="ev_dl_report",
        )
        if not hosting.hosted():
            c2.caption(f"Also saved as {path} (with figures/ and {REPORT_METRICS}).")


# ---------------------------------------------------------------- the page


def frames_with_external(
    frames: dict[str, pd.DataFrame], external: pd.DataFrame | None
) -> dict[str, pd.DataFrame]:
    """The run's prediction tables plus the external set's."""
    return {**frames, "external": external} if external is not None else dict(frames)


SetChecks = Callable[[jobs.Job, dict[str, Any], dict[str, pd.DataFrame], str], None]


def show_run(job: jobs.Job, runs: list[jobs.Job], checks: SetChecks | None = None) -> None:
    """Everything about one finished run; `checks` (from the page) draws the data checks of the shown set."""
    config_line(job.run_dir)
    version = run_version(job.run_dir)
    frames = predictions(job.run_dir, version)
    summary = RunFolder(job.run_dir).read_metrics()
    classes = list(summary.get("classes", []))
    primary = "oof" if "oof" in frames else "valid"
    if primary not in frames or not classes:
        st.warning("This run has no validation predictions to evaluate.")
        return
    external = external_frame(job)
    try:
        threshold, prevalence = (
            threshold_panel(job, classes, evaluate.labelled(frames[primary]))
            if len(classes) == 2
            else (None, None)
        )
        ev = evaluation(job.run_dir, version, threshold, prevalence, external)
    except ValueError as err:  # predictions that do not match the run's classes (an edited or partial folder)
        st.error(f"This run's predictions cannot be evaluated: {err}")
        return
    metrics_section(ev)
    warnings_section(ev)
    st.caption(evaluate.provenance(summary))
    compare_section(job, runs, prevalence)
    all_frames = frames_with_external(frames, external)
    set_name = figures_section(job, ev, all_frames)
    calibration_section(job, version)
    sets_section(job, version, None if external_by_ensemble(job) else external)
    subgroups_section(job, version)
    folds_section(ev)
    top_losses_section(job, ev, all_frames, set_name)
    if checks is not None:
        checks(job, ev, all_frames, set_name)
    external_section(job)
    downloads(job, ev, all_frames, threshold, prevalence, external)
